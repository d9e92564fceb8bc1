"""llama.cpp's "type-0" k-quants Q3_K and Q6_K (x ~ d*q), and the importance-matrix path of the
legacy Q4_0 / Q5_0, in Numba.

Byte-identical to llama.cpp's ``ggml_quantize_chunk`` (what ``llama-quantize`` runs) with and
without an imatrix; decoding bit-identical to ``gguf.quants.dequantize``.
``tests/test_kquant_type0.py`` checks both against the real library (``workbench.oracle``) on
every applicable weight matrix of the default model and on edge cases.

Interface (every quantizer works row by row, single-threaded, releasing the GIL; the caller
splits rows across threads):

* ``quantize_q3_k(x, qw)`` / ``quantize_q6_k(x, qw)``: ``x`` C-contiguous float32 [rows, cols]
  (cols a multiple of 256), ``qw`` float32[cols] (the per-column importance llama.cpp receives
  as ``quant_weights``) or float32[0] = no imatrix. Returns uint8[rows, cols/256*block_bytes].
* ``dequantize_q3_k(packed, cols)`` / ``dequantize_q6_k(packed, cols)`` -> float32[rows, cols].
* ``quantize_q4_0_imatrix(x, qw)`` / ``quantize_q5_0_imatrix(x, qw)``: the bytes of
  ``quantize_q4_0`` / ``quantize_q5_0`` with ``quant_weights`` (an empty ``qw`` falls back to the
  reference quantizer of ``kernels/legacy.py``, as the C does, with the C's sign of d on
  all-zero blocks, see below). Decode with ``legacy.LEGACY``.
  (Q8_0 ignores the imatrix in llama.cpp: ``legacy.quantize_q8_0`` is already exact.)

Block layouts (ggml-common.h; ggml_half = little-endian fp16)::

    typedef struct {                 // Q3_K: 16 sub-blocks of 16 weights, 110 bytes
        uint8_t hmask[32];           // bit k of hmask[l] = 3rd bit of weight 32*k + l
        uint8_t qs[64];              // low 2 bits: weight 128*h + 32*k + l at bits 2k of qs[32*h + l]
        uint8_t scales[12];          // 16 x 6-bit sc (biased by 32): low nibble of sub-block j in
                                     //   scales[j % 8] >> 4*(j / 8), top 2 bits in
                                     //   scales[8 + j % 4] >> 2*(j / 4)
        ggml_half d;                 // x = d * (sc_j - 32) * (q - 4), q = low2 | hbit << 2 in [0, 7]
    } block_q3_K;

    typedef struct {                 // Q6_K: 16 sub-blocks of 16 weights, 210 bytes
        uint8_t ql[128];             // low nibbles: weight 128*h + 32*k + l in ql[64*h + l + 32*(k&1)]
                                     //   at bit 4*(k>>1)
        uint8_t qh[64];              // top 2 bits: qh[32*h + l] at bit 2k
        int8_t  scales[16];          // one signed 8-bit scale per sub-block
        ggml_half d;                 // x = d * sc_j * (q - 32), q in [0, 63]
    } block_q6_K;

Algorithms (ggml-quants.c; all arithmetic float32, evaluated in exactly the C order, no FMA,
because llama.cpp's libggml-base is compiled without it):

* ``make_qx_quants(n, nmax, x, L, rmse_type=1, w)``: the signed element of largest |x| (first
  one on ties, strict ``>``) sets ``iscale = -nmax/max``; levels ``l = clamp(nearest_int(iscale*x),
  -nmax, nmax-1)``; weighted least-squares scale ``sumlx/suml2`` with ``sumlx += (w*x)*l``,
  ``suml2 += (w*l)*l``. Then 18 more grids ``iscale = -(nmax + 0.1f*is)/max``, is = -9..9 (not 0),
  each accepted when ``sumlx^2 > best*suml2`` (best = scale*sumlx of the last accepted grid).
  w = x*x when no imatrix (Q6_K ref, Q3_K ref is different, see below).
  The 19 grids are independent until the acceptance test, so we evaluate all of them in one
  sweep over the elements (candidate index innermost, so it vectorizes; one accumulator pair
  per candidate: the per-candidate summation order is unchanged, so the sums are
  bit-identical) and then replay the acceptance tests sequentially. The C re-rounds the levels
  of each accepted grid; we round once, with the iscale of the last accepted grid, which gives
  the same levels.
* ``make_q3_quants(16, 4, x, L, true)`` (Q3_K without imatrix): start as above with w = x*x,
  then up to 5 sweeps of coordinate descent: remove element i from the sums, propose
  ``nearest_int((x*sl2)/slx)``, keep it when ``(slx*slx)*suml2 > (sumlx*sumlx)*sl2``. Returns
  ``sumlx/suml2``. Inherently sequential.
* ``nearest_int(f)``: ``f + 12582912.f`` (1.5*2^23), low 23 mantissa bits minus 2^22. That is
  round-half-even for |f| <= 4194303; beyond (the C only asserts, compiled out) it returns
  garbage that the callers then clamp -- reproduced bit for bit, since the quotients
  ``x/d`` and ``x*sl2/slx`` can leave the range (tiny fp16 d, tiny slx). inf -> -4194304,
  NaN (the default NaN has an empty payload) -> 0.
* Q3_K ref: per sub-block ``make_q3_quants``; ``max_scale`` = signed sub-block scale of largest
  magnitude; ``iscale = -32/max_scale``; ``l = (int8_t)nearest_int(iscale*s)`` (the int8
  truncation is C's), clamped to [-32, 31], +32; ``d = fp16(1/iscale)`` (the reciprocal of the
  float iscale, not ``max_scale/-32``). All-zero super-block (max_scale == 0): scales bytes 0 and
  d = 0, i.e. every sc reads back as -32.
  Q3_K imatrix: ``sigma2 = 2*sum(x^2)/256`` per super-block, ``w = qw*sqrtf(sigma2 + x*x)``,
  sub-block scales from ``make_qx_quants(16, 4, x, L, 1, w)``; the 16 scales themselves by
  ``make_qx_quants(16, 32, scales, Ls, 1, sw)`` (sw = per-sub-block sum of w), d = fp16 of its
  return value.
  Both: re-quantize with the STORED values, ``dl = fp16_to_f32(d) * (Ls - 32)``; if dl == 0 (+-0;
  NaN is not) the sub-block keeps the levels of the first pass (an all-zero sub-block keeps
  level 0, decoding as -4*dl), else ``l = clamp(nearest_int(x/dl), -4, 3) + 4`` (a true
  division, not a multiplication by a reciprocal).
* Q6_K: per sub-block ``make_qx_quants(16, 32, x, L, 1, qw or NULL)`` (the imatrix path uses the
  raw qw, no sigma2 term); ``max_scale`` as above; if its magnitude < GROUP_MAX_EPS (1e-15) the
  whole 210-byte block is 0. Else ``iscale = -128/max_scale``, ``d = fp16(1/iscale)``,
  ``sc = (int8_t)MIN(127, nearest_int(iscale*s))``; re-quantize with ``fp16_to_f32(d)*sc``
  (skip when 0), ``l = clamp(nearest_int(x/dl), -32, 31) + 32``.
* Q4_0 / Q5_0 imatrix: ``sigma2 = sum(x^2)/n_per_row`` over the WHOLE ROW (sequential sum),
  ``w = qw*sqrtf(sigma2 + x*x)``, ``d = make_qx_quants(32, 8 | 16, x, L, 1, w)``, stored as fp16,
  levels L (already offset by nmax) packed as in the reference layout.
* Q4_0 / Q5_0 without imatrix: ``quantize_row_q{4,5}_0_ref``, i.e. legacy.py's kernels, except
  for an all-zero block whose first element is -0.0: the C's ``max`` stays +0.0f, so d = -0
  (fp16 0x8000), where gguf (which legacy.py follows) writes +0. Patched after the fact.
* fp16: ggml's software ``GGML_FP32_TO_FP16`` is round-to-nearest-even like numpy's cast, except
  for NaN, which it writes as ``sign | 0x7E00`` (numpy keeps the payload; the same for the empty
  payload of every NaN these kernels can produce).

Numba notes: float32 op int64 and float32 op Python float both promote to float64 in Numba,
so every integer is converted with ``np.float32`` and every literal is a module-level
``np.float32`` constant; fastmath stays off (no reassociation, no contraction into FMAs);
``error_model="numpy"`` so that x/0 is IEEE inf/NaN as in C instead of a ZeroDivisionError
(1/iscale and x/d do divide by zero on huge inputs). Scratch arrays are allocated once per call.

Non-finite input is out of scope (the C is undefined there); see ``legacy.check_finite``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from workbench.kernels.ggml_common import get_half as _get_half
from workbench.kernels.ggml_types import QK_K, block_bytes, layout
from workbench.kernels.ggml_common import ggml_fp16_bits as _fp16_bits
from workbench.kernels.ggml_common import nearest_int as _nearest_int
from workbench.kernels.legacy import (
    _empty_f32,
    _empty_u8,
    _f16_bits_to_f32,
    quantize_q4_0,
    quantize_q5_0,
)

QK4_0 = 32

# name -> (block size, block bytes, ((field, byte offset, bytes), ...)), from the one table
LAYOUT = {n: layout(n) for n in ("Q3_K", "Q6_K")}
Q3_K_BYTES, Q6_K_BYTES = LAYOUT["Q3_K"][1], LAYOUT["Q6_K"][1]
Q4_0_BYTES, Q5_0_BYTES = block_bytes("Q4_0"), block_bytes("Q5_0")

# float32 literals (a bare Python float would promote the expression to float64)
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F2 = np.float32(2.0)
_F0_1 = np.float32(0.1)
_FM32 = np.float32(-32.0)
_FM128 = np.float32(-128.0)
_EPS = np.float32(1e-15)             # GROUP_MAX_EPS
_FQK_K = np.float32(QK_K)

_NCP = 24                            # _NC rounded up to whole vectors
_NC = 19                             # make_qx_quants grids: -nmax/max, then is = -9..-1, 1..9


# ------------------------------------------------------------------------------ helpers
@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _clamp(l, lo, hi):
    """C's MAX(lo, MIN(hi, l))."""
    return max(lo, min(hi, l))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _i8(v):
    """C's conversion of an int to int8_t (two's complement wrap-around)."""
    return ((v + 128) & 0xFF) - 128


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _put_half(buf, o, h):
    buf[o] = np.uint8(h & 0xFF)
    buf[o + 1] = np.uint8((h >> 8) & 0xFF)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _signed_absmax(x, xo, n):
    """make_qx_quants' ``if (fabsf(x) > amax) { amax = fabsf(x); max = x; }``: returns
    (amax, max) -- the first element of largest magnitude, with its sign."""
    amax = _F0
    mx = _F0
    for i in range(n):
        v = x[xo + i]
        a = abs(v)
        if a > amax:
            amax = a
            mx = v
    return amax, mx


