"""kernels/kquant_type0.py: Q3_K, Q6_K and the imatrix path of Q4_0/Q5_0, byte-identical to
llama.cpp's ``ggml_quantize_chunk`` (the real library through ``workbench.oracle``), with and
without an importance matrix; Q3_K/Q6_K decoding bit-identical to ``gguf.quants.dequantize``.

The oracle tests skip (fixture ``oracle``) when llama-cpp-python is not installed; the decoding
and structural tests need only gguf.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GQT
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize as gguf_dequantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.kernels import kquant_type0 as K
from workbench.kernels import legacy as LG

F32 = np.float32
NO_IMATRIX = np.zeros(0, F32)
KQUANTS = ("Q3_K", "Q6_K")
LEGACY_IMATRIX = ("Q4_0", "Q5_0")
ALL = KQUANTS + LEGACY_IMATRIX
IMATRIX_KINDS = ("none", "positive", "with_zeros")


# ------------------------------------------------------------------------------ helpers
def _imatrix(cols, kind, seed=0):
    """A realistic importance matrix: per-column mean of squared heavy-tailed activations
    (what llama-imatrix accumulates), float32; ``with_zeros`` zeroes ~10% of the columns and
    one whole run of 32 (a sub-block whose weights are all zero)."""
    if kind == "none":
        return None
    r = np.random.default_rng(1000 + seed + cols)
    col_scale = np.exp(r.normal(0.0, 1.0, size=cols))
    acts = r.standard_t(3, size=(256, cols)) * col_scale
    imat = (acts.astype(F32) ** 2).mean(axis=0).astype(F32)
    if kind == "with_zeros":
        imat[r.random(cols) < 0.1] = 0.0
        imat[32:64] = 0.0
    assert imat.dtype == F32 and imat.shape == (cols,)
    return imat


def _quantizer(name):
    if name in K.KERNELS:
        return K.KERNELS[name][0]
    return K.IMATRIX_LEGACY[name]


def _layout(name):
    return K.LAYOUT[name] if name in K.LAYOUT else LG.LAYOUT[name]


def _describe_mismatch(name, ref, ours):
    """First differing block: row, block, field, byte, and both blocks' field bytes."""
    qk, nbytes, fields = _layout(name)
    rb = ref.reshape(ref.shape[0], -1, nbytes)
    ob = ours.reshape(ours.shape[0], -1, nbytes)
    r, b, k = (int(v[0]) for v in np.nonzero(rb != ob))
    nbad = int((rb != ob).any(axis=2).sum())
    field, off, n = next(f for f in fields if f[1] <= k < f[1] + f[2])
    return (f"{name}: {nbad} of {rb.shape[0] * rb.shape[1]} blocks differ; first: row {r} block {b} "
            f"(weights {b * qk}..{b * qk + qk - 1}) field {field!r} byte {k - off}: "
            f"oracle {field}={rb[r, b, off:off + n].tolist()} ours {field}={ob[r, b, off:off + n].tolist()}")


