"""kernels/nonlinear.py: IQ4_NL, IQ4_XS, MXFP4, NVFP4 byte-identical to llama.cpp.

Reference for the bytes: llama.cpp's own ``ggml_quantize_chunk`` (``workbench.oracle``, the
``oracle`` fixture skips when llama-cpp-python is not installed), with and without an imatrix.
Reference for decoding: ``gguf.quants.dequantize`` (bit for bit, compared as uint32).
The oracle-free tests check the fast index searches against literal ports of the C helpers
(``best_index_int8``, ``best_index_mxfp4``) and the floorf(log2f) table against the C library.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GQT
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize as gguf_dequantize
from numba import njit

from workbench.kernels import nonlinear as NL

TYPES = ("IQ4_NL", "IQ4_XS", "MXFP4", "NVFP4")
F32 = np.float32
NOQW = np.zeros(0, F32)


# ------------------------------------------------------------------------------ helpers
def _imatrix(cols, seed=0, zeros=False):
    """A realistic imatrix: per-column mean of squared heavy-tailed activations (as
    llama-imatrix accumulates it), with a few very important columns; optionally ~15% zero
    entries and one all-zero 32-column group."""
    r = np.random.default_rng(seed)
    act = r.standard_t(3, size=(512, cols)) * r.lognormal(0, 1, size=cols)
    im = (act ** 2).mean(axis=0).astype(F32)
    if zeros:
        im[r.random(cols) < 0.15] = 0
        im[32:64] = 0
    return im


IMATRIX_VARIANTS = ("none", "imatrix", "imatrix_zeros")


def _qw_for(variant, cols):
    if variant == "none":
        return None
    return _imatrix(cols, seed=cols, zeros=variant == "imatrix_zeros")


def _field(name, off):
    for f, o, n in NL.LAYOUT[name][2]:
        if o <= off < o + n:
            return f"{f}[{off - o}]"
    return "?"


def _first_mismatch(name, x, ref, ours):
    """Row, block, field and both blocks (hex) of the first differing byte."""
    qk, nb = NL.LAYOUT[name][:2]
    r, i = np.argwhere(ref != ours)[0]
    b = i // nb
    return (f"{name}: first mismatch row {r} block {b} (cols {b * qk}..{b * qk + qk - 1}) "
            f"byte {i % nb} = {_field(name, i % nb)}: llama.cpp "
            f"{ref[r, b * nb:(b + 1) * nb].tobytes().hex()} "
            f"ours {ours[r, b * nb:(b + 1) * nb].tobytes().hex()}"
            f"; x = {x[r, b * qk:(b + 1) * qk].tolist()}")


def assert_matches_llama(oracle, name, x, qw=None):
    """Our bytes == ggml_quantize_chunk's; our decoding == gguf's, bit for bit."""
    x = np.ascontiguousarray(x, dtype=F32)
    quant, dequant, qk, nb = NL.KERNELS[name]
    ref = oracle.quantize(name, x, qw, threads=4 if x.size > 1 << 18 else 1)
    ours = quant(x, NOQW if qw is None else np.ascontiguousarray(qw, dtype=F32))
    assert ours.dtype == np.uint8 and ours.shape == ref.shape == (x.shape[0], x.shape[1] // qk * nb)
    if not np.array_equal(ref, ours):
        raise AssertionError(_first_mismatch(name, x, ref, ours))
    y = dequant(ref, x.shape[1])
    with np.errstate(all="ignore"):
        gy = gguf_dequantize(ref, GQT[name])
    assert y.dtype == np.float32 and y.shape == x.shape
    if not np.array_equal(y.view(np.uint32), gy.view(np.uint32)):
        r, c = np.argwhere(y.view(np.uint32) != gy.view(np.uint32))[0]
        raise AssertionError(f"{name}: decode differs at [{r}, {c}]: gguf {gy[r, c]!r} ours {y[r, c]!r}")
    return ref


# ------------------------------------------------------------------------------ layout
def test_layout_matches_gguf_and_ggml():
    for name in TYPES:
        qk, nb, fields = NL.LAYOUT[name]
        assert GGML_QUANT_SIZES[GQT[name]] == (qk, nb)
        assert NL.KERNELS[name][2:] == (qk, nb)
    assert NL.KERNELS["IQ4_NL"][2:] == (32, 18) and NL.KERNELS["IQ4_XS"][2:] == (256, 136)
    assert NL.KERNELS["MXFP4"][2:] == (32, 17) and NL.KERNELS["NVFP4"][2:] == (64, 36)


def test_row_size_matches_oracle(oracle):
    for name in TYPES:
        qk, nb = NL.LAYOUT[name][:2]
        assert oracle.row_size(name, 4 * 256) == 4 * 256 // qk * nb


def test_bad_shapes_raise():
    x = np.zeros((2, 96), F32)
    with pytest.raises(ValueError):
        NL.quantize_iq4_xs(x, NOQW)
    with pytest.raises(ValueError):
        NL.quantize_nvfp4(x, NOQW)
    with pytest.raises(ValueError):
        NL.quantize_iq4_nl(np.zeros((2, 64), F32), np.ones(32, F32))
    with pytest.raises(ValueError):
        NL.dequantize_mxfp4(np.zeros((2, 17), np.uint8), 64)


# ------------------------------------------------------------------------------ helper ports
# Literal ports of the C helpers (ggml-quants.c), used as references for the fast versions.
_KV_IQ4 = NL.KVALUES_IQ4NL.astype(np.int64)
_KV_FP4 = NL.KVALUES_FP4.astype(np.float32)


@njit(cache=True)
def _best_index_int8_c(x):
    val = _KV_IQ4
    if x <= val[0]:
        return 0
    if x >= val[15]:
        return 15
    ml, mu = 0, 15
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < val[mav]:
            mu = mav
        else:
            ml = mav
    return mu - 1 if x - F32(val[mu - 1]) < F32(val[mu]) - x else mu


@njit(cache=True)
def _best_index_mxfp4_c(x, e):
    best_index = 0
    best_err = abs(_KV_FP4[0] * e - x)
    for i in range(1, 16):
        err = abs(_KV_FP4[i] * e - x)
        if err < best_err:
            best_index = i
            best_err = err
    return best_index


@njit(cache=True)
def _iq4_both(xs):
    bad = 0
    for x in xs:
        if NL._iq4_index(x) != _best_index_int8_c(x):
            bad += 1
        if NL._iq4_level(x) != F32(_KV_IQ4[_best_index_int8_c(x)]):
            bad += 1
    return bad


@njit(cache=True)
def _fp4_both(xs, ds):
    bad = 0
    for d in ds:
        k1, k2, k3, k4 = F32(1) * d, F32(2) * d, F32(3) * d, F32(4) * d
        k6, k8, k12 = F32(6) * d, F32(8) * d, F32(12) * d
        for x in xs:
            if NL._fp4_index(x, k1, k2, k3, k4, k6, k8, k12) != _best_index_mxfp4_c(x, d):
                bad += 1
    return bad


def _specials():
    return np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45,
                     np.finfo(F32).max, -np.finfo(F32).max, np.finfo(F32).tiny], F32)


def test_iq4_index_equals_best_index_int8():
    r = np.random.default_rng(3)
    mids = NL._IQ4_MID.astype(F32)
    near = np.concatenate([np.nextafter(mids, F32(-np.inf)), mids, np.nextafter(mids, F32(np.inf))])
    xs = np.concatenate([
        _specials(), near, NL.KVALUES_IQ4NL.astype(F32),
        r.uniform(-140, 130, 200_000).astype(F32),
        (r.integers(-300, 300, 20_000) / F32(2)).astype(F32),      # half-integers: exact ties
        r.standard_normal(20_000).astype(F32) * F32(1e-3),
    ])
    assert _iq4_both(xs) == 0


def test_fp4_index_equals_best_index_mxfp4():
    """Every E8M0-half and UE4M3 scale, values on and around every candidate midpoint."""
    r = np.random.default_rng(4)
    ds = np.unique(np.concatenate([NL._E8M0_HALF, NL._UE4M3]))
    xs = [_specials(), r.standard_normal(2000).astype(F32) * F32(3)]
    for d in ds[::3]:
        with np.errstate(over="ignore"):     # 10*d, 12*d, 13*d overflow for the largest d
            m = (np.array([0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 10, 12, 13]) * d).astype(F32)
        m = np.concatenate([m, np.nextafter(m, F32(-np.inf)), np.nextafter(m, F32(np.inf))])
        xs += [m, -m]
    xs = np.concatenate(xs).astype(F32)
    assert _fp4_both(xs, ds.astype(F32)) == 0


def test_fp4_index_exact_for_huge_ratio():
    """|x| far above 12*d: rounding of |k*d - x| makes ties, the C keeps the lowest code."""
    xs = np.array([1e30, -1e30, 3e38, 2688.0, 5000.0, 7.0, 1e10], F32)
    ds = np.array([224.0, 2.0 ** -10, 2.0 ** -128, 2.0 ** 125, 2.0 ** 127], F32)
    assert _fp4_both(xs, ds) == 0


def _libm_log2f():
    name = ctypes.util.find_library("m")
    if name is None:
        pytest.skip("no libm")
    f = ctypes.CDLL(name).log2f
    f.restype, f.argtypes = ctypes.c_float, [ctypes.c_float]
    return lambda bits: f(float(np.uint32(bits).view(F32)))


def test_floor_log2f_table_matches_libm():
    """floorf(log2f(amax)) == E + (bits >= threshold) for the C library's log2f, on every
    binade's bottom, top and a window of 100 floats around its threshold."""
    log2f = _libm_log2f()
    n_up = 0
    for E in range(-149, 128):
        lo = (E + 127) << 23 if E >= -126 else 1 << (E + 149)
        hi = lo + (1 << 23) - 1 if E >= -126 else (1 << (E + 150)) - 1
        thr = int(NL._LOG2F_UP[E + 149])
        cand = {lo, lo + 1, hi, hi - 1} | set(range(min(thr, hi + 1) - 50, min(thr, hi + 1) + 50))
        for b in (b for b in cand if lo <= b <= hi):
            want = math.floor(log2f(b))
            got = E + (1 if b >= thr else 0)
            assert got == want, (E, hex(b), want, got)
            if b >= thr:
                n_up += 1
    assert n_up > 1000          # the rounding-up zone exists in most binades


