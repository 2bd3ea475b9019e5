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
from minineo.errors import UserError
from minineo.record.recording import Recorder
from minineo.record.sites import HEAD_INPUTS


def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight + bias with weight stored (in, out), as HF's Conv1D computes it (one addmm)."""
    flat = x.reshape(-1, x.shape[-1])
    out = torch.addmm(bias, flat, weight) if bias is not None else flat @ weight
    return out.view(*x.shape[:-1], weight.shape[-1])


class LayerNorm(nn.Module):
    """LayerNorm with weight `w` and bias `b` (d_model,), or, with `weights=False` (a model after fold_ln,
    TransformerLens's LNPre), none: then `w` and `b` are constant ones and zeros, not parameters."""

    def __init__(self, d_model: int, eps: float, weights: bool = True):
        super().__init__()
        self.eps, self.weights = eps, weights
        if weights:
            self.w = nn.Parameter(torch.ones(d_model))
            self.b = nn.Parameter(torch.zeros(d_model))
        else:  # not in the state dict; they keep analyses that read ln.w / ln.b working
            self.register_buffer("w", torch.ones(d_model), persistent=False)
            self.register_buffer("b", torch.zeros(d_model), persistent=False)

    def forward(self, x: torch.Tensor, rec: Recorder, prefix: str) -> torch.Tensor:
        scale_name, normalized_name = prefix + "scale", prefix + "normalized"
        if rec.wants(scale_name) or rec.wants(normalized_name):
            x_centred = centred(x)
            scale = rec(scale_name, (x_centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())  # (batch, pos, 1)
            patched = scale_name in rec.patch or normalized_name in rec.patch
            if patched or normalized_name in rec.keep:  # otherwise a Cache recomputes it from x and scale
                normalized = rec(normalized_name, x_centred / scale)  # (batch, pos, d_model)
                if patched:
                    return normalized * self.w + self.b if self.weights else normalized
        # F.layer_norm is exactly what HF computes; the parts above are only the record.
        if not self.weights:
            return F.layer_norm(x, self.w.shape, None, None, self.eps)
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

    def _project_per_head(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Per-head inputs x (batch, pos, head, d_model) -> q, k or v (index 0, 1, 2): (batch, pos, head, d_head).

        Inputs that every head shares (an expanded view, head stride 0) take the fused projection, as the plain
        path does, instead of one product per head over copies of the same input."""
        cfg = self.config
        if x.stride(2) == 0:
            weight = self.W_QKV.view(cfg.d_model, 3, cfg.n_heads * cfg.d_head)[:, index]  # (d_model, head * d_head)
            bias = None if self.b_QKV is None else self.b_QKV.view(3, -1)[index]
            return affine(x[:, :, 0], weight, bias).view(*x.shape[:3], cfg.d_head)
        W, b = ((self.W_Q, self.b_Q), (self.W_K, self.b_K), (self.W_V, self.b_V))[index]
        return torch.einsum("bphm,hme->bphe", x, W) + b

    def forward(
        self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor], rec: Recorder,
        mask: torch.Tensor | None, explicit: bool, kv: KVCache | None = None,
    ) -> torch.Tensor:
        """x: ln1's output (batch, pos, d_model), or per head (query's, key's, value's) inputs after each head's
        own ln1, each (batch, pos, head, d_model). Returns attn_out (batch, pos, d_model)."""
        cfg, p = self.config, f"blocks.{self.layer}.attn."
        if isinstance(x, tuple):  # per-head inputs: head h's query is x_q[:, :, h] @ W_Q[h] + b_Q[h]
            batch, pos = x[0].shape[:2]
            parts = [self._project_per_head(x_h, index) for index, x_h in enumerate(x)]
        elif all(rec.fixed(p + name) for name in "qkv"):  # all three replaced by tensors: no projection
            batch, pos, _ = x.shape
            parts = (x.new_zeros(()).expand(batch, pos, cfg.n_heads, cfg.d_head),) * 3  # stand-ins for the shape check
        else:
            batch, pos, _ = x.shape
            parts = affine(x, self.W_QKV, self.b_QKV).view(batch, pos, 3, cfg.n_heads, cfg.d_head).unbind(2)
        q, k, v = (rec(p + name, t) for name, t in zip("qkv", parts))  # each (batch, pos, head, d_head)
        if kv is not None:
            k, v = kv.update(self.layer, k, v)  # (batch, past + pos, head, d_head)
        scale, upcast = cfg.attn_scales[self.layer], cfg.upcast_attn
        if rec.fixed(p + "z") and not (explicit or rec.wants(p + "scores") or rec.wants(p + "pattern")):
            z = q  # z is replaced by a tensor: the attention itself is skipped (q, k, v still computed, a kv cache
            # still filled); q stands in for the patch's shape check
        elif explicit or cfg.eager_attention or rec.wants(p + "scores") or rec.wants(p + "pattern"):
            # (GPT-Neo: HF runs eager attention only; its operations make the fast path HF float32 bit for bit)
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
        self.ln1 = LayerNorm(config.d_model, config.layer_norm_eps, config.ln_weights)
        self.attn = Attention(config, layer)
        self.ln2 = LayerNorm(config.d_model, config.layer_norm_eps, config.ln_weights)
        self.mlp = MLP(config, layer)

    def forward(
        self, x: torch.Tensor, rec: Recorder, mask: torch.Tensor | None, explicit: bool, kv: KVCache | None = None
    ) -> torch.Tensor:
        p = f"blocks.{self.layer}."
        resid_pre = rec(p + "resid_pre", x)
        if any(rec.wants(p + site) for site in HEAD_INPUTS):
            attn_out = self.attn(self._head_inputs(resid_pre, rec, p), rec, mask, explicit, kv)
        elif rec.fixed(p + "attn_out") and (kv is None or not kv.holds(self.layer)) \
                and not rec.wants_any((p + "attn.", p + "ln1.")):
            # attn_out is replaced by a tensor and nothing inside attention is asked for (nor its keys and values
            # by a cache): skip computing it (path patching freezes heads this way). resid_pre stands in only for
            # the patch's shape check.
            attn_out = resid_pre
        else:
            attn_out = self.attn(self.ln1(resid_pre, rec, p + "ln1."), rec, mask, explicit, kv)
        attn_out = rec(p + "attn_out", attn_out)
        resid_mid = rec(p + "resid_mid", resid_pre + attn_out)
        # a patch here changes the MLP's input, not resid_mid's flow (a patch function gets a copy to write into)
        mlp_in = rec(p + "mlp_in", resid_mid.clone() if callable(rec.patch.get(p + "mlp_in")) else resid_mid)
        if rec.fixed(p + "mlp_out") and not rec.wants_any((p + "mlp.", p + "ln2.")):
            # the same skip for the MLP: its output is replaced by a tensor; mlp_in stands in for the shape check
            mlp_out = rec(p + "mlp_out", mlp_in)
        else:
            mlp_out = rec(p + "mlp_out", self.mlp(self.ln2(mlp_in, rec, p + "ln2."), rec, explicit))
        return rec(p + "resid_post", resid_mid + mlp_out)

    def _head_inputs(self, resid_pre: torch.Tensor, rec: Recorder, p: str) -> tuple[torch.Tensor, ...]:
        """Each head's query, key and value inputs after its own ln1: 3 x (batch, pos, head, d_model).

        attn_in is resid_pre repeated per head; q_input, k_input and v_input read attn_in (TransformerLens's
        split-input hooks). ln1's own sites still describe ln1 of resid_pre.
        """
        if p + "ln1.scale" in rec.patch or p + "ln1.normalized" in rec.patch:
            raise UserError(f"{p}ln1 is patched together with a per-head input site of the same layer "
                            f"({', '.join(p + s for s in HEAD_INPUTS)}); each head then has its own LayerNorm, so "
                            "patch either ln1's sites or the per-head inputs, not both")
        if rec.wants(p + "ln1.scale") or rec.wants(p + "ln1.normalized"):
            self.ln1(resid_pre, rec, p + "ln1.")  # the record of ln1 on resid_pre; the heads normalise their own
        batch, pos, d_model = resid_pre.shape
        n_heads = self.attn.config.n_heads
        attn_in = resid_pre[:, :, None].expand(batch, pos, n_heads, d_model)  # a view: every head reads resid_pre
        # a patch function gets a copy, so that it may write into it; so does each q/k/v one below (writing into
        # its copy must not reach the other inputs)
        attn_in = rec(p + "attn_in", attn_in.clone() if callable(rec.patch.get(p + "attn_in")) else attn_in)
        normalized: list[tuple[torch.Tensor, torch.Tensor]] = []  # (input, its LayerNorm): shared inputs once
        for site in ("q_input", "k_input", "v_input"):
            x = rec(p + site, attn_in.clone() if callable(rec.patch.get(p + site)) else attn_in)  # (batch, pos, head, d_model)
            done = next((n for i, n in normalized if i is x), None)
            normalized.append((x, done if done is not None else self._ln_per_head(x)))
        return tuple(n for _, n in normalized)

    def _ln_per_head(self, x: torch.Tensor) -> torch.Tensor:
        """ln1 of per-head inputs (batch, pos, head, d_model); an input all heads share (head stride 0) is normalised
        once and stays an expanded view (so attention projects it with the fused weight)."""
        ln = self.ln1
        if x.stride(2) == 0:
            return F.layer_norm(x[:, :, 0], (x.shape[-1],), ln.w, ln.b, ln.eps)[:, :, None].expand_as(x)
        return F.layer_norm(x, (x.shape[-1],), ln.w, ln.b, ln.eps)
