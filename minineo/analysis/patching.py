"""Activation patching (exact) and attribution patching (its gradient approximation), per layer and position/head.

API (stable):

    activation_patching(model, corrupted_tokens, clean_cache, metric, site, per="pos", *,
                        attention_mask=None, memory_budget=2**30) -> Tensor
    attribution_patching(model, corrupted_tokens, clean_cache, metric, site, per="pos", *,
                         attention_mask=None) -> Tensor

TransformerLens's "denoising" convention: each cell is `metric(logits of the corrupted run in which one
site value is replaced by the clean cache's)`. Swap the roles (clean tokens, corrupted cache) to noise.
  site: "resid_pre", "resid_mid", "attn_out", "mlp_out", "mlp.post" (per "pos"), and "attn.z", "attn.q",
        "attn.k", "attn.v", "attn.pattern" (per "pos", "head" or "head_pos"; the pattern's position is
        the query position).
  per:  "pos" -> (layer, pos), "head" -> (layer, head), "head_pos" -> (layer, pos, head).
  metric: logits (batch, pos, d_vocab) -> a scalar tensor. `clean_cache` is any mapping holding
        f"blocks.{L}.{site}" for every layer (a Cache from run_with_cache). `attention_mask` (batch, pos)
        applies to both runs (the clean cache must come from a run with the same mask).

Why the engine is fast, while every cell is still a real forward pass (Model.run_from: the model's own
block loop, with `kv=` for earlier positions and `logits_at=` for the unembedded ones) and equals
`metric(model(corrupted_tokens, patch={name: value}))`:
  * a patch at layer L leaves layers < L as in the corrupted run: each cell starts at L from the
    corrupted run's recorded resid_pre;
  * attention is causal: a patch whose first changed position is p leaves positions < p as in the
    corrupted run, so only positions >= p are recomputed, with the corrupted run's keys and values of
    the earlier positions (the generation key/value cache); a cell whose clean value is identical to
    the corrupted one (e.g. before the first differing token) changes nothing and is the corrupted metric;
  * the logits are unembedded only at the positions the metric reads (found once from its gradient and
    checked by re-evaluating it with every other position set to NaN and to noise; otherwise all);
  * many cells run as one batch (cells x prompts), chunked to `memory_budget` bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

import torch

from minineo import checks, progress
from minineo.record import lazy_sites
from minineo.errors import UserError
from minineo.forward.model import Model

Metric = Callable[[torch.Tensor], torch.Tensor]  # logits (batch, pos, d_vocab) -> scalar

# site -> (position axis, head axis or None) of its value (batch, ...)
SITES: dict[str, tuple[int, int | None]] = {
    "resid_pre": (1, None), "resid_mid": (1, None), "attn_out": (1, None), "mlp_out": (1, None),
    "mlp.post": (1, None), "attn.z": (1, 2), "attn.q": (1, 2), "attn.k": (1, 2), "attn.v": (1, 2),
    "attn.pattern": (2, 1),
}
PERS = ("pos", "head", "head_pos")


def check_site(site: str, per: str) -> str:
    """The canonical block site name ("z" -> "attn.z"), or a UserError for an unknown site or unsupported per."""
    short = site.removeprefix("hook_").replace("attn.hook_", "attn.")
    short = {"z": "attn.z", "q": "attn.q", "k": "attn.k", "v": "attn.v", "pattern": "attn.pattern",
             "post": "mlp.post", "mlp.hook_post": "mlp.post"}.get(short, short)
    if short not in SITES:
        raise UserError(f"cannot patch site {site!r}; give one of {list(SITES)}")
    if per not in PERS:
        raise UserError(f"per={per!r} is unknown; give 'pos' (layer, pos), 'head' (layer, head) or 'head_pos'")
    if per != "pos" and SITES[short][1] is None:
        raise UserError(f"site {short!r} has no heads, so per={per!r} is impossible; use per='pos' "
                        "or a head site (attn.z, attn.q, attn.k, attn.v, attn.pattern)")
    return short


def _scalar(value, what: str) -> torch.Tensor:
    if isinstance(value, (int, float)):
        return torch.tensor(float(value))
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise UserError(f"the metric must return a scalar (one-element tensor), got {shape} {what}; "
                        "reduce it, e.g. with .mean() over the batch")
    return value.reshape(())


def _inputs(model: Model, corrupted_tokens, clean_cache: Mapping, site: str, attention_mask):
    """Validated tokens (batch, pos), mask or None, and the clean site value of every layer."""
    tokens, attention_mask, _ = model._prepare(corrupted_tokens, attention_mask, None, "corrupted_tokens")
    names = [f"blocks.{layer}.{site}" for layer in range(model.config.n_layers)]
    missing = [name for name in names if name not in clean_cache]
    if missing:
        raise UserError(f"the clean cache has no {missing[0]!r} ({len(missing)} of {len(names)} layers missing); "
                        f"record it: model.run_with_cache(clean_tokens, names=lambda n: n.endswith({site!r}))")
    return tokens, attention_mask, [clean_cache[name] for name in names]


def _same_shape(clean: torch.Tensor, corrupted: torch.Tensor, name: str, tokens: torch.Tensor) -> None:
    if tuple(clean.shape) != tuple(corrupted.shape):
        raise UserError(f"the clean cache's {name} has shape {tuple(clean.shape)} but the corrupted run's is "
                        f"{tuple(corrupted.shape)} (tokens {tuple(tokens.shape)}); clean and corrupted tokens need "
                        "the same (batch, pos): pad or trim them to equal token counts")


def _cells(site: str, per: str, n_pos: int, n_heads: int) -> tuple[tuple[int, ...], list[tuple[int | None, int | None]]]:
    """The output shape per layer and each cell's (position or None, head or None), in output order."""
    if per == "pos":
        return (n_pos,), [(p, None) for p in range(n_pos)]
    if per == "head":
        return (n_heads,), [(None, h) for h in range(n_heads)]
    return (n_pos, n_heads), [(p, h) for p in range(n_pos) for h in range(n_heads)]