def test_mxfp4_e_helper():
    for v, want in ((1.0, 125), (2.0, 126), (0.5, 124), (np.nextafter(F32(2), F32(0)), 125),
                    (np.inf, 0), (0.0, 0), (2.0 ** -125, 0), (2.0 ** -126, 255), (1e-40, 248),
                    (np.finfo(F32).max, 253), (2.0 ** 127, 252)):
        assert NL._mxfp4_e(F32(v)) == want, v


@njit(cache=True)
def _ue4m3_all(xs):
    out = np.empty(xs.size, np.int64)
    for i in range(xs.size):
        out[i] = NL._fp32_to_ue4m3(xs[i])
    return out


def test_ue4m3_encoder_edges():
    enc = lambda v: int(_ue4m3_all(np.array([v], F32))[0])  # noqa: E731
    assert enc(0.0) == 0 and enc(-1.0) == 0 and enc(np.nan) == 0 and enc(np.inf) == 0x7E
    assert enc(448.0) == 0x7E and enc(256.0) == 0x7E and enc(255.0) == 0x7E   # exp 15 -> 0x7E
    assert enc(240.0) == 0x77 and enc(1.0) == 0x38 and enc(1.0625) == 0x39    # half rounds up
    assert enc(1.0625 - 2 ** -23) == 0x38 and enc(1.9375) == 0x40
    assert enc(7.5 / 512) == 7 and enc(7.99 / 512) == 7 and enc(2.0 ** -6) == 0x08
    assert enc(0.5 / 512) == 1 and enc(0.49 / 512) == 0
    # decoding table == gguf's ue4m3_to_fp32 for all 256 bytes
    from gguf.quants import NVFP4
    assert np.array_equal(NL._UE4M3.view(np.uint32),
                          NVFP4.ue4m3_to_fp32(np.arange(256, dtype=np.uint8)).astype(F32).view(np.uint32))


