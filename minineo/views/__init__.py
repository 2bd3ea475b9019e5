"""Self-contained interactive HTML views: attention, the logit (and tuned) lens, attributions, patching, circuits.

Each function returns a `View` (`.save(path)`, `.html`, `_repr_html_` for Jupyter). A page is one HTML file with
its own JS and CSS inlined, its tensors packed compactly, and no network request (a Content-Security-Policy
forbids them); it names the model, the prompt and the minineo version.
"""

from minineo.views.attention import attention
from minineo.views.attributions import attributions
from minineo.views.circuit import circuit
from minineo.views.lens import lens
from minineo.views.page import View
from minineo.views.patching import patching

__all__ = ["View", "attention", "attributions", "circuit", "lens", "patching"]
