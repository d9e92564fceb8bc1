"""Throughput: weights per second per (format, backend, device) from results rows, the recorded
llama.cpp reference timings (store round trip, `workbench bench --vs llama.cpp --store`), the
plot, and the page without a browser. Timings are never asserted, only their bookkeeping."""
from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import pytest
from bokeh.core.validation import check_integrity
from bokeh.document import Document

from workbench import store as st
from workbench.formats import parse
from workbench.views.throughput import (MARKERS, NO_REFERENCE, REFERENCE_ROWS, TABLE_COLUMNS, plottable,
                                        reference_rows, reference_table, table_rows, throughput_plot,
                                        throughput_table)

CPU, GPU = "AMD EPYC", "NVIDIA H100"


def results(rows) -> pd.DataFrame:
    """Results-like rows: (tensor, format, numel, nbytes, quant_s, dequant_s, backend, device[, imatrix])."""
    cols = ["tensor", "format", "numel", "nbytes", "quant_s", "dequant_s", "backend", "device", "imatrix"]
    df = pd.DataFrame([r if len(r) == 9 else (*r, "") for r in rows], columns=cols)
    return df.assign(family=[parse(f).family for f in df["format"]], model="m")


BASE = results([
    ("t0", "Q4s32", 100, 56, 1.0, 0.5, "numba-cpu", CPU),
    ("t1", "Q4s32", 900, 504, 3.0, 0.5, "numba-cpu", CPU),
    ("t1", "Q4s32", 900, 504, 4.0, 0.25, "numba-cpu", CPU),      # measured again: fastest counts once
    ("t0", "Q4s32", 100, 56, 0.1, 0.1, "cupy-cuda", GPU),
    ("t0", "Q8_0", 100, 106, 2.0, 1.0, "numba-cpu", CPU),
    ("t0", "Q8_0", 100, 106, 0.5, 0.5, "numba-cpu", CPU, "abc123"),   # an imatrix run
])


# ------------------------------------------------------------------------------ throughput_table
def test_weights_per_second_pool_tensors_and_count_each_once():
    t = throughput_table(BASE)
    assert list(t.columns) == ["format", "family", "backend", "device", "where", "tensors", "numel", "bpw",
                               "quant_wps", "dequant_wps"]
    row = t[(t["format"] == "Q4s32") & (t["backend"] == "numba-cpu")].iloc[0]
    # Σ numel / Σ seconds: 1000 / (1 + 3), not the mean of the two rates (100 and 300 w/s)
    assert row["quant_wps"] == pytest.approx(1000 / 4.0)
    assert row["dequant_wps"] == pytest.approx(1000 / (0.5 + 0.25))
    assert row["tensors"] == 2 and row["numel"] == 1000
    assert row["bpw"] == pytest.approx((56 + 504) * 8 / 1000)
    assert row["where"] == f"numba-cpu · {CPU}"
    gpu = t[t["backend"] == "cupy-cuda"].iloc[0]
    assert (gpu["device"], gpu["quant_wps"], gpu["tensors"]) == (GPU, pytest.approx(1000.0), 1)
    assert t["bpw"].is_monotonic_increasing
    q8 = t[t["format"] == "Q8_0"]
    assert len(q8) == 1 and q8["quant_wps"].iloc[0] == pytest.approx(50.0) and q8["family"].iloc[0] == "ggml"


def test_imatrix_runs_are_kept_apart():
    only = throughput_table(BASE, imatrix="abc123")
    assert only["format"].tolist() == ["Q8_0"] and only["quant_wps"].iloc[0] == pytest.approx(200.0)
    pooled = throughput_table(BASE, imatrix=None)
    q8 = pooled[pooled["format"] == "Q8_0"]
    assert q8["quant_wps"].iloc[0] == pytest.approx(200.0)     # the faster of the two runs of t0
    assert throughput_table(BASE, imatrix="nope").empty


def test_missing_or_bad_times_drop_out_of_that_direction_only():
    df = results([("t0", "Q4s32", 100, 56, 1.0, np.nan, "numba-cpu", CPU),
                  ("t1", "Q4s32", 300, 168, 1.0, 0.5, "numba-cpu", CPU),
                  ("t0", "Q8s32", 100, 106, 0.0, 0.5, "numba-cpu", CPU)])
    t = throughput_table(df).set_index("format")
    assert t.loc["Q4s32", "quant_wps"] == pytest.approx(400 / 2.0)
    assert t.loc["Q4s32", "dequant_wps"] == pytest.approx(300 / 0.5)
    assert np.isnan(t.loc["Q8s32", "quant_wps"]) and t.loc["Q8s32", "dequant_wps"] == pytest.approx(200.0)
    assert plottable(t.reset_index(), "quant")["format"].tolist() == ["Q4s32"]
    assert plottable(t.reset_index(), "dequant")["format"].tolist() == ["Q4s32", "Q8s32"]


