"""The page shell every view shares: one self-contained HTML file, compact tensor packing, the View object.

A page is a single HTML document: its CSS and JavaScript are inlined from `assets/` (written here, no CDN,
no fonts), its data sit in one `<script type="application/json">` block, and a Content-Security-Policy
forbids every network request (`default-src 'none'`), so a page opens offline and cannot leak or fetch.
Every page names the model, the prompt and the minineo version that made it.

Tensors travel as base64 of little-endian arrays: float32 where the exact value matters (scores, logits'
probabilities are few), and 16-bit quantisation over [low, high] for the big ones (attention patterns):
the step is (high - low) / 65535, so a probability is off by at most 7.6e-6, well inside the 3 digits shown.
(8 bits would be off by up to 0.002, more than the third digit; 16 bits keep a 12-layer x 12-head, 64-token
page at ~0.8 MB, under the 2 MB budget.)
"""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minineo import checks, outputs
from minineo.errors import UserError, WrongTypeError

ASSETS = resources.files("minineo.views") / "assets"
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"


def asset(name: str) -> str:
    """The text of one file of minineo/views/assets/ (the views' own CSS and JavaScript)."""
    return (ASSETS / name).read_text(encoding="utf-8")


def pack_float32(values: torch.Tensor | np.ndarray) -> str:
    """base64 of the values as little-endian float32, flattened in C order (JS: `floats(text)`)."""
    array = np.ascontiguousarray(torch.as_tensor(values).detach().float().cpu().numpy(), dtype="<f4")
    return base64.b64encode(array.tobytes()).decode("ascii")


def pack_uint16(values: torch.Tensor | np.ndarray) -> str:
    """base64 of non-negative integers < 65536 as little-endian uint16 (JS: `uint16s(text)`)."""
    array = np.ascontiguousarray(torch.as_tensor(values).detach().cpu().numpy().astype("<u2"))
    return base64.b64encode(array.tobytes()).decode("ascii")


def pack_quantised(values: torch.Tensor, low: float = 0.0, high: float = 1.0) -> dict[str, Any]:
    """{"low", "high", "data"}: the values rounded to 65536 levels over [low, high] (16 bits each, base64).

    JS: `dequantise(packed)` gives low + q * (high - low) / 65535; the error is at most half a step.
    """
    values = torch.as_tensor(values).detach().float().cpu()
    step = (high - low) / 65535
    q = ((values.clamp(low, high) - low) / step).round().to(torch.int32)
    return {"low": low, "high": high, "data": pack_uint16(q)}


def token_strings(model, tokens: torch.Tensor) -> list[str]:
    """Each token of a (pos,) sequence as its text (or `#id` for a model without a tokenizer).

    Raises UserError for ids that are not whole numbers in 0..d_vocab-1 (d_vocab of `model` when given)."""
    ids_tensor = torch.as_tensor(tokens)
    if ids_tensor.is_floating_point() or ids_tensor.dtype == torch.bool:
        raise UserError(f"tokens must be integer token ids, got a {str(ids_tensor.dtype).removeprefix('torch.')} "
                        "tensor; pass model.to_tokens(prompt)")
    ids = ids_tensor.flatten().tolist()
    vocab = getattr(getattr(model, "config", None), "d_vocab", None)
    bad = [i for i in ids if i < 0 or (vocab is not None and i >= vocab)]
    if bad:
        limit = f"0..{vocab - 1}" if vocab is not None else "0 or more"
        raise UserError(f"tokens holds id {bad[0]}, outside the model's vocabulary ({limit}); pass the ids the cache "
                        "was recorded on (model.to_tokens(prompt))")
    if getattr(model, "tokenizer", None) is None:
        return [f"#{i}" for i in ids]
    out = []
    for i in ids:
        text = model.tokenizer.decode([i])
        if "\ufffd" in text:  # a byte that is not UTF-8 alone: show it as \xNN, so distinct bytes look distinct
            raw = model.tokenizer.token_bytes(i)
            text = "".join(f"\\x{b:02x}" for b in raw) if raw is not None else text
        out.append(text)
    return out


def joined(model, words: list[str]) -> str:
    """The prompt as text from its token strings: concatenated, or spaced when they are `#id`s (no tokenizer)."""
    ids = getattr(model, "tokenizer", None) is None and all(w.startswith("#") for w in words)
    return " ".join(words) if ids else "".join(words)


def visible(token: str) -> str:
    """A token's text with its whitespace made visible, as the pages show it (a space is ␣, a newline \\n)."""
    return token.replace(" ", "\u2423").replace("\n", "\\n").replace("\t", "\\t")


def model_name(model, name: str | None, config=None) -> str:
    """The model's name for the page: `name` if given, else where it was loaded from, else its shape."""
    if name:
        return name
    source = getattr(model, "source", None)
    if source:  # a folder: the hub's models--org--name/snapshots/<hash> layout gives org/name
        parts = Path(str(source)).parts
        hub = [p for p in parts if p.startswith("models--")]
        return hub[-1][len("models--"):].replace("--", "/") if hub else parts[-1]
    c = config if model is None else model.config
    return f"{c.n_layers}-layer x {c.n_heads}-head model (d_model {c.d_model})"


def check_model(model) -> None:
    """A WrongTypeError unless `model` is a minineo Model (minineo.load(...))."""
    from minineo.forward.model import Model

    if not isinstance(model, Model):
        raise WrongTypeError(f"model must be a minineo Model (minineo.load(name)), got {type(model).__name__}")


def check_texts(**values: Any) -> None:
    """Each keyword (name=..., prompt=...) must be a str or None; a WrongTypeError naming it otherwise."""
    for key, value in values.items():
        if value is not None and not isinstance(value, str):
            raise WrongTypeError(f"{key} must be a str (or None), got {type(value).__name__}")


