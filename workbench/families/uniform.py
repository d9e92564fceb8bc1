"""The uniform hyper-grid: single and double block quantization onto an integer grid, any bits,
block, symmetric/asymmetric, scale encoding and scale search (a family plug-in; its Numba kernels
in ``workbench.kernels.uniform``, loaded by the codec on first use).

Names: single ``Q{bits}{s|a}{block}[_{suffix}...]`` (``Q4s32``, ``Q4s16_e4m3``, ``Q3a64_bf16``),
double ``Q({b}{s|a}{block})xQ({b2}{s|a}{blocks_per_super})[_{suffix}...]`` (the seed's
``Q(4a16)xQ(6s16)_e4m3``). The suffixes and their canonical order are documented once, in
``workbench.formats``.

Layout (``kernels.uniform`` writes it; ``formats`` and the tests check the closed form here):

    header : one f32 normalizer per kind of encoded parameter (fp8 encodings only)
    single unit = one block      : param(scale[, min]) | codes (bits × block / 8 bytes)
    double unit = one super-block: vec(scales) [| vec(mins)] | codes
    vec = param(super-scale[, super-min]) | b2-bit codes of the block scales (or mins)

A param is ``kernels.encodings.param_bytes`` bytes: the scale in its encoding, and an
asymmetric group's min in the same encoding, or a uint8 zero-point under an unsigned one (e8m0).
"""
from __future__ import annotations

import functools
import re

NAME = "uniform"
LABEL = "uniform grid"                  # the Pareto page's Family filter word

GRID_BITS = range(2, 9)
GRID_BLOCKS = (16, 32, 64, 128, 256)
GRID_SCALES = ("f16", "bf16", "e4m3", "e8m0")
GRID_DOUBLE = ((8, 8), (16, 16))          # (block, blocks per super-block): the seed's hyper-blocks
GRID_DOUBLE_SCALES = ("f16", "e4m3")
GRID_SUPER_BITS = (4, 6, 8)
# every scale encoding the kernels have, fp8 with and without the per-tensor normalizer
ALL_SCALES = (("f16", True), ("bf16", True), ("e4m3", True), ("e4m3", False), ("e5m2", True),
              ("e5m2", False), ("e8m0", True))

_SINGLE = re.compile(r"Q(?P<bits>\d)(?P<sa>[sa])(?P<block>\d+)")
_DOUBLE = re.compile(r"Q\((?P<bits>\d)(?P<sa>[sa])(?P<block>\d+)\)xQ\((?P<b2>\d)(?P<sa2>[sa])(?P<sb>\d+)\)")


# ------------------------------------------------------------------------------- grammar
def parse(name: str):
    """The spec of a uniform name; None when the base is not one (``Q4_0`` is llama.cpp's);
    FormatError (one line) for a uniform base with a bad suffix."""
    from workbench.formats import (DEFAULT_SCALE, ENCODING_ALIASES, OPTION_ORDER, FormatError,
                                   FormatSpec)
    from workbench.kernels.encodings import ENCODINGS
    base, *suffixes = name.split("_")
    m = _DOUBLE.fullmatch(base) or _SINGLE.fullmatch(base)
    if m is None:
        return None
    kw = dict(family=NAME, bits=int(m["bits"]), block=int(m["block"]), symmetric=m["sa"] == "s")
    if "b2" in m.groupdict():
        kw.update(super_bits=int(m["b2"]), super_symmetric=m["sa2"] == "s", super_block=int(m["sb"]))
    seen = []
    for s in suffixes:
        s = ENCODING_ALIASES.get(s, s)
        if s in ENCODINGS:
            if "scale" in kw:
                raise FormatError(f"{name!r}: two scale encodings")
            kw["scale"] = s
        elif s in OPTION_ORDER:
            if s in seen:
                raise FormatError(f"{name!r}: option {s!r} given twice")
            seen.append(s)
        else:
            raise FormatError(f"{name!r}: unknown suffix {s!r} (encodings: {', '.join(ENCODINGS)}; "
                              f"options: {', '.join(OPTION_ORDER)})")
    if "rmse" in seen and "hqq" in seen:
        raise FormatError(f"{name!r}: one scale search (rmse or hqq)")
    kw["search"] = "rmse" if "rmse" in seen else "hqq" if "hqq" in seen else "absmax"
    kw["naive"] = "naive" in seen
    kw["normalizer"] = "nonorm" not in seen
    kw.setdefault("scale", DEFAULT_SCALE)
    try:
        return FormatSpec(**kw)
    except FormatError as exc:
        raise FormatError(f"{name!r}: {exc}") from None


