"""A real headless browser for the views' tests: Debian's Chromium (apt-get install chromium), driven by Playwright.

`open_page(browser, path)` loads a page and records what a page must not do: console errors, uncaught
exceptions, and any request other than the file itself (the pages are self-contained; their CSP forbids the
network, and a blocked request would still show up here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


@dataclass
class Opened:
    page: object
    seconds: float  # from navigation until the view's script has run (body[data-ready])
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def check_clean(self, url: str) -> None:
        assert not self.errors, f"console errors: {self.errors}"
        others = [r for r in self.requests if r != url]
        assert not others, f"network requests: {others}"


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)


def open_page(browser, path: Path, width: int = 1300, height: int = 900) -> Opened:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    opened = Opened(page, 0.0)
    page.on("console", lambda m: opened.errors.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: opened.errors.append(f"pageerror: {e}"))
    page.on("request", lambda r: opened.requests.append(r.url))
    url = Path(path).resolve().as_uri()
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    opened.seconds = time.perf_counter() - start
    opened.check_clean(url)
    return opened


def screenshot(opened: Opened, name: str) -> Path:
    """Save a screenshot into docs/images/ (the documentation shows what the test run saw)."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    opened.page.screenshot(path=str(path), full_page=True)
    return path