def first_row(tokens: torch.Tensor) -> torch.Tensor:
    """The first row (pos,) of a (batch, pos) or (pos,) token tensor, as a LongTensor; a UserError otherwise."""
    try:
        tokens = torch.as_tensor(tokens)
    except (TypeError, ValueError, RuntimeError):
        raise WrongTypeError(f"tokens must be token ids (a LongTensor (batch, pos) or (pos,)), got "
                             f"{type(tokens).__name__}; pass model.to_tokens(prompt)") from None
    if tokens.ndim == 2:
        tokens = tokens[0]
    if tokens.ndim != 1 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.numel() == 0:
        raise UserError(f"tokens must be token ids of shape (batch, pos) or (pos,), got a {tokens.dtype} tensor of "
                        f"shape {tuple(tokens.shape)}; pass model.to_tokens(prompt)")
    return tokens.long()


def _json_for_script(data: Any) -> str:
    """JSON that is safe inside <script>: '<', '>' and '&' escaped, so no string can close the block."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(kind: str, title: str, model: str, prompt: str | None, data: dict[str, Any], body: str, script: str) -> str:
    """One whole HTML document: the header (title, model, prompt, version), `body`, the shared and view JS."""
    from minineo import __version__

    data = {"kind": kind, "model": model, "prompt": prompt, "version": __version__, **data}
    prompt_line = ("" if prompt is None else
                   f'<div class="meta">prompt: <span class="prompt" id="prompt">{html.escape(prompt)}</span></div>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · {html.escape(model)}</title>
<style>{asset("page.css")}</style></head>
<body data-kind="{kind}">
<header><h1>{html.escape(title)}</h1>
<div class="meta">model: <b id="model">{html.escape(model)}</b> · made by minineo <span id="version">{__version__}</span></div>
{prompt_line}</header>
<main>{body}</main>
<div id="tooltip" class="tooltip" hidden></div>
<script type="application/json" id="data">{_json_for_script(data)}</script>
<script>{asset("page.js")}</script>
<script>{script}</script>
</body></html>
"""


PAGE_SUFFIXES = (".html", ".htm")
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")  # what the commands' --plot writes (matplotlib)
# Per view, the command that draws the same result as a static image (the attention view has none).
STATIC_PLOTS = {
    "lens": "minineo lens PROMPT --plot {name}",
    "attributions": "minineo attribute PROMPT --answer A --wrong B --plot {name}",
    "patching": "minineo patch CLEAN CORRUPTED --answer A --wrong B --plot {name} (or path-patch ... --plot {name})",
    "circuit": "minineo discover --from GRAPH.json --task TASK --plot {name}",  # --out is optional with --from
}


def html_file(path: Path, kind: str) -> Path:
    """`path` as the HTML page of a `kind` view: .html or .htm as given, no extension -> .html. Raises UserError
    for any other extension, naming it, the .html name to use instead and, for an image, the command that draws
    the view's static plot."""
    if path.name.lower() in PAGE_SUFFIXES or not path.name.strip("."):  # ".html": an extension with no name
        raise UserError(f"cannot save the {kind} view as {path}: {path.name!r} has no name before the extension; give "
                        f"a name such as {path.with_name(kind + '.html')}")
    if path.name.endswith("."):  # "x." names no extension: "x.html", not "x..html"
        path = path.with_name(path.name.rstrip("."))
    if not path.suffix:
        return path.with_name(path.name + ".html")
    if path.suffix.lower() in PAGE_SUFFIXES:
        return path
    stem = Path(path.stem)  # x.html.png: the page is x.html (not x.html.html)
    fix = f"save it as {stem.name if stem.suffix.lower() in PAGE_SUFFIXES else stem.name + '.html'}"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        plot = STATIC_PLOTS.get(kind)
        fix += (f"; for a static {path.suffix[1:].upper()} image run `{plot.format(name=path.name)}`" if plot else
                f"; the {kind} view has no static plot (take a screenshot of the page in a browser)")
    raise UserError(f"cannot save the {kind} view as {path}: a view is an interactive HTML page, not a "
                    f"{path.suffix!r} file; {fix}")


class View:
    """A rendered view: `.html` (the whole page), `.save(path)`, and `_repr_html_` for Jupyter.

    In a notebook the page is shown inside an `<iframe srcdoc=...>`, so its script and styles stay apart from
    the notebook's (CircuitsVis's convention of a self-contained output cell).
    """

    @checks.typed
    def __init__(self, html_text: str, kind: str, height: int = 600):
        self.html, self.kind, self.height = html_text, kind, checks.count(height, "height", fix="the frame's pixels")

    @checks.typed
    def save(self, path: str | Path) -> Path:
        """Write the page to `path` (UTF-8), an .html or .htm file (a name without an extension gets .html); returns
        the path written. A folder, a missing parent, or another extension (.png: a page is not an image) is a
        UserError naming the fix."""
        path = Path(path).expanduser()
        if path.is_dir():
            raise UserError(f"path {path} is a directory; give a file name such as {path / (self.kind + '.html')}")
        path = html_file(path, self.kind)
        if not path.parent.is_dir():
            raise UserError(f"cannot write {path}: the folder {path.parent} does not exist; create it first")
        outputs.write_text(path, self.html, "the HTML page")  # whole or not at all, one writer at a time
        return path

    def _repr_html_(self) -> str:
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" style="width:100%;height:{self.height}px;'
                'border:1px solid #ddd" sandbox="allow-scripts"></iframe>')

    def __repr__(self) -> str:
        return f"<minineo view {self.kind}: {len(self.html):,} characters; .save(path) or display in a notebook>"
