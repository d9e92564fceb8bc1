"""Benchmark: many users at once on the Pareto page, in real browsers. Not a test
(`workbench bench --sessions 20`).

One `panel serve workbench` on a store holding a full default sweep; ``sessions`` chromium
contexts open the Pareto page together (one asyncio loop, one browser), wait for the plot (its
data frame laid out, the table caption sent), then each draws one box-select brush (a real mouse
drag across the settled data frame, on the plot's box-select tool) and waits for the table
caption to report the selection. The clients look at Bokeh's models and views, not at the
page's text (``POLL_MS``): they share the server's two cores. Per session: seconds from navigation to the plot,
and from the brush's release to the updated caption (or "not registered" after ``timeout_s``).
Every request that would leave the machine is blocked and counted (the dashboard must work
offline), and console errors are counted. The server's resident memory (VmRSS of its process)
is sampled every 0.2 s: at start, idle (``settle_s`` after one warm-up session came and went:
the libraries a session imports stay loaded), its peak, and ``settle_s`` after every session
has closed (Bokeh drops a closed session's document after ~15 s; the workbench then
collects garbage and returns freed memory to the system, ``views.app.release_memory``).
Targets (issue 11): every brush registers, time to plot p95 ≤ 10 s, peak RSS ≤ 400 MB, after ≤
idle + 50 MB.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path


TARGETS = {"plot_p95_s": 10.0, "peak_rss_mb": 400.0, "rss_return_mb": 50.0}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssSampler:
    """The peak of a process's RSS, sampled every ``every_s`` in a thread."""

    def __init__(self, pid: int, every_s: float = 0.2):
        self.pid, self.every_s, self.peak = pid, every_s, rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every_s):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, RuntimeError):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far: by process ``pid`` (/proc/<pid>/stat), or by the
    whole machine, every core (/proc/stat), when ``pid`` is None."""
    tick = os.sysconf("SC_CLK_TCK")
    if pid is None:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        user, nice, system = (int(v) for v in fields[:3])
        irq, softirq = int(fields[5]), int(fields[6])
        return (user + nice + system + irq + softirq) / tick
    with open(f"/proc/{pid}/stat") as f:
        after = f.read().rsplit(")", 1)[1].split()
    return (int(after[11]) + int(after[12])) / tick


def _error_blocks(log: list[str]) -> list[str]:
    """Each ERROR line or traceback of the server's log as one entry: a traceback with its last
    frame and its exception line (what a reader needs to find the fault)."""
    out, i = [], 0
    while i < len(log):
        ln = log[i]
        if "Traceback" in ln:
            j = i + 1
            while j < len(log) and log[j][:1] in (" ", "\t"):
                j += 1
            block = log[i:j + 1]
            out.append(" | ".join(x.strip() for x in block[-3:]))
            i = j + 1
            continue
        if " ERROR" in ln:
            out.append(ln.strip())
        i += 1
    return out


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))] if s else float("nan")


# The clients wait the way a person does, without loading the machine they share with the
# server: a look at Bokeh's own models and views every POLL_MS, never a text search through
# Panel's shadow roots (a playwright text locator costs ~6 ms of renderer CPU per look: twenty
# pages polling one every 50 ms spent more CPU than the server did).
POLL_MS = 250
DISCARDED = "discarded; memory released"        # views.app.release_memory's log line
BRUSH_POLL_MS = 50       # the brush's latency is the figure of interest: a finer look, still a model scan
# The Pareto plot's data frame, once its view is laid out and connected: {x, y, w, h} in page pixels.
FRAME_JS = """() => { if (!window.Bokeh) return null; const seen = [];
    const visit = v => { if (!v || seen.includes(v)) return; seen.push(v); (v.child_views ?? []).forEach(visit); };
    Object.values(Bokeh.index).forEach(visit);
    for (const v of seen) {
        if (!v.frame || !v.model.title || !String(v.model.title.text).includes("is better") || !v.el.isConnected) continue;
        const r = v.el.getBoundingClientRect(), f = v.frame.bbox;
        if (f.x1 - f.x0 > 50 && f.y1 - f.y0 > 50) return {x: r.x + f.x0, y: r.y + f.y0, w: f.x1 - f.x0, h: f.y1 - f.y0};
    }
    return null; }"""
# The table caption's text, from its Bokeh model (what the server last sent).
CAPTION_JS = """() => { for (const doc of (window.Bokeh ? Bokeh.documents : []))
    for (const m of doc.all_models) if (typeof m.text === "string" && m.text.includes("Selected formats:")) return m.text;
    return null; }"""
# Box-select drag, as fractions of the data frame: from the upper right to the lower left.
DRAG = (0.95, 0.05, 0.02, 0.98)
# Bokeh's gestures (UIGestures.press_threshold): a pointer that has not moved 5 px within
# 300 ms of going down is a press-and-hold, and the moves after it pan nothing. Twenty pages
# and their driver on two cores can take longer than that between the mouse-down and the
# first move they dispatch, a delay no user's own browser adds; such a drag is detected (the
# page's own clock, GAP_JS), counted ("pressed") and made again.
PRESS_MS = 300
DRAG_RETRIES = 3
# Before each drag: until the page's main thread is idle (requestIdleCallback), at most 2 s. A
# drag begun while the page is still busy drawing has its moves queued behind that work, and
# bokeh's press timer fires first.
IDLE_JS = "() => new Promise(r => requestIdleCallback(() => r(true), {timeout: 2000}))"
SELECT_MS = 5_000
# True once the format points' data source has a selection in the page (bokeh's own).
SELECTED_JS = """() => Bokeh.documents.some(doc => [...doc.all_models].some(m => m.type === "ColumnDataSource"
    && "format" in m.data && "kind" in m.data && !("tensor" in m.data) && m.selected.indices.length > 0))"""
GAP_JS = """(() => { let down = null; window.__gap = null;
    addEventListener("pointerdown", () => { down = performance.now(); window.__gap = null; }, {capture: true});
    addEventListener("pointermove", e => { if (down !== null && window.__gap === null && e.buttons)
        window.__gap = performance.now() - down; }, {capture: true}); })()"""


async def _settled_frame(page, timeout_s: float) -> dict:
    """The plot's data frame once two looks POLL_MS apart agree (the layout has settled: a
    drag computed from a frame still growing would start outside it and select nothing)."""
    deadline = time.perf_counter() + timeout_s
    last = None
    while time.perf_counter() < deadline:
        frame = await page.evaluate(FRAME_JS)
        if frame is not None and frame == last:
            return frame
        last = frame
        await asyncio.sleep(POLL_MS / 1000)
    raise TimeoutError(f"the plot's frame did not settle in {timeout_s:.0f} s")


async def _one(browser, url: str, timeout_s: float, out: dict, start: asyncio.Event, shown=None):
    from workbench.browser import is_local
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    out.update(blocked=0, blocked_urls=[], console_errors=0, plot_s=None, brush_s=None, registered=False, error=None,
               pressed=0, unselected=0, gaps_ms=[], dragless=False)
    await ctx.add_init_script(GAP_JS)

    async def route(r):
        out["blocked"] += 1
        out["blocked_urls"].append(r.request.url)
        await r.abort()
    await ctx.route(lambda u: not is_local(u), route)
    page = await ctx.new_page()
    page.on("console", lambda m: out.__setitem__("console_errors", out["console_errors"] + (m.type == "error")))
    await start.wait()
    t0 = time.perf_counter()
    try:
        await page.goto(url + "?page=pareto", timeout=timeout_s * 1000)
        await page.wait_for_function(f"() => ({FRAME_JS})() !== null && ({CAPTION_JS})() !== null",
                                     polling=POLL_MS, timeout=timeout_s * 1000)
        out["plot_s"] = time.perf_counter() - t0
        if shown is not None:
            shown()
        before = await page.evaluate(CAPTION_JS)
        x0, y0, x1, y1 = DRAG
        for attempt in range(1 + DRAG_RETRIES):
            await page.evaluate(IDLE_JS)     # as a person waits for a page that is still drawing
            # then where the plot is now: a drag made again looks again (the page's layout may
            # have moved since, as its other parts drew)
            frame = await _settled_frame(page, timeout_s)
            await page.mouse.move(frame["x"] + x0 * frame["w"], frame["y"] + y0 * frame["h"])
            await page.mouse.down()
            await page.mouse.move(frame["x"] + x1 * frame["w"], frame["y"] + y1 * frame["h"], steps=8)
            t1 = time.perf_counter()
            await page.mouse.up()
            gap = await page.evaluate("() => window.__gap")
            out["gaps_ms"].append(gap)
            if gap is None or gap > PRESS_MS:
                out["pressed"] += 1     # bokeh saw a press-and-hold, not a drag: nothing was selected
                continue
            try:                        # the browser's own selection (bokeh's, before any server reply)
                await page.wait_for_function(SELECTED_JS, polling=BRUSH_POLL_MS, timeout=SELECT_MS)
                break
            except Exception:  # noqa: BLE001 - a drag that selected nothing in the page: draw it again
                out["unselected"] += 1
        else:   # the page itself never selected: no brush reached the server, nothing to wait for
            out["dragless"] = True
            raise RuntimeError(f"none of {1 + DRAG_RETRIES} drags selected anything in the page "
                               "(the browser took each for a press or selected nothing)")
        await page.wait_for_function(f"before => ({CAPTION_JS})() !== before", arg=before,
                                     polling=BRUSH_POLL_MS, timeout=timeout_s * 1000)
        out["registered"], out["brush_s"] = True, time.perf_counter() - t1
    except Exception as exc:  # noqa: BLE001 - a timeout or a crash is a result here, not a stop
        out["error"] = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}"
    finally:
        await ctx.close()


async def _sessions(url: str, n: int, timeout_s: float, on_all_shown=None) -> list[dict]:
    from playwright.async_api import async_playwright
    from workbench.browser import launch_args
    async with async_playwright() as p:
        browser = await p.chromium.launch(**launch_args())
        start = asyncio.Event()
        outs = [dict() for _ in range(n)]
        count = [0]

        def shown():     # one more plot on screen; at the last, the caller takes its readings
            count[0] += 1
            if count[0] == n and on_all_shown is not None:
                on_all_shown()
        tasks = [asyncio.create_task(_one(browser, url, timeout_s, outs[i], start, shown)) for i in range(n)]
        await asyncio.sleep(1.0)     # every context made; then all navigate at once
        start.set()
        await asyncio.gather(*tasks)
        await browser.close()
    return outs


def _run(n: int, url: str, timeout_s: float, on_all_shown=None) -> list[dict]:
    """``_sessions`` on an event loop of its own: in a thread of its own where this thread
    already runs one (a test session's playwright does), where asyncio.run would refuse."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_sessions(url, n, timeout_s, on_all_shown))
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(_sessions(url, n, timeout_s, on_all_shown))).result()


