"""The one place argument checks live: every public entry point and CLI command checks its arguments here.

Each check takes the value and the argument's name *as the user wrote it* (`layer`, `senders`, `--top`), returns the
value in its canonical form (an int, a torch.dtype, a device, a Path...) and raises minineo's UserError family with a
message that names the argument, the value, the allowed range and the fix:

    checks.layer(0.7, n_layers=2, name="sender layer")
    UserError: sender layer must be an integer in 0..1, got 0.7 (a float); give a whole number such as 0

Rules shared by every check: a bool or a float is never taken as an integer (True is not layer 1, 0.7 is not layer
0); NaN and inf are never numbers in range; a bound said in a message is the bound the check applies. This module
imports only torch and minineo.errors (tests/test_import_graph.py keeps it at the bottom of the layering).
"""

from __future__ import annotations

import collections.abc
import json
import math
import os
import tempfile
import textwrap
from pathlib import Path
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import torch

from minineo.errors import MissingFileError, UnknownNameError, UserError, WrongTypeError

HEAD_INPUTS = ("q", "k", "v")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def describe(value: Any) -> str:
    """A short, safe rendering of a bad value for a message (long values are cut, types said for odd ones)."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    if isinstance(value, bool):
        return f"{text} (a bool)"
    if isinstance(value, float):
        return f"{text} (a float)"
    if isinstance(value, (int, str, type(None))):
        return text
    return f"{text} (a {type(value).__name__})"


def shortened(text: str, limit: int) -> str:
    """`text` (e.g. another library's error message) in at most `limit` characters, whitespace collapsed, cut at a
    word boundary with an ellipsis marking the cut (textwrap.shorten); a single word longer than `limit` is cut."""
    text = " ".join(str(text).split())
    cut = textwrap.shorten(text, limit, placeholder=" …")
    return cut if cut != "…" else text[:limit - 1] + "…"  # "…" alone: the first word is longer than limit


def is_integer(value: Any) -> bool:
    """An int, numpy integer or 0-d integer tensor; never a bool, a float (even 3.0) or a string."""
    if isinstance(value, bool) or isinstance(value, float):
        return False
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.dtype.is_floating_point and not value.dtype.is_complex \
            and value.dtype != torch.bool
    if type(value).__name__ in ("bool_", "bool"):  # numpy.bool_
        return False
    try:
        value.__index__()
    except (AttributeError, TypeError):
        return False
    return True


def _range_text(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"in {low}..{high}" if high >= low else f"in {low}..{high} (an empty range)"
    if low is not None:
        return f"at least {low}"
    if high is not None:
        return f"at most {high}"
    return ""


def integer(value: Any, name: str, *, low: int | None = None, high: int | None = None, fix: str = "") -> int:
    """`value` as an int in low..high (both inclusive, None: unbounded), or a UserError naming `name`.

    Refuses bools, floats (3.0 included: a float index is usually a computed value gone wrong), strings and None.
    """
    where = _range_text(low, high)
    hint = f"; {fix}" if fix else ""
    if not is_integer(value):
        example = low if low is not None else 0
        raise WrongTypeError(f"{name} must be an integer{' ' + where if where else ''}, got {describe(value)}; give a "
                             f"whole number such as {example}{hint}")
    number = int(value.__index__() if not isinstance(value, torch.Tensor) else value.item())
    if (low is not None and number < low) or (high is not None and number > high):
        raise UserError(f"{name} must be {where}, got {number}{hint}")
    return number


def count(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None, fix: str = "") -> int:
    """A positive count (a number of tokens, rows, steps, `--top`): an int >= minimum (default 1), never a slice."""
    return integer(value, name, low=minimum, high=maximum, fix=fix)


def number(value: Any, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, fix: str = "") -> float:
    """A finite real number in [low, high] (open ends with low_open / high_open); ints are fine, bools, NaN, inf not."""
    ops = []
    if low is not None:
        ops.append(f"greater than {low}" if low_open else f"at least {low}")
    if high is not None:
        ops.append(f"less than {high}" if high_open else f"at most {high}")
    where = " and ".join(ops)
    spaced = " " + where if where else ""
    hint = f"; {fix}" if fix else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not is_integer(value) and not (
            isinstance(value, torch.Tensor) and value.ndim == 0 and value.dtype.is_floating_point) \
            and not (type(value).__module__ == "numpy" and type(value).__name__.startswith("float")):
        raise WrongTypeError(f"{name} must be a number{spaced}, got {describe(value)}{hint}")
    real = float(value)
    if not math.isfinite(real):
        raise UserError(f"{name} must be a finite number{spaced}, got {real}{hint}")
    if low is not None and (real <= low if low_open else real < low) or \
            high is not None and (real >= high if high_open else real > high):
        raise UserError(f"{name} must be {where}, got {value}{hint}")
    return real


_MISSING = object()


def json_integer(document: Mapping[str, Any], key: str, where: str, *, low: int | None = None,
                 default: Any = _MISSING) -> int:
    """A file's integer field (config.json's n_layer...): present unless `default` is given, an integer (not a bool,
    not 12.0) and at least `low`; the message names the file and the field."""
    if key not in document and default is not _MISSING:
        return default
    value = document.get(key)
    if not is_integer(value):
        raise UserError(f"{where} field {key!r} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise UserError(f"{where} field {key!r} must be at least {low}, got {value}")
    return int(value)


def json_number(document: Mapping[str, Any], key: str, where: str, *, low: float | None = None, low_open: bool = False,
                default: Any = _MISSING) -> float:
    """A file's real-number field (config.json's layer_norm_epsilon): finite, a number (not a bool or a string),
    above `low` (or at least it, without low_open); the message names the file and the field."""
    if key not in document and default is not _MISSING:
        return default
    return number(document.get(key), f"{where} field {key!r}", low=low, low_open=low_open)


def rule_text(rule: str) -> str:
    """'>= 2' -> 'at least 2', '0..1' -> 'between 0 and 1', '0 or >= 2' -> '0 or at least 2'."""
    if " or " in rule:
        return " or ".join(rule_text(part) for part in rule.split(" or "))
    rule = rule.strip()
    if ".." in rule:
        return "between {} and {}".format(*rule.split(".."))
    for op, words in ((">=", "at least"), ("<=", "at most"), (">", "greater than"), ("<", "less than")):
        if rule.startswith(op):
            return f"{words} {rule[len(op):].strip()}"
    return rule


def allowed(value: float, rule: str) -> bool:
    """`rule`: '>= N', '> N', '<= N', '< N', 'A..B' (inclusive), or alternatives joined by ' or ' ('0 or >= 2')."""
    if " or " in rule:
        return any(allowed(value, part) for part in rule.split(" or "))
    rule = rule.strip()
    if ".." in rule:
        low, high = (float(x) for x in rule.split(".."))
        return low <= value <= high
    for op, test in ((">=", lambda a, b: a >= b), ("<=", lambda a, b: a <= b), (">", lambda a, b: a > b),
                     ("<", lambda a, b: a < b)):
        if rule.startswith(op):
            return test(value, float(rule[len(op):]))
    return value == float(rule)


def in_rule(value: Any, name: str, rule: str, why: str = "") -> Any:
    """A number that satisfies `rule` (see `allowed`), e.g. in_rule(lr, "--lr", "> 0"); None passes (not given).

    A bool is refused; NaN and inf never pass. The message says the rule in words, with `why` in parentheses.
    """
    if value is None:
        return None
    because = f" ({why})" if why else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WrongTypeError(f"{name} must be a number {rule_text(rule)}{because}, got {describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{name} must be a finite number {rule_text(rule)}{because}, got {value}")
    if not allowed(value, rule):
        raise UserError(f"{name} must be {rule_text(rule)}{because}, got {value}")
    return value


def one_of(value: Any, name: str, choices: Collection[str], fix: str = "") -> str:
    """A string among `choices` (an UnknownNameError listing them otherwise; a WrongTypeError for a non-string)."""
    listed = ", ".join(repr(c) for c in choices)
    hint = f"; {fix}" if fix else ""
    if not isinstance(value, str):
        raise WrongTypeError(f"{name} must be one of {listed}, got {describe(value)}{hint}")
    if value not in choices:
        raise UnknownNameError(f"{name}={value!r} is not one of {listed}{hint}")
    return value


def distinct(items: Iterable[Any], name: str) -> list[Any]:
    """The items of a list argument or option (`--models a b`, `--heads 1.0,1.2`), each given once: a repeated item
    is a UserError naming `name` and the item, never done twice or dropped (docs/outputs.md)."""
    items = list(items)
    for i, item in enumerate(items):
        if item in items[:i]:
            shown = repr(os.fspath(item)) if isinstance(item, os.PathLike) else repr(item)
            raise UserError(f"{name} names {shown} twice; give each item once")
    return items


def function(value: Any, name: str, takes: str = "") -> Any:
    """A callable (a metric, a patch function); `takes` says what it is called with, for the message."""
    if not callable(value):
        said = f" ({takes})" if takes else ""
        raise WrongTypeError(f"{name} must be a function{said}, got {describe(value)}")
    return value


def index(value: Any, size: int, name: str, *, signed: bool = False, fix: str = "") -> int:
    """An index into `size` items (a row of a batch, a position of a prompt): 0..size-1, or with `signed` also
    Python's -size..-1 from the end; returned non-negative."""
    low = -size if signed else 0
    number = integer(value, name, low=low, high=size - 1, fix=fix)
    return number + size if number < 0 else number


