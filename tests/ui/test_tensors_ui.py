"""The Tensors page in a real headless chromium: the heatmap renders beside the statistics, a
tensor filter changes its rows, a click on a cell opens that tensor's histograms.

Run with ``WORKBENCH_SCREENSHOT=1`` to refresh docs/screenshot-tensors.png.
"""
from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from workbench import store as st
from workbench.browser import FIGURES_JS
from workbench.sources import tensor_kind

pytestmark = pytest.mark.ui

TIMEOUT_MS = 60_000     # the first click reconstructs a tensor in the server (numba may compile)
HEATMAP = "relative to the best format at the same bpw"
PLOTS = FIGURES_JS


def plot_when(page: Page, title: str, predicate=lambda plot: True) -> dict:
    """The figure on screen whose title contains ``title``, once ``predicate(figure)`` holds
    (the server redraws asynchronously)."""
    seen = None
    for _ in range(TIMEOUT_MS // 250):
        seen = [p for p in page.evaluate(PLOTS) if title in p["title"]]
        if len(seen) == 1 and predicate(seen[0]):
            return seen[0]
        page.wait_for_timeout(250)
    raise AssertionError(f"no figure titled {title!r} satisfied the condition; last seen: {seen}")


def test_tensors_page_filters_and_a_click_opens_the_histograms(page: Page, server, watch, screenshot):
    page.goto(server["url"] + "?page=tensors")
    expect(page.get_by_text("Which tensors are hard to quantize")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("Click a tensor")).to_be_visible(timeout=TIMEOUT_MS)
    results = st.results(server["store"], st.models(server["store"])[0])
    tensors = set(results["tensor"])          # the small store: layer 0's six; a full sweep: 40
    stats = plot_when(page, "tensor statistics")
    all_rows = plot_when(page, HEATMAP, lambda p: bool(p["rows"]))["rows"]
    assert set(all_rows) == tensors and len(all_rows) == len(tensors)
    assert stats["rows"] == all_rows                                      # the same rows ...
    heatmap = plot_when(page, HEATMAP)
    assert abs(stats["y"] - heatmap["y"]) <= 1 and abs(stats["h"] - heatmap["h"]) <= 1   # ... side by side

    # Tensor kinds: without "attention" (small store: the two feed-forward tensors are left).
    page.get_by_label("attention", exact=True).uncheck()
    rest = plot_when(page, HEATMAP, lambda p: len(p["rows"]) < len(all_rows))["rows"]
    assert set(rest) == {t for t in tensors if tensor_kind(t) != "attention"} and len(rest) >= 2
    assert plot_when(page, "tensor statistics", lambda p: len(p["rows"]) == len(rest))["rows"] == rest
    page.get_by_label("attention", exact=True).check()
    plot_when(page, HEATMAP, lambda p: len(p["rows"]) == len(all_rows))

    # Tensor regex: the query projections only; an invalid one: one line, no heatmap.
    regex = page.get_by_placeholder(r"e.g. layer\.0\.")
    regex.fill("query")
    regex.press("Enter")
    queries = {t for t in tensors if "query" in t}
    assert set(plot_when(page, HEATMAP, lambda p: len(p["rows"]) == len(queries))["rows"]) == queries
    regex.fill("query(")
    regex.press("Enter")
    expect(page.get_by_text("is not a valid regular expression")).to_be_visible(timeout=TIMEOUT_MS)
    regex.fill("")
    regex.press("Enter")
    expect(page.get_by_text("is not a valid regular expression")).to_be_hidden(timeout=TIMEOUT_MS)
    before = plot_when(page, HEATMAP, lambda p: len(p["rows"]) == len(all_rows))
    regex.fill(r"layer\.0\.")          # six rows: heatmap and histograms fit the screenshot
    regex.press("Enter")
    layer0 = {t for t in tensors if "layer.0." in t}
    # a new figure (the small store's rows do not change): a click on the old one would be lost
    heatmap = plot_when(page, HEATMAP, lambda p: p["id"] != before["id"] and len(p["rows"]) == len(layer0))
    assert set(heatmap["rows"]) == layer0

    # A click on a heatmap cell, third row from the top (invert_yaxis: the factors run bottom-up).
    rows, i = heatmap["rows"], 2
    tensor = rows[len(rows) - 1 - i]
    page.mouse.click(heatmap["x"] + 0.3 * heatmap["w"], heatmap["y"] + (i + 0.5) * heatmap["h"] / len(rows))
    plot_when(page, f"{tensor}: weights")
    plot_when(page, f"{tensor}: error of ")
    expect(page.get_by_text(tensor, exact=True).first).to_be_visible()    # the caption names it

    page.mouse.move(0, 0)                                                 # no hover tooltip in the shot
    screenshot(page, "tensors")
    watch.check()
