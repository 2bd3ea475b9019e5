"""Path patching (Wang et al. 2022, "Interpretability in the Wild", section 3.1), exact, on the patching engine.

API (stable):

    path_patching(model, clean_tokens, corrupted_tokens, metric, senders="heads", receivers="logits", *,
                  attention_mask=None, memory_budget=2**30) -> Tensor

The definition, for one set of sender heads:
  1. a run on the clean input in which the senders' outputs take their values from the corrupted run and
     every other attention head's output is frozen at its clean value (MLPs are recomputed); the
     receivers' inputs are recorded;
  2. a last clean run with only those receiver inputs patched; its logits give the metric.
`receivers` is "logits" (the receiver is the final residual: step 2 is ln_final and the unembedding of
step 1's final residual) or a list of (layer, head, "q" | "k" | "v"): the head's query, key or value input
(the sites blocks.L.q_input / k_input / v_input, patched for that head only). `senders` is "heads" (one
cell per sender head: a (layer, head) tensor) or an explicit collection of (layer, head) patched together
(a 0-d tensor). Values are float64 on the CPU; `metric` maps logits (batch, pos, d_vocab) to a scalar.

Why it is fast, while every step is a real forward pass through the model's own blocks (Model.run_from):
  * in step 1 no attention is computed at all: every head's output is a recorded value (frozen clean, or
    the sender's corrupted one), so each layer's attn_out is a tensor patch and the block skips attention;
    the residual then changes only where a sender's output changes, and positions are independent: only
    those (batch, pos) rows run, from the first sender's layer (starting at the clean residual there) to
    the last receiver's layer, through the MLPs alone;
  * with "logits" as the receiver, only the changed rows the metric reads are unembedded (the rest are
    the clean logits);
  * step 2 for head receivers starts at the first receiver's layer from the clean residual and recomputes
    only the positions from the first changed one on, with the clean run's keys and values before it;
  * sender variants run as one batch (variants x rows), chunked to `memory_budget` bytes.
The tests compare it with a brute-force loop built only from `model(tokens, patch=...)` and `run_with_cache`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch

from minineo import checks
from minineo.analysis.patching import Metric, _read_positions, finite_metric, metric_per_variant, prefix_kv
from minineo.errors import UserError
from minineo.forward.model import Model

Head = tuple[int, int]
Receiver = tuple[int, int, str]
INPUTS = ("q", "k", "v")


def check_senders(model: Model, senders) -> list[tuple[Head, ...]]:
    """The sender variants: one per head for "heads", else one variant holding every given head."""
    cfg = model.config
    if isinstance(senders, str):
        if senders != "heads":
            raise UserError(f"senders={senders!r} is unknown; give 'heads' (one cell per head) or a collection "
                            "of (layer, head) pairs patched together")
        return [((layer, head),) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    heads = checks.distinct(checks.integer_pairs(senders, "senders"), "senders")
    if not heads:
        raise UserError("senders is empty; give 'heads' or at least one (layer, head) pair")
    for layer, head in heads:
        checks.existing_head(layer, head, cfg.n_layers, cfg.n_heads, "sender")
    return [tuple(sorted(set(heads)))]


def check_receivers(model: Model, receivers) -> str | list[Receiver]:
    """"logits", or the validated list of (layer, head, input) receivers."""
    cfg = model.config
    if isinstance(receivers, str):
        if receivers != "logits":
            raise UserError(f"receivers={receivers!r} is unknown; give 'logits' or a list of (layer, head, 'q'|'k'|'v')")
        return receivers
    shape = "'logits' or a list of (layer, head, 'q'|'k'|'v') triples, e.g. [(9, 9, 'q'), (9, 6, 'q')]"
    if isinstance(receivers, bytes) or not isinstance(receivers, Iterable):
        raise UserError(f"receivers={checks.describe(receivers)} must be {shape}")
    out = []
    for item in receivers:
        if isinstance(item, (str, bytes, torch.Tensor)) or not isinstance(item, Sequence) or len(item) != 3 \
                or not all(checks.is_integer(x) for x in item[:2]) or not isinstance(item[2], str):
            raise UserError(f"receivers={checks.describe(receivers)} must be {shape}; {checks.describe(item)} is not one")
        out.append((int(item[0]), int(item[1]), item[2]))
    if not out:
        raise UserError("receivers is empty; give 'logits' or at least one (layer, head, 'q'|'k'|'v')")
    checks.distinct(out, "receivers")
    for layer, head, kind in out:
        checks.existing_head(layer, head, cfg.n_layers, cfg.n_heads, "receiver")
        if kind not in INPUTS:
            raise UserError(f"receiver ({layer}, {head}, {kind!r}): the input must be 'q', 'k' or 'v'")
    return sorted(set(out))


def reach_layer(model: Model, receivers: str | list[Receiver]) -> int:
    """The layer a sender must be before to reach the receivers: n_layers for the logits, else the last
    receiver's layer (a head's input reads only the outputs of earlier layers)."""
    return model.config.n_layers if receivers == "logits" else max(layer for layer, _, _ in receivers)


def check_reach(model: Model, variants: list[tuple[Head, ...]], receivers: str | list[Receiver]) -> None:
    """A UserError when no sender can reach any receiver: every value would be the clean run's, which a ranking
    would show as if it were a measurement. `path_patching` itself returns the clean value for a sender at or
    after the receivers' layer (it has no path to them: the brute-force definition gives the same), so a
    caller that ranks senders calls this first, as `minineo path-patch` does."""
    last = reach_layer(model, receivers)
    if any(min(layer for layer, _ in heads) < last for heads in variants):
        return
    first = min(layer for heads in variants for layer, _ in heads)
    raise UserError(f"no sender can reach the receivers: a head's input reads only the outputs of earlier layers, "
                    f"the last receiver is in layer {last} and the senders start at layer {first}, so every value "
                    "would be the clean run's; give receivers in a later layer (or 'logits'), or earlier senders")


def _token_pair(model: Model, clean_tokens, corrupted_tokens, attention_mask):
    """(clean, corrupted) tokens (batch, pos) and the mask they share (or None)."""
    clean, clean_mask = model.token_batch(clean_tokens, attention_mask, "clean_tokens")
    corrupted, corrupted_mask = model.token_batch(corrupted_tokens, attention_mask, "corrupted_tokens")
    if clean.shape != corrupted.shape:
        raise UserError(f"clean tokens {tuple(clean.shape)} and corrupted tokens {tuple(corrupted.shape)} differ in "
                        "shape; path patching aligns them position by position: give equal (batch, pos)")
    ones = torch.ones_like(clean)
    if not torch.equal(ones if clean_mask is None else clean_mask, ones if corrupted_mask is None else corrupted_mask):
        raise UserError("the clean and corrupted tokens carry different attention masks (padding), so their positions "
                        "do not line up; pad both the same way (prompts of equal token counts) or pass attention_mask=")
    return clean, corrupted, clean_mask


@torch.no_grad()
@checks.typed
def path_patching(
    model: Model, clean_tokens, corrupted_tokens, metric: Metric, senders="heads", receivers="logits", *,
    attention_mask: torch.Tensor | None = None, memory_budget: int = 2**30,
) -> torch.Tensor:
    """Path patching's metric: (layer, head) for senders="heads", a 0-d tensor for an explicit sender set.

    When the metric's values on the clean and the corrupted run are close (or the clean one is lower), minineo.report
    warns that results normalised by their gap are unreliable (checks.metric_gap_warnings)."""
    checks.function(metric, "metric", "logits (batch, pos, d_vocab) -> a scalar")
    variants = check_senders(model, senders)
    receivers = check_receivers(model, receivers)
    clean, corrupted, mask = _token_pair(model, clean_tokens, corrupted_tokens, attention_mask)
    cfg = model.config
    layers = range(cfg.n_layers)
    clean_names = [f"blocks.{layer}.{site}" for layer in layers
                   for site in ("resid_pre", "attn_out", "attn.z", "attn.k", "attn.v")]
    clean_logits, clean_cache = model.run_with_cache(clean, names=clean_names, attention_mask=mask)
    corrupted_logits, corrupted_cache = model.run_with_cache(
        corrupted, names=[f"blocks.{layer}.attn.z" for layer in layers], attention_mask=mask)
    _say_gap(metric, clean_logits, corrupted_logits)
    # each head's change of output: (batch, pos, head, d_model) from z and W_O (the caches' attn.result), and
    # where it is nonzero, (batch, pos, head)
    delta, changed = {}, {}
    for layer in layers:
        z_clean, z_corrupted = clean_cache[f"blocks.{layer}.attn.z"], corrupted_cache[f"blocks.{layer}.attn.z"]
        changed[layer] = (z_clean != z_corrupted).any(-1)
        if bool(changed[layer].any()):
            delta[layer] = corrupted_cache[f"blocks.{layer}.attn.result"] - clean_cache[f"blocks.{layer}.attn.result"]
    sweep = _Sweep(model, metric, clean_logits, clean_cache, delta, changed, mask, memory_budget)
    values = sweep.run(variants, receivers)
    if senders == "heads":
        return torch.tensor(values, dtype=torch.float64).view(cfg.n_layers, cfg.n_heads)
    return torch.tensor(values[0], dtype=torch.float64)


def _say_gap(metric: Metric, clean_logits: torch.Tensor, corrupted_logits: torch.Tensor) -> None:
    """minineo.report's warnings of checks.metric_gap_warnings on the metric of the clean and the corrupted run: a
    gap near 0 or of the wrong sign makes normalised results meaningless (a scalar metric only)."""
    from minineo import report

    values = [metric(logits) for logits in (clean_logits, corrupted_logits)]
    for value, run in zip(values, ("clean", "corrupted")):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
            finite_metric(value, f"on the {run} run")
    if all(isinstance(v, torch.Tensor) and v.numel() == 1 and v.is_floating_point() for v in values):
        for message in checks.metric_gap_warnings(float(values[0]), float(values[1]), "the metric on the clean run",
                                                  "on the corrupted run"):
            report.warn(message)


class _Sweep:
    """The sender variants' metric values, on one clean and one corrupted run (see the module docstring)."""

    def __init__(self, model, metric, clean_logits, clean_cache, delta, changed, mask, memory_budget):
        self.model, self.metric, self.logits, self.cache = model, metric, clean_logits, clean_cache
        self.delta, self.changed, self.mask, self.budget = delta, changed, mask, memory_budget
        self.cfg = model.config

    def run(self, variants: list[tuple[Head, ...]], receivers) -> list[float]:
        read, clean_value = _read_positions(self.metric, self.logits, "on the clean run")
        values = self._run(variants, receivers, read, clean_value)
        if any(v != v for v in values) and not bool(read.all()):  # NaN: the metric read an unembedded logit
            values = self._run(variants, receivers, torch.ones_like(read), clean_value)
        if any(v != v for v in values):  # finite on the clean run: the metric itself gave NaN on a patched one
            heads = variants[next(i for i, v in enumerate(values) if v != v)]
            raise UserError(f"the metric returned nan on the run with the senders {list(heads)} patched (finite on "
                            "the clean run); it must be a finite number on every run (check for a division by zero "
                            "or a log of 0)")
        return values

    def _run(self, variants, receivers, read, clean_value) -> list[float]:
        values = [clean_value] * len(variants)
        template = self.logits.clone()
        template[~read] = float("nan")
        buffer = torch.empty_like(template)
        last = self.cfg.n_layers if receivers == "logits" else max(layer for layer, _, _ in receivers)
        groups = defaultdict(list)  # start layer -> variant indices that change something a receiver can see
        for i, heads in enumerate(variants):
            start = min(layer for layer, _ in heads)
            if start < last and any(bool(self.changed[layer][:, :, head].any()) for layer, head in heads):
                groups[start].append(i)
        for start, todo in sorted(groups.items()):
            rows = torch.zeros_like(read)  # (batch, pos): the positions any of these variants changes
            for i in todo:
                for layer, head in variants[i]:
                    rows |= self.changed[layer][:, :, head]
            if receivers == "logits":
                rows &= read
                if not bool(rows.any()):
                    continue
            while todo:
                n = max(1, min(len(todo), self.budget // max(self._bytes_per_variant(rows, receivers, read), 1)))
                chunk, todo = todo[:n], todo[n:]
                resid = self._frozen_run([variants[i] for i in chunk], start, last, rows, receivers)
                if receivers == "logits":
                    found = metric_per_variant(self.metric, template, buffer, 0, rows, resid, f"senders from layer {start}")
                else:
                    found = self._receiver_run(resid, len(chunk), rows, receivers, read, template, buffer)
                for i, value in zip(chunk, found):
                    values[i] = value
        return values

    def _bytes_per_variant(self, rows, receivers, read) -> int:
        cfg, itemsize = self.cfg, self.logits.element_size()
        n_rows = int(rows.sum())
        step1 = n_rows * (12 * cfg.d_model + 3 * cfg.d_mlp + (cfg.d_vocab if receivers == "logits" else 0))
        if receivers == "logits":
            return itemsize * step1
        start = int(rows.any(0).nonzero()[0])
        suffix = rows.shape[0] * (rows.shape[1] - start)
        step2 = suffix * (8 * cfg.n_heads * cfg.d_model + 14 * cfg.d_model + 3 * cfg.d_mlp) + int(read[:, start:].sum()) * cfg.d_vocab
        return itemsize * (step1 + step2)

    def _frozen_run(self, chunk, start, last, rows, receivers):
        """Step 1 on the changed rows: every head's output recorded (frozen clean, or a sender's corrupted one).

        Each (variant, row) runs as its own length-1 sequence (no attention is computed, so rows are independent).
        Returns, for "logits", the logits of those rows (variants, rows, d_vocab); otherwise {receiver layer after
        `start`: its resid_pre on those rows (variants, rows, d_model)}.
        """
        n, n_rows = len(chunk), int(rows.sum())
        x = self.cache[f"blocks.{start}.resid_pre"][rows].repeat(n, 1)  # (variants * rows, d_model)
        patch = {}
        for layer in range(start, last):
            attn_out = self.cache[f"blocks.{layer}.attn_out"][rows].repeat(n, 1, 1).view(n, n_rows, -1)  # frozen heads
            for v, heads in enumerate(chunk):
                for sender_layer, head in heads:
                    if sender_layer == layer and layer in self.delta:
                        attn_out[v] += self.delta[layer][:, :, head][rows]  # the sender's corrupted output
            patch[f"blocks.{layer}.attn_out"] = attn_out.view(n * n_rows, 1, -1)
        if receivers == "logits":
            return self.model.run_from(start, x[:, None], patch=patch).view(n, n_rows, -1)  # (variants, rows, d_vocab)
        wanted = sorted({layer for layer, _, _ in receivers if start < layer < last})
        names = [f"blocks.{layer}.resid_pre" for layer in wanted]
        final, cache = self.model.run_from(start, x[:, None], patch=patch, names=names, stop_at_layer=last)
        resid = {layer: cache[f"blocks.{layer}.resid_pre"] for layer in wanted} | {last: final}
        return {layer: value.view(n, n_rows, -1) for layer, value in resid.items()}

    def _receiver_run(self, resid, n, rows, receivers, read, template, buffer) -> list[float]:
        """Step 2 for `n` variants: the clean run with the receivers' inputs patched (receivers at or before the
        senders' layer read clean values), from the first receiver's layer and the first changed position on
        (the clean run's keys and values before it)."""
        cfg = self.cfg
        first = min(layer for layer, _, _ in receivers)
        p0 = int(rows.any(0).nonzero()[0])
        batch, n_pos = rows.shape
        by_site = defaultdict(list)  # site -> [(head, value (variants, batch, n_suffix, d_model))]
        for layer, head, kind in receivers:
            if layer in resid:
                value = self.cache[f"blocks.{layer}.resid_pre"][:, p0:].repeat(n, 1, 1, 1)  # (variants, batch, n_suffix, d_model)
                value[:, rows[:, p0:]] = resid[layer]
                by_site[f"blocks.{layer}.{kind}_input"].append((head, value))
        patch = {name: _heads_patch(entries, n) for name, entries in by_site.items()}
        x = self.cache[f"blocks.{first}.resid_pre"][:, p0:].repeat(n, 1, 1)
        kv = prefix_kv(self.model, self.cache, first, p0, n, n_pos)
        at = read[:, p0:]
        logits = self.model.run_from(
            first, x, patch=patch, attention_mask=None if self.mask is None else self.mask.repeat(n, 1), kv=kv,
            logits_at=at.repeat(n, 1),
        ).view(n, -1, cfg.d_vocab)  # (variants, read rows, d_vocab)
        return metric_per_variant(self.metric, template, buffer, p0, at, logits, "receivers")


def _heads_patch(entries: list[tuple[int, torch.Tensor]], n_variants: int):
    """A patch function for a per-head input site (variants * batch, pos, head, d_model): each listed head reads
    its value (variants, batch, pos, d_model)."""

    def patch(value: torch.Tensor) -> torch.Tensor:
        value = value.view(n_variants, -1, *value.shape[1:]).clone()  # (variants, batch, pos, head, d_model)
        for head, new in entries:
            value[:, :, :, head] = new
        return value.flatten(0, 1)

    return patch
