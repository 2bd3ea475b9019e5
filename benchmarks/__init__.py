"""minineo's benchmarks: ratios against HF, brute-force loops and peers, measured in one run (benchmarks/README.md)."""


def description(doc: str | None) -> str:
    """The first paragraph of a module docstring on one line, for argparse's `description=` (argparse rewraps
    it to the terminal; a `splitlines()[0]` would cut it mid-sentence where the source line ended)."""
    return " ".join((doc or "").split("\n\n")[0].split())
