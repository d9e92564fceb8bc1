"""The Truth page in a real headless chromium, on a store of real evaluations (tests/
test_truth_page.py's ``build_store``: a tiny encoder swept and evaluated, and a tiny LLM stored
as Q4_1 under a SmolLM2 name): the scatter, the correlation table with the recommended metric
highlighted and the sensitivity bars render with no console error and no off-machine request;
SmolLM2's caveat is shown and its toggle leaves out the formats whose grid holds Q4_1's.

``truth_store``/``truth_server`` are imported by test_pareto_ui.py and test_offline_ui.py too.
Run with ``WORKBENCH_SCREENSHOT=1`` to save docs/screenshot-truth.png.
"""
from __future__ import annotations

import importlib.util
import re

import pytest
from playwright.sync_api import Page, expect

from workbench import eval_store, truth
from workbench.browser import ROOT

pytestmark = pytest.mark.ui
TIMEOUT_MS = 30_000

# True once a scatter of formats (its data has format, family and bpw, and no bars' group) holds n points.
SCATTER_SHOWS = """n => Bokeh.documents.some(doc => [...doc.all_models].some(m => m.type === "ColumnDataSource"
    && "format" in m.data && "family" in m.data && "bpw" in m.data && !("group" in m.data) && m.get_length() === n))"""
# True once the stacked sensitivity bars (format, group, share) hold n bars.
BARS_SHOW = """n => Bokeh.documents.some(doc => [...doc.all_models].some(m => m.type === "ColumnDataSource"
    && "group" in m.data && "share" in m.data && m.get_length() === n))"""
# True once the single-tensor bars (tensor, format, share) hold n bars.
TENSOR_BARS_SHOW = """n => Bokeh.documents.some(doc => [...doc.all_models].some(m => m.type === "ColumnDataSource"
    && "tensor" in m.data && "share" in m.data && m.get_length() === n))"""
HIGHLIGHTED = "rgb(253, 230, 138)"     # truth_page.HIGHLIGHT's background


