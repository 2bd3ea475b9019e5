"""GPT-Neo: nn.Linear stores weights (out, in), so they are transposed; separate q/k/v (no bias) are fused."""

from __future__ import annotations

import re

import torch

from minineo.config import Config
from minineo.checkpoints.weights.ledger import Ledger

# The causal (global layers, uint8) and sliding-window mask buffers, and masked_bias: not weights.
IGNORE = re.compile(r"h\.\d+\.attn\.attention\.(bias|masked_bias)")


def convert(ledger: Ledger, cfg: Config) -> dict[str, torch.Tensor]:
    d, d_mlp, head, d_head = cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.d_head
    params = {"W_E": ledger.take("wte.weight", (cfg.d_vocab, d)), "W_pos": ledger.take("wpe.weight", (cfg.n_ctx, d))}
    for layer in range(cfg.n_layers):
        hf, ours = f"h.{layer}.", f"blocks.{layer}."
        q, k, v = (ledger.take(f"{hf}attn.attention.{name}_proj.weight", (d, d)) for name in "qkv")
        params |= {
            ours + "ln1.w": ledger.take(hf + "ln_1.weight", (d,)),
            ours + "ln1.b": ledger.take(hf + "ln_1.bias", (d,)),
            ours + "attn.W_QKV": torch.cat([q.T, k.T, v.T], dim=1),  # (d_model, 3 * d_model)
            ours + "attn.W_O": ledger.take(hf + "attn.attention.out_proj.weight", (d, d)).T.reshape(head, d_head, d),
            ours + "attn.b_O": ledger.take(hf + "attn.attention.out_proj.bias", (d,)),
            ours + "ln2.w": ledger.take(hf + "ln_2.weight", (d,)),
            ours + "ln2.b": ledger.take(hf + "ln_2.bias", (d,)),
            ours + "mlp.W_in": ledger.take(hf + "mlp.c_fc.weight", (d_mlp, d)).T,
            ours + "mlp.b_in": ledger.take(hf + "mlp.c_fc.bias", (d_mlp,)),
            ours + "mlp.W_out": ledger.take(hf + "mlp.c_proj.weight", (d, d_mlp)).T,
            ours + "mlp.b_out": ledger.take(hf + "mlp.c_proj.bias", (d,)),
        }
    params["ln_final.w"] = ledger.take("ln_f.weight", (d,))
    params["ln_final.b"] = ledger.take("ln_f.bias", (d,))
    return params
