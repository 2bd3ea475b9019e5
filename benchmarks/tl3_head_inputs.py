"""minineo's per-head input sites against TransformerLens 3's optional hooks, on random saved HF models.

Run with the Python of a venv that has `transformer-lens<4` and minineo on the path:

    PYTHONPATH=$PWD /work/venvs/tl3/bin/python benchmarks/tl3_head_inputs.py

For GPT-2 and GPT-Neo (a local layer with a window shorter than the prompt): the recorded values of
hook_attn_in (use_attn_in), hook_q_input / hook_k_input / hook_v_input (use_split_qkv_input) and
hook_mlp_in (use_hook_mlp_in), and the logits after replacing one head's input (or the MLP's input) by the
same random tensor in both libraries. Prints one JSON line per check with the max |difference|.
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from hf_oracle import build_hf, hf_config, save_hf  # noqa: E402
from tl3 import load  # noqa: E402

import minineo  # noqa: E402


def check(arch: str, folder: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tl, _ = load(str(folder), "cpu")
    ours = minineo.load(folder)
    tl.set_use_split_qkv_input(True)
    tl.set_use_hook_mlp_in(True)
    tokens = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    layer, head = 1, 2
    cfg = ours.config
    X = torch.randn(2, 9, cfg.d_model, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        clean_logits, tl_cache = tl.run_with_cache(tokens)
        names = [f"blocks.{layer}.{s}" for s in ("q_input", "k_input", "v_input", "mlp_in")]
        _, cache = ours.run_with_cache(tokens, names=names)
        for name in names:
            tl_name = name.replace(f"{layer}.", f"{layer}.hook_")
            report(arch, f"record {tl_name}", cache[name], tl_cache[tl_name])
        for site in ("q_input", "k_input", "v_input", "attn_in", "mlp_in"):
            if site == "attn_in":
                tl.set_use_split_qkv_input(False)
                tl.set_use_attn_in(True)

            def replace(x, hook=None, site=site):
                x = x.clone()
                if site == "mlp_in":
                    return x * 0 + X
                x[:, :, head] = X
                return x

            tl_logits = tl.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_{site}", replace)])
            logits = ours(tokens, patch={f"blocks.{layer}.{site}": replace})
            report(arch, f"patch hook_{site}" + ("" if site == "mlp_in" else f" of head {head}"), logits, tl_logits,
                   effect=float((tl_logits - clean_logits).abs().max()))
        tl.set_use_attn_in(False)
        tl.set_use_hook_mlp_in(False)


def report(arch: str, what: str, ours: torch.Tensor, theirs: torch.Tensor, **extra: float) -> None:
    """One JSON line; `effect`: how far the patch moved TransformerLens's logits (so the check is not vacuous)."""
    print(json.dumps({"arch": arch, "check": what, "shape": list(ours.shape),
                      "max_abs_diff": float((ours - theirs).abs().max())} | extra), flush=True)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("gpt2", "gpt_neo"):
            hf = build_hf(hf_config(arch, layers=2, heads=4, d_head=8, window=4), seed=0, weight_scale=2.0)
            check(arch, save_hf(hf, Path(tmp) / arch))


if __name__ == "__main__":
    from minineo.boundary import run_script

    run_script(main)
