"""kernels/kquant_type1.py: Q2_K/Q4_K/Q5_K (with and without imatrix) and the imatrix path of
Q4_1/Q5_1, byte-identical to llama.cpp's ``ggml_quantize_chunk``; decoding bit-identical to
``gguf.quants.dequantize``.

The byte comparisons need llama.cpp itself (the ``oracle`` fixture skips without it); the
decoding tests need only gguf. On a mismatch the message names the first differing block
(row, block), the fields that differ with both byte strings, and the block's input range.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from gguf import GGMLQuantizationType as GQT
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize as gguf_dequantize

from workbench.kernels import kquant_type1 as KQ
from workbench.kernels.legacy import LEGACY

F32 = np.float32
E = np.empty(0, F32)                      # "no imatrix"
KTYPES = ("Q2_K", "Q4_K", "Q5_K")
LTYPES = ("Q4_1", "Q5_1")
THREADS = os.cpu_count() or 1

# (field, byte offset, bytes) per block, as in ggml-common.h
FIELDS = {
    "Q2_K": (("scales", 0, 16), ("qs", 16, 64), ("d", 80, 2), ("dmin", 82, 2)),
    "Q4_K": (("d", 0, 2), ("dmin", 2, 2), ("scales", 4, 12), ("qs", 16, 128)),
    "Q5_K": (("d", 0, 2), ("dmin", 2, 2), ("scales", 4, 12), ("qh", 16, 32), ("qs", 48, 128)),
    "Q4_1": (("d", 0, 2), ("m", 2, 2), ("qs", 4, 16)),
    "Q5_1": (("d", 0, 2), ("m", 2, 2), ("qh", 4, 4), ("qs", 8, 16)),
}
BLOCK = {"Q2_K": (256, 84), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q4_1": (32, 20),
         "Q5_1": (32, 24)}


def _quantize(name, x, qw):
    f = KQ.KERNELS[name][0] if name in KQ.KERNELS else KQ.IMATRIX_LEGACY[name]
    return f(np.ascontiguousarray(x, F32), E if qw is None else qw)


def _decode(name, packed, cols):
    f = KQ.KERNELS[name][1] if name in KQ.KERNELS else LEGACY[name][1]
    return f(packed, cols)


def _mismatch_report(name, ref, ours, x):
    qk, nbytes = BLOCK[name]
    rb, ob = ref.reshape(-1, nbytes), ours.reshape(-1, nbytes)
    bad = np.flatnonzero((rb != ob).any(axis=1))
    i = int(bad[0])
    per_row = x.shape[1] // qk
    row, blk = divmod(i, per_row)
    fields = []
    for f, off, n in FIELDS[name]:
        if not np.array_equal(rb[i, off:off + n], ob[i, off:off + n]):
            fields.append(f"{f}: llama.cpp {rb[i, off:off + n].tolist()} ours {ob[i, off:off + n].tolist()}")
    xb = x[row, blk * qk:(blk + 1) * qk]
    return (f"{name}: {len(bad)}/{len(rb)} blocks differ; first: row {row} block {blk} "
            f"(x in [{xb.min():.6g}, {xb.max():.6g}]):\n  " + "\n  ".join(fields))


def _same_floats(a, b):
    """Bit-identical float32 arrays, where two NaNs count as equal whatever their payload."""
    return bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))))


def assert_matches_llama(oracle, name, x, qw=None):
    x = np.ascontiguousarray(x, F32)
    ref = oracle.quantize(name, x, qw, threads=THREADS)
    ours = _quantize(name, x, qw)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    if not np.array_equal(ours, ref):
        raise AssertionError(_mismatch_report(name, ref, ours, x))
    y = _decode(name, ref, x.shape[1])
    assert y.dtype == np.float32 and y.shape == x.shape
    with np.errstate(all="ignore"):                  # gguf: inf * 0 scales -> NaN
        ref_y = gguf_dequantize(ref, GQT[name])
    assert _same_floats(y, ref_y), f"{name}: decoding differs from gguf"


def _imatrix(cols, seed=0, zeros=False):
    """Per-column mean of squared activations (heavy-tailed), as llama-imatrix computes it; with
    ``zeros``, ~10% zero columns plus whole zero runs (a zero sub-block / block of weights)."""
    r = np.random.default_rng(1000 + seed)
    act = r.standard_t(3, size=(64, cols)) * r.lognormal(0.0, 1.0, size=cols)
    qw = np.mean(act * act, axis=0).astype(F32)
    if zeros:
        qw[r.random(cols) < 0.1] = 0
        qw[:32] = 0
        qw[256 + 64:256 + 80] = 0 if cols >= 512 else qw[256 + 64:256 + 80]
    return qw


IMATRIX_KINDS = ("none", "imatrix", "imatrix_zeros")


def _qw(kind, cols):
    return None if kind == "none" else _imatrix(cols, zeros=(kind == "imatrix_zeros"))


# ------------------------------------------------------------------------------ layout
def test_layout_matches_gguf_and_structs():
    for name, (qk, nbytes) in BLOCK.items():
        assert GGML_QUANT_SIZES[GQT[name]] == (qk, nbytes), name
        pos = 0
        for _f, off, n in FIELDS[name]:
            assert off == pos, name
            pos += n
        assert pos == nbytes, name
    for name, (q, dq, qk, nbytes) in KQ.KERNELS.items():
        assert (qk, nbytes) == BLOCK[name]
    assert set(KQ.IMATRIX_LEGACY) == set(LTYPES)


# ------------------------------------------------------------------------------ real model
@pytest.mark.parametrize("kind", IMATRIX_KINDS)
@pytest.mark.parametrize("name", KTYPES)
def test_minilm_kquants_identical(oracle, minilm_tensors, name, kind):
    applicable = {k: v for k, v in minilm_tensors.items() if v.shape[1] % 256 == 0}
    assert len(applicable) == 6                       # the six 384x1536 output.dense matrices
    for tname, x in applicable.items():
        try:
            assert_matches_llama(oracle, name, x, _qw(kind, x.shape[1]))
        except AssertionError as e:
            raise AssertionError(f"{tname}: {e}") from None


@pytest.mark.parametrize("kind", IMATRIX_KINDS)
@pytest.mark.parametrize("name", LTYPES)
def test_minilm_legacy_imatrix_identical(oracle, minilm_tensors, name, kind):
    assert len(minilm_tensors) == 40
    for tname, x in minilm_tensors.items():
        if kind == "imatrix_zeros" and x.size > 1_000_000:
            continue                                  # the word embeddings: once is enough
        try:
            assert_matches_llama(oracle, name, x, _qw(kind, x.shape[1]))
        except AssertionError as e:
            raise AssertionError(f"{tname}: {e}") from None


# ------------------------------------------------------------------------------ edge cases
def _edge_cases():
    r = np.random.default_rng(7)
    n = r.standard_normal((4, 512)).astype(F32)
    c = {}
    c["zeros"] = np.zeros((3, 512), F32)
    c["signed_zeros"] = np.where(r.random((2, 512)) < 0.5, F32(0.0), F32(-0.0)).astype(F32)
    c["random_normal"] = n
    c["row_of_256"] = r.standard_normal((1, 256)).astype(F32)
    c["rows_of_256"] = r.standard_normal((9, 256)).astype(F32)
    c["positive_only"] = np.abs(n)
    c["negative_only"] = -np.abs(n)
    c["positive_offset"] = (n * F32(0.01) + F32(3)).astype(F32)   # min > 0 everywhere
    o = n.copy()
    o[:, 5::32] = F32(1e4)                               # one huge outlier per 32
    c["outlier_per_block"] = o
    o2 = n.copy()
    o2[:, 17::256] = F32(-3e3)                           # one per super-block, negative
    c["outlier_per_superblock"] = o2
    c["denormals"] = (n * F32(1e-40)).astype(F32)
    c["denormal_mix"] = np.where(r.random((4, 512)) < 0.5, n * F32(1e-40), n * F32(1e-3)).astype(F32)
    c["near_eps"] = (n * F32(1e-15)).astype(F32)
    c["below_eps"] = (n * F32(1e-17)).astype(F32)
    c["tiny_1e-8"] = (n * F32(1e-8)).astype(F32)        # fp16 d underflows
    c["huge_1e30"] = (n * F32(1e30)).astype(F32)
    c["huge_1e37"] = (n * F32(1e37)).astype(F32)        # max - min overflows
    c["fp16_overflow"] = (n * F32(1e6)).astype(F32)      # d > 65504 -> inf
    k = np.repeat(r.standard_normal((3, 16)).astype(F32), 32, axis=1)
    c["constant_blocks"] = k                              # constant per block of 32
    c["constant_row"] = np.full((2, 256), F32(0.75))
    c["constant_negative"] = np.full((2, 256), F32(-2.5))
    c["two_values"] = np.where(r.random((2, 512)) < 0.3, F32(1.0), F32(-0.25)).astype(F32)
    c["ties_quarters"] = (r.integers(-8, 9, (4, 512)) / 4).astype(F32)
    c["ties_ints"] = r.integers(0, 4, (4, 512)).astype(F32)
    c["ties_halves"] = (r.integers(-31, 32, (4, 512)) / 2).astype(F32)
    sc = np.repeat(np.logspace(-7, 0, 16).astype(F32), 32)[None, :]
    c["subblock_scales_1e-7_to_1"] = (n[:2] * sc).astype(F32)   # tiny sub-scales -> code 0
    sc16 = np.repeat(np.logspace(-6, 0, 32).astype(F32), 16)[None, :]
    c["subblock16_scales"] = (n[:2] * sc16).astype(F32)
    sp = n.copy()
    sp[r.random(sp.shape) < 0.9] = 0
    c["sparse"] = sp
    c["uniform"] = r.uniform(-1, 1, (4, 512)).astype(F32)
    c["laplace"] = r.laplace(size=(4, 512)).astype(F32)
    c["one_nonzero_per_block"] = np.where(np.arange(512) % 32 == 3, n, 0).astype(F32)
    return c


EDGE = _edge_cases()


@pytest.mark.parametrize("kind", IMATRIX_KINDS)
@pytest.mark.parametrize("name", KTYPES + LTYPES)
@pytest.mark.parametrize("case", sorted(EDGE))
def test_edge_cases_identical(oracle, case, name, kind):
    x = EDGE[case]
    assert_matches_llama(oracle, name, x, _qw(kind, x.shape[1]))


@pytest.mark.parametrize("name", KTYPES + LTYPES)
def test_special_imatrices_identical(oracle, name):
    x = EDGE["random_normal"]
    cols = x.shape[1]
    r = np.random.default_rng(3)
    for qw in (np.zeros(cols, F32),                       # all weights zero
               np.ones(cols, F32),
               np.full(cols, F32(1e-30)),
               (r.random(cols) ** 8).astype(F32),           # extreme dynamic range
               np.where(np.arange(cols) % 2 == 0, F32(1e6), F32(1e-6)).astype(F32)):
        assert_matches_llama(oracle, name, x, qw)


@pytest.mark.parametrize("name", KTYPES + LTYPES)
def test_random_blocks_identical(oracle, name):
    """Many seeds of mixed distributions, several shapes and imatrices."""
    r = np.random.default_rng(11)
    for seed in range(12):
        rows = int(r.integers(1, 6))
        cols = 256 * int(r.integers(1, 5))
        dist = seed % 4
        if dist == 0:
            x = r.standard_normal((rows, cols))
        elif dist == 1:
            x = r.standard_t(2, (rows, cols))
        elif dist == 2:
            x = r.uniform(-1, 3, (rows, cols))
        else:
            x = r.standard_normal((rows, cols)) * np.exp(r.uniform(-8, 4, (rows, cols // 16))).repeat(16, 1)
        x = (x * 10.0 ** r.uniform(-4, 2)).astype(F32)
        qw = None if seed % 3 == 0 else _imatrix(cols, seed=seed, zeros=seed % 3 == 2)
        try:
            assert_matches_llama(oracle, name, x, qw)
        except AssertionError as e:
            raise AssertionError(f"seed {seed}: {e}") from None


# ------------------------------------------------------------------------------ decoding
@pytest.mark.parametrize("name", KTYPES)
def test_decode_random_bytes_matches_gguf(name):
    """Any bytes (fp16 inf/NaN/subnormal scales included) decode exactly as gguf decodes them."""
    qk, nbytes = BLOCK[name]
    r = np.random.default_rng(5)
    packed = r.integers(0, 256, (64, 4 * nbytes), dtype=np.uint8)
    d_off = 80 if name == "Q2_K" else 0
    packed[0, d_off:d_off + 2] = (0x00, 0x7C)             # +inf d
    packed[1, d_off + 2:d_off + 4] = (0x01, 0xFE)         # NaN dmin
    packed[2, d_off:d_off + 4] = (0x01, 0x00, 0x03, 0x80)  # subnormal d, -subnormal dmin
    y = KQ.KERNELS[name][1](packed, 4 * qk)
    with np.errstate(all="ignore"):
        ref = gguf_dequantize(packed, GQT[name])
    assert y.dtype == np.float32 and y.shape == ref.shape == (64, 4 * qk)
    assert np.isnan(ref).any() and np.isinf(ref).any()    # the special values are exercised
    assert _same_floats(y, ref)


@pytest.mark.parametrize("name", KTYPES)
def test_round_trip_error_is_small(name):
    """Sanity on the numbers, not just the bytes: relative RMS error per format."""
    x = EDGE["random_normal"]
    for qw in (E, _imatrix(x.shape[1])):
        q, dq, _, _ = KQ.KERNELS[name]
        y = dq(q(x, qw), x.shape[1])
        rel = float(np.sqrt(np.mean((y - x) ** 2) / np.mean(x * x)))
        assert rel < {"Q2_K": 0.35, "Q4_K": 0.1, "Q5_K": 0.05}[name], (name, rel)


# ------------------------------------------------------------------------------ API
def test_empty_imatrix_is_the_reference_path():
    x = EDGE["random_normal"]
    for name in LTYPES:
        assert np.array_equal(KQ.IMATRIX_LEGACY[name](x, E), LEGACY[name][0](x))
        assert not np.array_equal(KQ.IMATRIX_LEGACY[name](x, _imatrix(512)), LEGACY[name][0](x))
    for name in KTYPES:
        q = KQ.KERNELS[name][0]
        assert not np.array_equal(q(x, E), q(x, _imatrix(512)))


def test_rejects_bad_shapes():
    x = np.zeros((2, 512), F32)
    for name in KTYPES:
        q, dq, _, nbytes = KQ.KERNELS[name]
        with pytest.raises(ValueError):
            q(np.zeros((2, 288), F32), E)                 # not a multiple of 256
        with pytest.raises(ValueError):
            q(x, np.ones(256, F32))                       # imatrix of the wrong length
        with pytest.raises(ValueError):
            dq(np.zeros((2, nbytes), np.uint8), 512)      # packed size does not match
    for name in LTYPES:
        with pytest.raises(ValueError):
            KQ.IMATRIX_LEGACY[name](np.zeros((2, 48), F32), np.ones(48, F32))
        with pytest.raises(ValueError):
            KQ.IMATRIX_LEGACY[name](x, np.ones(32, F32))
