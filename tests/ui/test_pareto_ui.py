"""The Pareto page in a real headless chromium: box and lasso brushing fill the table, a filter
changes the plot, a click opens a format's per-tensor errors, every (tensor, format) point.

Run with ``WORKBENCH_SCREENSHOT=1`` to refresh docs/screenshot-pareto.png (the README shows it).
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from workbench.browser import FIGURES_JS

pytestmark = pytest.mark.ui

TIMEOUT_MS = 30_000
# True once the format points' data source has exactly n points selected (bokeh's own selection).
PLOT_SHOWS_SELECTION = """n => Bokeh.documents.some(doc => [...doc.all_models].some(m =>
    m.type === "ColumnDataSource" && "format" in m.data && "kind" in m.data
    && m.selected.indices.length === n))"""


def settled_count(page: Page, caption) -> int:
    """The number of selected formats once the caption and the plot's own selection agree (the
    server has answered the browser's last selection), rather than whatever the caption shows
    the moment it first changes."""
    counted = re.compile(r"Selected formats: (\d+) of")
    expect(caption).to_have_text(counted, timeout=TIMEOUT_MS)
    n = -1
    for _ in range(TIMEOUT_MS // 100):
        n = int(counted.search(caption.text_content()).group(1))
        if page.evaluate(PLOT_SHOWS_SELECTION, n):
            return n
        page.wait_for_timeout(100)
    raise AssertionError(f"the caption says {n} selected, the plot never did")


def test_pareto_page_renders_and_brushing_fills_the_table(page: Page, server, watch, screenshot):
    page.goto(server["url"] + "?page=pareto")
    plot = page.locator(".bk-events")
    expect(plot).to_have_count(1, timeout=TIMEOUT_MS)
    expect(plot).to_be_visible()
    expect(page.get_by_text("Hyper-Quantization Workbench").first).to_be_visible()
    caption = page.get_by_text(re.compile(r"Selected formats:"))
    expect(caption).to_contain_text(re.compile(r"none yet.*\(\d+ formats of"), timeout=TIMEOUT_MS)
    found, text = None, ""
    for _ in range(100):            # the caption may be re-rendered between two reads
        text = caption.first.inner_text() if caption.count() else ""
        if (found := re.search(r"\((\d+) formats of", text)) or "none yet" not in text and text:
            break
        page.wait_for_timeout(100)
    assert found, f"the caption changed before any brush: {text!r}"
    total = int(found.group(1))
    rows = page.locator(".tabulator-row")
    expect(rows).to_have_count(0)

    # Box-select: press inside the data frame (the events layer also spans the axes and the
    # legend, and a drag that starts there selects nothing), drag down to the lower left.
    box = plot.bounding_box()
    page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.2 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.02 * box["width"], box["y"] + 0.98 * box["height"], steps=8)
    page.mouse.up()

    selected = settled_count(page, caption)
    assert 0 < selected < total, caption.inner_text()   # brushed a part, not nothing or all
    if selected <= 20:   # the small test store: every selected row is rendered
        expect(rows).to_have_count(selected)
    else:                # a full sweep (README screenshot): the table renders rows lazily
        expect(rows.first).to_be_visible()
    expect(rows.first).to_contain_text(re.compile(r"Q\d"))   # format names are listed

    screenshot(page, "pareto")

    # Another metric redraws the plot (linear axis) and drops the brush, which meant nmse ranges.
    page.locator("select").nth(1).select_option("sqnr_db")
    expect(caption).to_contain_text("none yet", timeout=TIMEOUT_MS)
    expect(rows).to_have_count(0)
    expect(page.locator(".bk-events")).to_have_count(1)

    watch.check()


# True once a model-level scatter (its data has both 'format' and 'kind') holds exactly n points.
POINTS_SHOWN = """n => Bokeh.documents.some(doc => [...doc.all_models].some(m => m.type === "ColumnDataSource"
    && "format" in m.data && "kind" in m.data && !("tensor" in m.data) && m.get_length() === n))"""
TOTAL = re.compile(r"\((\d+) formats of")
CLOUD_SHOWN = """() => Bokeh.documents.some(doc => [...doc.all_models].some(m =>
    m.type === "ColumnDataSource" && "tensor" in m.data && "format" in m.data && m.get_length() > 0))"""


def brush(page: Page, x0=0.6, y0=0.2, x1=0.02, y1=0.98):
    plot = page.locator(".bk-events").first
    box = plot.bounding_box()
    page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + x1 * box["width"], box["y"] + y1 * box["height"], steps=8)
    page.mouse.up()


def test_pareto_filters_click_for_per_tensor_errors_and_every_point(page: Page, server, watch):
    page.goto(server["url"] + "?page=pareto")
    caption = page.get_by_text(re.compile(r"Selected formats:"))
    expect(caption).to_contain_text("none yet", timeout=TIMEOUT_MS)
    expect(caption).to_contain_text(TOTAL, timeout=TIMEOUT_MS)
    total = int(TOTAL.search(caption.text_content()).group(1))
    page.wait_for_function(POINTS_SHOWN, arg=total, timeout=TIMEOUT_MS)

    # a filter changes the plot: only llama.cpp's types (family ggml) stay
    uniform = page.get_by_role("button", name="uniform grid", exact=True)   # the uniform family: single and double
    uniform.click()
    expect(caption).not_to_contain_text(f"({total} formats of", timeout=TIMEOUT_MS)
    ggml = int(TOTAL.search(caption.text_content()).group(1))
    assert 0 < ggml < total
    page.wait_for_function(POINTS_SHOWN, arg=ggml, timeout=TIMEOUT_MS)
    uniform.click()
    expect(caption).to_contain_text(f"({total} formats of", timeout=TIMEOUT_MS)

    # brush everything, click a listed format: its error on each tensor appears
    brush(page)
    expect(caption).to_contain_text(re.compile(r"Selected formats: \d+ of"), timeout=TIMEOUT_MS)
    rows = page.locator(".tabulator-row")
    first = rows.first.locator('.tabulator-cell[tabulator-field="format"]').text_content()
    rows.first.locator('.tabulator-cell[tabulator-field="format"]').click()
    detail = page.get_by_text(re.compile(rf"^{re.escape(first)}: nmse on each tensor \(\d+ of \d+ tensors"))
    expect(detail).to_be_visible(timeout=TIMEOUT_MS)
    n_tensors = int(re.search(r"\((\d+) of", detail.text_content()).group(1))
    assert n_tensors > 0
    expect(page.locator(".bk-events")).to_have_count(2)       # the per-tensor plot is drawn

    # lasso (bokeh's own tool, from the toolbar): a triangle over the left part of the plot
    page.locator(".bk-tool-icon-lasso-select").first.click()
    before = caption.text_content()
    frame = next(f for f in page.evaluate(FIGURES_JS) if "is better" in f["title"])   # the data frame
    path = [(0.01, 0.01), (0.45, 0.01), (0.01, 0.6), (0.01, 0.01)]   # the top left: few bits, big errors
    page.mouse.move(frame["x"] + path[0][0] * frame["w"], frame["y"] + path[0][1] * frame["h"])
    page.mouse.down()
    for x, y in path[1:]:
        page.mouse.move(frame["x"] + x * frame["w"], frame["y"] + y * frame["h"], steps=6)
    page.mouse.up()
    expect(caption).not_to_have_text(before, timeout=TIMEOUT_MS)
    lassoed = settled_count(page, caption)
    assert 0 < lassoed < total

    # every (tensor, format) point under the formats
    toggle = page.locator(".every-point input[type=checkbox]")
    toggle.check()
    expect(toggle).to_be_checked()
    page.wait_for_function(CLOUD_SHOWN, timeout=TIMEOUT_MS)
    watch.check()


# --------------------------------------------------------------------- the model-level axis
from test_truth_ui import truth_server, truth_store  # noqa: E402,F401  (fixtures: a store with evaluations)

# True once the legend holds an item whose label contains the text (a frontier's step line).
LEGEND_HAS = """t => Bokeh.documents.some(doc => [...doc.all_models].some(m => m.type === "LegendItem"
    && JSON.stringify(m.label).includes(t)))"""
# True once a second (right) log axis for the weight error is on the page.
WEIGHT_AXIS = """() => Bokeh.documents.some(doc => [...doc.all_models].some(m => m.type === "LogAxis"
    && String(m.axis_label).startsWith("weight error w_nmse")))"""


def test_pareto_model_level_axis_shows_both_frontiers_and_where_they_disagree(page: Page, truth_server, truth_store,
                                                                               watch_for):
    from workbench import eval_store, truth
    watch = watch_for(truth_server)
    ev = eval_store.evals(truth_store)
    page.goto(truth_server["url"] + "?page=pareto")
    note = page.locator(".recommended-metric")
    expect(note).to_contain_text("Default metric:", timeout=TIMEOUT_MS)
    expect(note).to_contain_text("ranks the model-level drift best within equal-bpw bands")
    caption = page.get_by_text(re.compile(r"Selected formats:"))
    expect(caption).to_contain_text("none yet", timeout=TIMEOUT_MS)

    page.locator("select").nth(1).select_option(label="drift (model-level)")
    whole = truth.whole_model(ev, "tiny-net")
    expect(caption).to_contain_text(f"({len(whole)} formats of tiny-net)", timeout=TIMEOUT_MS)
    page.wait_for_function(POINTS_SHOWN, arg=len(whole), timeout=TIMEOUT_MS)
    page.wait_for_function(LEGEND_HAS, arg="model-level frontier (drift)", timeout=TIMEOUT_MS)
    page.wait_for_function(LEGEND_HAS, arg="weight-error frontier (w_nmse)", timeout=TIMEOUT_MS)
    page.wait_for_function(WEIGHT_AXIS, timeout=TIMEOUT_MS)

    dis = truth.frontier_disagreements(ev, "tiny-net", "drift", "w_nmse")
    assert dis["weight_only"] or dis["model_only"], dis     # the store is built so that they do
    frontier = page.locator(".frontier-note")
    expect(frontier).to_contain_text("The frontiers disagree", timeout=TIMEOUT_MS)
    if dis["weight_only"]:
        expect(frontier).to_contain_text(f"weight-error (w_nmse) frontier only: {', '.join(dis['weight_only'])}")
    if dis["model_only"]:
        expect(frontier).to_contain_text(f"model-level (drift) frontier only: {', '.join(dis['model_only'])}")

    # brushing the evaluated formats fills the table, with their weight error beside drift
    brush(page)
    expect(caption).to_contain_text(re.compile(r"Selected formats: \d+ of"), timeout=TIMEOUT_MS)
    expect(page.locator('.tabulator-col[tabulator-field="w_nmse"]')).to_have_count(1)
    expect(page.locator(".tabulator-row").first).to_contain_text(re.compile(r"Q\d|IQ4|MXFP4"))

    # back to a sweep metric: one frontier, no note
    page.locator("select").nth(1).select_option("nmse")
    expect(frontier).to_be_hidden(timeout=TIMEOUT_MS)
    watch.check()
