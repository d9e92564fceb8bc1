"""The dashboard's shell without a browser: pages are built when first shown, a page that
changes the store makes the others re-read it when next shown, the template holds one page."""
from __future__ import annotations

import pytest

from workbench import store as st
from workbench.views.app import BY_SLUG, PAGES, Workbench, page_class


def test_every_registered_page_imports_and_has_the_protocol():
    assert [p.slug for p in PAGES] == ["pareto", "fp8", "tensors", "throughput", "sweep", "data"]
    for entry in PAGES:
        cls = page_class(entry)
        assert callable(getattr(cls, "reload", None)), entry.slug


def test_pages_are_built_lazily_and_reloaded_after_a_change(small_store, tmp_path, monkeypatch):
    wb = Workbench(store=small_store)
    assert list(wb.pages) == ["pareto"] and wb.main.objects[1] is wb.pages["pareto"].main
    assert wb.controls.objects == [wb.pages["pareto"].controls]
    wb.nav.value = "fp8"
    assert list(wb.pages) == ["pareto", "fp8"] and wb.main.objects[1] is wb.pages["fp8"].main
    assert BY_SLUG["fp8"].question in wb.heading.object

    reloaded = []
    for slug, page in wb.pages.items():
        monkeypatch.setattr(page, "reload", lambda s=slug: reloaded.append(s))
    wb._changed("fp8")                      # e.g. an import on that page
    wb.nav.value = "fp8"                    # the page that changed the store is not reloaded
    assert reloaded == []
    wb.nav.value = "pareto"
    assert reloaded == ["pareto"]
    wb.nav.value = "fp8"
    wb.nav.value = "pareto"                 # once reloaded, not again
    assert reloaded == ["pareto"]


def test_an_unknown_page_falls_back_to_pareto(small_store):
    assert Workbench(store=small_store, page="nope").nav.value == "pareto"


@pytest.mark.parametrize("slug", [p.slug for p in PAGES])
def test_each_page_builds_on_an_empty_store(slug, tmp_path):
    wb = Workbench(store=tmp_path / "empty", page=slug)
    page = wb.pages[slug]
    assert st.models(tmp_path / "empty") == []
    page.reload()                           # and re-reads it without an error
