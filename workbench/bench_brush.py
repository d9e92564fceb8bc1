"""Benchmark: time from the end of a brush on the Pareto plot to the table update, in a real
browser, with 100,000+ result rows in the store. Not a test (`workbench bench --brush`).

The store: a real sweep of the default model (every format of the default grid on all its
tensors: 18,480 rows), written again under distinct ``device`` labels (``<device> copy k``)
until it holds at least ``rows`` rows. The natural key keeps the copies apart, so the page's
model-level query aggregates every one of them (repeated measurements count once), as it would
for a store that collaborators filled from several machines. The reference, side by side in
the same run and browser: the same brushes on the same sweep without the copies.

Each brush is a real mouse drag (press, 8 moves, release) on the plot's box-select tool, two
different boxes in turn so that every brush changes the selection. The clock starts at the
browser's ``pointerup`` and stops at the first animation frame in which the caption above the
table shows the new count and the table's first row shows the new first format; the resolution
is one frame (about 16 ms).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from workbench import store as st

TARGET_MS = 250
# (x0, y0, x1, y1) fractions of the plot's events layer, which also spans the axes and the
# legend: a drag must start inside the data frame. The two boxes select different formats.
BOXES = ((0.6, 0.2, 0.02, 0.98), (0.5, 0.15, 0.25, 0.9))
START = """() => { window.__up = null;
    document.addEventListener("pointerup", () => { window.__up = performance.now(); }, {capture: true}); }"""
# the caption lives in a shadow root; its host stays while Panel re-renders the text
CAPTION_HOST = "e => e.getRootNode().host"
DONE = """([host, table, before, firstBefore]) => {
    const text = host.shadowRoot ? host.shadowRoot.textContent : host.textContent;
    const cell = table.querySelector('.tabulator-row .tabulator-cell[tabulator-field="format"]');
    const first = cell ? cell.textContent : "";
    if (window.__up !== null && text !== before && /Selected formats: \\d+ of/.test(text) && first !== firstBefore) {
        window.__done = performance.now(); return true; }
    return false; }"""


def build_store(base: Path, out: Path, rows: int) -> int:
    """Copy the sweep in ``base`` to ``out`` and add copies under other device labels until the
    store holds at least ``rows`` result rows; returns the row count."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base, out, ignore=shutil.ignore_patterns(".*"))
    df = st.results(base)
    if df.empty:
        raise SystemExit(f"{base}: no results to build the benchmark store from")
    total, k = len(df), 1
    while total < rows:
        st.write(out, "results", df.assign(device=df["device"] + f" copy {k}", run_id=st.new_run_id()))
        total += len(df)
        k += 1
    return total


def measure(url: str, brushes: int, timeout_ms: int = 60_000) -> list[float]:
    """Milliseconds from pointerup to the updated table, for ``brushes`` brushes on the page.
    Playwright's sync API refuses to start where an asyncio loop already runs in this thread
    (a test session's own playwright): then it runs in a thread of its own."""
    import asyncio
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _measure(url, brushes, timeout_ms)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_measure, url, brushes, timeout_ms).result()


def _measure(url: str, brushes: int, timeout_ms: int) -> list[float]:
    from playwright.sync_api import sync_playwright
    from workbench.browser import is_local, launch_args
    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(**launch_args())
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route(lambda u: not is_local(u), lambda route: route.abort())   # never off the machine
        page.goto(url + "?page=pareto")
        caption = page.get_by_text("Selected formats:")
        caption.wait_for(timeout=timeout_ms)
        page.locator(".bk-events").first.wait_for(timeout=timeout_ms)
        page.evaluate(START)
        host = caption.element_handle().evaluate_handle(CAPTION_HOST)
        table = page.locator(".tabulator").first.element_handle()   # (inside a shadow root)
        for i in range(brushes + 1):                  # the first brush warms up, not counted
            box = page.locator(".bk-events").first.bounding_box()
            x0, y0, x1, y1 = BOXES[i % 2]
            before = host.evaluate("h => h.shadowRoot ? h.shadowRoot.textContent : h.textContent")
            cell = page.locator('.tabulator-row .tabulator-cell[tabulator-field="format"]')
            first = cell.first.text_content() if cell.count() else ""
            page.evaluate("() => { window.__up = null; window.__done = null; }")
            page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
            page.mouse.down()
            page.mouse.move(box["x"] + x1 * box["width"], box["y"] + y1 * box["height"], steps=8)
            page.mouse.up()
            page.wait_for_function(DONE, arg=[host, table, before, first], polling="raf", timeout=timeout_ms)
            if i:
                out.append(page.evaluate("() => window.__done - window.__up"))
            time.sleep(0.3)
        browser.close()
    return out


def stats(ms: list[float]) -> dict:
    s = sorted(ms)
    return {"brushes": len(s), "median_ms": statistics.median(s), "p90_ms": s[min(len(s) - 1, int(0.9 * len(s)))],
            "min_ms": s[0], "max_ms": s[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="workbench bench --brush", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, help="a store holding a full default sweep (default: run one, ~2 min)")
    ap.add_argument("--rows", type=int, default=100_000, help="result rows in the benchmark store")
    ap.add_argument("--brushes", type=int, default=15)
    ap.add_argument("--out", type=Path, help="also write the table (markdown) here")
    a = ap.parse_args(argv)
    from workbench.browser import serve
    from workbench import sweep
    with tempfile.TemporaryDirectory() as tmp:
        base = a.base
        if base is None:
            base = Path(tmp) / "base"
            print("sweeping the default model (every format of the default grid) ...")
            sweep.run(store=base, progress=True)
        big = Path(tmp) / "big"
        n = build_store(base, big, a.rows)
        ref_rows = len(st.results(base))
        rows = []
        for label, store, count in (("reference: the sweep alone", base, ref_rows),
                                     (f"the sweep + copies ({n:,} rows)", big, n)):
            with serve(store) as srv:
                ms = measure(srv["url"], a.brushes)
            rows.append({"store": label, "result rows": count, **stats(ms)})
            print(f"{label}: median {rows[-1]['median_ms']:.0f} ms over {len(ms)} brushes")
    df = pd.DataFrame(rows)
    df["median vs reference"] = [f"{v:.2f}" for v in df["median_ms"] / df["median_ms"].iloc[0]]
    df["result rows"] = df["result rows"].astype(int)
    table = _markdown(df)
    verdict = (f"target ≤ {TARGET_MS} ms: {'met' if df['median_ms'].iloc[-1] <= TARGET_MS else 'NOT met'} "
               f"(median at {n:,} rows)")
    print(table)
    print(verdict)
    if a.out:
        a.out.write_text(f"# Brush → table latency (Pareto page, headless chromium)\n\n"
                         f"`workbench bench --brush --brushes {a.brushes}` on {st.device_name()}, "
                         f"{time.strftime('%Y-%m-%d')}\n\n{table}\n\n{verdict}\n")
    return 0


def _markdown(df: pd.DataFrame) -> str:
    cell = lambda v: f"{v:,}" if isinstance(v, int) else f"{v:.1f}" if isinstance(v, float) else str(v)
    rows = [list(df.columns), ["---"] * len(df.columns)] + [[cell(v) for v in r] for r in df.itertuples(index=False)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


if __name__ == "__main__":
    raise SystemExit(main())
