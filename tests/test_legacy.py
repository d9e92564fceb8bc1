"""kernels/legacy.py: llama.cpp's Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 byte-identical to gguf.quants.

Reference: ``gguf.quants.quantize``/``dequantize`` (numpy ports of llama.cpp's ``*_ref`` code).
Every weight matrix of the default model is covered in full (gguf's numpy takes well under a
second per type on the 22.7M weights, so nothing is capped).
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GQT
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from workbench.kernels import legacy as L

TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
F32 = np.float32


def _ref(x, name):
    with np.errstate(all="ignore"):           # gguf warns on 1/0 and NaN -> int casts
        packed = gguf_quantize(x, GQT[name])
        return packed, gguf_dequantize(packed, GQT[name])


def _mixed_zero_extreme(x):
    """Per block: its min or max is a zero that occurs with both signs (see legacy.py: which
    zero gguf's numpy max/min returns then depends on numpy's SIMD reduction order)."""
    b = x.reshape(-1, 32)
    pz = (b == 0) & ~np.signbit(b)
    nz = (b == 0) & np.signbit(b)
    mixed = pz.any(axis=1) & nz.any(axis=1)
    return mixed & ((b.min(axis=1) == 0) | (b.max(axis=1) == 0))


def _first_mismatch(a, b, nbytes):
    i = np.flatnonzero(a.ravel() != b.ravel())[0]
    blk = i // nbytes
    return (f"block {blk} byte {i % nbytes}: gguf {a.reshape(-1, nbytes)[blk].tolist()} "
            f"ours {b.reshape(-1, nbytes)[blk].tolist()}")


def assert_same_as_gguf(x, name):
    """Our bytes == gguf's bytes; our decode == gguf's decode (bit for bit, incl. round trip)."""
    x = np.ascontiguousarray(x, dtype=F32)
    quant, dequant, qk, nbytes = L.LEGACY[name]
    ref, ref_y = _ref(x, name)
    ours = quant(x)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape == (x.shape[0], x.shape[1] // qk * nbytes)
    exact = np.ones(x.size // 32, dtype=bool)
    if name in ("Q4_1", "Q5_1"):
        exact = ~_mixed_zero_extreme(x)
    if name in ("Q4_0", "Q5_0"):
        # all-zero block starting with -0.0: llama.cpp (and we) store d = -0, gguf +0
        b = x.reshape(-1, 32)
        exact = ~((b == 0).all(axis=1) & np.signbit(b[:, 0]))
    rb, ob = ref.reshape(-1, nbytes), ours.reshape(-1, nbytes)
    if not exact.all():
        # only the sign bits of d and m may differ there (both fp16: bit 7 of bytes 1 and 3)
        mask = np.full(nbytes, 0xFF, np.uint8)
        mask[1] = mask[3] = 0x7F
        assert np.array_equal(rb[~exact] & mask, ob[~exact] & mask), name
    assert np.array_equal(rb[exact], ob[exact]), f"{name}: " + _first_mismatch(rb[exact], ob[exact], nbytes)

    # decoding gguf's bytes
    y = dequant(ref, x.shape[1])
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.array_equal(y.view(np.uint32), ref_y.view(np.uint32)), f"{name}: decode differs"
    # round trip: our decode of our bytes == gguf's decode of gguf's bytes
    y2 = dequant(ours, x.shape[1]).reshape(-1, 32)
    ry = ref_y.reshape(-1, 32)
    assert np.array_equal(y2[exact].view(np.uint32), ry[exact].view(np.uint32)), f"{name}: round trip"
    assert np.array_equal(y2[~exact], ry[~exact]), name  # equal as numbers (+0 == -0)


# ------------------------------------------------------------------------------ layout
def test_layout_matches_gguf():
    for name in TYPES:
        qk, nbytes, fields = L.LAYOUT[name]
        assert GGML_QUANT_SIZES[GQT[name]] == (qk, nbytes)
        assert L.LEGACY[name][2:] == (qk, nbytes)
        assert sum(n for _, _, n in fields) == nbytes


# ------------------------------------------------------------------------------ real model
@pytest.mark.parametrize("name", TYPES)
def test_every_minilm_tensor_identical(minilm_tensors, name):
    assert len(minilm_tensors) == 40
    for tname, x in minilm_tensors.items():
        try:
            assert_same_as_gguf(x, name)
        except AssertionError as e:
            raise AssertionError(f"{tname}: {e}") from None


# ------------------------------------------------------------------------------ edge cases
def _rng(seed=0):
    return np.random.default_rng(seed)


def _edge_cases():
    r = _rng(1)
    cases = {}
    cases["zeros"] = np.zeros((3, 64), F32)
    cases["neg_zeros"] = np.full((2, 64), -0.0, F32)
    cases["const_pos"] = np.full((3, 96), 1.7, F32)
    cases["const_neg"] = np.full((3, 96), -2.3, F32)
    cases["const_per_block"] = np.repeat(r.normal(size=(4, 3)).astype(F32), 32, axis=1)
    x = (r.normal(size=(8, 128)) * 1e-3).astype(F32)
    pos = r.integers(0, 32, size=(8, 4))
    for i in range(8):
        for b in range(4):
            x[i, b * 32 + pos[i, b]] = r.choice([-1, 1]) * r.uniform(5, 50)
    cases["one_outlier_per_block"] = x
    cases["denormals_1e-40"] = np.full((2, 64), 1e-40, F32)
    cases["denormals_signed"] = (r.choice([-1, 1], size=(4, 64)) * r.uniform(1e-45, 1e-38, size=(4, 64))).astype(F32)
    cases["denormal_smallest"] = np.array([[1e-45, -1e-45] * 16, [0.0] * 31 + [1e-45]], F32)
    x = r.uniform(-1e-40, 1e-40, size=(4, 64)).astype(F32)
    x[:, ::32] = r.normal(size=(4, 2)).astype(F32)
    cases["mixed_denormal_normal"] = x
    # tiny normals: d underflows to a denormal, 1/d overflows to inf (|d| < 2^-128)
    cases["tiny_normals"] = (r.normal(size=(4, 64)) * 1e-37).astype(F32)
    cases["near_flt_min"] = (r.uniform(-1, 1, size=(4, 64)) * np.finfo(F32).tiny * 40).astype(F32)
    cases["huge_3e38"] = (r.choice([-1, 1], size=(4, 64)) * r.uniform(1e38, 3e38, size=(4, 64))).astype(F32)
    x = r.normal(size=(2, 64)).astype(F32)
    x[:, 0], x[:, 1], x[:, 33] = 3e38, -3e38, np.finfo(F32).max      # max - min overflows
    cases["huge_max_minus_min_inf"] = x
    cases["scale_overflows_fp16"] = (r.normal(size=(4, 64)) * 1e6).astype(F32)
    # around the fp16 limits of d: 65504 is the largest half, >= 65520 rounds to inf
    rows = []
    for dv in (65504.0, 65519.0, 65519.996, 65520.0, 65536.0, 60000.0):
        for mult in (-8.0, -16.0, 127.0, 15.0, 31.0):
            blk = r.uniform(-1, 1, size=32).astype(F32) * F32(abs(dv * mult)) * F32(0.5)
            blk[5] = F32(dv * mult)
            rows.append(blk)
    cases["fp16_range_65504"] = np.array(rows, F32)
    cases["pm65504"] = (r.choice([-1, 1], size=(3, 64)) * r.uniform(6e4, 65504, size=(3, 64))).astype(F32)
    # equal |x| with different signs: argmax takes the FIRST, which sets the sign of d
    x = (r.normal(size=(6, 64)) * 0.1).astype(F32)
    x[0, 3], x[0, 20] = -5.0, 5.0
    x[1, 3], x[1, 20] = 5.0, -5.0
    x[2, 0], x[2, 31] = -7.25, 7.25
    x[3, 31], x[3, 0] = -7.25, 7.25
    x[4, 32:64] = np.tile([1.5, -1.5], 16)
    x[5, 32:64] = np.tile([-1.5, 1.5], 16)
    cases["sign_ties"] = x
    # exact .5 cases: d = 1 so x*id + 8.5 / + 0.5 and roundf(x*id) land on .5 / integers exactly
    q4 = np.array([-8.0] + [k + 0.5 for k in range(-8, 8)] + [k for k in range(-7, 8)], F32)
    q5 = np.concatenate([[-16.0], np.arange(-16, 15, dtype=F32) + F32(0.5)]).astype(F32)
    q41 = np.concatenate([[0.0, 15.0], np.arange(0, 15, dtype=F32) + F32(0.5), np.arange(1, 16, dtype=F32)]).astype(F32)
    q51 = np.concatenate([[0.0, 31.0], np.arange(0, 30, dtype=F32) + F32(0.5)]).astype(F32)
    q8 = np.concatenate([[127.0], np.arange(-15, 16, dtype=F32) + F32(0.5)]).astype(F32)
    cases["half_rounding"] = np.stack([q4, q5, q41, q51, q8, -q8, q8 * F32(0.25), q41 * F32(3.0)])
    cases["one_row"] = r.normal(size=(1, 32)).astype(F32)
    cases["three_rows"] = r.normal(size=(3, 32)).astype(F32)
    cases["seven_by_96"] = r.standard_t(3, size=(7, 96)).astype(F32)
    cases["long_row"] = r.normal(size=(1, 4096)).astype(F32)
    x = r.normal(size=(3, 64)).astype(F32)
    x[x > 0.5] = 0.0
    x[x < -1.0] = -0.0
    cases["signed_zeros_inside"] = x
    x = np.abs(r.normal(size=(4, 64))).astype(F32)   # min is a zero present with both signs
    x[:, 3], x[:, 7], x[:, 40], x[:, 50] = 0.0, -0.0, -0.0, 0.0
    cases["mixed_zero_min"] = x
    cases["mixed_zeros_only"] = np.tile(np.array([0.0, -0.0], F32), (2, 32))
    return cases


EDGE = _edge_cases()


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("case", sorted(EDGE))
def test_edge_cases_identical(case, name):
    assert_same_as_gguf(EDGE[case], name)


def test_mixed_zero_min_follows_llama_cpp():
    """Q4_1/Q5_1 on a min that is +-0: the first zero met wins (C reference's strict compares)."""
    x = np.abs(_rng(3).normal(size=(1, 32))).astype(F32) + F32(1.0)
    x[0, 4], x[0, 9] = -0.0, 0.0
    for quant, off in ((L.quantize_q4_1, 2), (L.quantize_q5_1, 2)):
        assert quant(x)[0, off + 1] == 0x80          # m = -0.0
        y = x.copy()
        y[0, 4], y[0, 9] = 0.0, -0.0
        assert quant(y)[0, off + 1] == 0x00          # m = +0.0


def test_rejects_bad_shapes():
    for name in TYPES:
        quant, dequant, qk, nbytes = L.LEGACY[name]
        with pytest.raises(ValueError):
            quant(np.zeros((2, 48), F32))
        with pytest.raises(ValueError):
            dequant(np.zeros((2, nbytes), np.uint8), 64)


# ------------------------------------------------------------------------------ property
_MAGS = st.sampled_from([1e-44, 1e-40, 1e-38, 1e-30, 1e-8, 1e-3, 1.0, 1e3, 6e4, 1e8, 1e30, 1e37, 3e38])


@st.composite
def _blocks(draw):
    rows = draw(st.integers(1, 3))
    nb = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["floats", "scaled"]))
    if kind == "floats":      # hypothesis' own float32s: +-0, denormals, extremes, ...
        vals = draw(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False),
                             min_size=rows * nb * 32, max_size=rows * nb * 32))
        return np.array(vals, F32).reshape(rows, nb * 32)
    seed = draw(st.integers(0, 2**32 - 1))
    mag = draw(_MAGS)
    r = np.random.default_rng(seed)
    dist = draw(st.sampled_from(["normal", "uniform", "t", "grid"]))
    if dist == "normal":
        x = r.normal(size=(rows, nb * 32))
    elif dist == "uniform":
        x = r.uniform(-1, 1, size=(rows, nb * 32))
    elif dist == "t":
        x = r.standard_t(2, size=(rows, nb * 32))
    else:                     # values on a coarse grid: many exact ties and .5 cases
        x = r.integers(-16, 17, size=(rows, nb * 32)) / 2.0
    with np.errstate(over="ignore"):
        x = np.clip(x * mag, -np.finfo(F32).max, np.finfo(F32).max).astype(F32)
    return x


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_blocks())
def test_property_random_blocks_identical(x):
    for name in TYPES:
        assert_same_as_gguf(x, name)


