"""`workbench serve` is the server itself (it execs `panel serve`), so one signal ends it and
frees its port: no orphaned child keeps serving after the wrapper is killed."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from workbench.browser import SERVER_START_S, free_port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_one_signal_ends_the_server_and_frees_its_port(sig, small_store):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "serve", "--port", str(port),
                             "--address", "127.0.0.1", "--store", str(small_store)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not _listening(port):
            assert proc.poll() is None, f"workbench serve exited early ({proc.returncode})"
            assert time.monotonic() < deadline, "workbench serve did not start listening"
            time.sleep(0.25)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/workbench", timeout=60) as r:
            assert r.status == 200
        assert _children(proc.pid) == []          # the server is this process, not a child of it
        # its allocator returns a closed session's memory (browser.SERVE_ENV), and unconnected
        # sessions live 10 minutes (browser.SERVE_ARGS)
        environ = dict(v.split("=", 1) for v in open(f"/proc/{proc.pid}/environ").read().split("\0") if "=" in v)
        assert environ["PYTHONMALLOC"] == "malloc"
        assert "--unused-session-lifetime" in open(f"/proc/{proc.pid}/cmdline").read().split("\0")
        proc.send_signal(sig)                     # to the process alone, not its group
        assert proc.wait(timeout=30) is not None
        deadline = time.monotonic() + 10
        while _listening(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _listening(port), "the port is still served after the server was signalled"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
