"""Writes the fixtures in this folder with TransformerLens 3.9 itself (not a minineo dependency).

For a tiny random GPT-2 and GPT-Neo (LayerNorm weights and every bias perturbed, so no processing step is
trivial): the HF model folder (`model/`), and `expected.safetensors` from TransformerLens's own
`HookedTransformer.from_pretrained(<that folder>)` with its default processing (fold_ln,
center_writing_weights, center_unembed, fold_value_biases): every parameter under its TransformerLens
name, `all_composition_scores("Q" | "K" | "V")` as `composition.q` ..., the Main_Demo's full-OV copying
score (`copying`: eigenvalues of W_E @ model.OV @ W_U, sum real / sum abs), and the logits of `tokens`.

from_pretrained only accepts the names in its model table: a local folder is passed through
`get_official_model_name` (its config and weights loaders read local folders already). Run with the
scratch venv that has the package:
    python -m venv /work/venvs/tl3 && /work/venvs/tl3/bin/pip install "torch==2.13.0" "transformer-lens<4"
    HF_HUB_OFFLINE=1 /work/venvs/tl3/bin/python tests/data/tl3_processing/make_fixture.py
"""

import json
import warnings
from importlib.metadata import version
from pathlib import Path

import torch
import transformer_lens.loading_from_pretrained as loading
from safetensors.torch import save_file
from transformer_lens import HookedTransformer
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM

HERE = Path(__file__).parent
CONFIGS = {
    "gpt2": (GPT2LMHeadModel, GPT2Config(n_layer=3, n_embd=16, n_head=4, vocab_size=48, n_positions=32,
                                         bos_token_id=0, eos_token_id=0)),
    "gpt_neo": (GPTNeoForCausalLM, GPTNeoConfig(num_layers=3, hidden_size=16, num_heads=4, vocab_size=48,
                                                max_position_embeddings=32, window_size=4, bos_token_id=0,
                                                eos_token_id=0, intermediate_size=64,
                                                attention_types=[[["local", "global", "local"], 1]])),
}

official = loading.get_official_model_name
loading.get_official_model_name = lambda name: name if (Path(name) / "config.json").is_file() else official(name)

for name, (cls, config) in CONFIGS.items():
    torch.manual_seed(0)
    config._attn_implementation = "eager"
    model = cls(config).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith("bias") or ".ln" in key:
                p.add_(torch.randn_like(p) * 0.3)
    folder = HERE / name / "model"
    model.save_pretrained(folder)
    hf_json = json.loads((folder / "config.json").read_text())  # TL 3 reads GPT-2's n_ctx, transformers 5 omits it
    hf_json.setdefault("n_ctx", config.max_position_embeddings)
    (folder / "config.json").write_text(json.dumps(hf_json, indent=2) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tl = HookedTransformer.from_pretrained(str(folder), device="cpu").eval()  # default processing
    tokens = torch.randint(0, config.vocab_size, (2, 12))
    with torch.no_grad():
        expected = {key: value.detach().clone() for key, value in tl.state_dict().items()
                    if not key.endswith(("IGNORE", "mask"))}
        for kind in "qkv":
            expected[f"composition.{kind}"] = tl.all_composition_scores(kind.upper()).detach().clone()
        eigenvalues = (tl.W_E @ tl.OV @ tl.W_U).eigenvalues
        expected["copying"] = (eigenvalues.sum(-1).real / eigenvalues.abs().sum(-1)).clone()
        expected["tokens"] = tokens
        expected["logits"] = tl(tokens).detach().clone()
        expected["hf_logits"] = model(tokens).logits.detach().clone()
    save_file({k: v.contiguous() for k, v in expected.items()}, str(HERE / name / "expected.safetensors"),
              metadata={"transformer_lens": version("transformer-lens"), "transformers": version("transformers"),
                        "torch": torch.__version__, "normalization_type": str(tl.cfg.normalization_type)})
    print(name, tl.cfg.normalization_type, sorted(expected)[:6], "...", len(expected), "tensors")
