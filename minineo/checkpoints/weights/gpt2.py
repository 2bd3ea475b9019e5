"""GPT-2: HF Conv1D stores weights (in, out), which is already minineo's layout; c_attn is fused q|k|v."""

from __future__ import annotations

import re

import torch

from minineo.config import Config
from minineo.checkpoints.weights.ledger import Ledger

# Causal-mask buffers saved by old versions, not weights. `attn.c_attn.bias` is a real weight.
IGNORE = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")


def convert(ledger: Ledger, cfg: Config) -> dict[str, torch.Tensor]:
    d, d_mlp, head, d_head = cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.d_head
    params = {"W_E": ledger.take("wte.weight", (cfg.d_vocab, d)), "W_pos": ledger.take("wpe.weight", (cfg.n_ctx, d))}
    for layer in range(cfg.n_layers):
        hf, ours = f"h.{layer}.", f"blocks.{layer}."
        params |= {
            ours + "ln1.w": ledger.take(hf + "ln_1.weight", (d,)),
            ours + "ln1.b": ledger.take(hf + "ln_1.bias", (d,)),
            ours + "attn.W_QKV": ledger.take(hf + "attn.c_attn.weight", (d, 3 * d)),
            ours + "attn.b_QKV": ledger.take(hf + "attn.c_attn.bias", (3 * d,)),
            ours + "attn.W_O": ledger.take(hf + "attn.c_proj.weight", (d, d)).reshape(head, d_head, d),
            ours + "attn.b_O": ledger.take(hf + "attn.c_proj.bias", (d,)),
            ours + "ln2.w": ledger.take(hf + "ln_2.weight", (d,)),
            ours + "ln2.b": ledger.take(hf + "ln_2.bias", (d,)),
            ours + "mlp.W_in": ledger.take(hf + "mlp.c_fc.weight", (d, d_mlp)),
            ours + "mlp.b_in": ledger.take(hf + "mlp.c_fc.bias", (d_mlp,)),
            ours + "mlp.W_out": ledger.take(hf + "mlp.c_proj.weight", (d_mlp, d)),
            ours + "mlp.b_out": ledger.take(hf + "mlp.c_proj.bias", (d,)),
        }
    params["ln_final.w"] = ledger.take("ln_f.weight", (d,))
    params["ln_final.b"] = ledger.take("ln_f.bias", (d,))
    return params
