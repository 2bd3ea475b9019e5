"""`minineo patch`: activation patching of a clean prompt into a corrupted one, as a table and a heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer

from minineo import analysis
from minineo.cli import plots
from minineo.cli.display import compared_on, show, show_token, signed, titled_table
from minineo.cli.shared import (METRIC_NAME, DeviceOption, HtmlOption, ModelOption, answer_tokens, app, check_options,
                                console, html_path, load_or_exit, normalised_logit_diff, pair_labels, plot_path,
                                prompt_pair, working)
from minineo.analysis.patching import check_site


@app.command()
def patch(clean: str, corrupted: str,
          answer: str = typer.Option(..., help="the clean prompt's answer, e.g. ' Mary'"),
          wrong: str = typer.Option(..., help="the corrupted prompt's answer, e.g. ' John'"),
          site: str = typer.Option("resid_pre", help="resid_pre, resid_mid, attn_out, mlp_out, mlp.post, attn.z, "
                                                      "attn.q, attn.k, attn.v or attn.pattern"),
          per: str = typer.Option("pos", help="pos (layer x position), head (layer x head) or head_pos"),
          top: int = 10, model: str = ModelOption,
          plot: Optional[Path] = typer.Option(None, "--plot", help="write a PNG heatmap to this path"),
          device: str = DeviceOption, html: Optional[Path] = HtmlOption) -> None:
    """Activation patching: run CORRUPTED with one site of CLEAN's run patched in, for every layer and
    position (or head), and report the normalised logit difference of ANSWER over WRONG."""
    check_options(top=(top, ">= 1"))
    check_site(site, per)
    plot, html = plot_path(plot), html_path(html)  # a path that cannot be written is refused before any work
    m = load_or_exit(model, device)
    prefix, answer_id, wrong_id = answer_tokens(m, answer, wrong)
    clean_tokens, corrupted_tokens = prompt_pair(m, clean, corrupted, prefix)
    with torch.inference_mode(), working(f"patching {site} per {per}"):
        names = [f"blocks.{layer}.{check_site(site, per)}" for layer in range(m.config.n_layers)]
        metric, clean_ld, corrupted_ld = normalised_logit_diff(m, clean_tokens, corrupted_tokens, answer_id,
                                                               wrong_id, answer, wrong)
        _, cache = m.run_with_cache(clean_tokens, names=names)
        values = analysis.activation_patching(m, corrupted_tokens, cache, metric, site, per)
    words = pair_labels(m, clean_tokens, corrupted_tokens)  # the clean token, clean/corrupted where they differ
    compared = f"{show_token(m, answer_id)} vs {show_token(m, wrong_id)}"
    console.print(f"{METRIC_NAME.replace(chr(10), ' ')}; logit difference {show(answer)} - {show(wrong)} "
                  f"(compared on {compared}): clean {signed(clean_ld)}, corrupted {signed(corrupted_ld)}")
    if per == "pos":
        columns, labels = words, [f"pos {p} {w}" for p, w in enumerate(words)]
    elif per == "head":
        columns = labels = [f"H{h}" for h in range(m.config.n_heads)]
    else:  # (layer, pos, head) flattened to (layer, pos * head): position-major
        labels = [f"pos {p} {w}, H{h}" for p, w in enumerate(words) for h in range(m.config.n_heads)]
    grid = values.reshape(m.config.n_layers, -1)  # (layer, pos or head or pos * head)
    table = titled_table(f"{site} per {per}: largest effects of patching clean into corrupted")
    for column in ("layer", "position" if per == "pos" else "head" if per == "head" else "position, head",
                   "normalised logit diff"):
        table.add_column(column, justify="right")
    for index in grid.flatten().abs().argsort(descending=True)[:top].tolist():
        layer, cell = divmod(index, grid.shape[1])
        table.add_row(str(layer), labels[cell], signed(grid[layer, cell]))
    console.print(table)
    if plot and per == "head_pos":  # one row per (layer, head), one column per position: every label is whole
        n_layers, n_heads = m.config.n_layers, m.config.n_heads
        rows = values.reshape(n_layers, len(words), n_heads).permute(0, 2, 1).reshape(n_layers * n_heads, -1)
        plots.patching_heatmap(rows, plot, f"{model}: patching {site} per head and position", words, METRIC_NAME,
                               "position", rows=[f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)],
                               row_title="layer, head")
        console.print(f"wrote {plot}")
    elif plot:
        plots.patching_heatmap(grid, plot, f"{model}: patching {site} per {per}", columns, METRIC_NAME,
                               {"pos": "position", "head": "head"}[per])
        console.print(f"wrote {plot}")
    if html:
        from minineo import views
        from minineo.views.page import token_strings

        words = [c if c == k else f"{c}/{k}" for c, k in zip(token_strings(m, clean_tokens[0]),
                                                               token_strings(m, corrupted_tokens[0]))]
        views.patching(values, per, tokens=words, name=model,
                       prompt=f"clean: {clean}\ncorrupted: {corrupted}",
                       title=f"Activation patching: {site} per {per}",
                       metric=f"{METRIC_NAME.replace(chr(10), ' ')} of "
                              f"{compared_on(m, answer, wrong, answer_id, wrong_id)} when this cell of the clean run is patched into the corrupted run").save(html)
        console.print(f"wrote {html}")