def layer_boundary(value: Any, n_layers: int, name: str = "stop_at_layer") -> int:
    """A point between blocks, TransformerLens's stop_at_layer: 0..n_layers (L: before block L; n_layers: after the
    last), or -n_layers..-1 counted from the end (-1: before the last block); returned non-negative."""
    number = integer(value, name, low=-n_layers, high=n_layers,
                     fix=f"L runs blocks 0..L-1 and returns blocks.L.resid_pre; {n_layers}: the last resid_post; "
                         "-1: before the last block; None for the logits")
    return number + n_layers if number < 0 else number


def layer(value: Any, n_layers: int, name: str = "layer", *, fix: str = "") -> int:
    """A layer index in 0..n_layers-1 (no negative indexing: -1 is refused, not the last layer)."""
    return integer(value, name, low=0, high=n_layers - 1, fix=fix or f"this model has layers 0..{n_layers - 1}")


def head(value: Any, n_heads: int, name: str = "head", *, fix: str = "") -> int:
    """A head index in 0..n_heads-1."""
    return integer(value, name, low=0, high=n_heads - 1, fix=fix or f"this model has heads 0..{n_heads - 1}")


def layer_head(pair: Any, n_layers: int, n_heads: int, name: str = "head") -> tuple[int, int]:
    """A (layer, head) pair of ints, each in range: `(0.7, 3)` is refused, not truncated to (0, 3)."""
    shape = f"a (layer, head) pair with layer in 0..{n_layers - 1} and head in 0..{n_heads - 1}"
    if isinstance(pair, (str, bytes, torch.Tensor)) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise WrongTypeError(f"{name} must be {shape}, e.g. (0, 1); got {describe(pair)}")
    layer(pair[0], n_layers, f"{name} {tuple(pair)!r}: the layer")
    head(pair[1], n_heads, f"{name} {tuple(pair)!r}: the head")
    return int(pair[0]), int(pair[1])


