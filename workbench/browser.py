"""The dashboard in a real browser: `panel serve workbench` in a subprocess and Debian's chromium
driven by playwright. Shared by the UI tests (tests/ui) and the brush-latency benchmark.

Playwright's own browser download is never used (no network at run time): ``executable_path``
points it at the system chromium.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
# no sandbox (root in containers), no GPU, and no background traffic to retry while offline
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
SERVER_START_S = 90      # the first session imports panel/holoviews in the server process


def is_local(url: str) -> bool:
    """True for a request that stays on this machine: a loopback host (127.0.0.0/8, ::1,
    localhost) on any port, or a data:/blob:/about: URL. The dashboard must work offline."""
    if url.startswith(("data:", "blob:", "about:")):
        return True
    host = urlsplit(url).hostname
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class ServerError(RuntimeError):
    """`panel serve` exited or did not start in time; the message holds its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A session whose page is served but whose browser connects late (a loaded machine) must still be
# there when the websocket arrives: bokeh drops an unconnected session after 15 s by default, and
# a session made afresh on the websocket is never rendered into a page, so its stylesheets keep
# Panel's CDN URLs (requests that leave the machine, an unstyled page offline).
SERVE_ARGS = ("--unused-session-lifetime", "600000")
# The server's environment: Python's small-object allocator keeps a 256 KiB arena while any
# object in it lives, so twenty sessions' documents, freed, left ~75 MB of half-empty arenas
# (RSS 253 MB idle, 329 MB after). With glibc's malloc for every object, the memory a discarded
# session frees goes back to the system at its malloc_trim (``views.app.release_memory``):
# +26 MB after twenty sessions (docs/bench-sessions.md).
SERVE_ENV = {"PYTHONMALLOC": "malloc"}


@contextlib.contextmanager
def serve(store: str | os.PathLike, start_s: float = SERVER_START_S, env: dict | None = None,
          app: str = "workbench", server: str = "panel"):
    """`python -m panel serve workbench` on a free port, reading ``store``; yields a dict with its
    ``url``, the ``log`` lines so far (a live list), the ``store`` path and the server's ``pid``.
    ``app``/``server``: another app (a directory or script relative to the project's root) and
    `bokeh serve` for it (the sessions benchmark's reference page, ``bench_floor``)."""
    port = free_port()
    cmd = [sys.executable, "-m", server, "serve", app, "--port", str(port),
           "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}", *SERVE_ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **SERVE_ENV, **(env or {}), "WORKBENCH_STORE": str(store)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def pump():   # keep draining the pipe so the server never blocks on a full buffer
        for line in proc.stdout:
            log.append(line)
            lines.put(line)
    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + start_s
        while True:
            if proc.poll() is not None:
                raise ServerError(f"{server} serve exited ({proc.returncode}):\n{''.join(log)}")
            try:
                if "Bokeh app running at" in lines.get(timeout=max(0.1, deadline - time.monotonic())):
                    break
            except queue.Empty:
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"{server} serve did not start in {start_s} s:\n{''.join(log)}")
        yield {"url": f"http://127.0.0.1:{port}/{Path(app).stem}", "log": log, "store": Path(store), "pid": proc.pid}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def launch_args() -> dict:
    """Keyword arguments for playwright's ``chromium.launch`` (system chromium, headless)."""
    if not os.path.exists(CHROMIUM):
        raise FileNotFoundError(f"no system chromium at {CHROMIUM} (apt-get install chromium)")
    return {"executable_path": CHROMIUM, "args": CHROMIUM_ARGS, "headless": True}


# The bokeh figures on screen (rendered views only: a replaced figure's model can linger in the
# document): model id, title, y factors and the data frame's box in page coordinates (the
# canvas also holds the axes, the legend and the toolbar). For page.evaluate().
FIGURES_JS = """() => { const seen = [];
    const visit = v => { if (!v || seen.includes(v)) return; seen.push(v); (v.child_views ?? []).forEach(visit); };
    Object.values(Bokeh.index).forEach(visit);
    return seen.filter(v => v.frame && v.model.title && v.el.isConnected).map(v => {
        const r = v.el.getBoundingClientRect(), f = v.frame.bbox;
        return {id: v.model.id, title: String(v.model.title.text), rows: v.model.y_range.factors ? [...v.model.y_range.factors] : null,
                x: r.x + f.x0, y: r.y + f.y0, w: f.x1 - f.x0, h: f.y1 - f.y0}; }); }"""
