"""The codebook family: an element code × absmax block normalization × any block size × any
scale encoding, and bitsandbytes' double quantization of the scales.

Names: ``{code}b{block}[_{enc}][_{option}]``, the encoding omitted when it is f16 (as in the
uniform grid), e.g. ``NF4b64_f32`` (bitsandbytes' NF4 with its fp32 absmax), ``NF4b64_dq``
(with bitsandbytes' double quantization), ``AF4b64_e4m3``, ``E2M1b32_e8m0`` (OCP MXFP4),
``E2M1b32_e8m0_rceil``, ``E2M1b16_e4m3`` (NVIDIA's NVFP4 with its f32 tensor scale).

=========  ====  ==========================================================================
code       bits  levels (``workbench.codes``)
=========  ====  ==========================================================================
``NF4``    4     bitsandbytes' NF4 constants (normal quantiles, ``codes.NF4``)
``FP4``    4     bitsandbytes' FP4 (``codes.FP4_BNB``: 1 sign, 2 exponent, 1 mantissa bit,
                 /12), stored in bitsandbytes' bit patterns
``AF4``    4     Yoshida's AbnormalFloat for this block size (``codes.af4(block)``: each level
                 the median of its cell under the law of Gaussian weights / block absmax)
``LM4``    4     the Lloyd–Max (MSE-optimal) code for the same law (``codes.lloyd_max``)
``FIT4``   4     Lloyd–Max fitted to this tensor's own block-normalized values
                 (``codes.fit_levels``); its 16 f32 levels head the tensor's bytes (512 bits
                 per tensor, in bpw)
``E2M1``   4     OCP MX FP4 element (±6); ``E2M3``, ``E3M2``: 6-bit (±7.5, ±28);
``E4M3``   8     ``E5M2``: 8-bit (±448, ±57344); ``INT8``: MXINT8 (±127/64, two's complement)
=========  ====  ==========================================================================

The first four are tables in [-1, 1] scaled by the block's absmax (bitsandbytes' rule); the
element types are values in their own units, the scale mapping the block's absmax onto the
element's range: with e8m0, OCP MX's shared exponent floor(log2 amax) - emax (``_rceil``:
rounded up so nothing clips); with another encoding, amax / max element (fp8: relative to an
f32 per-tensor scale, as NVFP4). Elements round to nearest, ties to even, and saturate.

Options: ``rceil`` (element codes with e8m0 scales), ``dq`` (table codes: bitsandbytes'
double quantization, 8-bit dynamic-code absmax in groups of 256 with an f32 scale each and an
f32 mean offset; no encoding suffix).

Layout and rounding: ``workbench.kernels.codebook`` (bitsandbytes' quantize_4bit rule and
nibble order, so an f32-scaled NF4/FP4 block's bytes are bitsandbytes' bytes).
bpw = bits + scale bits / block (+ 32 bits per tensor for fp8 scales' f32 tensor scale):
NF4b64_f32 4.5, NF4b64 4.25, AF4b64_e4m3 4.125, E2M1b32_e8m0 4.25, E2M1b16_e4m3 4.5;
NF4b64_dq 4 + 8/64 + 32/(64·256) = 4.127 (+ 32 bits per tensor); FIT4 adds 512 bits per tensor.
"""
from __future__ import annotations

import functools
import re

import numpy as np

NAME = "codebook"
LABEL = "codebook"                               # the Pareto page's Family filter word
TABLE_CODES = ("NF4", "FP4", "AF4", "LM4", "FIT4")
FITTED = "FIT4"                                  # levels fitted to the tensor, stored in its header
FIT_BYTES = 16 * 4
ELEMENT_CODES = ("E2M1", "E2M3", "E3M2", "E4M3", "E5M2", "INT8")
CODES = TABLE_CODES + ELEMENT_CODES
NORMALIZATIONS = ("smax", "minmax", "hqq")     # of table codes; the default is absmax
OPTIONS = ("rceil", "dq") + NORMALIZATIONS
DQ_GROUP = 256                                   # bitsandbytes' blocksize for the absmax
_NAME = re.compile(r"(?P<code>[A-Z][A-Z0-9]*?)b(?P<block>\d+)")


def width(code: str) -> int:
    """Bits per element."""
    from workbench import codes
    if code in TABLE_CODES or code == "E2M1":
        return 4
    if code == "INT8":
        return 8
    return codes.FLOAT_ELEMENTS[code][0]


