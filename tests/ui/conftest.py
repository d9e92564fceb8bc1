"""UI fixtures: a small real store, `panel serve workbench` on it, and Debian's chromium.

Playwright's own browser download is never used (no network here): the session fixture
`browser_type_launch_args` points pytest-playwright at /usr/bin/chromium instead. A UI test
(marked ``ui``) never skips quietly for a missing chromium: it fails at setup, before any
fixture, with one line saying what to install, unless the UI tests were switched off with
WORKBENCH_NO_UI=1 (then it skips, saying so).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest

from workbench.browser import CHROMIUM, CHROMIUM_ARGS, ROOT, ServerError, is_local, serve

NO_UI = "WORKBENCH_NO_UI"


def require_chromium():
    """Skip when the UI tests are switched off (WORKBENCH_NO_UI=1); fail when chromium is missing."""
    if os.environ.get(NO_UI) == "1":
        pytest.skip(f"{NO_UI}=1: the UI tests are switched off")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium) "
                    f"or set {NO_UI}=1 to switch the UI tests off", pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before any fixture (the small store takes a while): every ``ui`` test needs chromium."""
    if item.get_closest_marker("ui"):
        require_chromium()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    require_chromium()
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


class PageWatch:
    """Everything that went wrong on one page; ``check()`` asserts there was nothing.

    * ``blocked``: requests for another machine (a web font, a CDN), aborted: the dashboard
      works offline, so any such request fails the test (also a websocket to another host);
    * ``errors``: console messages of type error (including chromium's "Failed to load
      resource"), uncaught page errors, failed requests (``requestfailed``) and HTTP responses
      with status >= 400;
    * ``requests``: every URL the page asked for, in order;
    and at ``check()`` no traceback text on the page and no ERROR/Traceback in the server log.
    """

    def __init__(self, page, server):
        self.page, self.server = page, server
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.requests: list[str] = []
        page.on("request", lambda req: self.requests.append(req.url))
        page.route(lambda url: not is_local(url), self._block)
        page.on("websocket", lambda ws: None if is_local(ws.url) else self.blocked.append(ws.url))
        page.on("console", lambda msg: self.errors.append(
            f"console error: {msg.text} (at {msg.location.get('url') or '?'})") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("requestfailed", lambda req: self.errors.append(f"request failed: {req.url} ({req.failure})"))
        page.on("response", lambda resp: self.errors.append(
            f"HTTP {resp.status} for {resp.url}") if resp.status >= 400 else None)

    def _block(self, route):
        self.blocked.append(route.request.url)
        route.abort()

    def check(self):
        from playwright.sync_api import expect
        if not self.page.is_closed():
            expect(self.page.get_by_text("Traceback")).to_have_count(0)
        assert not self.blocked, f"requests that would leave the machine: {self.blocked}"
        assert not self.errors, "\n".join(self.errors)
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


@pytest.fixture
def watch_opened_pages(monkeypatch):
    """``watch_opened_pages(server)``: a list that gets a PageWatch for each page the code under
    test opens itself with playwright's ``Browser.new_page`` during the test (the brush
    benchmark's ``measure()`` launches its own browser); call ``check()`` on each."""
    from playwright.sync_api import Browser
    new_page, watches = Browser.new_page, []

    def start(server):
        def watched(self, *args, **kwargs):
            page = new_page(self, *args, **kwargs)
            watches.append(PageWatch(page, server))
            return page
        monkeypatch.setattr(Browser, "new_page", watched)
        return watches
    return start


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
