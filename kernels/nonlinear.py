"""llama.cpp's lookup-table block types IQ4_NL, IQ4_XS, MXFP4, NVFP4 in Numba.

Quantization reproduces ``ggml_quantize_chunk`` (what ``llama-quantize`` runs) byte for byte,
with or without an importance matrix; decoding is bit-identical to ``gguf.quants.dequantize``
(= llama.cpp's ``dequantize_row_*``). ``tests/test_nonlinear.py`` checks both against the real
library (``workbench.oracle``) on every weight matrix of the default model and on edge cases.

Entry points: ``quantize_<type>(x, qw)`` with ``x`` a C-contiguous float32 [rows, cols] and
``qw`` the per-column importance (float32[cols], what llama.cpp receives as ``quant_weights``)
or an empty array for "no imatrix"; ``dequantize_<type>(packed, cols)``. Single-threaded, row
by row, GIL released, all arithmetic in float32 in the C code's order (no fastmath, no FMA:
llama.cpp's libggml-base is built for baseline x86-64 and contains no FMA instructions).

The algorithms (ggml-quants.c), restated:

* IQ4_NL / IQ4_XS (``quantize_row_iq4_nl_impl``; NL = one 32-block per super-block, XS = eight
  32-blocks per 256 super-block; ``ntry = 7`` in both, as ``quantize_iq4_nl``/``_xs`` call it):
  per 32-block, weights w = x^2 (no imatrix) or qw*sqrt(sigma2 + x^2) with
  sigma2 = 2*sum(x^2)/super_block_size over the whole super-block. ``max`` = the first element
  of largest |x|; a block with |max| < 1e-15 gets scale 0. Sixteen candidate inverse scales
  (``1/(max/127)``, then ``(itry - 127)/max`` for itry = -7..7) each map the block to its nearest
  levels of ``kvalues_iq4nl`` and give the weighted least-squares scale sumqx/sumq2; a candidate
  replaces the best if sumqx^2 > best*sumq2 (the first candidate is taken unconditionally).
  NL stores that scale as fp16 and re-picks the levels with 1/scale. XS: super-scale
  d = -max_scale/32 (max_scale = first block scale of largest |.|), fp16; 6-bit block scales
  l = clamp(nearest_int(scale/d), -32, 31) + 32 (low 4 bits in scales_l, high 2 in scales_h);
  levels re-picked with 1/(d*(l-32)). Re-picking uses the float32 scales, not the fp16 ones.
* MXFP4 (``quantize_row_mxfp4_ref``; the imatrix is ignored): per 32-block
  e = (uint8)(floorf(log2f(amax)) - 2 + 127) (E8M0), d = 2^(e-128) ("half", because the E2M1
  table ``kvalues_mxfp4`` holds doubled values), each weight gets the code minimizing
  |kvalue*d - x| (first of equal errors).
* NVFP4 (``quantize_row_nvfp4_ref``; the imatrix is ignored): per 16-weight sub-block
  ue = ggml_fp32_to_ue4m3(amax/6), d = ggml_ue4m3_to_fp32(ue) (= value/2, same doubled table),
  codes as MXFP4. No per-tensor scale is applied by ggml's quantizer.

Exactness notes (what is done differently from the C and why it gives the same bits):

* ``best_index_int8`` (a binary search with "upper on exact ties") is replaced by counting the
  level midpoints m_i = (v_i + v_{i+1})/2 (half-integers, exact in float32) with ``not x < m_i``:
  near a midpoint the C's two subtractions x - v_lo and v_hi - x are exact (|x| < 2^7, the
  differences need < 24 bits), so its comparison is the exact one; away from a midpoint they
  differ by far more than their rounding. NaN (e.g. from a NaN scale) gives 15, as in the C.
* ``best_index_mxfp4`` loops over all 16 codes; only the 8 non-negative values are searched here,
  on |x|: for x >= 0 no negative code can be strictly better than code 0 (|-k*d - x| rounds to
  >= |x|), for x < 0 code 8+i has exactly the error of code i on |x| (IEEE subtraction is
  sign-symmetric), and no positive code beats code 0. So the result is the same first-minimum.
* ``floorf(log2f(amax))``: glibc's log2f rounds results to float, so for amax just below a power
  of two (the top 1-44 mantissas of a binade, depending on the exponent) it returns the next
  integer and floorf gives E+1, not the exponent E of amax. We take E from the bits and bump it
  at a per-binade threshold computed exactly at import (smallest float whose log2 rounds to E+1
  in round-to-nearest); the test suite checks the table against the C library's log2f on the
  neighbourhood of every threshold. The float -> uint8_t cast is x86-64's (cvttss2si, low byte):
  negative e (amax < 2^-125) wraps around, +inf gives 0.
* fp16 stores use ggml's ``ggml_compute_fp32_to_fp16``: numpy's round-to-nearest-even (legacy.py's
  helper) except that NaN becomes sign|0x7E00 (numpy keeps the payload).
* ``ggml_fp32_to_ue4m3``: exponents >= 15 (x >= 256 after clamping to 448) all give 0x7E (448);
  normal values round half up on the first dropped mantissa bit; below 2^-6 the code is
  min(7, (int)(x*512 + 0.5)) (so x in [7.5, 8)/512 gives 7, not 8), 0 when that is < 1.

Behaviour of the C worth knowing (reproduced, not fixed):

* NVFP4 has no per-tensor scale in ggml's quantizer, so a 16-weight sub-block with
  amax < 6*0.5/512 (~0.0059) gets scale 0 and decodes to zeros, and amax below 6*2^-6 (~0.094,
  typical of real weights) uses UE4M3 subnormal scales with 1-3 significant bits. Above
  amax = 6*448 the scale saturates; for |x| >> 12*d (e.g. 1e30) every |k*d - x| rounds to |x|
  and the first code (0) wins: such weights decode to 0.
* IQ4_NL/IQ4_XS: x^2 overflowing (|x| > ~1.8e19) makes the sums inf/NaN; the block scale is then
  NaN, stored as fp16 0xFE00, with every level 15. IQ4_XS stores an all-zero super-block's
  scale as fp16 -0 (0x8000: d = -max_scale/32 with max_scale = +0).
* MXFP4: amax < 2^-125 makes e negative, which wraps (e.g. 1e-40 -> e = 248, d = 2^120), so the
  block decodes to zeros.

Speed: IQ4's 16 candidate scales are evaluated side by side (see ``_iq4_block_scale``), the
level search is a branch-free midpoint count, and the FP4 code search looks at 8 values
instead of 16; all of them vectorize. The lead's thread pool splits rows.
"""
from __future__ import annotations

