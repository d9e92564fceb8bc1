"""Whatever runs at once — two sweeps, a sweep and an import, several imports — no natural key
is ever stored twice: writers check keys under the store lock at write time. Counted over the
raw files (not through the store's de-duplicating view), so a duplicate cannot hide."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from workbench import store as st
from workbench.store_check import check, repair

KEY = list(st.NATURAL_KEY)
TENSORS = r"layer\.[01]\."
ENV = dict(os.environ, WORKBENCH_FLUSH_SECONDS="0")   # a flush per task: writes interleave


def raw_counts(store: Path) -> tuple[int, int]:
    """(rows in the results files, distinct natural keys among them)."""
    files = sorted(Path(store).glob("model=*/table=results/*.parquet"))
    con = duckdb.connect()
    key = ", ".join(f"coalesce(CAST({c} AS VARCHAR), '')" for c in KEY)
    rows, keys = con.execute(f"""SELECT count(*), count(DISTINCT ({key})) FROM read_parquet(
        {st._sql_list(files)}, hive_partitioning=true, union_by_name=true)""").fetchone()
    return rows, keys


def sweep_proc(store: Path, formats: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench", "sweep", "--formats", formats,
                             "--tensors", TENSORS, "--store", str(store)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(*procs: subprocess.Popen) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-800:]
        outs.append(out)
    return outs


def _write_after_barrier(store, rows, barrier):
    barrier.wait()
    st.write_new(store, rows)


def test_simultaneous_writers_of_the_same_rows_store_each_key_once(small_store, tmp_path):
    """Four processes hold the same measured rows and write them at the same instant: the
    race the old start-of-sweep check lost. Exactly one copy of each key is stored."""
    rows = st.results(small_store)
    store = tmp_path / "store"
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_write_after_barrier, args=(store, rows, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert raw_counts(store) == (len(rows), len(rows))
    assert len(list(store.glob("model=*/table=results/*.parquet"))) == 1   # the others wrote nothing


def test_two_sweeps_with_overlapping_formats(tmp_path):
    store = tmp_path / "store"
    a = sweep_proc(store, "Q8_0,Q4s32,Q4_0,Q4a32_bf16")
    b = sweep_proc(store, "Q4s32,Q4_0,Q4a32_bf16,Q5_0")
    outs = finish(a, b)
    rows, keys = raw_counts(store)
    assert rows == keys == 12 * 5, (rows, keys, outs)
    df = st.results(store)
    assert set(df["format"]) == {"Q8_0", "Q4s32", "Q4_0", "Q4a32_bf16", "Q5_0"}
    assert df.groupby("format").size().eq(12).all()


def test_sweep_and_import_at_once(tmp_path):
    """An export of the same measurements (same natural key) imported while a sweep of the same
    pairs runs: every key once, whichever wrote it first."""
    first = tmp_path / "first"
    finish(sweep_proc(first, "small"))
    theirs = tmp_path / "theirs.parquet"
    n = st.export(first, theirs)
    store = tmp_path / "store"
    sweep = sweep_proc(store, "small")
    imports = []
    for _ in range(3):              # imports through the whole sweep, not only at its start
        imports.append(subprocess.run([sys.executable, "-m", "workbench", "import", str(theirs),
                                       "--store", str(store)], env=ENV, capture_output=True, text=True))
        time.sleep(0.5)
    finish(sweep)
    assert all(r.returncode == 0 for r in imports), [r.stderr for r in imports]
    assert raw_counts(store) == (n, n)


def test_several_imports_at_once(small_store, tmp_path):
    theirs = tmp_path / "theirs.parquet"
    n = st.export(small_store, theirs)
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-m", "workbench", "import", str(theirs), "--store", str(store)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = finish(*procs)
    assert raw_counts(store) == (n, n)
    added = sorted(int(o.split()[1]) for o in outs)      # "imported N rows; M already present"
    assert added == [0, 0, n]


def test_a_store_with_old_duplicates_reads_one_row_per_key_and_repairs(small_store, tmp_path, capsys):
    """Duplicates written by an older version (no lock): queries answer one row per key — the
    first stored wins — `store check` names the files, and --repair leaves none, losing nothing."""
    import shutil
    store = tmp_path / "store"
    shutil.copytree(small_store, store, ignore=shutil.ignore_patterns(".complete"))
    rows = st.results(store)
    later = rows.head(10).assign(created_at=rows["created_at"].max() + pd.Timedelta(hours=1), nmse=0.5)
    fresh = rows.head(3).assign(tensor="another.weight", created_at=later["created_at"].iloc[0])
    # a full second copy, measured a second later (with the same created_at the file names would
    # decide which copy is first: the small store may hold its rows in more than one file)
    st._write_unlocked(store, "results", rows.assign(created_at=rows["created_at"] + pd.Timedelta(seconds=1)))
    st._write_unlocked(store, "results", pd.concat([later, fresh]))     # 10 later copies + 3 new
    assert raw_counts(store) == (2 * len(rows) + 13, len(rows) + 3)
    got = st.results(store)
    assert len(got) == len(rows) + 3 and not got.duplicated(KEY).any()
    first = got[got["tensor"] != "another.weight"].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, rows)                          # the earliest rows, not the later
    kinds = sorted(p.kind for p in check(store))
    assert kinds == ["duplicate", "partial-dup"]
    moved, rewritten, where = repair(store)
    assert moved == 2 and rewritten == 3 and where.is_dir()
    assert raw_counts(store) == (len(rows) + 3, len(rows) + 3)
    pd.testing.assert_frame_equal(st.results(store), got)
    assert check(store) == []
