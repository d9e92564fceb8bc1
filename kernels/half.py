"""float32 <-> IEEE binary16, exactly as numpy's ``astype`` (round to nearest even, overflow to
inf, subnormals exact, a NaN's top payload bits kept): the one fp16 converter. llama.cpp's types
store their scales with it (``kernels.legacy``; ``kernels.ggml_common.ggml_fp16_bits`` adds
ggml's NaN rule), and the f16 scale encoding of the uniform and codebook families
(``kernels.scales``) is the same function with a canonical NaN."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def f32_to_f16_bits(f):
    """IEEE binary16 bits of float32 ``f``, exactly as numpy's ``astype(np.float16)``."""
    b = np.int64(np.float32(f).view(np.uint32))
    sign = (b >> 16) & 0x8000
    a = b & 0x7FFFFFFF
    if a >= 0x7F800000:                      # inf / NaN (numpy keeps the top payload bits)
        if a == 0x7F800000:
            return sign | 0x7C00
        h = 0x7C00 + ((a & 0x7FFFFF) >> 13)
        if h == 0x7C00:
            h += 1                           # payload only in the low bits: stay a NaN
        return sign | h
    if a >= 0x477FF000:                      # >= 65520 rounds (ties-to-even) to inf
        return sign | 0x7C00
    if a >= 0x38800000:                      # normal half: rebias, round to nearest even
        return sign | ((a - 0x38000000 + 0xFFF + ((a >> 13) & 1)) >> 13)
    if a <= 0x33000000:                      # <= 2^-25 (the tie goes to even = 0)
        return sign
    e = a >> 23                              # subnormal half: value = mant * 2^(e-150)
    mant = (a & 0x7FFFFF) | 0x800000
    shift = 126 - e                          # 14..24: units of 2^-24
    q = mant >> shift
    rem = mant & ((1 << shift) - 1)
    half = 1 << (shift - 1)
    if rem > half or (rem == half and (q & 1) == 1):
        q += 1
    return sign | q


@njit(cache=True, nogil=True, inline="always")
def f16_bits_to_f32(h):
    """float32 value of binary16 bits ``h``, exactly as numpy's ``astype(np.float32)``."""
    h = np.int64(h)
    sign = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0x1F:
        bits = sign | 0x7F800000 | (m << 13)  # inf / NaN, payload kept (not quieted)
    elif e == 0:
        if m == 0:
            bits = sign
        else:                                # subnormal: normalize
            e2 = 113
            while (m & 0x400) == 0:
                m <<= 1
                e2 -= 1
            bits = sign | (e2 << 23) | ((m & 0x3FF) << 13)
    else:
        bits = sign | ((e + 112) << 23) | (m << 13)
    return np.uint32(bits).view(np.float32)