from decimal import Decimal, getcontext

import numpy as np
from numba import njit

from .ggml_common import ggml_fp16_bits as _ggml_f16_bits
from .ggml_types import QK_K, layout
from .ggml_common import nearest_int as _nearest_int
from .legacy import _empty_f32, _empty_u8, _f16_bits_to_f32

F32 = np.float32

# ------------------------------------------------------------------------------ layouts
# ggml-common.h (little-endian; ggml_half = fp16; a 32-weight group's nibbles: weight j in the
# low nibble of byte j, weight j+16 in the high nibble):
#
#   typedef struct { ggml_half d; uint8_t qs[16]; } block_iq4_nl;                       // 18
#   typedef struct { ggml_half d; uint16_t scales_h; uint8_t scales_l[4];
#                    uint8_t qs[128]; } block_iq4_xs;                                   // 136
#     (block ib of 8: scale = (scales_l[ib/2] >> 4*(ib%2) & 15) | (scales_h >> 2*ib & 3) << 4)
#   typedef struct { uint8_t e; uint8_t qs[16]; } block_mxfp4;                          // 17
#   typedef struct { uint8_t d[4]; uint8_t qs[32]; } block_nvfp4;                       // 36
#     (sub-block s of 4 holds weights 16s..16s+15 in qs[8s..8s+7], j low / j+8 high nibble)
QK4_NL = 32
QK_MXFP4 = 32
QK_NVFP4 = 64
QK_NVFP4_SUB = 16