# make_qx_quants scratch (float32, 64-byte aligned so that the vector loads/stores of the
# per-candidate accumulators never straddle cache lines):
_NUM = 0       # [0:_NCP]  numerators of the candidate iscales: -nmax, -(nmax + 0.1f*is)
_ISC = 32      # [32:..]   iscale of each candidate = numerator / max
_SLX = 64      # [64:..]   sum (w*x)*l per candidate
_SL2 = 96      # [96:..]   sum (w*l)*l per candidate
_SCRATCH = 128


@njit(cache=True, nogil=True, error_model="numpy")
def _qx_scratch(nmax):
    """Aligned make_qx_quants scratch for one nmax; the numerators are computed here once, in
    C's float32 order ``-(nmax + 0.1f*is)`` (then divided by max per block, like the C).
    Lanes _NC.._NCP are padding (numerator 0 -> iscale 0 -> level 0 -> sums 0, never taken)."""
    raw = np.zeros(_SCRATCH + 16, dtype=np.float32)
    off = ((64 - (raw.ctypes.data & 63)) & 63) // 4
    S = raw[off:off + _SCRATCH]
    fn = np.float32(nmax)
    S[_NUM] = np.float32(-nmax)                  # C: -nmax / max (int converted, then divided)
    for c in range(1, _NC):
        s = c - 10 if c < 10 else c - 9          # is = -9..-1, 1..9
        S[_NUM + c] = -(fn + _F0_1 * np.float32(s))
    return S


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _make_qx_quants(x, xo, n, nmax, w, wo, L, lo, S):
    """make_qx_quants(n, nmax, x + xo, L + lo, rmse_type=1, w + wo) -> scale (float32).

    L[lo:lo+n] receives the levels offset by nmax (0 .. 2*nmax-1); ``S`` is ``_qx_scratch(nmax)``.
    """
    amax, mx = _signed_absmax(x, xo, n)
    if amax < _EPS:                              # all zero
        for i in range(n):
            L[lo + i] = 0
        return _F0
    for c in range(_NCP):
        S[_ISC + c] = S[_NUM + c] / mx
        S[_SLX + c] = _F0
        S[_SL2 + c] = _F0
    # All candidate grids in one sweep over the elements; each candidate's sums accumulate in
    # element order, as in the C. Here |iscale*x| <= nmax + 0.9 (|x| <= |max|), where
    # nearest_int is exactly rint (half to even) and the clamp can be done in float; a level 0
    # may come out as -0.0, which changes no sum (they start at +0, and +0 + -0 = +0). Only a
    # non-finite x (Q3_K's scales of a super-block whose x*x overflowed) gives a NaN level
    # where the C gets 0, and its term (w*x)*l is the same default NaN in both then.
    lo_f = np.float32(-nmax)
    hi_f = np.float32(nmax - 1)
    for i in range(n):
        xi = x[xo + i]
        wi = w[wo + i]
        wx = wi * xi                             # C: w*x[i]*l = (w*x)*l
        for c in range(_NCP):
            fl = min(max(np.rint(S[_ISC + c] * xi), lo_f), hi_f)
            S[_SLX + c] += wx * fl
            S[_SL2 + c] += wi * fl * fl          # C: w*l*l = (w*l)*l
    # replay the C's sequential acceptance tests
    sumlx = S[_SLX]
    suml2 = S[_SL2]
    scale = sumlx / suml2 if suml2 != _F0 else _F0   # `suml2 ? ... : 0` (NaN is truthy)
    best = scale * sumlx
    bc = 0
    for c in range(1, _NC):
        sumlx = S[_SLX + c]
        suml2 = S[_SL2 + c]
        if suml2 > _F0 and sumlx * sumlx > best * suml2:
            scale = sumlx / suml2
            best = scale * sumlx
            bc = c
    iscale = S[_ISC + bc]
    for i in range(n):
        L[lo + i] = nmax + _clamp(_nearest_int(iscale * x[xo + i]), -nmax, nmax - 1)
    return scale


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _make_q3_quants(x, xo, L, lo):
    """make_q3_quants(16, 4, x + xo, L + lo, do_rmse=true) -> scale; L gets levels 0..7."""
    n = 16
    nmax = 4
    amax, mx = _signed_absmax(x, xo, n)
    if amax < _EPS:
        for i in range(n):
            L[lo + i] = 0
        return _F0
    iscale = np.float32(-nmax) / mx
    sumlx = _F0
    suml2 = _F0
    for i in range(n):
        xi = x[xo + i]
        l = _clamp(_nearest_int(iscale * xi), -nmax, nmax - 1)
        L[lo + i] = l
        w = xi * xi
        fl = np.float32(l)
        sumlx += w * xi * fl
        suml2 += w * fl * fl
    for _itry in range(5):
        n_changed = 0
        for i in range(n):
            xi = x[xo + i]
            w = xi * xi
            li = np.float32(L[lo + i])
            slx = sumlx - w * xi * li
            if slx > _F0:
                sl2 = suml2 - w * li * li
                new_l = _clamp(_nearest_int(xi * sl2 / slx), -nmax, nmax - 1)
                if new_l != L[lo + i]:
                    fl = np.float32(new_l)
                    slx += w * xi * fl
                    sl2 += w * fl * fl
                    if sl2 > _F0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[lo + i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[lo + i] += nmax
    return sumlx / suml2 if suml2 > _F0 else _F0


# ------------------------------------------------------------------------------ Q3_K
@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _q3k_requant_pack(xr, s, L, Ls, dbits, orow, o):
    """Shared tail of quantize_row_q3_K_ref / _impl: scales bytes from Ls (0..63, sc + 32),
    d, re-quantization with the stored d*sc, hmask and qs packing."""
    for k in range(12):
        orow[o + 96 + k] = 0
    for j in range(16):
        l = Ls[j]
        if j < 8:
            orow[o + 96 + j] = np.uint8(l & 0xF)
        else:
            orow[o + 96 + j - 8] |= np.uint8((l & 0xF) << 4)
        orow[o + 96 + 8 + j % 4] |= np.uint8((l >> 4) << (2 * (j // 4)))
    _put_half(orow, o + 108, dbits)
    dall = _f16_bits_to_f32(dbits)
    for j in range(16):
        d = dall * np.float32(Ls[j] - 32)
        if d == _F0:
            continue                             # keeps the first-pass levels
        for ii in range(16):
            l = _clamp(_nearest_int(xr[s + 16 * j + ii] / d), -4, 3)
            L[16 * j + ii] = l + 4
    # hmask: bit k of hmask[l] = (L[32k + l] > 3); qs: 2 low bits, 4 per byte
    for l in range(32):
        hm = 0
        for k in range(8):
            if L[32 * k + l] > 3:
                hm |= 1 << k
        orow[o + l] = np.uint8(hm)
    for h in range(2):
        for l in range(32):
            e = 128 * h + l
            orow[o + 32 + 32 * h + l] = np.uint8((L[e] & 3) | ((L[e + 32] & 3) << 2)
                                                 | ((L[e + 64] & 3) << 4) | ((L[e + 96] & 3) << 6))


@njit(cache=True, nogil=True, error_model="numpy")
def quantize_q3_k(x, qw):
    rows, cols = x.shape
    if cols % QK_K != 0:
        raise ValueError("Q3_K: row length must be a multiple of 256")
    use_qw = qw.shape[0] > 0
    if use_qw and qw.shape[0] != cols:
        raise ValueError("Q3_K: imatrix length must equal the row length")
    nb = cols // QK_K
    out = _empty_u8(rows, nb * Q3_K_BYTES)
    L = np.zeros(QK_K, dtype=np.int64)
    Ls = np.zeros(16, dtype=np.int64)
    scales = np.zeros(16, dtype=np.float32)
    weight = np.zeros(QK_K, dtype=np.float32)
    sw = np.zeros(16, dtype=np.float32)
    S4 = _qx_scratch(4)
    S32 = _qx_scratch(32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for i in range(nb):
            s = i * QK_K
            o = i * Q3_K_BYTES
            if use_qw:
                # quantize_row_q3_K_impl
                sumx2 = _F0
                for j in range(QK_K):
                    sumx2 += xr[s + j] * xr[s + j]
                sigma2 = _F2 * sumx2 / _FQK_K
                for j in range(QK_K):
                    v = xr[s + j]
                    weight[j] = qw[s + j] * np.sqrt(sigma2 + v * v)
                for j in range(16):
                    sumw = _F0
                    for l in range(16):
                        sumw += weight[16 * j + l]
                    sw[j] = sumw
                    scales[j] = _make_qx_quants(xr, s + 16 * j, 16, 4, weight, 16 * j, L, 16 * j, S4)
                d_block = _make_qx_quants(scales, 0, 16, 32, sw, 0, Ls, 0, S32)
                dbits = _fp16_bits(d_block)
            else:
                # quantize_row_q3_K_ref
                max_scale = _F0
                amax = _F0
                for j in range(16):
                    sj = _make_q3_quants(xr, s + 16 * j, L, 16 * j)
                    scales[j] = sj
                    a = abs(sj)
                    if a > amax:
                        amax = a
                        max_scale = sj
                if max_scale != _F0:
                    iscale = _FM32 / max_scale
                    for j in range(16):
                        Ls[j] = _clamp(_i8(_nearest_int(iscale * scales[j])), -32, 31) + 32
                    dbits = _fp16_bits(_F1 / iscale)
                else:
                    for j in range(16):
                        Ls[j] = 0
                    dbits = 0
            _q3k_requant_pack(xr, s, L, Ls, dbits, orow, o)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def dequantize_q3_k(packed, cols):
    rows = packed.shape[0]
    if cols % QK_K != 0 or packed.shape[1] != cols // QK_K * Q3_K_BYTES:
        raise ValueError("Q3_K: packed row size does not match cols")
    nb = cols // QK_K
    y = _empty_f32(rows, cols)
    for r in range(rows):
        pr = packed[r]
        yr = y[r]
        for i in range(nb):
            o = i * Q3_K_BYTES
            s = i * QK_K
            dall = _get_half(pr, o + 108)
            # as dequantize_row_q3_K: weight 128h + 32k + l has its low 2 bits at bits 2k of
            # qs[32h + l] and its high bit at bit 4h + k of hmask[l] (set: q - 0, clear: q - 4);
            # y = (d * (sc - 32)) * q, the product d*sc rounded first (gguf does the same)
            for h in range(2):
                for k in range(4):
                    m = 4 * h + k
                    for half in range(2):
                        j = 8 * h + 2 * k + half     # sub-block of weights 16j .. 16j + 15
                        lo = (np.int32(pr[o + 96 + j % 8]) >> (4 * (j // 8))) & 0xF
                        hi = (np.int32(pr[o + 104 + j % 4]) >> (2 * (j // 4))) & 3
                        dl = dall * np.float32((lo | (hi << 4)) - 32)
                        for l in range(16 * half, 16 * half + 16):
                            q = (np.int32(pr[o + 32 + 32 * h + l]) >> (2 * k)) & 3
                            q -= 4 - 4 * ((np.int32(pr[o + l]) >> m) & 1)
                            yr[s + 32 * m + l] = dl * np.float32(q)
    return y


# ------------------------------------------------------------------------------ Q6_K
@njit(cache=True, nogil=True, error_model="numpy")
def quantize_q6_k(x, qw):
    rows, cols = x.shape
    if cols % QK_K != 0:
        raise ValueError("Q6_K: row length must be a multiple of 256")
    use_qw = qw.shape[0] > 0
    if use_qw and qw.shape[0] != cols:
        raise ValueError("Q6_K: imatrix length must equal the row length")
    nb = cols // QK_K
    out = _empty_u8(rows, nb * Q6_K_BYTES)
    L = np.zeros(QK_K, dtype=np.int64)
    scales = np.zeros(16, dtype=np.float32)
    weight = np.zeros(QK_K, dtype=np.float32)
    S = _qx_scratch(32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for i in range(nb):
            s = i * QK_K
            o = i * Q6_K_BYTES
            if use_qw:
                for j in range(QK_K):                # the impl passes qw itself as weights
                    weight[j] = qw[s + j]
            else:
                for j in range(QK_K):                # make_qx_quants' default for rmse_type 1
                    weight[j] = xr[s + j] * xr[s + j]
            max_scale = _F0
            max_abs_scale = _F0
            for ib in range(16):
                sc = _make_qx_quants(xr, s + 16 * ib, 16, 32, weight, 16 * ib, L, 16 * ib, S)
                scales[ib] = sc
                a = abs(sc)
                if a > max_abs_scale:
                    max_abs_scale = a
                    max_scale = sc
            if max_abs_scale < _EPS:
                for k in range(Q6_K_BYTES):
                    orow[o + k] = 0
                continue
            iscale = _FM128 / max_scale
            dbits = _fp16_bits(_F1 / iscale)
            _put_half(orow, o + 208, dbits)
            dall = _f16_bits_to_f32(dbits)
            for ib in range(16):
                q = _i8(min(127, _nearest_int(iscale * scales[ib])))
                orow[o + 192 + ib] = np.uint8(q & 0xFF)
                d = dall * np.float32(q)
                if d == _F0:
                    continue
                for ii in range(16):
                    l = _clamp(_nearest_int(xr[s + 16 * ib + ii] / d), -32, 31)
                    L[16 * ib + ii] = l + 32
            for h in range(2):
                for l in range(32):
                    e = 128 * h + l
                    q1 = L[e]
                    q2 = L[e + 32]
                    q3 = L[e + 64]
                    q4 = L[e + 96]
                    orow[o + 64 * h + l] = np.uint8((q1 & 0xF) | ((q3 & 0xF) << 4))
                    orow[o + 64 * h + l + 32] = np.uint8((q2 & 0xF) | ((q4 & 0xF) << 4))
                    orow[o + 128 + 32 * h + l] = np.uint8((q1 >> 4) | ((q2 >> 4) << 2)
                                                          | ((q3 >> 4) << 4) | ((q4 >> 4) << 6))
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def dequantize_q6_k(packed, cols):
    rows = packed.shape[0]
    if cols % QK_K != 0 or packed.shape[1] != cols // QK_K * Q6_K_BYTES:
        raise ValueError("Q6_K: packed row size does not match cols")
    nb = cols // QK_K
    y = _empty_f32(rows, cols)
    for r in range(rows):
        pr = packed[r]
        yr = y[r]
        for i in range(nb):
            o = i * Q6_K_BYTES
            s = i * QK_K
            dall = _get_half(pr, o + 208)
            # as dequantize_row_q6_K: one pass per 128 weights, 4 weights per (ql, qh) pair;
            # y = (d * sc) * (q - 32), the product d*sc rounded first (gguf does the same)
            for h in range(2):
                for half in range(2):
                    j = 8 * h + half                 # sub-block of weight 128h + 16half + l
                    dl1 = dall * np.float32(np.int8(pr[o + 192 + j]))
                    dl2 = dall * np.float32(np.int8(pr[o + 192 + j + 2]))
                    dl3 = dall * np.float32(np.int8(pr[o + 192 + j + 4]))
                    dl4 = dall * np.float32(np.int8(pr[o + 192 + j + 6]))
                    for l in range(16 * half, 16 * half + 16):
                        a = np.int32(pr[o + 64 * h + l])
                        b = np.int32(pr[o + 64 * h + l + 32])
                        c = np.int32(pr[o + 128 + 32 * h + l])
                        e = s + 128 * h + l
                        yr[e] = dl1 * np.float32(((a & 0xF) | ((c & 3) << 4)) - 32)
                        yr[e + 32] = dl2 * np.float32(((b & 0xF) | (((c >> 2) & 3) << 4)) - 32)
                        yr[e + 64] = dl3 * np.float32(((a >> 4) | (((c >> 4) & 3) << 4)) - 32)
                        yr[e + 96] = dl4 * np.float32(((b >> 4) | (((c >> 6) & 3) << 4)) - 32)
    return y


# ------------------------------------------------------------------------------ Q4_0 / Q5_0 imatrix
@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _row_weights(xr, qw, weight):
    """quantize_row_q{4,5}_0_impl: sigma2 = sum(x^2)/n_per_row over the whole row (in order),
    weight[j] = qw[j] * sqrtf(sigma2 + x[j]*x[j])."""
    n = xr.shape[0]
    sum_x2 = _F0
    for j in range(n):
        sum_x2 += xr[j] * xr[j]
    sigma2 = sum_x2 / np.float32(n)
    for j in range(n):
        weight[j] = qw[j] * np.sqrt(sigma2 + xr[j] * xr[j])


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize_q4_0_impl(x, qw):
    rows, cols = x.shape
    if cols % QK4_0 != 0:
        raise ValueError("Q4_0: row length must be a multiple of 32")
    if qw.shape[0] != cols:
        raise ValueError("Q4_0: imatrix length must equal the row length")
    nb = cols // QK4_0
    out = _empty_u8(rows, nb * Q4_0_BYTES)
    weight = np.zeros(cols, dtype=np.float32)
    L = np.zeros(QK4_0, dtype=np.int64)
    S = _qx_scratch(8)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        _row_weights(xr, qw, weight)
        for b in range(nb):
            s = b * QK4_0
            o = b * Q4_0_BYTES
            d = _make_qx_quants(xr, s, QK4_0, 8, weight, s, L, 0, S)
            _put_half(orow, o, _fp16_bits(d))
            for j in range(16):
                orow[o + 2 + j] = np.uint8(L[j] | (L[j + 16] << 4))
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize_q5_0_impl(x, qw):
    rows, cols = x.shape
    if cols % QK4_0 != 0:
        raise ValueError("Q5_0: row length must be a multiple of 32")
    if qw.shape[0] != cols:
        raise ValueError("Q5_0: imatrix length must equal the row length")
    nb = cols // QK4_0
    out = _empty_u8(rows, nb * Q5_0_BYTES)
    weight = np.zeros(cols, dtype=np.float32)
    L = np.zeros(QK4_0, dtype=np.int64)
    S = _qx_scratch(16)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        _row_weights(xr, qw, weight)
        for b in range(nb):
            s = b * QK4_0
            o = b * Q5_0_BYTES
            d = _make_qx_quants(xr, s, QK4_0, 16, weight, s, L, 0, S)
            _put_half(orow, o, _fp16_bits(d))
            qh = 0
            for j in range(16):
                x0 = L[j]
                x1 = L[j + 16]
                orow[o + 6 + j] = np.uint8((x0 & 0xF) | ((x1 & 0xF) << 4))
                qh |= ((x0 >> 4) & 1) << j
                qh |= ((x1 >> 4) & 1) << (j + 16)
            for k in range(4):
                orow[o + 2 + k] = np.uint8((qh >> (8 * k)) & 0xFF)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def quantize_q4_0_imatrix(x, qw):
    """quantize_q4_0(x, quant_weights=qw) of ggml_quantize_chunk; an empty qw is its
    quant_weights == NULL branch (quantize_row_q4_0_ref: legacy.py's kernel, which gives the
    C's d = -0 for all-zero blocks)."""
    if qw.shape[0] == 0:
        return quantize_q4_0(x)
    return _quantize_q4_0_impl(x, qw)


@njit(cache=True, nogil=True, error_model="numpy")
def quantize_q5_0_imatrix(x, qw):
    """quantize_q5_0(x, quant_weights=qw) of ggml_quantize_chunk; an empty qw as for Q4_0."""
    if qw.shape[0] == 0:
        return quantize_q5_0(x)
    return _quantize_q5_0_impl(x, qw)


# name -> (quantize, dequantize, block weights, block bytes)
KERNELS = {
    "Q3_K": (quantize_q3_k, dequantize_q3_k, QK_K, Q3_K_BYTES),
    "Q6_K": (quantize_q6_k, dequantize_q6_k, QK_K, Q6_K_BYTES),
}
IMATRIX_LEGACY = {"Q4_0": quantize_q4_0_imatrix, "Q5_0": quantize_q5_0_imatrix}
