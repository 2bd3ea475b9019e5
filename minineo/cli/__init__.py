"""The `minineo` command line: the app and its error boundary (shared.py), one module per group of commands.

Importing the package registers every command, in the order `minineo --help` lists them; no command module
imports another.
"""

from minineo.cli import run  # noqa: F401  (run, cache, download)
from minineo.cli import analysis  # noqa: F401  (embeddings, lens, heads, attribute, ablate, ioi)
from minineo.cli import harvest  # noqa: F401  (harvest)
from minineo.cli import tuned_lens  # noqa: F401  (tune-lens)
from minineo.cli import patch  # noqa: F401  (patch)
from minineo.cli import evaluation  # noqa: F401  (eval, sae-eval)
from minineo.cli import circuits  # noqa: F401  (circuits)
from minineo.cli import path_patch  # noqa: F401  (path-patch)
from minineo.cli import views  # noqa: F401  (view, view-circuit)
from minineo.cli import discover  # noqa: F401  (discover)
from minineo.cli.shared import app

__all__ = ["app", "main"]


def main() -> None:
    """The `minineo` console script and `python -m minineo`."""
    app()
