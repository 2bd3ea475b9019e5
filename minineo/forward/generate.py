"""Sampling with a key/value cache on the fast path, apart from the analysis path. Left-padding aware.

It uses only the model's public decoding entry (`Model.kv_cache`, `Model.decode`): the prompt is one
decode call, every new token one more, each writing into a key/value cache preallocated for the
prompt plus `max_new_tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from minineo import checks
from minineo.errors import UserError, WrongTypeError
from minineo.forward.kv_cache import KVCache
from minineo.checkpoints.tokens import TokenInput, positions_from_mask

if TYPE_CHECKING:
    from minineo.forward.model import Model

__all__ = ["KVCache", "generate", "MODEL_EOS"]


class _ModelEos:
    """The default of `eos_token_id`: the model's own (`model.generation_config`: generation_config.json's, else
    config.json's), as HF's `generate` takes it from the model's GenerationConfig."""

    def __repr__(self) -> str:
        return "MODEL_EOS"


MODEL_EOS = _ModelEos()


@torch.inference_mode()
# their own checks state the range too
@checks.typed(own=("max_new_tokens", "temperature", "top_k", "eos_token_id", "pad_token_id"))
def generate(
    model: Model, tokens: TokenInput, max_new_tokens: int = 20, *, temperature: float = 1.0, top_k: int | None = None,
    do_sample: bool = False, attention_mask: torch.Tensor | None = None,
    eos_token_id: int | Sequence[int] | torch.Tensor | None | _ModelEos = MODEL_EOS, pad_token_id: int | None = None,
    generator: torch.Generator | None = None, static: bool | None = None,
) -> torch.Tensor:
    """Prompt plus up to `max_new_tokens` tokens: LongTensor (batch, pos + new), as HF's `generate` returns them.

    Greedy unless `do_sample`. Left-padded batches need `attention_mask` (text input is padded and
    masked automatically). `static` decodes with the same shapes at every step (the default when the
    model was compiled; see `KVCache`).

    Stopping follows HF's `generate` (transformers' `_sample` and `EosTokenCriteria`):
    - `eos_token_id` defaults to the model's own, `model.generation_config.eos_token_ids`: every id the folder's
      generation_config.json lists when it has one (HF's `from_pretrained` then ignores config.json's ids, and a
      null or absent eos_token_id there means no stopping), else every id config.json lists. An int or a
      list/tuple/1-D tensor of ids stops a row at the first of them it produces (the stop token is kept in the
      output); `None` disables stopping, so exactly `max_new_tokens` tokens come out.
    - A row that has stopped continues with `pad_token_id` while the others decode; generation ends
      when every row has stopped or after `max_new_tokens`, so the result is as wide as the longest
      row needed. `pad_token_id` defaults, as in HF, to the model's (`model.generation_config.pad_token_id`,
      from the same file as its stop ids), else the first stop id.

    Raises UserError for a right-padded `attention_mask` (a 0 after a row's real tokens: pad on the left), a
    negative `max_new_tokens`, a prompt that does not fit n_ctx with the new
    tokens, a non-positive sampling temperature, a bad `top_k`, a stop/pad id that is not a token id
    of the vocabulary (0..d_vocab-1; a bool or float is not an id, a numpy integer is; a set of stop ids is
    not a list), or a sampling option (`temperature` other than 1.0, `top_k`, `generator`) without
    `do_sample=True`: greedy decoding would ignore it (HF's `generate` only warns).
    """
    max_new_tokens = checks.integer(max_new_tokens, "max_new_tokens", low=0)
    if top_k is not None:
        top_k = checks.count(top_k, "top_k", fix="keep the k likeliest tokens, or top_k=None for all")
    if not isinstance(do_sample, bool):
        raise WrongTypeError(f"do_sample must be True (sample) or False (greedy), got {checks.describe(do_sample)}")
    if do_sample:
        temperature = checks.number(temperature, "temperature", low=0, low_open=True,
                                    fix="use do_sample=False for greedy decoding")
    else:
        checks.number(temperature, "temperature",
                      fix="it divides the logits when sampling; leave it at 1.0 for greedy decoding")
        _refuse_sampling_options(temperature, top_k, generator)
    stop_ids = _stop_ids(model, eos_token_id)
    pad = _pad_id(model, pad_token_id, stop_ids)
    tokens, attention_mask = model.token_batch(tokens, attention_mask)
    if attention_mask is not None:
        _refuse_right_padding(attention_mask)
    batch, prompt = tokens.shape
    if prompt + max_new_tokens > model.config.n_ctx:
        raise UserError(f"prompt ({prompt}) + max_new_tokens ({max_new_tokens}) exceeds n_ctx={model.config.n_ctx}")
    out = torch.empty(batch, prompt + max_new_tokens, dtype=torch.long, device=tokens.device)  # (batch, pos + new)
    out[:, :prompt] = tokens
    if max_new_tokens == 0:
        return out
    kv = model.kv_cache(batch, prompt + max_new_tokens, static=static)
    if attention_mask is None:
        position_ids = torch.arange(prompt, device=tokens.device).expand(batch, prompt)
    else:
        position_ids = positions_from_mask(attention_mask)
    finished = torch.zeros(batch, dtype=torch.bool, device=tokens.device)
    stops = None if stop_ids is None else torch.tensor(stop_ids, dtype=torch.long, device=tokens.device)
    logits = model.decode(tokens, kv, position_ids, attention_mask)  # (batch, d_vocab)
    position_ids = position_ids[:, -1:]  # (batch, 1)
    for step in range(max_new_tokens):
        next_token = _choose(logits.float(), do_sample, temperature, top_k, generator)  # (batch,)
        if stops is not None:  # HF: finished rows get the pad id, then a row finishes on any stop id
            next_token = torch.where(finished, torch.full_like(next_token, pad), next_token)
            finished |= torch.isin(next_token, stops)
        out[:, prompt + step] = next_token
        if step + 1 == max_new_tokens or stops is not None and bool(finished.all()):
            return out[:, :prompt + step + 1]
        position_ids = position_ids + 1  # every new token is real: the next position of its row
        logits = model.decode(next_token[:, None], kv, position_ids)
    return out