def heads(value: Any, n_layers: int, n_heads: int, name: str = "heads", *, allow_empty: bool = False) -> list[tuple[int, int]]:
    """A collection of (layer, head) pairs, each checked by layer_head; a single pair is not a collection."""
    if isinstance(value, (str, bytes, torch.Tensor)) or not isinstance(value, Iterable):
        raise WrongTypeError(f"{name} must be a collection of (layer, head) pairs, e.g. [(0, 1), (1, 3)]; got "
                             f"{describe(value)}")
    items = list(value)
    if items and len(items) == 2 and all(is_integer(x) for x in items):
        raise WrongTypeError(f"{name}={describe(value)} is one pair, not a collection of pairs; write [{tuple(items)}]")
    if not items and not allow_empty:
        raise UserError(f"{name} is empty; give at least one (layer, head) pair, e.g. [(0, 1)]")
    return [layer_head(item, n_layers, n_heads, f"{name} item") for item in items]


def integer_pairs(value: Any, name: str) -> list[tuple[int, int]]:
    """A collection of (layer, head) pairs of integers, unchecked against a model (see existing_head): a float or bool
    inside a pair is refused, not truncated; `name` is the argument ('senders')."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise WrongTypeError(f"{name}={value!r} must be a collection of (layer, head) pairs, e.g. [(0, 1), (1, 3)]")
    items = list(value)
    for item in items:
        if isinstance(item, (str, bytes, torch.Tensor)) or not isinstance(item, Sequence) or len(item) != 2 \
                or not all(is_integer(x) for x in item):
            raise WrongTypeError(f"{name}={value!r} must be a collection of (layer, head) pairs of integers, e.g. "
                                 f"[(0, 1), (1, 3)]; {describe(item)} is not one")
    return [(int(layer), int(head)) for layer, head in items]


def existing_head(layer: int, head: int, n_layers: int, n_heads: int, what: str = "") -> tuple[int, int]:
    """(layer, head), integers already, that exist in a model of n_layers x n_heads; `what` says whose head it is
    ('sender', 'receiver') in the message."""
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        whose = f"{what} " if what else ""
        raise UserError(f"{whose}head ({layer}, {head}) does not exist in this {n_layers}-layer, {n_heads}-head model; "
                        f"give layers 0..{n_layers - 1} and heads 0..{n_heads - 1}")
    return layer, head


def head_input(value: Any, name: str = "input") -> str:
    """A per-head input letter: 'q', 'k' or 'v'."""
    return one_of(value, name, HEAD_INPUTS, "q (queries), k (keys) or v (values)")


def site(value: Any, known: Collection[str], name: str = "site") -> str:
    """An activation name among `known` (e.g. minineo.all_names(config)); the close matches are said."""
    if not isinstance(value, str):
        raise WrongTypeError(f"{name} must be an activation name (a string such as 'blocks.0.attn.pattern'), got "
                             f"{describe(value)}")
    if value not in known:
        import difflib

        close = difflib.get_close_matches(value, list(known), n=5, cutoff=0.6)
        hint = f"; did you mean one of {close}?" if close else "; see minineo.record.sites for the table"
        raise UnknownNameError(f"{name}={value!r} is not an activation name of this model{hint}")
    return value


def token_ids(tokens: torch.Tensor, d_vocab: int | None, name: str = "tokens") -> torch.Tensor:
    """An integer id tensor, non-empty, every id in 0..d_vocab-1 (the tensor itself is returned). With d_vocab None
    (a container of ids that knows no model, such as discovery's Pairs) only negative ids are refused; the upper
    bound is checked where the ids meet a model."""
    if not isinstance(tokens, torch.Tensor):
        raise WrongTypeError(f"{name} must be a tensor of token ids, got {describe(tokens)}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise WrongTypeError(f"{name} must be integer ids, got a {tokens.dtype} tensor; convert with .long()")
    if tokens.numel() == 0:
        raise UserError(f"{name} is empty (shape {tuple(tokens.shape)}); give at least one token")
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or d_vocab is not None and high >= d_vocab:
        bad = low if low < 0 else high
        where = ", ".join(str(i) for i in (tokens == bad).nonzero()[0].tolist())
        vocabulary = f"the vocabulary (0..{d_vocab - 1})" if d_vocab is not None else "the ids (0 and above)"
        raise UserError(f"{name}: token id {bad} at index ({where}) is outside {vocabulary}")
    return tokens


def token_batch(tokens: Any, d_vocab: int, name: str = "tokens") -> torch.Tensor:
    """Token ids as a LongTensor (batch, pos): a tensor of shape (batch, pos) or (pos,), or a (nested) list of ids;
    every id in 0..d_vocab-1. `name` is the argument as the caller's user wrote it."""
    if not isinstance(tokens, torch.Tensor):
        if isinstance(tokens, (list, tuple)) and (not tokens or all(isinstance(r, (list, tuple)) and not r for r in tokens)):
            raise UserError(f"{name} are empty ({tokens!r}); give at least one token id or a non-empty text")
        if isinstance(tokens, bool) or not isinstance(tokens, (list, tuple, int)) and type(tokens).__module__ != "numpy":
            raise WrongTypeError(f"{name} must be token ids (a LongTensor of shape (batch, pos) or (pos,), a list of "
                                 f"ids) or a text, got {describe(tokens)}")
        try:
            tokens = torch.as_tensor(tokens)
        except (TypeError, ValueError, RuntimeError, OverflowError) as err:
            raise UserError(f"{name} must be integer ids (a LongTensor of shape (batch, pos) or (pos,)): {err}") from err
    if tokens.numel() == 0:
        raise UserError(f"{name} are empty (shape {tuple(tokens.shape)}); give at least one token")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise UserError(
            f"{name} must be integer ids, got a {tokens.dtype} tensor; convert with {name}.long() "
            "(to feed embeddings instead, patch the 'embed' site)"
        )
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise UserError(f"{name} must have shape (batch, pos) or (pos,), got {tuple(tokens.shape)}")
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= d_vocab:
        bad = low if low < 0 else high
        batch, pos = (tokens == bad).nonzero()[0].tolist()
        raise UserError(
            f"{name}: token id {bad} at batch {batch}, position {pos} is outside the vocabulary (0..{d_vocab - 1})"
        )
    return tokens.long()


def attention_mask(mask: Any, token_shape: Sequence[int], device: torch.device | str | None = None, past: int = 0,
                   name: str = "attention_mask") -> torch.Tensor:
    """The attention mask as a 0/1 LongTensor (batch, past + pos) for tokens of `token_shape` (batch, pos).

    A row with no 1 (no real token) is refused: nothing in it can be attended to, so its outputs would be an
    average over padding (HF returns such numbers silently), not a model's prediction for anything.
    """
    try:
        mask = torch.as_tensor(mask, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise WrongTypeError(f"{name} must be a tensor of 0 (padding) and 1 (real token), got {describe(mask)}: "
                             f"{err}") from None
    expected = (token_shape[0], past + token_shape[1])
    if mask.ndim == 1 and token_shape[0] == 1:
        mask = mask[None]
    if tuple(mask.shape) != expected:
        raise UserError(f"{name} has shape {tuple(mask.shape)} but the tokens need {expected}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise UserError(f"{name} must hold only 0 (padding) and 1 (real token)")
    empty = (mask.sum(-1) == 0).nonzero().flatten().tolist() if mask.numel() else []
    if empty and mask.shape[-1]:
        rows = ", ".join(map(str, empty[:8])) + (", ..." if len(empty) > 8 else "")
        raise UserError(f"{name} row{'s' if len(empty) > 1 else ''} {rows} (of {mask.shape[0]}) "
                        f"{'have' if len(empty) > 1 else 'has'} no 1: no real token to attend to, so its outputs "
                        "would mean nothing; drop the row, or mark its real tokens with 1")
    return mask.long()


def position_ids(value: Any, token_shape: Sequence[int], n_ctx: int, device: torch.device | str | None = None,
                 name: str = "position_ids") -> torch.Tensor:
    """Position ids as a LongTensor (batch or 1, pos) for tokens of `token_shape`, each in 0..n_ctx-1."""
    try:
        positions = torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{name} must be integers of shape (batch, pos) or (pos,): {err}") from err
    if positions.dtype.is_floating_point or positions.dtype.is_complex or positions.dtype == torch.bool:
        raise UserError(f"{name} must be integer positions, got a {positions.dtype} tensor; convert with .long()")
    if positions.ndim == 1:
        positions = positions[None]
    batch, pos = token_shape
    if positions.ndim != 2 or positions.shape[1] != pos or positions.shape[0] not in (1, batch):
        raise UserError(
            f"{name} has shape {tuple(positions.shape)} but the tokens have shape {tuple(token_shape)}; "
            f"give ({batch}, {pos}), (1, {pos}) or ({pos},)"
        )
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= n_ctx):
        bad = int(positions.min()) if int(positions.min()) < 0 else int(positions.max())
        raise UserError(f"position id {bad} is outside the model's positions 0..{n_ctx - 1} (n_ctx={n_ctx})")
    return positions.long()


def token_id(value: Any, d_vocab: int, name: str = "token", *, fix: str = "a token id of this model's vocabulary") -> int:
    """One token id in 0..d_vocab-1."""
    return integer(value, name, low=0, high=d_vocab - 1, fix=fix)


def context_length(value: Any, n_ctx: int, name: str = "context", *, minimum: int = 2) -> int:
    """A number of positions per row in minimum..n_ctx (a loss needs 2: a token and the next one)."""
    return integer(value, name, low=minimum, high=n_ctx,
                   fix=f"the model reads at most n_ctx={n_ctx} positions" + (
                       f" and a row needs {minimum} (a token and the next one to predict)" if minimum == 2 else ""))


def dtype(value: Any, name: str = "dtype", choices: dict[str, torch.dtype] = DTYPES) -> torch.dtype:
    """A torch dtype among `choices` (default: the floating types a model's weights can have), or its name."""
    names = ", ".join(choices)
    if isinstance(value, str):
        named = choices.get(value.removeprefix("torch."))
        if named is None:
            raise UnknownNameError(f"{name} {value!r} is not one of {names}; e.g. {name}=torch.bfloat16 or 'bfloat16'")
        return named
    if not isinstance(value, torch.dtype) or value not in choices.values():
        raise WrongTypeError(f"{name} {describe(value)} cannot hold a model's weights; use one of {names} "
                             "(a torch.dtype or its name)")
    return value


def device(value: Any, name: str = "device") -> torch.device:
    """A device this torch can use ('cpu', 'cuda', 'cuda:1', 'mps' or a torch.device)."""
    if isinstance(value, bool) or not isinstance(value, (str, torch.device, int)):
        raise WrongTypeError(f"{name} must be a device name such as 'cpu' or 'cuda:0', got {describe(value)}")
    try:
        result = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"{name} {value} is not a device; use 'cpu', 'cuda', 'cuda:1' or 'mps'") from None
    if result.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UserError(f"{name} {value} is not available ({why}); use --device cpu (device='cpu')")
        if result.index is not None and result.index >= torch.cuda.device_count():
            raise UserError(f"{name} {value} does not exist: this machine has {torch.cuda.device_count()} "
                            f"CUDA device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif result.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{name} 'mps' is not available on this machine; use 'cpu'")
    elif result.type not in ("cpu", "meta"):
        raise UserError(f"{name} {value} is not supported; use 'cpu', 'cuda', 'cuda:1' or 'mps'")
    return result


def tensor(value: Any, name: str, shape: Sequence[int | None], *, dtype: torch.dtype | None = None,
           cast: bool = False, finite: bool = False, dims: str = "") -> torch.Tensor:
    """A tensor of `shape` (None: any size on that axis); with `dtype`, cast to it when `cast` (what `patch=` does:
    a float16 patch into a float32 site), else a dtype of another kind is refused. `finite`: NaN / inf refused.
    `dims` names the axes in the message, e.g. '(batch, pos, d_model)'."""
    want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
    said = f"{dims} = {want}" if dims else want
    if not isinstance(value, torch.Tensor):
        raise WrongTypeError(f"{name} must be a tensor of shape {said}, got {describe(value)}")
    if value.ndim != len(shape) or any(s is not None and s != got for s, got in zip(shape, value.shape)):
        raise UserError(f"{name} has shape {tuple(value.shape)} but must have shape {said}")
    if dtype is not None and value.dtype != dtype:
        same_kind = value.dtype.is_floating_point == dtype.is_floating_point and value.dtype != torch.bool
        if not (cast and same_kind):
            raise WrongTypeError(f"{name} is a {value.dtype} tensor but must be {dtype}; convert it with .to({dtype})")
        value = value.to(dtype)
    if finite and value.is_floating_point() and not bool(value.isfinite().all()):
        raise UserError(f"{name} holds NaN or inf values; give finite numbers")
    return value


def existing_path(value: Any, name: str, *, kind: str = "any", fix: str = "") -> Path:
    """A path that exists: kind 'file', 'folder' or 'any'; a MissingFileError naming the argument otherwise."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise WrongTypeError(f"{name} must be a path (a str or pathlib.Path), got {describe(value)}")
    path = Path(value).expanduser()
    hint = f"; {fix}" if fix else ""
    if not path.exists():
        raise MissingFileError(f"{name} {path} does not exist{hint}")
    if kind == "file" and not path.is_file():
        raise UserError(f"{name} {path} is a folder, not a file{hint}")
    if kind == "folder" and not path.is_dir():
        raise UserError(f"{name} {path} is a file, not a folder{hint}")
    return path


def json_object(path: Path, what: str = "", fix: str = "download it again or fix the file") -> dict:
    """The JSON object (a dict) a file holds: MissingFileError when it is not there, UserError when it is not JSON
    or holds something else (a list, a number); `what` says what the object is ('model settings'), `fix` the cure."""
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; {fix}")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); {fix}") from err
    if not isinstance(document, dict):
        raise UserError(f"{path} holds a {type(document).__name__}, not a JSON object{' of ' + what if what else ''}; "
                        f"{fix}")
    return document


def floating_tensors(tensors: Mapping[str, torch.Tensor], where: Any, fix: str) -> None:
    """A file's weights (an SAE's, a tuned lens's) are floating-point tensors: integer-typed ones are refused, not
    cast (a cast would hide the damage); the message names the file (`where`) and each bad tensor's dtype."""
    integer = [f"{name} is {t.dtype}" for name, t in tensors.items() if not t.is_floating_point()]
    if integer:
        raise UserError(f"{where}: {', '.join(integer)}, not a floating-point tensor; {fix}")


def writable_file(value: Any, name: str, suffixes: tuple[str, ...] = (), default_suffix: str = "") -> Path:
    """A file to write: not a folder, in a folder that exists and is writable; with `suffixes` its extension must be
    one of them (a name without one gets `default_suffix`)."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise WrongTypeError(f"{name} must be a path (a str or pathlib.Path), got {describe(value)}")
    path = Path(value).expanduser()
    if path.is_dir():
        raise UserError(f"{name} {path} is a directory; give a file name, e.g. {path / ('out' + (default_suffix or ''))}")
    if suffixes:
        if not path.suffix and default_suffix:
            path = path.with_name(path.name + default_suffix)
        if path.suffix.lower() not in suffixes:
            raise UserError(f"{name} {path} has the extension {path.suffix!r}, which cannot be written; use one of "
                            f"{', '.join(suffixes)}")
    folder = path.parent
    if not folder.is_dir():
        what_it_is = "is a file" if folder.exists() else "does not exist"
        raise UserError(f"cannot write {name} {path}: the folder {folder} {what_it_is}; create the folder first or "
                        "give another path")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(f"cannot write {name} {path}: the folder {folder} is not writable ({err.strerror or err}); "
                        "give a path in a folder you can write to") from None
    return path


def writable_folder(value: Any, name: str) -> Path:
    """A folder to write into (new or existing): not a file, and its parent folder exists and is writable. A missing
    parent is refused, not created: a mistyped path must not grow a tree of folders somewhere else."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise WrongTypeError(f"{name} must be a path (a str or pathlib.Path), got {describe(value)}")
    if str(value) == "":
        raise UserError(f"{name} is an empty path; give a folder name, e.g. out")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{name} {path} is a file; give a folder (new or empty)")
    parent = path.absolute().parent
    if not path.exists():
        if not parent.is_dir():
            what_it_is = "is a file" if parent.exists() else "does not exist"
            raise UserError(f"cannot write {name} {path}: the folder {parent} {what_it_is}; create the folder first "
                            "or give another path")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"cannot write {name} {path}: the folder {parent} is not writable; give a path in a "
                            "folder you can write to")
    return path


