"""The codebook family (workbench/families/codebook.py, kernels/codebook.py): names that parse
back, closed-form sizes equal to the bytes, an independent numpy decoding of every rule
(ml_dtypes for the element types' rounding), bitsandbytes as the oracle for NF4 and FP4 (packed
values, absmax, dequantized values, its double quantization) and torchao as the oracle for the
MX element types and NVFP4, on real MiniLM tensors and edge cases."""
from __future__ import annotations

import numpy as np
import pytest

from workbench import formats as F
from workbench.codecs import NonFiniteError, codec_for
from workbench.families import codebook as CB
from workbench.formats import FormatError, parse

GRID = F.GRIDS["codebooks"]()


def edge_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    base = (rng.standard_normal((8, 256)) * 0.02).astype(np.float32)
    zeros = base.copy()
    zeros[1] = 0.0                                     # all-zero blocks
    zeros[2, :64] = -0.0
    denorm = base.copy()
    denorm[3, :64] = np.float32(1e-41) * rng.standard_normal(64).astype(np.float32)   # a subnormal block
    denorm[3, 5], denorm[3, 6] = 0.0, -0.0             # zeros in it: 0 / a subnormal scale, never NaN
    huge = base.copy()
    huge[4] *= np.float32(1e37)                         # near float32's top (f16 scales saturate)
    one_hot = np.zeros((2, 128), np.float32)
    one_hot[0, 5], one_hot[1, 70] = 3.0, -2.5           # one nonzero per row: +1 / -1 exactly
    # values on the midpoints of NF4 (the tie rule: a midpoint goes to the lower level)
    nf4 = np.asarray(CB.tables("NF4", 64)[1], np.float32)
    ties = np.concatenate([nf4, [1.0]]).astype(np.float32)[None, :].repeat(4, 0)
    ties = np.pad(ties, ((0, 0), (0, 64 - ties.shape[1])))
    # E2M1's midpoints at scale 1 (a block whose absmax is 6): round half to even
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0], np.float32)
    e2m1 = np.tile(np.concatenate([mids, -mids]), 2)[None, :].repeat(2, 0)
    return {"base": base, "zeros": zeros, "e2m1_ties": e2m1, "denormal": denorm, "huge": huge, "one_hot": one_hot,
            "ties": ties, "odd_5x100": base[:5, :100].copy(), "odd_9x1": base[:9, :1].copy(),
            "odd_1x7": base[:1, :7].copy()}


# --------------------------------------------------------------------------------- names
def test_every_grid_name_parses_back():
    assert len(GRID) == 330 and len({s.name for s in GRID}) == 330
    for s in GRID:
        assert parse(s.name) == s and s.family == "codebook"
    assert parse("NF4b64_f32").name == "NF4b64_f32" and parse("NF4b64").scale == "f16"
    assert parse("AF4b64_fp8").name == "AF4b64_e4m3"
    for n in CB.WELL_KNOWN:
        assert parse(n).name == n
    assert parse("NF4b64_dq").double and parse("E2M1b32_e8m0_rceil").search == "rceil"
    assert parse("E2M3b32_e8m0").bits == 6 and parse("INT8b32_e8m0").bits == 8
    for n in ("NF4b64_smax", "LM4b64_f32_smax", "FIT4b64_e4m3_minmax", "NF4b64_hqq", "AF4b256_bf16_hqq"):
        assert parse(n).name == n and parse(n).search == n.rsplit("_", 1)[1]
    assert parse("NF4b64_minmax").bpw() == 4.5 and parse("NF4b64_e4m3_hqq").bpw() == 4.25   # two parameters
    assert parse("NF4b64_smax").bpw() == 4.25


@pytest.mark.parametrize("bad", ["NF4b63", "NF4b0", "NF4b64_xyz", "NF4b64_f32_bf16", "XF4b64", "NF4b64_rmse",
                                 "NF4b64_e4m3_dq", "NF4b64_dq_f32", "NF4b64_dq_dq", "E2M1b32_dq",
                                 "E2M1b32_rceil", "NF4b64_e8m0_rceil", "INT8b32_e4m3_rceil", "E2M1b12",
                                 "E9M1b32", "E2M1b32_smax", "NF4b64_e8m0_smax", "LM4b64_minmax", "NF4b64_dq_smax",
                                 "NF4b64_smax_hqq", "NF4b64_smax_smax", "E2M1b32_e8m0_rceil_hqq"])
def test_bad_names_are_one_line_errors(bad):
    with pytest.raises(FormatError) as e:
        parse(bad)
    assert "\n" not in str(e.value) and bad in str(e.value)


