"""The logit lens: each layer's residual stream, through ln_final (its own LayerNorm scale) and W_U."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minineo import checks, progress
from minineo.errors import UserError
from minineo.forward.model import Model


@dataclass
class LogitLens:
    labels: list[str]  # "0_pre" ... "final_post": the residual before each block, and after the last
    logits: torch.Tensor  # (layer + 1, pos, d_vocab), the one prompt's
    top_tokens: torch.Tensor  # (layer + 1, pos): the lens's top token at each position
    next_token_rank: torch.Tensor  # (layer + 1, pos - 1): rank of the actual next token (0 = top)
    next_token_prob: torch.Tensor  # (layer + 1, pos - 1)
    kl_to_final: torch.Tensor  # (layer + 1, pos): KL(final distribution || this layer's)


@checks.typed
def logit_lens(model: Model, tokens: torch.Tensor) -> LogitLens:
    """Lens over one prompt: `tokens` (pos,) or (1, pos), or a prompt's text. A batch of several rows is a
    UserError (the result is one prompt's; lens each row, e.g. `logit_lens(model, tokens[i:i + 1])`)."""
    tokens = model.to_tokens(tokens) if isinstance(tokens, str) else torch.as_tensor(tokens, device=model.W_E.device)
    tokens = tokens[None] if tokens.ndim == 1 else tokens
    check_one_row(tokens, "tokens")
    with progress.task(f"logit lens: {model.config.n_layers + 1} residuals x {tokens.shape[1]} positions through W_U"):
        _, cache = model.run_with_cache(tokens, names=lambda n: n.endswith(("resid_pre", "resid_post")))
        resid, labels = cache.accumulated_resid(apply_ln=True)  # each layer normalised with its own scale
        logits = resid[:, 0] @ model.W_U  # (layer + 1, pos, d_vocab)
        logits = (logits if model.b_U is None else logits + model.b_U).float()  # b_U: processed weights only
    return summarise_lens(labels, logits, tokens[0])


def check_one_row(tokens: torch.Tensor, name: str) -> None:
    """A UserError unless `tokens` is one row (1, pos): a lens reads one prompt, and a padded batch's other rows
    (and its left padding) would otherwise be dropped or read as text."""
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise UserError(f"{name} has shape {tuple(tokens.shape)}: a lens reads one prompt, (pos,) or (1, pos); "
                        f"lens each prompt on its own, e.g. logit_lens(model, {name}[i:i + 1]) for row i")


def summarise_lens(labels: list[str], logits: torch.Tensor, tokens: torch.Tensor) -> LogitLens:
    """Top tokens, next-token rank and probability, KL to the last row, from lens logits (layer + 1, pos, d_vocab).

    Shared by the logit lens and the tuned lens (minineo.analysis.tuned_lens); `tokens` is one row (pos,).
    """
    log_probs = logits.log_softmax(-1)
    nxt = tokens[1:]
    next_logit = logits[:, :-1].gather(-1, nxt[None, :, None].expand(logits.shape[0], -1, 1))  # (layer+1, pos-1, 1)
    rank = (logits[:, :-1] > next_logit).sum(-1)
    prob = log_probs[:, :-1].gather(-1, nxt[None, :, None].expand(logits.shape[0], -1, 1)).squeeze(-1).exp()
    final = log_probs[-1:]
    kl = F.kl_div(log_probs, final.expand_as(log_probs), log_target=True, reduction="none").sum(-1)
    return LogitLens(labels, logits, logits.argmax(-1), rank, prob, kl)
