"""The README's ```python blocks, for the tests that run them (test_readme_python.py, test_real_weights.py).

A block whose first line is `# needs gpt2` needs GPT-2's real weights and is self-contained; every other
block runs on the embedded model, in order, in one namespace.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
NEEDS_GPT2 = "# needs gpt2"


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of README.md, in order."""
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text[:match.start()].count("\n") + 1, match.group(1)))
    return blocks


def needs_gpt2(code: str) -> bool:
    return code.lstrip().startswith(NEEDS_GPT2)


def write_corpus(folder: Path) -> None:
    """The `corpus.jsonl` the README's blocks name (the user's own corpus there): enough rows of 128 tokens."""
    lines = [json.dumps({"text": f"When Mary and John went to the store, John gave a drink to Mary. Story {i}."})
             for i in range(120)]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")


def run(code: str, namespace: dict, line: int) -> None:
    exec(compile(code, f"README.md, the python block at line {line}", "exec"), namespace)