def test_fp16_store_nan_is_ggml_canonical():
    @njit
    def h(v):
        return NL._ggml_f16_bits(v)
    assert h(F32(np.nan)) == 0x7E00 and h(-F32(np.nan)) == 0xFE00
    payload_nan = np.array([0x7F800001, 0xFFBFFFFF], np.uint32).view(F32)   # numpy: 0x7C01, 0xFDFF
    assert h(payload_nan[0]) == 0x7E00 and h(payload_nan[1]) == 0xFE00
    assert h(F32(65520.0)) == 0x7C00 and h(F32(65504.0)) == 0x7BFF and h(F32(-0.0)) == 0x8000
    assert h(F32(2.0 ** -25)) == 0 and h(F32(2.0 ** -24)) == 1


# ------------------------------------------------------------------------------ decoding
@pytest.mark.parametrize("name", TYPES)
def test_decode_random_bytes_like_gguf(name):
    """Arbitrary bytes (every scale byte, fp16 NaN/inf/subnormal scales) decode like gguf."""
    qk, nb = NL.LAYOUT[name][:2]
    r = np.random.default_rng(5)
    packed = r.integers(0, 256, size=(64, 4 * nb), dtype=np.uint8)
    if name in ("MXFP4", "NVFP4"):
        packed.reshape(-1, nb)[:256, 0] = np.arange(256)     # every E8M0 / UE4M3 byte
    y = NL.KERNELS[name][1](packed, 4 * qk)
    with np.errstate(all="ignore"):
        gy = gguf_dequantize(packed, GQT[name])
    assert np.array_equal(y.view(np.uint32), gy.view(np.uint32))