# ------------------------------------------------------------------------------ check_finite
def test_check_finite_counts_non_finite():
    x = np.ones((4, 64), F32)
    assert L.check_finite(x) == 0
    x[0, 0], x[1, 5], x[2, 7], x[3, 63], x[3, 1] = np.nan, np.inf, -np.inf, np.nan, -np.nan
    assert L.check_finite(x) == 5
    assert L.check_finite(np.array([np.finfo(F32).max, -np.finfo(F32).max, 1e-45], F32)) == 0
    big = _rng(5).normal(size=(100, 320)).astype(F32)
    idx = _rng(6).choice(big.size, 37, replace=False)
    big.ravel()[idx] = np.array([np.nan, np.inf, -np.inf] * 13, F32)[:37]
    assert L.check_finite(big) == 37


# ------------------------------------------------------------------------------ fp16 helpers
@njit(cache=True)
def _encode_all(a):
    out = np.empty(a.size, np.uint16)
    for i in range(a.size):
        out[i] = L._f32_to_f16_bits(a[i])
    return out


@njit(cache=True)
def _decode_all(h):
    out = np.empty(h.size, np.float32)
    for i in range(h.size):
        out[i] = L._f16_bits_to_f32(h[i])
    return out


def _np_f16_bits(a):
    with np.errstate(all="ignore"):
        return a.astype(np.float16).view(np.uint16)


