"""The attributions view: direct logit attribution per component (embeddings, each head, each b_O, each MLP) as a
sortable bar chart.

Reads `minineo.analysis.direct_logit_attribution`: each component's write at the answer position, through
ln_final with the cached scale, onto W_U[:, answer] (minus W_U[:, wrong]); the bars plus the ln_final bias term
sum to the true logit (difference).
"""

from __future__ import annotations

import torch

from minineo import checks
from minineo.analysis.attribution import direct_logit_attribution
from minineo.errors import UserError
from minineo.forward.model import Model
from minineo.views.page import (View, asset, check_model, check_texts, first_row, joined, model_name, pack_float32,
                                 render, token_strings)


def _answer_id(model: Model, answer: int | str, what: str) -> int:
    """A token id, or the id of a text that is one token; a UserError naming `what` otherwise."""
    if isinstance(answer, str):
        ids = model._require_tokenizer().encode(answer)
        if len(ids) != 1:
            raise UserError(f"{what}={answer!r} is {len(ids)} tokens; give one token's text or its id (the CLI's "
                            "`minineo attribute --html` compares answers of several tokens at their first difference)")
        return ids[0]
    return checks.token_id(answer, model.config.d_vocab, what, fix="a token id of the vocabulary, or one token's text")


@checks.typed
def attributions(model: Model, tokens: torch.Tensor | str, answer: int | str, wrong: int | str | None = None, *,
                 position: int = -1, name: str | None = None, prompt: str | None = None) -> View:
    """The DLA bar chart for the first row of `tokens` ((batch, pos), (pos,) or a prompt) at `position`.

    `answer` and `wrong` are token ids or one token's text; with `wrong` the bars attribute logit(answer) -
    logit(wrong). Values are logits. Sort by model order, value or |value|; hover a bar for its value. Raises
    UserError for an answer of several tokens or outside the vocabulary, or a position outside the prompt.
    """
    check_model(model)
    check_texts(name=name, prompt=prompt)
    text = tokens if isinstance(tokens, str) else None
    ids = first_row(model.to_tokens(tokens) if isinstance(tokens, str) else tokens).to(model.W_E.device)
    answer_id = _answer_id(model, answer, "answer")
    wrong_id = None if wrong is None else _answer_id(model, wrong, "wrong")
    if wrong_id is not None and wrong_id == answer_id:
        raise UserError(f"answer={answer!r} and wrong={wrong!r} are the same token (id {answer_id}), so logit(answer) - "
                        "logit(wrong) is 0 everywhere; give two different tokens, or wrong=None for the answer's logit")
    n = ids.numel()
    position = checks.index(position, n, "position", signed=True,
                            fix=f"a position of the prompt's {n} tokens, counted from the end when negative (-1: the last)")
    with torch.inference_mode():
        result = direct_logit_attribution(model, ids[None], answer_id, wrong_id, position=position)
    vocab = token_strings(model, torch.tensor([answer_id] + ([wrong_id] if wrong_id is not None else [])))
    words = token_strings(model, ids)
    data = {"labels": result.labels, "values": pack_float32(result.contributions[:, 0]),
            "bias_term": float(result.ln_bias_term[0]), "logit": float(result.logit[0]),
            "answer": vocab[0], "wrong": vocab[1] if wrong_id is not None else None,
            "position": position % n, "tokens": words}
    page = render("attributions", "Direct logit attribution", model_name(model, name),
                  prompt if prompt is not None else text or joined(model, words), data, BODY, asset("attributions.js"))
    return View(page, "attributions", height=160 + 18 * len(result.labels))


BODY = """
<p class="note" id="target"></p>
<div class="controls">sort <button id="sort-model" class="active">model order</button>
  <button id="sort-value">largest first</button><button id="sort-abs">largest |value| first</button></div>
<div id="bars"></div>
<p class="note" id="sum"></p>
"""