def name(spec) -> str:
    from workbench.formats import DEFAULT_SCALE
    sa = "s" if spec.symmetric else "a"
    if spec.double:
        s2 = "s" if spec.super_symmetric else "a"
        base = f"Q({spec.bits}{sa}{spec.block})xQ({spec.super_bits}{s2}{spec.super_block})"
    else:
        base = f"Q{spec.bits}{sa}{spec.block}"
    parts = [base]
    if spec.scale != DEFAULT_SCALE:
        parts.append(spec.scale)
    if spec.search != "absmax":
        parts.append(spec.search)
    if spec.naive:
        parts.append("naive")
    if not spec.normalizer:
        parts.append("nonorm")
    return "_".join(parts)


def validate(spec) -> None:
    from workbench.formats import SEARCHES, FormatError
    from workbench.kernels.encodings import ENCODINGS
    if not 1 <= spec.bits <= 8:
        raise FormatError(f"bits must be 1..8, got {spec.bits}")
    if spec.block < 8 or spec.block % 8:
        raise FormatError(f"block must be a multiple of 8 (>= 8), got {spec.block}")
    if spec.scale not in ENCODINGS:
        raise FormatError(f"unknown scale encoding {spec.scale!r} (one of {', '.join(ENCODINGS)})")
    if spec.search not in SEARCHES:
        raise FormatError(f"unknown scale search {spec.search!r}")
    if spec.search == "hqq":
        if spec.symmetric:
            raise FormatError("hqq optimises a min (zero-point): it needs an asymmetric format (Q4a32_hqq)")
        if not spec.double and not ENCODINGS[spec.scale].signed:
            raise FormatError(f"hqq needs a min stored as a value; an asymmetric {spec.scale} format "
                              "stores an integer zero-point")
    if not spec.normalizer and not ENCODINGS[spec.scale].needs_normalizer:
        raise FormatError(f"'nonorm' applies to fp8 encodings only, not {spec.scale}")
    if spec.double:
        if not 2 <= spec.super_bits <= 8:
            raise FormatError(f"super-block scale bits must be 2..8, got {spec.super_bits}")
        if spec.super_block is None or spec.super_block < 8 or spec.super_block % 8:
            raise FormatError(f"blocks per super-block must be a multiple of 8, got {spec.super_block}")
        if spec.super_symmetric is None:
            raise FormatError("double format needs super_symmetric")


# ------------------------------------------------------------------------------- layout
def uses_normalizer(spec) -> bool:
    from workbench.kernels.encodings import ENCODINGS
    return spec.normalizer and ENCODINGS[spec.scale].needs_normalizer


