"""The brush-latency benchmark's own plumbing (not its figures: speed is for benchmarks, not
tests): the padded store answers like the sweep it copies, and a measured brush is a real one.
Only the second test needs chromium (marked ``ui``: it fails without one unless WORKBENCH_NO_UI=1)."""
from __future__ import annotations

import numpy as np
import pytest

from workbench import store as st
from workbench.bench_brush import build_store, measure, stats
from workbench.browser import serve


def test_padded_store_has_the_rows_and_the_same_model_level_figures(small_store, tmp_path):
    base = st.results(small_store)
    n = build_store(small_store, tmp_path / "big", rows=3 * len(base) - 1)
    big = st.results(tmp_path / "big")
    assert n == len(big) == 3 * len(base)
    assert big.groupby("device").size().tolist() == [len(base)] * 3       # copies by device label
    a = st.summary(small_store, "all-MiniLM-L6-v2").set_index("format")
    b = st.summary(tmp_path / "big", "all-MiniLM-L6-v2").set_index("format").loc[a.index]
    assert np.allclose(a["nmse"], b["nmse"], rtol=1e-12) and (a["tensors"] == b["tensors"]).all()


@pytest.mark.ui
def test_measure_times_real_brushes(small_store, watch_opened_pages):
    with serve(small_store) as srv:
        watches = watch_opened_pages(srv)   # measure() opens its own browser and page
        ms = measure(srv["url"], brushes=2)
    assert len(ms) == 2 and all(0 < m < 60_000 for m in ms)
    assert stats(ms)["brushes"] == 2
    assert len(watches) == 1
    watches[0].check()                  # no console error, failed or off-machine request