def test_bpw_and_layout():
    assert parse("NF4b64_f32").bpw() == 4.5          # bitsandbytes without double quantization
    assert parse("NF4b64").bpw() == 4.25
    assert parse("AF4b64_e4m3").bpw() == 4.125
    assert parse("LM4b256_e8m0").bpw() == 4 + 8 / 256
    assert parse("E2M1b32_e8m0").bpw() == 4.25 and parse("E2M1b16_e4m3").bpw() == 4.5   # MXFP4, NVFP4
    assert parse("E3M2b32_e8m0").bpw() == 6.25 and parse("INT8b32_e8m0").bpw() == 8.25
    assert parse("E2M1b16_e4m3").nbytes((2, 32)) == 4 + 2 * 2 * (1 + 8)          # + the f32 tensor scale
    assert parse("E2M3b8_e8m0").nbytes((1, 12)) == (1 + 6) + (1 + 3)              # 6-bit stream, a tail of 4
    dq = parse("NF4b64_dq")                      # bitsandbytes: 4 + 8/64 + 32/(64*256) = 4.127
    assert round(dq.bpw(), 3) == 4.127 and dq.bpw() == 4 + 8 / 64 + 32 / (64 * 256)
    # offset + one f32 per 256 blocks (row-major over the tensor) + (q, 32 code bytes) per block
    assert dq.nbytes((3, 64 * 100)) == 4 + 4 * 2 + 300 * 33
    assert F.scale_layout(dq) == {"block": 64, "scale_dtype": "dyn8", "super_block_weights": 64 * 256,
                                  "super_scale_dtype": "f32", "scale_encoding": "f32"}
    s = parse("AF4b64_e4m3")
    assert s.header_bytes == 4 and s.nbytes((3, 128)) == 4 + 3 * 2 * (1 + 32)
    assert parse("NF4b32").nbytes((2, 40)) == 2 * ((2 + 16) + (2 + 4))   # a short last block of 8
    lay = F.scale_layout(parse("NF4b64_f32"))
    assert lay["block"] == 64 and lay["scale_dtype"] == "f32" and lay["super_block_weights"] is None
    cols = F.spec_columns(parse("NF4b64_f32"))
    assert cols["family"] == "codebook" and cols["bits"] == 4 and cols["format"] == "NF4b64_f32"


# ------------------------------------------------------------------------- the rule itself
def reference_decode(spec, x: np.ndarray) -> np.ndarray:
    """dequantize(quantize(x)) by the module docstring's rules, in numpy (no kernel code)."""
    if spec.code in CB.ELEMENT_CODES:
        return reference_decode_element(spec, x)
    if spec.double:
        return reference_decode_dq(spec, x)
    from workbench.kernels import codebook as K
    from workbench.kernels.encodings import ENCODINGS
    values, bounds, order, *_ = (CB.fitted_tables(x, spec.block, CB.norm_mode(spec)) if spec.code == CB.FITTED
                                 else CB.tables(spec.code, spec.block, spec.search == "smax"))
    enc = ENCODINGS[spec.scale]
    y = np.empty_like(x)
    norm = np.float32(1.0)
    if enc.needs_normalizer:
        m = np.abs(x).max()
        norm = np.float32(m / np.float32(enc.max_finite)) if m > 0 else np.float32(1.0)
    one, floor = np.float32(1.0), np.float32(1e-38)
    for r in range(x.shape[0]):
        for b0 in range(0, x.shape[1], spec.block):
            blk = x[r, b0:b0 + spec.block]
            off = None
            if spec.search == "smax":                     # the first element of largest magnitude
                d = _decoded_signed(blk[np.argmax(np.abs(blk))], spec.scale, norm)
                inv = one / (d if abs(d) >= floor else floor)
            elif spec.search in ("minmax", "hqq"):
                lo, hi = blk.min(), blk.max()
                d = _decoded_signed(np.float32((hi - lo) * np.float32(0.5)), spec.scale, norm)
                inv = one / np.maximum(d, floor)
                off = _decoded_signed(np.float32((hi + lo) * np.float32(0.5)), spec.scale, norm)
                if spec.search == "hqq" and d > 0:
                    off = _decoded_signed(hqq_offset(blk, inv, d, off, values[order], bounds), spec.scale, norm)
            else:
                d = _decoded_scale(np.abs(blk).max(), spec.scale, norm)
                inv = one / np.maximum(d, floor)
            v = np.clip((blk if off is None else (blk - off).astype(np.float32)) * inv, np.float32(-1), one)
            idx = np.searchsorted(bounds, v, side="left")        # bounds strictly below v
            y[r, b0:b0 + spec.block] = values[order[idx]] * d if off is None else \
                (values[order[idx]] * d).astype(np.float32) + off
    return y


