"""The Data page and its store queries without a browser: runs with provenance, skips per run,
export of runs or a model (re-imports losslessly), import of a collaborator's file (added,
skipped, or refused with one line and nothing changed)."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pandas as pd
import panel as pn
import pyarrow.parquet as pq
import pytest

from workbench import store as st
from workbench.sweep import run
from workbench.views.data_page import (EMPTY_STORE, SHOWN_COLUMNS, DataPage, export_name, runs_table,
                                       safe_name)

SECOND = r"layer\.1\.output\.dense"     # a tensor the small store (layer 0 only) does not hold


@pytest.fixture
def two_runs(store) -> tuple[Path, str, str]:
    """The small store plus a second run (two formats on a layer-1 tensor): (store, first, second)."""
    first = st.runs(store)["run_id"].item()
    second = run(None, "Q4_0,Q8_0", SECOND, store, progress=False).run_id
    return store, first, second


@pytest.fixture
def other_file(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A collaborator's export: a sweep on another store (layer 1's value matrix), exported."""
    other = tmp_path_factory.mktemp("other-store")
    run(None, "small", r"layer\.1\.attention\.self\.value", other, progress=False)
    out = other / "share.parquet"
    st.export(other, out)
    return out, st.results(other)


def snapshot(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


def same_rows(a: pd.DataFrame, b: pd.DataFrame):
    key = ["model", "tensor", "format", "run_id"]
    a, b = (x.sort_values(key).reset_index(drop=True)[list(st.RESULTS_SCHEMA.names)] for x in (a, b))
    pd.testing.assert_frame_equal(a, b, check_dtype=True)


# ---------------------------------------------------------------------------- store.runs
def test_runs_one_row_per_run_with_provenance(two_runs):
    store, first, second = two_runs
    runs = st.runs(store)
    assert list(runs.columns) == list(st.RUN_COLUMNS)
    assert runs["run_id"].tolist() == [second, first]            # newest first
    res = st.results(store)
    for r in runs.itertuples():
        rows = res[res["run_id"] == r.run_id]
        assert r.rows == len(rows) and r.tensors == rows["tensor"].nunique()
        assert r.formats == rows["format"].nunique() and r.model == rows["model"].unique().item()
        for col in ("host", "backend", "device", "workbench_version", "git_rev"):
            assert getattr(r, col) == rows[col].unique().item()
        assert r.created_at == rows["created_at"].min()
    assert runs.set_index("run_id").loc[second, ["rows", "tensors", "formats"]].tolist() == [2, 1, 2]
    assert st.runs(store, [first])["run_id"].tolist() == [first]
    assert st.runs(store, []).empty and list(st.runs(store, []).columns) == list(st.RUN_COLUMNS)
    assert st.runs(store, ["no-such-run"]).empty


def test_runs_and_skips_of_an_empty_store(tmp_path):
    assert st.runs(tmp_path).empty and list(st.runs(tmp_path).columns) == list(st.RUN_COLUMNS)
    assert st.skips(tmp_path).empty and st.run_results(tmp_path, "x").empty


def test_runs_split_an_imported_run_that_mixes_models(store):
    df = st.results(store)
    st.write(store, "results", df.head(3).assign(model="another-model"))
    runs = st.runs(store)
    assert sorted(runs["model"]) == ["all-MiniLM-L6-v2", "another-model"]
    assert runs["run_id"].nunique() == 1 and sorted(runs["rows"]) == [3, len(df)]


def test_skips_per_run(two_runs):
    store, first, second = two_runs
    raw = st.query(store, "SELECT * FROM skips")
    for rid in (first, second):
        skips = st.skips(store, [rid])
        expected = raw[raw["run_id"] == rid].drop_duplicates(["tensor", "format", "reason"])
        assert len(skips) == len(expected) > 0 and set(skips["run_id"]) == {rid}
        assert (skips["reason"].str.len() > 0).all()
    assert len(st.skips(store)) == len(st.skips(store, [first])) + len(st.skips(store, [second]))
    assert st.skips(store, []).empty


def test_run_results_lowest_nmse_first(two_runs):
    store, first, _ = two_runs
    rows = st.run_results(store, first)
    assert len(rows) == st.runs(store, [first])["rows"].item()
    assert rows["nmse"].is_monotonic_increasing
    assert st.run_results(store, first, 3)["format"].tolist() == rows["format"][:3].tolist()


# -------------------------------------------------------------------- export by run ids
def test_export_run_ids_reimports_losslessly(two_runs, tmp_path):
    store, first, second = two_runs
    for ids in ([second], [first], [first, second]):
        out = tmp_path / f"{len(ids)}-{ids[0]}.parquet"
        n = st.export(store, out, run_ids=ids)
        original = st.results(store)
        original = original[original["run_id"].isin(ids)]
        assert n == len(original) > 0
        assert pq.read_table(out).num_rows == n
        empty = tmp_path / f"empty-{len(ids)}-{ids[0]}"
        assert st.import_file(out, empty) == (n, 0)
        same_rows(st.results(empty), original)
    assert st.export(store, tmp_path / "none.parquet", run_ids=[]) == 0
    # filters combine: the second run's Q8_0 rows only
    assert st.export(store, tmp_path / "q8.parquet", run_ids=[second], formats="^Q8_0$") == 1


# ------------------------------------------------------------------------ pure helpers
def test_runs_table_formats_times_and_blanks():
    stamp = pd.Timestamp("2026-01-02 03:04:05.678", tz="UTC")
    df = pd.DataFrame([{"run_id": "r1", "model": "m", "created_at": stamp, "host": "h", "backend": "b",
                        "device": "d", "workbench_version": "0.1", "git_rev": None, "imatrix_file": None,
                        "rows": 3, "tensors": 1, "formats": 3}])
    t = runs_table(df)
    assert list(t.columns) == SHOWN_COLUMNS and set(t.columns) == set(st.RUN_COLUMNS)
    assert t.loc[0, "created_at"] == "2026-01-02 03:04:05 UTC"
    assert t.loc[0, "git_rev"] == "" and t.loc[0, "imatrix_file"] == "" and t.loc[0, "rows"] == 3
    empty = runs_table(pd.DataFrame(columns=list(st.RUN_COLUMNS)))
    assert empty.empty and list(empty.columns) == SHOWN_COLUMNS
    partial = runs_table(pd.DataFrame({"run_id": ["r"], "created_at": [None]}))   # missing columns
    assert list(partial.columns) == SHOWN_COLUMNS and partial.loc[0, "created_at"] == ""


def test_export_name_and_safe_name():
    assert export_name(["all-MiniLM-L6-v2"], 72) == "all-MiniLM-L6-v2-72rows.parquet"
    assert export_name(["a", "b"], 5) == "2-models-5rows.parquet"
    assert safe_name("C:\\Users\\me\\results.parquet") == "results.parquet"
    assert safe_name("../../x.parquet") == "x.parquet"
    assert safe_name("<b>x.parquet") == "_b_x.parquet"
    assert safe_name("x*y`z.parquet") == "x_y_z.parquet"
    assert safe_name(None) == safe_name("") == "upload.parquet"


# -------------------------------------------------------------------------------- page
def test_page_lists_runs_and_the_skips_of_the_selected(two_runs):
    store, first, second = two_runs
    page = DataPage(store=store)
    pn.panel(page).get_root()
    assert page.runs.value["run_id"].tolist() == [second, first]
    assert page.runs.value["rows"].tolist() == st.runs(store)["rows"].tolist()
    assert not page.skips.visible and "Tick runs" in page.skips_caption.object
    assert page.model.value == "all-MiniLM-L6-v2" and not page.download.disabled
    total = len(st.results(store))
    assert page.export_note.object == f"Export: all {total} rows of all-MiniLM-L6-v2 (tick runs to export only those)"

    page.runs.selection = [1]                                # as ticking the checkbox does
    assert page.selected_run_ids() == [first]
    skips = st.skips(store, [first])
    assert page.skips.visible and page.skips.value["tensor"].tolist() == skips["tensor"].tolist()
    assert set(page.skips.value["run_id"]) == {first}
    rows = st.runs(store, [first])["rows"].item()
    assert page.export_note.object == f"Export: the 1 selected run(s), {rows} rows"
    page.runs.selection = [0, 1]
    assert len(page.skips.value) == len(st.skips(store))


def test_page_exports_the_selection_or_the_model(two_runs, tmp_path):
    store, first, second = two_runs
    page = DataPage(store=store)
    page.runs.selection = [0]                                 # the second run: 2 rows
    name, data = page.export_bytes()
    assert name == "all-MiniLM-L6-v2-2rows.parquet"
    path = tmp_path / name
    path.write_bytes(data)
    t = st.validate_import(path)
    assert t.num_rows == 2 and set(pq.read_table(path).column("run_id").to_pylist()) == {second}

    fileobj = page._export_file()                             # what FileDownload calls
    assert page.download.filename == name and isinstance(fileobj, io.BytesIO)
    assert fileobj.getvalue()[:4] == b"PAR1"

    page.runs.selection = []                                  # nothing ticked: the whole model
    name, data = page.export_bytes()
    total = len(st.results(store, "all-MiniLM-L6-v2"))
    assert name == f"all-MiniLM-L6-v2-{total}rows.parquet"
    (tmp_path / "all.parquet").write_bytes(data)
    empty = tmp_path / "empty"
    assert st.import_file(tmp_path / "all.parquet", empty) == (total, 0)
    same_rows(st.results(empty), st.results(store))          # the round trip is lossless


def test_page_imports_a_collaborators_file(store, other_file):
    path, theirs = other_file
    notified = []
    page = DataPage(store=store, notify=lambda: notified.append(1))
    before = len(page.runs.value)
    page.upload.filename = "share.parquet"                    # what the browser sends
    page.upload.value = path.read_bytes()
    assert page.message.alert_type == "success"
    assert page.message.object == f"share.parquet: added {len(theirs)} rows, skipped 0 already stored"
    assert notified == [1]
    assert len(page.runs.value) == before + 1
    assert theirs["run_id"].iloc[0] in page.runs.value["run_id"].tolist()
    same_rows(st.results(store).pipe(lambda d: d[d["run_id"] == theirs["run_id"].iloc[0]]), theirs)

    stored = snapshot(store)                                   # the same file again: all skipped
    assert page.import_bytes(path.read_bytes(), "share.parquet") == (0, len(theirs))
    assert page.message.object == f"share.parquet: added 0 rows, skipped {len(theirs)} already stored"
    assert snapshot(store) == stored and notified == [1]


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf)
    return buf.getvalue()