def assert_same_as_oracle(oracle, name, x, imat):
    """Our bytes == ggml_quantize_chunk's bytes; for Q3_K/Q6_K also our decode of them ==
    gguf's decode, bit for bit."""
    x = np.ascontiguousarray(x, dtype=F32)
    ref = oracle.quantize(name, x, imat)
    ours = _quantizer(name)(x, NO_IMATRIX if imat is None else imat)
    qk, nbytes, _ = _layout(name)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape == (x.shape[0], x.shape[1] // qk * nbytes)
    if not np.array_equal(ref, ours):
        raise AssertionError(_describe_mismatch(name, ref, ours))
    if name in K.KERNELS:
        assert_decode_same_as_gguf(name, ref, x.shape[1])


def assert_decode_same_as_gguf(name, packed, cols):
    y = K.KERNELS[name][1](packed, cols)
    with np.errstate(all="ignore"):
        ry = gguf_dequantize(packed, GQT[name])
    assert y.dtype == F32 and y.shape == ry.shape == (packed.shape[0], cols)
    bad = np.flatnonzero(y.view(np.uint32).ravel() != ry.view(np.uint32).ravel())
    assert bad.size == 0, (f"{name} decode: {bad.size} values differ; first at flat index {bad[0]}: "
                           f"gguf {ry.ravel()[bad[0]]!r} ours {y.ravel()[bad[0]]!r}")


# ------------------------------------------------------------------------------ structure
def test_interface_and_layout():
    assert set(K.KERNELS) == set(KQUANTS) and set(K.IMATRIX_LEGACY) == set(LEGACY_IMATRIX)
    for name in KQUANTS:
        quant, dequant, qk, nbytes = K.KERNELS[name]
        assert GGML_QUANT_SIZES[GQT[name]] == (qk, nbytes) == K.LAYOUT[name][:2]
        assert sum(n for _, _, n in K.LAYOUT[name][2]) == nbytes
    assert (K.KERNELS["Q3_K"][3], K.KERNELS["Q6_K"][3]) == (110, 210)


def test_layout_matches_oracle_row_size(oracle):
    for name in ALL:
        qk, nbytes, _ = _layout(name)
        assert oracle.row_size(name, 1536) == 1536 // qk * nbytes


def test_rejects_bad_shapes():
    x = np.zeros((2, 384), F32)
    for name in KQUANTS:
        quant, dequant, qk, nbytes = K.KERNELS[name]
        with pytest.raises(ValueError):
            quant(x, NO_IMATRIX)                               # 384 % 256 != 0
        with pytest.raises(ValueError):
            quant(np.zeros((2, 512), F32), np.ones(256, F32))  # imatrix of the wrong length
        with pytest.raises(ValueError):
            dequant(np.zeros((2, nbytes), np.uint8), 512)
    for name in LEGACY_IMATRIX:
        with pytest.raises(ValueError):
            K.IMATRIX_LEGACY[name](np.zeros((2, 48), F32), np.ones(48, F32))
        with pytest.raises(ValueError):
            K.IMATRIX_LEGACY[name](np.zeros((2, 64), F32), np.ones(32, F32))


def test_no_imatrix_legacy_falls_back_to_reference():
    x = np.random.default_rng(5).standard_t(3, size=(4, 256)).astype(F32)
    assert np.array_equal(K.quantize_q4_0_imatrix(x, NO_IMATRIX), LG.quantize_q4_0(x))
    assert np.array_equal(K.quantize_q5_0_imatrix(x, NO_IMATRIX), LG.quantize_q5_0(x))


def test_no_imatrix_all_zero_block_d_is_c_minus_zero(oracle):
    """quantize_row_q4_0_ref keeps max = +0.0f on an all-zero block, so d = +0/-8 = -0 even when
    the block starts with -0.0 (where gguf's numpy, taking the first element, writes +0)."""
    x = np.zeros((2, 64), F32)
    x[0, :32] = -0.0
    x[1, 0] = -0.0
    x[1, 32:] = np.random.default_rng(7).normal(size=32).astype(F32)
    for name, nbytes in (("Q4_0", 18), ("Q5_0", 22)):
        ref = oracle.quantize(name, x)
        assert ref[0, 1] == ref[0, nbytes + 1] == ref[1, 1] == 0x80 and ref[0, 0] == 0
        assert np.array_equal(K.IMATRIX_LEGACY[name](x, NO_IMATRIX), ref), name
        assert np.array_equal(LG.LEGACY[name][0](x), ref), name   # legacy.py follows the C


def test_rows_are_independent():
    """The lead splits rows across threads: any row range quantizes to the same bytes."""
    x = np.random.default_rng(6).normal(size=(7, 512)).astype(F32)
    imat = _imatrix(512, "positive")
    for name in ALL:
        q = _quantizer(name)
        for qw in (NO_IMATRIX, imat):
            full = q(x, qw)
            assert np.array_equal(full[2:5], q(x[2:5], qw)), name
            assert np.array_equal(full[6:], q(x[6:], qw)), name


# ------------------------------------------------------------------------------ real model
@pytest.mark.parametrize("kind", IMATRIX_KINDS)
@pytest.mark.parametrize("name", ALL)
def test_every_minilm_tensor_identical(oracle, minilm_tensors, name, kind):
    done = 0
    for tname, x in minilm_tensors.items():
        cols = x.shape[1]
        if name in KQUANTS and cols % 256 != 0:
            continue
        try:
            assert_same_as_oracle(oracle, name, x, _imatrix(cols, kind))
        except AssertionError as e:
            raise AssertionError(f"{tname} {tuple(x.shape)} imatrix={kind}: {e}") from None
        done += 1
    assert done == (6 if name in KQUANTS else len(minilm_tensors)), done


# ------------------------------------------------------------------------------ edge cases
def _edge_cases():
    r = np.random.default_rng(11)
    cases = {}
    cases["zeros"] = np.zeros((2, 512), F32)
    cases["neg_zeros"] = np.full((1, 256), -0.0, F32)
    cases["exactly_256"] = r.normal(size=(1, 256)).astype(F32)
    cases["several_rows"] = r.standard_t(4, size=(9, 768)).astype(F32)
    x = (r.normal(size=(4, 512)) * 1e-2).astype(F32)
    for i in range(4):                          # one huge outlier per 32 weights
        for b in range(16):
            x[i, 32 * b + r.integers(32)] = r.choice([-1, 1]) * r.uniform(10, 1e4)
    cases["outlier_per_block"] = x
    x = (r.normal(size=(2, 512)) * 1e-3).astype(F32)
    x[0, 100] = 1e4                             # one outlier per super-block only
    x[1, 300] = -1e4
    cases["outlier_per_superblock"] = x
    cases["denormals_1e-40"] = np.full((1, 256), 1e-40, F32)
    cases["denormals_signed"] = (r.choice([-1, 1], size=(2, 512)) * r.uniform(1e-45, 1e-38, size=(2, 512))).astype(F32)
    x = r.uniform(-1e-40, 1e-40, size=(2, 512)).astype(F32)
    x[:, ::64] = r.normal(size=(2, 8)).astype(F32)
    cases["denormals_with_normals"] = x
    # around GROUP_MAX_EPS = 1e-15: blocks just below it are "all zero", those above give
    # scales whose fp16 underflows to 0 (the levels of the first pass are kept)
    tiny = []
    for mag in (5e-16, 9.99e-16, 1e-15, 1.0000001e-15, 2e-15, 1e-14, 1e-12, 1e-9, 1e-7):
        tiny.append((r.uniform(-1, 1, size=256) * mag).astype(F32))
        row = (r.uniform(-1, 1, size=256) * mag * 0.5).astype(F32)
        row[7] = F32(mag)
        tiny.append(row)
    cases["tiny_near_eps"] = np.array(tiny, F32)
    x = (r.normal(size=(2, 512)) * 1e-3).astype(F32)
    x[:, 16:32] = F32(1e-15)                   # one sub-block at exactly eps
    x[:, 48:64] = F32(-9e-16)                  # one below
    cases["eps_subblocks"] = x
    cases["huge_1e30"] = (r.normal(size=(2, 512)) * 1e30).astype(F32)
    cases["huge_3e38"] = (r.choice([-1, 1], size=(1, 256)) * r.uniform(1e38, 3e38, size=(1, 256))).astype(F32)
    cases["big_fp16_overflow"] = (r.normal(size=(2, 512)) * 1e7).astype(F32)
    x = r.normal(size=(2, 512)).astype(F32)
    x[0, 5] = 1e30                              # one huge value among normal ones
    x[1, 260] = -1e20
    cases["one_huge_value"] = x
    cases["const_pos"] = np.full((2, 512), 0.37, F32)
    cases["const_neg"] = np.full((1, 256), -2.5, F32)
    cases["const_per_16"] = np.repeat(r.normal(size=(2, 32)).astype(F32), 16, axis=1)
    cases["const_per_32"] = np.repeat(r.normal(size=(2, 16)).astype(F32), 32, axis=1)
    cases["positive_only"] = np.abs(r.normal(size=(3, 512))).astype(F32)
    cases["negative_only"] = -np.abs(r.normal(size=(3, 512))).astype(F32)
    x = r.normal(size=(3, 512)).astype(F32)     # blocks alternating all-positive / all-negative
    for b in range(32):
        x[:, 16 * b:16 * b + 16] = np.abs(x[:, 16 * b:16 * b + 16]) * (1 if b % 3 else -1)
    cases["sign_per_subblock"] = x
    # +-ties for the max |x| (the FIRST one sets the sign), inside blocks and across sub-blocks
    x = (r.normal(size=(6, 256)) * 0.1).astype(F32)
    x[0, 3], x[0, 10] = -2.0, 2.0
    x[1, 3], x[1, 10] = 2.0, -2.0
    x[2, 0], x[2, 31] = -7.25, 7.25
    x[3, 16:32] = np.tile([1.5, -1.5], 8)
    x[4, 16:32] = np.tile([-1.5, 1.5], 8)
    x[5, 0:16] = r.normal(size=16).astype(F32)  # sub-block 1 = -sub-block 0: equal and opposite
    x[5, 16:32] = -x[5, 0:16]                   # scales (Q6_K: +128 clamps to 127)
    cases["sign_ties"] = x
    # sub-blocks of wildly different magnitude: small scales round to 0 or clamp
    mags = 10.0 ** r.integers(-8, 4, size=(4, 32))
    cases["mixed_magnitudes"] = (r.normal(size=(4, 512)) * np.repeat(mags, 16, axis=1)).astype(F32)
    # exact grid values: x = integer levels times a power of two (rounding ties everywhere)
    lv = r.integers(-32, 32, size=(3, 512)).astype(F32) + F32(0.5) * r.integers(0, 2, size=(3, 512))
    cases["grid_ties"] = (lv * F32(0.125)).astype(F32)
    cases["small_ints"] = r.integers(-4, 4, size=(2, 512)).astype(F32)
    cases["heavy_tail"] = r.standard_cauchy(size=(4, 512)).astype(F32)
    x = r.normal(size=(2, 512)).astype(F32)
    x[x > 0.8] = 0.0
    x[x < -1.2] = -0.0
    cases["signed_zeros_inside"] = x
    return cases


EDGE = _edge_cases()


@pytest.mark.parametrize("kind", IMATRIX_KINDS)
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("case", sorted(EDGE))
def test_edge_cases_identical(oracle, case, name, kind):
    x = EDGE[case]
    assert_same_as_oracle(oracle, name, x, _imatrix(x.shape[1], kind, seed=3))


def test_edge_cases_reach_the_odd_paths():
    """The edge cases above do reach the rarely taken branches of the C (so matching the
    oracle on them means something): Q6_K's MIN(127, ...) clamp, sub-blocks whose stored
    d*sc is 0 (the first-pass levels are kept), and fp16 d overflowing to inf / NaN."""
    def q(name, case, kind="none"):
        x = EDGE[case]
        imat = _imatrix(x.shape[1], kind, seed=3)
        nbytes = K.KERNELS[name][3]
        p = K.KERNELS[name][0](x, NO_IMATRIX if imat is None else imat).reshape(-1, nbytes)
        return p, p[:, nbytes - 2:].copy().view(np.float16).ravel()

    p, _ = q("Q6_K", "sign_ties")
    assert p[5, 192:194].view(np.int8).tolist() == [-128, 127]     # +128 clamped to 127
    for name in KQUANTS:
        for kind in ("none", "positive"):
            p, d = q(name, "tiny_near_eps", kind)
            assert ((d == 0) & (p[:, :-2] != 0).any(axis=1)).any(), (name, kind)
    _, d = q("Q3_K", "big_fp16_overflow")
    assert np.isinf(d).all()
    _, d = q("Q6_K", "one_huge_value", "positive")
    assert (~np.isfinite(d)).any()


@pytest.mark.parametrize("name", ALL)
def test_extreme_imatrix_values(oracle, name):
    """imatrix entries that are 0, denormal, huge, or the same everywhere."""
    x = np.random.default_rng(12).standard_t(3, size=(3, 512)).astype(F32)
    r = np.random.default_rng(13)
    for imat in (np.ones(512, F32),
                 np.zeros(512, F32),
                 (r.uniform(0, 1, 512) * 1e-40).astype(F32),
                 (r.uniform(0, 1, 512) * 1e30).astype(F32),
                 np.where(r.random(512) < 0.5, 0.0, 1.0).astype(F32)):
        assert_same_as_oracle(oracle, name, x, imat)


def test_q8_0_ignores_imatrix(oracle):
    """llama.cpp's quantize_q8_0 ignores quant_weights: the legacy reference kernel applies."""
    for x in (np.random.default_rng(14).standard_t(3, size=(5, 384)).astype(F32), EDGE["outlier_per_block"]):
        imat = _imatrix(x.shape[1], "with_zeros")
        ref = oracle.quantize("Q8_0", x, imat)
        assert np.array_equal(ref, oracle.quantize("Q8_0", x))
        assert np.array_equal(ref, LG.quantize_q8_0(x))


# ------------------------------------------------------------------------------ property
@st.composite
def _blocks(draw):
    """One or two super-blocks per row: per-sub-block magnitudes, signs, zero runs, and ties."""
    rows = draw(st.integers(1, 3))
    nsb = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**32 - 1))
    r = np.random.default_rng(seed)
    x = r.standard_t(draw(st.sampled_from([2, 5, 50])), size=(rows, 256 * nsb))
    x *= np.repeat(10.0 ** r.uniform(draw(st.integers(-20, 0)), draw(st.integers(0, 8)),
                                     size=(rows, 16 * nsb)), 16, axis=1)
    x[r.random(x.shape) < draw(st.sampled_from([0.0, 0.2, 0.9]))] = 0.0
    if draw(st.booleans()):
        x = np.round(x * 4) / 4                     # many exact ties
    return np.ascontiguousarray(x.astype(F32)), seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_blocks(), st.sampled_from(ALL), st.sampled_from(IMATRIX_KINDS))