# name -> (block size, block bytes, ((field, byte offset, bytes), ...)), from the one table
LAYOUT = {n: layout(n) for n in ("IQ4_NL", "IQ4_XS", "MXFP4", "NVFP4")}
IQ4_NL_BYTES, IQ4_XS_BYTES, MXFP4_BYTES, NVFP4_BYTES = (LAYOUT[n][1] for n in LAYOUT)
assert (LAYOUT["IQ4_NL"][0], LAYOUT["IQ4_XS"][0], LAYOUT["MXFP4"][0], LAYOUT["NVFP4"][0]) == (
    QK4_NL, QK_K, QK_MXFP4, QK_NVFP4)

# ------------------------------------------------------------------------------ tables
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10,
                          1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
KVALUES_FP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)

_IQ4_VAL = KVALUES_IQ4NL.astype(np.float32)
_IQ4_MID = ((KVALUES_IQ4NL[:-1].astype(np.float64) + KVALUES_IQ4NL[1:]) / 2).astype(np.float32)
_FP4_VAL = KVALUES_FP4.astype(np.float32)
_FP4_POS = KVALUES_FP4[:8].astype(np.float32)              # 0 1 2 3 4 6 8 12

GROUP_MAX_EPS = F32(1e-15)


def _e8m0_half_table():
    """``ggml_e8m0_to_fp32_half``: 2^(e-128); e = 0, 1 are the f32 subnormals 2^-128, 2^-127."""
    bits = np.array([(0x00200000 << e) if e < 2 else ((e - 1) << 23) for e in range(256)],
                    dtype=np.uint32)
    return bits.view(np.float32)


def _ue4m3_table():
    """``ggml_ue4m3_to_fp32`` for every byte: half the UE4M3 value (bias 7, bit 7 ignored);
    0x00 and 0x7F decode to 0. All values are exact in float32."""
    out = np.zeros(256, dtype=np.float32)
    for b in range(256):
        if b in (0, 0x7F):
            continue
        exp, man = (b >> 3) & 0xF, b & 7
        raw = man * 2.0 ** -9 if exp == 0 else (1 + man / 8) * 2.0 ** (exp - 7)
        out[b] = raw * 0.5
    return out


def _log2f_round_up_thresholds():
    """For each binade E = -149..127 (amax in [2^E, 2^(E+1))): the float32 bit pattern of the
    smallest amax whose log2, rounded to float32 (nearest), is E+1 -- so floorf(log2f(amax))
    is E+1 from there on -- or 2^32 when no float of the binade gets there.

    log2(amax) is just below v = E+1 and rounds up to v when it exceeds the midpoint between v
    and the next float32 below v; log2 of a non-power-of-two is irrational, so there is no tie.
    Computed with 80-digit decimals."""
    getcontext().prec = 80
    ln2 = Decimal(2).ln()
    out = np.full(277, 1 << 32, dtype=np.int64)
    for E in range(-149, 128):
        v = E + 1
        below = float(np.nextafter(np.float32(v), np.float32(-np.inf)))
        mid = (Decimal(v) + Decimal(below)) / 2
        t = (mid * ln2).exp()                                # 2^mid
        if E >= -126:
            base, ulp, lo = Decimal(2) ** E, Decimal(2) ** (E - 23), (E + 127) << 23
            top = lo + (1 << 23)
        else:                                                # f32 subnormal binade
            base, ulp, lo = Decimal(0), Decimal(2) ** -149, 0
            top = 1 << (E + 150)
        bits = lo + int(((t - base) / ulp).to_integral_value(rounding="ROUND_FLOOR")) + 1
        if bits < top:
            out[E + 149] = bits
    return out


_E8M0_HALF = _e8m0_half_table()
_UE4M3 = _ue4m3_table()
_LOG2F_UP = _log2f_round_up_thresholds()


