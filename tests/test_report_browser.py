"""The report in a real browser: headless Chromium (Debian's ``chromium``) through
Playwright's Python client, pointed at the system binary (no ``playwright install``).

The page must load with no console error and no request but the file itself, show the run
id, the cluster count and (for a comparison) the ARI, and render something (a screenshot
whose pixels are not all one colour). Without a browser the test skips, except in CI
(``$CI`` set), where it fails: ``.ci/run`` installs ``chromium``.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clusterstore.audit import compare_labels, write_report
from clusterstore.audit.compare import id_keys
from clusterstore.eventstore import EventStore
from tests.audit_data import RUN_A, RUN_B, embedding_ids, labels_for, make_run

CHROMIUM = os.environ.get("CLUSTERSTORE_CHROMIUM", "/usr/bin/chromium")


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (the browser test is required in CI; .ci/run installs chromium)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install 'clusterstore[test]'")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _missing(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def open_report(browser: Any, path: Path) -> tuple[Any, list[str], list[str], Any]:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_load_state("networkidle")
    return page, errors, requests, page.screenshot(full_page=False)


def pixel_spread(png: bytes) -> float:
    """The standard deviation of the screenshot's grey levels (0 for a blank page)."""
    from PIL import Image

    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return float(grey.std())


def test_report_in_chromium(store: EventStore, tmp_path: Path, browser: Any) -> None:
    make_run(store, RUN_A, n=400, k=8, seed=0)
    make_run(store, RUN_B, n=400, k=8, seed=1)
    path = tmp_path / "report.html"
    write_report(store, RUN_A, path, compare_to=RUN_B)
    page, errors, requests, png = open_report(browser, path)
    try:
        assert errors == []
        assert requests == [path.as_uri()]  # the file itself, nothing else
        assert page.inner_text("#run-id") == str(RUN_A)
        assert page.inner_text("#cluster-count") == "8"
        keys = id_keys(embedding_ids(400).view("V16").ravel())
        ari = compare_labels(keys, labels_for(400, 8, 0), keys, labels_for(400, 8, 1)).ari
        assert ari is not None
        assert page.inner_text("#ari") == f"{ari:.4f}"
        assert page.locator("svg.chart").count() == 2
        assert page.locator("svg.heatmap").count() == 1
        assert pixel_spread(png) > 10
        shots = os.environ.get("CLUSTERSTORE_SCREENSHOT")
        if shots:  # how docs/report.png is made
            Path(shots).write_bytes(png)
    finally:
        page.close()


def test_blank_page_is_told_apart(browser: Any, tmp_path: Path) -> None:
    """The blank check can fail: an empty page has no spread."""
    path = tmp_path / "blank.html"
    path.write_text("<!DOCTYPE html><html><body></body></html>")
    page, errors, requests, png = open_report(browser, path)
    page.close()
    assert errors == [] and requests == [path.as_uri()]
    assert pixel_spread(png) == 0
