"""Analysis sub-commands of `minineo`: rich tables on screen, plots (PNG, PDF, SVG, JPEG) with --plot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer
from rich.markup import escape
from rich.table import Table

from minineo import analysis
from minineo.cli import plots
from minineo.forward.model import Model
from minineo.cli.display import (clip, number, plural, quote, show, show_token, signed, titled_table, token_text,
                                 token_texts, visible)
from minineo.cli.shared import (DeviceOption, HtmlOption, ModelOption, app, check_options, console, fail, html_path,
                                list_items, load_or_exit, plot_path, prompt_tokens)

PlotOption = typer.Option(None, "--plot", help="write a plot to this path (.png, .pdf, .svg or .jpg; no extension: .png)")
METHODS = ("zero", "mean", "resample")
HEAD_SCORE_UNITS = "attention to the target keys (probability, 0..1)"  # induction, previous- and duplicate-token scores


NOT_SCORED = "–"  # a score with nothing to measure (NaN): never printed as 0.000


def heads_table(title: str, scores: dict[str, torch.Tensor], top: int = 10, ascending: bool = False,
                fmt=number) -> Table:
    """The `top` heads by the first score (largest first, or most negative first), every score as a column.

    `fmt`: display.number (scores) or display.signed (changes). A NaN (not scored) is NOT_SCORED, ranked last."""
    table = titled_table(title)
    table.add_column("head")
    for name in scores:
        table.add_column(name, justify="right")
    first = next(iter(scores.values())).float()
    n_heads = first.shape[1]
    key = first.nan_to_num(nan=float("inf") if ascending else float("-inf"))  # NaN last in either order
    for index in key.flatten().argsort(descending=not ascending, stable=True)[:top].tolist():
        layer, head = divmod(index, n_heads)
        table.add_row(f"L{layer}H{head}", *[NOT_SCORED if bool(s[layer, head].isnan()) else fmt(s[layer, head])
                                            for s in scores.values()])
    return table


@app.command()
def embeddings(model: str = ModelOption, top: int = 10, autoencode: bool = typer.Option(True, help="also W_E -> W_U"),
               sample: int = typer.Option(4096, help="rows (a seeded random sample) for the mean |cos| and the "
                                                     "W_E -> W_U autoencoding; 0: all (minutes on GPT-2's 50257)"),
               plot: Optional[Path] = PlotOption, device: str = DeviceOption) -> None:
    """Embedding geometry: norms, the shared offset, average pairwise cosine (raw and centred)."""
    check_options(top=(top, ">= 1"), sample=(sample, "0 or >= 2", "0: every row; pairs of rows are compared"))
    plot = plot_path(plot)
    m = load_or_exit(model, device)
    matrices = {"W_E": m.W_E, "W_pos": m.W_pos} | ({} if m.config.tie_unembed else {"W_U": m.W_U.T})
    table = titled_table(f"embedding geometry of {escape(model)}")
    for column in ("matrix", "rows", "mean\nnorm", "std\nnorm", "|mean\nvector|", "mean\ncos", "mean cos\n(centred)",
                   "mean |cos|\n(centred)"):  # two-line headers: the table fits 80 columns
        table.add_column(column, justify="right")
    results = []
    with torch.inference_mode():
        for name, W in matrices.items():
            g = analysis.embedding_geometry(W, name, top, sample=sample or None)
            results.append(g)
            table.add_row(name, str(g.n_vectors), number(g.mean_norm), number(g.std_norm), number(g.mean_vector_norm),
                          number(g.mean_cosine), number(g.mean_cosine_centred, 4), number(g.mean_abs_cosine_centred))
    console.print(table)
    if sample and any(W.shape[0] > sample for W in matrices.values()):
        console.print(f"mean |cos| (centred) over the pairs of a random sample of {plural(sample, 'row')} (--sample 0: all pairs)")
    tokens = ", ".join(f"{show_token(m, i) if m.tokenizer else i} ({number(n, 2)})"
                       for i, n in results[0].largest_norms)
    console.print(f"largest-norm tokens: {tokens}")
    if autoencode:
        with torch.inference_mode():
            auto = analysis.embedding_autoencoding(m, sample=sample or None)
        scored = "all tokens" if auto.n_tokens == m.config.d_vocab else f"a random sample of {plural(auto.n_tokens, 'token')}"
        console.print(f"W_E -> W_U top-1 is the token itself ({scored}): raw {auto.top1_raw:.1%}, through ln_final "
                      f"{auto.top1_ln:.1%}, through block 0 (MLP0 included) {auto.top1_extended:.1%}")
        winners = ", ".join(f"{show_token(m, t) if m.tokenizer else t} x{c}" for t, c in auto.most_frequent_winners)
        console.print(f"tokens that win most often (ln_final view): {winners}")
    if plot:
        plots.embedding_norms(m.W_E.detach().norm(dim=-1), plot, title=f"{model}: W_E row norms")
        console.print(f"wrote {escape(str(plot))}")


@app.command()
def lens(prompt: str, model: str = ModelOption, plot: Optional[Path] = PlotOption, device: str = DeviceOption,
         tuned: Optional[Path] = typer.Option(None, "--tuned", help="also a tuned lens folder, side by side"),
         html: Optional[Path] = HtmlOption) -> None:
    """Logit lens: each layer's top token per position, the next token's rank, and KL to the final layer."""
    plot, html = plot_path(plot), html_path(html)
    m = load_or_exit(model, device)
    tuned_lens = None if tuned is None else analysis.TunedLens.load(tuned, m)  # a wrong lens fails before any output
    tokens = prompt_tokens(m, prompt, model)
    with torch.inference_mode():
        result = analysis.logit_lens(m, tokens)
    words = m.to_str_tokens(tokens[0])
    n = len(words)
    console.print(f"logit lens of {escape(model)} on {quote(prompt)}: one row per position (␣ is a space), "
                  "one column per residual stream (the stream before each block, and after the last)")
    cells = {label: [show_token(m, int(result.top_tokens[i, p]))
                     + (f" {int(result.next_token_rank[i, p])}" if p < n - 1 else "") for p in range(n)]
             for i, label in enumerate(result.labels)}
    shown = [show(w) for w in token_texts(m, tokens[0])]
    fixed = 4 + 3 + 2 * (max(len(w) for w in shown) + 3) + 1  # pos, token and next columns with borders
    for labels in _column_chunks(cells, console.width - fixed):
        table = titled_table("the lens's top token, then the rank of the actual next token (0 = top)")
        table.add_column("pos", justify="right")
        table.add_column("token")
        table.add_column("next")
        for label in labels:
            table.add_column(label)
        for p in range(n):
            table.add_row(str(p), shown[p], shown[p + 1] if p < n - 1 else "", *[cells[label][p] for label in labels])
        console.print(table)
    kl = ", ".join(f"{label} {number(result.kl_to_final[i].mean())}" for i, label in enumerate(result.labels))
    console.print(f"mean KL(final || layer) over positions: {kl}")
    tuned_result = None
    if tuned_lens is not None:
        with torch.inference_mode():
            tuned_result = analysis.apply_tuned_lens(tuned_lens, tokens)
        console.print(lens_comparison(m, result, tuned_result))
    if plot:
        both = "logit lens (top) and tuned lens (bottom)" if tuned_result is not None else "logit lens"
        plots.lens_heatmap(result, words, plot, title=f"{both}, {model}: log10 rank of the next token",
                           tuned=tuned_result)
        console.print(f"wrote {escape(str(plot))}")
    if html:
        from minineo import views

        views.lens(m, tokens, tuned_lens, name=model, prompt=prompt).save(html)
        console.print(f"wrote {escape(str(html))}")


def _column_chunks(cells: dict[str, list[str]], room: int) -> list[list[str]]:
    """The layer columns split so that each table fits in `room` characters (80-column pipes included)."""
    chunks: list[list[str]] = [[]]
    used = 0
    for label, column in cells.items():
        width = max(len(label), *(len(c) for c in column)) + 3  # padding and border
        if chunks[-1] and used + width > room:
            chunks.append([])
            used = 0
        chunks[-1].append(label)
        used += width
    return chunks


@app.command()
def heads(model: str = ModelOption, seq_len: int = 50, n_seqs: int = 8, seed: int = 0,
          bos: bool = typer.Option(True, help="prepend BOS to the repeated sequences"),
          prompt: Optional[str] = typer.Option(None, help="also score the heads on this prompt"),
          top: int = 10, plot: Optional[Path] = PlotOption, device: str = DeviceOption) -> None:
    """Induction, previous-token and duplicate-token scores of every head, on repeated random tokens."""
    check_options(n_seqs=(n_seqs, ">= 1"), top=(top, ">= 1"), seed=(seed, ">= 0"),
                  seq_len=(seq_len, ">= 2", "the repeat of a 1-token sequence has no induction to measure"))
    plot = plot_path(plot)
    m = load_or_exit(model, device)
    needed = 2 * seq_len + int(bos)
    if needed > m.config.n_ctx:
        fail(f"--seq-len {seq_len} needs {needed} positions (the sequence twice{', plus BOS' if bos else ''}) but "
             f"{model} reads at most n_ctx={m.config.n_ctx}; use --seq-len {(m.config.n_ctx - int(bos)) // 2} or less")
    prompt_ids = prompt_tokens(m, prompt, model) if prompt is not None else None  # "": BOS alone, as `lens ""`
    tokens = analysis.repeated_tokens(m, seq_len, n_seqs, seed, bos)
    with torch.inference_mode():
        scores = analysis.head_scores(m, tokens, repeated_len=seq_len)
    named = {"induction": scores.induction, "previous token": scores.previous_token, "duplicate token": scores.duplicate_token}
    console.print(heads_table(f"heads by induction score ({plural(n_seqs, 'random sequence')} of {plural(seq_len, 'token')}, repeated)",
                              named, top))
    console.print(f"loss on the first half {number(scores.first_half_loss)}, on the repeat "
                  f"{number(scores.induction_loss)} "
                  "(an induction circuit makes the repeat far cheaper)")
    plotted = {f"{name}\n(repeated random tokens)": value for name, value in named.items()}
    if prompt_ids is not None:
        with torch.inference_mode():
            on_prompt = analysis.head_scores(m, prompt_ids)
        named_prompt = {"induction": on_prompt.induction, "previous token": on_prompt.previous_token,
                        "duplicate token": on_prompt.duplicate_token}
        console.print(heads_table(f"heads by induction score on {quote(prompt)}", named_prompt, top))
        missing = [name for name, value in named_prompt.items() if bool(value.isnan().all())]
        if missing:
            why = ("the prompt is a single token (no earlier position, no repeated token)" if prompt_ids.shape[1] < 2
                   else "the prompt has no repeated token (no query attends back to an earlier copy)")
            console.print(f"[yellow]note:[/yellow] {', '.join(missing[:-1]) + ' and ' * (len(missing) > 1) + missing[-1]} {'score is' if len(missing) == 1 else 'scores are'} "
                          f"not defined on the prompt ({NOT_SCORED}): {why}")
        plotted |= {f"{name}\n(on the prompt)": value for name, value in named_prompt.items()}
    if plot:
        what = "repeated random tokens" + (" (top row) and the prompt (bottom row)" if prompt_ids is not None else "")
        plots.head_heatmaps(plotted, plot, title=f"{model}: head scores on {what}", columns=3,
                            colorbar=HEAD_SCORE_UNITS, unscored="not scored: no query to measure")
        console.print(f"wrote {escape(str(plot))}")


@app.command()
def attribute(prompt: str, answer: str = typer.Option(..., help="the answer's text, e.g. ' Mary'"),
              wrong: Optional[str] = typer.Option(None, help="a wrong answer: attribute the logit difference"),
              model: str = ModelOption, top: int = 12, plot: Optional[Path] = PlotOption, device: str = DeviceOption,
              html: Optional[Path] = HtmlOption) -> None:
    """Direct logit attribution of the answer logit (or answer - wrong) to embeddings, heads and MLPs.

    Answers of several tokens are compared on their first differing token, after the prompt plus
    the tokens they share (a byte-level model reads ' Mary' and ' John' as ' ' then 'M' or 'J').
    """
    check_options(top=(top, ">= 1"))
    plot, html = plot_path(plot), html_path(html)
    m = load_or_exit(model, device)
    tokens, answer_id, wrong_id = answer_tokens(m, prompt, answer, wrong, model)
    with torch.inference_mode():
        result = analysis.direct_logit_attribution(m, tokens, answer_id, wrong_id)
    contributions = result.contributions[:, 0]
    plain = f"'{visible(token_text(m, answer_id))}'" + (f" - '{visible(token_text(m, wrong_id))}'" if wrong_id is not None else "")
    target = show_token(m, answer_id) + (f" - {show_token(m, wrong_id)}" if wrong_id is not None else "")
    n_shown = min(top, len(result.labels))
    table = titled_table(f"direct logit attribution to {target}")
    table.add_column("component")
    table.add_column("contribution", justify="right")
    for i in contributions.abs().argsort(descending=True)[:top].tolist():
        table.add_row(result.labels[i], signed(contributions[i]))
    console.print(table)
    of_all = f" (the table: the top {n_shown} of {len(result.labels)} by size)" if n_shown < len(result.labels) else ""
    console.print(f"sum of all {len(result.labels)} components{of_all} {signed(contributions.sum(), 4)} + ln_final bias term "
                  f"{signed(result.ln_bias_term[0], 4)} = {signed(contributions.sum() + result.ln_bias_term[0], 4)}; "
                  f"true logit{' difference' if wrong else ''} {signed(result.logit[0], 4)}")
    if plot:
        plots.head_heatmaps({"direct logit attribution": result.per_head(m.config.n_layers, m.config.n_heads)[..., 0]},
                            plot, title=f"{model}: per-head DLA to {plain}", diverging=True,
                            colorbar=f"direct effect on the logit{' difference' if wrong_id is not None else ''} (logits)")
        console.print(f"wrote {escape(str(plot))}")
    if html:
        from minineo import views

        views.attributions(m, tokens, answer_id, wrong_id, name=model, prompt=prompt).save(html)
        console.print(f"wrote {escape(str(html))}")


def _listed(m, ids: list[int], limit: int = 8) -> str:
    """The first `limit` tokens shown, and how many more there are."""
    more = f" … (+{len(ids) - limit} more)" if len(ids) > limit else ""
    return " ".join(show_token(m, t) for t in ids[:limit]) + more


def answer_tokens(m, prompt: str, answer: str, wrong: Optional[str], model: str) -> tuple[torch.Tensor, int, int | None]:
    """(tokens (1, pos), answer id, wrong id or None) for comparing answers at their first differing token.

    The tokens the two answers share go after the prompt; a single answer of several tokens is
    scored on its first token.
    """
    tokenizer = m._require_tokenizer()
    ids = tokenizer.encode(answer)
    if not ids:
        fail(f"--answer {clip(answer)} encodes to no token; give a non-empty answer such as ' Mary'")
    shared: list[int] = []
    if wrong is None:
        if len(ids) > 1:
            console.print(f"[yellow]note:[/yellow] {quote(answer)} is {len(ids)} tokens; scoring its first, "
                          f"{show_token(m, ids[0])}")
        answer_id, wrong_id = ids[0], None
    else:
        other = tokenizer.encode(wrong)
        if not other:
            fail(f"--wrong {clip(wrong)} encodes to no token; give a non-empty wrong answer such as ' John'")
        differ = next((i for i, (a, b) in enumerate(zip(ids, other)) if a != b), None)
        if differ is None:
            fail(f"--answer {clip(answer)} and --wrong {clip(wrong)} have no differing token (one is the other or starts "
                 "it), so their logit difference is 0 everywhere; give two different answers, e.g. ' Mary' and ' John'")
        shared, answer_id, wrong_id = ids[:differ], ids[differ], other[differ]
        if shared:
            console.print(f"[yellow]note:[/yellow] {quote(answer)} and {quote(wrong)} share their first "
                          f"{'token' if len(shared) == 1 else plural(len(shared), 'token')} {_listed(m, shared)}; comparing "
                          f"{show_token(m, answer_id)} against {show_token(m, wrong_id)} after the "
                          f"prompt plus the shared {'token' if len(shared) == 1 else 'tokens'}")
    tokens = prompt_tokens(m, prompt, model)
    if shared:
        tokens = torch.cat([tokens, torch.tensor([shared], device=tokens.device)], dim=1)
        if tokens.shape[1] > m.config.n_ctx:
            fail(f"the prompt plus the answers' shared tokens is {plural(tokens.shape[1], 'token')} but {model} reads at most "
                 f"n_ctx={m.config.n_ctx}; shorten the prompt")
    return tokens, answer_id, wrong_id


def parse_heads(text: str, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """'1.0,1.2' -> [(1, 0), (1, 2)], each checked against the model's shape."""
    heads = []
    for item in list_items("--heads", text):
        parts = item.split(".")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            fail(f"--heads {clip(text, 80)}: {item.strip()!r} is not LAYER.HEAD; give heads like '1.0,1.2' (layer 1, heads 0 "
                 "and 2)")
        layer, head = int(parts[0]), int(parts[1])
        if layer >= n_layers or head >= n_heads:
            fail(f"--heads {clip(text, 80)}: head {layer}.{head} does not exist; this model has layers 0..{n_layers - 1} "
                 f"and heads 0..{n_heads - 1}")
        if (layer, head) in heads:
            fail(f"--heads {clip(text, 80)} names head {layer}.{head} twice; give each head once")
        heads.append((layer, head))
    return heads