# ------------------------------------------------------------------------------ real model
def _applicable(name, tensors):
    qk = NL.LAYOUT[name][0]
    return {k: v for k, v in tensors.items() if v.shape[1] % qk == 0}


@pytest.mark.parametrize("variant", IMATRIX_VARIANTS)
@pytest.mark.parametrize("name", TYPES)
def test_every_minilm_tensor_identical(oracle, minilm_tensors, name, variant):
    """Every applicable weight matrix (IQ4_XS: the six 384x1536). IQ4_NL's C runs ~5 M
    weights/s, so its 30522x384 embedding is covered in full once (no imatrix) and by its
    first 4096 rows otherwise."""
    ts = _applicable(name, minilm_tensors)
    assert len(ts) == (6 if name == "IQ4_XS" else 40)
    for tname, x in ts.items():
        if name == "IQ4_NL" and variant != "none" and x.shape[0] > 4096:
            x = x[:4096]
        try:
            assert_matches_llama(oracle, name, x, _qw_for(variant, x.shape[1]))
        except AssertionError as e:
            raise AssertionError(f"{tname} {x.shape}: {e}") from None


# ------------------------------------------------------------------------------ edge cases
def _edge_cases():
    """name -> float32 [rows, 256 or 512]: every case applies to all four types."""
    r = np.random.default_rng(1)
    c = {}
    c["zeros"] = np.zeros((2, 256), F32)
    c["neg_zeros"] = np.full((2, 256), -0.0, F32)
    c["mixed_zeros_and_one_block"] = np.zeros((2, 512), F32)
    c["mixed_zeros_and_one_block"][1, 300:310] = r.standard_normal(10)
    c["const_pos"] = np.full((2, 256), 0.3, F32)
    c["const_neg"] = np.full((2, 256), -7.25, F32)
    c["const_per_block"] = np.repeat(r.standard_normal((3, 16)).astype(F32), 16, axis=1)
    c["negative_only"] = -np.abs(r.standard_normal((4, 256))).astype(F32)
    c["positive_only"] = np.abs(r.standard_normal((4, 256))).astype(F32) * F32(0.01)
    x = (r.standard_normal((8, 512)) * 1e-3).astype(F32)
    for i in range(8):
        for b in range(0, 512, 16):
            x[i, b + r.integers(16)] = r.choice([-1, 1]) * r.uniform(5, 500)
    c["one_outlier_per_block"] = x
    c["denormals_1e-40"] = np.full((2, 256), 1e-40, F32)
    c["denormals_signed"] = (r.choice([-1, 1], (4, 256)) * r.uniform(1e-45, 1.1e-38, (4, 256))).astype(F32)
    x = r.uniform(-1e-40, 1e-40, (4, 256)).astype(F32)
    x[:, ::64] = r.standard_normal((4, 4))
    c["denormals_with_normals"] = x
    c["tiny_normals_1e-37"] = (r.standard_normal((4, 256)) * 1e-37).astype(F32)
    c["below_group_eps"] = (r.standard_normal((2, 256)) * 1e-16).astype(F32)
    c["around_group_eps"] = (r.choice([-1, 1], (4, 256)) * 1e-15 * r.uniform(0.5, 2, (4, 256))).astype(F32)
    c["huge_1e30"] = (r.standard_normal((2, 256)) * 1e30).astype(F32)
    c["huge_3e38"] = (r.choice([-1, 1], (2, 256)) * r.uniform(1e38, 3.4e38, (2, 256))).astype(F32)
    x = r.standard_normal((2, 256)).astype(F32)
    x[:, 0], x[:, 1], x[:, 40] = 3e38, -3e38, np.finfo(F32).max
    c["huge_mixed"] = x
    c["large_1e4"] = (r.standard_normal((4, 256)) * 1e4).astype(F32)   # NVFP4 scale saturates
    # values exactly at powers of two and one float below (MXFP4 exponent, E2M1 grid)
    p = 2.0 ** r.integers(-20, 20, (4, 256))
    c["powers_of_two"] = (r.choice([-1, 1], (4, 256)) * p).astype(F32)
    c["just_below_powers_of_two"] = np.nextafter(c["powers_of_two"], F32(0))
    # per 32-block: amax = 2^k, others on E2M1 midpoints of d = 2^(k-3) (ties), +-1 ulp
    rows = []
    mids = np.array([0.5, 1.5, 2.5, 3.5, 5, 7, 10, 1, 2, 3, 4, 6, 8, 12], np.float64)
    for k in range(-10, 10):
        blk = np.resize(mids * 2.0 ** (k - 3), 32) * r.choice([-1, 1], 32)
        blk[0] = 2.0 ** k
        blk = blk.astype(F32)
        rows.append(np.concatenate([blk, np.nextafter(blk, F32(np.inf)), np.nextafter(blk, F32(-np.inf)),
                                    -blk, blk * F32(1.5), blk[::-1], blk * F32(0.75), blk * F32(1.25)]))
    c["e2m1_midpoints"] = np.array(rows, F32)
    # per 16-sub-block: amax/6 exactly at a UE4M3 rounding midpoint (first dropped bit 1), +-1 ulp
    vals = []
    for ex in range(-12, 9):
        for man in range(8):
            vals.append((1 + (man + 0.5) / 8) * 2.0 ** ex)
    vals = np.array(vals, np.float64) * 6
    v32 = vals.astype(F32)
    special = np.array([7.5 / 512, 8 / 512, 0.5 / 512, 1.5 / 512, 256, 240, 448]) * 6
    amaxes = np.concatenate([vals, np.nextafter(v32, F32(0)), np.nextafter(v32, F32(np.inf)), special])
    n = len(amaxes) // 16 * 16
    blocks = r.uniform(-1, 1, (n, 16)) * amaxes[:n, None] * 0.9
    blocks[np.arange(n), r.integers(0, 16, n)] = amaxes[:n] * r.choice([-1, 1], n)
    c["ue4m3_midpoints"] = blocks.astype(F32).reshape(-1, 256)
    # IQ4: half-integer data with max -127, so idx*x hits level midpoints exactly (ties)
    blk = np.concatenate([[-127.0], np.resize(NL._IQ4_MID.astype(np.float64), 31)])
    row = np.concatenate([blk, blk * 0.5, blk[::-1], -blk, blk, blk, blk * 2, blk])
    c["iq4_level_ties"] = np.tile(row, (2, 1)).astype(F32)
    # first element of largest |x| decides the sign (+a before -a, and -a before +a)
    x = r.standard_normal((4, 256)).astype(F32) * F32(0.1)
    x[0, ::32], x[0, 5::32] = 1.0, -1.0
    x[1, ::32], x[1, 5::32] = -1.0, 1.0
    x[2, ::16], x[2, 3::16] = 2.0, -2.0
    x[3] = np.tile([1.0, -1.0], 128)
    c["sign_ties"] = x
    # rows of exactly 256, several rows; a few 512-wide rows of varied scale
    c["rows_256"] = r.standard_normal((7, 256)).astype(F32)
    c["varied_scales"] = (r.standard_normal((16, 512)) * 10.0 ** r.uniform(-8, 8, (16, 1))).astype(F32)
    c["heavy_tailed"] = r.standard_t(2, (16, 512)).astype(F32)
    c["small_ints"] = r.integers(-8, 8, (4, 256)).astype(F32)
    return c


