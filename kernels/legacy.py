"""llama.cpp's legacy block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 in Numba.

Byte-identical to ``gguf.quants.quantize(x, GGMLQuantizationType.Q4_0)`` etc. (gguf's numpy port
of llama.cpp's ``quantize_row_*_ref``) and decoding bit-identical to ``gguf.quants.dequantize``.
``tests/test_legacy.py`` checks both on every weight matrix of the default model and on edge cases.

Every kernel takes one C-contiguous 2-D float32 array (rows x cols, cols a multiple of 32),
makes a single pass per block with no temporaries, and releases the GIL.

Arithmetic matched to gguf's numpy code (all of it is float32; with NEP 50 the Python-int
constants ``/ -8``, ``/ 15``, ``1 / d`` stay float32, nothing is promoted to float64):

* Q4_0/Q5_0: the signed value of the element with the largest |x| (``argmax``: the FIRST one on
  ties, so in a block holding -3 and +3 the earlier one sets the sign of d);
  ``d = max / -8`` (``/ -16``); ``id = 0 if d == 0 else 1 / d`` (which is +-inf when |d| < 2^-128,
  e.g. for blocks of f32 denormals); ``q = uint8(trunc(x*id + 8.5f))`` then ``min(q, 15)``.
* Q4_1/Q5_1: ``d = (max - min) / 15`` (``/ 31``), ``q = uint8(trunc((x - min)*id + 0.5f))``,
  ``min(q, 15)``; three separately rounded float32 operations (never fused into an FMA).
* Q8_0: ``d = max|x| / 127``; ``q = int8(roundf(x*id))``, roundf = half away from zero done as
  ``floor(a) + floor(2*(a - floor(a)))`` (exactly C's roundf for finite input).
* numpy's float32 -> uint8/int8 cast (``astype``) of a value that is NaN, +-inf or outside int32
  gives 0 on x86-64 (cvttss2si yields INT_MIN, whose low byte is 0); an in-range value gives the
  low byte of its int32 truncation. gguf reaches those cases when id is +-inf (x*inf = +-inf,
  0*inf = NaN) or d is inf (max - min overflowed): all such codes come out 0, and we do the same.
* fp16 scales: numpy's float32 -> float16 (round to nearest even, overflow -> inf, subnormals
  exact, NaN payload kept), done here with integer bit manipulation since Numba has no float16.
* Decoding: ``d * float32(q - 8)`` (Q4_0/Q5_0 ``- 16``, Q8_0 ``q * d``) and ``(d * q) + m``.

Not matched: gguf's ``blocks.max``/``blocks.min`` (Q4_1/Q5_1) on a block whose max (or min) is a
zero present with both signs: which zero numpy returns depends on its SIMD reduction order
(AVX-512 vs AVX2 vs NEON), so it is a property of the machine, not of the format. We follow
llama.cpp's C reference (sequential ``if (v < min) min = v; if (v > max) max = v;``: the first
zero met wins).

Non-finite input: llama.cpp's reference quantizers are not defined for NaN/Inf (the C code's
float -> int casts are undefined behaviour there), so the kernels do nothing special about them;
callers should refuse such tensors, using ``check_finite`` (count of non-finite values).
"""
from __future__ import annotations

import numpy as np
from numba import njit

QK = 32  # every legacy type: 32 weights per block

