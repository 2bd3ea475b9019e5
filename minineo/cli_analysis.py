"""Analysis sub-commands of `minineo`: rich tables on screen, PNG plots with --plot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer
from rich.table import Table

from minineo import analysis, plots
from minineo.cli import DeviceOption, ModelOption, app, console, load_or_exit, show

PlotOption = typer.Option(None, "--plot", help="write a PNG plot to this path")


def heads_table(title: str, scores: dict[str, torch.Tensor], top: int = 10) -> Table:
    """The `top` heads by the first score, with every score as a column."""
    table = Table(title=title)
    table.add_column("head")
    for name in scores:
        table.add_column(name, justify="right")
    first = next(iter(scores.values()))
    n_heads = first.shape[1]
    for index in first.flatten().argsort(descending=True)[:top].tolist():
        layer, head = divmod(index, n_heads)
        table.add_row(f"L{layer}H{head}", *[f"{s[layer, head]:.3f}" for s in scores.values()])
    return table


@app.command()
def embeddings(model: str = ModelOption, top: int = 10, autoencode: bool = typer.Option(True, help="also W_E -> W_U"),
               plot: Optional[Path] = PlotOption, device: str = DeviceOption) -> None:
    """Embedding geometry: norms, the shared offset, average pairwise cosine (raw and centred)."""
    m = load_or_exit(model, device)
    matrices = {"W_E": m.W_E, "W_pos": m.W_pos} | ({} if m.config.tie_unembed else {"W_U": m.W_U.T})
    table = Table(title=f"embedding geometry of {model}")
    for column in ("matrix", "rows", "mean norm", "std norm", "|mean vector|", "mean cos", "mean cos (centred)",
                   "mean |cos| (centred)"):
        table.add_column(column, justify="right")
    results = []
    with torch.inference_mode():
        for name, W in matrices.items():
            g = analysis.embedding_geometry(W, name, top)
            results.append(g)
            table.add_row(name, str(g.n_vectors), f"{g.mean_norm:.3f}", f"{g.std_norm:.3f}", f"{g.mean_vector_norm:.3f}",
                          f"{g.mean_cosine:.3f}", f"{g.mean_cosine_centred:.4f}", f"{g.mean_abs_cosine_centred:.3f}")
    console.print(table)
    tokens = ", ".join(f"{show(m.to_string([i])) if m.tokenizer else i} ({n:.2f})" for i, n in results[0].largest_norms)
    console.print(f"largest-norm tokens: {tokens}")
    if autoencode:
        with torch.inference_mode():
            auto = analysis.embedding_autoencoding(m)
        console.print(f"W_E -> W_U top-1 is the token itself: raw {auto.top1_raw:.1%}, through ln_final "
                      f"{auto.top1_ln:.1%}, through block 0 (MLP0 included) {auto.top1_extended:.1%}")
        winners = ", ".join(f"{show(m.to_string([t])) if m.tokenizer else t} x{c}" for t, c in auto.most_frequent_winners)
        console.print(f"tokens that win most often (ln_final view): {winners}")
    if plot:
        plots.embedding_norms(m.W_E.detach().norm(dim=-1), plot, title=f"{model}: W_E row norms")
        console.print(f"wrote {plot}")


@app.command()
def lens(prompt: str, model: str = ModelOption, plot: Optional[Path] = PlotOption, device: str = DeviceOption,
         tuned: Optional[Path] = typer.Option(None, "--tuned", help="also a tuned lens folder, side by side")) -> None:
    """Logit lens: each layer's top token per position, the next token's rank, and KL to the final layer."""
    m = load_or_exit(model, device)
    tokens = m.to_tokens(prompt)
    with torch.inference_mode():
        result = analysis.logit_lens(m, tokens)
    words = m.to_str_tokens(tokens[0])
    table = Table(title=f"logit lens: top token per layer (rows) and position (columns); {model}")
    table.add_column("layer")
    for word in words:
        table.add_column(show(word), justify="center")
    table.add_column("mean KL to final", justify="right")
    for i, label in enumerate(result.labels):
        table.add_row(label, *[show(m.to_string([t])) for t in result.top_tokens[i].tolist()], f"{result.kl_to_final[i].mean():.3f}")
    console.print(table)
    if len(words) > 1:
        ranks = Table(title="rank of the actual next token (0 = top) per layer")
        ranks.add_column("layer")
        for word in words[1:]:
            ranks.add_column(show(word), justify="right")
        for i, label in enumerate(result.labels):
            ranks.add_row(label, *[str(r) for r in result.next_token_rank[i].tolist()])
        console.print(ranks)
    if plot:
        plots.lens_heatmap(result, words, plot, title=f"logit lens, {model}: log10 rank of the next token")
        console.print(f"wrote {plot}")
    if tuned:
        from minineo.cli_tuned_lens import lens_comparison

        console.print(lens_comparison(m, tokens, result, tuned))


@app.command()
def heads(model: str = ModelOption, seq_len: int = 50, n_seqs: int = 8, seed: int = 0,
          bos: bool = typer.Option(True, help="prepend BOS to the repeated sequences"),
          prompt: Optional[str] = typer.Option(None, help="also score the heads on this prompt"),
          top: int = 10, plot: Optional[Path] = PlotOption, device: str = DeviceOption) -> None:
    """Induction, previous-token and duplicate-token scores of every head, on repeated random tokens."""
    m = load_or_exit(model, device)
    tokens = analysis.repeated_tokens(m, seq_len, n_seqs, seed, bos)
    with torch.inference_mode():
        scores = analysis.head_scores(m, tokens, repeated_len=seq_len)
    named = {"induction": scores.induction, "previous token": scores.previous_token, "duplicate token": scores.duplicate_token}
    console.print(heads_table(f"heads by induction score ({n_seqs} random sequences of {seq_len}, repeated)", named, top))
    console.print(f"loss on the first half {scores.first_half_loss:.3f}, on the repeat {scores.induction_loss:.3f} "
                  "(an induction circuit makes the repeat far cheaper)")
    if prompt:
        with torch.inference_mode():
            on_prompt = analysis.head_scores(m, m.to_tokens(prompt))
        console.print(heads_table(f"heads by induction score on {show(prompt[:40])}",
                                  {"induction": on_prompt.induction, "previous token": on_prompt.previous_token,
                                   "duplicate token": on_prompt.duplicate_token}, top))
    if plot:
        plots.head_heatmaps(named, plot, title=f"{model}: head scores on repeated random tokens")
        console.print(f"wrote {plot}")


@app.command()
def attribute(prompt: str, answer: str = typer.Option(..., help="the answer token's text, e.g. ' Mary'"),
              wrong: Optional[str] = typer.Option(None, help="a wrong answer: attribute the logit difference"),
              model: str = ModelOption, top: int = 12, plot: Optional[Path] = PlotOption, device: str = DeviceOption) -> None:
    """Direct logit attribution of the answer logit (or answer - wrong) to embeddings, heads and MLPs."""
    m = load_or_exit(model, device)
    answer_id, wrong_id = first_token(m, answer), (first_token(m, wrong) if wrong else None)
    with torch.inference_mode():
        result = analysis.direct_logit_attribution(m, m.to_tokens(prompt), answer_id, wrong_id)
    contributions = result.contributions[:, 0]
    table = Table(title=f"direct logit attribution to {show(answer)}" + (f" - {show(wrong)}" if wrong else ""))
    table.add_column("component")
    table.add_column("contribution", justify="right")
    for i in contributions.abs().argsort(descending=True)[:top].tolist():
        table.add_row(result.labels[i], f"{contributions[i]:+.3f}")
    console.print(table)
    console.print(f"sum of all {len(result.labels)} components {contributions.sum():+.4f} + ln_final bias term "
                  f"{result.ln_bias_term[0]:+.4f} = {contributions.sum() + result.ln_bias_term[0]:+.4f}; "
                  f"true logit{' difference' if wrong else ''} {result.logit[0]:+.4f}")
    if plot:
        plots.head_heatmaps({"direct logit attribution": result.per_head(m.config.n_layers, m.config.n_heads)[..., 0]},
                            plot, title=f"{model}: per-head DLA", diverging=True)
        console.print(f"wrote {plot}")


def first_token(m, text: str) -> int:
    ids = m.tokenizer.encode(text) if m.tokenizer else []
    if not ids:
        console.print(f"[red]error:[/red] {text!r} encodes to no token")
        raise typer.Exit(1)
    if len(ids) > 1:
        console.print(f"[yellow]note:[/yellow] {text!r} is {len(ids)} tokens; using the first, {show(m.to_string(ids[:1]))}")
    return ids[0]


@app.command()
def ablate(prompt: str, answer: str = typer.Option(...), wrong: Optional[str] = None, model: str = ModelOption,
           method: str = typer.Option("zero", help="zero, mean or resample"),
           heads_: Optional[str] = typer.Option(None, "--heads", help="heads to ablate together, e.g. '9.9,10.0'"),
           top: int = 10, plot: Optional[Path] = PlotOption, device: str = DeviceOption) -> None:
    """Ablate heads via patch= on attn.z: each head's effect on the logit (difference), and backup heads."""
    m = load_or_exit(model, device)
    tokens = m.to_tokens(prompt)
    answer_id, wrong_id = first_token(m, answer), (first_token(m, wrong) if wrong else None)

    def metric(logits):
        return logits[0, -1, answer_id] - (logits[0, -1, wrong_id] if wrong_id is not None else 0)

    with torch.inference_mode():
        clean = float(metric(m(tokens)))
        if heads_:
            chosen = [tuple(int(x) for x in h.split(".")) for h in heads_.split(",")]
            ablated = float(metric(analysis.ablate_heads(m, tokens, chosen, method)))
            console.print(f"metric clean {clean:+.3f}; with {heads_} {method}-ablated {ablated:+.3f}")
        effects = analysis.head_ablation_effects(m, tokens, metric, method)
        backup = analysis.backup_heads(m, tokens, answer_id, wrong_id, top=3, method="mean" if method == "mean" else "zero")
    console.print(f"clean metric {clean:+.3f}")
    console.print(heads_table(f"single-head {method}-ablation: change in the metric (most negative = most needed)",
                              {"-effect": -effects}, top))
    ablated_names = ", ".join(f"L{l}H{h}" for l, h in backup.ablated)
    table = Table(title=f"backup heads: direct effect growth when {ablated_names} are ablated")
    for column in ("head", "DLA before", "DLA after", "growth"):
        table.add_column(column, justify="right")
    for (l, h), growth in backup.backups:
        table.add_row(f"L{l}H{h}", f"{backup.direct_before[l, h]:+.3f}", f"{backup.direct_after[l, h]:+.3f}", f"{growth:+.3f}")
    console.print(table)
    if plot:
        plots.head_heatmaps({"ablation effect": effects}, plot, title=f"{model}: {method}-ablation effect", diverging=True)
        console.print(f"wrote {plot}")


@app.command()
def ioi(model: str = ModelOption, n: int = 32, seed: int = 0, top: int = 10,
        ablation: bool = typer.Option(True, help="also mean-ablate every head (slower)"),
        plot: Optional[Path] = PlotOption, device: str = DeviceOption) -> None:
    """Indirect-object identification: logit difference, per-head DLA and mean-ablation effects."""
    m = load_or_exit(model, device)
    data = analysis.ioi_dataset(m, n, seed)
    with torch.inference_mode():
        result = analysis.ioi_analysis(m, data, ablation=ablation)
    console.print(f"e.g. {data.prompts[0]!r} -> IO {data.io_names[0]!r}, S {data.s_names[0]!r}")
    console.print(f"logit(IO) - logit(S): {result.logit_diff:+.3f} (accuracy {result.accuracy:.0%}); "
                  f"on ABC prompts {result.abc_logit_diff:+.3f}")
    scores = {"DLA on IO-S": result.head_dla}
    if ablation:
        scores["ablation effect"] = result.head_ablation
    console.print(heads_table("heads by direct effect on the IO - S logit difference", scores, top))
    if plot:
        plots.head_heatmaps(scores, plot, title=f"{model}: IOI head effects", diverging=True)
        console.print(f"wrote {plot}")
