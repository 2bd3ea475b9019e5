"""The tuned lens (Belrose et al. 2023): one affine translator per layer before ln_final and W_U.

The logit lens reads residual h_l as unembed(ln_final(h_l)). The tuned lens reads it as
unembed(ln_final(h_l + A_l h_l + b_l)), with A_l, b_l trained so that each layer's distribution
matches the model's final next-token distribution (KL). It reads the same residuals as the logit
lens (`Cache.accumulated_resid`): the n_layers `resid_pre` get a translator each, and the last row,
the final residual, is read as is (it *is* the model's output), as in the `tuned-lens` package.

Files: `save` writes a folder with `lens.safetensors` and `lens.json` (the model's identity and the
shapes); `TunedLens.load` reads it, or a `tuned-lens` package folder (`config.json` + `params.pt`,
read with `torch.load(weights_only=True)`, never unpickling arbitrary objects).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Union

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from minineo import checks, report
from minineo.analysis.lens import LogitLens, check_one_row, summarise_lens
from minineo.analysis.tuned_lens_files import read_lens, write_lens, write_package_lens
from minineo.record.cache import Cache
from minineo.errors import UserError
from minineo.forward.model import Model


def _resid_names(name: str) -> bool:
    return name.endswith(("resid_pre", "resid_post"))


def model_identity(model: Model) -> dict:
    """What a lens file records about its model: its name (as given to minineo.load: "tiny-neo", "gpt2", a
    folder as the user wrote it; not this machine's install path), the shapes that must match, and the
    fingerprint of its unembedding (`unembed_hash`, the tuned-lens package's), which tells two models of one
    shape apart."""
    c = model.config
    return {"model": getattr(model, "name", None) or getattr(model, "source", None), "architecture": c.architecture,
            "n_layers": c.n_layers, "d_model": c.d_model, "d_vocab": c.d_vocab, "unembed_hash": unembed_hash(model)}


def check_lens_identity(meta: dict, model: Model, path: str | Path | None) -> None:
    """A UserError naming both identities when the lens in `path` (its recorded `meta`) was made for another
    model than `model`: another architecture, vocabulary or unembedding (the package's unembed_hash). A file
    that records none of these (older minineo lenses) is checked on its shapes only (by read_lens)."""
    mine = model_identity(model)
    differ = [key for key in ("architecture", "d_vocab", "unembed_hash")
              if meta.get(key) is not None and meta[key] != mine[key]]
    if not differ:
        return

    def who(identity: dict) -> str:
        facts = ", ".join(f"{key} {str(identity[key])[:12] if key == 'unembed_hash' else identity[key]}"
                          for key in differ)
        return f"{identity.get('model') or 'an unnamed model'} ({facts})"

    where = f" in {path}" if path is not None else ""
    raise UserError(f"the tuned lens{where} was made for {who(meta)}, but this model is {who(mine)}; "
                    "use the lens trained for this model, or train one for it with `minineo tune-lens`")


def unembed_hash(model: Model) -> str:
    """The tuned-lens package's fingerprint of the unembedding (its utils.tensor_hash of HF's lm_head weight
    (d_vocab, d_model)): sha256 of numpy's one-decimal summary print of the matrix."""
    import hashlib

    import numpy as np

    matrix = model.W_U.detach().T.to("cpu", torch.float32).numpy()  # (d_vocab, d_model), HF's lm_head layout
    return hashlib.sha256(np.array_str(matrix, precision=1).encode()).hexdigest()


class TunedLens(nn.Module):
    """Per-layer affine translators for `model`, starting at the identity (A = 0, b = 0).

    `lens(cache)` and `lens.logits(model, tokens)` give (layer + 1, batch, pos, d_vocab): the rows of
    `Cache.accumulated_resid` ("0_pre" ... "final_post"), like the logit lens.
    The translators are float32 whatever the model's dtype; the lens lives on the model's device.
    """

    @checks.typed
    def __init__(self, model: Model, bias: bool = True):
        super().__init__()
        c = model.config
        device = model.W_E.device
        self.identity = model_identity(model)
        self.weight = nn.Parameter(torch.zeros(c.n_layers, c.d_model, c.d_model, device=device))  # A: (layer, out, in)
        self.bias = nn.Parameter(torch.zeros(c.n_layers, c.d_model, device=device)) if bias else None
        object.__setattr__(self, "_model", model)  # a plain reference: not a submodule, not in state_dict

    @property
    def model(self) -> Model:
        return self._model

    @checks.typed
    def translate(self, resid: torch.Tensor, layer: int | slice = slice(None)) -> torch.Tensor:
        """h + A h + b for the residuals `resid` (layer, ..., d_model) of `layer` (an index or a slice)."""
        n_layers, d_model = self.weight.shape[0], self.weight.shape[-1]
        if not isinstance(layer, slice):
            layer = checks.layer(layer, n_layers, "layer", fix=f"the lens has layers 0..{n_layers - 1}")
        W = self.weight[layer]
        want = (*([W.shape[0]] if W.ndim == 3 else []), "...", d_model)
        if not isinstance(resid, torch.Tensor) or not resid.is_floating_point() or resid.ndim < len(want) - 1 or \
                resid.shape[-1] != d_model or (W.ndim == 3 and resid.shape[0] != W.shape[0]):
            raise UserError(f"resid must be float residuals of shape {tuple(want)} (one per lens layer), got "
                            f"{checks.describe(resid)}".replace("'...'", "..."))
        h = resid.float()
        if W.ndim == 2:  # one layer
            out = h + h @ W.T
            return out if self.bias is None else out + self.bias[layer]
        out = h + torch.einsum("loi,l...i->l...o", W, h)
        if self.bias is not None:
            out = out + self.bias[layer].view(W.shape[0], *[1] * (h.ndim - 2), -1)
        return out

    @checks.typed
    def unembed(self, resid: torch.Tensor, model: Model | None = None) -> torch.Tensor:
        """ln_final (each residual with its own scale) then W_U, in float32: (..., d_model) -> (..., d_vocab).

        `model` defaults to the lens's own; its weights are detached, so training the lens never touches it."""
        if not resid.is_floating_point() or resid.ndim < 1 or resid.shape[-1] != self.weight.shape[-1]:
            raise UserError(f"resid must be float residuals (..., d_model={self.weight.shape[-1]}), got "
                            f"{checks.describe(resid)}")
        model = model if model is not None else self.model
        ln = model.ln_final
        h = F.layer_norm(resid.float(), resid.shape[-1:], ln.w.detach().float(), ln.b.detach().float(), ln.eps)
        logits = h @ model.W_U.detach().float()
        return logits if model.b_U is None else logits + model.b_U.detach().float()  # b_U: processed weights only

    @checks.typed
    def forward(self, cache: Cache, model: Model | None = None) -> torch.Tensor:
        """Lens logits (layer + 1, batch, pos, d_vocab) from a cache holding every resid_pre and the last
        resid_post, unembedded by `model` (default: the lens's own)."""
        self._check(cache.config, model)
        resid, _ = cache.accumulated_resid()  # (layer + 1, batch, pos, d_model)
        translated = torch.cat([self.translate(resid[:-1]), resid[-1:].float()])
        return self.unembed(translated, model)

    @checks.typed
    def logits(self, model: Model, tokens: torch.Tensor) -> torch.Tensor:
        """Run `model` on tokens (batch, pos) and return the lens logits (layer + 1, batch, pos, d_vocab)."""
        self._check(model.config, model)
        _, cache = model.run_with_cache(tokens, names=_resid_names)
        return self(cache, model)

    @checks.typed
    def labels(self) -> list[str]:
        n = self.identity["n_layers"]
        return [f"{layer}_pre" for layer in range(n)] + ["final_post"]

    def _check(self, config, model: Model | None = None) -> None:
        """UserError unless the config has the lens's shape and `model` (when given and not the lens's own) is the
        model the lens was made for: a same-shape model (tiny-neo / tiny-gpt2) is told apart by its architecture,
        vocabulary and unembedding hash, as a lens file is at load."""
        mine = self.identity
        if (config.n_layers, config.d_model) != (mine["n_layers"], mine["d_model"]):
            raise UserError(f"this tuned lens was made for a model with {mine['n_layers']} layers of width "
                            f"{mine['d_model']} ({mine['model']}), not {config.n_layers} layers of width "
                            f"{config.d_model}; load the lens trained for this model, or train one with "
                            "`minineo tune-lens`")
        if model is not None and model is not self.model:
            check_lens_identity(self.identity, model, None)

    # ---- files (minineo.analysis.tuned_lens_files) ---------------------------------------------------

    @checks.typed
    def save(self, path: str | Path, format: str = "minineo") -> None:
        """Write the folder `path`, all or nothing, replacing an older lens there.

        format "minineo": lens.safetensors + lens.json. "tuned-lens": the tuned-lens package's config.json +
        params.pt, which its `TunedLens.from_model_and_pretrained(model, path)` reads (checked with tuned-lens
        0.2.0); its unembed_hash is the package's hash of this model's unembedding, so the package accepts it.
        """
        format = checks.one_of(format, "format", ("minineo", "tuned-lens"), "'minineo' (lens.json + lens.safetensors) or "
                               "'tuned-lens' (the package's config.json + params.pt)")
        path = checks.writable_folder(path, "path")
        tensors = {"weight": self.weight.detach().cpu().contiguous()}
        if self.bias is not None:
            tensors["bias"] = self.bias.detach().cpu().contiguous()
        if format == "minineo":
            write_lens(path, tensors, self.identity)
        else:
            write_package_lens(path, tensors, self.identity, unembed_hash(self.model))

    @classmethod
    @checks.typed
    def load(cls, path: str | Path, model: Model) -> TunedLens:
        """Read a lens folder for `model`: minineo's (lens.json + lens.safetensors) or the tuned-lens package's
        (config.json + params.pt). A lens for another model shape, or a damaged file, is a UserError."""
        meta, tensors = read_lens(Path(path), model.config)
        check_lens_identity(meta, model, path)
        lens = cls(model, bias="bias" in tensors)
        lens.identity = {**lens.identity, "model": meta.get("model") or lens.identity["model"]}
        with torch.no_grad():
            lens.weight.copy_(tensors["weight"])
            if lens.bias is not None:
                lens.bias.copy_(tensors["bias"])
        return lens


@checks.typed
def apply_tuned_lens(lens: TunedLens, tokens: torch.Tensor | str) -> LogitLens:
    """The tuned lens over one prompt: `tokens` (pos,) or (1, pos), or its text; summarised like `logit_lens`.
    UserError for a batch of several rows (as logit_lens: lens each row on its own)."""
    model = lens.model
    tokens = model.to_tokens(tokens) if isinstance(tokens, str) else torch.as_tensor(tokens, device=model.W_E.device)
    tokens = tokens[None] if tokens.ndim == 1 else tokens
    check_one_row(tokens, "tokens")
    with torch.no_grad():
        logits = lens.logits(model, tokens)[:, 0]  # (layer + 1, pos, d_vocab)
    return summarise_lens(lens.labels(), logits, tokens[0])


def kl_to_final(logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(final || layer) per layer, (layer + 1,), from lens logits (layer + 1, batch, pos, d_vocab)."""
    log_probs = logits.float().log_softmax(-1)
    final = log_probs[-1:]
    return (final.exp() * (final - log_probs)).sum(-1).flatten(1).mean(1)


@checks.typed
def lens_kl(model: Model, tokens: torch.Tensor, lens: TunedLens | None = None, batch_size: int = 8) -> torch.Tensor:
    """Mean KL to the final distribution per layer (layer + 1,) over every position of `tokens` (batch, pos):
    the tuned lens's, or the logit lens's when `lens` is None (a tuned lens at the identity)."""
    batch_size = checks.count(batch_size, "batch_size")
    lens = lens if lens is not None else TunedLens(model)
    tokens, _ = model.token_batch(tokens)  # (batch, pos)
    total = torch.zeros(model.config.n_layers + 1, device=tokens.device)
    with torch.no_grad():
        for start in range(0, tokens.shape[0], batch_size):
            batch = tokens[start:start + batch_size]
            total += kl_to_final(lens.logits(model, batch)) * batch.shape[0]
    return (total / tokens.shape[0]).cpu()


# ---- training -------------------------------------------------------------------------------------

Corpus = Union[str, os.PathLike, Iterable[torch.Tensor]]


@checks.typed
def train_tuned_lens(
    model: Model, corpus: Corpus, *, steps: int = 250, batch_size: int = 8, context: int | None = None,
    optimizer: str = "sgd", lr: float | None = None, momentum: float = 0.9, weight_decay: float = 1e-3,
    warmup_steps: int | None = None, text_field: str = "text", lens: TunedLens | None = None,
) -> TunedLens:
    """Train a tuned lens for `model` on `corpus` and return it.

    `corpus` is a path the `minineo.data.corpus` reader understands (.txt, .jsonl, .json, .parquet, a
    save_to_disk folder or a glob; packed into rows of `context` tokens, default min(n_ctx, 512)), or
    an iterable of token rows, LongTensor (context,). It is streamed, and read again from the start if
    it runs out (a one-shot iterator that runs out ends training early, with a warning).
    Each step: `batch_size` rows; loss = sum over layers of KL(final || lens), the model's final
    next-token distribution at the same position as the target (as in the paper and the tuned-lens
    package). `optimizer` "sgd" is the package's default: SGD with Nesterov momentum, lr 1.0 * (1 - momentum),
    linear decay to zero; "adam" is AdamW (amsgrad) at lr 1e-3 with a linear warmup over the first 20%
    of steps. Gradients are clipped to norm 1. Deterministic: zero start, rows in corpus order.
    When the first step says the whole run will take over a minute, a `warning:` (minineo.report) gives the
    estimate and how to shorten it.
    """
    steps, batch_size = checks.count(steps, "steps"), checks.count(batch_size, "batch_size")
    if lr is not None:
        lr = checks.number(lr, "lr", low=0, low_open=True, fix="default: 1.0 * (1 - momentum) for sgd, 1e-3 for adam")
    momentum = checks.number(momentum, "momentum", low=0, high=1, high_open=True)
    weight_decay = checks.number(weight_decay, "weight_decay", low=0)
    optimizer = checks.one_of(optimizer, "optimizer", ("sgd", "adam"), "'sgd' (SGD with Nesterov momentum) or 'adam' "
                              "(AdamW)")
    if warmup_steps is not None:
        warmup_steps = checks.count(warmup_steps, "warmup_steps", minimum=0, maximum=steps,
                                    fix="the first steps of a linear warmup, at most every step")
    # context 0 is refused, not read as "the default" (context or ... did)
    context = min(model.config.n_ctx, 512) if context is None else context
    checks.context_length(context, model.config.n_ctx, "context")
    lens = lens if lens is not None else TunedLens(model)
    lens._check(model.config)
    params = [p for p in lens.parameters()]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=(1.0 if lr is None else lr) * (1 - momentum), momentum=momentum,
                              nesterov=True, weight_decay=weight_decay)
        warmup = warmup_steps or 0
    else:
        opt = torch.optim.AdamW(params, lr=1e-3 if lr is None else lr, betas=(momentum, 0.999), amsgrad=True,
                                weight_decay=weight_decay)
        warmup = warmup_steps if warmup_steps is not None else steps // 5
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: (step + 1) / warmup if step < warmup else max(0.0, (steps - step) / max(1, steps - warmup)))
    batches = _batches(model, corpus, batch_size, context, text_field)
    running = None
    with progress_bar() as progress:
        task = progress.add_task("training the tuned lens", total=steps, kl="")
        for step in range(steps):
            tokens = next(batches, None)
            if tokens is None:
                report.warn(f"the corpus ran out after {step} of {steps} steps; the lens is trained on what there was")
                break
            started = time.perf_counter()
            kl = _step(lens, model, tokens)
            if step == 0:
                _say_estimate(time.perf_counter() - started, steps, batch_size, context, model.W_E.device)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            schedule.step()
            running = kl if running is None else 0.9 * running + 0.1 * kl
            progress.update(task, advance=1, kl=f"mean KL {running:.4f}")
    return lens


ESTIMATE_ABOVE_S = 60.0  # training expected to take longer than this is announced after its first step


def _say_estimate(first_step_s: float, steps: int, batch_size: int, context: int, device: torch.device) -> None:
    """A `warning: ...` (minineo.report) when the whole training would take over a minute."""
    total = first_step_s * steps
    if steps < 2 or total <= ESTIMATE_ABOVE_S:
        return
    hours, rest = divmod(round(total), 3600)
    took = f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
    report.warn(f"training the tuned lens will take about {took} ({first_step_s:.1f} s for the first of {steps} "
                f"steps of {batch_size} x {context} tokens on {device}); fewer steps (--steps, steps=), a smaller "
                "--batch-size or --context shorten it, a GPU (--device cuda) speeds it up; Ctrl-C stops it")


def _step(lens: TunedLens, model: Model, tokens: torch.Tensor) -> float:
    """Accumulate the gradient of the summed per-layer KL for one batch (batch, pos); return the mean KL."""
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names=_resid_names)
        target = logits.float().log_softmax(-1)  # (batch, pos, d_vocab)
        p_target = target.exp()
        resid, _ = cache.accumulated_resid()
    total = 0.0
    for layer in range(model.config.n_layers):  # one layer at a time: the (batch, pos, d_vocab) logits are large
        log_probs = lens.unembed(lens.translate(resid[layer], layer), model).log_softmax(-1)
        kl = (p_target * (target - log_probs)).sum(-1).mean()
        kl.backward()
        total += kl.item()
    return total / model.config.n_layers


def _batches(model: Model, corpus: Corpus, batch_size: int, context: int, text_field: str) -> Iterator[torch.Tensor]:
    """Batches (batch, context) of token rows, reading the corpus again from the start when it runs out."""
    device, n_ctx, d_vocab = model.W_E.device, model.config.n_ctx, model.config.d_vocab
    rereadable = isinstance(corpus, (str, os.PathLike)) or iter(corpus) is not corpus
    while True:
        rows, produced = [], 0
        for row in _rows(model, corpus, context, text_field):
            row = torch.as_tensor(row)
            if row.ndim != 1 or row.dtype not in (torch.int64, torch.int32) or not 2 <= row.numel() <= n_ctx:
                raise UserError(f"a corpus row must be a 1-d LongTensor of 2..{n_ctx} token ids, got shape "
                                f"{tuple(row.shape)} {row.dtype}; pack the text with minineo.data.corpus.pack_rows")
            if rows and row.numel() != rows[0].numel():
                raise UserError(f"corpus rows have different lengths ({rows[0].numel()} and {row.numel()}); "
                                "pack them to one length")
            rows.append(row)
            if len(rows) == batch_size:
                batch = torch.stack(rows).to(device, torch.long)
                if batch.min() < 0 or batch.max() >= d_vocab:
                    raise UserError(f"the corpus has token ids outside the vocabulary (0..{d_vocab - 1}); tokenise "
                                    "it with this model's tokenizer")
                yield batch
                rows, produced = [], produced + 1
        if produced == 0:
            what = f"{corpus}" if isinstance(corpus, (str, os.PathLike)) else "the corpus"
            length = rows[0].numel() if rows else context
            had = f" and it has {len(rows)} row(s)" if rows else ""
            raise UserError(f"{what} has too few tokens for one step: a step needs {batch_size} rows of {length} "
                            f"tokens ({batch_size * length} tokens){had}; use a bigger corpus, or a smaller batch "
                            "size or context")
        if not rereadable:
            return


def _rows(model: Model, corpus: Corpus, context: int, text_field: str) -> Iterable[torch.Tensor]:
    if not isinstance(corpus, (str, os.PathLike)):
        return corpus
    from minineo.data.corpus import pack_rows, read_documents  # the streaming reader shared with `minineo harvest`

    return pack_rows(model, read_documents(corpus, text_field=text_field), context)


def progress_bar() -> Progress:
    """A rich progress bar with a running-KL field on stderr, hidden when stderr is not a terminal."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[kl]}"),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=not sys.stderr.isatty(), transient=False)