def unit_bytes(spec, n: int) -> int:
    """Bytes of a unit holding n weights (n < unit only for a row's short last unit)."""
    from workbench.kernels.encodings import ENCODINGS, packed_bytes, param_bytes
    enc = ENCODINGS[spec.scale]
    codes = packed_bytes(n, spec.bits)
    if not spec.double:
        return param_bytes(enc, spec.symmetric) + codes
    # one level-2 group per quantized vector: block scales, and block mins if asymmetric
    nblocks = -(-n // spec.block)
    per_vector = param_bytes(enc, spec.super_symmetric) + packed_bytes(nblocks, spec.super_bits)
    return per_vector * (1 if spec.symmetric else 2) + codes


def header_bytes(spec) -> int:
    """Per-tensor bytes: one f32 normalizer per kind of encoded parameter (fp8 only):
    single: block scales [, block mins]; double: super-scales [, super-mins] of the
    scale vector [, and of the min vector]."""
    if not uses_normalizer(spec):
        return 0
    kinds = 1 if spec.symmetric else 2
    if spec.double:
        kinds *= 1 if spec.super_symmetric else 2
    return 4 * kinds


def scale_layout(spec) -> dict:
    if spec.double:
        return {"block": spec.block, "scale_dtype": f"int{spec.super_bits}",
                "super_block_weights": spec.block * spec.super_block, "super_scale_dtype": spec.scale}
    return {"block": spec.block, "scale_dtype": spec.scale, "super_block_weights": None,
            "super_scale_dtype": None}


def kind(spec_double: bool, scale_encoding: str | None) -> str:
    """The legend group: 'single f16', 'double e4m3' …"""
    return f"{'double' if spec_double else 'single'} {scale_encoding or '?'}"


# ---------------------------------------------------------------------------------- grids
def _spec(*args, **kw):
    from workbench.formats import FormatSpec
    return FormatSpec(NAME, *args, **kw)


def DEFAULTS() -> list:
    """The default grid's uniform formats: the seed's figures.

    single: bits 2–8 × blocks 16–256 × s/a × f16/bf16/e4m3/e8m0            (280)
    double: bits 2–8 × s/a × 8×8/16×16 × super bits 4/6/8 (symmetric) × f16/e4m3 (168)
    """
    out = [_spec(b, blk, sym, enc)
           for b in GRID_BITS for blk in GRID_BLOCKS for sym in (True, False) for enc in GRID_SCALES]
    out += [_spec(b, blk, sym, enc, super_bits=b2, super_symmetric=True, super_block=sb)
            for b in GRID_BITS for sym in (True, False) for blk, sb in GRID_DOUBLE
            for b2 in GRID_SUPER_BITS for enc in GRID_DOUBLE_SCALES]
    return out


def searches_grid() -> list:
    """The scale searches side by side: asymmetric single-level bits 2–8 × blocks 16–256 ×
    f16/e4m3 × rmse/hqq (140); the default grid holds the same formats with the absmax start."""
    return [_spec(b, blk, False, enc, search=search)
            for b in GRID_BITS for blk in GRID_BLOCKS for enc in GRID_DOUBLE_SCALES for search in ("rmse", "hqq")]


def scales_grid() -> list:
    """Every scale encoding for the seed's two comparisons (the dashboard's fp8 page), on the
    default grid's shapes: single bits 2–8 × blocks 16–256 × s/a (490) and double 8×8/16×16 ×
    super bits 4/6/8 (symmetric) × s/a (588), each with f16, bf16, e4m3 and e5m2 with and
    without the normalizer, and e8m0. It includes the default grid's uniform formats, which a
    sweep on top of the default one skips (already stored)."""
    out = [_spec(b, blk, sym, enc, normalizer=norm)
           for b in GRID_BITS for blk in GRID_BLOCKS for sym in (True, False) for enc, norm in ALL_SCALES]
    out += [_spec(b, blk, sym, enc, super_bits=b2, super_symmetric=True, super_block=sb, normalizer=norm)
            for b in GRID_BITS for sym in (True, False) for blk, sb in GRID_DOUBLE
            for b2 in GRID_SUPER_BITS for enc, norm in ALL_SCALES]
    return out


GRIDS = {"scales": scales_grid, "searches": searches_grid}


# ---------------------------------------------------------------------------------- codec
def codec(spec):
    return _codec_class()(spec)


@functools.cache
def _codec_class():
    import numpy as np

    from workbench.codecs import Codec
    from workbench.formats import SEARCHES
    from workbench.kernels import uniform as U
    from workbench.kernels.scales import ENCODINGS

    class UniformCodec(Codec):
        def _args(self):
            s = self.spec
            return (s.bits, s.symmetric, s.block, ENCODINGS[s.scale].id,
                    s.super_bits or 0, bool(s.super_symmetric), s.super_block or 0)

        def quantize(self, x, importance=None, threads: int = 1):
            s = self.spec
            bits, sym, block, enc, sbits, ssym, sblock = self._args()
            norms = self._norms(x)
            packed = np.empty(s.nbytes(x.shape), np.uint8)
            assert norms.nbytes == s.header_bytes, (s.name, norms.nbytes, s.header_bytes)
            packed[:norms.nbytes] = norms.view(np.uint8)
            used = U.quantize(x, bits, sym, block, enc, sbits, ssym, sblock, self._search(), s.naive, norms, packed)
            if used != packed.size:  # the layout and the closed form must agree, byte for byte
                raise AssertionError(f"{s.name}: wrote {used} bytes, closed form says {packed.size}")
            return packed

        def _search(self) -> int:
            return SEARCHES.index(self.spec.search)     # kernels.uniform: ABSMAX, RMSE, HQQ

        def _norms(self, x):
            s = self.spec
            if not s.uses_normalizer:
                return np.empty(0, np.float32)
            bits, sym, block, enc, sbits, ssym, sblock = self._args()
            return U.normalizers(x, bits, sym, block, enc, sbits, ssym, sblock, self._search())

        def error_sums(self, x, stats):
            """The fused path: ``kernels.metrics.error_sums_given(x, dequantize(quantize(x)),
            *stats)``, bit for bit, in one pass without the bytes (``kernels.uniform.error_sums``).
            ``stats``: ``metrics.signal_sums(x)``."""
            s = self.spec
            bits, sym, block, enc, sbits, ssym, sblock = self._args()
            return U.error_sums(x, *stats, bits, sym, block, enc, sbits, ssym, sblock,
                                self._search(), s.naive, self._norms(x))

        def dequantize(self, packed, shape):
            bits, sym, block, enc, sbits, ssym, sblock = self._args()
            y = np.empty(shape, np.float32)
            U.dequantize(packed, shape[0], shape[1], bits, sym, block, enc, sbits, ssym, sblock,
                         self.spec.header_bytes // 4, y)
            return y

    return UniformCodec


def __getattr__(attr):          # the codec class is built on first use (it loads Numba)
    if attr == "UniformCodec":
        return _codec_class()
    raise AttributeError(attr)
