"""`minineo harvest`: activations over a corpus into a `datasets` folder, on one process or many (torchrun)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import torch
import typer

from minineo import checks
from minineo.cli.display import plural
from minineo.cli.shared import (ModelOption, app, check_options, console, list_items, load_or_exit,
                                output_folder)
from minineo.errors import UserError

QUIET_RANK_WAIT_S = 5.0  # how long a rank other than 0 waits to be ended by torchrun before saying its own error
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@app.command()
def harvest(
    corpus: str = typer.Argument(..., help=".txt (one document per line), .jsonl/.json, .parquet, a datasets.save_to_disk folder, or a glob"),
    names: str = typer.Option(..., "--names", help="comma-separated sites, e.g. blocks.1.resid_post or blocks.1.hook_resid_post"),
    out: Path = typer.Option(..., "--out", help="output folder (new, empty, or a harvest to continue)"),
    model: str = ModelOption,
    context: int = typer.Option(128, help="tokens per row (each row begins with BOS)"),
    max_tokens: Optional[int] = typer.Option(None, help="stop after this many tokens (whole rows); default: the whole corpus"),
    batch_size: int = typer.Option(32, help="rows per forward pass"),
    dtype: Optional[str] = typer.Option(None, help="float32, float16 or bfloat16 (the model runs in it); default float32"),
    text_field: str = typer.Option("text", help="the text column of a .jsonl/.json/.parquet/saved corpus"),
    shard_rows: Optional[int] = typer.Option(None, help="rows per shard file (default: ~256 MiB of activations)"),
    device: str = typer.Option("auto", "--device", help="auto (cuda:LOCAL_RANK where GPUs exist, else cpu), cpu, cuda"),
) -> None:
    """Activations of NAMES over CORPUS, written as a datasets folder SAE trainers read (see minineo.data.harvest).

    Run on many processes with `torchrun --nproc_per_node N -m minineo harvest ...`; re-run the same
    command after a crash to continue.
    """
    try:
        from minineo.data import harvest as harvesting
        from minineo.data.corpus import require_datasets

        check_options(context=(context, ">= 2"), max_tokens=(max_tokens, ">= 1"), batch_size=(batch_size, ">= 1"),
                      shard_rows=(shard_rows, ">= 1"))
        names = ",".join(list_items("--names", names))  # an empty or repeated item is an error, not dropped
        require_datasets()
        if dtype is not None and dtype not in DTYPES:
            raise UserError(f"--dtype {dtype} is not one of {', '.join(DTYPES)}")
        rank, world, chosen = harvesting.init_distributed(device)
        if rank == 0:  # held until the summary is printed (the harvest itself claims it too, re-entrantly); an
            # existing --out that is not a harvest folder is refused now, before the model loads
            out = output_folder(out, "--out", kind="harvest")
        else:
            out = checks.writable_folder(out, "--out")  # a missing parent folder is refused, not created
        try:
            m = load_or_exit(model, str(chosen), dtype=DTYPES[dtype or "float32"])
        except (FileNotFoundError, ValueError) as err:
            raise UserError(str(err)) from None
        folder = harvesting.harvest(m, corpus, names, out, context=context, batch_size=batch_size,
                                    max_tokens=max_tokens, text_field=text_field, shard_rows=shard_rows)
    except UserError as err:
        rank = int(os.environ.get("RANK", "0"))
        if rank == 0 or int(os.environ.get("WORLD_SIZE", "1")) == 1:
            raise  # the CLI's boundary prints it as one `error:` paragraph and exits with 1
        # Under torchrun every rank usually meets the same error and rank 0 says it, once. Exiting at once
        # could get rank 0 killed before it does, so this rank waits for torchrun to end it when rank 0
        # fails; still running after that, the error was this rank's alone, and it says so itself.
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        time.sleep(QUIET_RANK_WAIT_S)
        raise UserError(f"(rank {rank}) {err}") from None
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if rank == 0:
        manifest = harvesting.ShardFolder(folder, {}).manifest()
        console.print(f"{plural(manifest['rows'], 'row')} of {plural(context, 'token')} "
                      f"({plural(world, 'process', 'processes')}) in {folder}; "
                      f"read it with minineo.data.harvest.load({str(folder)!r}) or datasets.load_from_disk")
