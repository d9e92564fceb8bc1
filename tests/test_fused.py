"""The fused error kernel (kernels/uniform.py ``error_sums``): the error sums of the uniform
grid without writing bytes, against the real quantize → packed bytes → dequantize → metrics
path. The claim is "the same reconstruction, the same sums, bit for bit", so every check here
is exact equality: every uniform format of the default grid on slices of the default model's
real tensors and on edge-case tensors, then the sweep that uses it."""
from __future__ import annotations

import numpy as np
import pytest

from workbench import store as st, sweep
from workbench.codecs import as_kernel_input, codec_for
from workbench.formats import resolve
from workbench.kernels.metrics import error_sums_given
from workbench.metrics import signal_sums
from workbench.sources import open_model

from edge_tensors import uniform_edge_cases

UNIFORM = [f for f in resolve("default") if f.family == "uniform"]
EXTRA = resolve("Q4s32_rmse,Q(4a16)xQ(6s16)_e4m3_rmse,Q4a32_naive,Q(3a16)xQ(4s16)_e4m3_naive,"
                "Q4s16_e8m0,Q(4a16)xQ(6a16)_e8m0,Q5a32_e5m2,Q4s32_e4m3_nonorm,Q4a32_f32,Q(4s16)xQ(8s16)_f32")


@pytest.fixture(scope="module")
def real_slices():
    """Row slices of three real MiniLM tensors (both row widths, and the embedding)."""
    src = open_model(None)
    want = {"encoder.layer.0.attention.self.query.weight": 48, "encoder.layer.3.output.dense.weight": 24,
            "embeddings.word_embeddings.weight": 64}
    return {t.name: as_kernel_input(t.load()[:want[t.name]]) for t in src.weights() if t.name in want}


def edge_cases() -> dict[str, np.ndarray]:
    return uniform_edge_cases()


def real_path(codec, x, stats):
    y = codec.dequantize(codec.quantize(x), x.shape)
    return error_sums_given(x, y, *stats)


@pytest.mark.parametrize("spec", UNIFORM + EXTRA, ids=lambda s: s.name)
def test_fused_sums_equal_the_real_path(spec, real_slices):
    codec = codec_for(spec)
    cases = {**real_slices, **edge_cases()}
    for name, x in cases.items():
        if spec.applies_to(x.shape):
            continue
        stats = signal_sums(x)
        want = real_path(codec, x, stats)
        got = codec.error_sums(x, stats)
        assert np.array_equal(got, want, equal_nan=True), (spec.name, name, got - want)


def test_the_grid_is_covered():
    """The default grid's uniform formats span single/double, symmetric/asymmetric, every scale
    encoding and both searches (the parametrized test runs them all)."""
    assert len(UNIFORM) >= 440
    assert {s.scale for s in UNIFORM + EXTRA} >= {"f16", "bf16", "e4m3", "e5m2", "e8m0", "f32"}
    assert any(s.super_bits for s in UNIFORM) and any(not s.super_bits for s in UNIFORM)
    assert {s.search for s in UNIFORM + EXTRA} == {"absmax", "rmse"} and any(s.naive for s in EXTRA)


def test_fused_kernel_handles_nan_like_the_real_path():
    x = as_kernel_input(np.where(np.arange(128) % 17 == 0, np.nan, np.linspace(-1, 1, 128)).reshape(2, 64))
    for name in ("Q4s32", "Q4a32_e4m3", "Q(4a16)xQ(6s16)_e4m3"):
        codec = codec_for(resolve(name)[0])
        stats = signal_sums(x)
        assert np.array_equal(codec.error_sums(x, stats), real_path(codec, x, stats), equal_nan=True)


def test_measure_untimed_is_the_timed_measurement_without_timings(real_slices):
    x = real_slices["encoder.layer.0.attention.self.query.weight"]
    for name in ("Q4_0", "Q4s32", "Q(4a16)xQ(6s16)_e4m3", "Q4_K"):
        spec = resolve(name)[0]
        if spec.applies_to(x.shape):
            continue
        a = sweep.measure(spec, x, stats=signal_sums(x))
        b = sweep.measure(spec, x, stats=signal_sums(x), timed=False)
        assert a["quant_s"] > 0 and a["dequant_s"] > 0
        timings = {"quant_s", "dequant_s"}
        if spec.family == "uniform":           # the fused kernel: no bytes written, so no timings
            assert b["quant_s"] is None and b["dequant_s"] is None
        else:                                   # no fused kernel: measured (and timed) as before
            assert b["quant_s"] > 0
        assert {k: v for k, v in a.items() if k not in timings} == {k: v for k, v in b.items() if k not in timings}


def test_timing_tensor_rule():
    src = open_model(None)
    assert sweep.timing_tensor(src.weights()) == "encoder.layer.0.intermediate.dense.weight"

    class T:
        def __init__(self, name, n):
            self.name, self.numel = name, n
    big = 1 << 24
    assert sweep.timing_tensor([T("a", big), T("b", big * 2)]) == "a"          # none small: the smallest
    assert sweep.timing_tensor([T("a", 10), T("b", 1 << 22), T("c", 1 << 22), T("d", big)]) == "b"
    assert sweep.timing_tensor([]) is None


def test_sweep_times_one_tensor_and_fuses_the_rest(tmp_path):
    """Default timing: each format's quantize/dequantize timed on the timing tensor only; every
    row's errors equal a --time-all sweep's, bit for bit; the throughput summary uses the timed
    rows alone."""
    formats = "Q4_0,Q4s32,Q4a16_e4m3,Q(4a16)xQ(6s16)_e4m3"
    tensors = r"layer\.[01]\.(attention\.self\.query|intermediate\.dense)\.weight"
    one = sweep.run(None, formats, tensors, tmp_path / "one", progress=False)
    every = sweep.run(None, formats, tensors, tmp_path / "all", progress=False, timing="all")
    assert one.measured == every.measured == 16
    a = st.query(tmp_path / "one", "SELECT * FROM results ORDER BY tensor, format")
    b = st.query(tmp_path / "all", "SELECT * FROM results ORDER BY tensor, format")
    timed = a[a["quant_s"].notna() & (a["family"] == "uniform")]
    assert sorted(timed["tensor"].unique()) == ["encoder.layer.0.intermediate.dense.weight"]
    assert sorted(timed["format"]) == sorted(f for f in formats.split(",") if f != "Q4_0")
    assert b["quant_s"].notna().all() and (b["quant_s"] > 0).all()
    # Q4_0 has no fused kernel: measured the real way, and so timed, on every tensor
    assert (a[a["family"] == "ggml"]["quant_s"] > 0).all() and len(a[a["family"] == "ggml"]) == 4
    assert set(a[a["quant_s"].isna()]["family"]) == {"uniform"} and a["quant_s"].isna().sum() == 9
    for col in ("mse", "nmse", "cosine", "bnl", "bnl_seed", "max_abs_err", "nbytes", "bpw"):
        assert a[col].tolist() == b[col].tolist(), col
    summ = st.summary(tmp_path / "one", one.model)
    assert summ["quant_wps"].notna().all() and (summ["quant_wps"] > 0).all()
    with pytest.raises(ValueError, match="timing"):
        sweep.run(None, formats, tensors, tmp_path / "bad", progress=False, timing="some")