EDGE = _edge_cases()


@pytest.mark.parametrize("variant", IMATRIX_VARIANTS)
@pytest.mark.parametrize("case", sorted(EDGE))
def test_edge_cases_identical(oracle, case, variant):
    x = EDGE[case]
    for name in TYPES:
        assert_matches_llama(oracle, name, x, _qw_for(variant, x.shape[1]))


def test_random_normal_and_uniform(oracle):
    r = np.random.default_rng(7)
    for x in (r.standard_normal((300, 1024)).astype(F32), r.uniform(-1, 1, (64, 2048)).astype(F32)):
        for name in TYPES:
            for variant in IMATRIX_VARIANTS:
                assert_matches_llama(oracle, name, x, _qw_for(variant, x.shape[1]))


def test_mxfp4_exponent_every_binade(oracle):
    """One 32-block per amax at the bottom, the top and the log2f rounding threshold (+-1) of
    every float32 binade: the E8M0 byte must follow glibc's floorf(log2f(amax))."""
    bits = []
    for E in range(-149, 128):
        lo = (E + 127) << 23 if E >= -126 else 1 << (E + 149)
        hi = lo + (1 << 23) - 1 if E >= -126 else (1 << (E + 150)) - 1
        bits += [lo, hi]
        thr = int(NL._LOG2F_UP[E + 149])
        if thr <= hi:
            bits += [b for b in (thr - 1, thr, thr + 1) if lo <= b <= hi]
    amax = np.array(bits, np.uint32).view(F32)
    r = np.random.default_rng(8)
    x = (r.uniform(-1, 1, (len(amax), 32)) * amax[:, None]).astype(F32)
    x[:, 7] = amax * r.choice([-1, 1], len(amax)).astype(F32)
    x = np.concatenate([x, np.zeros(((-len(x)) % 8, 32), F32)]).reshape(-1, 256)
    ref = assert_matches_llama(oracle, "MXFP4", x)
    assert set(ref.reshape(-1, 17)[:, 0].tolist()) >= {0, 1, 2, 253, 252, 248, 232}
    for name in ("NVFP4", "IQ4_NL", "IQ4_XS"):
        assert_matches_llama(oracle, name, x)


