"""Writes the fixtures in this folder with the real `sae-lens` package (not a minineo dependency).

One folder per SAE, written by the package's own `save_model` (`cfg.json` + `sae_weights.safetensors`),
with random weights, covering the `standard`, `topk` and `jumprelu` architectures, apply_b_dec_to_input
true and false, and the normalize_activations settings the package applies at run time; beside each,
`expected.safetensors`: inputs `x` (n, d_in), the package's `encode(x)` (n, d_sae) and `decode(encode(x))`
(n, d_in). The hook is blocks.1.hook_resid_post of the embedded tiny-neo (d_model 128) for the 128-wide ones.

Run with the scratch venv that has the package:
    python -m venv /work/venvs/saelens && /work/venvs/saelens/bin/pip install "torch==2.13.0" "sae-lens==6.54.12"
    /work/venvs/saelens/bin/python tests/data/saelens_package/make_fixture.py
"""

import shutil
from pathlib import Path

import sae_lens
import torch
from safetensors.torch import save_file
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

HERE = Path(__file__).parent
HOOK = "blocks.1.hook_resid_post"

# name: (class, config class, d_in, d_sae, options)
SAES = {
    "standard": (StandardSAE, StandardSAEConfig, 32, 64, dict(apply_b_dec_to_input=True)),
    "standard_no_b_dec_layer_norm": (StandardSAE, StandardSAEConfig, 32, 48, dict(apply_b_dec_to_input=False,
                                                                                  normalize_activations="layer_norm")),
    "topk": (TopKSAE, TopKSAEConfig, 32, 64, dict(k=5, apply_b_dec_to_input=True, normalize_activations="constant_norm_rescale")),
    "topk_rescaled_no_b_dec": (TopKSAE, TopKSAEConfig, 16, 40, dict(k=3, apply_b_dec_to_input=False,
                                                                    rescale_acts_by_decoder_norm=True)),
    "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, 32, 64, dict(apply_b_dec_to_input=False)),
    "jumprelu_b_dec_layer_norm": (JumpReLUSAE, JumpReLUSAEConfig, 16, 32, dict(apply_b_dec_to_input=True,
                                                                               normalize_activations="layer_norm")),
    # the embedded tiny-neo's width: sae_metrics and sae-eval splice this one in
    "tiny_neo_resid_post_1": (TopKSAE, TopKSAEConfig, 128, 256, dict(k=16, apply_b_dec_to_input=True)),
}

for name, (cls, cfg_cls, d_in, d_sae, options) in SAES.items():
    torch.manual_seed(len(name))
    sae = cls(cfg_cls(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=HOOK, model_name="tiny-neo"), **options))
    with torch.no_grad():
        for pname, p in sae.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        if hasattr(sae, "threshold"):
            sae.threshold.abs_()
    folder = HERE / name
    shutil.rmtree(folder, ignore_errors=True)
    sae.save_model(folder)
    x = torch.randn(12, d_in) * 2 + 0.5
    with torch.no_grad():
        f = sae.encode(x)
        out = sae.decode(f)
    save_file({"x": x, "features": f.contiguous(), "reconstruction": out.contiguous()}, str(folder / "expected.safetensors"),
              metadata={"sae_lens": sae_lens.__version__, "torch": torch.__version__})
    print(name, sae.cfg.architecture(), f"{int((f != 0).sum(-1).float().mean())} active", sorted(p.name for p in folder.iterdir()))