def test_empty_one_row_and_missing_columns():
    empty = throughput_table(BASE.iloc[:0])
    assert empty.empty and "quant_wps" in empty.columns
    one = throughput_table(BASE.iloc[:1])
    assert len(one) == 1 and one["quant_wps"].iloc[0] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="the results have no columns nbytes, dequant_s"):
        throughput_table(BASE.drop(columns=["nbytes", "dequant_s"]))
    no_imx = throughput_table(BASE.drop(columns="imatrix"))     # an old frame: every row counts
    assert len(no_imx) == 3


def test_table_rows_fastest_first():
    t = throughput_table(BASE)
    q = table_rows(t, "quant")
    assert list(q.columns) == list(TABLE_COLUMNS) and len(q) == len(t)
    assert q["quantize Mw/s"].is_monotonic_decreasing and q["dequantize Mw/s"].notna().all()
    assert sorted(q["quantize Mw/s"] * 1e6) == pytest.approx(sorted(t["quant_wps"]))
    d = table_rows(t, "dequant")
    assert d["dequantize Mw/s"].is_monotonic_decreasing
    assert (d["format"].iloc[0], d["backend"].iloc[0]) == ("Q4s32", "numba-cpu")    # 1000 w / 0.75 s
    assert table_rows(t.iloc[:0]).empty


# ------------------------------------------------------------------------------ reference
def long_frame(imatrix_file="imx.gguf", fingerprint="fp01") -> pd.DataFrame:
    """A long-form benchmark result as measure_vs_llamacpp returns it (hand-made times)."""
    rows = []
    for fmt, nbytes in (("Q4_0", 18 * 32), ("Q8_0", 34 * 32)):
        for imx in ("no", "yes") if fmt == "Q4_0" else ("no",):
            for impl, n, s in (("llama.cpp", 1, 0.004), ("workbench-numba", 1, 0.002),
                               ("llama.cpp", 2, 0.003), ("workbench-numba", 2, 0.001)):
                rows.append({"format": fmt, "imatrix": imx, "implementation": impl, "threads": n,
                             "tensors": 2, "numel": 1024, "nbytes": nbytes, "quant_s": s, "repeat": 2,
                             "identical": True})
    df = pd.DataFrame(rows)
    df.attrs.update(imatrix=imatrix_file, imatrix_fingerprint=fingerprint, threads=2)
    return df


def test_timing_rows_store_round_trip(tmp_path):
    from workbench.bench_llamacpp import timing_rows
    long = long_frame()
    rows = timing_rows(long, "m", reference_version="llama-cpp-python test")
    st.write(tmp_path, "timings", rows)
    back = st.timings(tmp_path)
    assert list(back.columns) == st.TIMINGS_SCHEMA.names
    assert len(back) == len(long) == 12 and set(back["model"]) == {"m"}
    assert (back["quant_wps"] == back["numel"] / back["quant_s"]).all()
    assert back.set_index(["format", "implementation", "threads", "imatrix"]).index.is_unique
    assert dict(zip(back["format"], back["bpw"])) == {"Q4_0": 4.5, "Q8_0": 8.5}
    assert set(back["imatrix"]) == {"", "fp01"}
    assert set(back.loc[back["imatrix"] == "fp01", "imatrix_file"]) == {"imx.gguf"}
    assert back.loc[back["imatrix"] == "", "imatrix_file"].isna().all()
    assert len(set(back["run_id"])) == 1 and (back["schema_version"] == st.SCHEMA_VERSION).all()
    assert set(back["reference_version"]) == {"llama-cpp-python test"}
    assert set(back["device"]) == {st.device_name()}
    # the timings live beside the results: these are untouched, and a model filter works
    assert st.results(tmp_path).empty and st.models(tmp_path) == []
    assert st.timings(tmp_path, "other").empty
    assert list(st.timings(tmp_path / "none").columns) == st.TIMINGS_SCHEMA.names