# ------------------------------------------------------------------------------ scalar helpers
@njit(cache=True, nogil=True, inline="always")
def _iq4_index(x):
    """``best_index_int8(16, kvalues_iq4nl, x)``: nearest level, the upper one on exact ties,
    15 for NaN (count of midpoints not above x; see the module notes)."""
    n = 0
    for i in range(15):
        if not x < _IQ4_MID[i]:
            n += 1
    return n


@njit(cache=True, nogil=True, inline="always")
def _iq4_level(x):
    """``kvalues_iq4nl[best_index_int8(16, kvalues_iq4nl, x)]`` as float32 (select chain)."""
    q = _IQ4_VAL[0]
    for i in range(15):
        if not x < _IQ4_MID[i]:
            q = _IQ4_VAL[i + 1]
    return q


@njit(cache=True, nogil=True, inline="always")
def _fp4_index(x, k1, k2, k3, k4, k6, k8, k12):
    """``best_index_mxfp4(x, d)`` given kvalue*d for the positive levels (k1 = 1*d ... k12 =
    12*d, each the float32 product the C forms): first minimum of |k*d - |x||, mapped to the
    negative codes 8+i for x < 0 (see the module notes)."""
    a = abs(x)
    be = a                       # |0*d - a|
    bi = 0
    e = abs(k1 - a)
    if e < be:
        be = e
        bi = 1
    e = abs(k2 - a)
    if e < be:
        be = e
        bi = 2
    e = abs(k3 - a)
    if e < be:
        be = e
        bi = 3
    e = abs(k4 - a)
    if e < be:
        be = e
        bi = 4
    e = abs(k6 - a)
    if e < be:
        be = e
        bi = 5
    e = abs(k8 - a)
    if e < be:
        be = e
        bi = 6
    e = abs(k12 - a)
    if e < be:
        bi = 7
    if x < F32(0.0) and bi != 0:
        bi += 8
    return bi


@njit(cache=True, nogil=True, inline="always")
def _mxfp4_e(amax):
    """``amax > 0 ? (uint8_t)(floorf(log2f(amax)) - 2 + 127) : 0`` (glibc log2f, x86-64 cast)."""
    if not amax > F32(0.0):
        return 0
    b = np.int64(np.float32(amax).view(np.uint32))
    if b >= 0x7F800000:                      # +inf: floorf(inf) - 2 + 127 = inf -> cvttss2si -> 0
        return 0
    if b >= 0x00800000:
        E = (b >> 23) - 127
    else:                                    # subnormal: position of the leading 1
        E = -150
        m = b
        while m != 0:
            m >>= 1
            E += 1
    if b >= _LOG2F_UP[E + 149]:
        E += 1
    return (E + 125) & 0xFF


@njit(cache=True, nogil=True, inline="always")
def _fp32_to_ue4m3(x):
    """``ggml_fp32_to_ue4m3`` (bit for bit, see the module notes)."""
    if not x > F32(0.0):
        return 0
    if x > F32(448.0):
        x = F32(448.0)
    bits = np.int64(np.float32(x).view(np.uint32))
    e = ((bits >> 23) & 0xFF) - 127 + 7
    if e <= 0:
        t = x * F32(512.0) + F32(0.5)
        man = np.int64(np.int32(t))
        if man > 7:
            man = 7
        if man < 1:
            return 0
        return man
    if e >= 15:
        return 0x7E
    man = ((bits >> 20) & 7) + ((bits >> 19) & 1)
    if man > 7:
        man = 0
        e += 1
        if e >= 15:
            return 0x7E
    return (e << 3) | man


@njit(cache=True, nogil=True, inline="always")
def _opaque(cols, nb, k):
    """k, computed from the runtime shape so that LLVM does not fully unroll the inner loops
    (a runtime trip count keeps them vectorizable; see legacy._opaque_qk)."""
    return cols // nb if nb > 0 else k


# ------------------------------------------------------------------------------ IQ4 search
NTRIAL = 16                    # 1/(max/127), then (itry - 127)/max for itry = -7..7