def not_overwriting(path: Path, name: str, is_ours: bool, what: str = "this model's") -> Path:
    """A path that either does not exist or holds `what` artefact (`is_ours`, decided by the caller from the file's
    recorded identity): another artefact is never overwritten silently."""
    if path.exists() and not is_ours:
        raise UserError(f"{name} {path} already holds something that is not {what} output; give a new path or "
                        "remove it first")
    return path


# ---- argument types from the annotations: @checks.typed ------------------------------------------------------------

_CONTAINERS = {
    "list": (list, tuple), "tuple": (list, tuple), "Sequence": (list, tuple, range), "set": (set, frozenset, list, tuple),
    "frozenset": (set, frozenset, list, tuple), "dict": (dict,), "Mapping": (Mapping,), "Iterable": (Iterable,),
    "Iterator": (Iterable,), "Collection": (Collection,),
}
_WORDS = {"int": "an integer", "float": "a number", "bool": "True or False", "str": "a string", "None": "None",
          "torch.Tensor": "a tensor", "Tensor": "a tensor", "Path": "a path", "os.PathLike": "a path",
          "PathLike": "a path", "Callable": "a function", "torch.dtype": "a torch.dtype", "torch.device": "a device",
          "bytes": "bytes"}


# minineo's classes an annotation may name without the module importing them at run time (TYPE_CHECKING)
MININEO_CLASSES = {"Model", "Cache", "Config", "Tokenizer", "TunedLens", "SAE", "IOIDataset", "FactoredMatrix", "KVCache",
                   "Graph", "Pairs", "View"}