def test_reference_table_latest_run_per_series(tmp_path):
    from workbench.bench_llamacpp import timing_rows
    first = timing_rows(long_frame(), "m", reference_version="v1")
    later = timing_rows(long_frame().assign(quant_s=lambda d: d["quant_s"] * 2), "m", reference_version="v2")
    later["created_at"] = first["created_at"] + pd.Timedelta(seconds=5)
    st.write(tmp_path, "timings", pd.concat([later, first]))
    ref = reference_table(st.timings(tmp_path, "m"))
    assert len(ref) == 8 and set(ref["format"]) == {"Q4_0", "Q8_0"}
    got = ref.set_index(["format", "implementation", "threads"])["quant_wps"]
    assert got[("Q4_0", "llama.cpp", 1)] == pytest.approx(1024 / 0.008)       # the later run
    assert got[("Q8_0", "workbench-numba", 2)] == pytest.approx(1024 / 0.002)
    assert set(ref["series"]) == {"llama.cpp, 1 thread", "llama.cpp, 2 threads",
                                  "workbench-numba, 1 thread", "workbench-numba, 2 threads"}
    with_imx = reference_table(st.timings(tmp_path), with_imatrix=True)
    assert set(with_imx["format"]) == {"Q4_0"} and len(with_imx) == 4
    assert reference_table(st.timings(tmp_path / "none")).empty
    rows = reference_rows(ref)
    assert list(rows.columns) == list(REFERENCE_ROWS) and len(rows) == 8
    assert (rows["quantize Mw/s"] * 1e6).tolist() == pytest.approx(ref["quant_wps"].tolist())
    assert rows["measured"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC").all()
    with pytest.raises(ValueError, match="the timings have no columns implementation, threads"):
        reference_table(pd.DataFrame({"format": ["Q4_0"]}))


# ------------------------------------------------------------------------------ plot
def _layers(overlay):
    return [el for el in overlay]


def test_plot_layers_markers_and_direction():
    t = throughput_table(BASE)
    ref = reference_table(pd.DataFrame({
        "format": ["Q4_0", "Q4_0"], "implementation": ["llama.cpp", "workbench-numba"], "threads": [1, 1],
        "imatrix": ["", ""], "bpw": [4.5, 4.5], "quant_wps": [2e8, 4e8], "device": [CPU, CPU],
        "created_at": pd.Timestamp.now(tz="UTC")}))
    quant = throughput_plot(t, "quant", ref)
    labels = [el.label for el in _layers(quant)]
    assert labels == [f"cupy-cuda · {GPU}", f"numba-cpu · {CPU}", "llama.cpp, 1 thread", "workbench-numba, 1 thread"]
    cpu = _layers(quant)[1]
    assert sorted(cpu.data["wps"]) == pytest.approx(sorted(t.loc[t["backend"] == "numba-cpu", "quant_wps"] / 1e6))
    for el, impl in zip(_layers(quant)[2:], ("llama.cpp", "workbench-numba")):
        opts = hv.Store.lookup_options("bokeh", el, "style").kwargs
        assert opts["marker"] == MARKERS[impl] and el.data["wps"].tolist() == pytest.approx(
            (ref.loc[ref["implementation"] == impl, "quant_wps"] / 1e6).tolist())
    # dequantize: the same formats at their dequantize rates; the reference (quantize only) is gone
    deq = throughput_plot(t, "dequant", ref)
    assert [el.label for el in _layers(deq)] == labels[:2]
    assert sorted(_layers(deq)[1].data["wps"]) == pytest.approx(sorted(t.loc[t["backend"] == "numba-cpu", "dequant_wps"] / 1e6))
    for obj in (quant, deq, throughput_plot(t.iloc[:0], "quant", None), throughput_plot(t.iloc[:1], "quant")):
        fig = hv.render(obj, backend="bokeh")
        doc = Document()
        doc.add_root(fig)
        assert check_integrity(doc.models).error == []
        assert fig.y_scale.__class__.__name__ == "LogScale"
        # one unit with the table (Mw/s), plain-number ticks at 1-2-5 of each decade
        assert fig.yaxis[0].axis_label.endswith("M weights per second")
        assert fig.yaxis[0].formatter.format == "0,0.[00]" and list(fig.yaxis[0].ticker.mantissas) == [1, 2, 5]
        from bokeh.models import HoverTool
        hover = list(fig.select(type=HoverTool))
        if any(len(el) for el in obj):     # (the empty frame has no points to hover)
            assert hover and all(("Mw/s", "@wps{0,0.000}") in list(h.tooltips) for h in hover), [h.tooltips for h in hover]


# ------------------------------------------------------------------------------ the page
@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    from workbench.sweep import run
    path = tmp_path_factory.mktemp("throughput-store")
    run(None, "Q4_0,Q4s32,Q8_0,Q4s16_e4m3", r"layer\.0\.attention\.self\.query", path, progress=False)
    return path


def test_page_without_and_with_a_reference(swept, tmp_path):
    import shutil
    from workbench.bench_llamacpp import timing_rows
    from workbench.views.throughput_page import ThroughputPage
    store = tmp_path / "store"
    shutil.copytree(swept, store)
    page = ThroughputPage(store=store)
    assert page.model == "all-MiniLM-L6-v2" and page.direction == "quant" and not page.message.visible
    assert page.reference_note.object == NO_REFERENCE and not page.reference_section.visible
    assert len(page.table.value) == 4 and page.table.value["quantize Mw/s"].is_monotonic_decreasing
    quant = [el.data["wps"].tolist() for el in page.plot.object]
    page.direction = "dequant"
    dequant = [el.data["wps"].tolist() for el in page.plot.object]
    assert quant != dequant and len(quant[0]) == len(dequant[0]) == 4
    pn.panel(page).get_root()

    st.write(store, "timings", timing_rows(long_frame(), page.model, reference_version="test"))
    page.reload()
    assert "quantization only" in page.reference_note.object        # still on dequantize
    assert len(page.plot.object) == 1
    page.direction = "quant"
    assert page.reference_note.object.startswith("llama.cpp reference: 2 types measured on")
    assert len(page.plot.object) == 5 and page.reference_section.visible and len(page.reference.value) == 8
    page.imatrix = ""
    assert list(page.param.imatrix.objects) == [""]


def test_page_on_empty_and_unreadable_stores(tmp_path):
    from workbench.views.throughput_page import EMPTY_STORE, ThroughputPage
    page = ThroughputPage(store=tmp_path / "nothing")
    assert page.message.visible and EMPTY_STORE in page.message.object
    assert all(page.controls[i].disabled for i in (0, 1, 3))     # model, imatrix, rate
    pn.panel(page).get_root()
    bad = tmp_path / "bad" / "model=x" / "table=results"
    bad.mkdir(parents=True)
    (bad / "garbage.parquet").write_bytes(b"not parquet")
    page = ThroughputPage(store=tmp_path / "bad")
    assert page.message.alert_type == "danger" and "cannot be read: model=x/table=results/garbage.parquet" \
        in page.message.object


# ------------------------------------------------------------------------------ bench --store
def test_measured_timings_are_recorded(oracle, minilm_tensors, tmp_path):
    """The real benchmark on a slice of one tensor: both implementations, both thread counts,
    bytes identical, bpw of the bytes written, and the imatrix by its fingerprint."""
    from workbench.bench_llamacpp import default_imatrix_path, measure_vs_llamacpp, record
    from workbench.imatrix import load
    name = "encoder.layer.0.output.dense.weight"
    long = measure_vs_llamacpp({name: minilm_tensors[name][:16]}, types=["Q4_0", "Q6_K"], threads=2, repeat=1)
    assert record(tmp_path, long, "all-MiniLM-L6-v2") == len(long) == 2 * 2 * 2 * 2
    back = st.timings(tmp_path, "all-MiniLM-L6-v2")
    assert set(back["implementation"]) == {"llama.cpp", "workbench-numba"} and set(back["threads"]) == {1, 2}
    assert back["identical"].all() and (back["quant_wps"] > 0).all() and (back["numel"] == 16 * 1536).all()
    assert dict(zip(back["format"], back["bpw"])) == {"Q4_0": 4.5, "Q6_K": 6.5625}
    assert set(back["imatrix"]) == {"", load(default_imatrix_path()).fingerprint}
    assert set(back["reference_version"]) == {oracle.version()}


def test_cli_bench_store(oracle, minilm_tensors, tmp_path, monkeypatch, capsys):
    """`workbench bench --vs llama.cpp --store [DIR]` writes the timings (a quick path: the real
    benchmark on a slice, two types); `--store` without `--vs` is refused in one line."""
    from workbench import bench_llamacpp, cli
    real = bench_llamacpp.measure_vs_llamacpp

    def quick(tensors, threads=None, repeat=3, **_):
        return real({n: a[:8] for n, a in list(tensors.items())[:1]}, types=["Q8_0", "Q4_K"],
                    threads=2, repeat=1)
    monkeypatch.setattr(bench_llamacpp, "measure_vs_llamacpp", quick)
    assert cli.main(["bench", "--vs", "llama.cpp", "--quick", "--store", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "recorded 12 timings in" in out and "| Q4_K | yes |" in out
    assert len(st.timings(tmp_path / "a")) == 12
    monkeypatch.setenv("WORKBENCH_STORE", str(tmp_path / "default"))
    assert cli.main(["bench", "--vs", "llama.cpp", "--quick", "--store"]) == 0
    assert set(st.timings(tmp_path / "default")["format"]) == {"Q8_0", "Q4_K"}


def test_cli_store_needs_vs(tmp_path, capsys):
    from workbench import cli
    assert cli.main(["bench", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "workbench bench: error: --store records the llama.cpp reference timings: use it with --vs llama.cpp"
    assert not any(tmp_path.iterdir())