def measure(store: Path, n: int, timeout_s: float = 240.0, settle_s: float = 45.0, floor: bool = False) -> dict:
    """The figures of ``n`` sessions at once on the Pareto page, or with ``floor`` on the
    reference page (``bench_floor``: one Bokeh plot of the same formats under `bokeh serve`)."""
    from workbench.browser import serve
    where = dict(app="workbench/bench_floor.py", server="bokeh") if floor else {}
    with serve(store, **where) as srv:
        pid = srv["pid"]
        time.sleep(2.0)
        started = rss_mb(pid)
        # idle = after one session has come and gone: the libraries a session imports (Panel's
        # models, HoloViews, the views) stay loaded for the server's life, whatever it serves
        _run(1, srv["url"], timeout_s)
        time.sleep(settle_s)
        idle = rss_mb(pid)
        t0 = time.perf_counter()
        cpu0, all0 = cpu_s(pid), cpu_s()
        at_plots = {}     # CPU s used by then, once every plot is on screen

        def all_shown():
            at_plots.update(server=cpu_s(pid) - cpu0, machine=cpu_s() - all0, wall=time.perf_counter() - t0)
        with RssSampler(pid) as sampler:
            outs = _run(n, srv["url"], timeout_s, all_shown)
            wall = time.perf_counter() - t0
            server_cpu, machine_cpu = cpu_s(pid) - cpu0, cpu_s() - all0
            time.sleep(settle_s)
        after = rss_mb(pid)
        # the warm-up's and the n sessions' (the reference page has no such log line)
        discarded = None if floor else sum(DISCARDED in ln for ln in list(srv["log"]))
        errors = _error_blocks(list(srv["log"]))
    plots = [o["plot_s"] for o in outs if o["plot_s"] is not None]
    brushes = [o["brush_s"] for o in outs if o["brush_s"] is not None]
    return {"page": "reference" if floor else "pareto", "sessions": n, "plots_shown": len(plots), "brushes_registered": sum(o["registered"] for o in outs),
            "plot_p50_s": statistics.median(plots) if plots else float("nan"),
            "plot_p95_s": percentile(plots, 0.95),
            "brush_p50_s": statistics.median(brushes) if brushes else float("nan"),
            "brush_p95_s": percentile(brushes, 0.95),
            "rss_started_mb": started, "rss_idle_mb": idle, "rss_peak_mb": sampler.peak, "rss_after_mb": after,
            "blocked_requests": sum(o["blocked"] for o in outs),
            "console_errors": sum(o["console_errors"] for o in outs),
            "server_errors": len(errors), "server_error_lines": errors[:5],
            "blocked_urls": sorted({u for o in outs for u in o["blocked_urls"]})[:10],
            "failures": [o["error"] for o in outs if o["error"]],
            "wall_s": wall, "server_cpu_s": server_cpu, "others_cpu_s": max(machine_cpu - server_cpu, 0.0),
            "plots_server_cpu_s": at_plots.get("server", float("nan")),
            "plots_others_cpu_s": max(at_plots["machine"] - at_plots["server"], 0.0) if at_plots else float("nan"),
            "plots_wall_s": at_plots.get("wall", float("nan")),
            "cores": os.cpu_count(), "discarded": discarded,
            "pressed": sum(o["pressed"] for o in outs), "unselected": sum(o["unselected"] for o in outs),
            "dragless": sum(o["dragless"] for o in outs),
            "gap_max_ms": max((g for o in outs for g in o["gaps_ms"] if g is not None), default=float("nan"))}