def test_nvfp4_scale_sweep(oracle):
    """NVFP4 sub-block scales for 2^16 amax values from 1e-7 to 1e5 (log-uniform)."""
    r = np.random.default_rng(9)
    amax = np.exp(r.uniform(np.log(1e-7), np.log(1e5), 1 << 16)).astype(F32)
    x = (r.uniform(-1, 1, (amax.size, 16)) * amax[:, None]).astype(F32)
    x[np.arange(amax.size), r.integers(0, 16, amax.size)] = amax
    assert_matches_llama(oracle, "NVFP4", x.reshape(-1, 1024))


def test_imatrix_is_ignored_by_mxfp4_nvfp4(oracle):
    """llama.cpp ignores quant_weights for MXFP4/NVFP4: same bytes with and without."""
    x = np.random.default_rng(10).standard_normal((8, 512)).astype(F32)
    im = _imatrix(512)
    for name in ("MXFP4", "NVFP4"):
        a = oracle.quantize(name, x, im)
        assert np.array_equal(a, oracle.quantize(name, x, None))
        assert np.array_equal(a, NL.KERNELS[name][0](x, im))
    for name in ("IQ4_NL", "IQ4_XS"):       # ... while the IQ4 types do use it
        assert not np.array_equal(oracle.quantize(name, x, im), oracle.quantize(name, x, None))
