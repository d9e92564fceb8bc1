"""The Sweep page in a real headless chromium, on a private copy of the small store: a sweep
runs in the server's background, the progress bar moves through intermediate values, the rows
land in the store; a cancelled sweep keeps what finished and says so.

Run with ``WORKBENCH_SCREENSHOT=1`` to refresh docs/screenshot-sweep.png.
"""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Page, expect

from workbench import store as st
from workbench.formats import GRIDS

pytestmark = pytest.mark.ui

TIMEOUT_MS = 30_000
SWEEP_S = 300            # a whole sweep of one layer's tensors × the default grid, with margin
# The small store holds layer 0 only, so every pair of these layers is new (resume skips none).
ONE_LAYER = r"layer\.1\."
FIVE_LAYERS = r"layer\.[1-5]\."
PAIRS_PER_LAYER = 6 * len(GRIDS["default"]())
BAR = "e => ({value: e.hasAttribute('value') ? e.value : null, max: e.max})"


def choose(page: Page, tensors: str, pairs: int):
    """The default grid on ``tensors``; waits until the sidebar shows the pair count."""
    page.locator("select").filter(has=page.locator("option", has_text="ggml")).select_option("default")
    box = page.get_by_placeholder(r"e.g. layer\.0\.")
    box.fill(tensors)
    box.press("Enter")
    expect(page.get_by_text(re.compile(r"\d+ formats × \d+ tensors"))).to_contain_text(
        f"= {pairs} pairs", timeout=TIMEOUT_MS)


def new_runs(store, before: set[str]):
    runs = st.runs(store)
    return runs[~runs["run_id"].isin(before)]


def test_sweep_runs_with_a_moving_progress_bar(page: Page, own_server, own_watch, screenshot):
    store = own_server["store"]
    before = set(st.runs(store)["run_id"])
    page.goto(own_server["url"] + "?page=sweep")
    run_button = page.get_by_role("button", name="Run sweep")
    expect(run_button).to_be_enabled(timeout=TIMEOUT_MS)
    choose(page, ONE_LAYER, PAIRS_PER_LAYER)
    run_button.click()

    bar = page.locator("progress")
    expect(bar).to_be_visible(timeout=TIMEOUT_MS)
    expect(run_button).to_be_disabled()
    status = page.get_by_text(re.compile(r"^\d+ of \d+ measured$"))
    seen = []
    deadline = time.monotonic() + SWEEP_S
    while time.monotonic() < deadline:
        seen.append(bar.evaluate(BAR))
        if status.count() and status.inner_text() == f"{PAIRS_PER_LAYER} of {PAIRS_PER_LAYER} measured":
            break
        page.wait_for_timeout(40)
    # the status and the bar are two models: the bar's last patch may land just after the text
    for _ in range(TIMEOUT_MS // 100):
        seen.append(bar.evaluate(BAR))
        if seen[-1]["value"] == PAIRS_PER_LAYER:
            break
        page.wait_for_timeout(100)
    values = [s["value"] for s in seen if s["value"] is not None and s["value"] >= 0]
    assert values and values[-1] == seen[-1]["max"] == PAIRS_PER_LAYER, seen[-5:]
    assert any(0 < v < PAIRS_PER_LAYER for v in values), seen          # it moved, not jumped
    assert values == sorted(values)                                     # and never went back
    expect(page.get_by_text(re.compile(f"done: {PAIRS_PER_LAYER} rows measured"))).to_be_visible(
        timeout=TIMEOUT_MS)
    expect(run_button).to_be_enabled()

    added = new_runs(store, before)
    assert len(added) == 1 and added["rows"].item() == PAIRS_PER_LAYER
    # the live table lists this run's best rows (layer 1 tensors) from the store
    expect(page.get_by_text(f"{PAIRS_PER_LAYER} rows of this run stored so far")).to_be_visible()
    expect(page.locator(".tabulator-row").first).to_contain_text("encoder.layer.1.")
    screenshot(page, "sweep")
    own_watch.check()


def test_cancel_keeps_the_finished_rows(page: Page, own_server, own_watch):
    store = own_server["store"]
    before = set(st.runs(store)["run_id"])
    page.goto(own_server["url"] + "?page=sweep")
    expect(page.get_by_role("button", name="Run sweep")).to_be_enabled(timeout=TIMEOUT_MS)
    choose(page, FIVE_LAYERS, 5 * PAIRS_PER_LAYER)
    page.get_by_role("button", name="Run sweep").click()
    started = page.get_by_text(re.compile(r"^[1-9]\d* of \d+ measured$"))
    expect(started).to_be_visible(timeout=SWEEP_S * 1000)
    page.get_by_role("button", name="Cancel").click()

    done = page.get_by_text(re.compile(r"^cancelled after \d+ of \d+; \d+ rows kept$"))
    expect(done).to_be_visible(timeout=SWEEP_S * 1000)
    n, m, kept = map(int, re.findall(r"\d+", done.inner_text()))
    assert m == 5 * PAIRS_PER_LAYER and 0 < n < m and 0 < kept <= n
    expect(page.get_by_text(re.compile(r"Sweep of all-MiniLM-L6-v2 cancelled after"))).to_be_visible()
    expect(page.get_by_role("button", name="Run sweep")).to_be_enabled()
    added = new_runs(store, before)
    assert len(added) == 1 and added["rows"].item() == kept          # what finished is in the store
    own_watch.check()