def hqq_offset(blk, r, h, m, levels, bounds, p=0.7, beta=10.0, iters=20):
    """mobiusml/hqq's optimize_weights_proximal for one block of a table code (half-range h
    fixed, R = 1/h): z from -m R; q the level nearest clamp(x R + z); e = x - (q - z) h;
    w = sign(e) relu(|e| - |e|^(p-1) / beta); z = mean(q - (x - w) R); a block stops when its
    mean |e| stops falling and keeps the zero that had the lowest. Sums in order, in float64."""
    z = np.float32(-m * r)
    best, best_z = np.inf, z
    for _ in range(iters):
        v = np.clip((blk * r + z).astype(np.float32), np.float32(-1), np.float32(1))
        q = levels[np.searchsorted(bounds, v, side="left")]
        e = (blk - ((q - z) * h).astype(np.float32)).astype(np.float32)
        a = np.abs(e).astype(np.float64)
        with np.errstate(divide="ignore"):
            w = np.where(a > 0, np.maximum(a - a ** (p - 1) / beta, 0.0), 0.0) * np.sign(e)
        err = np.cumsum(a)[-1]
        if err >= best:
            break
        best, best_z = err, z
        z = np.float32(np.cumsum(q.astype(np.float64) - (blk.astype(np.float64) - w) * np.float64(r))[-1] / blk.size)
    return np.float32(-best_z * h)


def _decoded_signed(v: np.float32, enc: str, norm: np.float32) -> np.float32:
    """A signed parameter as its encoding decodes it (fp8: relative to norm), saturating."""
    import ml_dtypes
    if enc == "f32":
        return np.float32(v)
    dt = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "e4m3": ml_dtypes.float8_e4m3fn,
          "e5m2": ml_dtypes.float8_e5m2}[enc]
    top = np.float32(ml_dtypes.finfo(dt).max)
    s = np.float32(v / norm) if norm != 1 else np.float32(v)
    d = np.float32(np.asarray(np.clip(s, -top, top), np.float32).astype(dt).astype(np.float32))
    return np.float32(d * norm) if norm != 1 else d


def _round_element(code: str, v: np.ndarray) -> np.ndarray:
    """Round to the element type, ties to even, saturating (ml_dtypes casts; INT8 by rint)."""
    import ml_dtypes
    if code == "INT8":
        return (np.clip(np.rint(v * np.float32(64)), -127, 127) / np.float32(64)).astype(np.float32)
    dt = {"E2M1": ml_dtypes.float4_e2m1fn, "E2M3": ml_dtypes.float6_e2m3fn, "E3M2": ml_dtypes.float6_e3m2fn,
          "E4M3": ml_dtypes.float8_e4m3fn, "E5M2": ml_dtypes.float8_e5m2}[code]
    top = np.float32(ml_dtypes.finfo(dt).max)
    return np.clip(v, -top, top).astype(dt).astype(np.float32)


ELEMENT_MAX = {"E2M1": 6.0, "E2M3": 7.5, "E3M2": 28.0, "E4M3": 448.0, "E5M2": 57344.0, "INT8": 127 / 64}
ELEMENT_EMAX = {"E2M1": 2, "E2M3": 2, "E3M2": 4, "E4M3": 8, "E5M2": 15, "INT8": 0}


def ocp_exponent(amax: float, code: str, rceil: bool) -> int:
    """The shared e8m0 exponent by its definition: floor(log2 amax) - emax (OCP MX v1.0 §6.3),
    or ceil(log2(amax / max element)) (rceil), clamped to [-127, 127] (frexp: exact)."""
    if rceil:
        t = np.float32(np.float32(amax) / np.float32(ELEMENT_MAX[code]))
        if t == 0:
            return -127
        m, e = np.frexp(np.float64(t))
        return int(np.clip(e - 1 if m == 0.5 else e, -127, 127))
    if amax == 0:
        return -127
    m, e = np.frexp(np.float64(amax))
    return int(np.clip(e - 1 - ELEMENT_EMAX[code], -127, 127))


