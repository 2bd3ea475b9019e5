"""Head ablations through `patch=` on blocks.L.attn.z: zero, mean and resample; single-head effects on a
metric; and backup heads (whose direct effect grows when the top heads are ablated)."""

from __future__ import annotations

from collections import ChainMap, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from minineo import checks, progress
from minineo.analysis.attribution import dla_sites, head_logit_attribution
from minineo.analysis.patching import activation_patching
from minineo.errors import UserError
from minineo.forward.model import Model
from minineo.checkpoints.tokens import as_token_batch

Head = tuple[int, int]
Metric = Callable[[torch.Tensor], torch.Tensor]  # logits (batch, pos, d_vocab) -> scalar


def ablation_values(
    model: Model, tokens: torch.Tensor, layers: Iterable[int], method: str = "zero",
    reference_tokens: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
    reference_mask: torch.Tensor | None = None, seed: int = 0, cache: Mapping[str, torch.Tensor] | None = None,
) -> dict[int, torch.Tensor]:
    """Per layer, what an ablated head's z (batch, pos, head, d_head) becomes (broadcastable to it).

    zero: 0. mean: the mean of z over the batch and real (unpadded) positions of `reference_tokens`
    (default: tokens). resample: z of a reference row (default: the batch shuffled with `seed`) at the
    same position; each row resampled from a different row (`resample_sources`; a batch of 1 is refused).
    `reference_mask` is the reference's attention mask (default: `attention_mask`).
    `cache`: a run of `tokens` holding attn.z, reused for the mean over `tokens` instead of a new run.
    """
    checks.one_of(method, "method", METHODS, "zero, mean or resample ablation")
    layers = sorted(set(layers))
    if method == "zero":
        return {layer: torch.zeros((), dtype=model.W_E.dtype, device=model.W_E.device) for layer in layers}
    reference = tokens if reference_tokens is None else reference_tokens
    mask = attention_mask if reference_tokens is None else reference_mask
    names = [f"blocks.{layer}.attn.z" for layer in layers]
    if method == "resample" and reference_tokens is None:
        perm = resample_sources(tokens.shape[0], seed).to(tokens.device)
        reference, mask = reference[perm], None if mask is None else mask[perm]
    reuse = method == "mean" and reference_tokens is None and cache is not None and all(n in cache for n in names)
    if not reuse:  # (the mean over `tokens` themselves reads their z from the cache)
        _, cache = model.run_with_cache(reference, names=names, attention_mask=mask)
    weights = torch.ones(reference.shape, device=reference.device) if mask is None else mask.to(model.W_E.dtype)
    values: dict[int, torch.Tensor] = {}
    for layer in layers:
        z = cache[f"blocks.{layer}.attn.z"]  # (batch, pos, head, d_head)
        if method == "mean":
            w = weights[:, :, None, None].to(z.dtype)
            values[layer] = (z * w).sum((0, 1), keepdim=True) / w.sum()  # (1, 1, head, d_head)
        else:
            values[layer] = z
    return values


def resample_sources(batch: int, seed: int = 0) -> torch.Tensor:
    """(batch,): the row each row's resampled z comes from -- a random derangement (one cycle through a seeded
    random order), so no row is ever "resampled" from itself. A batch of 1 is a UserError."""
    if batch < 2:
        raise UserError(f"resample ablation needs at least 2 prompts (each row's z comes from another row), got a "
                        f"batch of {batch}; give 2 or more prompts, pass reference_tokens to resample from, or use "
                        "method='mean' or 'zero'")
    order = torch.randperm(batch, generator=torch.Generator().manual_seed(seed))
    sources = torch.empty(batch, dtype=torch.long)
    sources[order] = order.roll(-1)  # order[i] reads order[i + 1]: one cycle, no fixed point
    return sources


