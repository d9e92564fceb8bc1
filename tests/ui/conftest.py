"""UI fixtures: a small real store, `panel serve workbench` on it, and Debian's chromium.

Playwright's own browser download is never used (no network here): the session fixture
`browser_type_launch_args` points pytest-playwright at /usr/bin/chromium instead.
"""
from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SERVER_START_S = 90      # the first session imports panel/holoviews in the server process


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no system chromium at {CHROMIUM}")
    return {**browser_type_launch_args, "executable_path": CHROMIUM,
            "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run", "--disable-sync",
                     "--disable-quic"]}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}}


def build_small_store(tmp_path_factory) -> Path:
    """A real store: the default model's layer-0 tensors × the 12 'small' formats. Built once
    per session under pytest's base temp (tests/test_views.py reuses the same folder)."""
    from workbench import sweep
    path = tmp_path_factory.getbasetemp() / "small-store"
    done = path / ".complete"
    if not done.exists():
        sweep.run(formats="small", tensors=r"layer\.0\.", store=path, progress=False)
        done.touch()
    return path


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> Path:
    return build_small_store(tmp_path_factory)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(small_store):
    """`python -m panel serve workbench` on a free port, reading ``small_store``; its URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "panel", "serve", "workbench", "--port", str(port),
           "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}"]
    # WORKBENCH_SCREENSHOT_STORE: take the README screenshot from a real full sweep instead
    store = os.environ.get("WORKBENCH_SCREENSHOT_STORE") or str(small_store)
    env = {**os.environ, "WORKBENCH_STORE": store}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def pump():   # keep draining the pipe so the server never blocks on a full buffer
        for line in proc.stdout:
            log.append(line)
            lines.put(line)
    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"panel serve exited ({proc.returncode}) or did not start in "
                            f"{SERVER_START_S} s:\n{''.join(log)}")
            try:
                if "Bokeh app running at" in lines.get(timeout=max(0.1, deadline - time.monotonic())):
                    break
            except queue.Empty:
                pytest.fail(f"panel serve did not start in {SERVER_START_S} s:\n{''.join(log)}")
        yield {"url": f"http://127.0.0.1:{port}/workbench", "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