def _split_top(text: str, sep: str = "|") -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[(" and 1 or char in "])" and -1 or 0
        if char == sep and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return parts + [current.strip()]


def _alternatives(annotation: str) -> list[str]:
    annotation = annotation.strip().strip("'\"")
    if annotation.startswith("Optional[") and annotation.endswith("]"):
        return _alternatives(annotation[len("Optional["):-1]) + ["None"]
    if annotation.startswith("Union[") and annotation.endswith("]"):
        return [alt for part in _split_top(annotation[len("Union["):-1], ",") for alt in _alternatives(part)]
    parts = _split_top(annotation)
    return parts if len(parts) == 1 else [alt for part in parts for alt in _alternatives(part)]


def _test_for(alternative: str, namespace: dict) -> tuple[Any, str] | None:
    """(predicate, words) for one alternative of an annotation, or None when it is not understood (not checked)."""
    base = alternative.split("[", 1)[0].strip()
    if base in ("Any", "object", ""):
        return None
    if base == "None":
        return (lambda v: v is None), "None"
    if base == "int":
        return is_integer, "an integer"
    if base == "float":
        return (lambda v: not isinstance(v, bool) and (isinstance(v, (int, float)) or is_integer(v)
                                                       or type(v).__name__.startswith("float"))), "a number"
    if base == "bool":
        return (lambda v: isinstance(v, bool) or type(v).__name__ == "bool_"), "True or False"
    if base == "str":
        return (lambda v: isinstance(v, str)), "a string"
    if base in ("torch.Tensor", "Tensor"):
        return (lambda v: isinstance(v, torch.Tensor)), "a tensor"
    if base in ("Path", "os.PathLike", "PathLike"):
        return (lambda v: isinstance(v, (str, os.PathLike))), "a path"
    if base in ("Callable", "collections.abc.Callable", "typing.Callable"):
        return callable, "a function"
    if base == "torch.dtype":
        return (lambda v: isinstance(v, torch.dtype)), "a torch.dtype"
    if base == "torch.device":
        return (lambda v: isinstance(v, torch.device)), "a torch.device"
    if base == "torch.Generator":
        return (lambda v: isinstance(v, torch.Generator)), "a torch.Generator"
    if base in _CONTAINERS:
        kinds = _CONTAINERS[base]
        return (lambda v: isinstance(v, kinds) and not isinstance(v, (str, bytes))), f"a {base.lower()}"
    target = namespace.get(base.split(".")[0])
    for part in base.split(".")[1:]:  # a dotted name: minineo.Model
        target = getattr(target, part, None)
    base = base.rsplit(".", 1)[-1]
    if getattr(target, "__origin__", None) is collections.abc.Callable:  # an alias of Callable[...] (Metric)
        return callable, "a function"
    if isinstance(target, type) and target.__module__.startswith("minineo"):
        return (lambda v: isinstance(v, target)), f"a {base}"
    if target is None and base in MININEO_CLASSES:  # imported only for type checking: known by its class name
        return (lambda v: any(k.__name__ == base and k.__module__.startswith("minineo") for k in type(v).__mro__)), \
            f"a minineo {base}"
    return None  # a type alias (Metric, TokenInput...), a name imported only for type checking, a generic: not checked


