"""The attention view: every layer and head's pattern on one prompt, as one HTML page.

A head grid (layers x heads) of pattern thumbnails; click one to enlarge it, hover a cell for the value. Hover a
token to colour the prompt by the selected head's attention from it (or to it). GPT-Neo's local layers are
labelled with their window, and the keys outside it are greyed. Values are the cache's own `attn.pattern`
(16-bit quantised: within 7.6e-6, shown to 3 digits).
"""

from __future__ import annotations

from typing import Sequence

import torch

from minineo import checks
from minineo.errors import UnknownNameError, UserError, WrongTypeError
from minineo.record.cache import Cache
from minineo.views.page import (View, asset, check_model, check_texts, first_row, joined, model_name, pack_quantised,
                                 render, token_strings)


@checks.typed
def attention(cache: Cache, tokens: torch.Tensor | Sequence[str], model=None, *, name: str | None = None,
              prompt: str | None = None, batch: int = 0) -> View:
    """The attention page of one prompt: `cache` from `model.run_with_cache(tokens)` (it needs every layer's
    `attn.pattern`, (batch, head, q_pos, k_pos)), `tokens` the ids (batch, pos) or (pos,) or their strings.

    `model` turns ids into text (without it they show as `#id`) and names the page (or `name=`); `prompt` is the
    text shown in the header (default: the tokens joined); `batch` picks the row. Raises UserError when the cache
    lacks a pattern, the row does not exist, the tokens do not match the pattern's length, or `model` is not the
    model that recorded the cache (`cache.model` names it: its name and a fingerprint of its weights).
    """
    if not isinstance(cache, Cache):
        raise WrongTypeError(f"cache must be the Cache of model.run_with_cache(tokens), got {type(cache).__name__}")
    if model is not None:
        check_model(model)
        if cache.model is not None and cache.model != model.identity():
            raise UserError(f"the cache was recorded on {cache.model}, but model is {model.identity()} (another "
                            "model of the same shape, or its processed weights); pass the model that recorded the cache, "
                            "or record the cache again with this one")
    check_texts(name=name, prompt=prompt)
    config = cache.config
    patterns = []
    for layer in range(config.n_layers):
        site = f"blocks.{layer}.attn.pattern"
        try:
            patterns.append(cache[site])
        except (KeyError, UnknownNameError):
            raise UserError(f"the cache has no {site}; record it with model.run_with_cache(tokens) (every site) or "
                            f"names=[... '{site}' for each layer]") from None
    stacked = torch.stack(patterns)  # (layer, batch, head, q_pos, k_pos)
    batch = checks.index(batch, stacked.shape[1], "batch", fix=f"the cache holds {stacked.shape[1]} row(s)")
    pattern = stacked[:, batch].detach().float().cpu()  # (layer, head, q_pos, k_pos)
    n_pos = pattern.shape[-1]
    if isinstance(tokens, (list, tuple)) and all(isinstance(t, str) for t in tokens):
        words = list(tokens)
    else:
        ids = first_row(tokens) if not (isinstance(tokens, torch.Tensor) and tokens.ndim == 2) else first_row(tokens[batch])
        words = token_strings(model, ids)
    if len(words) != n_pos:
        raise UserError(f"{len(words)} tokens were given but the cache's patterns cover {n_pos} positions; pass "
                        "the tokens the cache was recorded on")
    rows, cols = torch.tril_indices(n_pos, n_pos)  # the causal half: query i sees keys j <= i
    lower = pattern[:, :, rows, cols]  # (layer, head, n_pos (n_pos + 1) / 2)
    data = {"tokens": words, "n_layers": config.n_layers, "n_heads": config.n_heads,
            "windows": list(config.windows), "pattern": pack_quantised(lower, 0.0, 1.0)}
    shown_model = model_name(model, name, config)
    text = prompt if prompt is not None else joined(model, words)
    page = render("attention", "Attention patterns", shown_model, text, data, BODY, asset("attention.js"))
    return View(page, "attention", height=760)


BODY = """
<p class="note">Click a thumbnail to enlarge a head; hover a cell of the enlarged pattern for its value, or a token
to colour the prompt by the selected head's attention (every thumbnail then shows that token's row, or column).
Rows are queries, columns keys; the colour is the square root of the probability (white 0, dark blue 1), so small weights stay visible.</p>
<div class="row">
  <div><h2>Heads (rows: layers, columns: heads)</h2><table class="grid" id="head-grid"></table></div>
  <div><h2 id="big-title"></h2><canvas id="big"></canvas>
    <div class="readout" id="readout"></div></div>
</div>
<h2>Tokens</h2>
<div class="controls">attention of the selected head
  <button id="mode-from" class="active">from the hovered token</button><button id="mode-to">to the hovered token</button>
  <span class="note" id="window-note"></span></div>
<div class="tokens" id="tokens"></div>
"""
