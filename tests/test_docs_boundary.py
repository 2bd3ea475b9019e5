"""docs/boundary.md: its ```python blocks run in order on the embedded model, and each message a comment shows
(`print(err)  # message...`) is the start of what the block prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "boundary.md"


def test_the_boundary_page_runs_and_shows_real_messages():
    text = PAGE.read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert len(blocks) >= 3
    namespace: dict = {}
    for code in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(PAGE), "exec"), namespace)
        printed = out.getvalue()
        for shown in re.findall(r"print\(err\)\s+# (.*)$", code, flags=re.M):
            assert printed.startswith(shown.removesuffix("...").rstrip()), (shown, printed)