def _as_int(value: Any, alternatives: list) -> int | None:
    """A numpy integer or 0-d integer tensor given for an `int` argument, as a Python int (so the function, and what
    it hands on to random.Random, json, range..., sees an int); None when the value is kept as it is (a plain int,
    or a value another alternative takes as it is, such as a 0-d tensor where `torch.Tensor` is allowed too)."""
    if isinstance(value, bool) or not is_integer(value) or all(test is not is_integer for test, _ in alternatives):
        return None
    if any(test is not is_integer and test(value) for test, _ in alternatives):
        return None
    return int(value.item() if isinstance(value, torch.Tensor) else value.__index__())


def typed(function=None, *, own: tuple[str, ...] = ()):
    """Check a public function's arguments against its annotations before it runs (a WrongTypeError naming the argument
    otherwise): `int` takes no bool and no float, `float` takes ints but no bool, `bool` takes only True / False,
    `str`, `torch.Tensor`, paths, containers and minineo's own classes are checked by type; aliases (Metric,
    TokenInput) and names imported only for type checking are left to the function. Ranges are the function's job
    (checks.layer, checks.count, ...). `@checks.typed(own=("stop_at_layer",))` leaves those arguments wholly to
    the function (its own message states the range for a wrong type too). A numpy integer or 0-d integer tensor
    given for an `int` is an integer (docs/boundary.md): the function receives it as a Python int."""
    import functools
    import inspect

    if function is None:
        return lambda wrapped: typed(wrapped, own=own)

    signature = inspect.signature(function)
    tests: dict[str, list] | None = None

    def build() -> dict[str, list]:
        found = {}
        namespace = getattr(function, "__globals__", {})
        for name, param in signature.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name in ("self", "cls") or name in own:
                continue
            if param.annotation is inspect.Parameter.empty:
                continue
            annotation = param.annotation if isinstance(param.annotation, str) else inspect.formatannotation(param.annotation)
            alternatives = [_test_for(alt, namespace) for alt in _alternatives(annotation)]
            if alternatives and all(alt is not None for alt in alternatives):
                found[name] = alternatives
        return found

    @functools.wraps(function)
    def checked(*args, **kwargs):
        nonlocal tests
        if tests is None:
            tests = build()
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            raise WrongTypeError(f"{function.__qualname__}: {err}") from None
        converted = False
        for name, value in bound.arguments.items():
            alternatives = tests.get(name)
            if alternatives and not any(test(value) for test, _ in alternatives):
                words = " or ".join(dict.fromkeys(words for _, words in alternatives))
                raise WrongTypeError(f"{function.__qualname__}: {name} must be {words}, got {describe(value)}")
            if alternatives and type(value) is not int and _as_int(value, alternatives) is not None:
                bound.arguments[name] = _as_int(value, alternatives)
                converted = True
        return function(*bound.args, **bound.kwargs) if converted else function(*args, **kwargs)

    return checked


