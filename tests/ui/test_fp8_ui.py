"""The fp8-vs-fp16 page in a real headless chromium: both analyses render, encoding A changes
the plotted pairs and the summary lines, gain rows are highlighted in the table.

The shared small store holds one single pair and no double pair, so this page is served on its
own store: the seed's pairs measured for real on one tensor (about a second). Expected pairs
and counts come from that store through the same pure functions, so the test also runs on
``WORKBENCH_SCREENSHOT_STORE`` (a full sweep): with ``WORKBENCH_SCREENSHOT=1`` it refreshes
docs/screenshot-fp8.png.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import Page, expect

from workbench import store as st
from workbench.views.ratios import double_ratio_table, single_ratio_table

pytestmark = pytest.mark.ui

TIMEOUT_MS = 30_000
FORMATS = ("Q3s16_e4m3,Q3s32,Q4s16_e4m3,Q4s32,Q4a16_e4m3,Q4a32,Q4s32_e4m3,Q4s64,Q4s16_bf16,Q4a16_bf16,"
           "Q(4s8)xQ(6s8)_e4m3,Q(4s16)xQ(6s16),Q(4a8)xQ(6s8)_e4m3,Q(4a16)xQ(6s16),Q4_0")
TENSOR = r"layer\.0\.attention\.self\.query"
# The sorted format_a values of every plot on screen whose source carries the ratio tables'
# columns (the heatmaps and scatters of both sections); "-" fills the heatmap's empty grid
# cells. Walks the rendered views: a replaced figure's models linger in Bokeh.documents.
PLOTTED_PAIRS = """() => { const out = [], seen = new Set();
    const walk = v => { if (seen.has(v)) return; seen.add(v);
        for (const r of (v.model.renderers ?? [])) { const d = r.data_source?.data;
            if (d && "format_a" in d && "bpw_diff" in d) out.push([...d.format_a].filter(f => f !== "-").sort()); }
        for (const c of (v.child_views ?? [])) walk(c); };
    const index = Bokeh.index;
    for (const v of (index instanceof Map ? index.values() : (index.roots ?? Object.values(index)))) walk(v);
    return out; }"""
GAIN_BACKGROUND = "rgb(214, 233, 248)"     # ratios.GAIN_STYLE's #d6e9f8


@pytest.fixture(scope="module")
def fp8_server(store_server, tmp_path_factory):
    """The seed's pairs on one tensor; WORKBENCH_SCREENSHOT_STORE: that store instead (the
    README screenshot comes from a full sweep)."""
    store = os.environ.get("WORKBENCH_SCREENSHOT_STORE")
    if not store:
        from workbench.sweep import run
        store = tmp_path_factory.mktemp("fp8-ui-store")
        run(None, FORMATS, TENSOR, store, progress=False)
    with store_server(Path(store)) as srv:
        yield srv


def expected(store: Path, enc_a: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The single and double ratio tables the page should show for encoding A vs f16."""
    df = st.summary(store, st.models(store)[0])
    return single_ratio_table(df, enc_a, "f16"), double_ratio_table(df, enc_a, "f16")


def plotted(page) -> list[list[str]]:
    return sorted(page.evaluate(PLOTTED_PAIRS))


def highlighted(rows) -> list[bool]:
    """Per rendered table row: is it painted in the gain colour?"""
    return rows.evaluate_all(f"""rs => rs.map(r => [...r.querySelectorAll(".tabulator-cell")].some(c =>
        getComputedStyle(c).backgroundColor === "{GAIN_BACKGROUND}"))""")


def test_fp8_page_renders_and_encoding_a_changes_the_pairs(page: Page, fp8_server, watch_for, screenshot):
    single, double = expected(fp8_server["store"], "e4m3")
    single_bf16, double_bf16 = expected(fp8_server["store"], "bf16")
    assert len(single) and len(double) and len(single_bf16) and double_bf16.empty   # what the test needs
    watch = watch_for(fp8_server)
    page.goto(fp8_server["url"] + "?page=fp8")
    expect(page.get_by_text("Do fp8 scales on half-size blocks beat fp16 scales")).to_be_visible(timeout=TIMEOUT_MS)
    wins = int((single["ratio"] < 1).sum())
    line = page.get_by_text(f"e4m3 (normalizer) at B/2 beats f16 at B in {wins} of {len(single)} pairs")
    expect(line).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text(f"8×8 with e4m3 (normalizer) beats 16×16 with f16 in "
                            f"{int((double['ratio'] < 1).sum())} of {len(double)} pairs")).to_be_visible()
    expect(page.locator(".bk-events")).to_have_count(4, timeout=TIMEOUT_MS)   # heatmap + scatter, twice
    page.wait_for_function(f"() => ({PLOTTED_PAIRS})().length === 4", timeout=TIMEOUT_MS)
    pairs = [sorted(single["format_a"]), sorted(double["format_a"])]
    assert plotted(page) == sorted(pairs * 2)

    # the single table lists the gains first, each highlighted, then the rest, plain
    tables = page.locator(".tabulator")
    expect(tables).to_have_count(2)
    rows = tables.first.locator(".tabulator-row")
    expect(rows.first).to_contain_text(single.sort_values("ratio")["format_a"].iloc[0], timeout=TIMEOUT_MS)
    shown = highlighted(rows)
    assert shown == [True] * min(wins, len(shown)) + [False] * (len(shown) - min(wins, len(shown)))
    if len(single) <= 5:         # the small store: every row is rendered
        assert len(shown) == len(single)

    screenshot(page, "fp8")

    # encoding A → bf16: the single pairs are the bf16 ones; no bf16 double formats, said in one line
    page.locator("select").nth(2).select_option(label="bf16")
    expect(page.get_by_text(f"bf16 at B/2 beats f16 at B in {int((single_bf16['ratio'] < 1).sum())} of "
                            f"{len(single_bf16)} pairs")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("missing: the store has no double formats with bf16 scales")).to_be_visible()
    expect(line).to_have_count(0)
    page.wait_for_function(f"() => ({PLOTTED_PAIRS})().length === 2", timeout=TIMEOUT_MS)
    assert plotted(page) == [sorted(single_bf16["format_a"])] * 2
    expect(page.locator(".bk-events")).to_have_count(2)

    watch.check()