def _refuse_right_padding(attention_mask: torch.Tensor) -> None:
    """A mask with a 0 after a 1 in a row (right padding, [1, 1, 1, 0, 0]) is a UserError: every row continues from
    the batch's last position, so a right-padded row would continue after its pads (HF's generate only warns)."""
    mask = attention_mask.bool()
    after = mask[:, :-1] & ~mask[:, 1:]  # (batch, pos - 1): a real token followed by a pad
    if bool(after.any()):
        row = int(after.any(-1).nonzero()[0, 0])
        position = int(after[row].nonzero()[0, 0]) + 1
        kind = "is right-padded" if not bool(mask[row, position:].any()) else "has padding between real tokens"
        raise UserError(f"attention_mask row {row} {kind} (a 0 at position {position} after real tokens, "
                        f"{attention_mask[row].tolist()[:12]}{'...' if attention_mask.shape[1] > 12 else ''}): "
                        "generation continues every row from the last position, so pad on the left (HF: "
                        "tokenizer.padding_side = 'left'; a list of texts given to generate is padded on the left)")


def _stop_ids(model: Model, eos_token_id: object) -> list[int] | None:
    """The stop ids as a list of ints, or None (no stopping); the model's own for MODEL_EOS."""
    if eos_token_id is MODEL_EOS:
        # every id the model's generation config lists (an id outside the vocabulary is never produced, so it
        # never stops a row: HF behaves the same)
        return list(model.generation_config.eos_token_ids) or None
    if eos_token_id is None:
        return None
    what = "eos_token_id"
    accepted = "an id (an int), a list or tuple of ids, a 1-D integer tensor of ids, or None (never stop early)"
    if isinstance(eos_token_id, torch.Tensor):
        if eos_token_id.dim() > 1 or eos_token_id.is_floating_point() or eos_token_id.is_complex() \
                or eos_token_id.dtype == torch.bool:
            raise UserError(f"{what} must be {accepted}, got a {eos_token_id.dtype} tensor of shape "
                            f"{tuple(eos_token_id.shape)}")
        eos_token_id = eos_token_id.reshape(-1).tolist()
    elif type(eos_token_id).__module__ == "numpy" and getattr(eos_token_id, "ndim", 0) == 1:
        eos_token_id = list(eos_token_id)  # a 1-D numpy array of ids, as a tensor is taken
    if isinstance(eos_token_id, (list, tuple)):
        ids = list(eos_token_id)
    elif checks.is_integer(eos_token_id):
        ids = [eos_token_id]
    else:  # a set (no order, so no first id to pad with), a dict, a string, a float...
        raise WrongTypeError(f"{what} must be {accepted}, got {checks.describe(eos_token_id)}"
                             + ("; a set has no order, and the first stop id pads finished rows: give a list"
                                if isinstance(eos_token_id, (set, frozenset)) else ""))
    if not ids:
        raise UserError(f"{what}=[] names no stop token; give at least one id, or eos_token_id=None to never stop early")
    return [_check_id(model, what, i) for i in ids]


def _pad_id(model: Model, pad_token_id: object, stop_ids: list[int] | None) -> int:
    """HF's rule: the given pad id, else the generation config's, else the first stop id (0 when none is needed)."""
    if pad_token_id is not None:
        return _check_id(model, "pad_token_id", pad_token_id)
    if model.generation_config.pad_token_id is not None:
        return model.generation_config.pad_token_id
    return stop_ids[0] if stop_ids else 0


def _check_id(model: Model, what: str, value: object) -> int:
    """One stop / pad id as an int (numpy integers and 0-d integer tensors are ids too; a bool or float is not)."""
    return checks.integer(value, what, low=0, high=model.config.d_vocab - 1,
                          fix="a token id of the vocabulary, e.g. model.to_tokens('<|endoftext|>', prepend_bos=False)"
                              "[0, 0]" + (", or eos_token_id=None to never stop early" if what == "eos_token_id" else ""))


def _refuse_sampling_options(temperature: object, top_k: object, generator: object) -> None:
    """Greedy decoding ignores the sampling options: one that is set is refused rather than silently ignored (HF's
    generate only warns, "`do_sample` is set to `False`. However, `temperature` is set to ...")."""
    given = {name: said for name, said, unset in (
        ("temperature", f"temperature={temperature!r}", temperature == 1.0),
        ("top_k", f"top_k={top_k!r}", top_k is None), ("generator", "a generator", generator is None)) if not unset}
    if given:
        several = len(given) > 1
        raise UserError(f"{' and '.join(given.values())} only {'apply' if several else 'applies'} when sampling, but "
                        f"do_sample is False (greedy decoding takes the likeliest token, so {'they' if several else 'it'}"
                        f" would be ignored); pass do_sample=True to sample, or drop {' and '.join(given)} for greedy "
                        "decoding")


def _choose(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None,
            generator: torch.Generator | None) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
