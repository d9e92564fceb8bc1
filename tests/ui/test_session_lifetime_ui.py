"""Session lifetime on `panel serve workbench`: a browser that leaves frees its session soon.

The server keeps an *unconnected* session for 10 minutes (``browser.SERVE_ARGS``: a browser that
connects late on a loaded machine must find the page it was served, or it gets a fresh session
with CDN stylesheets). A session whose browser has closed is discarded at bokeh's next sweep
instead (``views.app.expire_on_close``), and its memory released (``release_memory`` logs a line).
"""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import Browser, expect

from conftest import serve_store

pytestmark = pytest.mark.ui
TIMEOUT_MS = 60_000
DISCARDED = "discarded; memory released"
SWEEP_S = 17 + 25           # bokeh checks for unused sessions every 17 s; margin for a loaded machine


def discarded(srv) -> int:
    return sum(DISCARDED in line for line in list(srv["log"]))


def test_a_closed_session_is_discarded_within_a_sweep(browser: Browser, small_store):
    with serve_store(small_store) as srv:
        ctx = browser.new_context()
        page = ctx.new_page()
        page.goto(srv["url"] + "?page=pareto")
        expect(page.get_by_text("Selected formats:")).to_be_visible(timeout=TIMEOUT_MS)
        assert discarded(srv) == 0
        ctx.close()                 # the websocket closes: the session has no connection left
        t0 = time.monotonic()
        while discarded(srv) == 0 and time.monotonic() - t0 < SWEEP_S:
            time.sleep(0.5)
        waited = time.monotonic() - t0
        assert discarded(srv) == 1, f"not discarded {waited:.0f} s after its browser closed"
        assert not [ln for ln in srv["log"] if " ERROR" in ln or "Traceback" in ln]
