"""Store queries are answered once per store version: dashboard sessions share the answers, a
write (or a repair, or a damaged file) makes the next query read the files again, and stale
answers are dropped."""
from __future__ import annotations

import shutil

import pandas as pd

from workbench import store as st


def test_the_same_query_is_answered_from_the_cache_until_the_store_changes(small_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store, store, ignore=shutil.ignore_patterns(".complete"))
    st.clear_query_cache()
    before = dict(st.QUERY_STATS)
    a = st.results(store)
    b = st.results(store)
    assert st.QUERY_STATS["misses"] - before["misses"] == 1 and st.QUERY_STATS["hits"] - before["hits"] == 1
    pd.testing.assert_frame_equal(a, b)
    b.loc[:, "nmse"] = -1.0                                  # a caller's copy, not the cached answer
    pd.testing.assert_frame_equal(st.results(store), a)
    version = st.store_version(store)
    # a write: the next query sees the new rows, and the old version's answers are gone
    st.write(store, "results", a.head(2).assign(tensor="another.weight", run_id=st.new_run_id()))
    assert st.store_version(store) != version
    c = st.results(store)
    assert len(c) == len(a) + 2 and "another.weight" in set(c["tensor"])
    assert all(k[1] != version for k in st._QUERY_CACHE if k[0] == str(store.resolve()))
    # a file damaged in place changes the version too: the query reads again and skips it
    victim = sorted(store.glob("model=*/table=results/*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    d = st.results(store)
    assert len(d) < len(c) and st.skipped_files(store)


def test_two_stores_do_not_share_answers(small_store, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(small_store, one, ignore=shutil.ignore_patterns(".complete"))
    two.mkdir()
    assert len(st.results(one)) > 0 and st.results(two).empty
    st.write(two, "results", st.results(one).head(3))
    assert len(st.results(two)) == 3 and len(st.results(one)) > 3
