"""The ternary family (``workbench.families.ternary``), the worked example of a plug-in added as
one module, one kernel module and one registry line: its bytes against a numpy transcription
of the definition, and the sweep, the store and the views taking it with no other change."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from workbench import families
from workbench.codecs import NonFiniteError, codec_for
from workbench.formats import GRIDS, FormatError, parse, scale_layout

ENC = {"f16": (np.float16, 2, np.uint16), "bf16": (ml_dtypes.bfloat16, 2, np.uint16),
       "f32": (np.float32, 4, np.uint32)}
MAX = {"f16": 65504.0, "bf16": float(ml_dtypes.finfo(ml_dtypes.bfloat16).max), "f32": float(np.finfo(np.float32).max)}


def reference(x: np.ndarray, block: int, rule: str, enc: str) -> bytes:
    """The definition, block by block: scale = mean|x| (absmean) or max|x| (absmax) of the block,
    rounded to its encoding (saturating); q = clip(round-half-away(x / scale), -1, 1), i.e. sign(x)
    where |x| >= scale / 2 (exact in float64), stored as
    q + 1 in 2 bits, LSB-first, each block's codes padded to a byte after its scale's bytes."""
    dtype, nbytes, itype = ENC[enc]
    out = bytearray()
    for row in x.astype(np.float32):
        for b0 in range(0, row.size, block):
            v = row[b0:b0 + block]
            a = np.abs(v.astype(np.float64))
            s = np.float32(min(a.max() if rule == "absmax" else a.sum() / v.size, MAX[enc]))
            stored = np.array([s]).astype(dtype)
            out += stored.view(itype).astype("<u4").tobytes()[:nbytes]
            d = float(stored.astype(np.float32)[0])
            q = np.where(np.abs(v.astype(np.float64)) >= d / 2, np.where(v < 0, 0, 2), 1) if d > 0 \
                else np.ones(v.size, np.int64)
            bits = 0
            for j, c in enumerate(q):
                bits |= int(c) << (2 * j)
            out += bits.to_bytes(-(-2 * v.size // 8), "little")
    return bytes(out)


def _edges():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((6, 256)) * 0.02).astype(np.float32)
    x[0] = 0.0
    x[1, :128] = np.float32(1e-41)
    x[2, ::5] = 1e5                      # beyond f16: the scale saturates
    x[3, 10:20] = -0.0
    odd = (rng.standard_normal((5, 100)) * 0.05).astype(np.float32)
    return [x, odd]


NAMES = ["TERNb64", "TERNb256_absmax", "TERNb32_bf16", "TERNb128_f32", "TERNb64_absmax"]


@pytest.mark.parametrize("name", NAMES)
def test_bytes_equal_the_definition(name, minilm_tensors):
    s = parse(name)
    codec = codec_for(s)
    xs = [minilm_tensors["encoder.layer.0.attention.self.query.weight"][:24],
          minilm_tensors["encoder.layer.4.output.dense.weight"][:8], *_edges()]
    for x in xs:
        packed = codec.quantize(x)
        assert packed.size == s.nbytes(x.shape)
        assert packed.tobytes() == reference(x, s.block, s.search, s.scale)
        y = codec.dequantize(packed, x.shape)
        assert np.isfinite(y).all()
        assert set(np.unique(np.round(y / np.where(y == 0, 1, np.abs(y))))) <= {-1.0, 0.0, 1.0}


def test_names_bpw_layout_and_bad_names():
    assert families.PLUGINS["ternary"] == "workbench.families.ternary"
    for name, bpw in (("TERNb64", 2.25), ("TERNb256_absmax", 2.0625), ("TERNb64_f32", 2.5)):
        s = parse(name)
        assert s.family == "ternary" and s.name == name and parse(s.name) == s and s.bpw() == bpw
    assert parse("TERNb64").nbytes((3, 100)) == 3 * ((2 + 16) + (2 + 9))       # 64 + a short block of 36
    assert scale_layout(parse("TERNb64_bf16"))["scale_dtype"] == "bf16"
    assert len(GRIDS["ternary"]()) == 10
    for bad in ("TERNb63", "TERNb64_e4m3", "TERNb64_absmax_absmax", "TERNb64_bf16_f32", "TERNb0"):
        with pytest.raises(FormatError):
            parse(bad)
    x = np.zeros((2, 64), np.float32)
    x[1, 3] = np.nan
    with pytest.raises(NonFiniteError):
        codec_for(parse("TERNb64")).quantize(x)


def test_absmean_beats_absmax_on_real_tensors(minilm_tensors):
    """BitNet b1.58's absmean rule against TQ2_0's absmax at the same bits: on Gaussian-like
    weights absmax zeroes most weights (|x| < max/2), so its error is far higher."""
    x = minilm_tensors["encoder.layer.1.intermediate.dense.weight"][:256]
    err = {}
    for name in ("TERNb256", "TERNb256_absmax"):
        c = codec_for(parse(name))
        y = c.dequantize(c.quantize(x), x.shape)
        err[name] = float(((x - y) ** 2).sum() / (x.astype(np.float64) ** 2).sum())
    assert err["TERNb256"] < 0.5 * err["TERNb256_absmax"]
    assert 0.2 < err["TERNb256"] < 0.35


def test_the_sweep_store_and_views_take_the_family(tmp_path):
    """Nothing outside the plug-in names it, yet a sweep measures it, the store files its columns
    and the Pareto view groups and labels it."""
    from workbench import store as st
    from workbench import sweep
    from workbench.views.pareto import kind_of
    from workbench.views.pareto_page import family_label
    store = tmp_path / "store"
    sweep.run(formats="TERNb64,TERNb256_absmax,Q2s64", store=store, tensors=r"layer\.0\.", workers=1, progress=False)
    df = st.query(store, "SELECT format, family, bits, block, scale_dtype, search, bpw, nmse FROM results")
    t = df[df["family"] == "ternary"]
    assert set(t["format"]) == {"TERNb64", "TERNb256_absmax"}
    assert (t["bits"] == 2).all() and set(t["block"]) == {64, 256} and set(t["scale_dtype"]) == {"f16"}
    assert t["nmse"].between(0.05, 1.0).all()
    assert kind_of("ternary", "f16", False) == "ternary f16" and family_label("ternary") == "ternary"
