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
