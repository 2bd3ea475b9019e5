"""`minineo patch`: activation patching of a clean prompt into a corrupted one, as a table and a heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer

from minineo import analysis
from minineo.cli import plots
from minineo.cli.display import plural, show, show_token, titled_table, token_texts
from minineo.cli.shared import DeviceOption, ModelOption, app, check_options, console, load_or_exit, plot_path, working
from minineo.analysis.patching import check_site
from minineo.errors import UserError

METRIC_NAME = "normalised logit difference\n(0 = corrupted, 1 = clean)"


def answer_tokens(m, answer: str, wrong: str) -> tuple[list[int], int, int]:
    """(common prefix ids, answer id, wrong id): the answers compared on their first differing token.

    On a byte-level vocabulary " Mary" and " John" share the space: the prompt gets the space and the
    metric compares "M" with "J".
    """
    tokenizer = m._require_tokenizer()
    a, w = tokenizer.encode(answer), tokenizer.encode(wrong)
    if not a or not w:
        raise UserError(f"{answer if not a else wrong!r} encodes to no token; give a non-empty answer")
    i = next((i for i, (x, y) in enumerate(zip(a, w)) if x != y), None)
    if i is None:
        raise UserError(f"--answer {answer!r} and --wrong {wrong!r} have no differing token (one is a prefix of the "
                        "other); give two answers that differ")
    return a[:i], a[i], w[i]


@app.command()
def patch(clean: str, corrupted: str,
          answer: str = typer.Option(..., help="the clean prompt's answer, e.g. ' Mary'"),
          wrong: str = typer.Option(..., help="the corrupted prompt's answer, e.g. ' John'"),
          site: str = typer.Option("resid_pre", help="resid_pre, resid_mid, attn_out, mlp_out, mlp.post, attn.z, "
                                                      "attn.q, attn.k, attn.v or attn.pattern"),
          per: str = typer.Option("pos", help="pos (layer x position), head (layer x head) or head_pos"),
          top: int = 10, model: str = ModelOption,
          plot: Optional[Path] = typer.Option(None, "--plot", help="write a PNG heatmap to this path"),
          device: str = DeviceOption) -> None:
    """Activation patching: run CORRUPTED with one site of CLEAN's run patched in, for every layer and
    position (or head), and report the normalised logit difference of ANSWER over WRONG."""
    check_options(top=(top, ">= 1"))
    check_site(site, per)
    plot = plot_path(plot)  # a path that cannot be written is refused before any work
    m = load_or_exit(model, device)
    prefix, answer_id, wrong_id = answer_tokens(m, answer, wrong)
    clean_tokens, corrupted_tokens = m.to_tokens(clean), m.to_tokens(corrupted)
    if clean_tokens.shape != corrupted_tokens.shape:
        raise UserError(f"the clean and corrupted prompts must tokenize to the same length: clean has "
                        f"{plural(clean_tokens.shape[1], 'token')}, corrupted has {corrupted_tokens.shape[1]}; "
                        "change one of them (e.g. names of the same token length)")
    extra = torch.tensor([prefix], dtype=torch.long, device=clean_tokens.device)
    clean_tokens, corrupted_tokens = (torch.cat([t, extra], 1) for t in (clean_tokens, corrupted_tokens))

    def logit_diff(logits: torch.Tensor) -> torch.Tensor:
        return logits[0, -1, answer_id] - logits[0, -1, wrong_id]

    with torch.inference_mode(), working(f"patching {site} per {per}"):
        names = [f"blocks.{layer}.{check_site(site, per)}" for layer in range(m.config.n_layers)]
        clean_logits, cache = m.run_with_cache(clean_tokens, names=names)
        clean_ld, corrupted_ld = float(logit_diff(clean_logits)), float(logit_diff(m(corrupted_tokens)))
        if abs(clean_ld - corrupted_ld) < 1e-6:
            raise UserError(f"the logit difference {show(answer)} - {show(wrong)} is the same on both prompts "
                            f"({clean_ld:+.4f}), so nothing can be recovered; choose prompts whose answers differ")

        def metric(logits: torch.Tensor) -> torch.Tensor:
            return (logit_diff(logits) - corrupted_ld) / (clean_ld - corrupted_ld)

        values = analysis.activation_patching(m, corrupted_tokens, cache, metric, site, per)
    # tick labels: the clean token, and clean/corrupted where the prompts differ
    words = [show(c) if c == k else f"{show(c)}/{show(k)}"
             for c, k in zip(token_texts(m, clean_tokens[0]), token_texts(m, corrupted_tokens[0]))]
    compared = f"{show_token(m, answer_id)} vs {show_token(m, wrong_id)}"
    console.print(f"{METRIC_NAME.replace(chr(10), ' ')}; logit difference {show(answer)} - {show(wrong)} "
                  f"(compared on {compared}): clean {clean_ld:+.3f}, corrupted {corrupted_ld:+.3f}")
    if per == "pos":
        columns, labels = words, [f"pos {p} {w}" for p, w in enumerate(words)]
    elif per == "head":
        columns = labels = [f"H{h}" for h in range(m.config.n_heads)]
    else:
        columns = labels = [f"{w} H{h}" for w in words for h in range(m.config.n_heads)]
    grid = values.reshape(m.config.n_layers, -1)  # (layer, pos or head or pos * head)
    table = titled_table(f"{site} per {per}: largest effects of patching clean into corrupted")
    for column in ("layer", "position" if per == "pos" else "head" if per == "head" else "position, head",
                   "normalised logit diff"):
        table.add_column(column, justify="right")
    for index in grid.flatten().abs().argsort(descending=True)[:top].tolist():
        layer, cell = divmod(index, grid.shape[1])
        table.add_row(str(layer), labels[cell], f"{grid[layer, cell]:+.3f}")
    console.print(table)
    if plot:
        plots.patching_heatmap(grid, plot, f"{model}: patching {site} per {per}", columns, METRIC_NAME,
                               {"pos": "position", "head": "head"}.get(per, "position, head"))
        console.print(f"wrote {plot}")