def test_random_structured_blocks(oracle, xs, name, kind):
    x, seed = xs
    assert_same_as_oracle(oracle, name, x, _imatrix(x.shape[1], kind, seed=seed % 1000))


# ------------------------------------------------------------------------------ decoding alone
@pytest.mark.parametrize("name", KQUANTS)
def test_decode_minilm_same_as_gguf(minilm_tensors, name):
    """Our bytes of the real model's 1536-wide matrices decode as gguf decodes them."""
    done = 0
    for tname, x in minilm_tensors.items():
        if x.shape[1] % 256 == 0:
            for kind in ("none", "positive"):
                imat = _imatrix(x.shape[1], kind)
                assert_decode_same_as_gguf(name, K.KERNELS[name][0](x, NO_IMATRIX if imat is None else imat),
                                           x.shape[1])
            done += 1
    assert done == 6


@pytest.mark.parametrize("name", KQUANTS)
def test_decode_arbitrary_bytes(name):
    """Every byte pattern (all scale codes, signs, high bits), finite fp16 d: bit-identical to gguf."""
    qk, nbytes = K.KERNELS[name][2:]
    r = np.random.default_rng(15)
    packed = r.integers(0, 256, size=(64, 4 * nbytes), dtype=np.uint8)
    blocks = packed.reshape(64, 4, nbytes)
    d = blocks[:, :, nbytes - 2:].copy().view(np.uint16)
    d &= np.uint16(0xBBFF)                            # keep the exponent below 31 (finite)
    blocks[:, :, nbytes - 2:] = d.view(np.uint8).reshape(64, 4, 2)
    blocks[0, 0, nbytes - 2:] = (0x01, 0x00)          # smallest subnormal d
    blocks[0, 1, nbytes - 2:] = (0xFF, 0x7B)          # 65504
    blocks[0, 2, nbytes - 2:] = (0x00, 0x80)          # -0
    assert_decode_same_as_gguf(name, packed, 4 * qk)
    with pytest.raises(ValueError):
        K.KERNELS[name][1](packed[:, :nbytes + 1], qk)
