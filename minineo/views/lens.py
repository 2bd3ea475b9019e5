"""The lens view: a positions x layers grid of the logit lens (and the tuned lens), coloured by the true next
token's rank or probability; hover a cell for the lens's top tokens with their probabilities.

Reads `minineo.analysis.logit_lens` and `apply_tuned_lens` (nostalgebraist 2020; Belrose et al. 2023): the
residual before each block and after the last, through ln_final (and a trained translator) and W_U.
"""

from __future__ import annotations

import torch

from minineo import checks
from minineo.analysis.lens import LogitLens, logit_lens, summarise_lens
from minineo.analysis.tuned_lens import TunedLens
from minineo.errors import WrongTypeError
from minineo.forward.model import Model
from minineo.views.page import (View, asset, check_model, check_texts, first_row, joined, model_name, pack_float32,
                                 render, token_strings)


def _summary(result: LogitLens, top_k: int) -> tuple[dict, set[int]]:
    probs = result.logits.float().softmax(-1)  # (layer + 1, pos, d_vocab)
    top = probs.topk(top_k, dim=-1)  # (layer + 1, pos, top_k)
    ids = top.indices.flatten().tolist()
    packed = {"labels": list(result.labels), "top_ids": ids, "top_probs": pack_float32(top.values),
              "next_rank": result.next_token_rank.flatten().tolist(), "next_prob": pack_float32(result.next_token_prob)}
    return packed, set(ids)


@checks.typed
def lens(model: Model, tokens: torch.Tensor | str, tuned: TunedLens | None = None, *, top_k: int = 5,
         name: str | None = None, prompt: str | None = None) -> View:
    """The lens page of the first row of `tokens` ((batch, pos), (pos,) or a prompt string).

    Each cell (position p, layer l) shows the lens's top token; its colour is the rank of the true next token
    (token p + 1) at that layer (0 = top; log scale) or its probability; hovering lists the top `top_k` tokens with
    their probabilities. With `tuned` (a TunedLens for this model) the page also has the tuned lens, one click
    away. Raises UserError for a bad `top_k` or a lens made for another model.
    """
    check_model(model)
    check_texts(name=name, prompt=prompt)
    top_k = checks.count(top_k, "top_k", maximum=model.config.d_vocab,
                         fix=f"how many of the lens's top tokens to list (at most d_vocab={model.config.d_vocab}), e.g. 5")
    if tuned is not None and not isinstance(tuned, TunedLens):
        raise WrongTypeError(f"tuned must be a minineo TunedLens (analysis.TunedLens.load(path, model)), got "
                             f"{type(tuned).__name__}")
    text = tokens if isinstance(tokens, str) else None
    ids = first_row(model.to_tokens(tokens) if isinstance(tokens, str) else tokens).to(model.W_E.device)
    with torch.inference_mode():
        lenses = {"logit lens": logit_lens(model, ids[None])}
        if tuned is not None:
            logits = tuned.logits(model, ids[None])[:, 0]  # (layer + 1, pos, d_vocab); another shape is refused
            lenses["tuned lens"] = summarise_lens(tuned.labels(), logits, ids)
    summaries, seen = {}, set(ids.tolist())
    for key, result in lenses.items():
        summaries[key], used = _summary(result, top_k)
        seen |= used
    vocab_ids = sorted(seen)
    strings = token_strings(model, torch.tensor(vocab_ids, dtype=torch.long))
    words = token_strings(model, ids)
    data = {"tokens": words, "token_ids": ids.tolist(), "top_k": top_k, "d_vocab": model.config.d_vocab, "lenses": summaries,
            "vocab": dict(zip(map(str, vocab_ids), strings))}
    title = "Logit lens" + (" and tuned lens" if tuned is not None else "")
    page = render("lens", title, model_name(model, name), prompt if prompt is not None else text or joined(model, words),
                  data, BODY, asset("lens.js"))
    return View(page, "lens", height=200 + 22 * len(words))


BODY = """
<p class="note">Rows: positions (the token there, then the true next token); columns: the residual stream before each
block and after the last, read through ln_final and W_U. Each cell shows the lens's top token; its colour is the
true next token's rank (dark = rank 0) or probability. Hover a cell for the top tokens.</p>
<div class="controls" id="lens-choice"></div>
<div class="controls">colour by <button id="by-rank" class="active">rank of the next token</button>
  <button id="by-prob">probability of the next token</button></div>
<p class="note" id="legend"></p>
<table class="grid lens" id="lens-grid"></table>
"""