def _select(value: torch.Tensor, site: str, position: int | None, head: int | None) -> torch.Tensor:
    """The part of a site value (batch, ...) that one cell patches."""
    pos_axis, head_axis = SITES[site]
    index: list = [slice(None)] * value.ndim
    if position is not None:
        index[pos_axis] = position
    if head is not None:
        index[head_axis] = head
    return value[tuple(index)]


def _first_changed(clean: torch.Tensor, corrupted: torch.Tensor, site: str, position, head) -> int | None:
    """The first position the cell's patch changes (None: it changes nothing)."""
    pos_axis, head_axis = SITES[site]
    if position is not None:
        same = torch.equal(_select(clean, site, position, head), _select(corrupted, site, position, head))
        return None if same else position
    differs = clean != corrupted  # (batch, ...)
    if head is not None:
        differs = differs.select(head_axis, head)
        pos_axis = pos_axis - (head_axis < pos_axis)
    differs = differs.movedim(pos_axis, 0).flatten(1).any(1)  # (pos,)
    return int(differs.nonzero()[0]) if bool(differs.any()) else None


def finite_metric(value: torch.Tensor, what: str) -> torch.Tensor:
    """`value` (a scalar metric) when it is a finite number; else a UserError: every cell computed from a NaN or
    infinite baseline would be NaN or meaningless, silently."""
    if not bool(torch.isfinite(value.detach()).all()):
        raise UserError(f"the metric returned {float(value.detach())} {what}; it must be a finite number (check for a "
                        "division by zero, a log of 0 or a NaN in the metric)")
    return value


def _read_positions(metric: Metric, logits: torch.Tensor, what: str = "on the corrupted logits"
                    ) -> tuple[torch.Tensor, float]:
    """(batch, pos) bool: the logits the metric's value depends on; and the metric on `logits` (UserError when it
    is not finite; `what` names the run in that message).

    From the gradient, then checked by re-evaluating with every other position set to NaN and to noise:
    both must give the same value bit for bit, or every position counts as read.
    """
    with torch.inference_mode(False), torch.enable_grad():
        probe = logits.detach().clone().requires_grad_(True)
        value = finite_metric(_scalar(metric(probe), what), what)
        every = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
        if not value.requires_grad:
            return every, float(value)
        (grad,) = torch.autograd.grad(value, probe, allow_unused=True)
    if grad is None or not bool(grad.ne(0).any()):
        return every, float(value)
    read = grad.ne(0).any(-1)  # (batch, pos)
    with torch.no_grad():
        noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0)).to(logits) * 1e3
        for fill in (torch.full_like(logits, float("nan")), noise):
            fill[read] = logits[read]
            if float(_scalar(metric(fill), "")) != float(value):
                return every, float(value)
    return read, float(value)


