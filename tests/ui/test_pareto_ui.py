"""The Pareto page in a real headless chromium: it renders, box-select brushing fills the table.

Run with ``WORKBENCH_SCREENSHOT=1`` to refresh docs/screenshot-pareto.png (the README shows it).
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.ui

TIMEOUT_MS = 30_000
# True once the plot's brushed layer (link_selections' second scatter) holds exactly n points.
PLOT_SHOWS_SELECTION = """n => Bokeh.documents.some(doc => [...doc.all_models].some(m =>
    m.type === "ColumnDataSource" && "format" in m.data && "kind" in m.data && m.get_length() === n))"""


def test_pareto_page_renders_and_brushing_fills_the_table(page: Page, server, watch, screenshot):
    page.goto(server["url"] + "?page=pareto")
    plot = page.locator(".bk-events")
    expect(plot).to_have_count(1, timeout=TIMEOUT_MS)
    expect(plot).to_be_visible()
    expect(page.get_by_text("Hyper-Quantization Workbench").first).to_be_visible()
    caption = page.get_by_text(re.compile(r"Selected formats:"))
    expect(caption).to_contain_text("none yet", timeout=TIMEOUT_MS)
    total = int(re.search(r"\((\d+) formats of", caption.inner_text()).group(1))
    rows = page.locator(".tabulator-row")
    expect(rows).to_have_count(0)

    # Box-select: press inside the data frame (the events layer also spans the axes and the
    # legend, and a drag that starts there selects nothing), drag down to the lower left.
    box = plot.bounding_box()
    page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.2 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.02 * box["width"], box["y"] + 0.98 * box["height"], steps=8)
    page.mouse.up()

    expect(caption).to_contain_text(re.compile(r"Selected formats: \d+ of \d+"), timeout=TIMEOUT_MS)
    selected = int(re.search(r"Selected formats: (\d+) of", caption.inner_text()).group(1))
    assert 0 < selected < total, caption.inner_text()   # brushed a part, not nothing or all
    if selected <= 20:   # the small test store: every selected row is rendered
        expect(rows).to_have_count(selected)
    else:                # a full sweep (README screenshot): the table renders rows lazily
        expect(rows.first).to_be_visible()
    expect(rows.first).to_contain_text(re.compile(r"Q\d"))   # format names are listed
    page.wait_for_function(PLOT_SHOWS_SELECTION, arg=selected, timeout=TIMEOUT_MS)

    screenshot(page, "pareto")

    # Another metric redraws the plot (linear axis) and drops the brush, which meant nmse ranges.
    page.locator("select").nth(1).select_option("sqnr_db")
    expect(caption).to_contain_text("none yet", timeout=TIMEOUT_MS)
    expect(rows).to_have_count(0)
    expect(page.locator(".bk-events")).to_have_count(1)

    watch.check()
