"""Processed weights: TransformerLens's weight processing as an explicit transform that returns a new Model.

The definitions are TransformerLens 3.9's (`ProcessWeights.fold_layer_norm`, `center_writing_weights`,
`center_unembed`, `fold_value_biases`, applied in that order by `HookedTransformer.from_pretrained`'s
default processing); tests/test_processing.py checks the invariants, and docs/fidelity.md says how the
parameters compare with TransformerLens's own. Each step leaves log_softmax(logits) unchanged:

- fold_ln: each LayerNorm's weight and bias move into the weights that read its output (W_Q, W_K, W_V
  with ln1, W_in with ln2, W_U with ln_final): W <- diag(w) W, b <- b + b_ln W; those weights are then
  centred over d_model (their input is centred, so the mean row adds nothing). The LayerNorms keep
  only centring and scaling (TransformerLens's LNPre); GPT-Neo gains q/k/v biases, every model an
  unembedding bias b_U.
- center_writing_weights: W_E, W_pos, each W_O and b_O, each W_out and b_out lose their mean over
  d_model. Every reader of the residual stream is a LayerNorm, which removes that mean anyway.
- center_unembed: W_U and b_U lose their mean over d_vocab (the logits shift by one constant per
  position; softmax does not see it).
- fold_value_biases: b_V moves into b_O (b_O <- b_O + sum_head b_V W_O), since each query's pattern
  sums to 1 over the keys.

Differences become config values (`ln_weights`, `qkv_bias`, `unembed_bias`, `tie_unembed`); the forward
pass does not know that a model was processed. The residual stream of a processed model differs from
the raw one's (its mean over d_model is gone); the logits' log_softmax does not.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from minineo.forward.model import Model


def processed(
    model: Model, *, fold_ln: bool = True, center_writing_weights: bool = True, center_unembed: bool = True,
    fold_value_biases: bool = True,
) -> Model:
    """A new Model with processed weights (see the module docstring); `model` is left as it is.

    Same device and dtype (the arithmetic runs in float64), the same tokenizer; parameters do not
    require grad, as after `minineo.load`. A step with nothing left to do (fold_ln on a model whose
    LayerNorms are already folded) changes nothing, so processing twice equals processing once.
    """
    cfg = model.config
    n_heads, d_head = cfg.n_heads, cfg.d_head
    p = {name: t.detach().double() for name, t in model.state_dict().items()}  # copies
    W_U = p.pop("W_U_untied") if "W_U_untied" in p else p["W_E"].T.clone()  # (d_model, d_vocab)
    b_U = p.pop("b_U", None)  # (d_vocab,) or None
    folding = fold_ln and cfg.ln_weights
    if folding:
        for layer in range(cfg.n_layers):
            q = f"blocks.{layer}."
            bias = p.pop(q + "attn.b_QKV", None)
            p[q + "attn.W_QKV"], p[q + "attn.b_QKV"] = _fold(p.pop(q + "ln1.w"), p.pop(q + "ln1.b"),
                                                             p[q + "attn.W_QKV"], bias)
            p[q + "mlp.W_in"], p[q + "mlp.b_in"] = _fold(p.pop(q + "ln2.w"), p.pop(q + "ln2.b"),
                                                         p[q + "mlp.W_in"], p[q + "mlp.b_in"])
        W_U, b_U = _fold(p.pop("ln_final.w"), p.pop("ln_final.b"), W_U, b_U)
    if center_writing_weights:
        for name in ["W_E", "W_pos"] + [f"blocks.{layer}.{site}" for layer in range(cfg.n_layers)
                                        for site in ("attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out")]:
            p[name] = p[name] - p[name].mean(-1, keepdim=True)
    if center_unembed:
        W_U = W_U - W_U.mean(-1, keepdim=True)
        b_U = None if b_U is None else b_U - b_U.mean()
    if fold_value_biases:
        for layer in range(cfg.n_layers):
            q = f"blocks.{layer}.attn."
            if q + "b_QKV" in p:
                b_QKV = p[q + "b_QKV"].view(3, n_heads, d_head).clone()
                p[q + "b_O"] = p[q + "b_O"] + torch.einsum("he,hem->m", b_QKV[2], p[q + "W_O"])
                b_QKV[2] = 0
                p[q + "b_QKV"] = b_QKV.flatten()

    tied = cfg.tie_unembed and not (folding or center_writing_weights or center_unembed)
    if not tied:
        p["W_U_untied"] = W_U
    if b_U is not None:
        p["b_U"] = b_U
    config = dataclasses.replace(cfg, ln_weights=cfg.ln_weights and not folding, qkv_bias=cfg.qkv_bias or folding,
                                 unembed_bias=b_U is not None, tie_unembed=tied)
    return _build(model, config, p)


def _fold(w: torch.Tensor, b: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A LayerNorm's weight w and bias b (d_model,) folded into the weight W (d_model, out) that reads it.

    Returns (W', bias'): W' = diag(w) W centred over d_model, bias' = bias + b W (bias None: zeros).
    """
    bias = (torch.zeros(W.shape[1], dtype=W.dtype) if bias is None else bias) + b @ W  # (out,)
    W = w[:, None] * W  # (d_model, out)
    return W - W.mean(0, keepdim=True), bias


def _build(model: Model, config, params: dict[str, torch.Tensor]) -> Model:
    """A Model of `config` holding `params` (float64) in the source model's dtype, device and memory layout."""
    source = dict(model.state_dict())
    if "W_U_untied" not in source:
        source["W_U_untied"] = model.W_U  # W_E.T: the tied unembedding's layout
    like = model.W_E
    state = {}
    for name, value in params.items():
        old = source.get(name)
        if old is not None and old.shape == value.shape:  # keep the layout (see checkpoints.loading's bf16 note)
            state[name] = torch.empty_strided(old.shape, old.stride(), dtype=old.dtype, device=old.device).copy_(value)
        else:
            state[name] = value.to(dtype=like.dtype, device=like.device).contiguous()
    with torch.device("meta"):
        new = type(model)(config, model.tokenizer)
    new.load_state_dict(state, strict=True, assign=True)
    norms = [new.ln_final] + [ln for block in new.blocks for ln in (block.ln1, block.ln2)]
    for ln in norms:
        if not ln.weights:  # constant buffers, not in the state dict: made here, not on the meta device
            ln.w = torch.ones(config.d_model, dtype=like.dtype, device=like.device)
            ln.b = torch.zeros(config.d_model, dtype=like.dtype, device=like.device)
    new.source, new.name = getattr(model, "source", None), getattr(model, "name", None)
    new.generation_config = model.generation_config
    return new.requires_grad_(False).train(model.training)