# ------------------------------------------------------------------------------- the codes
@functools.cache
def tables(code: str, block: int, signed: bool = False):
    """(values by stored code, float32[2^bits]; bounds the kernel bisects, float32; stored code
    of each sorted level, uint8; largest level; emax = floor(log2 largest level); kind).

    Table codes: the bounds are the midpoints of the sorted signed levels. Element codes: the
    midpoints of the non-negative levels (magnitude code = index), values signed by code."""
    from workbench import codes
    from workbench.kernels import codebook as K
    if code in TABLE_CODES:
        if code == "NF4":
            values = np.asarray(codes.NF4, np.float32)
        elif code == "FP4":
            values = np.asarray(codes.FP4_BNB, np.float32)   # bit-pattern order
        elif code == "AF4":
            values = np.asarray(codes.af4(block), np.float32)
        elif code == "LM4":
            values = np.asarray(codes.lloyd_max(block, signed=signed), np.float32)
        else:
            raise KeyError(f"{code}: a fitted code has no fixed table (fitted_tables)")
        return _table(values) + (np.float32(1.0), 0, K.TABLE)
    lv = codes.element_levels(code)
    bits = width(code)
    bounds = ((lv[:-1] + lv[1:]) / np.float32(2)).astype(np.float32)
    values = np.zeros(1 << bits, np.float32)
    if code == "INT8":
        c = np.arange(256)
        values[:] = (np.where(c < 128, c, c - 256) / 64).astype(np.float32)
        kind = K.INT
    else:
        values[:lv.size] = lv
        values[1 << (bits - 1):(1 << (bits - 1)) + lv.size] = -lv
        values[(1 << (bits - 1)) + lv.size:] = np.nan
        values[lv.size:1 << (bits - 1)] = np.nan      # E4M3's S.1111.111, E5M2's inf/NaN: never written
        kind = K.FLOAT
    top = np.float32(lv[-1])
    return values, bounds, np.zeros(1, np.uint8), top, int(np.floor(np.log2(top))), kind


def _table(values: np.ndarray):
    """(values, midpoint bounds of the sorted levels, stored code of each sorted level)."""
    order = np.argsort(values, kind="stable").astype(np.uint8)
    srt = values[order]
    bounds = ((srt[:-1] + srt[1:]) / np.float32(2)).astype(np.float32)
    return values, bounds, order


def fitted_tables(x: np.ndarray, block: int, nmode: int = 0):
    """``tables`` of the data-fitted code for tensor x, under the normalization ``nmode``."""
    from workbench import codes
    from workbench.kernels import codebook as K
    count, total = K.normalized_histogram(x, block, codes.FIT_BINS, nmode)
    levels = codes.fit_levels(count, total, free_low=nmode == K.SMAX)
    return _table(levels) + (np.float32(1.0), 0, K.TABLE)


# -------------------------------------------------------------------------------- grammar
def parse(name: str):
    from workbench.formats import ENCODING_ALIASES, FormatError, FormatSpec
    from workbench.kernels.encodings import ENCODINGS
    base, *suffixes = name.split("_")
    m = _NAME.fullmatch(base)
    if m is None or m["code"] not in CODES:
        return None
    code = m["code"]
    kw = dict(family=NAME, bits=width(code), block=int(m["block"]), symmetric=True, code=code)
    seen: list[str] = []
    for s in suffixes:
        s = ENCODING_ALIASES.get(s, s)
        if s in seen:
            raise FormatError(f"{name!r}: {s} given twice")
        if s in OPTIONS:
            if s in NORMALIZATIONS or s == "rceil":
                if "search" in kw:
                    raise FormatError(f"{name!r}: one of {', '.join(('rceil',) + NORMALIZATIONS)}")
                kw["search"] = s
            else:
                if "scale" in kw:
                    raise FormatError(f"{name!r}: dq stores its scales in bitsandbytes' 8-bit code "
                                      "with f32 group scales; it takes no scale encoding")
                kw.update(super_bits=8, super_block=DQ_GROUP, super_symmetric=False, scale="f32")
        elif s not in ENCODINGS:
            raise FormatError(f"{name!r}: unknown suffix {s!r} (a codebook format takes one scale "
                              f"encoding: {', '.join(ENCODINGS)}, and the options {', '.join(OPTIONS)})")
        elif "scale" in kw:
            raise FormatError(f"{name!r}: two scale encodings" if "dq" not in seen else
                              f"{name!r}: dq stores its scales in bitsandbytes' 8-bit code with f32 "
                              "group scales; it takes no scale encoding")
        else:
            kw["scale"] = s
        seen.append(s)
    try:
        spec = FormatSpec(**kw)
    except FormatError as exc:
        raise FormatError(f"{name!r}: {exc}") from None
    return spec