def reference_decode_element(spec, x: np.ndarray) -> np.ndarray:
    import ml_dtypes
    top = np.float32(ELEMENT_MAX[spec.code])
    y = np.empty_like(x)
    norm = np.float32(1.0)
    fp8 = spec.scale in ("e4m3", "e5m2")
    if fp8:
        fmax = np.float32(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn if spec.scale == "e4m3" else ml_dtypes.float8_e5m2).max)
        m = np.abs(x).max()
        norm = np.float32(m / np.float32(top * fmax)) if m > 0 else np.float32(1.0)
    for r in range(x.shape[0]):
        for b0 in range(0, x.shape[1], spec.block):
            blk = x[r, b0:b0 + spec.block]
            amax = np.float32(np.abs(blk).max())
            if spec.scale == "e8m0":
                e = ocp_exponent(amax, spec.code, spec.search == "rceil")
                d, rcp = np.float32(2.0 ** e), np.float32(2.0 ** -e)
            elif fp8:
                s8 = _decoded_scale(np.float32(np.float32(amax / top) / norm), spec.scale, np.float32(1.0))
                d = np.float32(norm * s8)
                with np.errstate(over="ignore"):
                    rcp = np.float32(np.float32(np.float32(1.0) / norm) / s8) if s8 > 0 else np.float32(0.0)
            else:
                d = _decoded_scale(np.float32(amax / top), spec.scale, np.float32(1.0))
                with np.errstate(over="ignore"):
                    rcp = np.float32(np.float32(1.0) / d) if d > 0 else np.float32(0.0)
            with np.errstate(over="ignore"):
                v = (blk * rcp if np.isfinite(rcp) else blk / d).astype(np.float32)
            y[r, b0:b0 + spec.block] = _round_element(spec.code, v) * d
    return y


def reference_decode_dq(spec, x: np.ndarray) -> np.ndarray:
    """bitsandbytes' double quantization by its definition: codes against the f32 absmax;
    absmax - mean to the nearest DYN8 entry (ties: the lower) per group of 256 of max|.|."""
    from workbench import codes
    values, bounds, order, *_ = (CB.fitted_tables(x, spec.block) if spec.code == CB.FITTED
                                 else CB.tables(spec.code, spec.block))
    rows, cols = x.shape
    per = -(-cols // spec.block)
    amax = np.array([np.abs(x[r, b * spec.block:(b + 1) * spec.block]).max() for r in range(rows)
                     for b in range(per)], np.float32)
    offset = np.float32(amax.astype(np.float64).mean())
    dev = (amax - offset).astype(np.float32)
    scale = np.empty_like(amax)
    for g in range(0, amax.size, 256):
        part = dev[g:g + 256]
        a2 = np.float32(np.abs(part).max())
        v = (part / a2).astype(np.float32) if a2 > 0 else np.zeros_like(part)
        dist = np.abs(v[:, None] - codes.DYN8[None, :])
        q = np.argmin(dist, axis=1)                       # the first (lower) of equal distances
        scale[g:g + 256] = (codes.DYN8[q] * a2 + offset).astype(np.float32)
    y = np.empty_like(x)
    for r in range(rows):
        for b in range(per):
            blk = x[r, b * spec.block:(b + 1) * spec.block]
            inv = np.float32(1.0) / np.maximum(amax[r * per + b], np.float32(1e-38))
            idx = np.searchsorted(bounds, np.clip(blk * inv, np.float32(-1), np.float32(1)), side="left")
            y[r, b * spec.block:(b + 1) * spec.block] = values[order[idx]] * scale[r * per + b]
    return y


def _decoded_scale(amax: np.float32, enc: str, norm: np.float32) -> np.float32:
    import ml_dtypes
    if enc == "f32":
        return np.float32(amax)
    if enc == "e8m0":             # the smallest power of two >= amax
        if amax == 0:
            return np.float32(2.0 ** -127)
        m, e = np.frexp(np.float64(amax))
        return np.float32(2.0 ** (e - 1) if m == 0.5 else 2.0 ** e)
    dt = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "e4m3": ml_dtypes.float8_e4m3fn,
          "e5m2": ml_dtypes.float8_e5m2}[enc]
    top = np.float32(ml_dtypes.finfo(dt).max)
    s = np.float32(amax / norm) if norm != 1 else np.float32(amax)
    d = np.float32(np.asarray(min(s, top), np.float32).astype(dt).astype(np.float32))
    return np.float32(d * norm) if norm != 1 else d