def test_f16_decode_exhaustive():
    codes = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    ours = _decode_all(codes).view(np.uint32)
    ref = codes.view(np.float16).astype(np.float32).view(np.uint32)
    assert np.array_equal(ours, ref)   # every code, NaN payloads included


def test_f16_encode_edges():
    codes = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    vals = codes.view(np.float16).astype(np.float32)
    fin = vals[np.isfinite(vals) & (vals >= 0)]
    fin = np.unique(fin).astype(np.float64)
    mids = ((fin[:-1] + fin[1:]) / 2).astype(F32)          # exact ties between halves
    assert np.array_equal(mids.astype(np.float64), (fin[:-1] + fin[1:]) / 2)
    special = np.array([65504.0, 65519.996, 65520.0, 65535.0, 65536.0, 2.0**-14, 2.0**-24, 2.0**-25,
                        3 * 2.0**-26, 2.0**-26, 1e-45, 1e-40, np.finfo(F32).tiny, np.finfo(F32).max,
                        np.inf, np.nan, 0.0], F32)
    base = np.concatenate([vals, mids, special]).view(np.uint32)
    around = (base[:, None].astype(np.int64) + np.arange(-2, 3)[None, :]).ravel()
    around = around[(around >= 0) & (around < 2**32)].astype(np.uint32)
    allv = np.concatenate([around, around | np.uint32(0x80000000)]).view(np.float32)
    assert np.array_equal(_encode_all(allv), _np_f16_bits(allv))
    assert L._f32_to_f16_bits(F32(65520.0)) == 0x7C00 and L._f32_to_f16_bits(F32(65519.996)) == 0x7BFF
    assert L._f32_to_f16_bits(F32(-0.0)) == 0x8000 and L._f32_to_f16_bits(F32(2.0**-25)) == 0