@app.command()
def ablate(prompt: str, answer: str = typer.Option(...), wrong: Optional[str] = None, model: str = ModelOption,
           method: str = typer.Option("zero", help="zero or mean (resample needs several prompts; ablate reads one)"),
           heads_: Optional[str] = typer.Option(None, "--heads", help="heads to ablate together as LAYER.HEAD, "
                                                "e.g. '1.0,1.2' (GPT-2's name movers: 9.9,10.0)"),
           top: int = 10, plot: Optional[Path] = PlotOption, device: str = DeviceOption) -> None:
    """Ablate heads via patch= on attn.z: each head's effect on the logit (difference), and backup heads.

    Answers of several tokens are compared as in `attribute`, at their first differing token.
    """
    check_options(top=(top, ">= 1"))
    if method not in METHODS:
        fail(f"--method {method!r} is unknown; use one of {', '.join(METHODS)}")
    if method == "resample":
        fail("--method resample replaces each prompt's head outputs with another prompt's, and `ablate` reads one "
             "prompt, so there is nothing to resample from; use --method mean or zero (in Python, "
             "analysis.head_ablation_effects(..., method='resample') on a batch of 2 or more prompts)")
    plot = plot_path(plot)
    m = load_or_exit(model, device)
    chosen = parse_heads(heads_, m.config.n_layers, m.config.n_heads) if heads_ else None
    tokens, answer_id, wrong_id = answer_tokens(m, prompt, answer, wrong, model)

    def metric(logits):
        return logits[0, -1, answer_id] - (logits[0, -1, wrong_id] if wrong_id is not None else 0)

    what = (f"logit difference {show_token(m, answer_id)} - {show_token(m, wrong_id)}" if wrong_id is not None
            else f"logit of {show_token(m, answer_id)}")
    with torch.inference_mode():
        clean = float(metric(m(tokens)))
        summary = f"metric: the {what} at the last position; clean {signed(clean)}"
        if chosen:
            ablated = float(metric(analysis.ablate_heads(m, tokens, chosen, method)))
            summary += f", with heads {escape(heads_)} {method}-ablated {signed(ablated)}"
        console.print(summary)
        effects = analysis.head_ablation_effects(m, tokens, metric, method)
        backup = analysis.backup_heads(m, tokens, answer_id, wrong_id, top=3, method=method)
    console.print(heads_table(f"single-head {method}-ablation: metric change (most negative = most needed)",
                              {"change in metric": effects}, top, ascending=True, fmt=signed))
    ablated_names = ", ".join(f"L{l}H{h}" for l, h in backup.ablated)
    table = titled_table(f"backup heads: DLA growth, top {len(backup.ablated)} heads by DLA ({ablated_names}) "
                         f"{method}-ablated")
    for column in ("head", "DLA before", "DLA after", "growth"):
        table.add_column(column, justify="right")
    for (l, h), growth in backup.backups:
        table.add_row(f"L{l}H{h}", signed(backup.direct_before[l, h]), signed(backup.direct_after[l, h]),
                      signed(growth))
    console.print(table)
    if plot:
        plots.head_heatmaps({"change in metric when ablated\n(negative = needed)": effects}, plot,
                            title=f"{model}: single-head {method}-ablation", diverging=True,
                            colorbar=f"change in the {'logit difference' if wrong_id is not None else 'logit'} (logits)")
        console.print(f"wrote {escape(str(plot))}")


