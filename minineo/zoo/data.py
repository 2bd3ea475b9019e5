"""Training data that exists offline on every machine: template sentences and repeated random segments.

Byte-level: token t < 256 is the byte t, 256 is <|endoftext|> (BOS). Everything is drawn from a
seeded generator, so the data (and the trained model) is the same on every machine.
"""

from __future__ import annotations

import codecs
import contextlib
import io

import torch

with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
    import this

BOS = 256
VOCAB = 257
NAMES = ["Mary", "John", "Alice", "Bob", "Tom", "Anna", "Paul", "Kate", "Mark", "Lucy", "Sam", "Emma"]
PLACES = ["store", "park", "school", "garden", "office", "beach", "market", "station"]
OBJECTS = ["a drink", "a book", "the keys", "a letter", "an apple", "the ball", "a gift", "the bag"]
TEMPLATES = [
    "When {a} and {b} went to the {place}, {b} gave {obj} to {a}.",
    "Then, {a} and {b} had a long day at the {place}. {b} handed {obj} to {a}.",
    "After {a} and {b} met at the {place}, {b} passed {obj} to {a}.",
    "{a} and {b} walked to the {place}. Later {b} sent {obj} to {a}.",
]
# The Zen of Python ships with every Python, ROT13-encoded in the `this` module.
ZEN = codecs.decode(this.s, "rot13")


def sentence(g: torch.Generator, both_orders: bool = False) -> str:
    """A template sentence; the indirect object {a} is named first (ABBA), or with `both_orders` half
    the time second (BABA: "When John and Mary went ..., John gave ... to Mary")."""
    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    a = pick(NAMES)
    b = pick([n for n in NAMES if n != a])
    template = pick(TEMPLATES)
    if both_orders and float(torch.rand((), generator=g)) < 0.5:
        template = template.replace("{a} and {b}", "{b} and {a}")
    return template.format(a=a, b=b, place=pick(PLACES), obj=pick(OBJECTS))


def text_sequence(length: int, g: torch.Generator) -> torch.Tensor:
    """BOS, then sentences in both name orders (and now and then a line of the Zen of Python), cut to
    `length` tokens."""
    pieces: list[str] = []
    while sum(map(len, pieces)) < length:
        if float(torch.rand((), generator=g)) < 0.15:
            lines = [line for line in ZEN.splitlines() if line]
            pieces.append(lines[int(torch.randint(len(lines), (1,), generator=g))] + " ")
        else:
            pieces.append(sentence(g, both_orders=True) + " ")
    data = "".join(pieces).encode("utf-8")[: length - 1]
    return torch.tensor([BOS] + list(data), dtype=torch.long)


def repeated_sequence(length: int, g: torch.Generator, low: int = 33, high: int = 127) -> torch.Tensor:
    """BOS, then random ids in [low, high) (default: printable bytes) in segments each repeated twice
    (induction practice)."""
    out = [BOS]
    while len(out) < length:
        seg_len = int(torch.randint(6, 40, (1,), generator=g))
        seg = torch.randint(low, high, (seg_len,), generator=g).tolist()
        out += seg + seg
    return torch.tensor(out[:length], dtype=torch.long)


def batch(size: int, length: int, g: torch.Generator) -> torch.Tensor:
    """(size, length) token ids, the same mixture from the first step to the last: 3/8 text (template
    sentences in both name orders, now and then a line of the Zen), 1/4 repeated printable segments,
    3/8 repeated segments drawn from the whole vocabulary (every byte and <|endoftext|>), so that the
    induction head copies any token and the name movers do not depend on the order."""
    n_text, n_printable = 3 * size // 8, size // 4
    rows = ([text_sequence(length, g) for _ in range(n_text)]
            + [repeated_sequence(length, g) for _ in range(n_printable)]
            + [repeated_sequence(length, g, 0, VOCAB) for _ in range(size - n_text - n_printable)])
    return torch.stack(rows)
