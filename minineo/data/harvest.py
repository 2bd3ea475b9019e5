"""Harvest named activations over a corpus into a `datasets` folder that SAE trainers read.

    harvest(model, corpus, names, out_dir, *, context=128, batch_size=32, max_tokens=None, dtype=None,
            text_field="text", shard_rows=None) -> Path
    load(out_dir) -> datasets.Dataset

Rows are packed from the corpus as in SAELens (minineo.data.corpus.pack_rows); row i of the output holds
its `token_ids` (context,) and, per name, the activation (context, d) that
`model.run_with_cache(token_ids, names=...)` records, spelled the TransformerLens way
(`blocks.1.hook_resid_post`; q/k/v/z and attn.result are flattened to head * d_head / head * d_model,
as SAELens does for hook_z). The forward pass stops after the last block asked for.

Under `torchrun` (torch.distributed initialised, see `init_distributed`) each rank takes every
world_size-th shard and writes it itself; the folder is one dataset in corpus order whatever the
number of processes. A re-run of the same call continues a killed one (minineo.data.shards).

dtype: the stored activations' dtype (default: the model's). Arrow has no bfloat16, so bfloat16
activations are stored as float32 (exactly: every bfloat16 is a float32).
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

from minineo import checks, outputs
from minineo.record import sites
from minineo.data.corpus import count_rows, pack_rows, read_documents, require_datasets
from minineo.errors import UserError
from minineo.data.shards import ShardFolder, features, load

if TYPE_CHECKING:  # annotations only (@checks.typed knows minineo's classes by name)
    from minineo.forward.model import Model

__all__ = ["harvest", "load", "init_distributed", "column_name"]

SHARD_BYTES = 256 * 2**20  # a shard's activations; SAELens keeps its shards under 2 GB for the datasets writer
_STORED = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "float32", torch.float64: "float64"}


@checks.typed
def column_name(name: str) -> str:
    """TransformerLens's hook name for a minineo site: 'blocks.1.resid_post' -> 'blocks.1.hook_resid_post'."""
    if name == "logits":
        return name
    head, _, last = name.rpartition(".")
    last = {"scores": "attn_scores"}.get(last, last)
    return f"{head}.hook_{last}" if head else f"hook_{last}"


def init_distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun, starts the process group: nccl on CUDA, gloo on CPU.

    device "auto": cuda:LOCAL_RANK where GPUs exist, else cpu; "cuda" means cuda:LOCAL_RANK.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(f"cuda:{local_rank}" if device == "cuda" else device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        # Long timeout: ranks meet only at the start and at the end, after the slowest rank's last shard.
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", timeout=timedelta(hours=12),
                                device_id=chosen if chosen.type == "cuda" else None)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), chosen
    return 0, 1, chosen


@checks.typed
def harvest(
    model: Model, corpus: str | Path, names: str | Sequence[str], out_dir: str | Path, *, context: int = 128,
    batch_size: int = 32, max_tokens: int | None = None, dtype: torch.dtype | None = None,
    text_field: str = "text", shard_rows: int | None = None, progress: bool | None = None,
) -> Path:
    """Write the activations of `names` over `corpus` to `out_dir`; returns the folder (read it with `load`)."""
    require_datasets()
    out_dir = checks.writable_folder(out_dir, "out_dir")  # a missing parent folder is refused, not created
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    job = _Job(model, names, context, batch_size, max_tokens, dtype, shard_rows)
    rows = _rows(model, corpus, text_field, context, job.max_rows)  # reads the first row: corpus errors come now
    folder = ShardFolder(out_dir, job.arguments(model, corpus, text_field), job.derived)
    if rank != 0:
        return _write(model, folder, job, rows, rank, world, corpus, text_field, context, progress)
    # One run at a time per folder: rank 0 holds the claim (minineo.outputs) until the folder is complete.
    with outputs.claim(folder.path, "the harvest folder --out"):
        return _write(model, folder, job, rows, rank, world, corpus, text_field, context, progress)


