"""The transformer block and its parts: LayerNorm, Attention, MLP. Each named site goes through `rec`.

q/k/v weights live once, fused, in `W_QKV` (d_model, 3 * head * d_head) -- GPT-2's own c_attn
layout -- and `W_Q`, `W_K`, `W_V` are views of it, shaped (head, d_model, d_head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minineo.forward.attention import attend_explicit, attend_fused
from minineo.forward.flex import attend_block_sparse, use_block_sparse
from minineo.config import Config
from minineo.forward.functional import ACTIVATION_FUNCTIONS, FUSED_ACTIVATION_FUNCTIONS, centred
from minineo.forward.kv_cache import KVCache
from minineo.record.recording import Recorder


def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight + bias with weight stored (in, out), as HF's Conv1D computes it (one addmm)."""
    flat = x.reshape(-1, x.shape[-1])
    out = torch.addmm(bias, flat, weight) if bias is not None else flat @ weight
    return out.view(*x.shape[:-1], weight.shape[-1])


class LayerNorm(nn.Module):
    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: torch.Tensor, rec: Recorder, prefix: str) -> torch.Tensor:
        scale_name, normalized_name = prefix + "scale", prefix + "normalized"
        if rec.wants(scale_name) or rec.wants(normalized_name):
            x_centred = centred(x)
            scale = rec(scale_name, (x_centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())  # (batch, pos, 1)
            patched = scale_name in rec.patch or normalized_name in rec.patch
            if patched or normalized_name in rec.keep:  # otherwise a Cache recomputes it from x and scale
                normalized = rec(normalized_name, x_centred / scale)  # (batch, pos, d_model)
                if patched:
                    return normalized * self.w + self.b
        # F.layer_norm is exactly what HF computes; the parts above are only the record.
        return F.layer_norm(x, self.w.shape, self.w, self.b, self.eps)


class Attention(nn.Module):
    def __init__(self, config: Config, layer: int):
        super().__init__()
        self.config, self.layer = config, layer
        d_model, head, d_head = config.d_model, config.n_heads, config.d_head
        self.W_QKV = nn.Parameter(torch.zeros(d_model, 3 * head * d_head))
        self.b_QKV = nn.Parameter(torch.zeros(3 * head * d_head)) if config.qkv_bias else None
        self.W_O = nn.Parameter(torch.zeros(head, d_head, d_model))
        self.b_O = nn.Parameter(torch.zeros(d_model))

    def _qkv_view(self, index: int) -> torch.Tensor:
        head, d_head = self.config.n_heads, self.config.d_head
        return self.W_QKV.view(self.config.d_model, 3, head, d_head)[:, index].permute(1, 0, 2)

    @property
    def W_Q(self) -> torch.Tensor:  # (head, d_model, d_head), a view of W_QKV
        return self._qkv_view(0)

    @property
    def W_K(self) -> torch.Tensor:
        return self._qkv_view(1)

    @property
    def W_V(self) -> torch.Tensor:
        return self._qkv_view(2)

    def _bias_view(self, index: int) -> torch.Tensor:
        """(head, d_head); GPT-Neo has no q/k/v bias, so these are zeros there (not parameters)."""
        head, d_head = self.config.n_heads, self.config.d_head
        if self.b_QKV is None:
            return torch.zeros(head, d_head, dtype=self.W_QKV.dtype, device=self.W_QKV.device)
        return self.b_QKV.view(3, head, d_head)[index]

    @property
    def b_Q(self) -> torch.Tensor:
        return self._bias_view(0)

    @property
    def b_K(self) -> torch.Tensor:
        return self._bias_view(1)

    @property
    def b_V(self) -> torch.Tensor:
        return self._bias_view(2)

    def forward(
        self, x: torch.Tensor, rec: Recorder, mask: torch.Tensor | None, explicit: bool, kv: KVCache | None = None
    ) -> torch.Tensor:
        batch, pos, _ = x.shape
        cfg, p = self.config, f"blocks.{self.layer}.attn."
        qkv = affine(x, self.W_QKV, self.b_QKV).view(batch, pos, 3, cfg.n_heads, cfg.d_head)
        q, k, v = (rec(p + name, t) for name, t in zip("qkv", qkv.unbind(2)))  # each (batch, pos, head, d_head)
        if kv is not None:
            k, v = kv.update(self.layer, k, v)  # (batch, past + pos, head, d_head)
        scale, upcast = cfg.attn_scales[self.layer], cfg.upcast_attn
        if explicit or rec.wants(p + "scores") or rec.wants(p + "pattern"):
            z = attend_explicit(q, k, v, mask, scale, upcast, rec, p)
        elif use_block_sparse(cfg.windows[self.layer], mask, q.shape[1], k.shape[1]):
            z = attend_block_sparse(q, k, v, mask, scale, upcast)  # local layer under torch.compile
        else:
            z = attend_fused(q, k, v, mask, scale, upcast)
        z = rec(p + "z", z)  # (batch, pos, head, d_head)
        if rec.wants(p + "result"):
            result = rec(p + "result", torch.einsum("bphe,hed->bphd", z, self.W_O))  # (batch, pos, head, d_model)
            return result.sum(2) + self.b_O
        return affine(z.reshape(batch, pos, -1), self.W_O.view(-1, cfg.d_model), self.b_O)


class MLP(nn.Module):
    def __init__(self, config: Config, layer: int):
        super().__init__()
        self.layer = layer
        self.act, self.fused_act = ACTIVATION_FUNCTIONS[config.act_fn], FUSED_ACTIVATION_FUNCTIONS[config.act_fn]
        self.W_in = nn.Parameter(torch.zeros(config.d_model, config.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(config.d_mlp))
        self.W_out = nn.Parameter(torch.zeros(config.d_mlp, config.d_model))
        self.b_out = nn.Parameter(torch.zeros(config.d_model))

    def forward(self, x: torch.Tensor, rec: Recorder, explicit: bool) -> torch.Tensor:
        p = f"blocks.{self.layer}.mlp."
        pre = rec(p + "pre", affine(x, self.W_in, self.b_in))  # (batch, pos, d_mlp)
        # HF's exact formula wherever mlp.post is seen; the fused kernel where nobody looks.
        act = self.act if explicit or rec.wants(p + "post") else self.fused_act
        post = rec(p + "post", act(pre))
        return affine(post, self.W_out, self.b_out)  # (batch, pos, d_model)


class Block(nn.Module):
    def __init__(self, config: Config, layer: int):
        super().__init__()
        self.layer = layer
        self.ln1 = LayerNorm(config.d_model, config.layer_norm_eps)
        self.attn = Attention(config, layer)
        self.ln2 = LayerNorm(config.d_model, config.layer_norm_eps)
        self.mlp = MLP(config, layer)

    def forward(
        self, x: torch.Tensor, rec: Recorder, mask: torch.Tensor | None, explicit: bool, kv: KVCache | None = None
    ) -> torch.Tensor:
        p = f"blocks.{self.layer}."
        resid_pre = rec(p + "resid_pre", x)
        attn_out = rec(p + "attn_out", self.attn(self.ln1(resid_pre, rec, p + "ln1."), rec, mask, explicit, kv))
        resid_mid = rec(p + "resid_mid", resid_pre + attn_out)
        mlp_out = rec(p + "mlp_out", self.mlp(self.ln2(resid_mid, rec, p + "ln2."), rec, explicit))
        return rec(p + "resid_post", resid_mid + mlp_out)
