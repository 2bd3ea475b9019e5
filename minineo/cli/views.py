"""`minineo view` and `minineo view-circuit`: the attention page of a prompt, the circuit page of an EAP-IG graph.

The other views are `--html` options of the commands that compute them (`lens`, `attribute`, `patch`,
`path-patch`); every page is one self-contained HTML file (minineo.views).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer
from rich.markup import escape

from minineo import views
from minineo.cli.shared import DeviceOption, ModelOption, app, console, html_path, load_or_exit, prompt_tokens


@app.command()
def view(prompt: str, model: str = ModelOption,
         out: Path = typer.Option(..., "--out", "-o", help="the HTML page to write (.html; no extension: .html)"),
         device: str = DeviceOption) -> None:
    """The attention page of PROMPT: every layer and head's pattern, hover a token or a cell for the values."""
    out = html_path(out, "--out")
    m = load_or_exit(model, device)
    tokens = prompt_tokens(m, prompt, model)
    with torch.inference_mode():
        _, cache = m.run_with_cache(tokens, names=lambda name: name.endswith("attn.pattern"))  # lazily from q and k
    views.attention(cache, tokens, m, name=model, prompt=prompt).save(out)
    console.print(f"wrote {escape(str(out))} (open it in a browser; it needs no network)")


@app.command("view-circuit")
def view_circuit(graph: Path = typer.Argument(..., help="an EAP-IG graph file, .json or .pt (Graph.to_json / to_pt, or "
                                                  "minineo discover --out)"),
                 out: Path = typer.Option(..., "--out", "-o", help="the HTML page to write (.html)"),
                 name: Optional[str] = typer.Option(None, "--name", help="the model's name on the page (default: the "
                                                    "file's \"model\" key, else its shape)")) -> None:
    """The circuit page of an EAP-IG graph file (.json or .pt): a layered graph opening on the file's circuit, a slider
    for the top N edges, click a node for its edges and scores."""
    out = html_path(out, "--out")
    page = views.circuit(graph, name=name)
    page.save(out)
    console.print(f"wrote {escape(str(out))} (open it in a browser; it needs no network)")
