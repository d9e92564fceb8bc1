"""Ternary weights {-1, 0, +1} × one scale per block (``workbench.families.ternary``), in Numba.

Layout, per row, per block of n weights (a row's last block may be shorter):
    scale (the encoding's bytes, little-endian) | n 2-bit codes q + 1 ∈ {0, 1, 2}, LSB-first,
    padded to a byte (``kernels.bitpack.pack_lsb``)

Scale rules: ``ABSMEAN`` (BitNet b1.58: γ = mean|x| of the block, q = RoundClip(x / γ, -1, 1))
and ``ABSMAX`` (llama.cpp's TQ2_0 rule: d = max|x|, q = round(x / d)). The scale is rounded to
its encoding first (saturating at its largest finite value) and the codes computed against the
decoded scale, as every family here does.
Rounding is half away from zero, as llama.cpp's ``lroundf``, decided exactly (|x| ≥ d / 2 in
float64: no reciprocal, which overflows for a subnormal scale).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from workbench.kernels.bitpack import get_le, pack_lsb, put_le, unpack_lsb
from workbench.kernels.scales import decode, encode

ABSMEAN, ABSMAX = 0, 1


@njit(cache=True, nogil=True)
def quantize(x, block, rule, enc, enc_bytes, lim, out):
    """Packed bytes of float32 x[rows, cols] into out; returns the bytes written. ``lim``: the
    encoding's largest finite value, where a scale saturates (the block's weights then clip)."""
    rows, cols = x.shape
    codes = np.empty(block, np.int32)
    pos = 0
    for i in range(rows):
        row = x[i]
        for b0 in range(0, cols, block):
            n = min(block, cols - b0)
            acc = 0.0
            for j in range(n):
                a = abs(np.float64(row[b0 + j]))
                acc = max(acc, a) if rule == ABSMAX else acc + a
            s = np.float32(min(acc if rule == ABSMAX else acc / n, lim))
            code = encode(s, enc)
            d = decode(code, enc)
            half = np.float64(d) * 0.5 if d > 0 else np.inf
            for j in range(n):
                v = np.float64(row[b0 + j])
                # round-half-away(v / d) clipped to [-1, 1], exactly: |v| >= d / 2 (no reciprocal,
                # which overflows for a subnormal scale)
                codes[j] = 1 if abs(v) < half else (0 if v < 0 else 2)
            pos = put_le(out, pos, code, enc_bytes)
            pos = pack_lsb(codes, n, 2, out, pos)
    return pos


@njit(cache=True, nogil=True)
def dequantize(packed, rows, cols, block, enc, enc_bytes, y):
    codes = np.empty(block, np.int32)
    pos = 0
    for i in range(rows):
        for b0 in range(0, cols, block):
            n = min(block, cols - b0)
            d = decode(get_le(packed, pos, enc_bytes), enc)
            pos += enc_bytes
            pos = unpack_lsb(packed, pos, n, 2, codes)
            for j in range(n):
                y[i, b0 + j] = np.float32(codes[j] - 1) * d
    return pos
