"""HQQ (mobiusml/hqq's half-quadratic zero-point solver: p = 0.7, beta = 10, at most 20 steps)
as the ``hqq`` scale search of asymmetric uniform formats (``Q4a32_hqq``) and the codebook
family's min/max blocks (``NF4b64_hqq``): the kernel against an independent numpy transcription
of the definition, byte for byte, on real MiniLM tensors and edge cases; the solver lowers the
objective it minimises on real tensors; names and bad names.

The codebook side's reference is ``tests/test_codebook.py::hqq_offset`` (its rule test covers
``NF4b64_hqq`` and friends)."""
from __future__ import annotations

import numpy as np
import pytest

from workbench import metrics
from workbench.codecs import codec_for
from workbench.kernels.metrics import error_sums_given
from workbench.formats import FormatError, parse

REAL = ("encoder.layer.0.attention.self.query.weight", "encoder.layer.3.intermediate.dense.weight",
        "encoder.layer.5.output.dense.weight")


def _cast(v, enc):
    """A parameter as its encoding stores it (round to nearest, saturating)."""
    import ml_dtypes
    if enc == "f32":
        return np.float32(v)
    dt = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "e4m3": ml_dtypes.float8_e4m3fn}[enc]
    top = np.float32(ml_dtypes.finfo(dt).max)
    return np.float32(np.asarray(np.clip(np.float32(v), -top, top), np.float32).astype(dt).astype(np.float32))


def hqq_min(v, nlev, d, m, p=0.7, beta=10.0, iters=20):
    """One group of mobiusml/hqq's optimize_weights_proximal (the scale 1/d fixed, as decoded):
    q = clamp(round(x / d + z), 0, nlev); r = (q - z) d; w = sign(e) relu(|e| - |e|^(p-1)/beta),
    e = x - r; z = mean(q - (x - w) / d). The group stops when its mean |e| stops falling and
    keeps the zero with the lowest. Sums in order, in float64."""
    inv = np.float32(1.0) / d
    z = np.float32(-m * inv)
    best, best_z = np.inf, z
    for _ in range(iters):
        q = np.clip(np.rint((v * inv + z).astype(np.float32)), 0, nlev).astype(np.float32)
        e = (v - ((q - z) * d).astype(np.float32)).astype(np.float32)
        a = np.abs(e).astype(np.float64)
        with np.errstate(divide="ignore"):
            w = np.where(a > 0, np.maximum(a - a ** (p - 1) / beta, 0.0), 0.0) * np.sign(e)
        err = np.cumsum(a)[-1]
        if err >= best:
            break
        best, best_z = err, z
        z = np.float32(np.cumsum(q.astype(np.float64) - (v.astype(np.float64) - w) * np.float64(inv))[-1] / v.size)
    return np.float32(-best_z * d)


def reference_uniform_hqq(spec, x):
    """dequantize(quantize(x)) of a single-level asymmetric ``_hqq`` format by the definition:
    scale (max - min) / (2^b - 1) and min stored in the encoding (fp8: relative to the per-tensor
    normalizers max|scale| / 448 and max|min| / 448), the min then moved by ``hqq_min`` and stored
    again, the codes against both as decoded."""
    nlev = (1 << spec.bits) - 1
    rows, cols = x.shape
    blocks = [(r, b0, x[r, b0:b0 + spec.block]) for r in range(rows) for b0 in range(0, cols, spec.block)]
    gs = gm = np.float32(1.0)
    if spec.scale == "e4m3":
        s_all = [np.float32(np.float32(b.max() - b.min()) / np.float32(nlev)) for *_, b in blocks]
        gs = np.float32(np.float32(max(abs(v) for v in s_all)) / np.float32(448.0)) or np.float32(1.0)
        gm = np.float32(np.float32(max(abs(b.min()) for *_, b in blocks)) / np.float32(448.0)) or np.float32(1.0)
    y = np.empty_like(x)
    for r, b0, v in blocks:
        s0 = np.float32(np.float32(v.max() - v.min()) / np.float32(nlev))
        d = np.float32(_cast(np.float32(s0 / gs), spec.scale) * gs)
        m = np.float32(_cast(np.float32(v.min() / gm), spec.scale) * gm)
        if d != 0:
            m = np.float32(_cast(np.float32(hqq_min(v, nlev, d, m) / gm), spec.scale) * gm)
        inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
        q = np.clip(np.rint(((v - m).astype(np.float32) * inv).astype(np.float32)), 0, nlev)
        y[r, b0:b0 + spec.block] = (d * q.astype(np.float32)).astype(np.float32) + m
    return y