def name(spec) -> str:
    from workbench.formats import DEFAULT_SCALE
    base = f"{spec.code}b{spec.block}"
    if spec.double:
        return f"{base}_dq"
    parts = [base] if spec.scale == DEFAULT_SCALE else [base, spec.scale]
    if spec.search != "absmax":
        parts.append(spec.search)
    return "_".join(parts)


def validate(spec) -> None:
    from workbench.formats import FormatError
    from workbench.kernels.encodings import ENCODINGS
    if spec.code not in CODES:
        raise FormatError(f"unknown code {spec.code!r} (one of {', '.join(CODES)})")
    if spec.bits != width(spec.code) or not spec.symmetric:
        raise FormatError(f"{spec.code} is a {width(spec.code)}-bit symmetric code")
    if spec.block < 8 or spec.block % 8:
        raise FormatError(f"block must be a multiple of 8 (>= 8), got {spec.block}")
    if spec.scale not in ENCODINGS:
        raise FormatError(f"unknown scale encoding {spec.scale!r} (one of {', '.join(ENCODINGS)})")
    if spec.naive or not spec.normalizer:
        raise FormatError("codebook formats have no naive or nonorm options")
    if spec.search not in ("absmax", "rceil") + NORMALIZATIONS:
        raise FormatError(f"codebook formats take the absmax scale (or {', '.join(('rceil',) + NORMALIZATIONS)}), "
                          f"not {spec.search!r}")
    if spec.search in NORMALIZATIONS:
        if spec.code not in TABLE_CODES:
            raise FormatError(f"{spec.search} normalizes a table code (NF4, FP4, AF4, LM4, FIT4), not {spec.code}")
        if not ENCODINGS[spec.scale].signed:
            raise FormatError(f"{spec.search} stores signed block parameters; {spec.scale} has no sign")
        if spec.code == "LM4" and spec.search != "smax":
            raise FormatError("LM4 is derived for absmax and signed-max blocks; for min/max blocks fit "
                              "the code to the tensor (FIT4)")
    if spec.search == "rceil" and (spec.code not in ELEMENT_CODES or spec.scale != "e8m0"):
        raise FormatError("rceil rounds an e8m0 scale of an element code (E2M1 … INT8) up")
    if spec.double:
        if spec.search != "absmax":
            raise FormatError("dq quantizes bitsandbytes' absmax; it takes no other normalization")
        if spec.code not in TABLE_CODES or (spec.super_bits, spec.super_block, spec.super_symmetric,
                                            spec.scale) != (8, DQ_GROUP, False, "f32"):
            raise FormatError("dq is bitsandbytes' double quantization of a table code (NF4, FP4, AF4, "
                              "LM4): 8-bit absmax in groups of 256, f32 scales")
    elif spec.super_block is not None or spec.super_symmetric is not None:
        raise FormatError("a single-level codebook format has no super-block")


def norm_mode(spec) -> int:
    """The kernel's normalization of a table code."""
    from workbench.kernels import codebook as K
    return {"smax": K.SMAX, "minmax": K.MINMAX, "hqq": K.HQQ}.get(spec.search, K.ABSMAX)


def mode(spec) -> int:
    """The kernel's scale mode."""
    from workbench.kernels import codebook as K
    if spec.code in TABLE_CODES:
        return K.BNB
    if spec.scale == "e8m0":
        return K.RCEIL if spec.search == "rceil" else K.OCP
    return K.SCALED


# --------------------------------------------------------------------------------- layout
def uses_normalizer(spec) -> bool:
    from workbench.kernels.encodings import ENCODINGS
    return not spec.double and ENCODINGS[spec.scale].needs_normalizer


def unit(spec) -> int:
    return spec.block


def params(spec) -> int:
    """Block parameters: 2 (a half-range and an offset) under min/max normalization, else 1."""
    return 2 if spec.search in ("minmax", "hqq") else 1


