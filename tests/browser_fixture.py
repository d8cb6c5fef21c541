"""Debian's Chromium driven by Playwright for Python (`executable_path=/usr/bin/chromium`: no
browser is downloaded), for the tests that render a page: import `browser` (a module-scoped
fixture) and `load`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        message = "chromium is not installed (scripts/system-deps.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root otherwise
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        browser.close()


def load(browser: Any, page_html: str, width: int, tmp_path: Path, height: int = 900) -> Any:
    """The page opened from a file in a viewport `width` px wide, once it has loaded (its
    data: images decoded)."""
    path = tmp_path / f"report-{width}.html"
    path.write_text(page_html, "utf-8")
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page
