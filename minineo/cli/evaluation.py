"""`minineo eval` (a model's loss over a corpus, torchrun-able) and `minineo sae-eval` (an SAE spliced into it)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.table import Table

from minineo import checks, outputs, report
from minineo.cli.display import number
from minineo.cli.shared import ModelOption, app, check_positive, console, output_path
from minineo.errors import UserError

QUIET_RANK_WAIT_S = 5.0  # as in `minineo harvest`: a rank other than 0 lets rank 0 say a shared error first

CorpusArgument = typer.Argument(..., help=".txt (one document per line), .jsonl/.json, .parquet, a "
                                "datasets.save_to_disk folder, or a glob (read and packed as `minineo harvest` does)")


@app.command("eval")
def eval_command(
    corpus: str = CorpusArgument,
    model: str = ModelOption,
    context: Optional[int] = typer.Option(None, help="tokens per row, each beginning with BOS (default: 1024, or "
                                          "the model's n_ctx if smaller)"),
    max_tokens: Optional[int] = typer.Option(None, help="stop after this many tokens (whole rows); default: the whole corpus"),
    batch_size: int = typer.Option(8, help="rows per forward pass"),
    text_field: str = typer.Option("text", help="the text column of a .jsonl/.json/.parquet/saved corpus"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="also write the figures to this JSON file"),
    device: str = typer.Option("auto", "--device", help="auto (cuda:LOCAL_RANK where GPUs exist, else cpu), cpu, cuda"),
) -> None:
    """The model's next-token loss over CORPUS: nats per token, perplexity, bits per byte, tokens/s.

    Run on many processes with `torchrun --nproc_per_node N -m minineo eval ...`: the rows are split
    between the ranks and the sums reduced (the figures equal a 1-process run's).
    """
    check_positive(batch_size=batch_size, max_tokens=max_tokens)
    json_file = output_path(json_path, "--json file", kind="eval") if json_path is not None else None
    try:
        from minineo.checkpoints.loading import load
        from minineo.data import evaluation
        from minineo.data.corpus import require_datasets
        from minineo.data.harvest import init_distributed

        require_datasets()
        rank, world, chosen = init_distributed(device)
        m = load(model, device=chosen)
        if context is not None:
            checks.context_length(context, m.config.n_ctx, "--context")
        result = evaluation.evaluate(m, corpus, context=context, batch_size=batch_size, max_tokens=max_tokens,
                                     text_field=text_field)
    except UserError as err:
        _quiet_rank_error(err)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if rank != 0:
        return
    table = Table(title=f"{model} on {corpus}: {result.n_rows:,} rows of {result.context} tokens "
                        f"({result.world_size} process{'es' if result.world_size > 1 else ''})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for label, value in (("loss (nats per token)", number(result.loss, 4)), ("perplexity", number(result.perplexity)),
                         ("bits per byte", number(result.bits_per_byte, 4)), ("tokens evaluated", f"{result.n_tokens:,}"),
                         ("bytes", f"{result.n_bytes:,}"), ("tokens per second", f"{result.tokens_per_second:,.0f}")):
        table.add_row(label, value)
    console.print(table)
    if json_file is not None:
        outputs.write_text(json_file, json.dumps({"model": model, "corpus": str(corpus), **result.to_dict()}, indent=2)
                           + "\n", "--json file")
        console.print(f"wrote {json_file}")


def _quiet_rank_error(err: UserError) -> None:
    """Re-raise on rank 0 (or alone); under torchrun another rank waits for rank 0 to say the shared error."""
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0 or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        raise err
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    time.sleep(QUIET_RANK_WAIT_S)
    raise UserError(f"(rank {rank}) {err}") from None


@app.command("sae-eval")
def sae_eval_command(
    sae: Path = typer.Argument(..., help="an SAELens SAE folder (cfg.json + sae_weights.safetensors)"),
    corpus: str = CorpusArgument,
    model: str = ModelOption,
    max_tokens: int = typer.Option(65536, help="evaluate this many tokens (whole rows) of the corpus"),
    context: Optional[int] = typer.Option(None, help="tokens per row (default: the SAE's context_size, else "
                                          "1024 or the model's n_ctx if smaller)"),
    batch_size: int = typer.Option(8, help="rows per forward pass"),
    text_field: str = typer.Option("text", help="the text column of a .jsonl/.json/.parquet/saved corpus"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="also write the figures to this JSON file"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, mps"),
    exclude_special_tokens: bool = typer.Option(
        False, "--exclude-special-tokens",
        help="SAELens's run_evals convention: BOS/EOS/PAD positions are not spliced and not counted in the "
             "losses, L0 or explained variance (default: every token counts)"),
) -> None:
    """The SAE spliced into the model at its site over CORPUS: loss clean / spliced / zero- and mean-ablated,
    the fraction of loss recovered, L0, explained variance, dead features (minineo.analysis.sae_metrics)."""
    import itertools

    from minineo import sae as saes
    from minineo.analysis.sae_metrics import sae_metrics
    from minineo.checkpoints.loading import load
    from minineo.data.corpus import pack_rows, read_documents, require_datasets

    check_positive(batch_size=batch_size, max_tokens=max_tokens)
    json_file = output_path(json_path, "--json file", kind="sae-eval") if json_path is not None else None
    require_datasets()
    m = load(model, device=device)
    autoencoder = saes.load(sae, device=device)
    autoencoder.check_model(m)  # an SAE made for another model or site width: refused before any work
    if not autoencoder.metadata.get("model_name"):  # as discovery says of a circuit file that names no model
        report.warn(f"{sae} carries no model identity (its cfg.json has no metadata.model_name): checked against "
                    f"{model} by its site and width only; record the model it was trained on by adding "
                    f"\"metadata\": {{\"model_name\": \"{model}\"}} to {Path(sae) / 'cfg.json'}")
    if context is None:
        recorded = autoencoder.metadata.get("context_size")
        if recorded is None:
            context = min(1024, m.config.n_ctx)
        else:  # the SAE's own record: a bad value is the cfg.json's to fix, not an option the user gave
            what = f"{Path(sae) / 'cfg.json'}'s metadata.context_size (the default of --context)"
            context = checks.context_length(recorded, m.config.n_ctx, what)
    checks.context_length(context, m.config.n_ctx, "--context")
    if max_tokens < context:
        raise UserError(f"--max-tokens {max_tokens} is less than one row of --context {context}")
    rows = list(itertools.islice(pack_rows(m, read_documents(corpus, text_field), context), max_tokens // context))
    figures = sae_metrics(m, autoencoder, torch.stack(rows), batch_size=batch_size,
                          exclude_special_tokens=exclude_special_tokens)
    counted = (f", special tokens {list(figures.excluded_token_ids)} not spliced or counted"
               if figures.excluded_token_ids else "")
    table = Table(title=f"{autoencoder} in {model} on {corpus}: {len(rows):,} rows of {context} tokens{counted}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for label, value in (("loss, clean (nats per token)", number(figures.clean_loss, 4)),
                         ("loss, SAE spliced in", number(figures.spliced_loss, 4)),
                         ("loss, site zero-ablated", number(figures.zero_ablated_loss, 4)),
                         ("loss, site mean-ablated", number(figures.mean_ablated_loss, 4)),
                         ("loss recovered (vs zero ablation)", number(figures.loss_recovered, 4)),
                         ("L0 (active features per token)", number(figures.l0, 2)),
                         ("explained variance", number(figures.explained_variance, 4)),
                         ("dead features", f"{figures.dead_features:,} of {figures.d_sae:,}")):
        table.add_row(label, value)
    console.print(table)
    if json_file is not None:
        outputs.write_text(json_file, json.dumps({"sae": str(sae), "model": model, "corpus": str(corpus),
                                                  "context": context, **figures.to_dict()}, indent=2) + "\n",
                           "--json file")
        console.print(f"wrote {json_file}")