def prefix_kv(model: Model, cache: Mapping, layer: int, start: int, repeat: int, n_pos: int):
    """A key/value cache holding the first `start` positions of layers >= `layer` from `cache` (attn.k and attn.v,
    each row repeated `repeat` times, variant-major), as in decoding; None when `start` is 0."""
    if start == 0:
        return None
    batch = cache[f"blocks.{layer}.attn.k"].shape[0]
    kv = model.kv_cache(batch * repeat, n_pos)
    for later in range(layer, model.config.n_layers):
        kv.keys[later][:, :start] = cache[f"blocks.{later}.attn.k"][:, :start].repeat(repeat, 1, 1, 1)
        kv.values[later][:, :start] = cache[f"blocks.{later}.attn.v"][:, :start].repeat(repeat, 1, 1, 1)
    kv.advance(start)
    return kv


def metric_per_variant(
    metric: Metric, template: torch.Tensor, buffer: torch.Tensor, start: int, rows: torch.Tensor,
    variant_logits: torch.Tensor, where: str,
) -> list[float]:
    """metric of `template` (batch, pos, d_vocab) with its positions >= start where `rows` (batch, pos - start) is
    True replaced by each variant's logits (variants, selected, d_vocab); `buffer` is scratch of template's shape."""
    buffer.copy_(template)
    target = buffer[:, start:]
    values = []
    for logits in variant_logits:
        target[rows] = logits
        values.append(float(_scalar(metric(buffer), f"on patched logits ({where})")))
    return values


def _variants_patch(clean: torch.Tensor, site: str, cells, n_variants: int, start: int):
    """A patch function for a batch of variants (variant-major, then prompt) of the positions >= start."""
    pos_axis, head_axis = SITES[site]
    suffix = clean.narrow(pos_axis, start, clean.shape[pos_axis] - start)
    chosen = torch.zeros((n_variants,) + suffix.shape, dtype=torch.bool, device=clean.device)
    for i, (position, head) in enumerate(cells):
        index: list = [i, slice(None)] + [slice(None)] * (suffix.ndim - 1)
        if position is not None:
            index[1 + pos_axis] = position - start
        if head is not None:
            index[1 + head_axis] = head
        chosen[tuple(index)] = True

    def patch(value: torch.Tensor) -> torch.Tensor:  # (variants * batch, ...)
        value = value.view((n_variants,) + suffix.shape)
        return torch.where(chosen, suffix, value).flatten(0, 1)

    return patch


