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


@pytest.mark.parametrize("query", ["?page=bogus", "?page=", "?theme=default"],
                         ids=["unknown", "empty", "missing"])
def test_an_unknown_or_missing_page_opens_pareto(page: Page, server, watch, query):
    page.goto(server["url"] + query)
    pareto = PAGES[0]
    expect(page.get_by_text(pareto.question)).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator(".bk-events")).to_have_count(1, timeout=TIMEOUT_MS)   # its plot, drawn
    for other in PAGES[1:]:
        expect(page.get_by_text(other.question)).to_have_count(0)
    # the sidebar still works from there
    page.get_by_text(PAGES[1].title, exact=True).click()
    expect(page.get_by_text(PAGES[1].question)).to_be_visible(timeout=TIMEOUT_MS)
    expect(page).to_have_url(re.compile(rf"[?&]page={PAGES[1].slug}\b"), timeout=TIMEOUT_MS)
    watch.check()
