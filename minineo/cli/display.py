"""How the command line shows tokens and tables: visible whitespace and bytes, plurals, titled tables."""

from __future__ import annotations

import torch
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


def token_text(m, token_id: int) -> str:
    """One token's text as `m.to_string([token_id])` decodes it, except where that gives '�' for bytes that are
    not valid UTF-8 on their own: then the token's bytes, each undecodable one as a lone surrogate (Python's
    surrogateescape) that `visible` and `show` write as \\xNN, so distinct byte tokens look distinct."""
    text = m.to_string([int(token_id)])
    raw = m.tokenizer.token_bytes(token_id) if "\ufffd" in text else None
    return text if raw is None else raw.decode("utf-8", "surrogateescape")


def token_texts(m, tokens) -> list[str]:
    """`token_text` of each token of a (pos,) sequence."""
    return [token_text(m, t) for t in torch.as_tensor(tokens).flatten().tolist()]


def visible(text: str) -> str:
    """repr's escapes without the quotes (a newline is \\n), and an undecodable byte from `token_text` as \\xNN."""
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else repr(c)[1:-1] for c in text)


SHOWN = 60  # characters of a user's string (an answer, a prompt) echoed back; the rest is counted, not printed


def show(text: str, limit: int = SHOWN) -> str:
    """A token's text with whitespace and undecodable bytes made visible (a space is ␣, a newline \\n, a byte that
    is not UTF-8 on its own \\xNN), safe for rich markup; past `limit` characters cut, with the length said."""
    shown = visible(text[:limit]).replace(" ", "␣")
    return escape(shown if len(text) <= limit else f"{shown}… ({len(text)} characters)")


def plain_token(m, token_id: int) -> str:
    """A token's text as `show` writes it (a space is ␣), without rich's markup escapes: for a page or a plot."""
    return visible(token_text(m, token_id)).replace(" ", "␣")


def compared_on(m, answer: str, wrong: str, answer_id: int, wrong_id: int) -> str:
    """What a logit difference of two answers reads, for a page: "' Mary' over ' John' (compared on M vs J, their
    first differing tokens)"; answers past 40 characters are cut (`clip`)."""
    return (f"{clip(answer)} over {clip(wrong)} (compared on {plain_token(m, answer_id)} vs "
            f"{plain_token(m, wrong_id)}, their first differing tokens)")


def show_token(m, token_id: int) -> str:
    """`show` of one token id's `token_text`."""
    return show(token_text(m, token_id))


def clip(text: str, limit: int = 40) -> str:
    """A user's string (a prompt, an answer) for a message: its first `limit` characters, quoted, and its length
    when it is longer (a 15 KB --answer is never echoed whole)."""
    return repr(text) if len(text) <= limit else f"{text[:limit] + '…'!r} ({len(text)} characters)"


def quote(text: str, limit: int = 40) -> str:
    """`clip` safe for rich markup: a prompt for a title or a printed note."""
    return escape(clip(text, limit))


def number(value, digits: int = 3, signed: bool = False) -> str:
    """`value` (a float, int or one-element tensor) to `digits` decimals, with its sign always shown when `signed`; a
    value that rounds to zero prints as 0.000 (+0.000 when signed), never -0.000."""
    text = f"{float(value):.{digits}f}"
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    return ("+" + text) if signed and not text.startswith(("-", "nan", "inf")) else text


def signed(value, digits: int = 3) -> str:
    """number(value, digits, signed=True): +0.250, -1.500, +0.000."""
    return number(value, digits, signed=True)


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 token', '2 tokens' (`many` for irregular plurals: plural(n, "process", "processes"))."""
    return f"{n} {word if n == 1 else many or word + 's'}"


class _TitledTable(Table):
    """A Table whose title (rich markup), when wider than the table, is its own line above it: rich wraps a
    title to the table's width, which breaks a narrow table's title into a column of fragments."""

    def __init__(self, title: str):
        super().__init__()
        self.heading = title

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        heading = Text.from_markup(self.heading, style="table.title")
        self.title = None
        if heading.cell_len <= min(Measurement.get(console, options, self).maximum, options.max_width):
            self.title = heading
        else:
            yield heading
        yield from super().__rich_console__(console, options)


def titled_table(title: str) -> Table:
    """A rich Table titled `title` (rich markup) whose title is never wrapped into fragments (see _TitledTable)."""
    return _TitledTable(title)