def edge_tensors():
    rng = np.random.default_rng(11)
    base = (rng.standard_normal((6, 256)) * 0.02).astype(np.float32)
    base[1] = 0.0                                   # all-zero groups: scale 0, no search
    base[2, :64] = 0.125                            # constant groups
    base[3, 7] = 0.9                                # an outlier
    base[4] += 0.05                                 # groups that do not straddle 0
    return {"edges": base, "odd_5x100": base[:5, :100].copy(), "odd_3x9": base[:3, :9].copy()}


@pytest.mark.parametrize("name", ["Q4a32_hqq", "Q3a64_f32_hqq", "Q2a16_bf16_hqq", "Q4a32_e4m3_hqq", "Q8a128_hqq"])
def test_uniform_hqq_equals_the_definition(name, minilm_tensors):
    spec = parse(name)
    codec = codec_for(spec)
    cases = {**edge_tensors(), **{n: minilm_tensors[n][:64] for n in REAL[:2]}}
    for label, x in cases.items():
        x = np.ascontiguousarray(x, np.float32)
        packed = codec.quantize(x)
        assert packed.size == spec.nbytes(x.shape), label
        y = codec.dequantize(packed, x.shape)
        ref = reference_uniform_hqq(spec, x)
        assert np.array_equal(y, ref), (label, float(np.abs(y - ref).max()))
        # the fused error path encodes exactly as quantize does
        stats = metrics.signal_sums(x)
        np.testing.assert_array_equal(codec.error_sums(x, stats), error_sums_given(x, y, *stats))


def lp(x, y, p=0.7):
    return float((np.abs(x.astype(np.float64) - y) ** p).sum())


@pytest.mark.parametrize("plain,hqq", [("Q4a32", "Q4a32_hqq"), ("Q3a64", "Q3a64_hqq"), ("Q2a32", "Q2a32_hqq"),
                                       ("Q(4a16)xQ(6s16)", "Q(4a16)xQ(6s16)_hqq"),
                                       ("NF4b64_minmax", "NF4b64_hqq"), ("FIT4b64_minmax", "FIT4b64_hqq")])
def test_hqq_lowers_its_objective_on_real_tensors(plain, hqq, minilm_tensors):
    """HQQ minimises sum |error|^0.7 from the min/max start: on each real tensor it ends lower
    than the start (the plain min/max format), and so does the L1 error it stops on."""
    for n in REAL:
        x = minilm_tensors[n]
        out = {}
        for f in (plain, hqq):
            c = codec_for(parse(f))
            y = c.dequantize(c.quantize(x), x.shape)
            out[f] = (lp(x, y), lp(x, y, 1.0))
        assert out[hqq][0] < out[plain][0] and out[hqq][1] < out[plain][1], (n, out)


def test_names():
    assert parse("Q4a32_hqq").search == "hqq" and parse("Q4a32_hqq").name == "Q4a32_hqq"
    assert parse("Q4a32_hqq").bpw() == parse("Q4a32").bpw()          # the same layout
    assert parse("Q(4a16)xQ(6s16)_e4m3_hqq").name == "Q(4a16)xQ(6s16)_e4m3_hqq"
    assert parse("Q4a32_bf16_hqq_naive").name == "Q4a32_bf16_hqq_naive"


@pytest.mark.parametrize("bad", ["Q4s32_hqq", "Q4a32_e8m0_hqq", "Q4a32_rmse_hqq", "Q4a32_hqq_hqq"])
def test_bad_names(bad):
    with pytest.raises(FormatError) as e:
        parse(bad)
    assert "\n" not in str(e.value) and bad in str(e.value)
