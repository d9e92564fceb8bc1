"""Block-scale encodings (f32, f16, bf16, e4m3, e5m2, e8m0) for use inside Numba kernels.

Numba has no float16 scalar type, so every conversion is integer work on the float32 bit
pattern, rounding to nearest even. Bit-exact on all 2^32 float32 inputs against independent
definitions (tests/test_scales.py: float rounding by frexp/ldexp/rint, no bit manipulation), and
cross-checked against numpy float16 / pyarrow / ml_dtypes, except for these deliberate differences:

* e4m3, e5m2 saturate: finite overflow and +-inf encode to +-max (ml_dtypes gives NaN / inf),
  because a clipped scale costs a little error while a NaN/inf scale destroys the block.
* e8m0 encodes |x| (a scale is a magnitude; ml_dtypes gives NaN for x < 0) and 0 -> code 0
  (2^-127; ml_dtypes gives NaN), so an all-zero block still decodes to zeros.

e8m0 rule (OCP MX: value 2^(code-127), code 255 = NaN, no zero, no sign), for every float32:
|x| rounds to the power of two nearest in value; the midpoint of 2^k and 2^(k+1) is 1.5*2^k and
x >= 1.5*2^k rounds up (a tie goes up, not to an even code). f32 subnormals follow the same rule:
1.5*2^-127 <= x < 2^-126 gives 2^-126 (code 1), everything below 1.5*2^-127 gives 2^-127 (code
0, the smallest value: nothing rounds below it). x >= 1.5*2^127, +-inf and NaN give NaN (0xFF).
ml_dtypes >= 0.7 agrees on every x > 0; 0.5 and 0.6 give 2^-126 for all subnormals above 2^-127
(2^-127 + 2^-149 -> code 1, which is farther in value), so the tests prove this rule against a
frexp definition and use ml_dtypes as a cross-check only where its releases agree.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from workbench.kernels import half

# the table of encodings lives in a Numba-free module; re-exported here for the kernels
from workbench.kernels.encodings import (BF16, E4M3, E5M2, E8M0, ENCODINGS, F16, F32,  # noqa: F401
                                         ScaleEncoding)

# Sign-magnitude layouts for the shared rounder: (exponent bits, mantissa bits, bias,
# largest |code| an encode may return, NaN code, IEEE-style inf/NaN exponent).
_F16 = (5, 10, 15, 0x7C00, 0x7E00, True)  # IEEE: overflow -> inf
_BF16 = (8, 7, 127, 0x7F80, 0x7FC0, True)
_E4M3 = (4, 3, 7, 0x7E, 0x7F, False)  # saturates at 448; S.1111.111 is NaN, no inf
_E5M2 = (5, 2, 15, 0x7B, 0x7E, True)  # saturates at 57344
_F32_INF, _F32_QNAN = 0x7F800000, 0x7FC00000


@njit(cache=True, nogil=True)
def _bits(x):
    return np.int64(np.float32(x).view(np.uint32))


@njit(cache=True, nogil=True)
def _float(b):
    return np.uint32(b).view(np.float32)


@njit(cache=True, nogil=True)
def _rne(a, mbits, bias):
    """Finite |x| bits -> |code| with `mbits` mantissa bits, RNE; unbounded above (callers clamp)."""
    e = a >> 23
    emin = 128 - bias  # f32 exponent field of the target's smallest normal
    if e >= emin:
        sh = 23 - mbits
        # +(half-1+lsb) then truncate is RNE; a mantissa carry bumps the exponent for free.
        return ((a + (1 << (sh - 1)) - 1 + ((a >> sh) & 1)) >> sh) - ((127 - bias) << mbits)
    # Target subnormal: round the exact significand once (no double rounding via a normal).
    sig = (a & 0x7FFFFF) | (0x800000 if e > 0 else 0)
    sh = 23 - mbits + emin - max(e, 1)
    if sh >= 25:
        return 0  # sig < 2^24: below half the smallest subnormal
    q = sig >> sh
    rem = sig & ((1 << sh) - 1)
    half = 1 << (sh - 1)
    if rem > half or (rem == half and (q & 1) == 1):
        q += 1
    return q  # q == 1 << mbits is exactly the smallest normal code


@njit(cache=True, nogil=True)
def _to_small(x, ebits, mbits, bias, top, nan, ieee):
    b = _bits(x)
    s = (b >> 31) << (ebits + mbits)
    a = b & 0x7FFFFFFF
    if a > _F32_INF:
        return np.uint32(s | nan)
    return np.uint32(s | min(_rne(a, mbits, bias), top))  # inf rounds past `top` too


@njit(cache=True, nogil=True)
def _from_small(c, ebits, mbits, bias, top, nan, ieee):
    c = np.int64(c)
    s = ((c >> (ebits + mbits)) & 1) << 31
    e, m = (c >> mbits) & ((1 << ebits) - 1), c & ((1 << mbits) - 1)
    if e == (1 << ebits) - 1 and (ieee or m == (1 << mbits) - 1):
        return _float(s | (_F32_INF if ieee and m == 0 else _F32_QNAN | (m << (23 - mbits))))
    if e == 0:
        if m == 0:
            return _float(s)
        e = 1
        while m < (1 << mbits):  # normalise: bias < 127, so every subnormal is an f32 normal
            m <<= 1
            e -= 1
        m -= 1 << mbits
    return _float(s | ((e - bias + 127) << 23) | (m << (23 - mbits)))


@njit(cache=True, nogil=True)
def f32_to_f16_bits(x):
    """binary16 bits (``kernels.half``, numpy's rounding), a NaN as the canonical quiet NaN."""
    if x != x:
        return np.uint32(((_bits(x) >> 16) & 0x8000) | _F16[4])
    return np.uint32(half.f32_to_f16_bits(x))


@njit(cache=True, nogil=True)
def f16_bits_to_f32(h):
    return half.f16_bits_to_f32(np.int64(h) & 0xFFFF)


@njit(cache=True, nogil=True)
def f32_to_bf16_bits(x):
    return _to_small(x, *_BF16)


@njit(cache=True, nogil=True)
def bf16_bits_to_f32(h):
    return _float((np.int64(h) & 0xFFFF) << 16)  # bf16 subnormals are f32 subnormals


@njit(cache=True, nogil=True)
def f32_to_e4m3(x):
    return _to_small(x, *_E4M3)


@njit(cache=True, nogil=True)
def e4m3_to_f32(c):
    return _from_small(c, *_E4M3)


@njit(cache=True, nogil=True)
def f32_to_e5m2(x):
    return _to_small(x, *_E5M2)


@njit(cache=True, nogil=True)
def e5m2_to_f32(c):
    return _from_small(c, *_E5M2)


@njit(cache=True, nogil=True)
def f32_to_e8m0(x):
    a = _bits(x) & 0x7FFFFFFF  # sign dropped on purpose (module docstring)
    if a >= _F32_INF:
        return np.uint32(0xFF)  # inf, NaN -> NaN, as ml_dtypes
    e, m = a >> 23, a & 0x7FFFFF
    if e == 0:  # subnormal m*2^-149: 2^-127 is m = 0x400000, its midpoint with 2^-126 0x600000
        return np.uint32(1 if m >= 0x600000 else 0)  # nearest in value, tie up; 0 -> 2^-127
    c = e + (1 if m >= 0x400000 else 0)  # nearest in value: x >= 1.5*2^k (a tie) rounds up
    return np.uint32(0xFF if c > 0xFE else c)  # >= 1.5*2^127 -> NaN (no inf), as ml_dtypes


@njit(cache=True, nogil=True)
def e8m0_to_f32(c):
    c = np.int64(c) & 0xFF
    if c == 0xFF:
        return _float(_F32_QNAN)
    return _float(c << 23 if c > 0 else 0x400000)  # 2^-127 is an f32 subnormal


@njit(cache=True, nogil=True)
def encode_e8m0_ceil(x):
    """Code of the smallest power of two >= |x|, clamped to [2^-127, 2^127]; NaN -> 0xFF."""
    a = _bits(x) & 0x7FFFFFFF
    if a > _F32_INF:
        return np.uint32(0xFF)
    e, m = a >> 23, a & 0x7FFFFF
    if e == 0:
        return np.uint32(1 if m > 0x400000 else 0)
    return np.uint32(min(e + (1 if m != 0 else 0), 0xFE))  # clamp: a quantizer's scale, never NaN


@njit(cache=True, nogil=True)
def encode(x, enc):
    """float32 -> code (in the low bits of a uint32) in encoding `enc` (an integer id)."""
    if enc == F16:
        return f32_to_f16_bits(x)
    elif enc == BF16:
        return f32_to_bf16_bits(x)
    elif enc == E4M3:
        return f32_to_e4m3(x)
    elif enc == E5M2:
        return f32_to_e5m2(x)
    elif enc == E8M0:
        return f32_to_e8m0(x)
    elif enc == F32:
        return np.uint32(_bits(x))
    raise ValueError("unknown scale encoding id")


@njit(cache=True, nogil=True)
def decode(code, enc):
    """Code -> float32 value in encoding `enc`."""
    if enc == F16:
        return f16_bits_to_f32(code)
    elif enc == BF16:
        return bf16_bits_to_f32(code)
    elif enc == E4M3:
        return e4m3_to_f32(code)
    elif enc == E5M2:
        return e5m2_to_f32(code)
    elif enc == E8M0:
        return e8m0_to_f32(code)
    elif enc == F32:
        return _float(code)
    raise ValueError("unknown scale encoding id")


@njit(cache=True, nogil=True)
def round_to(x, enc):
    """x rounded to `enc`: the scale value a kernel actually multiplies by."""
    return decode(encode(x, enc), enc)


# The array forms branch once outside the loop: a per-element encode() call does not inline
# and costs ~4 ns/element against ~1 ns for these loops.
@njit(cache=True, nogil=True)
def encode_array(x, enc, out=None):
    """float32 array -> uint32 codes, x's shape (written into the contiguous `out` if given)."""
    src = x.ravel()
    res = np.empty(x.shape, np.uint32) if out is None else out.reshape(x.shape)
    dst = res.reshape(src.size)
    if enc == F16:
        for i in range(src.size):
            dst[i] = f32_to_f16_bits(src[i])
    elif enc == BF16:
        for i in range(src.size):
            dst[i] = f32_to_bf16_bits(src[i])
    elif enc == E4M3:
        for i in range(src.size):
            dst[i] = f32_to_e4m3(src[i])
    elif enc == E5M2:
        for i in range(src.size):
            dst[i] = f32_to_e5m2(src[i])
    elif enc == E8M0:
        for i in range(src.size):
            dst[i] = f32_to_e8m0(src[i])
    else:
        for i in range(src.size):
            dst[i] = encode(src[i], enc)  # f32, or the unknown-id error
    return res


@njit(cache=True, nogil=True)
def decode_array(codes, enc, out=None):
    """Codes -> float32 values, codes' shape (written into the contiguous `out` if given)."""
    src = codes.ravel()
    res = np.empty(codes.shape, np.float32) if out is None else out.reshape(codes.shape)
    dst = res.reshape(src.size)
    if enc == F16:
        for i in range(src.size):
            dst[i] = f16_bits_to_f32(src[i])
    elif enc == BF16:
        for i in range(src.size):
            dst[i] = bf16_bits_to_f32(src[i])
    elif enc == E4M3:
        for i in range(src.size):
            dst[i] = e4m3_to_f32(src[i])
    elif enc == E5M2:
        for i in range(src.size):
            dst[i] = e5m2_to_f32(src[i])
    elif enc == E8M0:
        for i in range(src.size):
            dst[i] = e8m0_to_f32(src[i])
    else:
        for i in range(src.size):
            dst[i] = decode(src[i], enc)
    return res