@pytest.mark.parametrize("name", ["NF4b64_f32", "FP4b64_f32", "NF4b32", "AF4b64_e4m3", "LM4b128_bf16",
                                  "NF4b16_e8m0", "FP4b256_e5m2", "AF4b256", "NF4b64_dq", "LM4b32_dq",
                                  "E2M1b32_e8m0", "E2M1b32_e8m0_rceil", "E2M1b16_e4m3", "E2M3b32_e8m0",
                                  "E3M2b16_bf16", "E4M3b32_e8m0", "E5M2b64_e5m2", "INT8b32_e8m0",
                                  "INT8b32_e8m0_rceil", "E2M1b64_f32", "E4M3b16_f16", "FIT4b64",
                                  "FIT4b32_e4m3", "FIT4b64_dq", "FIT4b256_f32", "NF4b64_smax",
                                  "LM4b64_f32_smax", "AF4b32_e4m3_smax", "FP4b64_bf16_smax", "FIT4b64_smax",
                                  "NF4b64_minmax", "NF4b32_e4m3_minmax", "FIT4b64_minmax", "NF4b64_hqq",
                                  "AF4b64_f32_hqq", "FIT4b128_hqq", "NF4b16_e5m2_hqq"])
def test_kernel_equals_the_rule_on_real_and_edge_tensors(name, minilm_tensors):
    spec = parse(name)
    codec = codec_for(spec)
    cases = {**edge_tensors(), "minilm_q": minilm_tensors["encoder.layer.0.attention.self.query.weight"]}
    for label, x in cases.items():
        x = np.ascontiguousarray(x, np.float32)
        packed = codec.quantize(x)
        assert packed.size == spec.nbytes(x.shape), label
        y = codec.dequantize(packed, x.shape)
        ref = reference_decode(spec, x)
        assert np.array_equal(y.view(np.uint32), ref.view(np.uint32)) or np.array_equal(y, ref), \
            (label, np.abs(y - ref).max())
        assert np.isfinite(y).all(), label


def test_the_fitted_code_is_stored_and_fits_the_tensor(minilm_tensors):
    """FIT4: Lloyd's iteration on the tensor's own block-normalized values (weighted by the
    block's absmax²); its 16 f32 levels head the bytes (in bpw). Lloyd never raises the
    distortion it minimises, so on those values it is at most NF4's (its start) - and on real
    tensors its weight error is below NF4's and the Gaussian Lloyd-Max code's."""
    from workbench import codes
    from workbench.kernels import codebook as K
    spec = parse("FIT4b64")
    assert spec.header_bytes == 64 and spec.nbytes((2, 128)) == 64 + 2 * 2 * (2 + 32)
    for name in ["encoder.layer.0.attention.self.query.weight", "encoder.layer.3.intermediate.dense.weight",
                 "encoder.layer.5.output.dense.weight"]:
        x = minilm_tensors[name]
        packed = codec_for(spec).quantize(x)
        levels = packed[:64].view(np.float32)
        assert levels[0] == -1 and levels[-1] == 1 and (np.diff(levels) > 0).all()
        count, total = K.normalized_histogram(x, 64, codes.FIT_BINS)
        centers = np.where(count > 0, total / np.where(count > 0, count, 1.0), 0)

        def distortion(code):
            c = np.sort(np.asarray(code, np.float64))
            q = c[np.searchsorted(0.5 * (c[1:] + c[:-1]), centers)]
            return float((count * (centers - q) ** 2).sum())
        assert distortion(levels) <= distortion(codes.NF4)
        err = {}
        for n in ("FIT4b64", "NF4b64", "LM4b64"):
            c = codec_for(parse(n))
            y = c.dequantize(c.quantize(x), x.shape)
            err[n] = float(((x.astype(np.float64) - y) ** 2).sum())
        assert err["FIT4b64"] < err["NF4b64"] and err["FIT4b64"] < err["LM4b64"], (name, err)


def test_nonfinite_tensors_are_refused():
    x = np.ones((2, 64), np.float32)
    x[1, 3] = np.nan
    with pytest.raises(NonFiniteError):
        codec_for(parse("NF4b64")).quantize(x)


# ---------------------------------------------------------------------- bitsandbytes oracle
@pytest.fixture(scope="module")
def bnb():
    try:
        import torch  # noqa: F401
        import bitsandbytes.functional as bf
    except ImportError as exc:
        pytest.skip(f"bitsandbytes (the `oracles` extra: pip install -e '.[oracles]') is not installed: {exc}")
    return bf