# ------------------------------------------------------------------------------ layout table
# In the style of ggml-common.h (ggml_half = fp16, little-endian; qs: weight j in the low nibble
# of byte j, weight j+16 in the high nibble; qh: bit j = 5th bit of weight j, as a LE uint32):
#
#   typedef struct { ggml_half d;              uint8_t qs[QK4_0/2]; } block_q4_0;  // 2+16    = 18
#   typedef struct { ggml_half d; ggml_half m; uint8_t qs[QK4_1/2]; } block_q4_1;  // 2+2+16  = 20
#   typedef struct { ggml_half d; uint8_t qh[4];  uint8_t qs[QK5_0/2]; } block_q5_0;  // 2+4+16  = 22
#   typedef struct { ggml_half d; ggml_half m; uint8_t qh[4]; uint8_t qs[QK5_1/2]; } block_q5_1;  // 24
#   typedef struct { ggml_half d;              int8_t  qs[QK8_0];   } block_q8_0;  // 2+32    = 34
#
# name -> (block size, block bytes, ((field, byte offset, bytes), ...))
LAYOUT = {
    "Q4_0": (QK, 18, (("d", 0, 2), ("qs", 2, 16))),
    "Q4_1": (QK, 20, (("d", 0, 2), ("m", 2, 2), ("qs", 4, 16))),
    "Q5_0": (QK, 22, (("d", 0, 2), ("qh", 2, 4), ("qs", 6, 16))),
    "Q5_1": (QK, 24, (("d", 0, 2), ("m", 2, 2), ("qh", 4, 4), ("qs", 8, 16))),
    "Q8_0": (QK, 34, (("d", 0, 2), ("qs", 2, 32))),
}
BITS_PER_WEIGHT = {"Q4_0": 4.5, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_1": 6.0, "Q8_0": 8.5}

# static_assert(sizeof(block_*) == ...): fields tile the block exactly, and the bpw is right.
for _name, (_qk, _nbytes, _fields) in LAYOUT.items():
    _pos = 0
    for _f, _off, _n in _fields:
        assert _off == _pos, f"{_name}.{_f}: padding/overlap"
        _pos += _n
    assert _pos == _nbytes, f"wrong {_name} block size/padding"
    assert _nbytes * 8 / _qk == BITS_PER_WEIGHT[_name], _name
assert 2 + QK // 2 == 18 and 2 + 2 + QK // 2 == 20 and 2 + 4 + QK // 2 == 22
assert 2 + 2 + 4 + QK // 2 == 24 and 2 + QK == 34


# ------------------------------------------------------------------------------ fp16 bits
# Private for now (kernels/scales.py grows public ones; to be merged).
@njit(cache=True, nogil=True, inline="always")
def _f32_to_f16_bits(f):
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
def _f16_bits_to_f32(h):
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


# ------------------------------------------------------------------------------ helpers
@njit(cache=True, nogil=True, inline="always")
def _u8_cast(t):
    """numpy's float32 -> uint8/int8 ``astype`` on x86-64: low byte of the int32 truncation,
    0 for NaN, +-inf and anything outside int32 (cvttss2si -> INT_MIN)."""
    if t >= np.float32(-2147483648.0) and t < np.float32(2147483648.0):
        return np.int64(t) & 0xFF
    return 0


@njit(cache=True, nogil=True, inline="always")
def _put_half(out, r, o, f):
    h = _f32_to_f16_bits(f)
    out[r, o] = np.uint8(h & 0xFF)
    out[r, o + 1] = np.uint8(h >> 8)


@njit(cache=True, nogil=True, inline="always")
def _get_half(p, r, o):
    return _f16_bits_to_f32(np.int64(p[r, o]) | (np.int64(p[r, o + 1]) << 8))


@njit(cache=True, nogil=True, inline="always")
def _signed_absmax(x, r, s):
    """x[r, s + argmax |x|] over one block: the first element of largest magnitude."""
    vmax = x[r, s]
    amax = abs(vmax)
    for j in range(1, QK):
        v = x[r, s + j]
        a = abs(v)
        if a > amax:
            amax = a
            vmax = v
    return vmax


@njit(cache=True, nogil=True, inline="always")
def _min_max(x, r, s):
    """llama.cpp's sequential min/max (strict compares: the first of equal values wins)."""
    mn = x[r, s]
    mx = mn
    for j in range(1, QK):
        v = x[r, s + j]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    return mn, mx


@njit(cache=True, nogil=True, inline="always")
def _inv(d):
    if d == np.float32(0.0):
        return np.float32(0.0)
    return np.float32(1.0) / d


@njit(cache=True, nogil=True)
def check_finite(x):
    """Number of non-finite (NaN, +inf, -inf) values in ``x``; 0 means it may be quantized."""
    n = 0
    for v in x.ravel():
        if not np.isfinite(v):
            n += 1
    return n


# ------------------------------------------------------------------------------ Q4_0
@njit(cache=True, nogil=True)
def quantize_q4_0(x):
    rows, cols = x.shape
    if cols % QK != 0:
        raise ValueError("Q4_0: row length must be a multiple of 32")
    nb = cols // QK
    out = np.empty((rows, nb * 18), dtype=np.uint8)
    for r in range(rows):
        for b in range(nb):
            s = b * QK
            o = b * 18
            d = _signed_absmax(x, r, s) / np.float32(-8.0)
            idd = _inv(d)
            _put_half(out, r, o, d)
            for j in range(QK // 2):
                q0 = min(_u8_cast(x[r, s + j] * idd + np.float32(8.5)), 15)
                q1 = min(_u8_cast(x[r, s + j + 16] * idd + np.float32(8.5)), 15)
                out[r, o + 2 + j] = np.uint8(q0 | (q1 << 4))
    return out


@njit(cache=True, nogil=True)
def dequantize_q4_0(packed, cols):
    rows = packed.shape[0]
    if cols % QK != 0 or packed.shape[1] != cols // QK * 18:
        raise ValueError("Q4_0: packed row size does not match cols")
    nb = cols // QK
    y = np.empty((rows, cols), dtype=np.float32)
    for r in range(rows):
        for b in range(nb):
            s = b * QK
            o = b * 18
            d = _get_half(packed, r, o)
            for j in range(QK // 2):
                c = np.int64(packed[r, o + 2 + j])
                y[r, s + j] = d * np.float32((c & 0xF) - 8)
                y[r, s + j + 16] = d * np.float32((c >> 4) - 8)
    return y


# ------------------------------------------------------------------------------ Q4_1
@njit(cache=True, nogil=True)
def quantize_q4_1(x):
    rows, cols = x.shape
    if cols % QK != 0:
        raise ValueError("Q4_1: row length must be a multiple of 32")
    nb = cols // QK
    out = np.empty((rows, nb * 20), dtype=np.uint8)
    for r in range(rows):
        for b in range(nb):
            s = b * QK
            o = b * 20
            mn, mx = _min_max(x, r, s)
            d = (mx - mn) / np.float32(15.0)
            idd = _inv(d)
            _put_half(out, r, o, d)
            _put_half(out, r, o + 2, mn)
            for j in range(QK // 2):
                q0 = min(_u8_cast((x[r, s + j] - mn) * idd + np.float32(0.5)), 15)
                q1 = min(_u8_cast((x[r, s + j + 16] - mn) * idd + np.float32(0.5)), 15)
                out[r, o + 4 + j] = np.uint8(q0 | (q1 << 4))
    return out


@njit(cache=True, nogil=True)
def dequantize_q4_1(packed, cols):
    rows = packed.shape[0]
    if cols % QK != 0 or packed.shape[1] != cols // QK * 20:
        raise ValueError("Q4_1: packed row size does not match cols")
    nb = cols // QK
    y = np.empty((rows, cols), dtype=np.float32)
    for r in range(rows):
        for b in range(nb):
            s = b * QK
            o = b * 20
            d = _get_half(packed, r, o)
            m = _get_half(packed, r, o + 2)
            for j in range(QK // 2):
                c = np.int64(packed[r, o + 4 + j])
                y[r, s + j] = d * np.float32(c & 0xF) + m
                y[r, s + j + 16] = d * np.float32(c >> 4) + m
    return y


# ------------------------------------------------------------------------------ Q5_0
@njit(cache=True, nogil=True)
def quantize_q5_0(x):
    rows, cols = x.shape
    if cols % QK != 0:
        raise ValueError("Q5_0: row length must be a multiple of 32")
    nb = cols // QK
    out = np.empty((rows, nb * 22), dtype=np.uint8)
    for r in range(rows):
        for b in range(nb):
            s = b * QK
            o = b * 22
            d = _signed_absmax(x, r, s) / np.float32(-16.0)
            idd = _inv(d)
            _put_half(out, r, o, d)
            qh = 0
            for j in range(QK // 2):
                q0 = min(_u8_cast(x[r, s + j] * idd + np.float32(16.5)), 31)
                q1 = min(_u8_cast(x[r, s + j + 16] * idd + np.float32(16.5)), 31)
                out[r, o + 6 + j] = np.uint8((q0 & 0xF) | ((q1 & 0xF) << 4))
                qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16))
            out[r, o + 2] = np.uint8(qh & 0xFF)
            out[r, o + 3] = np.uint8((qh >> 8) & 0xFF)
            out[r, o + 4] = np.uint8((qh >> 16) & 0xFF)
            out[r, o + 5] = np.uint8((qh >> 24) & 0xFF)
    return out


@njit(cache=True, nogil=True)
def dequantize_q5_0(packed, cols):
    rows = packed.shape[0]
    if cols % QK != 0 or packed.shape[1] != cols // QK * 22:
        raise ValueError("Q5_0: packed row size does not match cols")
    nb = cols // QK
    y = np.empty((rows, cols), dtype=np.float32)
    for r in range(rows):
        for b in range(nb):
            s = b * QK
            o = b * 22
            d = _get_half(packed, r, o)
            qh = (np.int64(packed[r, o + 2]) | (np.int64(packed[r, o + 3]) << 8)
                  | (np.int64(packed[r, o + 4]) << 16) | (np.int64(packed[r, o + 5]) << 24))
            for j in range(QK // 2):
                c = np.int64(packed[r, o + 6 + j])
                q0 = (c & 0xF) | (((qh >> j) & 1) << 4)
                q1 = (c >> 4) | (((qh >> (j + 16)) & 1) << 4)
                y[r, s + j] = d * np.float32(q0 - 16)
                y[r, s + j + 16] = d * np.float32(q1 - 16)
    return y


# ------------------------------------------------------------------------------ Q5_1
@njit(cache=True, nogil=True)
def quantize_q5_1(x):
    rows, cols = x.shape
    if cols % QK != 0:
        raise ValueError("Q5_1: row length must be a multiple of 32")
    nb = cols // QK
    out = np.empty((rows, nb * 24), dtype=np.uint8)
    for r in range(rows):
        for b in range(nb):
            s = b * QK
            o = b * 24
            mn, mx = _min_max(x, r, s)
            d = (mx - mn) / np.float32(31.0)
            idd = _inv(d)
            _put_half(out, r, o, d)
            _put_half(out, r, o + 2, mn)
            qh = 0
            for j in range(QK // 2):
                q0 = min(_u8_cast((x[r, s + j] - mn) * idd + np.float32(0.5)), 31)
                q1 = min(_u8_cast((x[r, s + j + 16] - mn) * idd + np.float32(0.5)), 31)
                out[r, o + 8 + j] = np.uint8((q0 & 0xF) | ((q1 & 0xF) << 4))
                qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16))
            out[r, o + 4] = np.uint8(qh & 0xFF)
            out[r, o + 5] = np.uint8((qh >> 8) & 0xFF)
            out[r, o + 6] = np.uint8((qh >> 16) & 0xFF)
            out[r, o + 7] = np.uint8((qh >> 24) & 0xFF)
    return out


@njit(cache=True, nogil=True)
def dequantize_q5_1(packed, cols):
    rows = packed.shape[0]
    if cols % QK != 0 or packed.shape[1] != cols // QK * 24:
        raise ValueError("Q5_1: packed row size does not match cols")
    nb = cols // QK
    y = np.empty((rows, cols), dtype=np.float32)
    for r in range(rows):
        for b in range(nb):
            s = b * QK
            o = b * 24
            d = _get_half(packed, r, o)
            m = _get_half(packed, r, o + 2)
            qh = (np.int64(packed[r, o + 4]) | (np.int64(packed[r, o + 5]) << 8)
                  | (np.int64(packed[r, o + 6]) << 16) | (np.int64(packed[r, o + 7]) << 24))
            for j in range(QK // 2):
                c = np.int64(packed[r, o + 8 + j])
                q0 = (c & 0xF) | (((qh >> j) & 1) << 4)
                q1 = (c >> 4) | (((qh >> (j + 16)) & 1) << 4)
                y[r, s + j] = d * np.float32(q0) + m
                y[r, s + j + 16] = d * np.float32(q1) + m
    return y


# ------------------------------------------------------------------------------ Q8_0
@njit(cache=True, nogil=True, inline="always")
def _roundf_i8(v):
    """numpy's ``np_roundf(v).astype(np.int8)`` byte: half away from zero, 0 for NaN/inf."""
    a = abs(v)
    if not a < np.float32(2147483648.0):     # NaN, inf, huge: numpy's cast gives 0
        return 0
    fl = np.floor(a)
    q = np.int64(fl) + np.int64(np.floor(np.float32(2.0) * (a - fl)))
    if v < np.float32(0.0):
        q = -q
    return q & 0xFF


@njit(cache=True, nogil=True)
def quantize_q8_0(x):
    rows, cols = x.shape
    if cols % QK != 0:
        raise ValueError("Q8_0: row length must be a multiple of 32")
    nb = cols // QK
    out = np.empty((rows, nb * 34), dtype=np.uint8)
    for r in range(rows):
        for b in range(nb):
            s = b * QK
            o = b * 34
            amax = np.float32(0.0)
            for j in range(QK):
                a = abs(x[r, s + j])
                if a > amax:
                    amax = a
            d = amax / np.float32(127.0)
            idd = _inv(d)
            _put_half(out, r, o, d)
            for j in range(QK):
                out[r, o + 2 + j] = np.uint8(_roundf_i8(x[r, s + j] * idd))
    return out


@njit(cache=True, nogil=True)
def dequantize_q8_0(packed, cols):
    rows = packed.shape[0]
    if cols % QK != 0 or packed.shape[1] != cols // QK * 34:
        raise ValueError("Q8_0: packed row size does not match cols")
    nb = cols // QK
    y = np.empty((rows, cols), dtype=np.float32)
    for r in range(rows):
        for b in range(nb):
            s = b * QK
            o = b * 34
            d = _get_half(packed, r, o)
            for j in range(QK):
                q = np.int64(packed[r, o + 2 + j])
                if q >= 128:
                    q -= 256
                y[r, s + j] = np.float32(q) * d
    return y


# name -> (quantize, dequantize, block size, block bytes)
LEGACY = {
    "Q4_0": (quantize_q4_0, dequantize_q4_0, QK, 18),
    "Q4_1": (quantize_q4_1, dequantize_q4_1, QK, 20),
    "Q5_0": (quantize_q5_0, dequantize_q5_0, QK, 22),
    "Q5_1": (quantize_q5_1, dequantize_q5_1, QK, 24),
    "Q8_0": (quantize_q8_0, dequantize_q8_0, QK, 34),
}
for _name, (_q, _dq, _qk, _nbytes) in LEGACY.items():
    assert (_qk, _nbytes) == LAYOUT[_name][:2], _name