def build_store(root):
    """tests/test_truth_page.py's builder (loaded by path: tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("truth_store_builder", ROOT / "tests" / "test_truth_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_store(root)


@pytest.fixture(scope="module")
def truth_store(tmp_path_factory):
    return build_store(tmp_path_factory.getbasetemp() / "truth-store")


@pytest.fixture(scope="module")
def truth_server(truth_store, store_server):
    with store_server(truth_store) as srv:
        yield srv


def shown(whole, metric) -> int:
    """Points a log y axis can show: the formats with a positive value."""
    return int((whole[metric] > 0).sum())


def test_truth_page_renders_scatter_table_and_bars(page: Page, truth_server, truth_store, watch_for, screenshot):
    watch = watch_for(truth_server)
    ev = eval_store.evals(truth_store)
    page.goto(truth_server["url"] + "?page=truth")

    # SmolLM2 (the first model): the caveat, its results, and the Q4_1 toggle
    caveat = page.locator(".q4-1-caveat")
    expect(caveat).to_contain_text("SmolLM2 ships as Q4_1: its weights already lie on Q4_1's grid",
                                   timeout=TIMEOUT_MS)
    expect(caveat).to_contain_text("it proves the LLM path, it does not rank formats in general")
    lm = truth.whole_model(ev, "SmolLM2-toy")
    page.wait_for_function(SCATTER_SHOWS, arg=shown(lm, "kld_mean"), timeout=TIMEOUT_MS)
    table = truth.correlations(ev, "SmolLM2-toy")
    rows = page.locator(".correlations .tabulator-row")
    expect(rows).to_have_count(len(table), timeout=TIMEOUT_MS)
    rec = truth.recommend(table)
    name = page.locator('.tabulator-cell[tabulator-field="weight_metric"]')
    best = rows.filter(has=name.filter(has_text=re.compile(f"^{rec}$")))
    expect(best).to_have_count(1)
    for field in ("weight_metric", "within_band", "overall"):
        expect(best.locator(f'.tabulator-cell[tabulator-field="{field}"]')).to_have_css(
            "background-color", HIGHLIGHTED)
    other = rows.filter(has=name.filter(has_text=re.compile(f"^(?!{rec}$)"))).first
    expect(other.locator('.tabulator-cell[tabulator-field="weight_metric"]')).not_to_have_css(
        "background-color", HIGHLIGHTED)
    expect(page.get_by_text(f"Recommended weight metric: {rec}").first).to_be_visible()

    held = [f for f in lm["format"] if truth.contains_q4_1_grid(f)]
    page.locator(".exclude-q4-1 input[type=checkbox]").check()
    expect(page.get_by_text(f"{len(held)} whose grid holds Q4_1's left out").first).to_be_visible(timeout=TIMEOUT_MS)
    kept = lm[[not truth.contains_q4_1_grid(f) for f in lm["format"]]]
    page.wait_for_function(SCATTER_SHOWS, arg=shown(kept, "kld_mean"), timeout=TIMEOUT_MS)
    expect(page.locator('.correlations .tabulator-cell[tabulator-field="formats"]').first).to_have_text(
        str(len(lm) - len(held)))

    # the encoder: drift against the recommended weight metric, and the sensitivity bars
    page.locator("select").first.select_option("tiny-net")
    expect(caveat).to_be_hidden(timeout=TIMEOUT_MS)
    tiny = truth.whole_model(ev, "tiny-net")
    page.wait_for_function(SCATTER_SHOWS, arg=shown(tiny, "drift"), timeout=TIMEOUT_MS)
    sens = truth.sensitivity(ev, "tiny-net")
    page.wait_for_function(BARS_SHOW, arg=len(sens), timeout=TIMEOUT_MS)
    expect(page.get_by_text("additivity ratio").first).to_be_visible()
    add = truth.additivity(ev, "tiny-net")
    expect(page.locator(".tabulator-row").filter(has_text=add["format"].iloc[0])).not_to_have_count(0)
    expect(rows).to_have_count(len(truth.correlations(ev, "tiny-net")))
    screenshot(page, "truth")

    # single tensors: one bar per (tensor, format), additivity over tensors, the within-group table
    tens = truth.sensitivity(ev, "tiny-net", level="tensor")
    page.locator(".sensitivity-level button", has_text="tensor").click()
    page.wait_for_function(TENSOR_BARS_SHOW, arg=len(tens), timeout=TIMEOUT_MS)
    expect(page.get_by_text(f"{tens['format'].nunique()} formats × {tens['tensor'].nunique()} tensors").first
           ).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("Within each group").first).to_be_visible()
    expect(page.locator('.group-additivity .tabulator-cell[tabulator-field="ratio"]')).to_have_count(
        len(truth.group_additivity(ev, "tiny-net")))
    watch.check()


def test_truth_page_without_evaluations_says_what_to_run(page: Page, server, watch):
    """The shared small store has sweep results only: a note, no error."""
    page.goto(server["url"] + "?page=truth")
    expect(page.get_by_text("no model-level evaluations yet: run workbench eval").first).to_be_visible(
        timeout=TIMEOUT_MS)
    watch.check()


EVAL_FORMATS = ["Q4_0", "Q4s32", "Q8_0"]
EVAL_S = 240             # the embedded MiniLM's reference and three formats on 2 busy cores, with margin
BAR = "e => ({value: e.hasAttribute('value') ? e.value : null, max: e.max})"


def test_sweep_page_evaluates_the_model_with_live_progress(page: Page, own_server, own_watch):
    """A real evaluation of the embedded MiniLM from the Sweep page: the bar moves format by
    format, the rows land in the store, and the Truth page then shows them."""
    import time
    store = own_server["store"]
    page.goto(own_server["url"] + "?page=sweep")
    button = page.get_by_role("button", name="Evaluate formats on the model")
    expect(button).to_be_enabled(timeout=TIMEOUT_MS)
    box = page.get_by_placeholder("e.g. Q4_0,Q4_K,Q4s32")
    box.fill(",".join(EVAL_FORMATS))
    box.press("Enter")
    button.click()
    bar = page.locator("progress").last
    expect(bar).to_be_visible(timeout=TIMEOUT_MS)
    expect(button).to_be_disabled()
    done = page.get_by_text(re.compile(r"Evaluation of all-MiniLM-L6-v2 done: 3 evaluations"))
    seen, deadline = [], time.monotonic() + EVAL_S
    while time.monotonic() < deadline and not done.count():
        seen.append(bar.evaluate(BAR))
        page.wait_for_timeout(50)
    expect(done).to_be_visible(timeout=TIMEOUT_MS)
    values = [s["value"] for s in seen if s["value"] is not None and s["value"] >= 0]
    assert any(0 < v < len(EVAL_FORMATS) for v in values), seen      # it moved format by format
    assert values == sorted(values)
    expect(page.get_by_text("3 of 3 evaluated")).to_be_visible()
    expect(page.locator(".eval-live .tabulator-row")).to_have_count(3)
    ev = eval_store.evals(store)
    assert sorted(ev["format"]) == sorted(EVAL_FORMATS) and (ev["drift"] > 0).all()

    page.get_by_text("Truth", exact=True).click()
    expect(page.get_by_text("3 formats").first).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_function(SCATTER_SHOWS, arg=3, timeout=TIMEOUT_MS)
    own_watch.check()
