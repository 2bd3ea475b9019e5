"""A model's next-token loss over a corpus: nats per token, perplexity, bits per byte; one process or many.

    evaluate(model, corpus, *, context=None, batch_size=8, max_tokens=None, text_field="text") -> Evaluation

The corpus is read and packed exactly as `minineo harvest` does (minineo.data.corpus: read_documents,
pack_rows): rows of `context` tokens, each beginning with BOS, documents joined by <|endoftext|>. Each
row is evaluated on its own (no context carried between rows) with `Model.loss`: the context - 1
predictions of tokens 1..context-1 count, so `n_tokens = n_rows * (context - 1)`.

bits per byte = total nats / (ln 2 * n_bytes), n_bytes being the UTF-8 bytes the predicted tokens stand
for (byte-level BPE: each token is a fixed byte string; special tokens such as <|endoftext|> are 0 bytes).
It compares models with different tokenizers (Gao et al. 2020, The Pile, section 4).

Under torchrun (torch.distributed initialised, minineo.data.harvest.init_distributed) rank r evaluates
rows r, r + world, ... and the sums (nats in float64, tokens, bytes) are all-reduced: the figures
equal a 1-process run's up to float round-off of the per-row sums.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import torch
import torch.distributed as dist

from minineo import checks
from minineo.checkpoints.tokenizer import _CHAR_TO_BYTE, END_OF_TEXT, Tokenizer
from minineo.data.corpus import count_rows, pack_rows, read_documents, special_ids
from minineo.errors import UserError

if TYPE_CHECKING:  # annotations only (@checks.typed knows minineo's classes by name)
    from minineo.forward.model import Model

__all__ = ["Evaluation", "evaluate", "evaluate_rows", "token_byte_lengths"]

BYTE_ALPHABET = frozenset(_CHAR_TO_BYTE)  # GPT-2's stand-in characters, one per byte


@dataclass(frozen=True)
class Evaluation:
    """One corpus's figures (every rank's rows together)."""

    loss: float  # mean nats per predicted token
    perplexity: float  # exp(loss)
    bits_per_byte: float  # total nats / (ln 2 * n_bytes)
    n_tokens: int  # predicted tokens: n_rows * (context - 1)
    n_rows: int
    context: int
    n_bytes: int  # UTF-8 bytes of the predicted tokens
    seconds: float  # wall time of the forward passes (rank 0's, after the reduction)
    tokens_per_second: float  # tokens run through the model (n_rows * context) per second
    world_size: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@checks.typed
def token_byte_lengths(tokenizer: Tokenizer, d_vocab: int) -> torch.Tensor:
    """(d_vocab,) int64: how many UTF-8 bytes each token id stands for; 0 for special and unused ids.

    A byte-level BPE token is spelled with one stand-in character per byte (Tokenizer.token_bytes), so its
    length in bytes is its length in characters; another token counts the bytes of its decoded text.
    """
    d_vocab = checks.count(d_vocab, "d_vocab")
    special = {i for i, token in tokenizer.backend.get_added_tokens_decoder().items() if token.special}
    special |= {tokenizer.bos_token_id, tokenizer.backend.token_to_id(END_OF_TEXT)}  # plain vocab entries in vocab.json
    alphabet = BYTE_ALPHABET
    lengths = [0] * d_vocab
    for piece, token_id in tokenizer.backend.get_vocab(with_added_tokens=True).items():
        if token_id >= d_vocab or token_id in special:
            continue
        if set(piece) <= alphabet:
            lengths[token_id] = len(piece)
        else:
            lengths[token_id] = len(tokenizer.backend.decode([token_id], skip_special_tokens=True).encode())
    return torch.tensor(lengths, dtype=torch.long)


@checks.typed
def evaluate(
    model: Model, corpus: str | Path, *, context: int | None = None, batch_size: int = 8, max_tokens: int | None = None,
    text_field: str = "text", progress: bool | None = None,
) -> Evaluation:
    """The model's loss over `corpus` (see the module docstring). context: default min(1024, n_ctx).

    max_tokens: stop after max_tokens // context whole rows. progress: a bar on stderr (default: when it is a terminal).
    """
    context = min(1024, model.config.n_ctx) if context is None else context
    checks.context_length(context, model.config.n_ctx, "context")
    batch_size = checks.count(batch_size, "batch_size")
    max_rows = None
    if max_tokens is not None:
        checks.count(max_tokens, "max_tokens")
        max_rows = max_tokens // context
        if max_rows < 1:
            raise UserError(f"max_tokens (--max-tokens) {max_tokens} is less than one row of context (--context) "
                            f"{context}; give max_tokens >= {context}")
    special_ids(model)  # no tokenizer: a clear error before reading the corpus
    rows = pack_rows(model, read_documents(corpus, text_field), context)
    rows = itertools.islice(rows, max_rows) if max_rows is not None else rows
    total = None
    if (sys.stderr.isatty() if progress is None else progress):
        total = max_rows if max_rows is not None else count_rows(model, read_documents(corpus, text_field), context)
    return evaluate_rows(model, rows, batch_size=batch_size, total_rows=total, show=total is not None)


@checks.typed
def evaluate_rows(
    model: Model, rows: Iterable[torch.Tensor], *, batch_size: int = 8, total_rows: int | None = None, show: bool = False,
) -> Evaluation:
    """The figures over `rows`, LongTensors (context,) all of one length; under torch.distributed rank r takes
    rows r, r + world, ... (every rank must be given the same rows)."""
    batch_size = checks.count(batch_size, "batch_size")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    tokenizer, _, _ = special_ids(model)
    device = model.W_E.device
    byte_lengths = token_byte_lengths(tokenizer, model.config.d_vocab).to(device)  # (d_vocab,)
    nats = torch.zeros((), dtype=torch.float64, device=device)
    n_rows = n_bytes = 0
    context = None
    bar = _Bar(total_rows, world) if show and rank == 0 else None
    started = time.perf_counter()
    mine = (row for i, row in enumerate(rows) if i % world == rank)
    with torch.inference_mode():
        while batch := list(itertools.islice(mine, batch_size)):
            for row in batch:  # one length for every row (the first's), each a 1-D tensor of ids
                checks.tensor(row, "rows item", (batch[0].shape[-1] if context is None else context,) if
                              isinstance(batch[0], torch.Tensor) else (None,),
                              dims="(context,)")  # every row as long as the first
            tokens = torch.stack(batch).to(device)  # (batch, context)
            context = tokens.shape[1] if context is None else context
            nats += model.loss(tokens, per_token=True).double().sum()
            n_bytes += int(byte_lengths[tokens[:, 1:]].sum())
            n_rows += len(batch)
            if bar is not None:
                bar.advance(len(batch), context)
    sums = torch.tensor([float(nats), n_rows, n_bytes, context or 0], dtype=torch.float64, device=device)
    if world > 1:
        contexts = sums[3:].clone()
        dist.all_reduce(sums)
        dist.all_reduce(contexts, op=dist.ReduceOp.MAX)
        sums[3] = contexts[0]
    seconds = time.perf_counter() - started
    if bar is not None:
        bar.close()
    total_nats, n_rows, n_bytes, context = float(sums[0]), int(sums[1]), int(sums[2]), int(sums[3])
    if n_rows == 0:
        raise UserError("the corpus gives no rows to evaluate; give a larger corpus or a smaller context")
    n_tokens = n_rows * (context - 1)
    loss = total_nats / n_tokens
    return Evaluation(loss=loss, perplexity=math.exp(loss), bits_per_byte=total_nats / (math.log(2) * max(n_bytes, 1)),
                      n_tokens=n_tokens, n_rows=n_rows, context=context, n_bytes=n_bytes, seconds=seconds,
                      tokens_per_second=n_rows * context / max(seconds, 1e-9), world_size=world)


class _Bar:
    """Rank 0's progress (its rows times the world size): tokens done of total, tokens/s, ETA."""

    def __init__(self, total_rows: int | None, world: int):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.world, self.started = world, time.perf_counter()
        self.progress = Progress(TextColumn("eval"), BarColumn(), TextColumn("{task.completed:,.0f} tokens"),
                                 TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=True)
        self.task = self.progress.add_task("eval", total=None, rate="")
        self.total_rows = total_rows
        self.progress.start()

    def advance(self, rows: int, context: int) -> None:
        if self.total_rows is not None:
            self.progress.update(self.task, total=self.total_rows * context)
            self.total_rows = None
        tokens = rows * context * self.world
        done = self.progress.tasks[0].completed + tokens
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, advance=tokens, rate=f"{rate:,.0f} tokens/s")

    def close(self) -> None:
        self.progress.stop()
