"""The patching view: activation- or path-patching results as a heatmap (layers x positions or heads), with the
value of each cell on hover.

Takes the tensors `minineo.analysis.activation_patching` ((layer, pos), (layer, head), (layer, pos, head)) and
`path_patching` ((layer, head)) return; the page says what the numbers are (`metric`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from minineo import checks
from minineo.errors import UserError, WrongTypeError
from minineo.views.page import (View, asset, check_model, check_texts, first_row, joined, model_name, pack_float32,
                                 render, token_strings, visible)

PER = ("pos", "head", "head_pos")


@checks.typed
def patching(values: torch.Tensor, per: str = "pos", *, model=None, tokens: torch.Tensor | Sequence[str] | None = None,
             title: str = "Activation patching", metric: str = "the metric", name: str | None = None,
             prompt: str | None = None, centre: float = 0.0) -> View:
    """A heatmap page of patching results: `values` (layer, pos) for per="pos", (layer, head) for "head",
    (layer, pos, head) for "head_pos" (shown as layer x (position, head)).

    `tokens` (ids with `model`, or strings) label the positions; `metric` names what a cell is (e.g. "normalised
    logit difference (0 = corrupted, 1 = clean)"); colours diverge from `centre`. Raises UserError when the shape
    does not fit `per` or the tokens.
    """
    if per not in PER:
        raise UserError(f"per={per!r} is not one of {', '.join(PER)}")
    if model is not None:
        check_model(model)
    check_texts(title=title, metric=metric, name=name, prompt=prompt)
    if isinstance(centre, bool) or not isinstance(centre, (int, float)) or not math.isfinite(centre):
        raise UserError(f"centre={centre!r} must be a finite number (0, or 1 for path patching)")
    try:
        values = torch.as_tensor(values).detach().float().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise WrongTypeError(f"values must be a tensor of patching results, got {type(values).__name__}") from None
    want = {"pos": 2, "head": 2, "head_pos": 3}[per]
    if values.ndim != want:
        raise UserError(f"per={per!r} needs values of {want} dimensions ((layer, pos), (layer, head) or "
                        f"(layer, pos, head)), got shape {tuple(values.shape)}")
    if values.numel() == 0:
        raise UserError(f"values is empty (shape {tuple(values.shape)}); give the patching results to draw")
    if not torch.isfinite(values).all():
        raise UserError("values hold NaN or inf; a patching result is finite (check the metric)")
    words = None
    if tokens is not None:
        if isinstance(tokens, (list, tuple)) and all(isinstance(t, str) for t in tokens):
            words = list(tokens)
        else:
            words = token_strings(model, first_row(tokens))
        if per != "head" and len(words) != values.shape[1]:
            raise UserError(f"tokens: {len(words)} tokens label {values.shape[1]} positions; pass the patched prompt's tokens")
    n_layers = values.shape[0]
    shown = [visible(w) for w in words] if words else None
    if per == "pos":
        columns = [f"{p} {w}" for p, w in enumerate(shown)] if shown else [f"pos {p}" for p in range(values.shape[1])]
    elif per == "head":
        columns = [f"H{h}" for h in range(values.shape[1])]
    else:
        columns = [f"{p} {shown[p]} H{h}" if shown else f"{p} H{h}"
                   for p in range(values.shape[1]) for h in range(values.shape[2])]
    grid = values.reshape(n_layers, -1)  # (layer, column)
    data = {"rows": [f"L{l}" for l in range(n_layers)], "columns": columns, "values": pack_float32(grid),
            "metric": metric, "centre": centre, "per": per}
    shown_model = model_name(model, name) if model is not None or name else "a model"
    text = prompt if prompt is not None else (joined(model, words) if words else None)
    page = render("patching", title, shown_model, text, data, BODY, asset("patching.js"))
    return View(page, "patching", height=200 + 26 * n_layers)


BODY = """
<p class="note" id="metric"></p>
<div style="overflow-x:auto"><table class="grid" id="heatmap"></table></div>
<p class="note" id="scale"></p>
"""
