"""Direct logit attribution: each component's write to the residual, through ln_final's cached scale, onto
the unembedding direction of an answer (or of answer minus wrong)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from minineo import checks, progress
from minineo.errors import UserError
from minineo.record.cache import Cache
from minineo.forward.model import Model


@dataclass
class Attribution:
    labels: list[str]  # "embed", "pos_embed", "L{l}H{h}", "L{l} b_O", "L{l} mlp"
    contributions: torch.Tensor  # (component, batch)
    ln_bias_term: torch.Tensor  # (batch,): ln_final's bias onto the direction, plus b_U's part (processed weights)
    logit: torch.Tensor  # (batch,): the true logit (difference)

    def per_head(self, n_layers: int, n_heads: int) -> torch.Tensor:
        """The heads' contributions as (layer, head, batch)."""
        rows = [self.labels.index(f"L{l}H{h}") for l in range(n_layers) for h in range(n_heads)]
        return self.contributions[rows].view(n_layers, n_heads, -1)


def dla_sites(name: str) -> bool:
    """The sites direct logit attribution reads: embeddings, each head's z, each MLP, ln_final's scale."""
    return name in ("embed", "pos_embed", "ln_final.scale") or name.endswith(("attn.z", "mlp_out"))


def unembed_direction(model: Model, answer: torch.Tensor, wrong: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, d_model): W_U[:, answer] (minus W_U[:, wrong])."""
    direction = model.W_U[:, answer].T
    return direction - model.W_U[:, wrong].T if wrong is not None else direction


@checks.typed
def direct_logit_attribution(
    model: Model, tokens: torch.Tensor, answer: int | torch.Tensor, wrong: int | torch.Tensor | None = None,
    position: int | torch.Tensor = -1, attention_mask: torch.Tensor | None = None,
) -> Attribution:
    """Contributions at `position` (per row if a tensor) to the answer logit, or to answer - wrong.

    They sum, with `ln_bias_term`, to the true logit (difference) at that position.
    """
    tokens, attention_mask = model.token_batch(tokens, attention_mask)  # (batch, pos)
    with progress.task(f"direct logit attribution on {tuple(tokens.shape)} tokens"):
        logits, cache = model.run_with_cache(tokens, names=dla_sites, attention_mask=attention_mask)
        return attribution_from_cache(model, cache, logits, answer, wrong, position)


def attribution_from_cache(model: Model, cache: Cache, logits: torch.Tensor, answer, wrong, position) -> Attribution:
    batch = logits.shape[0]
    rows = torch.arange(batch, device=logits.device)
    pos = _positions(position, batch, logits.shape[1], logits.device)
    answer = _token_ids(answer, "answer", model.config.d_vocab, logits.device, batch)
    wrong = None if wrong is None else _token_ids(wrong, "wrong", model.config.d_vocab, logits.device, batch)
    direction = unembed_direction(model, answer, wrong)  # (batch, d_model)
    scale = cache["ln_final.scale"][rows, pos]  # (batch, 1)

    def project(x: torch.Tensor) -> torch.Tensor:  # x: (..., batch, d_model) at the chosen positions
        centred = x - x.mean(-1, keepdim=True)
        return (centred / scale * model.ln_final.w * direction).sum(-1)

    labels, parts = ["embed", "pos_embed"], [project(cache["embed"][rows, pos]), project(cache["pos_embed"][rows, pos])]
    for layer, block in enumerate(model.blocks):
        result = cache[f"blocks.{layer}.attn.result"][rows, pos]  # (batch, head, d_model), lazily from z
        parts += list(project(result.transpose(0, 1)))
        labels += [f"L{layer}H{h}" for h in range(model.config.n_heads)]
        parts.append(project(block.attn.b_O.expand(batch, -1)))
        labels.append(f"L{layer} b_O")
        parts.append(project(cache[f"blocks.{layer}.mlp_out"][rows, pos]))
        labels.append(f"L{layer} mlp")
    true_logit = logits[rows, pos, answer] - (logits[rows, pos, wrong] if wrong is not None else 0)
    bias_term = (model.ln_final.b * direction).sum(-1)
    if model.b_U is not None:  # the unembedding bias of processed weights (model.processed)
        bias_term = bias_term + model.b_U[answer] - (model.b_U[wrong] if wrong is not None else 0)
    return Attribution(labels, torch.stack(parts), bias_term, true_logit)


def _positions(position, batch: int, n_pos: int, device: torch.device) -> torch.Tensor:
    """`position` (an int, or one per row; negative counts from the end) as a LongTensor (batch,) in 0..n_pos-1."""
    if isinstance(position, torch.Tensor) and position.ndim > 0:
        if position.dtype.is_floating_point or position.dtype == torch.bool or position.ndim != 1 \
                or position.numel() not in (1, batch):
            raise UserError(f"position must be an int or an integer tensor of one position per row ({batch}), got "
                            f"{checks.describe(position)}")
        if position.numel() and (int(position.min()) < -n_pos or int(position.max()) >= n_pos):
            raise UserError(f"position holds {int(position.max())}, outside -{n_pos}..{n_pos - 1} (the tokens have "
                            f"{n_pos} positions)")
        return position.to(device).long().expand(batch) % n_pos
    position = checks.integer(position, "position", low=-n_pos, high=n_pos - 1,
                              fix=f"the tokens have {n_pos} positions; -1 is the last")
    return torch.full((batch,), position % n_pos, device=device, dtype=torch.long)


def _token_ids(ids, what: str, d_vocab: int, device: torch.device, batch: int) -> torch.Tensor:
    """`ids` (an int, or one per row) as a LongTensor (batch,), each checked against the vocabulary."""
    try:
        ids = torch.as_tensor(ids, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{what} must be a token id (an int, or a tensor of one per row), got {ids!r:.60}") from err
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool or ids.ndim > 1:
        raise UserError(f"{what} must be integer token ids (an int, or shape (batch,)), got a {ids.dtype} tensor "
                        f"of shape {tuple(ids.shape)}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= d_vocab):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise UserError(f"{what} token id {bad} is outside the vocabulary (0..{d_vocab - 1}); give an id of this "
                        "model's tokens, e.g. model.to_tokens(' Mary', prepend_bos=False)[0, 0]")
    if ids.ndim == 1 and ids.numel() not in (1, batch):
        raise UserError(f"{what} has {ids.numel()} ids but the batch has {batch} rows; give one id, or one per row")
    return ids.long().expand(batch)


@checks.typed
def head_logit_attribution(model: Model, cache: Cache | Mapping, logits: torch.Tensor, answer, wrong=None, position=-1) -> torch.Tensor:
    """Per-head direct effect (layer, head), averaged over the batch."""
    batch, n_pos = cache["ln_final.scale"].shape[:2]
    checks.tensor(logits, "logits (the logits of the cache's run)", (batch, n_pos, model.config.d_vocab),
                  dims="(batch, pos, d_vocab)")
    attribution = attribution_from_cache(model, cache, logits, answer, wrong, position)
    return attribution.per_head(model.config.n_layers, model.config.n_heads).mean(-1)
