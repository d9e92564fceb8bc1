"""Uniform hyper-grid kernels: the conventions the format names promise, on real and edge tensors."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.codecs import codec_for
from workbench.formats import parse
from workbench.kernels.scales import ENCODINGS, decode_array, encode_array
from workbench.metrics import tensor_metrics


def roundtrip(name, x):
    c = codec_for(parse(name))
    packed = c.quantize(x)
    return packed, c.dequantize(packed, x.shape)


@pytest.fixture(scope="module")
def w(minilm_tensors):
    return minilm_tensors["encoder.layer.0.attention.self.query.weight"]


def sse(x, y):
    return float(((x.astype(np.float64) - y) ** 2).sum())


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_signed_max_maps_extreme_exactly(bits, w):
    """Symmetric: the largest-magnitude element of each block decodes to itself (f32 scale)."""
    x = w[:16]
    _, y = roundtrip(f"Q{bits}s32_f32", x)
    blocks_x, blocks_y = x.reshape(-1, 32), y.reshape(-1, 32)
    i = np.abs(blocks_x).argmax(axis=1)
    r = np.arange(len(i))
    np.testing.assert_array_equal(blocks_y[r, i], blocks_x[r, i])


def test_asymmetric_hits_min_exactly_with_f32(w):
    x = w[:16]
    _, y = roundtrip("Q4a32_f32", x)
    bx, by = x.reshape(-1, 32), y.reshape(-1, 32)
    np.testing.assert_array_equal(by.min(axis=1), bx.min(axis=1))


@pytest.mark.parametrize("name", ["Q4s32", "Q3a64", "Q4s16_e4m3", "Q(4a16)xQ(6s16)_e4m3", "Q(3s8)xQ(4s8)"])
def test_decoded_scale_codes_beat_naive_order(name, w):
    _, y = roundtrip(name, w)
    _, yn = roundtrip(name + "_naive", w)
    assert sse(w, y) <= sse(w, yn)


@pytest.mark.parametrize("name", ["Q4s32", "Q3a32", "Q2s16_e4m3", "Q4s32_e8m0", "Q(4s16)xQ(6s16)"])
def test_rmse_search_never_worse_than_absmax(name, w):
    _, y = roundtrip(name, w)
    _, yr = roundtrip(name + "_rmse", w)
    assert sse(w, yr) <= sse(w, y)
    assert sse(w, yr) < sse(w, y) * 0.999  # and it really searches


def test_fp8_normalizer_helps_on_real_weights(w):
    _, y = roundtrip("Q4s16_e4m3", w)
    _, yn = roundtrip("Q4s16_e4m3_nonorm", w)
    assert sse(w, y) < sse(w, yn)
    packed, _ = roundtrip("Q4s16_e4m3", w)
    g = packed[:4].view(np.float32)[0]
    # the normalizer puts the largest block scale on e4m3's max: 448·g = max |scale|
    bx = w.reshape(-1, 16)
    ext = bx[np.arange(len(bx)), np.abs(bx).argmax(axis=1)]
    assert g * 448 == pytest.approx(np.abs(ext / 8).max(), rel=1e-6)


def test_e8m0_scales_are_powers_of_two(w):
    packed, y = roundtrip("Q4s32_e8m0", w[:4])
    # layout: per block 1 byte scale + 16 bytes of codes
    codes = packed.reshape(-1, 17)[:, 0].astype(np.uint32)
    scales = decode_array(codes, ENCODINGS["e8m0"].id)
    mant = np.frexp(scales)[0]
    assert np.all(mant == 0.5)
    q = y.reshape(-1, 32) / scales[:, None]
    np.testing.assert_array_equal(q, np.rint(q))  # every weight is an integer multiple of 2^k
    assert q.min() >= -8 and q.max() <= 7


@pytest.mark.parametrize("name", ["Q4s32", "Q4a32", "Q4s32_e8m0", "Q4a32_e8m0", "Q4s16_e4m3",
                                  "Q(4a16)xQ(6s16)_e4m3", "Q(4s8)xQ(6a8)_bf16"])
def test_edge_tensors(name):
    zeros = np.zeros((3, 64), np.float32)
    _, y = roundtrip(name, zeros)
    np.testing.assert_array_equal(y, zeros)
    const = np.full((2, 64), -0.25, np.float32)
    _, y = roundtrip(name, const)
    assert np.abs(y - const).max() <= 0.25 * 2 ** -3  # scale rounding only
    denorm = np.full((2, 64), 1e-40, np.float32) * np.sign(np.arange(128) - 63.5).reshape(2, 64).astype(np.float32)
    _, y = roundtrip(name, denorm)
    assert np.all(np.isfinite(y))
    huge = np.linspace(-3e38, 3e38, 128, dtype=np.float32).reshape(2, 64)
    _, y = roundtrip(name, huge)
    assert np.all(np.isfinite(y))  # scales saturate at the encoding's max instead of going inf
    odd = np.random.default_rng(1).standard_normal((5, 37)).astype(np.float32)
    packed, y = roundtrip(name, odd)  # short last unit in every row
    assert packed.size == parse(name).nbytes(odd.shape)
    assert tensor_metrics(odd, y)["nmse"] < 0.2


def test_double_with_8bit_f32_level2_is_close_to_single(w):
    _, y1 = roundtrip("Q4a16_f32", w)
    _, y2 = roundtrip("Q(4a16)xQ(8a16)_f32", w)
    assert sse(w, y2) <= sse(w, y1) * 1.05


def test_more_bits_less_error(w):
    errs = [sse(w, roundtrip(f"Q{b}s32", w)[1]) for b in range(2, 9)]
    assert all(a > b for a, b in zip(errs, errs[1:]))


def test_scale_encoding_round_trip_inside_kernels_matches_array_helpers():
    x = np.array([1e-3, 0.0123, 3.3e-5], np.float32)
    for enc in ENCODINGS.values():
        if enc.name == "f32":
            continue
        codes = encode_array(x, enc.id)
        assert np.all(np.isfinite(decode_array(codes, enc.id)))


@pytest.mark.parametrize("name", ["Q4a32_e8m0", "Q4a32_e8m0_rmse", "Q(4a16)xQ(6a16)_e8m0"])
def test_a_nan_step_gives_zero_point_0_on_every_cpu(name):
    """An asymmetric group under e8m0 stores a uint8 zero-point, -min / scale rounded. A block
    that starts with a NaN has a NaN min and scale, so that step is NaN, and a float -> uint32
    cast of NaN is undefined: the byte was 0xFF on a CPU with AVX-512 (vcvttsd2usi) and 0
    without. The rule (kernels/uniform.py ``_zero_point``) makes it 0 everywhere."""
    from workbench.codecs import codec_for
    from workbench.formats import resolve
    spec = resolve(name)[0]
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    x[0, 0] = np.nan
    packed = codec_for(spec).quantize(x)
    if spec.super_bits is None:
        assert packed[0] == 0xFF and packed[1] == 0       # first block: e8m0 NaN scale, zero-point 0
        assert packed[18] != 0xFF                          # the second block is finite
    else:
        # a super-block: the blocks' own (f32) fit is NaN for block 0, so the vectors of scales and
        # mins hold a NaN first: their super-scale is NaN and their zero-points are 0
        assert packed[0] == 0xFF and packed[1] == 0
    y = codec_for(spec).dequantize(packed, x.shape)
    assert np.isnan(y[0, :16]).all()