@njit(cache=True, nogil=True, inline="always")
def _iq4_block_scale(xr, s, w, ids, lv, sq, n, nt):
    """Best scale of one 32-block: the per-block part of quantize_row_iq4_nl_impl, ntry = 7.

    The C runs the 16 candidates one after another, each a sequential sum over the 32 weights.
    The sums of different candidates are independent (only the final "keep the better" step is
    sequential), so here all 16 run side by side: one pass picks every candidate's level for
    every weight (lv[j*16 + t], vectorizable), a second accumulates sumqx[t], sumq2[t] as
    16-lane vectors, each lane adding its terms in the C's element order (bit-identical sums),
    then the candidates are compared in the C's order. ``nt`` is NTRIAL, opaque to LLVM."""
    amax = F32(0.0)
    mx = F32(0.0)
    for j in range(n):
        ax = abs(xr[s + j])
        if ax > amax:
            amax = ax
            mx = xr[s + j]
    if amax < GROUP_MAX_EPS:
        return F32(0.0)
    ids[0] = F32(1.0) / (-mx / F32(-127.0))
    for itry in range(-7, 8):
        ids[itry + 8] = F32(itry - 127) / mx
    for j in range(n):
        xj = xr[s + j]
        o = j * nt
        for t in range(nt):
            lv[o + t] = _iq4_level(ids[t] * xj)
    for t in range(2 * nt):
        sq[t] = F32(0.0)
    for j in range(n):
        xj = xr[s + j]
        wj = w[j]
        o = j * nt
        for t in range(nt):
            q = lv[o + t]
            wq = wj * q                       # C: w*q*xb[j] and w*q*q, left to right
            sq[t] += wq * xj
            sq[nt + t] += wq * q
    sqx = sq[0]
    sq2 = sq[nt]
    d = sqx / sq2 if sq2 > F32(0.0) else F32(0.0)
    best = d * sqx
    for t in range(1, NTRIAL):
        sqx = sq[t]
        sq2 = sq[nt + t]
        if sq2 > F32(0.0) and sqx * sqx > best * sq2:
            d = sqx / sq2
            best = d * sqx
    return d


@njit(cache=True, nogil=True, inline="always")
def _iq4_weights(xr, s, qw, use_qw, sigma2, w, n):
    if use_qw:
        for j in range(n):
            xv = xr[s + j]
            w[j] = qw[s + j] * np.sqrt(sigma2 + xv * xv)
    else:
        for j in range(n):
            xv = xr[s + j]
            w[j] = xv * xv


@njit(cache=True, nogil=True, inline="always")
def _iq4_pack(xr, s, idl, orow, o, hk):
    """Levels for idl*x of one 32-block, packed: byte j = L[j] | L[j+16] << 4."""
    for j in range(hk):
        lo = _iq4_index(idl * xr[s + j])
        hi = _iq4_index(idl * xr[s + j + 16])
        orow[o + j] = np.uint8(lo | (hi << 4))


@njit(cache=True, nogil=True, inline="always")
def _sum_sq(xr, s, n):
    acc = F32(0.0)
    for j in range(n):
        acc += xr[s + j] * xr[s + j]
    return acc