def client_floor_s(r: dict) -> float:
    """The chromium clients' CPU seconds until the last plot showed, over the machine's cores:
    the clients share the server's cores here, so that much wall time went to the browsers
    whatever the server cost (some of it is the first sessions' brushes, made meanwhile)."""
    return r["plots_others_cpu_s"] / max(r["cores"] or 1, 1)


def verdict(r: dict) -> list[str]:
    dragless = r["dragless"]
    return [f"every brush registers: {'met' if r['brushes_registered'] == r['sessions'] else 'NOT met'} "
            f"({r['brushes_registered']} of {r['sessions']}"
            + (f"; {dragless} of the misses: the page never selected from {1 + DRAG_RETRIES} drags, "
               "so no brush was sent)" if dragless else ")"),
            f"plot p95 ≤ {TARGETS['plot_p95_s']:.0f} s: {'met' if r['plot_p95_s'] <= TARGETS['plot_p95_s'] else 'NOT met'} "
            f"({r['plot_p95_s']:.1f} s; until the last plot the clients' own CPU filled {client_floor_s(r):.1f} s "
            f"of the {r['cores']} cores)",
            f"peak RSS ≤ {TARGETS['peak_rss_mb']:.0f} MB: {'met' if r['rss_peak_mb'] <= TARGETS['peak_rss_mb'] else 'NOT met'} "
            f"({r['rss_peak_mb']:.0f} MB)",
            f"RSS back within {TARGETS['rss_return_mb']:.0f} MB of idle: "
            f"{'met' if r['rss_after_mb'] - r['rss_idle_mb'] <= TARGETS['rss_return_mb'] else 'NOT met'} "
            f"({r['rss_after_mb'] - r['rss_idle_mb']:+.0f} MB)",
            f"offline: {'met' if r['blocked_requests'] == 0 else 'NOT met'} ({r['blocked_requests']} off-machine requests)"]


