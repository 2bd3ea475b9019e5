"""`minineo path-patch`: path patching (Wang et al. 2022) from every head to the logits or to heads' inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer

from minineo import analysis
from minineo.cli import plots
from minineo.cli.display import clip, compared_on, show, show_token, signed, titled_table
from minineo.cli.shared import (METRIC_NAME, DeviceOption, HtmlOption, ModelOption, answer_tokens, app, check_positive,
                                console, html_path, list_items, load_or_exit, normalised_logit_diff, plot_path,
                                prompt_pair)
from minineo.analysis.path_patching import check_reach, check_receivers, check_senders, reach_layer
from minineo.errors import UserError


def parse_receivers(text: str) -> str | list[tuple[int, int, str]]:
    """'logits', or 'L.H:q,L.H:k,...' -> [(L, H, 'q'), ...] (checked against the model by path_patching)."""
    if text.strip() == "logits":
        return "logits"
    out = []
    for item in list_items("--receivers", text):
        head, _, kind = item.partition(":")
        layer, dot, number = head.partition(".")
        if not (dot and layer.isdigit() and number.isdigit() and kind):
            raise UserError(f"--receivers {clip(text, 80)}: {item.strip()!r} is not LAYER.HEAD:INPUT; give 'logits' or a "
                            "comma-separated list such as 1.2:q,1.0:k (INPUT is q, k or v)")
        if (int(layer), int(number), kind) in out:
            raise UserError(f"--receivers {clip(text, 80)} names {item} twice; give each receiver once")
        out.append((int(layer), int(number), kind))
    return out


def _unscored(grid, last: int):
    """(layer, head) bool: the heads of layer `last` and later, which have no path to the receivers (not scored)."""
    import torch

    unscored = torch.zeros(grid.shape, dtype=torch.bool)
    unscored[last:] = True
    return unscored


@app.command("path-patch")
def path_patch(clean: str, corrupted: str,
               answer: str = typer.Option(..., help="the clean prompt's answer, e.g. ' Mary'"),
               wrong: str = typer.Option(..., help="the corrupted prompt's answer, e.g. ' John'"),
               receivers: str = typer.Option("logits", help="'logits', or heads' inputs LAYER.HEAD:q|k|v, "
                                                             "comma-separated, e.g. 1.2:q,1.0:q"),
               top: int = 10, model: str = ModelOption,
               plot: Optional[Path] = typer.Option(None, "--plot", help="write a (layer, head) heatmap to this path"),
               device: str = DeviceOption, html: Optional[Path] = HtmlOption) -> None:
    """Path patching: in a run on CLEAN, one sender head at a time takes its output from CORRUPTED while every
    other head is frozen at its clean output; the receivers read the result. Reports the normalised logit
    difference of ANSWER over WRONG (1 = the clean run: no effect; 0 = the corrupted run)."""
    check_positive(top=top)
    plot, html = plot_path(plot), html_path(html)  # a path that cannot be written is refused before any work
    wanted = parse_receivers(receivers)
    m = load_or_exit(model, device)
    check_reach(m, check_senders(m, "heads"), check_receivers(m, wanted))  # before any run: nothing to rank
    prefix, answer_id, wrong_id = answer_tokens(m, answer, wrong)
    clean_tokens, corrupted_tokens = prompt_pair(m, clean, corrupted, prefix)
    with torch.inference_mode():
        metric, clean_ld, corrupted_ld = normalised_logit_diff(m, clean_tokens, corrupted_tokens, answer_id,
                                                               wrong_id, answer, wrong)
        grid = analysis.path_patching(m, clean_tokens, corrupted_tokens, metric, "heads", wanted)  # (layer, head)
    compared = f"{show_token(m, answer_id)} vs {show_token(m, wrong_id)}"
    target = "the logits" if wanted == "logits" else ", ".join(f"{l}.{h}:{k}" for l, h, k in wanted)
    console.print(f"{METRIC_NAME.replace(chr(10), ' ')}; logit difference {show(answer)} - {show(wrong)} "
                  f"(compared on {compared}): clean {signed(clean_ld)}, corrupted {signed(corrupted_ld)}")
    table = titled_table(f"path patching, every head -> {target} (largest effects)")  # no "x:" + ":": an emoji code
    for column in ("layer", "head", "normalised logit diff", "change"):
        table.add_column(column, justify="right")
    change = grid - 1.0  # the clean run is 1
    last = reach_layer(m, wanted)
    n_reach = last * m.config.n_heads  # the senders before the receivers' layer: the only ones with a path
    for index in change[:last].flatten().abs().argsort(descending=True)[:top].tolist():
        layer, head = divmod(index, m.config.n_heads)
        table.add_row(str(layer), f"H{head}", signed(grid[layer, head]), signed(change[layer, head]))
    console.print(table)
    if n_reach < grid.numel():
        console.print(f"{grid.numel() - n_reach} heads of layer {last} and later have no path to {target} and are "
                      f"not ranked (only the {n_reach} heads before layer {last} are)")
    if plot:
        plots.patching_heatmap(change, plot, f"{model}: path patching every head -> {target}",
                               [f"H{h}" for h in range(m.config.n_heads)],
                               "change in normalised logit difference\n(0 = no effect, -1 = the corrupted run)", "head",
                               anchors=plots.CHANGE, unscored=_unscored(grid, last))
        console.print(f"wrote {plot}")
    if html:
        from minineo import views

        views.patching(grid, "head", name=model, prompt=f"clean: {clean}\ncorrupted: {corrupted}",
                       title=f"Path patching: every head -> {target}", centre=1.0,
                       metric=f"{METRIC_NAME.replace(chr(10), ' ')} of "
                              f"{compared_on(m, answer, wrong, answer_id, wrong_id)} when only this head's path to "
                              f"{target} carries its corrupted output (1 = no effect)").save(html)
        console.print(f"wrote {html}")
