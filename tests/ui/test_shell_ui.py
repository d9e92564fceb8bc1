"""The shell in a real headless chromium: one template, a page per question picked in the
sidebar and kept in the URL; every page renders in one session with no console error."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from workbench.views.app import PAGES

pytestmark = pytest.mark.ui
TIMEOUT_MS = 60_000


def test_every_page_from_the_sidebar_in_one_session(page: Page, server, watch):
    page.goto(server["url"])
    expect(page.get_by_text(PAGES[0].question)).to_be_visible(timeout=TIMEOUT_MS)   # the default page
    for entry in PAGES[1:] + PAGES[:1]:
        page.get_by_text(entry.title, exact=True).click()
        expect(page.get_by_text(entry.question)).to_be_visible(timeout=TIMEOUT_MS)
        expect(page).to_have_url(re.compile(rf"[?&]page={entry.slug}\b"), timeout=TIMEOUT_MS)
        others = [p.question for p in PAGES if p is not entry]
        for question in others:          # one page at a time in the main area
            expect(page.get_by_text(question)).to_have_count(0)
    # a shared link opens on its page
    page.goto(server["url"] + "?page=throughput")
    expect(page.get_by_text(next(p.question for p in PAGES if p.slug == "throughput"))).to_be_visible(
        timeout=TIMEOUT_MS)
    watch.check()
