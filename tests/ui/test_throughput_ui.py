"""The Throughput page in a real headless chromium: the plot renders, the quantize/dequantize
toggle changes the plotted rates, and recorded llama.cpp reference timings appear on top.

Run with ``WORKBENCH_SCREENSHOT=1`` to refresh docs/screenshot-throughput.png.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from workbench import store as st
from workbench.views.throughput import NO_REFERENCE, throughput_table

pytestmark = pytest.mark.ui

TIMEOUT_MS = 30_000
# The rates of the sweep's layers (sources with 'wps' and 'where') or of the reference layers
# (sources with 'wps' and 'implementation') in the plots on screen, sorted. Walks the rendered
# views, not Bokeh.documents' models: a replaced figure's models linger in the document.
RATES = """kind => { const out = [], seen = new Set();
    const walk = v => { if (seen.has(v)) return; seen.add(v);
        for (const r of (v.model.renderers ?? [])) { const d = r.data_source?.data;
            if (d && "wps" in d && kind in d) out.push(...d.wps); }
        for (const c of (v.child_views ?? [])) walk(c); };
    const index = Bokeh.index;
    for (const v of (index instanceof Map ? index.values() : (index.roots ?? Object.values(index)))) walk(v);
    return out.sort((a, b) => a - b); }"""


# True once the plotted rates of that kind are the expected ones (same count, equal to 1e-9).
SHOWS_RATES = f"""([kind, expected]) => {{ const got = ({RATES})(kind);
    return got.length === expected.length &&
           got.every((v, i) => Math.abs(v - expected[i]) <= 1e-9 * Math.abs(expected[i])); }}"""


def rates(page, kind: str = "where") -> list[float]:
    return page.evaluate(RATES, kind)


def wait_for_rates(page, expected: list[float], kind: str = "where"):
    """Until the plot shows these rates: a redraw briefly holds the old and the new layers."""
    page.wait_for_function(SHOWS_RATES, arg=[kind, expected], timeout=TIMEOUT_MS)


def expected_rates(store: Path, direction: str) -> list[float]:
    """The plotted rates, in M weights/s (the plot's unit, as the table's)."""
    table = throughput_table(st.results(store, st.models(store)[0]))
    return sorted((table[f"{direction}_wps"].dropna() / 1e6).tolist())


def test_throughput_page_renders_and_toggles(page: Page, server, watch, screenshot):
    page.goto(server["url"] + "?page=throughput")
    expect(page.get_by_text("How fast does each format quantize and dequantize?")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator(".bk-events")).to_have_count(1, timeout=TIMEOUT_MS)
    quant = expected_rates(server["store"], "quant")
    wait_for_rates(page, quant)
    if not len(st.timings(server["store"])):
        expect(page.get_by_text(NO_REFERENCE.replace("`", ""))).to_be_visible()   # `…` is code
    expect(page.locator(".tabulator").first.locator(".tabulator-row").first).to_be_visible()

    screenshot(page, "throughput")

    page.get_by_role("button", name="dequantize").click()
    dequant = expected_rates(server["store"], "dequant")
    assert dequant != quant
    wait_for_rates(page, dequant)
    assert rates(page) != quant
    expect(page.locator(".bk-events")).to_have_count(1)

    watch.check()


def test_recorded_reference_is_overlaid(page: Page, own_server, own_watch, oracle, minilm_tensors):
    """A real (tiny) benchmark recorded into the served store before the page opens: its rates
    are drawn in quantize mode and dropped in dequantize mode, which llama.cpp is not timed for."""
    from workbench.bench_llamacpp import measure_vs_llamacpp, record
    name = "encoder.layer.0.output.dense.weight"
    long = measure_vs_llamacpp({name: minilm_tensors[name][:16]}, types=["Q4_0", "Q8_0"], threads=2, repeat=1)
    record(own_server["store"], long, st.models(own_server["store"])[0])
    reference = sorted((st.timings(own_server["store"])
                        .loc[lambda t: t["imatrix"] == "", "quant_wps"] / 1e6).tolist())
    assert len(reference) == 2 * 2 * 2          # 2 types × 2 implementations × 1 and 2 threads

    watch = own_watch
    page.goto(own_server["url"] + "?page=throughput")
    expect(page.get_by_text("llama.cpp reference: 2 types measured on")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text(NO_REFERENCE.replace("`", ""))).to_have_count(0)
    wait_for_rates(page, reference, "implementation")
    # the reference table: by bpw, then implementation and threads, so llama.cpp's 1-thread Q4_0 first
    first = page.locator(".tabulator").nth(1).locator(".tabulator-row").first
    expect(first).to_contain_text("Q4_0")
    expect(first).to_contain_text("llama.cpp")

    page.get_by_role("button", name="dequantize").click()
    expect(page.get_by_text("the llama.cpp reference times quantization only")).to_be_visible(timeout=TIMEOUT_MS)
    wait_for_rates(page, [], "implementation")
    wait_for_rates(page, expected_rates(own_server["store"], "dequant"))

    watch.check()