@pytest.mark.parametrize("code", ["NF4", "FP4"])
@pytest.mark.parametrize("block", [64, 128])
def test_packed_values_equal_bitsandbytes(bnb, code, block, minilm_tensors):
    import torch
    spec = parse(f"{code}b{block}_f32")
    codec = codec_for(spec)
    names = sorted(n for n, t in minilm_tensors.items() if t.ndim == 2 and t.shape[1] % block == 0)
    edge = {k: v for k, v in edge_tensors().items() if v.shape[1] % block == 0}
    checked = 0
    for label, x in [(n, minilm_tensors[n]) for n in names[:12]] + list(edge.items()):
        x = np.ascontiguousarray(x, np.float32)
        packed, state = bnb.quantize_4bit(torch.from_numpy(x.copy()), blocksize=block, quant_type=code.lower())
        ours = codec.quantize(x).reshape(-1, 4 + block // 2)
        assert np.array_equal(ours[:, 4:].reshape(-1), packed.numpy().reshape(-1)), label
        assert np.array_equal(ours[:, :4].copy().view(np.float32).reshape(-1), state.absmax.numpy()), label
        ref = bnb.dequantize_4bit(packed, state).numpy()
        y = codec.dequantize(codec.quantize(x), x.shape)
        assert np.array_equal(y, ref), label
        checked += 1
    assert checked >= 12


def test_dynamic_code_equals_bitsandbytes(bnb):
    from workbench import codes
    ref = bnb.create_dynamic_map(signed=True).numpy()
    assert ref.dtype == np.float32 and ref.size == 256
    assert np.array_equal(codes.DYN8.view(np.uint32), ref.view(np.uint32))


def _dq_parts(spec, packed, shape):
    nb = CB.blocks(spec, shape)
    ng = -(-nb // CB.DQ_GROUP)
    offset = packed[:4].view(np.float32)[0]
    a2 = packed[4:4 + 4 * ng].view(np.float32)
    body = packed[4 + 4 * ng:].reshape(nb, 1 + spec.block // 2)
    return offset, a2, body[:, 0].copy(), body[:, 1:].reshape(-1)


@pytest.mark.parametrize("code", ["NF4", "FP4"])
def test_double_quantization_equals_bitsandbytes(bnb, code, minilm_tensors):
    """quantize_4bit(compress_statistics=True): the 4-bit codes identical; the offset the mean of
    the absmax (we round the exact mean, torch sums in float32: at most 2 ulp apart); the group
    scales identical; the 8-bit absmax codes identical wherever bitsandbytes' CPU search returns
    the nearest code - it searches a copy of the table whose entry 0 is -1.0 with BinSearch's
    Direct2, and where the two differ its code is farther from the value than ours (checked), so
    ours is the definition's; decoded by bitsandbytes from our codes, the values are ours."""
    import torch
    from workbench import codes
    spec = parse(f"{code}b64_dq")
    codec = codec_for(spec)
    names = sorted(n for n, t in minilm_tensors.items() if t.ndim == 2 and t.shape[1] % 64 == 0)
    total = same = 0
    for n in names[:12]:
        x = minilm_tensors[n]
        xt = torch.from_numpy(x.copy())
        packed, state = bnb.quantize_4bit(xt, blocksize=64, quant_type=code.lower(), compress_statistics=True)
        ours = codec.quantize(x)
        offset, a2, q, body = _dq_parts(spec, ours, x.shape)
        assert np.array_equal(body, packed.numpy().reshape(-1)), n
        ulps = abs(int(np.float32(offset).view(np.int32)) - int(np.float32(state.offset.item()).view(np.int32)))
        assert ulps <= 2, (n, ulps)
        absmax = bnb.quantize_4bit(xt, blocksize=64, quant_type=code.lower())[1].absmax
        q_ref, s2 = bnb.quantize_blockwise(absmax - torch.tensor(offset), blocksize=256)   # bitsandbytes' step 2, our offset
        assert np.array_equal(a2, s2.absmax.numpy()), n
        q_ref = q_ref.numpy()
        v = ((absmax.numpy() - offset) / np.repeat(a2, 256)[:q.size]).astype(np.float32)
        off = np.nonzero(q != q_ref)[0]
        d_ours, d_ref = np.abs(v[off] - codes.DYN8[q[off]]), np.abs(v[off] - codes.DYN8[q_ref[off]])
        assert (d_ours < d_ref).all(), n                 # where they differ, ours is the nearer code
        total, same = total + q.size, same + q.size - off.size
        # decoded with bitsandbytes' own dequantize_4bit from our absmax codes: our values
        state.absmax, state.state2, state.offset = torch.from_numpy(q), s2, torch.tensor(offset)
        ref = bnb.dequantize_4bit(packed, state).numpy()
        assert np.array_equal(codec.dequantize(ours, x.shape), ref), n
    assert same / total > 0.99, (same, total)


# --------------------------------------------------------------------------- torchao oracle
@pytest.fixture(scope="module")
def torchao():
    try:
        import torch  # noqa: F401
        import torchao.prototype.mx_formats.kernels as tk
        import torchao.prototype.mx_formats.mx_tensor as mx
        import torchao.prototype.mx_formats.nvfp4_tensor as nv
        from torchao.prototype.mx_formats.constants import DTYPE_FP6_E2M3, DTYPE_FP6_E3M2
    except ImportError as exc:
        pytest.skip(f"torchao (the `oracles` extra: pip install -e '.[oracles]') is not installed: {exc}")
    import torch
    dtypes = {"E2M1": torch.float4_e2m1fn_x2, "E2M3": DTYPE_FP6_E2M3, "E3M2": DTYPE_FP6_E3M2,
              "E4M3": torch.float8_e4m3fn, "E5M2": torch.float8_e5m2}
    return mx, nv, tk, dtypes


def _element_parts(spec, packed, shape):
    """(scale codes [rows, blocks], element codes [rows, cols]) of whole-block tensors."""
    rows, cols = shape
    nb = cols // spec.block
    body = packed[spec.header_bytes:].reshape(rows, nb, 1 + spec.bits * spec.block // 8)
    bits = np.unpackbits(body[:, :, 1:], axis=-1).reshape(rows, nb, spec.block, spec.bits)
    codes = (bits.astype(np.int64) << np.arange(spec.bits)[::-1]).sum(-1).reshape(rows, cols)
    return body[:, :, 0].copy(), codes


def _mx_cases(minilm_tensors, block):
    names = sorted(n for n, t in minilm_tensors.items() if t.ndim == 2 and t.shape[1] % block == 0)
    edge = {k: v for k, v in edge_tensors().items() if v.shape[1] % block == 0}
    return [(n, minilm_tensors[n]) for n in names[:12]] + list(edge.items())


@pytest.mark.parametrize("code", ["E2M1", "E2M3", "E3M2", "E4M3", "E5M2"])
@pytest.mark.parametrize("rceil", [False, True], ids=["floor", "rceil"])
def test_mx_values_equal_torchao(torchao, code, rceil, minilm_tensors):
    """torchao's to_mx (FLOOR: OCP's rule; RCEIL) and to_dtype: scale codes, element codes and
    decoded values identical, on 12 real tensors and the edge cases. Two torchao shortcuts differ
    from the definition, and only there may a block differ (each such block is checked to be one):
    FLOOR divides by 2^-126 where the scale code is 0 (2^-127, kept from a triton workaround),
    RCEIL takes ceil(log2) in float32, which rounds log2 of 2^k·(1+2^-23) to k, and multiplies
    by 1 where the code is 0. Ours equals the definition there (test above)."""
    import torch
    mx, _, tk, dtypes = torchao
    spec = parse(f"{code}b32_e8m0" + ("_rceil" if rceil else ""))
    codec = codec_for(spec)
    mode = mx.ScaleCalculationMode.RCEIL if rceil else mx.ScaleCalculationMode.FLOOR
    explained = 0
    for label, x in _mx_cases(minilm_tensors, 32):
        x = np.ascontiguousarray(x, np.float32)
        s, d = mx.to_mx(torch.from_numpy(x.copy()), dtypes[code], 32, mode)
        ts = s.view(torch.uint8).numpy().reshape(x.shape[0], -1)
        if code == "E2M1":
            tc = tk.unpack_uint4(d.view(torch.uint8)).numpy().reshape(x.shape)
        else:
            tc = d.view(torch.uint8).numpy().reshape(x.shape)
        ty = mx.to_dtype(d, s, dtypes[code], 32, torch.float32).numpy().reshape(x.shape)
        packed = codec.quantize(x)
        sc, oc = _element_parts(spec, packed, x.shape)
        y = codec.dequantize(packed, x.shape)
        same = ((sc == ts) & (oc == tc).reshape(sc.shape[0], sc.shape[1], 32).all(-1)
                & (y.view(np.uint32) == ty.view(np.uint32)).reshape(sc.shape[0], sc.shape[1], 32).all(-1))
        for r, b in zip(*np.nonzero(~same)):
            amax = np.abs(x[r, b * 32:(b + 1) * 32]).max()
            assert sc[r, b] == ocp_exponent(amax, code, rceil) + 127, (label, r, b)   # ours: the definition
            if rceil:
                t = np.float32(amax / np.float32(ELEMENT_MAX[code]))
                f32_log2 = int(np.ceil(torch.log2(torch.tensor(t)).item())) if t > 0 else -127
                assert sc[r, b] == 0 or ts[r, b] == np.clip(f32_log2, -127, 127) + 127 != sc[r, b], (label, r, b)
            else:
                assert sc[r, b] == 0, (label, r, b)
            explained += 1
        if label.startswith(("encoder", "embeddings")) and label != "embeddings.word_embeddings.weight":
            assert same.all(), label                      # real weights: no shortcut case at all
    assert explained < 40


def test_nvfp4_with_tensor_scale_equals_torchao(torchao, minilm_tensors):
    """NVIDIA's NVFP4 (E2M1, blocks of 16, E4M3 scales, one f32 tensor scale amax / (448 * 6)):
    torchao's nvfp4_quantize with per_tensor_amax_to_scale. Tensor scale, block-scale codes,
    element codes and decoded values identical; torchao clamps a block scale below 2^-6 (e4m3's
    smallest normal) up to 2^-6 where the definition keeps e4m3's subnormals, so only blocks with a
    scale below 2^-6 may differ."""
    import torch
    _, nv, tk, _ = torchao
    spec = parse("E2M1b16_e4m3")
    codec = codec_for(spec)
    for label, x in _mx_cases(minilm_tensors, 16):
        x = np.ascontiguousarray(x, np.float32)
        if not np.abs(x).max() > 0:
            continue
        xt = torch.from_numpy(x.copy())
        tensor_scale = nv.per_tensor_amax_to_scale(xt.abs().max())
        s, d = nv.nvfp4_quantize(xt, 16, tensor_scale)
        ts = s.view(torch.uint8).numpy().reshape(x.shape[0], -1)
        tc = tk.unpack_uint4(d.view(torch.uint8)).numpy().reshape(x.shape)
        scale = (tensor_scale * s.to(torch.float32)).numpy().reshape(x.shape[0], -1, 1)
        ty = (tk.f4_unpacked_to_f32(torch.from_numpy(tc.astype(np.uint8))).numpy().reshape(scale.shape[0], -1, 16)
              * scale).reshape(x.shape)
        packed = codec.quantize(x)
        assert packed[:4].view(np.float32)[0] == tensor_scale.item(), label
        sc, oc = _element_parts(spec, packed, x.shape)
        y = codec.dequantize(packed, x.shape)
        same = ((sc == ts) & (oc == tc).reshape(*sc.shape, 16).all(-1)
                & (y.view(np.uint32) == ty.view(np.uint32)).reshape(*sc.shape, 16).all(-1))
        tiny = sc < 0x08                                  # e4m3 codes below 2^-6: its subnormals
        assert (same | tiny).all(), label
        if label.startswith(("encoder", "embeddings")):
            assert same.all(), label


# ------------------------------------------------------------------------------ the sweep
def test_a_sweep_stores_codebook_rows_that_match_the_codec(tmp_path, minilm_tensors):
    from workbench import store as st, sweep
    from workbench.metrics import tensor_metrics
    names = "NF4b64_f32,FP4b64_f32,AF4b64_e4m3,LM4b256,NF4b32_e8m0"
    rep = sweep.run(None, names, r"layer\.0\.attention\.self\.(query|value)\.weight$", tmp_path / "s", progress=False)
    assert rep.measured == 10 and not [s for s in rep.skipped if s[1]]
    rows = st.results(tmp_path / "s")
    assert set(rows["family"]) == {"codebook"} and set(rows["format"]) == set(names.split(","))
    nf4 = rows[(rows["format"] == "NF4b64_f32") & rows["tensor"].str.contains("query")].iloc[0]
    x = minilm_tensors[nf4["tensor"]]
    codec = codec_for(parse("NF4b64_f32"))
    y = codec.dequantize(codec.quantize(x), x.shape)
    assert nf4["mse"] == tensor_metrics(x, y)["mse"]          # the stored error is this codec's
    assert nf4["mse"] == pytest.approx(float(np.mean((x.astype(np.float64) - y) ** 2)), rel=1e-6)
    assert nf4["bpw"] == 4.5 and nf4["block"] == 64 and nf4["scale_dtype"] == "f32"
    # MiniLM's rows of 384: a block of 256 leaves a short last block of 128 (its own scale)
    assert set(rows.loc[rows["format"] == "LM4b256", "row_tail"]) == {128}
    assert set(rows.loc[rows["format"] != "LM4b256", "row_tail"]) == {0}
