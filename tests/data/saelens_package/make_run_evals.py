"""Writes `run_evals/` with the real `sae-lens` package (not a minineo dependency): SAELens's own `run_evals`
figures for an SAE spliced into the embedded tiny-neo, on fixed tokens, with and without its special-token
convention.

- `run_evals/sae/`: a standard SAE at blocks.0.hook_resid_post (d_in 128, d_sae 256) written by the package's
  `save_model`; a layer-0 site, so whether BOS is spliced reaches the later positions' losses.
- `run_evals/tokens.safetensors`: `tokens` (4, 64), every row starting with BOS (256) as SAELens's packed rows
  do, and one more BOS inside the last row (a document boundary).
- `run_evals/metrics.json`: for `exclude_special_tokens` true (SAELens's default: BOS neither spliced nor
  counted in CE, L0 or explained variance) and false, `run_evals`'s CE (with and without the SAE, zero-ablated,
  ce_loss_score), L0, explained variance and MSE, plus the versions used.

The model is TransformerLens's HookedTransformer read from the zoo folder without weight processing (its
activations are then HF's); the tokenizer is the zoo's byte-level one with <|endoftext|> as BOS/EOS/PAD.
Run with the scratch venv that has the package (see make_fixture.py):
    HF_HUB_OFFLINE=1 /work/venvs/saelens/bin/python tests/data/saelens_package/make_run_evals.py
"""

import json
import shutil
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

import sae_lens
import torch
import transformer_lens.loading_from_pretrained as loading
from safetensors.torch import load_file, save_file
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.evals import get_eval_everything_config, run_evals
from sae_lens.saes.sae import SAEMetadata
from sae_lens.training.activation_scaler import ActivationScaler
from transformer_lens import HookedTransformer
from transformers import PreTrainedTokenizerFast

HERE = Path(__file__).parent
OUT = HERE / "run_evals"
ZOO = HERE.parents[2] / "minineo" / "zoo" / "tiny-neo"
HOOK = "blocks.0.hook_resid_post"
BOS = 256

official = loading.get_official_model_name
loading.get_official_model_name = lambda name: name if (Path(name) / "config.json").is_file() else official(name)
tokenizer_dir = Path(tempfile.mkdtemp())  # TransformerLens re-reads the tokenizer from its name_or_path
PreTrainedTokenizerFast(tokenizer_file=str(ZOO / "tokenizer.json"), bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                        pad_token="<|endoftext|>").save_pretrained(tokenizer_dir)
tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = HookedTransformer.from_pretrained_no_processing(str(ZOO), tokenizer=tokenizer, device="cpu").eval()

texts = ["When Mary and John went to the store, John gave a drink to Mary. Then the cat sat on the mat and",
         "Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex. Flat",
         "The quick brown fox jumps over the lazy dog. When Tom and Sue went to the park, Sue gave a ball to",
         "In the morning the market was full. Alice and Bob went there, and Bob gave an apple to Alice."]
rows = []
for text in texts:
    ids = [BOS] + list(text.encode())
    rows.append(ids[:64] if len(rows) < 3 else (ids[:40] + [BOS] + list(b"Once upon a time there was a king"))[:64])
tokens = torch.tensor(rows)  # (4, 64)
assert (tokens == BOS).sum() > 4, "one BOS inside a row as well"

torch.manual_seed(0)
d_in, d_sae = 128, 256
sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=True,
                                    metadata=SAEMetadata(hook_name=HOOK, model_name="tiny-neo")))
with torch.no_grad():  # a dictionary of unit directions, read and written by the same vectors: a rough reconstruction
    directions = torch.nn.functional.normalize(torch.randn(d_sae, d_in), dim=-1)
    _, cache = model.run_with_cache(tokens, names_filter=[HOOK])
    sae.W_dec.copy_(directions)
    sae.W_enc.copy_(directions.T)
    sae.b_enc.copy_(torch.randn(d_sae) * 0.1 - 0.3)
    sae.b_dec.copy_(cache[HOOK].mean((0, 1)))
shutil.rmtree(OUT, ignore_errors=True)
sae.save_model(OUT / "sae")
save_file({"tokens": tokens}, str(OUT / "tokens.safetensors"))


class FixedTokens:
    """The part of ActivationsStore that run_evals reads: the same batch of tokens every time."""
    context_size = tokens.shape[1]
    store_batch_size_prompts = tokens.shape[0]

    def get_batch_tokens(self, batch_size=None):
        return tokens

    def reset_input_dataset(self):
        pass


config = get_eval_everything_config(batch_size_prompts=tokens.shape[0], n_eval_reconstruction_batches=1,
                                    n_eval_sparsity_variance_batches=1)
figures = {}
for exclude in (True, False):
    metrics, _ = run_evals(sae, FixedTokens(), model, ActivationScaler(), config, exclude_special_tokens=exclude)
    perf, quality, sparsity = (metrics["model_performance_preservation"], metrics["reconstruction_quality"],
                               metrics["sparsity"])
    figures[f"exclude_special_tokens={str(exclude).lower()}"] = {
        "ce_loss_without_sae": perf["ce_loss_without_sae"], "ce_loss_with_sae": perf["ce_loss_with_sae"],
        "ce_loss_with_ablation": perf["ce_loss_with_ablation"], "ce_loss_score": perf["ce_loss_score"],
        "l0": sparsity["l0"], "explained_variance": quality["explained_variance"], "mse": quality["mse"]}
figures["versions"] = {"sae_lens": sae_lens.__version__, "transformer_lens": version("transformer-lens"),
                       "torch": torch.__version__, "transformers": version("transformers")}
figures["special_token_ids"] = sorted(sae_lens.util.get_special_token_ids(model.tokenizer))
(OUT / "metrics.json").write_text(json.dumps(figures, indent=2) + "\n")
assert torch.equal(load_file(str(OUT / "tokens.safetensors"))["tokens"], tokens)
print(json.dumps(figures, indent=2))
