"""The examples of README.md and of every docs/*.md page, for the tests that run them (test_docs_examples.py,
test_real_weights.py) and check them (test_docs_site.py).

A page's examples are its ```python blocks and the `minineo ...` lines of its ```bash blocks, in the order they
appear. A python block whose first line is `# needs gpt2` needs GPT-2's real weights and is self-contained; a bash
block whose first line is `# needs ...` wants what a test machine lacks (a peer package, files it makes) and is left
to its own test. Every other example runs on the embedded models, in order, in one namespace and one folder per
page. New pages dropped into docs/ are found by the glob.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
NEEDS_GPT2 = "# needs gpt2"
EMBEDDED_MODELS = ("--model tiny-neo", "--model tiny-gpt2")  # shipped in the package: these run offline
FENCE = re.compile(r"^```(python|bash)\n(.*?)^```", flags=re.S | re.M)
SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::(\d*)(?::(\d*))?)?"$', flags=re.M)


@dataclass(frozen=True)
class Example:
    """One example of a page: a python block (`code`) or one `minineo ...` command line."""

    kind: str  # "python" or "command"
    page: Path
    line: int  # 1-based line of the page where the block (python) or the command starts
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}, line {self.line}"


def pages() -> list[Path]:
    """README.md, then every Markdown page under docs/ (sorted)."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def page_text(page: Path) -> str:
    """The page as mkdocs renders it: a pymdownx.snippets line (`--8<-- "file[:start[:end]]"`) is replaced by
    that file's lines (paths from the repository root, as mkdocs.yml's base_path says)."""
    def include(match: re.Match) -> str:
        lines = (ROOT / match.group(1)).read_text().splitlines()
        start = int(match.group(2)) if match.group(2) else 1
        end = int(match.group(3)) if match.group(3) else len(lines)
        return "\n".join(lines[start - 1:end])
    return SNIPPET.sub(include, page.read_text())


def needs_gpt2(code: str) -> bool:
    return code.lstrip().startswith(NEEDS_GPT2)


def runs_offline(command: str) -> bool:
    """A `minineo` line the test machine can run: an embedded model (no --model, or a zoo name), no download."""
    return (command.startswith("minineo ") and not command.startswith("minineo download")
            and ("--model" not in command or any(name in command for name in EMBEDDED_MODELS)))


def bash_lines(page: Path) -> list[tuple[int, str]]:
    """(line, text) of every line of the page's ```bash blocks, comments kept, blocks marked `# needs` included."""
    text = page_text(page)
    out = []
    for match in FENCE.finditer(text):
        if match.group(1) != "bash":
            continue
        first = text[:match.start(2)].count("\n") + 1
        out += [(first + i, line.strip()) for i, line in enumerate(match.group(2).splitlines())]
    return out


def examples(page: Path) -> list[Example]:
    """The page's examples in order: python blocks (`# needs gpt2` ones included) and runnable command lines."""
    text = page_text(page)
    out = []
    for match in FENCE.finditer(text):
        first = text[:match.start(2)].count("\n") + 1
        kind, body = match.group(1), match.group(2)
        if kind == "python":
            out.append(Example("python", page, first - 1, body))
        elif not body.startswith("# needs "):
            out += [Example("command", page, first + i, line.strip()) for i, line in enumerate(body.splitlines())
                    if runs_offline(line.strip())]
    return out


def command_args(command: str) -> list[str]:
    """`minineo lens "a b" --model tiny-gpt2   # comment` -> ["lens", "a b", "--model", "tiny-gpt2"]."""
    return shlex.split(command, comments=True)[1:]


def python_blocks(page: Path = README) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of a page, in order."""
    return [(e.line, e.code) for e in examples(page) if e.kind == "python"]


def write_corpus(folder: Path) -> None:
    """The `corpus.jsonl` the pages' examples name (the user's own corpus there): enough rows of 128 tokens."""
    lines = [json.dumps({"text": f"When Mary and John went to the store, John gave a drink to Mary. Story {i}."})
             for i in range(120)]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")


def run(code: str, namespace: dict, where: str | int) -> None:
    where = f"README.md, line {where}" if isinstance(where, int) else where
    exec(compile(code, f"the python block at {where}", "exec"), namespace)