def test_f16_encode_random_bit_patterns():
    bits = _rng(7).integers(0, 2**32, size=10_000_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    assert np.array_equal(_encode_all(x), _np_f16_bits(x))
    # and a dense sweep of the range where halves are subnormal or near overflow
    lo = np.arange(0x33000000 - 8, 0x38800000 + 8, 97, dtype=np.uint32)
    hi = np.arange(0x477F0000, 0x47800010, dtype=np.uint32)
    y = np.concatenate([lo, hi]).view(np.float32)
    assert np.array_equal(_encode_all(y), _np_f16_bits(y))


# ------------------------------------------------------------------ against llama.cpp itself
@pytest.mark.parametrize("name", TYPES)
def test_edge_cases_identical_to_llama_cpp(oracle, name):
    """The same kernels against llama.cpp's ggml_quantize_chunk (no imatrix): byte for byte on
    every edge case, including the two where gguf's numpy port differs from the C."""
    quant = L.LEGACY[name][0]
    for case in sorted(EDGE):
        x = np.ascontiguousarray(EDGE[case], dtype=F32)
        if not np.isfinite(x).all():
            continue                          # refused before quantizing (codecs.NonFiniteError)
        ours, ref = quant(x), oracle.quantize(name, x)
        assert np.array_equal(ours, ref), f"{case}: " + _first_mismatch(ref, ours, L.LEGACY[name][3])


@pytest.mark.parametrize("name", TYPES)
def test_every_minilm_tensor_identical_to_llama_cpp(oracle, minilm_tensors, name):
    quant = L.LEGACY[name][0]
    for tname, x in minilm_tensors.items():
        assert np.array_equal(quant(x), oracle.quantize(name, x)), tname