def fields(instance: Any) -> None:
    """A dataclass's fields against their annotations (as @typed does for a function's arguments), each named."""
    import dataclasses
    import sys

    namespace = vars(sys.modules[type(instance).__module__])
    for field in dataclasses.fields(instance):
        annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
        alternatives = [_test_for(alt, namespace) for alt in _alternatives(annotation)]
        value = getattr(instance, field.name)
        if alternatives and all(alt is not None for alt in alternatives) and not any(t(value) for t, _ in alternatives):
            words = " or ".join(dict.fromkeys(words for _, words in alternatives))
            raise WrongTypeError(f"{type(instance).__name__}: {field.name} must be {words}, got {describe(value)}")


SMALL_GAP = 0.1  # metric units (nats of logit difference): below this, normalising by the gap magnifies noise
SMALL_GAP_SHARE = 0.01  # or below 1% of the larger of the two values' magnitudes


def metric_gap_warnings(clean: float, corrupted: float, clean_name: str = "m(clean)",
                        corrupted_name: str = "m(corrupted)") -> list[str]:
    """The warnings (messages; the caller says them through minineo.report.warn) for numbers normalised by
    (value - corrupted) / (clean - corrupted): one when the gap |clean - corrupted| is below SMALL_GAP metric units
    or below SMALL_GAP_SHARE of max(|clean|, |corrupted|) (the normalised numbers then divide noise by almost
    nothing), one when clean < corrupted (the task's direction is reversed: 1 and 0 swap meaning, and a "faithful"
    circuit is one that prefers the wrong answer). [] for a gap of a clear sign and size. The one rule of
    `minineo discover`, minineo.discovery and path patching."""
    said = []
    gap = clean - corrupted
    if abs(gap) < max(SMALL_GAP, SMALL_GAP_SHARE * max(abs(clean), abs(corrupted))):
        said.append(f"{clean_name} {clean:+.3f} and {corrupted_name} {corrupted:+.3f} differ by only {abs(gap):.3f} "
                    f"(under {SMALL_GAP:g} metric units or 1% of their size), so the normalised numbers, divided by "
                    "that gap, are unreliable; choose prompts and answers whose runs differ clearly")
    if gap < 0:
        said.append(f"{clean_name} {clean:+.3f} is below {corrupted_name} {corrupted:+.3f}: the task's direction is "
                    "reversed (the clean run prefers the answer less than the corrupted run does), so 1 and 0 of the "
                    "normalised numbers swap meaning; check the answer and the wrong answer (a leading space?), or "
                    "swap them")
    return said