def unit_bytes(spec, n: int) -> int:
    from workbench.kernels.encodings import ENCODINGS, packed_bytes, param_bytes
    scale = 1 if spec.double else param_bytes(ENCODINGS[spec.scale], symmetric=params(spec) == 1)
    return scale + packed_bytes(n, spec.bits)


def header_bytes(spec) -> int:
    """Per-tensor bytes: the fitted code's 16 f32 levels, then one f32 (the fp8 scales' tensor
    scale, or the double quantization's offset; a double-quantized tensor's header also holds
    one f32 per 256 blocks, which ``nbytes`` counts from the shape)."""
    return (FIT_BYTES if spec.code == FITTED else 0) + (4 if uses_normalizer(spec) or spec.double else 0)


def blocks(spec, shape) -> int:
    rows, cols = shape
    return rows * -(-cols // spec.block)


def nbytes(spec, shape) -> int:
    rows, cols = shape
    tail = cols % spec.block
    per_row = (cols // spec.block) * unit_bytes(spec, spec.block) + (unit_bytes(spec, tail) if tail else 0)
    groups = -(-blocks(spec, shape) // DQ_GROUP) if spec.double else 0
    return header_bytes(spec) + 4 * groups + rows * per_row


def nominal_bpw(spec) -> float:
    """Whole blocks, no per-tensor header; a double-quantized format counts its f32 per group."""
    bits = unit_bytes(spec, spec.block) * 8 / spec.block
    return bits + (32 / (spec.block * DQ_GROUP) if spec.double else 0.0)


def scale_layout(spec) -> dict:
    if spec.double:
        return {"block": spec.block, "scale_dtype": "dyn8", "super_block_weights": spec.block * DQ_GROUP,
                "super_scale_dtype": "f32"}
    return {"block": spec.block, "scale_dtype": spec.scale, "super_block_weights": None,
            "super_scale_dtype": None}


def kind(double: bool, scale_encoding: str | None) -> str:
    """The legend group: 'codebook f32' …, 'codebook dq' for bitsandbytes' double quantization
    (8-bit + f32 scales)."""
    return "codebook dq" if double else f"codebook {scale_encoding or '?'}"


# ---------------------------------------------------------------------------------- codec
def codec(spec):
    return _codec_class()(spec)


@functools.cache
def _codec_class():
    from workbench import codes
    from workbench.codecs import Codec, NonFiniteError, as_kernel_input
    from workbench.kernels import codebook as K
    from workbench.kernels.encodings import ENCODINGS

    class CodebookCodec(Codec):
        """Codebook blocks (``kernels.codebook``)."""

        def _args(self):
            s = self.spec
            enc = ENCODINGS[s.scale]
            return enc.id, (0 if s.double else enc.bits // 8), np.float32(enc.max_finite)

        def quantize(self, x: np.ndarray, importance: np.ndarray | None = None,
                     threads: int = 1) -> np.ndarray:
            s = self.spec
            x = as_kernel_input(x)
            if not np.isfinite(x).all():
                raise NonFiniteError(f"{s.name}: tensor has non-finite values (NaN/Inf); an absmax "
                                     "scale is not defined for them")
            enc, nbytes, top_enc = self._args()
            fit = s.code == FITTED
            nmode = norm_mode(s)
            values, bounds, order, top, emax, kind = (fitted_tables(x, s.block, nmode) if fit else
                                                      tables(s.code, s.block, s.search == "smax"))
            packed = np.empty(s.nbytes(x.shape), np.uint8)
            at = 0
            if fit:
                packed[:FIT_BYTES] = values.view(np.uint8)
                at = FIT_BYTES
            if s.double:
                absmax = K.block_absmax(x, s.block)
                offset = np.float32(absmax.astype(np.float64).mean()) if absmax.size else np.float32(0)
                q, a2 = K.dq_scales(absmax, offset, codes.DYN8, DQ_GROUP)
                head = at + 4 + 4 * a2.size
                packed[at:at + 4] = np.array([offset], np.float32).view(np.uint8)
                packed[at + 4:head] = a2.view(np.uint8)
                used = K.quantize_dq(x, bounds, order, s.block, absmax, q, packed, head)
            else:
                norm = np.float32(1.0)
                head = s.header_bytes
                if head > at:
                    norm = K.tensor_normalizer(x, top, top_enc)
                    packed[at:at + 4] = np.array([norm], np.float32).view(np.uint8)
                used = K.quantize(x, kind, bounds, order, top, emax, s.bits, s.block, mode(s), enc,
                                  nbytes, top_enc, norm, nmode, values[order], packed, head)
            if used != packed.size:  # the layout and the closed form must agree, byte for byte
                raise AssertionError(f"{s.name}: wrote {used} bytes, closed form says {packed.size}")
            return packed

        def dequantize(self, packed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
            s = self.spec
            enc, nbytes, _ = self._args()
            at = 0
            if s.code == FITTED:
                values = packed[:FIT_BYTES].view(np.float32)
                at = FIT_BYTES
            else:
                values = tables(s.code, s.block, s.search == "smax")[0]
            y = np.empty(shape, np.float32)
            if s.double:
                groups = -(-blocks(s, shape) // DQ_GROUP)
                offset = packed[at:at + 4].view(np.float32)[0]
                a2 = packed[at + 4:at + 4 + 4 * groups].view(np.float32)
                K.dequantize_dq(packed, shape[0], shape[1], values, s.block, codes.DYN8, a2, offset,
                                DQ_GROUP, at + 4 + 4 * groups, y)
                return y
            head = s.header_bytes
            norm = packed[at:at + 4].view(np.float32)[0] if head > at else np.float32(1.0)
            K.dequantize(packed, shape[0], shape[1], values, s.bits, s.block, mode(s), enc, nbytes,
                         np.float32(norm), norm_mode(s), head, y)
            return y

    return CodebookCodec


def __getattr__(attr):          # the codec class is built on first use (codecs imports formats)
    if attr == "CodebookCodec":
        return _codec_class()
    raise AttributeError(attr)


# ---------------------------------------------------------------------------------- grids
CODEBOOK_BLOCKS = (16, 32, 64, 128, 256)
CODEBOOK_SCALES = ("f32", "f16", "bf16", "e4m3", "e8m0")


def codebooks_grid():
    """Every code × blocks 16–256 × f32/f16/bf16/e4m3/e8m0 scales, with bitsandbytes' double
    quantization for the table codes and the rounded-up e8m0 scale for the element codes
    (330 formats)."""
    from workbench.formats import FormatSpec
    out = []
    for code in CODES:
        for blk in CODEBOOK_BLOCKS:
            out += [FormatSpec(NAME, width(code), blk, True, enc, code=code) for enc in CODEBOOK_SCALES]
            if code in TABLE_CODES:
                out.append(FormatSpec(NAME, 4, blk, True, "f32", super_bits=8, super_block=DQ_GROUP,
                                      super_symmetric=False, code=code))
            else:
                out.append(FormatSpec(NAME, width(code), blk, True, "e8m0", search="rceil", code=code))
    return out


# The well-known points: bitsandbytes' NF4/FP4 (with and without double quantization), AF4 at
# 64 and 256, OCP MXFP4 / MXFP6 / MXFP8 / MXINT8, NVIDIA's NVFP4 with its tensor scale.
WELL_KNOWN = ("NF4b64_f32", "NF4b64_dq", "FP4b64_f32", "FP4b64_dq", "AF4b64_f32", "AF4b256_f32",
              "E2M1b32_e8m0", "E2M3b32_e8m0", "E3M2b32_e8m0", "E4M3b32_e8m0", "E5M2b32_e8m0",
              "INT8b32_e8m0", "E2M1b16_e4m3")


def norms_grid():
    """The normalizations side by side: every table code × blocks 16–256 × f16/e4m3 ×
    smax/minmax/hqq (LM4: smax only; 130); ``codebooks`` holds the absmax ones."""
    from workbench.formats import FormatSpec
    return [FormatSpec(NAME, 4, blk, True, enc, code=code, search=norm)
            for code in TABLE_CODES for blk in CODEBOOK_BLOCKS for enc in ("f16", "e4m3")
            for norm in NORMALIZATIONS if code != "LM4" or norm == "smax"]


def DEFAULTS():
    """The default grid's codebook formats: the well-known points (``WELL_KNOWN``)."""
    return [parse(n) for n in WELL_KNOWN]


GRIDS = {"codebooks": codebooks_grid, "codebook-norms": norms_grid, "codebook-defaults": DEFAULTS}
