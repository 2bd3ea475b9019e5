"""Head ablations through `patch=` on blocks.L.attn.z: zero, mean and resample; single-head effects on a
metric; and backup heads (whose direct effect grows when the top heads are ablated)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from minineo.analysis.attribution import dla_sites, head_logit_attribution
from minineo.errors import UserError
from minineo.model import Model

Head = tuple[int, int]
Metric = Callable[[torch.Tensor], torch.Tensor]  # logits (batch, pos, d_vocab) -> scalar


def ablation_patch(
    model: Model, tokens: torch.Tensor, heads: Iterable[Head], method: str = "zero",
    reference_tokens: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
    reference_mask: torch.Tensor | None = None, seed: int = 0,
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The `patch=` dict that ablates `heads`.

    zero: z = 0. mean: z = its mean over the batch and real (unpadded) positions of `reference_tokens`
    (default: tokens). resample: z from a reference row (default: the batch shuffled with `seed`) at the
    same position. `reference_mask` is the reference's attention mask (default: `attention_mask`).
    """
    if method not in ("zero", "mean", "resample"):
        raise UserError(f"ablation method {method!r} is unknown; use 'zero', 'mean' or 'resample'")
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in heads:
        if not (0 <= layer < model.config.n_layers and 0 <= head < model.config.n_heads):
            raise UserError(f"head ({layer}, {head}) does not exist in a {model.config.n_layers}x{model.config.n_heads} model")
        by_layer[layer].append(head)
    replacement: dict[int, torch.Tensor] = {}
    if method != "zero":
        reference = tokens if reference_tokens is None else reference_tokens
        mask = attention_mask if reference_tokens is None else reference_mask
        if method == "resample" and reference_tokens is None:
            perm = torch.randperm(tokens.shape[0], generator=torch.Generator().manual_seed(seed)).to(tokens.device)
            reference, mask = reference[perm], None if mask is None else mask[perm]
        names = [f"blocks.{layer}.attn.z" for layer in by_layer]
        _, cache = model.run_with_cache(reference, names=names, attention_mask=mask)
        weights = torch.ones(reference.shape, device=reference.device) if mask is None else mask.to(model.W_E.dtype)
        for layer in by_layer:
            z = cache[f"blocks.{layer}.attn.z"]  # (batch, pos, head, d_head)
            if method == "mean":
                w = weights[:, :, None, None].to(z.dtype)
                replacement[layer] = (z * w).sum((0, 1), keepdim=True) / w.sum()
            else:
                replacement[layer] = z

    def make(layer: int, hs: list[int]) -> Callable[[torch.Tensor], torch.Tensor]:
        def patch(z: torch.Tensor) -> torch.Tensor:
            z = z.clone()
            z[:, :, hs] = 0 if method == "zero" else replacement[layer][:, :, hs].expand_as(z[:, :, hs])
            return z
        return patch

    return {f"blocks.{layer}.attn.z": make(layer, hs) for layer, hs in by_layer.items()}


def ablate_heads(model: Model, tokens: torch.Tensor, heads: Iterable[Head], method: str = "zero", **kwargs) -> torch.Tensor:
    """Logits (batch, pos, d_vocab) with `heads` ablated."""
    mask = kwargs.get("attention_mask")
    return model(tokens, patch=ablation_patch(model, tokens, heads, method, **kwargs), attention_mask=mask)


def head_ablation_effects(model: Model, tokens: torch.Tensor, metric: Metric, method: str = "zero",
                          **kwargs) -> torch.Tensor:
    """(layer, head): metric(ablated logits) - metric(clean logits), one head at a time."""
    mask = kwargs.get("attention_mask")
    clean = float(metric(model(tokens, attention_mask=mask)))
    effects = torch.zeros(model.config.n_layers, model.config.n_heads)
    for layer in range(model.config.n_layers):
        for head in range(model.config.n_heads):
            effects[layer, head] = float(metric(ablate_heads(model, tokens, [(layer, head)], method, **kwargs))) - clean
    return effects


@dataclass
class BackupHeads:
    ablated: list[Head]  # the heads with the largest direct effect, ablated together
    direct_before: torch.Tensor  # (layer, head) direct logit attribution, clean run
    direct_after: torch.Tensor  # (layer, head) the same with `ablated` ablated
    backups: list[tuple[Head, float]]  # other heads whose direct effect grew most, with the growth


def backup_heads(model: Model, tokens: torch.Tensor, answer, wrong=None, position=-1, top: int = 3,
                 method: str = "mean", attention_mask: torch.Tensor | None = None, n_backups: int = 5) -> BackupHeads:
    """Ablate the `top` heads with the largest direct effect on answer (- wrong); report compensating heads."""
    logits, cache = model.run_with_cache(tokens, names=dla_sites, attention_mask=attention_mask)
    before = head_logit_attribution(model, cache, logits, answer, wrong, position)
    order = before.flatten().argsort(descending=True)[:top]
    ablated = [(int(i) // model.config.n_heads, int(i) % model.config.n_heads) for i in order]
    patch = ablation_patch(model, tokens, ablated, method, attention_mask=attention_mask)
    logits_after, cache_after = model.run_with_cache(tokens, names=dla_sites, patch=patch, attention_mask=attention_mask)
    after = head_logit_attribution(model, cache_after, logits_after, answer, wrong, position)
    growth = after - before
    for layer, head in ablated:
        growth[layer, head] = float("-inf")
    ranked = growth.flatten().argsort(descending=True)[:n_backups]
    backups = [((int(i) // model.config.n_heads, int(i) % model.config.n_heads), float(growth.flatten()[i])) for i in ranked]
    return BackupHeads(ablated, before, after, backups)