# ------------------------------------------------------------------------------ IQ4_NL
@njit(cache=True, nogil=True)
def quantize_iq4_nl(x, qw):
    rows, cols = x.shape
    if cols % QK4_NL != 0:
        raise ValueError("IQ4_NL: row length must be a multiple of 32")
    use_qw = qw.shape[0] != 0
    if use_qw and qw.shape[0] != cols:
        raise ValueError("IQ4_NL: imatrix length must equal the row length")
    qw = qw.astype(np.float32)            # a float64 imatrix would change the rounding
    nb = cols // QK4_NL
    n = _opaque(cols, nb, QK4_NL)
    out = _empty_u8(rows, nb * IQ4_NL_BYTES)
    nt = _opaque(cols, cols // NTRIAL, NTRIAL)
    w = np.empty(QK4_NL, dtype=np.float32)
    ids = np.empty(NTRIAL, dtype=np.float32)
    lv = np.empty(QK4_NL * NTRIAL, dtype=np.float32)
    sq = np.empty(2 * NTRIAL, dtype=np.float32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for b in range(nb):
            s = b * QK4_NL
            o = b * IQ4_NL_BYTES
            # sigma2 = 2*sum(x^2)/32 over the (one-block) super-block
            sigma2 = _sum_sq(xr, s, n) * F32(0.0625)
            _iq4_weights(xr, s, qw, use_qw, sigma2, w, n)
            d = _iq4_block_scale(xr, s, w, ids, lv, sq, n, nt)
            h = _ggml_f16_bits(d)
            orow[o] = np.uint8(h & 0xFF)
            orow[o + 1] = np.uint8(h >> 8)
            idd = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            _iq4_pack(xr, s, idd, orow, o + 2, n // 2)
    return out


@njit(cache=True, nogil=True)
def dequantize_iq4_nl(packed, cols):
    rows = packed.shape[0]
    if cols % QK4_NL != 0 or packed.shape[1] != cols // QK4_NL * IQ4_NL_BYTES:
        raise ValueError("IQ4_NL: packed row size does not match cols")
    nb = cols // QK4_NL
    hk = _opaque(cols, nb, QK4_NL) // 2
    y = _empty_f32(rows, cols)
    for r in range(rows):
        pr = packed[r]
        yr = y[r]
        for b in range(nb):
            s = b * QK4_NL
            o = b * IQ4_NL_BYTES
            d = _f16_bits_to_f32(np.int64(pr[o]) | (np.int64(pr[o + 1]) << 8))
            for j in range(hk):
                yr[s + j] = d * _IQ4_VAL[pr[o + 2 + j] & 0xF]
            for j in range(hk):
                yr[s + 16 + j] = d * _IQ4_VAL[pr[o + 2 + j] >> 4]
    return y


# ------------------------------------------------------------------------------ IQ4_XS
@njit(cache=True, nogil=True)
def quantize_iq4_xs(x, qw):
    rows, cols = x.shape
    if cols % QK_K != 0:
        raise ValueError("IQ4_XS: row length must be a multiple of 256")
    use_qw = qw.shape[0] != 0
    if use_qw and qw.shape[0] != cols:
        raise ValueError("IQ4_XS: imatrix length must equal the row length")
    qw = qw.astype(np.float32)            # a float64 imatrix would change the rounding
    nsb = cols // QK_K
    n = _opaque(cols, cols // 32, 32)
    out = _empty_u8(rows, nsb * IQ4_XS_BYTES)
    nt = _opaque(cols, cols // NTRIAL, NTRIAL)
    w = np.empty(32, dtype=np.float32)
    ids = np.empty(NTRIAL, dtype=np.float32)
    lv = np.empty(32 * NTRIAL, dtype=np.float32)
    sq = np.empty(2 * NTRIAL, dtype=np.float32)
    scales = np.empty(8, dtype=np.float32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for ibl in range(nsb):
            s0 = ibl * QK_K
            o = ibl * IQ4_XS_BYTES
            sigma2 = _sum_sq(xr, s0, QK_K) * F32(0.0078125)      # 2/256
            max_scale = F32(0.0)
            amax_scale = F32(0.0)
            for ib in range(8):
                s = s0 + 32 * ib
                _iq4_weights(xr, s, qw, use_qw, sigma2, w, n)
                sc = _iq4_block_scale(xr, s, w, ids, lv, sq, n, nt)
                scales[ib] = sc
                if abs(sc) > amax_scale:
                    amax_scale = abs(sc)
                    max_scale = sc
            d = -max_scale / F32(32.0)
            h = _ggml_f16_bits(d)
            orow[o] = np.uint8(h & 0xFF)
            orow[o + 1] = np.uint8(h >> 8)
            idd = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            scales_h = 0
            for ib in range(8):
                s = s0 + 32 * ib
                l = _nearest_int(idd * scales[ib])
                l = max(-32, min(31, l))
                dl = d * F32(l)
                idl = F32(1.0) / dl if dl != F32(0.0) else F32(0.0)
                _iq4_pack(xr, s, idl, orow, o + 8 + 16 * ib, n // 2)
                l += 32
                if ib % 2 == 0:
                    orow[o + 4 + ib // 2] = np.uint8(l & 0xF)
                else:
                    orow[o + 4 + ib // 2] |= np.uint8((l & 0xF) << 4)
                scales_h |= (l >> 4) << (2 * ib)
            orow[o + 2] = np.uint8(scales_h & 0xFF)
            orow[o + 3] = np.uint8(scales_h >> 8)
    return out


@njit(cache=True, nogil=True)
def dequantize_iq4_xs(packed, cols):
    rows = packed.shape[0]
    if cols % QK_K != 0 or packed.shape[1] != cols // QK_K * IQ4_XS_BYTES:
        raise ValueError("IQ4_XS: packed row size does not match cols")
    nsb = cols // QK_K
    hk = _opaque(cols, cols // 32, 32) // 2
    y = _empty_f32(rows, cols)
    for r in range(rows):
        pr = packed[r]
        yr = y[r]
        for ibl in range(nsb):
            o = ibl * IQ4_XS_BYTES
            d = _f16_bits_to_f32(np.int64(pr[o]) | (np.int64(pr[o + 1]) << 8))
            sh = np.int64(pr[o + 2]) | (np.int64(pr[o + 3]) << 8)
            for ib in range(8):
                ls = ((np.int64(pr[o + 4 + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)
                dl = d * F32(ls - 32)
                s = ibl * QK_K + 32 * ib
                q = o + 8 + 16 * ib
                for j in range(hk):
                    yr[s + j] = dl * _IQ4_VAL[pr[q + j] & 0xF]
                for j in range(hk):
                    yr[s + 16 + j] = dl * _IQ4_VAL[pr[q + j] >> 4]
    return y


# ------------------------------------------------------------------------------ MXFP4 / NVFP4
@njit(cache=True, nogil=True, inline="always")
def _absmax_seq(xr, s, n):
    """``if (amax < fabsf(v)) amax = fabsf(v)`` from 0 (NaN ignored); 4 chains, same result."""
    m0 = F32(0.0)
    m1 = F32(0.0)
    m2 = F32(0.0)
    m3 = F32(0.0)
    for j in range(0, n, 4):
        a0 = abs(xr[s + j])
        a1 = abs(xr[s + j + 1])
        a2 = abs(xr[s + j + 2])
        a3 = abs(xr[s + j + 3])
        m0 = a0 if m0 < a0 else m0
        m1 = a1 if m1 < a1 else m1
        m2 = a2 if m2 < a2 else m2
        m3 = a3 if m3 < a3 else m3
    m0 = m1 if m0 < m1 else m0
    m2 = m3 if m2 < m3 else m2
    return m2 if m0 < m2 else m0


@njit(cache=True, nogil=True, inline="always")
def _fp4_pack(xr, s, d, orow, o, hk):
    """best_index_mxfp4 codes of 2*hk weights, byte j = code(x[j]) | code(x[j+hk]) << 4."""
    k1 = _FP4_POS[1] * d
    k2 = _FP4_POS[2] * d
    k3 = _FP4_POS[3] * d
    k4 = _FP4_POS[4] * d
    k6 = _FP4_POS[5] * d
    k8 = _FP4_POS[6] * d
    k12 = _FP4_POS[7] * d
    for j in range(hk):
        lo = _fp4_index(xr[s + j], k1, k2, k3, k4, k6, k8, k12)
        hi = _fp4_index(xr[s + j + hk], k1, k2, k3, k4, k6, k8, k12)
        orow[o + j] = np.uint8(lo | (hi << 4))


@njit(cache=True, nogil=True)
def quantize_mxfp4(x, qw):
    """``quantize_mxfp4`` (the imatrix ``qw`` is accepted and ignored, as in llama.cpp)."""
    rows, cols = x.shape
    if cols % QK_MXFP4 != 0:
        raise ValueError("MXFP4: row length must be a multiple of 32")
    nb = cols // QK_MXFP4
    n = _opaque(cols, nb, QK_MXFP4)
    out = _empty_u8(rows, nb * MXFP4_BYTES)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for b in range(nb):
            s = b * QK_MXFP4
            o = b * MXFP4_BYTES
            e = _mxfp4_e(_absmax_seq(xr, s, n))
            orow[o] = np.uint8(e)
            _fp4_pack(xr, s, _E8M0_HALF[e], orow, o + 1, n // 2)
    return out


@njit(cache=True, nogil=True)
def dequantize_mxfp4(packed, cols):
    rows = packed.shape[0]
    if cols % QK_MXFP4 != 0 or packed.shape[1] != cols // QK_MXFP4 * MXFP4_BYTES:
        raise ValueError("MXFP4: packed row size does not match cols")
    nb = cols // QK_MXFP4
    hk = _opaque(cols, nb, QK_MXFP4) // 2
    y = _empty_f32(rows, cols)
    for r in range(rows):
        pr = packed[r]
        yr = y[r]
        for b in range(nb):
            s = b * QK_MXFP4
            o = b * MXFP4_BYTES
            d = _E8M0_HALF[pr[o]]
            for j in range(hk):
                yr[s + j] = d * _FP4_VAL[pr[o + 1 + j] & 0xF]
            for j in range(hk):
                yr[s + 16 + j] = d * _FP4_VAL[pr[o + 1 + j] >> 4]
    return y


@njit(cache=True, nogil=True)
def quantize_nvfp4(x, qw):
    """``quantize_nvfp4`` (the imatrix ``qw`` is accepted and ignored, as in llama.cpp)."""
    rows, cols = x.shape
    if cols % QK_NVFP4 != 0:
        raise ValueError("NVFP4: row length must be a multiple of 64")
    nb = cols // QK_NVFP4
    n = _opaque(cols, cols // QK_NVFP4_SUB, QK_NVFP4_SUB)
    out = _empty_u8(rows, nb * NVFP4_BYTES)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for b in range(nb):
            o = b * NVFP4_BYTES
            for sb in range(4):
                s = b * QK_NVFP4 + sb * QK_NVFP4_SUB
                ue = _fp32_to_ue4m3(_absmax_seq(xr, s, n) / F32(6.0))
                orow[o + sb] = np.uint8(ue)
                _fp4_pack(xr, s, _UE4M3[ue], orow, o + 4 + 8 * sb, n // 2)
    return out


@njit(cache=True, nogil=True)
def dequantize_nvfp4(packed, cols):
    rows = packed.shape[0]
    if cols % QK_NVFP4 != 0 or packed.shape[1] != cols // QK_NVFP4 * NVFP4_BYTES:
        raise ValueError("NVFP4: packed row size does not match cols")
    nb = cols // QK_NVFP4
    hk = _opaque(cols, cols // QK_NVFP4_SUB, QK_NVFP4_SUB) // 2
    y = _empty_f32(rows, cols)
    for r in range(rows):
        pr = packed[r]
        yr = y[r]
        for b in range(nb):
            o = b * NVFP4_BYTES
            for sb in range(4):
                d = _UE4M3[pr[o + sb]]
                s = b * QK_NVFP4 + sb * QK_NVFP4_SUB
                q = o + 4 + 8 * sb
                for j in range(hk):
                    yr[s + j] = d * _FP4_VAL[pr[q + j] & 0xF]
                for j in range(hk):
                    yr[s + 8 + j] = d * _FP4_VAL[pr[q + j] >> 4]
    return y


# ------------------------------------------------------------------------------ registry
KERNELS = {  # name -> (quantize(x, qw), dequantize(packed, cols), block weights, block bytes)
    "IQ4_NL": (quantize_iq4_nl, dequantize_iq4_nl, QK4_NL, IQ4_NL_BYTES),
    "IQ4_XS": (quantize_iq4_xs, dequantize_iq4_xs, QK_K, IQ4_XS_BYTES),
    "MXFP4": (quantize_mxfp4, dequantize_mxfp4, QK_MXFP4, MXFP4_BYTES),
    "NVFP4": (quantize_nvfp4, dequantize_nvfp4, QK_NVFP4, NVFP4_BYTES),
}