@pytest.mark.parametrize("content, why", [
    (b"garbage, not parquet", "not a readable Parquet file"),
    (parquet_bytes(pd.DataFrame({"a": [1, 2]})), "not a workbench results file (missing columns:"),
    (b"", "not a readable Parquet file"),
])
def test_page_refuses_a_bad_file_with_one_line(store, content, why):
    page = DataPage(store=store, notify=lambda: pytest.fail("nothing changed: no notify"))
    before, runs = snapshot(store), page.runs.value.copy()
    assert page.import_bytes(content, "bad.parquet") is None
    assert page.message.alert_type == "danger" and page.message.visible
    assert page.message.object.startswith(f"bad.parquet: {why}") and "\n" not in page.message.object
    assert "workbench-import-" not in page.message.object     # the temp path is not shown
    assert snapshot(store) == before
    pd.testing.assert_frame_equal(page.runs.value, runs)


def test_page_on_an_empty_store(tmp_path):
    page = DataPage(store=tmp_path / "nothing")
    pn.panel(page).get_root()
    assert page.runs.value.empty and list(page.runs.value.columns) == SHOWN_COLUMNS
    assert page.message.visible and EMPTY_STORE in page.message.object
    assert page.download.disabled and page.model.disabled and page.model.value is None


def test_page_on_an_unreadable_store(tmp_path):
    bad = tmp_path / "model=x" / "table=results"
    bad.mkdir(parents=True)
    (bad / "garbage.parquet").write_bytes(b"not parquet at all")
    page = DataPage(store=tmp_path)
    assert page.message.alert_type == "danger" and "garbage.parquet (unreadable Parquet" in page.message.object
    assert page.download.disabled
    data = page._export_file()      # even if clicked: the rest of the store (nothing), no traceback
    assert page.download.filename == "0-models-0rows.parquet"
    assert pq.read_table(io.BytesIO(data.getvalue())).num_rows == 0


def test_reload_keeps_the_ticked_runs(two_runs):
    store, first, second = two_runs
    page = DataPage(store=store)
    page.runs.selection = [1]
    newest = run(None, "Q8_0", r"layer\.2\.output\.dense", store, progress=False).run_id
    page.reload()
    assert page.runs.value["run_id"].tolist() == [newest, second, first]
    assert page.selected_run_ids() == [first]