def _rows(r: dict) -> list[tuple[str, str]]:
    return [("sessions at once", f"{r['sessions']}"), ("plots shown", f"{r['plots_shown']}"),
            ("brushes registered", f"{r['brushes_registered']}"),
            ("time to plot p50 / p95 (s)", f"{r['plot_p50_s']:.1f} / {r['plot_p95_s']:.1f}"),
            ("brush → caption p50 / p95 (s)", f"{r['brush_p50_s']:.2f} / {r['brush_p95_s']:.2f}"),
            ("server RSS at start / idle after one session (MB)", f"{r['rss_started_mb']:.0f} / {r['rss_idle_mb']:.0f}"),
            ("server RSS idle / peak / after the sessions (MB)", f"{r['rss_idle_mb']:.0f} / {r['rss_peak_mb']:.0f} / {r['rss_after_mb']:.0f}"),
            ("off-machine requests blocked", f"{r['blocked_requests']}"),
            ("CPU s during the sessions: server / everything else (the chromium clients)",
             f"{r['server_cpu_s']:.1f} / {r['others_cpu_s']:.1f} over {r['wall_s']:.1f} s wall on {r['cores']} cores"),
            ("drags bokeh took for a press (first move > 300 ms after the press), made again",
             f"{r['pressed']} (longest press → move: {r['gap_max_ms']:.0f} ms)"),
            ("drags that selected nothing in the page within 5 s, made again", f"{r['unselected']}"),
            (f"sessions whose page selected nothing from {1 + DRAG_RETRIES} drags (no brush sent)",
             f"{r['dragless']}"),
            ("sessions discarded by the server after they closed (of warm-up + sessions)",
             "(not logged)" if r["discarded"] is None else f"{r['discarded']} of {r['sessions'] + 1}"),
            ("CPU s per session: server / the clients", f"{r['server_cpu_s'] / max(r['sessions'], 1):.2f} / "
             f"{r['others_cpu_s'] / max(r['sessions'], 1):.2f}"),
            ("until the last plot showed: wall s, CPU s of the server / of the clients (the clients' "
             "CPU over the cores: the wall they alone fill)",
             f"{r['plots_wall_s']:.1f}: {r['plots_server_cpu_s']:.1f} / {r['plots_others_cpu_s']:.1f} "
             f"({client_floor_s(r):.1f} s)"),
            ("console errors / server ERROR lines", f"{r['console_errors']} / {r['server_errors']}")]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b > 0 and a == a and b == b else "–"