def _write(model, folder: ShardFolder, job: "_Job", rows, rank: int, world: int, corpus, text_field: str,
           context: int, progress: bool | None) -> Path:
    """Check, start, fill and finish the folder: this rank's shards, then (rank 0) the index files."""
    complete = folder.check()
    _barrier()  # every rank has checked the folder before rank 0 writes to it
    if complete:
        return folder.path
    if rank == 0:
        folder.start()
    _barrier()
    done = folder.completed()
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if rank == 0 and show:  # without --max-tokens the total comes from a counting pass (tokenizing only)
        total_rows = job.max_rows or count_rows(model, read_documents(corpus, text_field), context)
        bar = _Progress(folder, job, done, total_rows)
    total = 0
    with torch.inference_mode():
        for shard, shard_rows_iter in itertools.groupby(enumerate(rows), key=lambda item: item[0] // job.shard_rows):
            batch = [row for _, row in shard_rows_iter]  # this shard's rows (every rank reads them all to count)
            total += len(batch)
            if shard % world != rank or shard in done:
                continue
            folder.write_shard(shard, job.shard(model, batch, bar), job.features)
            if bar is not None:
                bar.shard_done()
    if bar is not None:
        bar.close()
    _barrier()  # every shard is committed
    if rank == 0:
        folder.finish(total, job.shard_rows, job.features)
    _barrier()
    return folder.path


class _Job:
    """The validated arguments and the per-shard work."""

    def __init__(self, model, names, context, batch_size, max_tokens, dtype, shard_rows):
        config = model.config
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")] if names.strip() else []
        if any(not isinstance(n, str) or not n.strip() for n in names):
            raise UserError(f"names {names!r}: an empty or non-text name; give site names such as "
                            "'blocks.0.resid_post,blocks.1.mlp_out' (no empty items)")
        if not names:
            raise UserError("no activation names given; name at least one, e.g. --names blocks.0.resid_post")
        self.names = []
        for name in names:
            try:
                canon = sites.resolve(name.strip(), config)
            except KeyError as err:
                raise UserError(f"{err.args[0]} (harvest --names)") from None
            dims = _dims(canon)
            if dims[:2] != ("batch", "pos"):
                raise UserError(f"{name!r} has shape {dims}, not one vector per position; harvest takes "
                                f"per-position sites such as blocks.0.resid_post or blocks.0.attn.z")
            if canon in self.names:
                raise UserError(f"{name.strip()!r} names the site {canon} a second time (harvest --names); give each "
                                "site once")
            self.names.append(canon)
        context = checks.context_length(context, config.n_ctx, "context")
        batch_size = checks.count(batch_size, "batch_size")
        self.context, self.batch_size = context, batch_size
        self.max_rows = None
        if max_tokens is not None:
            self.max_rows = checks.count(max_tokens, "max_tokens") // context
            if self.max_rows < 1:
                raise UserError(f"max_tokens (--max-tokens) {max_tokens} is less than one row of context (--context) "
                                f"{context}; give max_tokens >= {context}")
        self.dtype = model.W_E.dtype if dtype is None else checks.dtype(dtype, "dtype")
        self.widths = {n: int(np.prod(sites.shape_of(n, config, 1, context)[2:])) for n in self.names}
        row_bytes = context * sum(self.widths.values()) * torch.finfo(self.dtype).bits // 8
        if shard_rows is not None:  # 0 is refused, not read as "the default" (shard_rows or ... did)
            shard_rows = checks.count(shard_rows, "shard_rows")
        self.shard_rows = shard_rows or max(1, SHARD_BYTES // row_bytes)
        # arguments that follow from others: reported only when nothing else differs from a folder to continue
        self.derived = {"max_rows": "whole rows of --max-tokens at --context"}
        if shard_rows is None:
            self.derived["shard_rows"] = ("--shard-rows was not given: its default, ~256 MiB of activations per shard, "
                                          "follows --context, --names and --dtype; give --shard-rows {there} to continue")
        stored = _STORED[self.dtype]
        self.stored, self.np_dtype = getattr(torch, stored), np.dtype(stored)
        self.features = features({column_name(n): (context, w) for n, w in self.widths.items()}, context, stored)

    def arguments(self, model, corpus, text_field) -> dict:
        """What fixes the output's content (not batch size, device or process count)."""
        return {"model": _fingerprint(model), "corpus": _corpus_identity(corpus), "text_field": text_field,
                "names": [column_name(n) for n in self.names], "context": self.context, "max_rows": self.max_rows,
                "dtype": str(self.dtype).removeprefix("torch."), "shard_rows": self.shard_rows}

    def shard(self, model, rows: list[torch.Tensor], bar) -> dict[str, np.ndarray]:
        """The shard's columns: activations (rows, context, d) per name and token_ids (rows, context)."""
        tokens = torch.stack(rows)  # (rows, context)
        columns = {column_name(n): np.empty((len(rows), self.context, w), self.np_dtype) for n, w in self.widths.items()}
        device = model.W_E.device
        for start in range(0, len(rows), self.batch_size):
            chunk = tokens[start:start + self.batch_size].to(device)
            for name, value in _activations(model, chunk, self.names).items():
                flat = value.reshape(chunk.shape[0], self.context, -1)  # (batch, pos, d)
                columns[column_name(name)][start:start + chunk.shape[0]] = flat.to(self.dtype).to("cpu", self.stored).numpy()
            if bar is not None:
                bar.advance(chunk.shape[0] * self.context)
        columns["token_ids"] = tokens.to(torch.int32).numpy()
        return columns


def _dims(name: str) -> tuple[str, ...]:
    block = name.split(".", 2)
    return sites.BLOCK_SITES[block[2]] if block[0] == "blocks" else sites.GLOBAL_SITES[name]


def _activations(model, tokens: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The named sites for tokens (batch, pos), as run_with_cache records them; no block after the last is run."""
    _, cache = model.run_with_cache(tokens, names=names, stop_at_layer=_blocks_needed(names))
    return {name: cache[name] for name in names}


def _blocks_needed(names: list[str]) -> int | None:
    """How many blocks must run to reach every name; None when ln_final or the logits are asked for."""
    needed = 0
    for name in names:
        if name.startswith("blocks."):
            needed = max(needed, int(name.split(".")[1]) + 1)
        elif name not in ("embed", "pos_embed"):
            return None
    return needed


def _rows(model, corpus, text_field, context, max_rows) -> Iterator[torch.Tensor]:
    rows = pack_rows(model, read_documents(corpus, text_field), context)
    rows = itertools.islice(rows, max_rows) if max_rows is not None else rows
    first = next(rows, None)
    if first is None:
        raise UserError(f"the corpus {corpus} gives no rows")
    return itertools.chain([first], rows)


def _fingerprint(model) -> dict:
    """The model's config and a hash of a sample of every parameter: different weights, different harvest."""
    digest = hashlib.sha256(repr(sorted(model.config.to_hf().items())).encode())
    for name, param in sorted(model.state_dict().items()):
        sample = param.detach().flatten()[:4096].to("cpu", torch.float32)
        digest.update(name.encode() + sample.numpy().tobytes())
    return {"sha256": digest.hexdigest()[:32]}


def _corpus_identity(corpus) -> dict:
    """The corpus's files and their sizes: a corpus that changed between runs is not silently mixed."""
    path = Path(str(corpus)).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    elif any(c in str(corpus) for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    else:
        files = [path]
    return {"files": [[str(p.resolve()), p.stat().st_size] for p in files]}


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class _Progress:
    """Rank 0's bar: tokens done (committed shards of every rank + rank 0's shard in flight) of total, tokens/s, ETA."""

    def __init__(self, folder: ShardFolder, job: _Job, done: set[int], total_rows: int):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.folder, self.job, self.done_before = folder, job, len(done)
        self.shard_tokens = job.shard_rows * job.context
        self.total = total_rows * job.context
        self.progress = Progress(TextColumn("harvest"), BarColumn(),
                                 TextColumn("{task.completed:,.0f}/{task.total:,.0f} tokens"),
                                 TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                 console=Console(stderr=True))
        self.start = min(self.done_before * self.shard_tokens, self.total)
        self.task = self.progress.add_task("harvest", total=self.total, completed=self.start, rate="")
        self.in_flight, self.started, self.last = 0, time.perf_counter(), 0.0
        self.progress.start()

    def advance(self, tokens: int) -> None:
        self.in_flight += tokens
        self._show()

    def shard_done(self) -> None:
        self.in_flight = 0
        self._show(force=True)

    def _show(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < 0.5:
            return
        self.last = now
        committed = (len(self.folder.completed()) - self.done_before) * self.shard_tokens
        done = min(self.start + committed + self.in_flight, self.total) - self.start
        rate = done / max(now - self.started, 1e-9)
        self.progress.update(self.task, completed=self.start + done, rate=f"{rate:,.0f} tokens/s")

    def close(self) -> None:
        self.progress.update(self.task, completed=self.total)
        self.progress.stop()
