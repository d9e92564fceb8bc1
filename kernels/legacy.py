"""llama.cpp's legacy block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 in Numba.

Byte-identical to ``gguf.quants.quantize(x, GGMLQuantizationType.Q4_0)`` etc. (gguf's numpy port
of llama.cpp's ``quantize_row_*_ref``) and decoding bit-identical to ``gguf.quants.dequantize``.
``tests/test_legacy.py`` checks both on every weight matrix of the default model and on edge cases.

Every kernel takes one C-contiguous 2-D float32 array (rows x cols, cols a multiple of 32) or
its packed uint8 bytes, works block by block (a min/max sweep of the 32 values, then one
encoding pass, both in L1) with no temporaries, single-threaded, releasing the GIL. Speed notes:
min/max use four independent compare chains; the inner loops use a trip count LLVM cannot see
(``_opaque_qk``) so they are vectorized; large outputs are madvise()d for huge pages, as numpy
does. ``python -m workbench.bench_legacy`` compares against gguf's numpy.

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

import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from workbench.kernels.ggml_types import layout

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
# name -> (block size, block bytes, ((field, byte offset, bytes), ...)), from the one table
# (kernels/ggml_types.py); the kernels below take their sizes from it.
LAYOUT = {n: layout(n) for n in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")}
Q4_0_BYTES, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES = (LAYOUT[n][1] for n in LAYOUT)
assert all(LAYOUT[n][0] == QK for n in LAYOUT)


# ------------------------------------------------------------------------------ fp16 bits
# The one float32 <-> binary16 converter (numpy's astype, bit for bit): kernels/half.py.
from workbench.kernels.half import f16_bits_to_f32 as _f16_bits_to_f32  # noqa: E402
from workbench.kernels.half import f32_to_f16_bits as _f32_to_f16_bits  # noqa: E402


# ------------------------------------------------------------------------------ allocation
# numpy madvise()s every allocation of >= 4 MiB for transparent huge pages (Linux); Numba's
# np.empty does not, and the 4 KiB page faults then cost more than the decoding itself on the
# 47 MB word-embedding matrix. Same policy here (a hint only; results do not depend on it).
_HUGE_MIN = 1 << 22
_MADV_HUGEPAGE = 14

if sys.platform.startswith("linux"):
    @intrinsic
    def _madvise(typingctx, addr, length, advice):
        sig = types.int32(types.uintp, types.uintp, types.int32)

        def codegen(context, builder, signature, args):
            i8p = ir.IntType(8).as_pointer()
            fnty = ir.FunctionType(ir.IntType(32), [i8p, ir.IntType(64), ir.IntType(32)])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "madvise")
            return builder.call(fn, [builder.inttoptr(args[0], i8p), args[1], args[2]])
        return sig, codegen

    @njit(cache=True, nogil=True, inline="always")
    def _advise_huge(a):
        n = np.uintp(a.size * a.itemsize)
        if n >= np.uintp(_HUGE_MIN):
            p = np.uintp(a.ctypes.data)
            start = (p + np.uintp(4095)) & ~np.uintp(4095)
            _madvise(start, p + n - start, np.int32(_MADV_HUGEPAGE))
else:
    @njit(cache=True, nogil=True, inline="always")
    def _advise_huge(a):
        pass


@njit(cache=True, nogil=True)
def _empty_u8(rows, cols):
    a = np.empty((rows, cols), dtype=np.uint8)
    _advise_huge(a)
    return a


@njit(cache=True, nogil=True)
def _empty_f32(rows, cols):
    a = np.empty((rows, cols), dtype=np.float32)
    _advise_huge(a)
    return a


# ------------------------------------------------------------------------------ helpers
@njit(cache=True, nogil=True, inline="always")
def _u8_cast(t):
    """numpy's float32 -> uint8/int8 ``astype`` on x86-64: low byte of the int32 truncation,
    0 for NaN, +-inf and anything outside int32 (cvttss2si -> INT_MIN)."""
    if t >= np.float32(-2147483648.0) and t < np.float32(2147483648.0):
        return np.int32(t) & np.int32(0xFF)
    return np.int32(0)


@njit(cache=True, nogil=True, inline="always")
def _put_half(buf, o, f):
    h = _f32_to_f16_bits(f)
    buf[o] = np.uint8(h & 0xFF)
    buf[o + 1] = np.uint8(h >> 8)


@njit(cache=True, nogil=True, inline="always")
def _get_half(buf, o):
    return _f16_bits_to_f32(np.int64(buf[o]) | (np.int64(buf[o + 1]) << 8))


@njit(cache=True, nogil=True, inline="always")
def _min_max_seq(xr, s):
    """llama.cpp's sequential ``if (v < min) min = v; if (v > max) max = v;`` (strict compares:
    of equal values the first met wins, which only shows for +0 vs -0)."""
    mn = xr[s]
    mx = mn
    for j in range(1, QK):
        v = xr[s + j]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    return mn, mx


@njit(cache=True, nogil=True, inline="always")
def _min_max4(xr, s):
    """Block min and max values over four independent chains (short dependency chains); the
    values are exact, only the sign of a zero extreme may differ from ``_min_max_seq``."""
    n0 = xr[s]
    n1 = xr[s + 1]
    n2 = xr[s + 2]
    n3 = xr[s + 3]
    x0, x1, x2, x3 = n0, n1, n2, n3
    for j in range(4, QK, 4):
        v0 = xr[s + j]
        v1 = xr[s + j + 1]
        v2 = xr[s + j + 2]
        v3 = xr[s + j + 3]
        n0 = v0 if v0 < n0 else n0
        n1 = v1 if v1 < n1 else n1
        n2 = v2 if v2 < n2 else n2
        n3 = v3 if v3 < n3 else n3
        x0 = v0 if v0 > x0 else x0
        x1 = v1 if v1 > x1 else x1
        x2 = v2 if v2 > x2 else x2
        x3 = v3 if v3 > x3 else x3
    n0 = n1 if n1 < n0 else n0
    n2 = n3 if n3 < n2 else n2
    x0 = x1 if x1 > x0 else x0
    x2 = x3 if x3 > x2 else x2
    return (n2 if n2 < n0 else n0), (x2 if x2 > x0 else x0)


@njit(cache=True, nogil=True, inline="always")
def _min_max(xr, s):
    """Block min and max exactly as llama.cpp's sequential loop: the fast 4-chain pass, redone
    sequentially in the rare block whose min or max is a zero (to pick the first zero met)."""
    mn, mx = _min_max4(xr, s)
    if mn == np.float32(0.0) or mx == np.float32(0.0):
        return _min_max_seq(xr, s)
    return mn, mx


@njit(cache=True, nogil=True, inline="always")
def _signed_absmax(xr, s):
    """x[s + argmax |x|] over one block: the FIRST element of largest magnitude (llama.cpp's
    strict ``amax < fabsf(v)`` loop, and numpy's argmax). Unless max == -min (a +-tie, or an
    all-zero block) that is simply the min or the max. An all-zero block gives +0 as in the C,
    which starts from ``max = 0.0f`` (so d = 0/-8 = -0); gguf's numpy takes the block's first
    element, and a block of zeros that starts with -0.0 gets d = +0 there (the only difference)."""
    mn, mx = _min_max4(xr, s)
    if mx == np.float32(0.0) and mn == np.float32(0.0):
        return np.float32(0.0)
    if mx == -mn:
        for j in range(QK):
            v = xr[s + j]
            if abs(v) == mx:
                return v
    return mx if mx > -mn else mn


@njit(cache=True, nogil=True, inline="always")
def _absmax(xr, s):
    """max |x| over one block (exact, so four independent chains are fine)."""
    m0 = abs(xr[s])
    m1 = abs(xr[s + 1])
    m2 = abs(xr[s + 2])
    m3 = abs(xr[s + 3])
    for j in range(4, QK, 4):
        m0 = max(m0, abs(xr[s + j]))
        m1 = max(m1, abs(xr[s + j + 1]))
        m2 = max(m2, abs(xr[s + j + 2]))
        m3 = max(m3, abs(xr[s + j + 3]))
    return max(max(m0, m1), max(m2, m3))


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


@njit(cache=True, nogil=True, inline="always")
def _opaque_qk(cols, nb):
    """32, computed as cols // nb so that LLVM cannot see the constant: an inner loop with a
    compile-time trip count of 32 or 16 gets fully unrolled and then left scalar (the SLP
    vectorizer cannot prove that the packed bytes and the float32 rows do not alias), while a
    loop with a runtime trip count is vectorized behind a runtime alias check (~3-4x faster)."""
    return cols // nb if nb > 0 else QK


# ------------------------------------------------------------------------------ Q4_0
@njit(cache=True, nogil=True)
def quantize_q4_0(x):
    rows, cols = x.shape
    if cols % QK != 0:
        raise ValueError("Q4_0: row length must be a multiple of 32")
    nb = cols // QK
    qk = _opaque_qk(cols, nb)
    hk = qk // 2
    out = _empty_u8(rows, nb * Q4_0_BYTES)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for b in range(nb):
            s = b * QK
            o = b * Q4_0_BYTES
            d = _signed_absmax(xr, s) / np.float32(-8.0)
            idd = _inv(d)
            _put_half(orow, o, d)
            for j in range(hk):
                q0 = min(_u8_cast(xr[s + j] * idd + np.float32(8.5)), np.int32(15))
                q1 = min(_u8_cast(xr[s + j + 16] * idd + np.float32(8.5)), np.int32(15))
                orow[o + 2 + j] = np.uint8(q0 | (q1 << 4))
    return out


@njit(cache=True, nogil=True)
def dequantize_q4_0(packed, cols):
    rows = packed.shape[0]
    if cols % QK != 0 or packed.shape[1] != cols // QK * Q4_0_BYTES:
        raise ValueError("Q4_0: packed row size does not match cols")
    nb = cols // QK
    qk = _opaque_qk(cols, nb)
    hk = qk // 2
    y = _empty_f32(rows, cols)
    for r in range(rows):
        pr = packed[r]
        yr = y[r]
        for b in range(nb):
            s = b * QK
            o = b * Q4_0_BYTES
            d = _get_half(pr, o)
            for j in range(hk):
                yr[s + j] = d * np.float32(np.int32(pr[o + 2 + j] & np.uint8(0xF)) - np.int32(8))
            for j in range(hk):
                yr[s + 16 + j] = d * np.float32(np.int32(pr[o + 2 + j] >> np.uint8(4)) - np.int32(8))
    return y


# ------------------------------------------------------------------------------ Q4_1
@njit(cache=True, nogil=True)
def quantize_q4_1(x):
    rows, cols = x.shape
    if cols % QK != 0:
        raise ValueError("Q4_1: row length must be a multiple of 32")
    nb = cols // QK
    qk = _opaque_qk(cols, nb)
    hk = qk // 2
    out = _empty_u8(rows, nb * Q4_1_BYTES)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for b in range(nb):
            s = b * QK
            o = b * Q4_1_BYTES
            mn, mx = _min_max(xr, s)
            d = (mx - mn) / np.float32(15.0)
            idd = _inv(d)
            _put_half(orow, o, d)
            _put_half(orow, o + 2, mn)
            for j in range(hk):
                q0 = min(_u8_cast((xr[s + j] - mn) * idd + np.float32(0.5)), np.int32(15))
                q1 = min(_u8_cast((xr[s + j + 16] - mn) * idd + np.float32(0.5)), np.int32(15))
                orow[o + 4 + j] = np.uint8(q0 | (q1 << 4))
    return out


@njit(cache=True, nogil=True)
def dequantize_q4_1(packed, cols):
    rows = packed.shape[0]
    if cols % QK != 0 or packed.shape[1] != cols // QK * Q4_1_BYTES:
        raise ValueError("Q4_1: packed row size does not match cols")
    nb = cols // QK
    qk = _opaque_qk(cols, nb)
    hk = qk // 2
    y = _empty_f32(rows, cols)
    for r in range(rows):
        pr = packed[r]
        yr = y[r]
        for b in range(nb):
            s = b * QK
            o = b * Q4_1_BYTES
            d = _get_half(pr, o)
            m = _get_half(pr, o + 2)
            for j in range(hk):
                yr[s + j] = d * np.float32(pr[o + 4 + j] & np.uint8(0xF)) + m
            for j in range(hk):
                yr[s + 16 + j] = d * np.float32(pr[o + 4 + j] >> np.uint8(4)) + m
    return y


# ------------------------------------------------------------------------------ Q5_0
@njit(cache=True, nogil=True, inline="always")
def _put_u32(buf, o, v):
    buf[o] = np.uint8(v & 0xFF)
    buf[o + 1] = np.uint8((v >> 8) & 0xFF)
    buf[o + 2] = np.uint8((v >> 16) & 0xFF)
    buf[o + 3] = np.uint8((v >> 24) & 0xFF)


@njit(cache=True, nogil=True, inline="always")
def _get_u32(buf, o):
    return (np.uint32(buf[o]) | (np.uint32(buf[o + 1]) << np.uint32(8))
            | (np.uint32(buf[o + 2]) << np.uint32(16)) | (np.uint32(buf[o + 3]) << np.uint32(24)))


@njit(cache=True, nogil=True)
def quantize_q5_0(x):
    rows, cols = x.shape
    if cols % QK != 0:
        raise ValueError("Q5_0: row length must be a multiple of 32")
    nb = cols // QK
    qk = _opaque_qk(cols, nb)
    hk = qk // 2
    out = _empty_u8(rows, nb * Q5_0_BYTES)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for b in range(nb):
            s = b * QK
            o = b * Q5_0_BYTES
            d = _signed_absmax(xr, s) / np.float32(-16.0)
            idd = _inv(d)
            _put_half(orow, o, d)
            qh = np.uint32(0)
            for j in range(hk):
                q0 = min(_u8_cast(xr[s + j] * idd + np.float32(16.5)), np.int32(31))
                q1 = min(_u8_cast(xr[s + j + 16] * idd + np.float32(16.5)), np.int32(31))
                orow[o + 6 + j] = np.uint8((q0 & 0xF) | ((q1 & 0xF) << 4))
                qh |= (np.uint32(q0 >> 4) << np.uint32(j)) | (np.uint32(q1 >> 4) << np.uint32(j + 16))
            _put_u32(orow, o + 2, qh)
    return out


@njit(cache=True, nogil=True)
def dequantize_q5_0(packed, cols):
    rows = packed.shape[0]
    if cols % QK != 0 or packed.shape[1] != cols // QK * Q5_0_BYTES:
        raise ValueError("Q5_0: packed row size does not match cols")
    nb = cols // QK
    qk = _opaque_qk(cols, nb)
    hk = qk // 2
    y = _empty_f32(rows, cols)
    for r in range(rows):
        pr = packed[r]
        yr = y[r]
        for b in range(nb):
            s = b * QK
            o = b * Q5_0_BYTES
            d = _get_half(pr, o)
            qh = _get_u32(pr, o + 2)
            for j in range(hk):
                q = np.int32(pr[o + 6 + j] & np.uint8(0xF)) | np.int32(((qh >> np.uint32(j)) & np.uint32(1)) << np.uint32(4))
                yr[s + j] = d * np.float32(q - np.int32(16))
            for j in range(hk):
                q = np.int32(pr[o + 6 + j] >> np.uint8(4)) | np.int32(((qh >> np.uint32(j + 16)) & np.uint32(1)) << np.uint32(4))
                yr[s + 16 + j] = d * np.float32(q - np.int32(16))
    return y


# ------------------------------------------------------------------------------ Q5_1
@njit(cache=True, nogil=True)
def quantize_q5_1(x):
    rows, cols = x.shape
    if cols % QK != 0:
        raise ValueError("Q5_1: row length must be a multiple of 32")
    nb = cols // QK
    qk = _opaque_qk(cols, nb)
    hk = qk // 2
    out = _empty_u8(rows, nb * Q5_1_BYTES)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for b in range(nb):
            s = b * QK
            o = b * Q5_1_BYTES
            mn, mx = _min_max(xr, s)
            d = (mx - mn) / np.float32(31.0)
            idd = _inv(d)
            _put_half(orow, o, d)
            _put_half(orow, o + 2, mn)
            qh = np.uint32(0)
            for j in range(hk):
                q0 = min(_u8_cast((xr[s + j] - mn) * idd + np.float32(0.5)), np.int32(31))
                q1 = min(_u8_cast((xr[s + j + 16] - mn) * idd + np.float32(0.5)), np.int32(31))
                orow[o + 8 + j] = np.uint8((q0 & 0xF) | ((q1 & 0xF) << 4))
                qh |= (np.uint32(q0 >> 4) << np.uint32(j)) | (np.uint32(q1 >> 4) << np.uint32(j + 16))
            _put_u32(orow, o + 4, qh)
    return out


@njit(cache=True, nogil=True)
def dequantize_q5_1(packed, cols):
    rows = packed.shape[0]
    if cols % QK != 0 or packed.shape[1] != cols // QK * Q5_1_BYTES:
        raise ValueError("Q5_1: packed row size does not match cols")
    nb = cols // QK
    qk = _opaque_qk(cols, nb)
    hk = qk // 2
    y = _empty_f32(rows, cols)
    for r in range(rows):
        pr = packed[r]
        yr = y[r]
        for b in range(nb):
            s = b * QK
            o = b * Q5_1_BYTES
            d = _get_half(pr, o)
            m = _get_half(pr, o + 2)
            qh = _get_u32(pr, o + 4)
            for j in range(hk):
                q = np.int32(pr[o + 8 + j] & np.uint8(0xF)) | np.int32(((qh >> np.uint32(j)) & np.uint32(1)) << np.uint32(4))
                yr[s + j] = d * np.float32(q) + m
            for j in range(hk):
                q = np.int32(pr[o + 8 + j] >> np.uint8(4)) | np.int32(((qh >> np.uint32(j + 16)) & np.uint32(1)) << np.uint32(4))
                yr[s + 16 + j] = d * np.float32(q) + m
    return y


# ------------------------------------------------------------------------------ Q8_0
@njit(cache=True, nogil=True, inline="always")
def _roundf_i8(v):
    """The byte of numpy's ``np_roundf(v).astype(np.int8)``: round half away from zero
    (``floor(a) + floor(2*(a - floor(a)))`` is exact), 0 for NaN/inf (numpy's cast)."""
    a = abs(v)
    fl = np.floor(a)
    q = np.int32(fl) + np.int32(np.floor(np.float32(2.0) * (a - fl)))
    q = -q if v < np.float32(0.0) else q
    return q & np.int32(0xFF) if a < np.float32(2147483648.0) else np.int32(0)


@njit(cache=True, nogil=True)
def quantize_q8_0(x):
    rows, cols = x.shape
    if cols % QK != 0:
        raise ValueError("Q8_0: row length must be a multiple of 32")
    nb = cols // QK
    qk = _opaque_qk(cols, nb)
    out = _empty_u8(rows, nb * Q8_0_BYTES)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for b in range(nb):
            s = b * QK
            o = b * Q8_0_BYTES
            d = _absmax(xr, s) / np.float32(127.0)
            idd = _inv(d)
            _put_half(orow, o, d)
            for j in range(qk):
                orow[o + 2 + j] = np.uint8(_roundf_i8(xr[s + j] * idd))
    return out


@njit(cache=True, nogil=True)
def dequantize_q8_0(packed, cols):
    rows = packed.shape[0]
    if cols % QK != 0 or packed.shape[1] != cols // QK * Q8_0_BYTES:
        raise ValueError("Q8_0: packed row size does not match cols")
    nb = cols // QK
    qk = _opaque_qk(cols, nb)
    y = _empty_f32(rows, cols)
    for r in range(rows):
        pr = packed[r]
        yr = y[r]
        for b in range(nb):
            s = b * QK
            o = b * Q8_0_BYTES
            d = _get_half(pr, o)
            for j in range(qk):
                yr[s + j] = np.float32(np.int8(pr[o + 2 + j])) * d
    return y


# name -> (quantize, dequantize, block size, block bytes)
LEGACY = {
    "Q4_0": (quantize_q4_0, dequantize_q4_0, *LAYOUT["Q4_0"][:2]),
    "Q4_1": (quantize_q4_1, dequantize_q4_1, *LAYOUT["Q4_1"][:2]),
    "Q5_0": (quantize_q5_0, dequantize_q5_0, *LAYOUT["Q5_0"][:2]),
    "Q5_1": (quantize_q5_1, dequantize_q5_1, *LAYOUT["Q5_1"][:2]),
    "Q8_0": (quantize_q8_0, dequantize_q8_0, *LAYOUT["Q8_0"][:2]),
}