def table(r: dict, ref: dict | None = None) -> str:
    """The figures as a markdown table; with ``ref`` (``measure(..., floor=True)`` in the same
    run) a column for the reference page beside the Pareto page's, and their ratios."""
    if ref is None:
        return "\n".join(["| measure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in _rows(r)])
    per = lambda x, k: x[k] / max(x["sessions"], 1)     # noqa: E731
    ratios = {"time to plot p50 / p95 (s)": f"{_ratio(r['plot_p50_s'], ref['plot_p50_s'])} / "
                                            f"{_ratio(r['plot_p95_s'], ref['plot_p95_s'])}",
              "CPU s per session: server / the clients": f"{_ratio(per(r, 'server_cpu_s'), per(ref, 'server_cpu_s'))} / "
                                                         f"{_ratio(per(r, 'others_cpu_s'), per(ref, 'others_cpu_s'))}"}
    out = ["| measure | Pareto page | reference page (one Bokeh plot) | ratio |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {ratios.get(a, '')} |" for (a, b), (_, c) in zip(_rows(r), _rows(ref))]
    return "\n".join(out)


def reference_verdict(ref: dict) -> str:
    """What the reference page says of the plot target: whether any Bokeh page reaches it here."""
    met = ref["plot_p95_s"] <= TARGETS["plot_p95_s"]
    return (f"reference page (one Bokeh plot of the same formats, `bokeh serve`, no Panel): plot p95 "
            f"{ref['plot_p95_s']:.1f} s, {'within' if met else 'beyond'} the {TARGETS['plot_p95_s']:.0f} s target"
            + ("" if met else f" (its clients alone filled {client_floor_s(ref):.1f} s of the {ref['cores']} cores)"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="workbench bench --sessions N", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--base", type=Path, help="a store holding a full default sweep (default: run one, ~1 min)")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds a session may wait for the plot or the brush")
    ap.add_argument("--out", type=Path, help="also write the table (markdown) here")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the reference page (one Bokeh plot, `bokeh serve`) measured after the Pareto page")
    a = ap.parse_args(argv)
    from workbench import store as st, sweep
    with tempfile.TemporaryDirectory() as tmp:
        base = a.base
        if base is None:
            base = Path(tmp) / "base"
            print("sweeping the default model (every format of the default grid) ...")
            sweep.run(store=base, progress=True)
        r = measure(base, a.sessions, a.timeout)
        ref = None if a.no_reference else measure(base, a.sessions, a.timeout, floor=True)
    text = table(r, ref)
    lines = verdict(r) + ([] if ref is None else [reference_verdict(ref)])
    print(text)
    print("\n".join(lines))
    for name, x in (("Pareto page", r), ("reference page", ref)):
        for f in ([] if x is None else x["failures"][:5]):
            print(f"  failure ({name}):", f)
    for line in r["server_error_lines"]:
        print("  server:", line)
    for url in r["blocked_urls"]:
        print("  blocked:", url)
    if a.out:
        a.out.write_text(f"# {a.sessions} sessions at once on the Pareto page (headless chromium)\n\n"
                         f"`workbench bench --sessions {a.sessions}` on {st.device_name()}, "
                         f"{time.strftime('%Y-%m-%d')}\n\n{text}\n\n" + "\n".join(f"- {v}" for v in lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