@app.command()
def ioi(model: str = ModelOption,
        n: int = typer.Option(8, help="IOI prompts (half ABBA, half BABA); more give tighter estimates, slower "
                                      "(the per-head ablation's time grows with it)"),
        seed: int = 0, top: int = 10,
        ablation: bool = typer.Option(True, help="also mean-ablate every head (slower)"),
        paths: bool = typer.Option(True, help="also path-patch every head to the logits and to the name movers' "
                                               "queries (ABC prompts as the corrupted input)"),
        plot: Optional[Path] = PlotOption, device: str = DeviceOption) -> None:
    """Indirect-object identification: logit difference, per-head DLA, mean-ablation and path-patching effects."""
    check_options(n=(n, ">= 1"), seed=(seed, ">= 0"), top=(top, ">= 1"))
    plot = plot_path(plot)
    m = load_or_exit(model, device)
    data = analysis.ioi_dataset(m, n, seed)
    with torch.inference_mode():
        result = analysis.ioi_analysis(m, data, ablation=ablation, paths=paths)
    console.print(f"e.g. {data.prompts[0]!r} -> IO {data.io_names[0]!r}, S {data.s_names[0]!r}")
    console.print(f"logit(IO) - logit(S): {signed(result.logit_diff)} (accuracy {result.accuracy:.0%}); "
                  f"on ABC prompts {signed(result.abc_logit_diff)}")
    scores = result.head_columns()
    if paths:
        movers = ", ".join(f"L{layer}H{head}" for layer, head in result.name_movers)
        console.print(f"name movers (largest DLA; their queries are the path receivers): {movers}; path and ablation "
                      "columns are changes in the logit difference")
        last = max(layer for layer, _ in result.name_movers)  # a head reaches a query only from an earlier layer
        if last < m.config.n_layers:
            title = next(t for t in scores if t.endswith("queries"))
            scores[title] = scores[title].clone()
            scores[title][last:] = float("nan")  # not scored: no path (path-patch hatches the same cells)
            console.print(f"{plural((m.config.n_layers - last) * m.config.n_heads, 'head')} of layer {last} and later "
                          f"have no path to the name movers' queries: {NOT_SCORED} in that column (not scored)")
    console.print(heads_table("heads by direct effect on the IO - S logit difference", scores, top, fmt=signed))
    if plot:
        plots.head_heatmaps(scores, plot, title=f"{model}: IOI head effects", diverging=True,
                            colorbar={title: "copying score of the full OV circuit\n(no unit, -1 to 1)" if title == "copying score"
                                      else "direct effect on logit(IO) - logit(S) (logits)" if title.startswith("DLA")
                                      else "change in logit(IO) - logit(S)\nwhen mean-ablated (logits)"
                                      if title.startswith("ablation")
                                      else "change in logit(IO) - logit(S)\nwhen path-patched (logits)"
                                      for title in scores}, unscored=plots.UNSCORED_LABEL)
        console.print(f"wrote {escape(str(plot))}")


def lens_comparison(model: Model, logit: analysis.LogitLens, tuned: analysis.LogitLens) -> Table:
    """Both lenses side by side, one row per layer: the top token at the last position and the mean KL to
    the final distribution over the prompt's positions (`tuned`: analysis.apply_tuned_lens's result)."""
    table = titled_table("logit lens vs tuned lens: top token at the last position, mean KL to final")
    table.add_column("layer")
    for column in ("logit top", "logit KL", "tuned top", "tuned KL"):
        table.add_column(column, justify="right")
    def top(result: analysis.LogitLens, layer: int) -> str:
        return show_token(model, int(result.top_tokens[layer, -1]))  # a space is ␣, as in the lens table

    for i, label in enumerate(logit.labels):
        table.add_row(label, top(logit, i), number(logit.kl_to_final[i].mean()), top(tuned, i),
                      number(tuned.kl_to_final[i].mean()))
    return table
