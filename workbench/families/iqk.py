"""ik_llama.cpp's IQ4_KS (4.25 bpw) and IQ4_KSS (4.0 bpw): a family plug-in (its Numba kernels
in ``workbench.kernels.iqk``, loaded by the codec on first use).

Both quantize rows whose length is a multiple of 256 (QK_K) against ik_llama.cpp's non-linear
grid ``iq4k_values`` (IQ4_NL's 16 int8 levels, and the same +4: one shift bit per block picks
the half), with a 7-bit odd block scale per 32 weights and one f32 scale per row:

    row    : f32 row scale d | super-blocks of 256
    IQ4_KS : per super-block  8 block bytes ((l + 127) | shift, l odd in [-127, 127]) |
             128 bytes of nibbles (byte j of block ib: weight j low, weight j + 16 high)
    IQ4_KSS: per super-block  64 little-endian uint16: word 8·ib + k holds the four quants of
             weights 2k, 2k+16, 2k+1, 2k+17 of block ib (a 16-bit nibble word v with an even
             number of set bits, stored in 15 bits as g with v = g ^ (g << 1)) in its bits 1..15,
             and bit k of the block byte in bit 0

    weight = d · l · grid[shift][q]

bpw: IQ4_KS 136 bytes per 256 = 4.25, IQ4_KSS 128 per 256 = 4.0, + 32 bits per row. A row
whose length 256 does not divide is written as IQ4_NL, as ik_llama's llama-quantize does
(``plan``); this workbench measures it so and records the fallback.

The quantizers follow ik_llama.cpp's ``quantize_row_iq4_k_impl_bs128`` (IQ4_KS) and
``quantize_row_iq4_kss_impl`` (IQ4_KSS, iqk_quantize.cpp) step by step, in float32: per block,
a search over 15 trial inverse scales × both halves of the grid × both signs, each judged by
its least-squares scale (weights x², or an importance matrix's qw·sqrt(2Σx²/256 + x²)); the row
scale max|block scale| / 127, the 7-bit block scales rounded to odd integers, the elements
re-quantized, and a least-squares refit of the row scale (×1.01 for IQ4_KSS). IQ4_KSS builds
its parity constraint into the search: every candidate nibble word of odd parity is repaired
by the cheapest ±1/±2 level change of one of its four quants (``_prune``), and the shift is
chosen after the block scale is fixed. No byte oracle is at hand (mainline llama.cpp has no
such types): the tests check the layout, an independent numpy decoder, the parity of every
word, and where the errors land between IQ4_XS and Q3_K.
"""
from __future__ import annotations

import functools

import numpy as np

NAME = "iqk"
LABEL = KIND = "ik_llama.cpp"        # the Family filter's word and the legend group
TYPES = {"IQ4_KS": 136, "IQ4_KSS": 128}        # bytes per super-block of 256
QK_K, BLOCK = 256, 32
FALLBACK = "IQ4_NL"


# ------------------------------------------------------------------------------- grammar
def parse(name: str):
    from workbench.formats import FormatSpec
    if name not in TYPES:
        return None
    return FormatSpec(NAME, 4, QK_K, True, "f32", ggml_type=name)


def name(spec) -> str:
    return spec.ggml_type


def validate(spec) -> None:
    from workbench.formats import FormatError
    if spec.ggml_type not in TYPES or (spec.bits, spec.block, spec.symmetric, spec.scale) != (4, QK_K, True, "f32") \
            or spec.double or spec.search != "absmax" or spec.naive or not spec.normalizer:
        raise FormatError(f"an ik_llama.cpp type is one of {', '.join(TYPES)}, with its own layout")


def plan(spec, shape):
    """(the type written, why): rows 256 does not divide are written as IQ4_NL."""
    cols = shape[-1]
    if cols % QK_K == 0:
        return spec.ggml_type, None
    from workbench.formats import ggml_plan
    applied, why = ggml_plan(FALLBACK, cols)
    reason = f"row length {cols} is not a multiple of {spec.ggml_type}'s super-block of {QK_K}"
    return applied, f"{reason}; ik_llama's llama-quantize writes {FALLBACK}" if applied == FALLBACK else \
        f"{reason}, and {why}"


# ------------------------------------------------------------------------------- layout
def uses_normalizer(spec) -> bool:
    return False


def unit(spec) -> int:
    return QK_K


def unit_bytes(spec, n: int) -> int:
    return TYPES[spec.ggml_type]


def header_bytes(spec) -> int:
    return 0


def nbytes(spec, shape) -> int:
    rows, cols = shape
    if cols % QK_K:
        from workbench.formats import parse as parse_format
        return parse_format(FALLBACK).nbytes(shape)          # IQ4_NL (or its own fallback)
    return rows * (4 + (cols // QK_K) * TYPES[spec.ggml_type])


def nominal_bpw(spec) -> float:
    return TYPES[spec.ggml_type] * 8 / QK_K


def scale_layout(spec) -> dict:
    return {"block": BLOCK, "scale_dtype": "int7", "super_block_weights": None, "super_scale_dtype": "f32"}


# ---------------------------------------------------------------------------------- codec
def codec(spec):
    return _codec_class()(spec)


@functools.cache
def _codec_class():
    from workbench.codecs import Codec, NonFiniteError, as_kernel_input, codec_for
    from workbench.kernels import iqk as K
    from workbench.formats import parse as parse_format

    class IqkCodec(Codec):
        """IQ4_KS / IQ4_KSS rows (this module's kernels); IQ4_NL for rows 256 does not divide."""

        def _fallback(self, shape):
            return codec_for(parse_format(FALLBACK)) if shape[-1] % QK_K else None

        def uses_importance(self, shape) -> bool:
            fb = self._fallback(shape)
            return True if fb is None else fb.uses_importance(shape)

        def quantize(self, x: np.ndarray, importance: np.ndarray | None = None,
                     threads: int = 1) -> np.ndarray:
            x = as_kernel_input(x)
            if (fb := self._fallback(x.shape)) is not None:
                return fb.quantize(x, importance, threads)
            if not np.isfinite(x).all():
                raise NonFiniteError(f"{self.spec.name}: tensor has non-finite values (NaN/Inf)")
            imp = (np.ascontiguousarray(importance, np.float32).reshape(-1) if importance is not None
                   else np.zeros(0, np.float32))
            if imp.size not in (0, x.shape[1]):
                raise ValueError(f"{self.spec.name}: an importance vector of {imp.size} values for rows "
                                 f"of {x.shape[1]}")
            packed = np.empty(self.spec.nbytes(x.shape), np.uint8)
            used = K.quantize(x, imp, self.spec.ggml_type == "IQ4_KSS", packed)
            if used != packed.size:
                raise AssertionError(f"{self.spec.name}: wrote {used} bytes, closed form says {packed.size}")
            return packed

        def dequantize(self, packed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
            if (fb := self._fallback(shape)) is not None:
                return fb.dequantize(packed, shape)
            y = np.empty(shape, np.float32)
            K.dequantize(packed, shape[0], shape[1], self.spec.ggml_type == "IQ4_KSS", y)
            return y

    return IqkCodec


def DEFAULTS():
    """Both types are in the default grid."""
    return [parse(n) for n in TYPES]


GRIDS = {"iqk": DEFAULTS}
