"""`workbench bench --fused`'s harness on real tensors: both paths timed, the sums identical."""
from __future__ import annotations

from workbench.bench_fused import copy_bandwidth, measure, table
from workbench.codecs import as_kernel_input
from workbench.formats import resolve
from workbench.sources import open_model


def test_fused_benchmark_measures_both_paths_on_real_tensors():
    src = open_model(None)
    tensors = {t.name: as_kernel_input(t.load()[:64]) for t in src.weights() if ".layer.0.attention" in t.name}
    rows = measure(tensors, resolve("Q4s32,Q4a16_e4m3,Q(4a16)xQ(6s16)_e4m3"), repeat=1)
    assert [r["format"] for r in rows] == ["Q4s32", "Q4a16_e4m3", "Q(4a16)xQ(6s16)_e4m3"]
    assert all(r["identical"] and r["real_s"] > 0 and r["fused_s"] > 0 for r in rows)
    assert all(r["numel"] == sum(x.size for x in tensors.values()) for r in rows)
    text = table(rows, copy_bandwidth(mb=16, repeat=1))
    assert "| single (2) |" in text and "| double (1) |" in text and "| all (3) |" in text
