"""Metric definitions (DESIGN.md) against direct numpy formulas."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.metrics import tensor_metrics


def reference(x, y):
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    e = x64 - y64
    sse, sx2 = (e ** 2).sum(), (x64 ** 2).sum()
    blocks = []
    for r in range(x.shape[0]):  # the seed's block_normalized_loss over 32-element row blocks
        for c in range(0, x.shape[1], 32):
            xb, eb = x64[r, c:c + 32], e[r, c:c + 32]
            sd = xb.std(ddof=1) if len(xb) > 1 else 0.0
            blocks.append(np.abs(eb).mean() / sd if sd > 0 else 0.0)
    return {"mse": sse / x.size, "nmse": sse / sx2, "sqnr_db": -10 * np.log10(sse / sx2),
            "max_abs_err": np.abs(e).max(), "bnl": np.mean(blocks),
            "cosine": (x64 * y64).sum() / np.sqrt(sx2 * (y64 ** 2).sum())}


@pytest.mark.parametrize("shape", [(7, 96), (3, 40), (1, 5)])
def test_metrics_match_definitions(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, :] = 0.5  # a constant block: std 0 → contributes 0 to bnl
    y = (x + rng.standard_normal(shape).astype(np.float32) * 0.01).astype(np.float32)
    got, ref = tensor_metrics(x, y), reference(x, y)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-9), k
    assert got["numel"] == x.size and got["rmse"] == pytest.approx(np.sqrt(ref["mse"]))


def test_perfect_reconstruction():
    x = np.ones((2, 32), np.float32)
    m = tensor_metrics(x, x.copy())
    assert m["mse"] == 0 and m["nmse"] == 0 and m["sqnr_db"] == np.inf and m["cosine"] == pytest.approx(1.0)


def test_precomputed_signal_sums_give_bit_identical_metrics(minilm_tensors):
    """The sweep computes x's own sums once per tensor (signal_sums) and reuses them for every
    format: every metric must equal the one-pass kernel's bit for bit, on real tensors and on
    edge cases (row tails, one-element tail blocks, constant and zero blocks, huge values)."""
    from workbench.codecs import codec_for
    from workbench.formats import parse
    from workbench.metrics import signal_sums
    rng = np.random.default_rng(5)
    cases = [minilm_tensors["encoder.layer.0.attention.self.query.weight"],
             minilm_tensors["encoder.layer.0.output.dense.weight"],
             rng.standard_normal((3, 33)).astype(np.float32),           # a 1-element tail block
             np.zeros((2, 64), np.float32), np.full((2, 40), 3.0, np.float32),
             (rng.standard_normal((2, 96)) * 1e37).astype(np.float32)]
    for x in cases:
        stats = signal_sums(x)
        for name in ("Q4s32", "Q3a16_bf16", "Q8_0"):
            spec = parse(name)
            if spec.applies_to(x.shape):
                continue
            codec = codec_for(spec)
            y = codec.dequantize(codec.quantize(x), x.shape)
            a, b = tensor_metrics(x, y), tensor_metrics(x, y, stats)
            assert a.keys() == b.keys()
            for k in a:
                assert (a[k] == b[k]) or (np.isnan(a[k]) and np.isnan(b[k])), (name, x.shape, k, a[k], b[k])


# ----------------------------------------------------------------------- bnl_seed
def seed_block_normalized_loss(x, y, block_size=32):
    """The seed's ``block_normalized_loss(x, y, block_size, dim=1)`` restated in numpy (float64):
    each row unflattened to [-1, block_size], |x − y| averaged and x's unbiased std taken over
    dim 1 — the block index —, a safe reciprocal, then the mean of everything. Needs
    cols % block_size == 0, as the seed's reshape does."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    xb = x64.reshape(x.shape[0], -1, block_size)
    eb = np.abs(x64 - y64).reshape(x.shape[0], -1, block_size)
    sd = xb.std(axis=1, ddof=1)
    inv = np.where(sd != 0, 1 / np.where(sd != 0, sd, 1), 0.0)
    return float((eb.mean(axis=1) * inv).mean())


def lane_reference(x, y):
    """bnl_seed as kernels/metrics.py documents it for any width: lane p = columns c ≡ p
    (mod 32); per row and lane mean|x − y| / std(x, unbiased), 0 for a one-column or constant
    lane, averaged over rows × min(32, cols) lanes."""
    x64, e = x.astype(np.float64), np.abs(x.astype(np.float64) - y.astype(np.float64))
    vals = []
    for r in range(x.shape[0]):
        for p in range(min(32, x.shape[1])):
            xl, el = x64[r, p::32], e[r, p::32]
            sd = xl.std(ddof=1) if len(xl) > 1 else 0.0
            vals.append(el.mean() / sd if sd > 0 else 0.0)
    return float(np.mean(vals))


def noisy(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    return x, (x + rng.standard_normal(shape).astype(np.float32) * 0.01).astype(np.float32)


@pytest.mark.parametrize("shape", [(7, 96), (3, 384), (2, 64)])
def test_bnl_seed_is_the_seeds_function(shape):
    """Widths the seed can reshape: exactly its formula (and the lane reference agrees)."""
    x, y = noisy(shape)
    x[1, 5::32] = np.float32(0.1)          # a constant lane (not exact in binary): std 0 → 0
    got = tensor_metrics(x, y)["bnl_seed"]
    assert got == pytest.approx(seed_block_normalized_loss(x, y), rel=1e-12)
    assert got == pytest.approx(lane_reference(x, y), rel=1e-12)


@pytest.mark.parametrize("shape", [(3, 40), (4, 371), (1, 5), (2, 33), (5, 32)])
def test_bnl_seed_beyond_the_seeds_widths(shape):
    """Widths that are not a multiple of 32 (the seed raises) and a single 32-block row (the
    seed's torch std of one element is NaN): the documented extension, finite."""
    x, y = noisy(shape, seed=3)
    got = tensor_metrics(x, y)["bnl_seed"]
    assert np.isfinite(got)
    assert got == pytest.approx(lane_reference(x, y), rel=1e-12)
    if shape[1] <= 32:                      # every lane has one column: nothing to normalise
        assert got == 0.0


def test_bnl_seed_on_real_weights_is_not_bnl(minilm_tensors):
    """On a real 384-wide tensor: the seed's formula, and a different number from the contiguous
    bnl (the lanes mix columns 32 apart; the precomputed-stats path is covered above)."""
    from workbench.codecs import codec_for
    from workbench.formats import parse
    x = minilm_tensors["encoder.layer.0.attention.self.query.weight"]
    codec = codec_for(parse("Q4s32"))
    y = codec.dequantize(codec.quantize(x), x.shape)
    m = tensor_metrics(x, y)
    assert m["bnl_seed"] == pytest.approx(seed_block_normalized_loss(x, y), rel=1e-12)
    assert m["bnl"] == pytest.approx(reference(x, y)["bnl"], rel=1e-12)
    assert abs(m["bnl_seed"] / m["bnl"] - 1) > 0.01
