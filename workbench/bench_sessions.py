"""Benchmark: many users at once on the Pareto page, in real browsers. Not a test
(`workbench bench --sessions 20`).

One `panel serve workbench` on a store holding a full default sweep; ``sessions`` chromium
contexts open the Pareto page together (one asyncio loop, one browser), wait for the plot, then
each draws one box-select brush (a real mouse drag on the plot's box-select tool) and waits for
the table caption to report the selection. Per session: seconds from navigation to the plot,
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

from workbench.bench_brush import BOXES

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


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))] if s else float("nan")


async def _one(browser, url: str, timeout_s: float, out: dict, start: asyncio.Event):
    from workbench.browser import is_local
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    out.update(blocked=0, blocked_urls=[], console_errors=0, plot_s=None, brush_s=None, registered=False, error=None)

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
        events = page.locator(".bk-events").first
        await events.wait_for(timeout=timeout_s * 1000)
        caption = page.get_by_text("Selected formats:")
        await caption.wait_for(timeout=timeout_s * 1000)
        out["plot_s"] = time.perf_counter() - t0
        before = await caption.first.text_content()
        box = await events.bounding_box()
        x0, y0, x1, y1 = BOXES[0]
        await page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
        await page.mouse.down()
        await page.mouse.move(box["x"] + x1 * box["width"], box["y"] + y1 * box["height"], steps=8)
        t1 = time.perf_counter()
        await page.mouse.up()
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            text = await page.get_by_text("Selected formats:").first.text_content()
            if text != before:
                out["registered"], out["brush_s"] = True, time.perf_counter() - t1
                break
            await asyncio.sleep(0.05)
    except Exception as exc:  # noqa: BLE001 - a timeout or a crash is a result here, not a stop
        out["error"] = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}"
    finally:
        await ctx.close()


async def _sessions(url: str, n: int, timeout_s: float) -> list[dict]:
    from playwright.async_api import async_playwright
    from workbench.browser import launch_args
    async with async_playwright() as p:
        browser = await p.chromium.launch(**launch_args())
        start = asyncio.Event()
        outs = [dict() for _ in range(n)]
        tasks = [asyncio.create_task(_one(browser, url, timeout_s, outs[i], start)) for i in range(n)]
        await asyncio.sleep(1.0)     # every context made; then all navigate at once
        start.set()
        await asyncio.gather(*tasks)
        await browser.close()
    return outs


def _run(n: int, url: str, timeout_s: float) -> list[dict]:
    """``_sessions`` on an event loop of its own: in a thread of its own where this thread
    already runs one (a test session's playwright does), where asyncio.run would refuse."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_sessions(url, n, timeout_s))
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(_sessions(url, n, timeout_s))).result()


def measure(store: Path, n: int, timeout_s: float = 240.0, settle_s: float = 45.0) -> dict:
    from workbench.browser import serve
    with serve(store) as srv:
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
        with RssSampler(pid) as sampler:
            outs = _run(n, srv["url"], timeout_s)
            wall = time.perf_counter() - t0
            server_cpu, machine_cpu = cpu_s(pid) - cpu0, cpu_s() - all0
            time.sleep(settle_s)
        after = rss_mb(pid)
        errors = [ln.strip() for ln in srv["log"] if " ERROR" in ln or "Traceback" in ln]
    plots = [o["plot_s"] for o in outs if o["plot_s"] is not None]
    brushes = [o["brush_s"] for o in outs if o["brush_s"] is not None]
    return {"sessions": n, "plots_shown": len(plots), "brushes_registered": sum(o["registered"] for o in outs),
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
            "cores": os.cpu_count()}


def verdict(r: dict) -> list[str]:
    return [f"every brush registers: {'met' if r['brushes_registered'] == r['sessions'] else 'NOT met'} "
            f"({r['brushes_registered']} of {r['sessions']})",
            f"plot p95 ≤ {TARGETS['plot_p95_s']:.0f} s: {'met' if r['plot_p95_s'] <= TARGETS['plot_p95_s'] else 'NOT met'} "
            f"({r['plot_p95_s']:.1f} s)",
            f"peak RSS ≤ {TARGETS['peak_rss_mb']:.0f} MB: {'met' if r['rss_peak_mb'] <= TARGETS['peak_rss_mb'] else 'NOT met'} "
            f"({r['rss_peak_mb']:.0f} MB)",
            f"RSS back within {TARGETS['rss_return_mb']:.0f} MB of idle: "
            f"{'met' if r['rss_after_mb'] - r['rss_idle_mb'] <= TARGETS['rss_return_mb'] else 'NOT met'} "
            f"({r['rss_after_mb'] - r['rss_idle_mb']:+.0f} MB)",
            f"offline: {'met' if r['blocked_requests'] == 0 else 'NOT met'} ({r['blocked_requests']} off-machine requests)"]


def table(r: dict) -> str:
    rows = [("sessions at once", f"{r['sessions']}"), ("plots shown", f"{r['plots_shown']}"),
            ("brushes registered", f"{r['brushes_registered']}"),
            ("time to plot p50 / p95 (s)", f"{r['plot_p50_s']:.1f} / {r['plot_p95_s']:.1f}"),
            ("brush → caption p50 / p95 (s)", f"{r['brush_p50_s']:.2f} / {r['brush_p95_s']:.2f}"),
            ("server RSS at start / idle after one session (MB)", f"{r['rss_started_mb']:.0f} / {r['rss_idle_mb']:.0f}"),
            ("server RSS idle / peak / after the sessions (MB)", f"{r['rss_idle_mb']:.0f} / {r['rss_peak_mb']:.0f} / {r['rss_after_mb']:.0f}"),
            ("off-machine requests blocked", f"{r['blocked_requests']}"),
            ("CPU s during the sessions: server / everything else (the chromium clients)",
             f"{r['server_cpu_s']:.1f} / {r['others_cpu_s']:.1f} over {r['wall_s']:.1f} s wall on {r['cores']} cores"),
            ("server CPU s per session", f"{r['server_cpu_s'] / max(r['sessions'], 1):.2f}"),
            ("console errors / server ERROR lines", f"{r['console_errors']} / {r['server_errors']}")]
    return "\n".join(["| measure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="workbench bench --sessions N", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--base", type=Path, help="a store holding a full default sweep (default: run one, ~1 min)")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds a session may wait for the plot or the brush")
    ap.add_argument("--out", type=Path, help="also write the table (markdown) here")
    a = ap.parse_args(argv)
    from workbench import store as st, sweep
    with tempfile.TemporaryDirectory() as tmp:
        base = a.base
        if base is None:
            base = Path(tmp) / "base"
            print("sweeping the default model (every format of the default grid) ...")
            sweep.run(store=base, progress=True)
        r = measure(base, a.sessions, a.timeout)
    text = table(r)
    lines = verdict(r)
    print(text)
    print("\n".join(lines))
    for f in r["failures"][:5]:
        print("  failure:", f)
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
