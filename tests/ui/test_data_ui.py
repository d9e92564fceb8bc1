"""The Data page in a real headless chromium, on a private copy of the small store: the runs
table lists the store's runs; a collaborator's Parquet file uploads (added, then all skipped
when uploaded again); the selection downloads as a file that validates and holds exactly the
imported rows; a garbage file is refused with one line and changes nothing.

Run with ``WORKBENCH_SCREENSHOT=1`` to refresh docs/screenshot-data.png.
"""
from __future__ import annotations

import hashlib
import re

import pandas as pd
import pytest
from playwright.sync_api import Page, expect

from workbench import store as st
from workbench.sweep import run

pytestmark = pytest.mark.ui

TIMEOUT_MS = 30_000


@pytest.fixture
def collaborator(tmp_path_factory):
    """Another small store (layer 1's value matrix × the 'small' grid: rows the shared small
    store, layer 0 only, does not hold), exported as a collaborator would share it."""
    other = tmp_path_factory.mktemp("collaborator")
    run(None, "small", r"layer\.1\.attention\.self\.value", other / "store", progress=False)
    out = other / "share.parquet"
    st.export(other / "store", out)
    return out, st.results(other / "store")


def snapshot(store) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


def same_rows(a: pd.DataFrame, b: pd.DataFrame):
    key = ["model", "tensor", "format", "run_id"]
    a, b = (x.sort_values(key).reset_index(drop=True)[list(st.RESULTS_SCHEMA.names)] for x in (a, b))
    pd.testing.assert_frame_equal(a, b)


def test_runs_import_export_round_trip(page: Page, own_server, own_watch, collaborator, tmp_path, screenshot):
    store = own_server["store"]
    share, theirs = collaborator
    their_run = theirs["run_id"].unique().item()
    ours = st.runs(store)["run_id"].tolist()
    page.goto(own_server["url"] + "?page=data")

    runs = page.locator(".runs-table .tabulator-row")
    expect(runs).to_have_count(len(ours), timeout=TIMEOUT_MS)
    for rid in ours:
        expect(runs.filter(has_text=rid)).to_have_count(1)
    upload = page.locator("input[type=file]")
    expect(upload).to_have_count(1)

    # a collaborator's file: every row is new
    upload.set_input_files(str(share))
    added = page.get_by_text(f"share.parquet: added {len(theirs)} rows, skipped 0 already stored")
    expect(added).to_be_visible(timeout=TIMEOUT_MS)
    expect(runs).to_have_count(len(ours) + 1)
    expect(runs.filter(has_text=their_run)).to_have_count(1)
    stored = st.results(store)
    same_rows(stored[stored["run_id"] == their_run], theirs)

    # tick the imported run, list its skips, download it: the file validates, rows are theirs
    runs.filter(has_text=their_run).locator("input[type=checkbox]").click()
    expect(page.get_by_text(f"Export: the 1 selected run(s), {len(theirs)} rows")).to_be_visible(
        timeout=TIMEOUT_MS)
    expect(page.get_by_text("The 1 selected run(s) recorded no skips")).to_be_visible()   # results only
    with page.expect_download(timeout=TIMEOUT_MS) as info:
        page.get_by_role("button", name="Export Parquet").click()
    download = info.value
    assert download.suggested_filename == f"all-MiniLM-L6-v2-{len(theirs)}rows.parquet"
    got = tmp_path / download.suggested_filename
    download.save_as(got)
    assert st.validate_import(got).num_rows == len(theirs)
    empty = tmp_path / "empty-store"
    assert st.import_file(got, empty) == (len(theirs), 0)
    same_rows(st.results(empty), theirs)          # import → export round trip is lossless

    screenshot(page, "data")

    # our own sweep's run instead: it lists the tensors it skipped (biases, norms), with reasons
    runs.filter(has_text=their_run).locator("input[type=checkbox]").click()
    runs.filter(has_text=ours[0]).locator("input[type=checkbox]").click()
    skips = st.skips(store, [ours[0]])
    expect(page.locator("p").filter(has_text="Skipped by the 1 selected run(s)")).to_contain_text(
        f"{(skips['format'] == '').sum()} whole tensors", timeout=TIMEOUT_MS)
    expect(page.locator(".skips-table .tabulator-row").first).to_contain_text(skips["reason"].iloc[0])

    # the same file again: nothing added, nothing changed
    before = snapshot(store)
    upload.set_input_files(str(share))
    expect(page.get_by_text(f"share.parquet: added 0 rows, skipped {len(theirs)} already stored")).to_be_visible(
        timeout=TIMEOUT_MS)
    assert snapshot(store) == before

    # garbage: one line, nothing changed
    before = snapshot(store)
    upload.set_input_files(files=[{"name": "bad.parquet", "mimeType": "application/octet-stream",
                                   "buffer": b"this is not a parquet file"}])
    refused = page.get_by_text(re.compile(r"^bad\.parquet: not a readable Parquet file"))
    expect(refused).to_be_visible(timeout=TIMEOUT_MS)
    assert "\n" not in refused.inner_text()
    expect(runs).to_have_count(len(ours) + 1)
    assert snapshot(store) == before
    own_watch.check()