def ablation_patch(
    model: Model, tokens: torch.Tensor, heads: Iterable[Head], method: str = "zero",
    reference_tokens: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
    reference_mask: torch.Tensor | None = None, seed: int = 0, cache: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The `patch=` dict that ablates `heads` (see `ablation_values` for the methods)."""
    checks.one_of(method, "method", METHODS, "zero, mean or resample ablation")
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in checks.heads(heads, model.config.n_layers, model.config.n_heads, "heads"):
        by_layer[layer].append(head)
    replacement = ablation_values(model, tokens, by_layer, method, reference_tokens, attention_mask,
                                  reference_mask, seed, cache)

    def make(layer: int, hs: list[int]) -> Callable[[torch.Tensor], torch.Tensor]:
        def patch(z: torch.Tensor) -> torch.Tensor:
            z = z.clone()
            z[:, :, hs] = 0 if method == "zero" else replacement[layer][:, :, hs].expand_as(z[:, :, hs])
            return z
        return patch

    return {f"blocks.{layer}.attn.z": make(layer, hs) for layer, hs in by_layer.items()}


METHODS = ("zero", "mean", "resample")


@checks.typed
def ablate_heads(model: Model, tokens: torch.Tensor, heads: Iterable[Head], method: str = "zero", **kwargs) -> torch.Tensor:
    """Logits (batch, pos, d_vocab) with `heads` ablated."""
    mask = kwargs.get("attention_mask")
    return model(tokens, patch=ablation_patch(model, tokens, heads, method, **kwargs), attention_mask=mask)


@checks.typed
def head_ablation_effects(model: Model, tokens: torch.Tensor, metric: Metric, method: str = "zero",
                          **kwargs) -> torch.Tensor:
    """(layer, head): metric(ablated logits) - metric(clean logits), one head at a time.

    Each head's ablation is a cell of the patching engine (`activation_patching` on attn.z per head, with
    the ablated values as the "clean" run): it starts at the head's layer from the recorded residual and
    runs the heads of a layer as one batch, and equals `metric(ablate_heads(model, tokens, [head]))`.
    """
    mask = kwargs.get("attention_mask")
    cfg = model.config
    checks.function(metric, "metric", "logits (batch, pos, d_vocab) -> a scalar")
    checks.one_of(method, "method", METHODS, "zero, mean or resample ablation")
    tokens = as_token_batch(tokens, cfg.d_vocab, model.W_E.device)  # (batch, pos)
    with progress.task(f"ablating each of {cfg.n_layers * cfg.n_heads} heads ({method})"):
        values = ablation_values(model, tokens, range(cfg.n_layers), method, **kwargs)
        z_shape = (*tokens.shape, cfg.n_heads, cfg.d_head)
        ablated = {f"blocks.{layer}.attn.z": value.expand(z_shape) for layer, value in values.items()}
        clean = float(metric(model(tokens, attention_mask=mask)))
        effects = activation_patching(model, tokens, ablated, metric, "attn.z", per="head", attention_mask=mask)
    return effects - clean


@dataclass
class BackupHeads:
    ablated: list[Head]  # the heads with the largest direct effect, ablated together
    direct_before: torch.Tensor  # (layer, head) direct logit attribution, clean run
    direct_after: torch.Tensor  # (layer, head) the same with `ablated` ablated
    backups: list[tuple[Head, float]]  # other heads whose direct effect grew most, with the growth


@checks.typed
def backup_heads(model: Model, tokens: torch.Tensor, answer, wrong=None, position=-1, top: int = 3,
                 method: str = "mean", attention_mask: torch.Tensor | None = None, n_backups: int = 5) -> BackupHeads:
    """Ablate the `top` heads with the largest direct effect on answer (- wrong); report compensating heads."""
    top = checks.count(top, "top", maximum=model.config.n_layers * model.config.n_heads,
                       fix=f"the model has {model.config.n_layers * model.config.n_heads} heads")
    n_backups = checks.count(n_backups, "n_backups", minimum=0)
    tokens = as_token_batch(tokens, model.config.d_vocab, model.W_E.device)  # (batch, pos)
    names = lambda n: dla_sites(n) or n.endswith("resid_pre")  # noqa: E731
    with progress.task(f"backup heads: ablating the top {top} direct heads ({method})"):
        logits, cache = model.run_with_cache(tokens, names=names, attention_mask=attention_mask)
        before = head_logit_attribution(model, cache, logits, answer, wrong, position)
        order = before.flatten().argsort(descending=True)[:top]
        ablated = [(int(i) // model.config.n_heads, int(i) % model.config.n_heads) for i in order]
        patch = ablation_patch(model, tokens, ablated, method, attention_mask=attention_mask, cache=cache)
        # layers before the first ablated head are as in the clean run: continue from its residual there
        first = min(layer for layer, _ in ablated)
        logits_after, cache_after = model.run_from(first, cache[f"blocks.{first}.resid_pre"], patch=patch,
                                                   names=dla_sites, attention_mask=attention_mask)
        after = head_logit_attribution(model, ChainMap(cache_after, cache), logits_after, answer, wrong, position)
        growth = after - before
        for layer, head in ablated:
            growth[layer, head] = float("-inf")
        ranked = growth.flatten().argsort(descending=True)[:n_backups]
        backups = [(divmod(int(i), model.config.n_heads), float(growth.flatten()[i])) for i in ranked]
        return BackupHeads(ablated, before, after, backups)