@torch.no_grad()
@checks.typed
def activation_patching(
    model: Model, corrupted_tokens, clean_cache: Mapping, metric: Metric, site: str, per: str = "pos", *,
    attention_mask: torch.Tensor | None = None, memory_budget: int = 2**30,
) -> torch.Tensor:
    """Exact activation patching: (layer, pos), (layer, head) or (layer, pos, head) metric values (float64, CPU)."""
    site = check_site(site, per)
    checks.function(metric, "metric", "logits (batch, pos, d_vocab) -> a scalar")
    tokens, mask, clean = _inputs(model, corrupted_tokens, clean_cache, site, attention_mask)
    cfg, (batch, n_pos) = model.config, tokens.shape
    names = {f"blocks.{layer}.{s}" for layer in range(cfg.n_layers) for s in ("resid_pre", "attn.k", "attn.v", site)}
    logits, corrupted = model.run_with_cache(tokens, names=names, attention_mask=mask)
    read, baseline = _read_positions(metric, logits)
    shape, cells = _cells(site, per, n_pos, cfg.n_heads)

    def sweep(read: torch.Tensor, advance) -> torch.Tensor:  # (layer, cell), unembedding the (batch, pos) in `read`
        out = torch.full((cfg.n_layers, len(cells)), baseline, dtype=torch.float64)
        template = logits.clone()
        template[~read] = float("nan")
        buffer = torch.empty_like(template)
        itemsize = logits.element_size()
        for layer in range(cfg.n_layers):
            name = f"blocks.{layer}.{site}"
            _same_shape(clean[layer], corrupted[name], name, tokens)
            clean_value = clean[layer].to(device=logits.device, dtype=corrupted[name].dtype)
            todo = []  # (first changed position, cell index)
            for i, (position, head) in enumerate(cells):
                first = _first_changed(clean_value, corrupted[name], site, position, head)
                if first is not None:
                    todo.append((first, i))
            todo.sort()
            advance(len(cells) - len(todo))  # cells whose clean value is the corrupted one: nothing to run
            while todo:
                start = todo[0][0]
                n_suffix = n_pos - start
                rows = read[:, start:]  # (batch, n_suffix) positions to unembed
                per_variant = itemsize * (batch * n_suffix * (14 * cfg.d_model + 3 * cfg.d_mlp
                                                              + (3 * cfg.n_heads * n_pos if site == "attn.pattern" else 0))
                                          + int(rows.sum()) * cfg.d_vocab)
                n_variants = max(1, min(len(todo), memory_budget // max(per_variant, 1)))
                # cells whose first changed position is later than `start` recompute a few unchanged positions:
                # keep that waste under 1/8 of the chunk's positions
                n_variants = max(1, sum(1 for first, _ in todo[:n_variants] if first - start <= n_suffix // 8))
                chunk, todo = todo[:n_variants], todo[n_variants:]
                n_variants = len(chunk)
                x = corrupted[f"blocks.{layer}.resid_pre"][:, start:].repeat(n_variants, 1, 1)
                kv = prefix_kv(model, corrupted, layer, start, n_variants, n_pos)
                patch = _variants_patch(clean_value, site, [cells[i] for _, i in chunk], n_variants, start)
                variant_logits = model.run_from(
                    layer, x, patch={name: patch}, attention_mask=None if mask is None else mask.repeat(n_variants, 1),
                    kv=kv, logits_at=rows.repeat(n_variants, 1),
                ).view(n_variants, -1, cfg.d_vocab)  # (variants, rows, d_vocab)
                values = metric_per_variant(metric, template, buffer, start, rows, variant_logits, f"layer {layer}")
                for value, (_, i) in zip(values, chunk):
                    out[layer, i] = value
                advance(n_variants)
        return out

    with progress.task(f"activation patching: {site} per {per}, {cfg.n_layers} layers x {len(cells)} cells",
                       total=cfg.n_layers * len(cells)) as advance:
        out = sweep(read, advance)
        if bool(out.isnan().any()) and not bool(read.all()):
            # the metric read a logit that was not unembedded (left NaN): data-dependent reads; redo with all
            out = sweep(torch.ones_like(read), advance)
    if bool(out.isnan().any()):  # the baseline was finite: the metric itself gave NaN on a patched run
        layer, cell = (int(i) for i in out.isnan().nonzero()[0])
        raise UserError(f"the metric returned nan on the patched run of layer {layer}, cell {cell} (finite on the "
                        "corrupted run); it must be a finite number on every run (check for a division by zero or "
                        "a log of 0)")
    return out.view((cfg.n_layers,) + shape)


def _identity(value: torch.Tensor) -> torch.Tensor:
    return value


@checks.typed
def attribution_patching(
    model: Model, corrupted_tokens, clean_cache: Mapping, metric: Metric, site: str, per: str = "pos", *,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """First-order activation patching: (clean - corrupted) . d metric / d site, summed over each cell.

    One corrupted forward and one backward pass through the model's own forward (autograd through the
    recorded sites); same shapes as `activation_patching`. Exact where the metric is linear in the site.
    """
    site = check_site(site, per)
    checks.function(metric, "metric", "logits (batch, pos, d_vocab) -> a scalar")
    tokens, mask, clean = _inputs(model, corrupted_tokens, clean_cache, site, attention_mask)
    cfg = model.config
    names = [f"blocks.{layer}.{site}" for layer in range(cfg.n_layers)]
    with torch.inference_mode(False), torch.enable_grad():
        # a leaf at the embedding so the graph exists whether or not the parameters require grad
        patch = {"embed": lambda e: e.detach().requires_grad_(True)}
        if lazy_sites.rule(names[0], cfg) is not None:  # computed on access unless patched: an identity patch
            patch |= {name: _identity for name in names}  # keeps them in the graph (patterns: explicit layers)
        logits, corrupted = model.run_with_cache(tokens, names=names, patch=patch, attention_mask=mask)
        value = finite_metric(_scalar(metric(logits), "on the corrupted logits"), "on the corrupted logits")
        if not value.requires_grad:
            raise UserError("the metric's value does not depend differentiably on the logits (e.g. it calls "
                            ".item() or argmax); attribution patching needs a differentiable metric")
        grads = torch.autograd.grad(value, [corrupted[name] for name in names], allow_unused=True)
    out = []
    pos_axis, head_axis = SITES[site]
    for layer, name in enumerate(names):
        acts = corrupted[name].detach()
        _same_shape(clean[layer], acts, name, tokens)
        grad = torch.zeros_like(acts) if grads[layer] is None else grads[layer]
        effect = (clean[layer].to(acts) - acts) * grad  # (batch, ...)
        keep = {"pos": [pos_axis], "head": [head_axis], "head_pos": [pos_axis, head_axis]}[per]
        summed = effect.sum([d for d in range(effect.ndim) if d not in keep])  # kept axes in their order
        if per == "head_pos" and head_axis < pos_axis:
            summed = summed.T
        out.append(summed)
    return torch.stack(out).double().cpu()
