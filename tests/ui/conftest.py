"""UI fixtures: a small real store, `panel serve workbench` on it, and Debian's chromium.

Playwright's own browser download is never used (no network here): the session fixture
`browser_type_launch_args` points pytest-playwright at /usr/bin/chromium instead.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest

from workbench.browser import CHROMIUM, CHROMIUM_ARGS, ROOT, ServerError, serve


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no system chromium at {CHROMIUM}")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}}


@contextlib.contextmanager
def serve_store(store: Path):
    """The dashboard on ``store`` (workbench.browser.serve); a failed start fails the test."""
    try:
        with serve(store) as srv:
            yield srv
    except ServerError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def server(small_store):
    """The dashboard on the shared small store (read-only tests). WORKBENCH_SCREENSHOT_STORE:
    serve that store instead (the README screenshots come from a real full sweep)."""
    with serve_store(Path(os.environ.get("WORKBENCH_SCREENSHOT_STORE") or small_store)) as srv:
        yield srv


@pytest.fixture
def own_server(small_store, tmp_path):
    """The dashboard on a private copy of the small store, for tests that write to it (a sweep,
    an import): the shared store other tests count on stays as it was."""
    store = tmp_path / "store"
    shutil.copytree(small_store, store, ignore=shutil.ignore_patterns(".complete"))
    with serve_store(store) as srv:
        yield srv


LOCAL = re.compile(r"^(https?|wss?)://127\.0\.0\.1[:/]")


class PageWatch:
    """Console errors, page errors and blocked requests of one page; ``check()`` asserts none
    that matter, no traceback text on the page and no ERROR/Traceback in the server log."""

    def __init__(self, page, server):
        self.page, self.server, self.errors, self.blocked = page, server, [], []
        # Hermetic: nothing leaves the machine (the Fast theme asks Google for a web font).
        page.route(lambda url: not LOCAL.match(url) and not url.startswith(("data:", "blob:")),
                   lambda route: (self.blocked.append(route.request.url), route.abort()))
        page.on("console", lambda msg: self.errors.append(msg) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(exc))

    def check(self):
        from playwright.sync_api import expect
        expect(self.page.get_by_text("Traceback")).to_have_count(0)
        real = [e for e in self.errors if not (getattr(e, "text", "").startswith("Failed to load resource")
                                               and not LOCAL.match(e.location.get("url", "")))]
        assert not real, [getattr(e, "text", str(e)) for e in real]
        bad = [r for r in log_records(self.server["log"]) if ("ERROR" in r or "Traceback" in r)
               and not CLOSED_SOCKET.search(r)]
        assert not bad, "".join(bad)


RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
# tornado's noise when a test's tab closes while the server still sends it an update
CLOSED_SOCKET = re.compile(r"WebSocketClosedError|StreamClosedError")


def log_records(lines: list[str]) -> list[str]:
    """The server log as records: a timestamped line with its continuation lines (tracebacks)."""
    records: list[str] = []
    for line in lines:
        if RECORD.match(line) or not records:
            records.append(line)
        else:
            records[-1] += line
    return records


@pytest.fixture
def watch(page, server):
    """A PageWatch on the shared server's page; call ``watch.check()`` at the end of a test."""
    return PageWatch(page, server)


@pytest.fixture
def own_watch(page, own_server):
    """A PageWatch on the test's private server (``own_server``)."""
    return PageWatch(page, own_server)


@pytest.fixture
def watch_for(page):
    """``watch_for(server)``: a PageWatch on the test's page for a server a test started itself."""
    return lambda server: PageWatch(page, server)


@pytest.fixture(scope="session")
def store_server():
    """``with store_server(path) as srv``: the dashboard on a store a fixture built itself."""
    return serve_store


@pytest.fixture
def screenshot(tmp_path):
    """``screenshot(page, name)`` saves a full-page shot: docs/screenshot-<name>.png with
    WORKBENCH_SCREENSHOT=1 (the README's images), else a temp file."""
    def take(page, name: str) -> Path:
        path = (ROOT / "docs" if os.environ.get("WORKBENCH_SCREENSHOT") == "1" else tmp_path) / f"screenshot-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path
    return take
