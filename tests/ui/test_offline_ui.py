"""The dashboard works offline: loading each of its pages (the Truth page too, on the small store
and on one with evaluations) in a real headless chromium asks no other machine for anything (no
web font, no CDN); every resource comes from `panel serve`.

Every request whose host is not loopback is aborted and recorded (conftest's PageWatch), and
the test fails on any: an air-gapped lab refuses them, so such a page would load without its
font or script there, and a real browser would log a failed resource.
"""
from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from workbench.browser import is_local
from workbench.views.app import PAGES

pytestmark = pytest.mark.ui
TIMEOUT_MS = 60_000


def test_no_request_leaves_the_machine_on_any_page(page: Page, server, watch):
    # each page, then one in the dark theme (the template's theme toggle reloads with ?theme=dark)
    for entry, extra in [(entry, "") for entry in PAGES] + [(PAGES[0], "&theme=dark")]:
        page.goto(f"{server['url']}?page={entry.slug}{extra}")
        expect(page.get_by_text(entry.question)).to_be_visible(timeout=TIMEOUT_MS)
        page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)   # lazy fonts, modules, images
    assert len(watch.requests) > len(PAGES), watch.requests            # the watch did see the pages load
    offsite = [url for url in watch.requests if not is_local(url)]
    assert offsite == [] and watch.blocked == [], offsite or watch.blocked
    # no page holds TeX: Bokeh's MathJax bundle (1.8 MB) is not sent, Bokeh and Panel are
    scripts = [url.split("?")[0].rsplit("/", 1)[-1] for url in watch.requests]
    assert {"bokeh.min.js", "panel.min.js"} <= set(scripts), scripts
    assert "bokeh-mathjax.min.js" not in scripts, scripts
    watch.check()


from test_truth_ui import truth_server, truth_store  # noqa: E402,F401  (fixtures: a store with evaluations)


def test_no_request_leaves_the_machine_with_model_level_truth(page: Page, truth_server, watch_for):
    """The Truth page with its figures (scatter, table, bars) and the Pareto page with a
    model-level axis (a second y axis) on a store that holds evaluations: still nothing offsite."""
    from workbench.views.app import BY_SLUG
    watch = watch_for(truth_server)
    for slug in ("truth", "pareto", "sweep"):
        page.goto(f"{truth_server['url']}?page={slug}")
        expect(page.get_by_text(BY_SLUG[slug].question)).to_be_visible(timeout=TIMEOUT_MS)
        if slug == "pareto":
            page.locator("select").nth(1).select_option(label="drift (model-level)")
            expect(page.locator(".frontier-note")).to_be_visible(timeout=TIMEOUT_MS)
        page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
    offsite = [url for url in watch.requests if not is_local(url)]
    assert offsite == [] and watch.blocked == [], offsite or watch.blocked
    watch.check()
