"""kernels/scales.py against independent references: numpy float16, ml_dtypes, pyarrow float16.

The slow tests walk all 2^32 float32 bit patterns per encoding, in chunks spread over threads
(the Numba kernels are nogil; numpy, ml_dtypes and pyarrow casts release the GIL). numpy's own
float16 cast costs ~65 ns/element wherever it underflows or overflows (most of the 2^32), so
Arrow's independent float16 cast stands in there, with numpy re-checked on a 1/61 sample.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import ml_dtypes as mld
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from numba import njit

from workbench.kernels import scales as S

CHUNK = 1 << 20  # 4 MiB of float32: per-chunk Python overhead stays < 1%
WORKERS = max(2, min(4, os.cpu_count() or 1))

REF_DTYPE = {S.F16: np.dtype(np.float16), S.BF16: np.dtype(mld.bfloat16),
             S.E4M3: np.dtype(mld.float8_e4m3fn), S.E5M2: np.dtype(mld.float8_e5m2),
             S.E8M0: np.dtype(mld.float8_e8m0fnu)}
SMALL = list(REF_DTYPE)
NAME = {S.F32: "f32", S.F16: "f16", S.BF16: "bf16", S.E4M3: "e4m3", S.E5M2: "e5m2", S.E8M0: "e8m0"}


def _uint(enc):
    return np.uint8 if REF_DTYPE[enc].itemsize == 1 else np.uint16


def _ref_table(enc):
    """Reference decode of every code (as float32 bits), and which codes are NaN."""
    codes = np.arange(1 << (8 * REF_DTYPE[enc].itemsize), dtype=_uint(enc))
    vals = codes.view(REF_DTYPE[enc]).astype(np.float32)
    return vals.view(np.uint32), np.isnan(vals)


class _Scratch:
    """Per-thread chunk buffers: a fresh multi-MiB array costs more in page faults than the
    conversions being checked, so every chunk reuses these."""

    _local = threading.local()

    def __init__(self, n):
        self.base = np.arange(n, dtype=np.uint32)
        self.bits = np.empty(n, np.uint32)
        self.codes = np.empty(n, np.uint32)
        self.f32 = np.empty(n, np.float32)
        self.tmp = np.empty(n, np.float32)
        self.i32 = np.empty(n, np.int32)
        self.mask = np.empty(n, bool)
        self.ref = {1: np.empty(n, np.uint8), 2: np.empty(n, np.uint16)}

    @classmethod
    def get(cls, n):
        s = getattr(cls._local, "s", None)
        if s is None or s.base.size != n:
            s = cls._local.s = cls(n)
        return s

    def chunk(self, start):
        """float32 view of the bit patterns start .. start + n - 1."""
        return np.add(self.base, np.uint32(start), out=self.bits).view(np.float32)


def _f16_numpy_is_fast(start):
    # numpy's float16 cast raises underflow/overflow flags through a denormal operation,
    # ~65 ns/element; only chunks whose results are normal f16 (or inf/NaN inputs) avoid it.
    e = (start >> 23) & 0xFF
    return 113 <= e <= 142 or e == 0xFF


def _reference_codes(x, enc, f16_via_pyarrow=False, scratch=None):
    """Reference code bits for float32 `x`, after the documented saturation / e8m0 deviations."""
    n, dt = x.size, REF_DTYPE[enc]
    sc = scratch or _Scratch(n)
    ref, tmp = sc.ref[dt.itemsize][:n], sc.tmp[:n]
    with np.errstate(all="ignore"):
        if enc == S.F16 and f16_via_pyarrow:  # Arrow's own float16 rounding
            out = pc.cast(pa.array(x, type=pa.float32()), pa.float16(), safe=False)
            return np.frombuffer(out.buffers()[1], dtype=np.uint16, count=n)
        if enc in (S.E4M3, S.E5M2):  # saturating: the reference of clip(x); +-inf -> +-max
            m = float(mld.finfo(dt).max)
            x = np.clip(x, -m, m, out=tmp)
        elif enc == S.E8M0:  # the scale is |x|
            x = np.abs(x, out=tmp)
        np.copyto(ref.view(dt), x, casting="unsafe")
        if enc == S.E8M0:  # 0 -> code 0 (2^-127) where ml_dtypes gives NaN
            np.copyto(ref, 0, where=np.equal(x, 0, out=sc.mask[:n]))
    return ref


@njit(nogil=True)
def _mismatches(mine, roundtrip, ref, ref_bits, ref_nan):
    """Indices where the codes or round-tripped values disagree with the reference codes.

    Only equality is computed here: `ref_bits`/`ref_nan` are the reference's own decode of
    every code, so `roundtrip` must carry the reference's value bit for bit (NaN: any NaN code).
    """
    rt = roundtrip.view(np.uint32)
    bad = np.zeros(mine.size, np.bool_)
    for i in range(mine.size):
        r = ref[i]
        if ref_nan[r]:  # a NaN code (by the reference's table) that decodes to NaN
            c = mine[i]
            bad[i] = c >= ref_nan.size or not ref_nan[c] or (rt[i] & 0x7FFFFFFF) <= 0x7F800000
        else:
            bad[i] = mine[i] != r or rt[i] != ref_bits[r]
    return np.flatnonzero(bad)


def _run_chunks(fn, starts):
    with ThreadPoolExecutor(WORKERS) as pool:
        failures = [f for res in pool.map(fn, starts) for f in res]
    assert not failures, failures[:10]


@pytest.mark.slow
@pytest.mark.parametrize("enc", SMALL, ids=[NAME[e] for e in SMALL])
def test_exhaustive_encode_matches_reference(enc):
    ref_bits, ref_nan = _ref_table(enc)

    def check(start):
        sc = _Scratch.get(CHUNK)
        x = sc.chunk(start)
        mine = S.encode_array(x, enc, sc.codes)
        via_pa = enc == S.F16 and not _f16_numpy_is_fast(start)
        ref = _reference_codes(x, enc, via_pa, sc)
        bad = _mismatches(mine, S.decode_array(mine, enc, sc.f32), ref, ref_bits, ref_nan)
        out = [(hex(x[i].view(np.uint32)), hex(mine[i]), hex(ref[i])) for i in bad[:3]]
        if via_pa:  # numpy itself on a sample of the chunks pyarrow stood in for
            xs, ms = x[start % 61::61], mine[start % 61::61]
            ref_np = _reference_codes(xs, enc)
            bad = _mismatches(ms, S.decode_array(ms, enc), ref_np, ref_bits, ref_nan)
            out += [("numpy", hex(xs[i].view(np.uint32)), hex(ref_np[i])) for i in bad[:3]]
        return out

    _run_chunks(check, range(0, 1 << 32, CHUNK))


@njit(nogil=True)
def _ceil_codes(x, out):
    for i in range(x.size):
        out[i] = S.encode_e8m0_ceil(x[i])
    return out


def _reference_ceil(x, scratch=None):
    """e8m0 code of the smallest power of two >= |x|, clamped to 2^-127..2^127; NaN -> 0xFF."""
    n = x.size
    sc = scratch or _Scratch(n)
    a, m, code, mask = sc.tmp[:n], sc.f32[:n], sc.i32[:n], sc.mask[:n]
    with np.errstate(all="ignore"):
        np.abs(x, out=a)
        np.frexp(a, out=(m, code))  # a = m * 2^code, m in [0.5, 1)
        np.subtract(code, np.equal(m, 0.5, out=mask), out=code)  # exact powers of two
        np.clip(np.add(code, 127, out=code), 0, 254, out=code)
        np.copyto(code, 0, where=np.equal(a, 0, out=mask))
        np.copyto(code, 254, where=np.isinf(a, out=mask))
        np.copyto(code, 255, where=np.isnan(a, out=mask))
    return code


@pytest.mark.slow
def test_exhaustive_e8m0_ceil_matches_frexp():
    def check(start):
        sc = _Scratch.get(CHUNK)
        x = sc.chunk(start)
        mine = _ceil_codes(x, sc.codes)
        bad = np.flatnonzero(mine != _reference_ceil(x, sc))
        return [hex(x[i].view(np.uint32)) for i in bad[:3]]

    _run_chunks(check, range(0, 1 << 32, CHUNK))


@pytest.mark.parametrize("enc", SMALL, ids=[NAME[e] for e in SMALL])
def test_every_code_decodes_like_reference(enc):
    codes = np.arange(1 << (8 * REF_DTYPE[enc].itemsize), dtype=np.uint32)
    ref = codes.astype(_uint(enc)).view(REF_DTYPE[enc]).astype(np.float32)
    got = S.decode_array(codes, enc)
    rn = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(got), rn)
    np.testing.assert_array_equal(got.view(np.uint32)[~rn], ref.view(np.uint32)[~rn])


def test_f32_is_the_bit_pattern():
    rng = np.random.default_rng(0)
    bits = np.concatenate([rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint32),
                           np.array([0, 0x80000000, 1, 0x7F800000, 0xFF800000, 0x7FC00000,
                                     0x7F800001, 0xFFFFFFFF, 0x7F7FFFFF], np.uint32)])
    np.testing.assert_array_equal(S.encode_array(bits.view(np.float32), S.F32), bits)
    np.testing.assert_array_equal(S.decode_array(bits, S.F32).view(np.uint32), bits)


def test_encodings_table_matches_ml_dtypes():
    assert [(e.name, e.id) for e in S.ENCODINGS.values()] == [
        ("f32", 0), ("f16", 1), ("bf16", 2), ("e4m3", 3), ("e5m2", 4), ("e8m0", 5)]
    for e in S.ENCODINGS.values():
        dt = np.dtype(np.float32) if e.id == S.F32 else REF_DTYPE[e.id]
        fi = np.finfo(dt) if e.id in (S.F32, S.F16) else mld.finfo(dt)
        assert e.bits == 8 * dt.itemsize
        assert e.max_finite == float(fi.max)
        assert e.min_subnormal == float(fi.smallest_subnormal)
        assert e.signed == (float(fi.min) < 0)
        assert e.needs_normalizer == (e.bits == 8 and e.signed)
        # the table's extremes survive the encoding unchanged
        for v in (e.max_finite, e.min_subnormal):
            assert S.round_to(np.float32(v), e.id) == np.float32(v)


def test_e4m3_needs_the_normalizer():
    # A typical weight-block scale loses most of its precision in e4m3's subnormals.
    s = np.float32(3.3e-4)
    assert abs(S.round_to(s, S.E4M3) - s) / s > 0.1
    norm = np.float32(448.0 / 0.02)  # per-tensor: the largest block scale maps to e4m3's max
    assert abs(S.round_to(s * norm, S.E4M3) / norm - s) / s <= 2.0**-4


F32MAX = float(np.finfo(np.float32).max)
NAN = float("nan")
# (encoding, x, hand-derived code, decoded value). Ties go to the even code.
EDGES = [
    (S.F16, 0.0, 0x0000, 0.0), (S.F16, -0.0, 0x8000, -0.0),
    (S.F16, float("inf"), 0x7C00, float("inf")), (S.F16, -float("inf"), 0xFC00, -float("inf")),
    (S.F16, 2.0**-149, 0x0000, 0.0), (S.F16, -(2.0**-149), 0x8000, -0.0),
    (S.F16, F32MAX, 0x7C00, float("inf")), (S.F16, 65504.0, 0x7BFF, 65504.0),
    (S.F16, 65519.99609375, 0x7BFF, 65504.0), (S.F16, 65520.0, 0x7C00, float("inf")),
    (S.F16, 1 + 2.0**-11, 0x3C00, 1.0), (S.F16, 1 + 3 * 2.0**-11, 0x3C02, 1 + 2.0**-9),
    (S.F16, 2.0**-24, 0x0001, 2.0**-24), (S.F16, 2.0**-25, 0x0000, 0.0),
    (S.F16, 3 * 2.0**-25, 0x0002, 2.0**-23), (S.F16, 2.0**-25 + 2.0**-48, 0x0001, 2.0**-24),
    (S.F16, 2.0**-14 - 2.0**-25, 0x0400, 2.0**-14),
    (S.BF16, 0.0, 0x0000, 0.0), (S.BF16, -0.0, 0x8000, -0.0),
    (S.BF16, float("inf"), 0x7F80, float("inf")), (S.BF16, -float("inf"), 0xFF80, -float("inf")),
    (S.BF16, F32MAX, 0x7F80, float("inf")), (S.BF16, 2.0**-149, 0x0000, 0.0),
    (S.BF16, 1 + 2.0**-8, 0x3F80, 1.0), (S.BF16, 1 + 3 * 2.0**-8, 0x3F82, 1 + 2.0**-6),
    (S.BF16, 2.0**-134, 0x0000, 0.0), (S.BF16, 3 * 2.0**-134, 0x0002, 2.0**-132),
    (S.E4M3, 0.0, 0x00, 0.0), (S.E4M3, -0.0, 0x80, -0.0),
    (S.E4M3, 2.0**-9, 0x01, 2.0**-9), (S.E4M3, 3 * 2.0**-10, 0x02, 2.0**-8),
    (S.E4M3, 2.0**-10, 0x00, 0.0), (S.E4M3, 5 * 2.0**-10, 0x02, 2.0**-8),
    (S.E4M3, 2.0**-149, 0x00, 0.0), (S.E4M3, -(2.0**-149), 0x80, -0.0),
    (S.E4M3, 2.0**-6, 0x08, 2.0**-6), (S.E4M3, 1.0625, 0x38, 1.0), (S.E4M3, 1.1875, 0x3A, 1.25),
    (S.E4M3, 448.0, 0x7E, 448.0), (S.E4M3, 464.0, 0x7E, 448.0), (S.E4M3, 465.0, 0x7E, 448.0),
    (S.E4M3, -465.0, 0xFE, -448.0), (S.E4M3, F32MAX, 0x7E, 448.0),
    (S.E4M3, float("inf"), 0x7E, 448.0), (S.E4M3, -float("inf"), 0xFE, -448.0),
    (S.E4M3, NAN, 0x7F, NAN), (S.E4M3, -NAN, 0xFF, NAN),
    (S.E5M2, 0.0, 0x00, 0.0), (S.E5M2, -0.0, 0x80, -0.0),
    (S.E5M2, 2.0**-16, 0x01, 2.0**-16), (S.E5M2, 2.0**-17, 0x00, 0.0),
    (S.E5M2, 3 * 2.0**-17, 0x02, 2.0**-15), (S.E5M2, 1.125, 0x3C, 1.0), (S.E5M2, 1.375, 0x3E, 1.5),
    (S.E5M2, 57344.0, 0x7B, 57344.0), (S.E5M2, 61440.0, 0x7B, 57344.0),
    (S.E5M2, F32MAX, 0x7B, 57344.0), (S.E5M2, float("inf"), 0x7B, 57344.0),
    (S.E5M2, -float("inf"), 0xFB, -57344.0), (S.E5M2, NAN, 0x7E, NAN),
    (S.E8M0, 2.0**-127, 0x00, 2.0**-127), (S.E8M0, 2.0**127, 0xFE, 2.0**127),
    (S.E8M0, 1.0, 0x7F, 1.0), (S.E8M0, 1.5, 0x80, 2.0), (S.E8M0, 1.5 - 2.0**-23, 0x7F, 1.0),
    (S.E8M0, 3.0, 0x81, 4.0), (S.E8M0, 1.5 * 2.0**-100, 28, 2.0**-99),
    (S.E8M0, 1.5 * 2.0**126, 0xFE, 2.0**127), (S.E8M0, 1.5 * 2.0**127, 0xFF, NAN),
    (S.E8M0, F32MAX, 0xFF, NAN), (S.E8M0, float("inf"), 0xFF, NAN), (S.E8M0, NAN, 0xFF, NAN),
    (S.E8M0, 2.0**-149, 0x00, 2.0**-127), (S.E8M0, 2.0**-128, 0x00, 2.0**-127),
    (S.E8M0, 2.0**-126, 0x01, 2.0**-126), (S.E8M0, 2.0**-127 + 2.0**-149, 0x01, 2.0**-126),
    (S.E8M0, 1.25 * 2.0**-127, 0x01, 2.0**-126),
    # deliberate deviations from ml_dtypes (NaN there): the scale is |x|, and 0 -> 2^-127
    (S.E8M0, 0.0, 0x00, 2.0**-127), (S.E8M0, -0.0, 0x00, 2.0**-127), (S.E8M0, -1.5, 0x80, 2.0),
]


def _same(got, want):
    return (np.isnan(got) and np.isnan(want)) or (
        np.float32(got).view(np.uint32) == np.float32(want).view(np.uint32))


@pytest.mark.parametrize("enc,x,code,value", EDGES,
                         ids=[f"{NAME[e]}-{x!r}" for e, x, _, _ in EDGES])
def test_edge_case(enc, x, code, value):
    x32 = np.float32(x)
    assert np.float32(x) == x or np.isnan(x)  # the case is exactly representable in f32
    assert S.encode(x32, enc) == code
    assert _same(S.decode(np.uint32(code), enc), value)
    assert _same(S.round_to(x32, enc), value)
    # ...and the library reference agrees on the code, after the documented deviations
    ref = _reference_codes(np.array([x32]), enc)[0]
    assert ref == code or (np.isnan(value) and _ref_table(enc)[1][ref])


def test_f16_nan_stays_nan():
    for bits in (0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF, 0xFFFFFFFF):
        c = int(S.encode(np.uint32(bits).view(np.float32), S.F16))
        assert c & 0x7C00 == 0x7C00 and c & 0x3FF
        assert np.isnan(np.uint16(c).view(np.float16))
        assert np.isnan(S.decode(np.uint32(c), S.F16))


CEIL_EDGES = [(1.0, 0x7F), (1 + 2.0**-23, 0x80), (1.5, 0x80), (0.75, 0x7F), (-3.0, 0x81),
              (0.0, 0x00), (-0.0, 0x00), (2.0**-149, 0x00), (2.0**-127, 0x00),
              (2.0**-127 + 2.0**-149, 0x01), (2.0**-126, 0x01), (2.0**127, 0xFE),
              (2.0**127 * (1 + 2.0**-23), 0xFE), (F32MAX, 0xFE), (float("inf"), 0xFE),
              (-float("inf"), 0xFE), (NAN, 0xFF)]


@pytest.mark.parametrize("x,code", CEIL_EDGES, ids=[repr(x) for x, _ in CEIL_EDGES])
def test_e8m0_ceil_edge_case(x, code):
    assert S.encode_e8m0_ceil(np.float32(x)) == code
    assert _reference_ceil(np.array([x], np.float32))[0] == code
    if code != 0xFF and x == x and abs(x) <= 2.0**127:  # never clips the value it was given
        assert S.decode(np.uint32(code), S.E8M0) >= abs(np.float32(x))


@njit(nogil=True)
def _scalar_calls(x, enc):
    codes = np.empty(x.size, np.uint32)
    back = np.empty(x.size, np.float32)
    rounded = np.empty(x.size, np.float32)
    ceil = np.empty(x.size, np.uint32)
    for i in range(x.size):
        codes[i] = S.encode(x[i], enc)
        back[i] = S.decode(codes[i], enc)
        rounded[i] = S.round_to(x[i], enc)
        ceil[i] = S.encode_e8m0_ceil(x[i])
    return codes, back, rounded, ceil


@pytest.mark.parametrize("enc", [S.F32] + SMALL, ids=[NAME[e] for e in [S.F32] + SMALL])
def test_scalar_functions_inside_njit_match_arrays_and_reference(enc):
    rng = np.random.default_rng(enc)
    edges = np.array([e[1] for e in EDGES] + [c[0] for c in CEIL_EDGES], np.float32)
    x = np.concatenate([rng.integers(0, 1 << 32, 1 << 18, dtype=np.uint32).view(np.float32),
                        rng.normal(0, 0.01, 1 << 16).astype(np.float32), edges])
    codes, back, rounded, ceil = _scalar_calls(x, enc)
    np.testing.assert_array_equal(codes, S.encode_array(x, enc))
    arr_back = S.decode_array(codes, enc)
    np.testing.assert_array_equal(back.view(np.uint32), arr_back.view(np.uint32))
    np.testing.assert_array_equal(rounded.view(np.uint32), arr_back.view(np.uint32))
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(ceil, _reference_ceil(x))
    if enc == S.F32:
        np.testing.assert_array_equal(codes, x.view(np.uint32))
        return
    ref_bits, ref_nan = _ref_table(enc)
    assert _mismatches(codes, rounded, _reference_codes(x, enc), ref_bits, ref_nan).size == 0


def test_arrays_keep_shape_and_reject_unknown_ids():
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    c = S.encode_array(x, S.BF16)
    assert c.shape == (3, 4) and c.dtype == np.uint32
    np.testing.assert_array_equal(S.decode_array(c, S.BF16), x.astype(mld.bfloat16).astype(np.float32))
    with pytest.raises(ValueError):
        S.encode(np.float32(1.0), 17)
    with pytest.raises(ValueError):
        S.decode_array(np.zeros(2, np.uint32), -1)
