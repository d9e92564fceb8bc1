"""llama.cpp's "type-1" k-quants Q2_K, Q4_K, Q5_K (x ~ d*q - m) and the imatrix path of the
legacy Q4_1/Q5_1, in Numba.

Byte-identical to llama.cpp's ``ggml_quantize_chunk`` (what ``llama-quantize`` writes), with and
without an importance matrix; decoding bit-identical to ``gguf.quants.dequantize`` (and to C's
``dequantize_row_q*_K``). ``tests/test_kquant_type1.py`` checks both against llama.cpp itself
(``workbench.oracle``) on the default model and on edge cases.

Interface: ``quantize_xxx(x, qw)`` takes C-contiguous float32 ``x`` [rows, cols] (cols a multiple
of the block) and the per-column importance ``qw`` (float32[cols]; length 0 = no imatrix) and
returns uint8[rows, cols/block*block_bytes]; ``dequantize_xxx(packed, cols)`` -> float32.
Single-threaded, row by row, GIL released; scratch is allocated once per call.

------------------------------------------------------------------------------ layouts
In the style of ggml-common.h (ggml_half = fp16 little-endian; QK_K = 256 weights):

  block_q2_K { uint8 scales[16]; uint8 qs[64]; ggml_half d; ggml_half dmin; }        //  84
      16 sub-blocks of 16; scales[j] = 4-bit scale (low nibble) | 4-bit min (high nibble).
      qs: byte 32*h + l holds the 2-bit codes of weights 128h + l + {0, 32, 64, 96} in bit
      pairs {0-1, 2-3, 4-5, 6-7}.  y = d*sc*q - dmin*m.
  block_q4_K { ggml_half d; ggml_half dmin; uint8 scales[12]; uint8 qs[128]; }       // 144
      8 sub-blocks of 32, 6-bit scale sc and 6-bit min m each (get_scale_min_k4):
        j < 4:  sc = scales[j] & 63,  m = scales[j+4] & 63
        j >= 4: sc = (scales[j+4] & 15) | (scales[j-4] >> 6) << 4
                m  = (scales[j+4] >> 4) | (scales[j]   >> 6) << 4
      qs: byte 32*h + l holds weight 64h + l (low nibble) and 64h + 32 + l (high nibble).
  block_q5_K { ggml_half d; ggml_half dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]; } // 176
      as Q4_K plus a 5th bit: bit k of qh[l] belongs to weight 32k + l.

------------------------------------------------------------------------------ algorithms
(llama.cpp ggml/src/ggml-quants.c; restated and re-implemented here, nothing copied.)

Without imatrix (``quantize_row_<type>_ref``), per super-block of 256:
  * each sub-block gets (scale, min) from ``make_qkx2_quants``: min = min(x, 0), max = max(x);
    first guess scale = (max-min)/nmax, codes L = clamp(nearest_int((x-min)/scale), 0, nmax);
    then nstep+1 candidate grids iscale = (rmin + rdelta*is + nmax) / (max - min), each followed
    by a weighted 2-parameter least-squares fit of (scale, min) to its codes (min clipped to 0),
    keeping the candidate with the smallest weighted error (|err| for Q2_K, err^2 otherwise).
    NB: a winning candidate REPLACES ``min``, and every later grid is built from the new min
    (both in ``max - min`` and in ``x - min``): the search is not a plain grid scan.
      Q2_K: n=16, nmax=3,  w = |x|,                      rmin=-0.5, rdelta=0.1, nstep=15, MAD
      Q4_K: n=32, nmax=15, w = rms(sub-block) + |x|,     rmin=-1.0, rdelta=0.1, nstep=20
      Q5_K: n=32, nmax=31, w = rms(sub-block) + |x|,     rmin=-0.5, rdelta=0.1, nstep=15
  * super-scales: d = max_scale/15 (Q2_K, 4-bit sub-scales) or /63 (6-bit), same for dmin; the
    sub-scale codes are nearest_int(15|63 * s / max_s) (Q4_K/Q5_K: low byte, then MIN 63).
  * every weight is re-quantized with the *stored* (fp16-rounded, integer-scaled) d and m:
    q = clamp(nearest_int((x + dm)/d), 0, nmax). A sub-block whose d*sc is 0 keeps the codes of
    the search above (they still end up in the bytes).
With imatrix (``quantize_row_<type>_impl``), per super-block:
  * w = qw * sqrt(sigma2 + x^2), sigma2 = sum(x^2)/256 (Q2_K) or 2*sum(x^2)/256 (Q4_K/Q5_K),
    over the super-block;
  * ``make_qkx3_quants`` (same search, rmin=-0.9, rdelta=0.05, nstep=36, squared error);
  * the sub-scales and sub-mins themselves are quantized by ``make_qp_quants`` (n = 16 or 8,
    nmax = 15 or 63, weights = per-sub-block sum of w): 9 grids iscale = (nmax + 0.1*is)/max,
    then up to 5 coordinate-descent passes; d, dmin = the resulting LSQ scales (fp16);
  * re-quantization as above, with the fp16 read-back of d and dmin.
Legacy Q4_1/Q5_1 with imatrix (``quantize_row_q4_1_impl``): sigma2 = sum(x^2)/cols over the
whole ROW, then per block of 32 ``make_qkx3_quants(32, 15|31, ...)``; d = scale, m = min, and
the codes of the search are stored as they are (no re-quantization). Without imatrix it is
``quantize_row_q4_1_ref`` = ``workbench.kernels.legacy.quantize_q4_1`` (called here).

------------------------------------------------------------------------------ bit-exactness
* Everything is float32, operation by operation in C's order (no FMA: libggml-base has no
  fused instructions; no fastmath). Numba would promote float32 (x) int64 or a Python float
  literal to float64, so every int is cast with ``np.float32(...)`` and every literal is a
  module-level np.float32 constant (the compiled IR has no double at all). Sums are accumulated
  sequentially exactly as in C (``w*l*l`` is ``(w*l)*l``, ``rmin + rdelta*is + nmax`` is
  ``(rmin + rdelta*is) + nmax``, ...).
* ``nearest_int(f)``: the bit trick ``(bits(f + 1.5*2^23) & 0x7FFFFF) - 0x400000`` exactly
  (round half to even for |f| <= 4194303; for larger values, inf or NaN it yields what that
  trick yields, as C does with assertions off), not a rounding function.
* C's ``uint8_t`` stores wrap modulo 256 (``uint8_t ls = nearest_int(...)`` then ``MIN(63, ls)``
  on the wrapped value; ``make_qp_quants`` keeps its codes in uint8 but sums with the int code);
  all reproduced with ``& 0xFF``. Q4_K's imatrix path has no ``MIN(63, .)`` on the sub-scale
  codes, Q5_K's has: both as in C.
* fp16 stores use GGML_FP32_TO_FP16 (round to nearest even, same as numpy, except that any NaN
  becomes 0x7E00 with its sign); re-quantization reads back GGML_FP16_TO_FP32 of the stored bits.
* Division by zero gives inf/NaN as in C (``error_model="numpy"``, no ZeroDivisionError).
* Decoding: ``(d*sc) * q - (dmin*m)`` in float32, as C and gguf.

------------------------------------------------------------------------------ speed
The (scale, min) search dominates and is a chain of dependent float additions per sub-block
(C's summation order must be kept, so no sub-block can be summed in parallel pieces). Instead
the sub-blocks of a whole row run side by side: the row is transposed into "lanes"
(``xt[i*G + j]`` = element i of sub-block j, G sub-blocks per row) and every loop of the search
runs over all lanes at once, each lane doing exactly C's sequential arithmetic for its own
sub-block. The lane loops have a runtime trip count and vectorize (16 float32 lanes with
AVX-512), ~4-5x faster than one sub-block at a time; data-dependent branches (``D > 0``, "keep
the better candidate") become per-lane selects. Per-lane state lives in one scratch array
(``S``, rows ``_MN``.. below); all scratch is allocated once per call and sized by cols.
The per-super-block finishing (super-scales, ``make_qp_quants``, re-quantization, packing) is
scalar.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .ggml_common import get_half as _get_half
from .ggml_types import QK_K, block_bytes
from .ggml_common import ggml_fp16_bits as _fp16_ggml
from .ggml_common import nearest_int as _nearest_int
from .legacy import (_empty_f32, _empty_u8, _f16_bits_to_f32,
                     quantize_q4_1, quantize_q5_1)


# float32 constants (a Python float literal would promote the expression to float64 in Numba)
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F2 = np.float32(2.0)
_F15 = np.float32(15.0)
_F32 = np.float32(32.0)
_F63 = np.float32(63.0)
_F256 = np.float32(256.0)
_F0_1 = np.float32(0.1)
_GROUP_MAX_EPS = np.float32(1e-15)
_RMIN_Q2 = np.float32(-0.5)
_RMIN_Q4 = np.float32(-1.0)
_RMIN_Q5 = np.float32(-0.5)
_RDELTA_REF = np.float32(0.1)
_RMIN_IM = np.float32(-0.9)              # every imatrix path: make_qkx3_quants(.., -0.9f, 0.05f, 36)
_RDELTA_IM = np.float32(0.05)

# rows of the per-lane scratch S (float32[_NS * G]): lane j of row k is S[k*G + j]
(_MN, _MX, _SW, _SX, _IS, _SC, _BEST, _SL, _SL2, _SXL, _CUR, _TS, _TM, _ACC, _DEG,
 _M0) = range(16)
_NS = 16

# int arguments as typed (non-literal) constants: a literal argument would make Numba compile
# a separate copy of the callee per value (cold compile time), with no speed gain
Q2_K_BYTES, Q4_K_BYTES, Q5_K_BYTES = block_bytes("Q2_K"), block_bytes("Q4_K"), block_bytes("Q5_K")
Q4_1_BYTES, Q5_1_BYTES = block_bytes("Q4_1"), block_bytes("Q5_1")
_I0, _I1, _I3, _I8, _I15, _I16, _I20, _I24, _I31, _I32, _I36, _I63 = (
    np.int64(v) for v in (0, 1, 3, 8, 15, 16, 20, 24, 31, 32, 36, 63))
_I144, _I176 = np.int64(Q4_K_BYTES), np.int64(Q5_K_BYTES)

_JIT = dict(cache=True, nogil=True, error_model="numpy")
_JIT_INLINE = dict(cache=True, nogil=True, error_model="numpy", inline="always")


# ------------------------------------------------------------------------------ helpers
@njit(**_JIT_INLINE)
def _put_half(buf, o, f):
    """Store GGML_FP32_TO_FP16(f) at buf[o:o+2]; returns GGML_FP16_TO_FP32 of what was stored."""
    h = _fp16_ggml(f)
    buf[o] = np.uint8(h & 0xFF)
    buf[o + 1] = np.uint8(h >> 8)
    return _f16_bits_to_f32(h)


@njit(**_JIT_INLINE)
def _check(x, qw, blk):
    if x.shape[1] % blk != 0:
        raise ValueError("row length must be a multiple of the block size")
    if qw.size != 0 and qw.size != x.shape[1]:
        raise ValueError("imatrix length must be 0 or the row length")


# ------------------------------------------------------------------------------ lanes
@njit(**_JIT_INLINE)
def _to_lanes(v, n, G, vt):
    """vt[i*G + j] = v[n*j + i]: sub-block j of the row becomes lane j."""
    for j in range(G):
        for i in range(n):
            vt[i * G + j] = v[n * j + i]


@njit(**_JIT_INLINE)
def _from_lanes(Lt, n, G, L):
    for j in range(G):
        for i in range(n):
            L[n * j + i] = Lt[i * G + j]


@njit(**_JIT_INLINE)
def _lane_sums(vt, n, G, out):
    """out[j] = ((0 + v_0) + v_1) + ... over lane j, in C's order."""
    for j in range(G):
        out[j] = _F0
    for i in range(n):
        b = i * G
        for j in range(G):
            out[j] += vt[b + j]


@njit(**_JIT_INLINE)
def _superblock_sigma(xr, nb, sig):
    """sig[ib] = sequential sum of x^2 over super-block ib (C's ``sumx2``), lanes = super-blocks."""
    for ib in range(nb):
        sig[ib] = _F0
    for l in range(QK_K):
        for ib in range(nb):
            v = xr[ib * QK_K + l]
            sig[ib] += v * v


@njit(**_JIT)
def _search_lanes(n, G, nmax, xt, wt, Lt, Lat, S, rmin, rdelta, nstep, use_mad, qkx3):
    """make_qkx2_quants (qkx3=False) / make_qkx3_quants with weights (qkx3=True), for the G
    sub-blocks of n values held in lanes (``xt``, weights ``wt``).

    Per lane: fits x ~ scale*L + min, L in [0, nmax], min <= 0; the codes go to ``Lt`` (lanes),
    scale to S[_SC], min to S[_MN] (C's ``*the_min`` is -min). The two C functions differ only in
    the degenerate test (``max == min`` vs ``max <= min``, the same unless NaN), where C returns
    L = 0, scale = 0 at once: those lanes run along with garbage and are overwritten at the end."""
    mn = S[_MN * G:(_MN + 1) * G]
    mx = S[_MX * G:(_MX + 1) * G]
    sw = S[_SW * G:(_SW + 1) * G]
    sx = S[_SX * G:(_SX + 1) * G]
    isc = S[_IS * G:(_IS + 1) * G]
    sc = S[_SC * G:(_SC + 1) * G]
    best = S[_BEST * G:(_BEST + 1) * G]
    sl = S[_SL * G:(_SL + 1) * G]
    sl2 = S[_SL2 * G:(_SL2 + 1) * G]
    sxl = S[_SXL * G:(_SXL + 1) * G]
    cur = S[_CUR * G:(_CUR + 1) * G]
    ts = S[_TS * G:(_TS + 1) * G]
    tm = S[_TM * G:(_TM + 1) * G]
    acc = S[_ACC * G:(_ACC + 1) * G]
    deg = S[_DEG * G:(_DEG + 1) * G]
    m0 = S[_M0 * G:(_M0 + 1) * G]
    fnmax = np.float32(nmax)

    # min, max (strict compares, first met wins), sum w, sum w*x
    for j in range(G):
        x0 = xt[j]
        w0 = wt[j]
        mn[j] = x0
        mx[j] = x0
        sw[j] = w0
        sx[j] = w0 * x0
    for i in range(1, n):
        b = i * G
        for j in range(G):
            xi = xt[b + j]
            wi = wt[b + j]
            mn[j] = xi if xi < mn[j] else mn[j]
            mx[j] = xi if xi > mx[j] else mx[j]
            sw[j] += wi
            sx[j] += wi * xi
    for j in range(G):
        m = mn[j]
        if m > _F0:
            m = _F0
        mn[j] = m
        m0[j] = m
        d = (mx[j] <= m) if qkx3 else (mx[j] == m)
        deg[j] = _F1 if d else _F0
        isc[j] = fnmax / (mx[j] - m)
        sc[j] = _F1 / isc[j]
        best[j] = _F0

    # first guess: codes for scale = (max - min)/nmax, and their weighted error
    for i in range(n):
        b = i * G
        for j in range(G):
            xi = xt[b + j]
            l = max(0, min(nmax, _nearest_int(isc[j] * (xi - mn[j]))))
            Lt[b + j] = l
            diff = sc[j] * np.float32(l) + mn[j] - xi
            diff = abs(diff) if use_mad else diff * diff
            best[j] += wt[b + j] * diff

    if nstep >= 1:
        for step in range(nstep + 1):
            num = rmin + rdelta * np.float32(step) + fnmax
            for j in range(G):
                isc[j] = num / (mx[j] - mn[j])       # mn: the current (possibly refitted) min
                sl[j] = _F0
                sl2[j] = _F0
                sxl[j] = _F0
                cur[j] = _F0
            # codes on this grid and the sums of the 2x2 least-squares system
            for i in range(n):
                b = i * G
                for j in range(G):
                    xi = xt[b + j]
                    l = max(0, min(nmax, _nearest_int(isc[j] * (xi - mn[j]))))
                    Lat[b + j] = l
                    fl = np.float32(l)
                    wl = wt[b + j] * fl
                    sl[j] += wl
                    sl2[j] += wl * fl
                    sxl[j] += wl * xi
            for j in range(G):
                D = sw[j] * sl2[j] - sl[j] * sl[j]
                t_s = (sw[j] * sxl[j] - sx[j] * sl[j]) / D
                t_m = (sl2[j] * sx[j] - sl[j] * sxl[j]) / D
                if t_m > _F0:
                    t_m = _F0
                    t_s = sxl[j] / sl2[j]
                ts[j] = t_s
                tm[j] = t_m
            for i in range(n):
                b = i * G
                for j in range(G):
                    diff = ts[j] * np.float32(Lat[b + j]) + tm[j] - xt[b + j]
                    diff = abs(diff) if use_mad else diff * diff
                    cur[j] += wt[b + j] * diff
            # C: if (D > 0) { ...; if (cur_error < best_error) take it }
            n_acc = 0
            for j in range(G):
                D = sw[j] * sl2[j] - sl[j] * sl[j]
                take = D > _F0 and cur[j] < best[j]
                if take:
                    best[j] = cur[j]
                    sc[j] = ts[j]
                    mn[j] = tm[j]
                    n_acc += 1
                acc[j] = _F1 if take else _F0
            if n_acc > 0:
                for i in range(n):
                    b = i * G
                    for j in range(G):
                        if acc[j] != _F0:
                            Lt[b + j] = Lat[b + j]

    for j in range(G):
        if deg[j] != _F0:
            sc[j] = _F0
            mn[j] = m0[j]
            for i in range(n):
                Lt[i * G + j] = 0


# ------------------------------------------------------------------------------ scalar parts
@njit(**_JIT)
def _make_qp(n, nmax, x, L, qw):
    """make_qp_quants: x[0:n] (sub-block scales or mins, >= 0) ~ scale*L, L in [0, nmax] kept as
    uint8 in L; weights qw. Grid over iscale = (nmax + 0.1*is)/max, is = -4..4 (weighted MSE),
    then up to 5 coordinate-descent passes maximizing sumlx^2/suml2. Returns sumlx/suml2."""
    mx = _F0
    for i in range(n):
        mx = mx if mx > x[i] else x[i]                 # MAX(max, x[i])
    if mx < _GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return _F0
    fnmax = np.float32(nmax)
    iscale = fnmax / mx
    for i in range(n):
        L[i] = _nearest_int(iscale * x[i]) & 0xFF      # uint8 store, not clamped
    scale = _F1 / iscale
    best = _F0
    for i in range(n):
        diff = x[i] - scale * np.float32(L[i])
        best += qw[i] * diff * diff
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        iscale_is = (_F0_1 * np.float32(is_) + fnmax) / mx
        scale_is = _F1 / iscale_is
        mse = _F0
        for i in range(n):
            l = min(nmax, _nearest_int(iscale_is * x[i]))
            diff = x[i] - scale_is * np.float32(l)
            mse += qw[i] * diff * diff
        if mse < best:
            best = mse
            iscale = iscale_is
    sumlx = _F0
    suml2 = _F0
    for i in range(n):
        l = min(nmax, _nearest_int(iscale * x[i]))
        L[i] = l & 0xFF
        w = qw[i]
        fl = np.float32(l)                               # the int, not the wrapped byte
        sumlx += w * x[i] * fl
        suml2 += w * fl * fl
    for _itry in range(5):
        n_changed = 0
        for i in range(n):
            w = qw[i]
            li = np.int64(L[i])
            fli = np.float32(li)
            slx = sumlx - w * x[i] * fli
            sl2 = suml2 - w * fli * fli
            if slx > _F0 and sl2 > _F0:
                new_l = min(nmax, _nearest_int(x[i] * sl2 / slx))
                if new_l != li:
                    fnl = np.float32(new_l)
                    slx += w * x[i] * fnl
                    sl2 += w * fnl * fnl
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l & 0xFF
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > _F0 else _F0


@njit(**_JIT_INLINE)
def _requantize(x, xo, n, d, dm, nmax, L):
    """Re-quantize with the stored scales: q = clamp(nearest_int((x + dm)/d), 0, nmax)."""
    for i in range(n):
        L[xo + i] = max(0, min(nmax, _nearest_int((x[xo + i] + dm) / d)))


# ------------------------------------------------------------------------------ Q2_K
@njit(**_JIT)
def quantize_q2_k(x, qw):
    _check(x, qw, QK_K)
    rows, cols = x.shape
    nb = cols // QK_K
    G = cols // 16                                     # lanes = sub-blocks of 16 in a row
    out = _empty_u8(rows, nb * Q2_K_BYTES)
    use_im = qw.size != 0
    xt = np.empty(cols, np.float32)
    wt = np.empty(cols, np.float32)
    qwt = np.empty(cols if use_im else 0, np.float32)
    Lt = np.empty(cols, np.uint8)
    Lat = np.empty(cols, np.uint8)
    L = np.empty(cols, np.uint8)
    S = np.empty(_NS * G, np.float32)
    sw = np.empty(G, np.float32)
    sig = np.empty(nb, np.float32)
    sc16 = np.empty(16, np.float32)
    mn16 = np.empty(16, np.float32)
    sw16 = np.empty(16, np.float32)
    Ls = np.empty(16, np.uint8)
    Lm = np.empty(16, np.uint8)
    if use_im:
        _to_lanes(qw, 16, G, qwt)
    for r in range(rows):
        xr = x[r]
        y = out[r]
        _to_lanes(xr, 16, G, xt)
        if not use_im:
            # quantize_row_q2_K_ref: w = |x|, make_qkx2_quants(16, 3, .., -0.5, 0.1, 15, MAD)
            for k in range(cols):
                wt[k] = abs(xt[k])
            _search_lanes(16, G, _I3, xt, wt, Lt, Lat, S, _RMIN_Q2, _RDELTA_REF, _I15, True, False)
        else:
            # quantize_row_q2_K_impl: w = qw*sqrt(sigma2 + x^2), sigma2 = sum(x^2)/256
            _superblock_sigma(xr, nb, sig)
            for ib in range(nb):
                sig[ib] = sig[ib] / _F256
            for i in range(16):
                b = i * G
                for j in range(G):
                    xv = xt[b + j]
                    wt[b + j] = qwt[b + j] * np.sqrt(sig[j // 16] + xv * xv)
            _lane_sums(wt, 16, G, sw)
            _search_lanes(16, G, _I3, xt, wt, Lt, Lat, S, _RMIN_IM, _RDELTA_IM, _I36, False, True)
        _from_lanes(Lt, 16, G, L)
        for ib in range(nb):
            s = ib * QK_K
            o = ib * Q2_K_BYTES
            jb = ib * 16
            for j in range(16):
                sc16[j] = S[_SC * G + jb + j]
                mn16[j] = -S[_MN * G + jb + j]         # C's mins[j] (the_min)
            if not use_im:
                max_scale = _F0
                max_min = _F0
                for j in range(16):
                    if sc16[j] > max_scale:
                        max_scale = sc16[j]
                    if mn16[j] > max_min:
                        max_min = mn16[j]
                if max_scale > _F0:
                    iscale = _F15 / max_scale
                    for j in range(16):
                        y[o + j] = _nearest_int(iscale * sc16[j]) & 0xFF
                    dd = _put_half(y, o + 80, max_scale / _F15)
                else:
                    for j in range(16):
                        y[o + j] = 0
                    dd = _put_half(y, o + 80, _F0)
                if max_min > _F0:
                    iscale = _F15 / max_min
                    for j in range(16):
                        l = _nearest_int(iscale * mn16[j])
                        y[o + j] = (np.int64(y[o + j]) | (l << 4)) & 0xFF
                    dmn = _put_half(y, o + 82, max_min / _F15)
                else:
                    dmn = _put_half(y, o + 82, _F0)
            else:
                for j in range(16):
                    sw16[j] = sw[jb + j]
                dm_ = _make_qp(_I16, _I15, sc16, Ls, sw16)
                mm_ = _make_qp(_I16, _I15, mn16, Lm, sw16)
                dd = _put_half(y, o + 80, dm_)
                dmn = _put_half(y, o + 82, mm_)
                for j in range(16):
                    y[o + j] = (np.int64(Ls[j]) | (np.int64(Lm[j]) << 4)) & 0xFF
            # re-quantize with the stored scales (both paths)
            for j in range(16):
                bsc = np.int64(y[o + j])
                d = dd * np.float32(bsc & 0xF)
                if d == _F0:
                    continue
                dm = dmn * np.float32(bsc >> 4)
                _requantize(xr, s + 16 * j, 16, d, dm, 3, L)
            for h in range(2):
                for l in range(32):
                    t = s + 128 * h + l
                    y[o + 16 + 32 * h + l] = (np.int64(L[t]) | (np.int64(L[t + 32]) << 2)
                                              | (np.int64(L[t + 64]) << 4)
                                              | (np.int64(L[t + 96]) << 6)) & 0xFF
    return out


@njit(**_JIT)
def dequantize_q2_k(packed, cols):
    rows = packed.shape[0]
    if cols % QK_K != 0 or packed.shape[1] != cols // QK_K * Q2_K_BYTES:
        raise ValueError("Q2_K: packed row size does not match cols")
    nb = cols // QK_K
    out = _empty_f32(rows, cols)
    for r in range(rows):
        p = packed[r]
        y = out[r]
        for ib in range(nb):
            o = ib * Q2_K_BYTES
            s = ib * QK_K
            d = _get_half(p, o + 80)
            dmin = _get_half(p, o + 82)
            for j in range(16):                      # sub-block j = weights s + 16j ..
                sc = np.int64(p[o + j])
                dl = d * np.float32(sc & 0xF)
                ml = dmin * np.float32(sc >> 4)
                shift = 2 * ((j % 8) // 2)           # bit pair
                q0 = o + 16 + 32 * (j // 8) + 16 * (j % 2)   # its qs bytes
                for l in range(16):
                    q = (np.int64(p[q0 + l]) >> shift) & 3
                    y[s + 16 * j + l] = dl * np.float32(q) - ml
    return out


# ------------------------------------------------------------------------------ Q4_K / Q5_K
@njit(**_JIT_INLINE)
def _pack_scales_k4(y, o, Ls, Lm):
    """Eight 6-bit (scale, min) codes into the 12 scale bytes (inverse of get_scale_min_k4);
    codes above 63 are not masked, as in C (only the final byte store wraps)."""
    for j in range(8):
        ls = np.int64(Ls[j])
        lm = np.int64(Lm[j])
        if j < 4:
            y[o + j] = ls & 0xFF
            y[o + j + 4] = lm & 0xFF
        else:
            y[o + j + 4] = ((ls & 0xF) | ((lm & 0xF) << 4)) & 0xFF
            y[o + j - 4] = (np.int64(y[o + j - 4]) | ((ls >> 4) << 6)) & 0xFF
            y[o + j] = (np.int64(y[o + j]) | ((lm >> 4) << 6)) & 0xFF


@njit(**_JIT_INLINE)
def _scale_min_k4(j, q, o):
    if j < 4:
        return np.int64(q[o + j]) & 63, np.int64(q[o + j + 4]) & 63
    return ((np.int64(q[o + j + 4]) & 0xF) | ((np.int64(q[o + j - 4]) >> 6) << 4),
            (np.int64(q[o + j + 4]) >> 4) | ((np.int64(q[o + j]) >> 6) << 4))


@njit(**_JIT)
def _q45k_row(xr, qwt, use_im, nmax, rmin_ref, nstep_ref, clamp_im, y, nbytes,
              xt, wt, Lt, Lat, L, S, sw, sig, sc8, mn8, sw8, Ls, Lm):
    """One row of Q4_K (nmax 15) / Q5_K (nmax 31): the search for all sub-blocks in lanes, then
    per super-block the scales (written at y[o:o+16], o = ib*nbytes) and the final codes in L."""
    cols = xr.shape[0]
    nb = cols // QK_K
    G = cols // 32
    _to_lanes(xr, 32, G, xt)
    if not use_im:
        # quantize_row_q{4,5}_K_ref: w = sqrt(sum(x^2)/32) + |x| per sub-block
        av = sw
        for j in range(G):
            av[j] = _F0
        for i in range(32):
            b = i * G
            for j in range(G):
                av[j] += xt[b + j] * xt[b + j]
        for j in range(G):
            av[j] = np.sqrt(av[j] / _F32)      # av_x
        for i in range(32):
            b = i * G
            for j in range(G):
                wt[b + j] = sw[j] + abs(xt[b + j])
        _search_lanes(32, G, nmax, xt, wt, Lt, Lat, S, rmin_ref, _RDELTA_REF, nstep_ref,
                      False, False)
    else:
        # quantize_row_q{4,5}_K_impl: w = qw*sqrt(sigma2 + x^2), sigma2 = 2*sum(x^2)/256
        _superblock_sigma(xr, nb, sig)
        for ib in range(nb):
            sig[ib] = _F2 * sig[ib] / _F256
        for i in range(32):
            b = i * G
            for j in range(G):
                xv = xt[b + j]
                wt[b + j] = qwt[b + j] * np.sqrt(sig[j // 8] + xv * xv)
        _lane_sums(wt, 32, G, sw)
        _search_lanes(32, G, nmax, xt, wt, Lt, Lat, S, _RMIN_IM, _RDELTA_IM, _I36, False, True)
    _from_lanes(Lt, 32, G, L)
    for ib in range(nb):
        s = ib * QK_K
        o = ib * nbytes
        jb = ib * 8
        for j in range(8):
            sc8[j] = S[_SC * G + jb + j]
            mn8[j] = -S[_MN * G + jb + j]              # C's mins[j] (the_min)
        if not use_im:
            max_scale = _F0
            max_min = _F0
            for j in range(8):
                if sc8[j] > max_scale:
                    max_scale = sc8[j]
                if mn8[j] > max_min:
                    max_min = mn8[j]
            inv_scale = _F63 / max_scale if max_scale > _F0 else _F0
            inv_min = _F63 / max_min if max_min > _F0 else _F0
            for j in range(8):
                ls = _nearest_int(inv_scale * sc8[j]) & 0xFF    # uint8_t ls = nearest_int(..)
                lm = _nearest_int(inv_min * mn8[j]) & 0xFF
                Ls[j] = min(63, ls)
                Lm[j] = min(63, lm)
            _pack_scales_k4(y, o + 4, Ls, Lm)
            dd = _put_half(y, o, max_scale / _F63)
            dmn = _put_half(y, o + 2, max_min / _F63)
        else:
            for j in range(8):
                sw8[j] = sw[jb + j]
            d_block = _make_qp(_I8, _I63, sc8, Ls, sw8)
            m_block = _make_qp(_I8, _I63, mn8, Lm, sw8)
            if clamp_im != 0:                          # Q5_K clamps to 63 here, Q4_K does not
                for j in range(8):
                    Ls[j] = min(np.uint8(63), Ls[j])
                    Lm[j] = min(np.uint8(63), Lm[j])
            _pack_scales_k4(y, o + 4, Ls, Lm)
            dd = _put_half(y, o, d_block)
            dmn = _put_half(y, o + 2, m_block)
        for j in range(8):
            sc, m = _scale_min_k4(j, y, o + 4)
            d = dd * np.float32(sc)
            if d == _F0:
                continue
            dm = dmn * np.float32(m)
            _requantize(xr, s + 32 * j, 32, d, dm, nmax, L)


@njit(**_JIT)
def _q45k(x, qw, nmax, rmin_ref, nstep_ref, clamp_im, nbytes):
    _check(x, qw, QK_K)
    rows, cols = x.shape
    nb = cols // QK_K
    G = cols // 32                                     # lanes = sub-blocks of 32 in a row
    out = _empty_u8(rows, nb * nbytes)
    use_im = qw.size != 0
    xt = np.empty(cols, np.float32)
    wt = np.empty(cols, np.float32)
    qwt = np.empty(cols if use_im else 0, np.float32)
    Lt = np.empty(cols, np.uint8)
    Lat = np.empty(cols, np.uint8)
    L = np.empty(cols, np.uint8)
    S = np.empty(_NS * G, np.float32)
    sw = np.empty(G, np.float32)
    sig = np.empty(nb, np.float32)
    sc8 = np.empty(8, np.float32)
    mn8 = np.empty(8, np.float32)
    sw8 = np.empty(8, np.float32)
    Ls = np.empty(8, np.uint8)
    Lm = np.empty(8, np.uint8)
    if use_im:
        _to_lanes(qw, 32, G, qwt)
    for r in range(rows):
        xr = x[r]
        y = out[r]
        _q45k_row(xr, qwt, use_im, nmax, rmin_ref, nstep_ref, clamp_im, y, nbytes,
                  xt, wt, Lt, Lat, L, S, sw, sig, sc8, mn8, sw8, Ls, Lm)
        if nbytes == Q4_K_BYTES:
            # Q4_K qs at o+16: byte 32h + l = L[64h + l] | L[64h + 32 + l] << 4
            for ib in range(nb):
                o = ib * Q4_K_BYTES
                s = ib * QK_K
                for h in range(4):
                    for l in range(32):
                        y[o + 16 + 32 * h + l] = (np.int64(L[s + 64 * h + l])
                                                  | (np.int64(L[s + 64 * h + 32 + l]) << 4)) & 0xFF
        else:
            # Q5_K: qh at o+16 (bit 2h / 2h+1 of qh[l]: 5th bit of weight 64h + l / 64h + 32 + l),
            # low nibbles at o+48 as in Q4_K
            for ib in range(nb):
                o = ib * Q5_K_BYTES
                s = ib * QK_K
                for l in range(32):
                    y[o + 16 + l] = 0
                for h in range(4):
                    m1 = np.int64(1) << (2 * h)
                    m2 = np.int64(2) << (2 * h)
                    for l in range(32):
                        l1 = np.int64(L[s + 64 * h + l])
                        l2 = np.int64(L[s + 64 * h + 32 + l])
                        qh = np.int64(y[o + 16 + l])
                        if l1 > 15:
                            l1 -= 16
                            qh |= m1
                        if l2 > 15:
                            l2 -= 16
                            qh |= m2
                        y[o + 16 + l] = qh & 0xFF
                        y[o + 48 + 32 * h + l] = (l1 | (l2 << 4)) & 0xFF
    return out


@njit(**_JIT)
def quantize_q4_k(x, qw):
    # ref: make_qkx2_quants(32, 15, .., -1.0, 0.1, 20); imatrix: no MIN(63) on Ls/Lm
    return _q45k(x, qw, _I15, _RMIN_Q4, _I20, _I0, _I144)


@njit(**_JIT)
def quantize_q5_k(x, qw):
    # ref: make_qkx2_quants(32, 31, .., -0.5, 0.1, 15); imatrix: MIN(63) on Ls/Lm
    return _q45k(x, qw, _I31, _RMIN_Q5, _I15, _I1, _I176)


@njit(**_JIT)
def dequantize_q4_k(packed, cols):
    rows = packed.shape[0]
    if cols % QK_K != 0 or packed.shape[1] != cols // QK_K * Q4_K_BYTES:
        raise ValueError("Q4_K: packed row size does not match cols")
    nb = cols // QK_K
    out = _empty_f32(rows, cols)
    for r in range(rows):
        p = packed[r]
        y = out[r]
        for ib in range(nb):
            o = ib * Q4_K_BYTES
            s = ib * QK_K
            d = _get_half(p, o)
            dmin = _get_half(p, o + 2)
            for h in range(4):
                sc, m = _scale_min_k4(2 * h, p, o + 4)
                d1 = d * np.float32(sc)
                m1 = dmin * np.float32(m)
                sc, m = _scale_min_k4(2 * h + 1, p, o + 4)
                d2 = d * np.float32(sc)
                m2 = dmin * np.float32(m)
                q0 = o + 16 + 32 * h
                for l in range(32):
                    y[s + 64 * h + l] = d1 * np.float32(p[q0 + l] & np.uint8(0xF)) - m1
                for l in range(32):
                    y[s + 64 * h + 32 + l] = d2 * np.float32(p[q0 + l] >> np.uint8(4)) - m2
    return out


@njit(**_JIT)
def dequantize_q5_k(packed, cols):
    rows = packed.shape[0]
    if cols % QK_K != 0 or packed.shape[1] != cols // QK_K * Q5_K_BYTES:
        raise ValueError("Q5_K: packed row size does not match cols")
    nb = cols // QK_K
    out = _empty_f32(rows, cols)
    for r in range(rows):
        p = packed[r]
        y = out[r]
        for ib in range(nb):
            o = ib * Q5_K_BYTES
            s = ib * QK_K
            d = _get_half(p, o)
            dmin = _get_half(p, o + 2)
            for h in range(4):
                sc, m = _scale_min_k4(2 * h, p, o + 4)
                d1 = d * np.float32(sc)
                m1 = dmin * np.float32(m)
                sc, m = _scale_min_k4(2 * h + 1, p, o + 4)
                d2 = d * np.float32(sc)
                m2 = dmin * np.float32(m)
                q0 = o + 48 + 32 * h
                b1 = 2 * h
                for l in range(32):
                    q = (np.int64(p[q0 + l]) & 0xF) | (((np.int64(p[o + 16 + l]) >> b1) & 1) << 4)
                    y[s + 64 * h + l] = d1 * np.float32(q) - m1
                for l in range(32):
                    q = (np.int64(p[q0 + l]) >> 4) | (((np.int64(p[o + 16 + l]) >> (b1 + 1)) & 1) << 4)
                    y[s + 64 * h + 32 + l] = d2 * np.float32(q) - m2
    return out


# ------------------------------------------------------------------------------ Q4_1 / Q5_1 imatrix
@njit(**_JIT)
def _legacy_imatrix(x, qw, nmax, nbytes):
    """quantize_row_q{4,5}_1_impl for every row: codes, d = scale, m = min (fp16) per block."""
    rows, cols = x.shape
    nb = cols // 32
    G = nb                                             # lanes = the row's blocks of 32
    out = _empty_u8(rows, nb * nbytes)
    xt = np.empty(cols, np.float32)
    wt = np.empty(cols, np.float32)
    qwt = np.empty(cols, np.float32)
    Lt = np.empty(cols, np.uint8)
    Lat = np.empty(cols, np.uint8)
    L = np.empty(cols, np.uint8)
    S = np.empty(_NS * G, np.float32)
    _to_lanes(qw, 32, G, qwt)
    fcols = np.float32(cols)
    for r in range(rows):
        xr = x[r]
        y = out[r]
        sum_x2 = _F0                                   # sigma2 over the whole row
        for j in range(cols):
            sum_x2 += xr[j] * xr[j]
        sigma2 = sum_x2 / fcols
        _to_lanes(xr, 32, G, xt)
        for k in range(cols):
            xv = xt[k]
            wt[k] = qwt[k] * np.sqrt(sigma2 + xv * xv)
        _search_lanes(32, G, nmax, xt, wt, Lt, Lat, S, _RMIN_IM, _RDELTA_IM, _I36, False, True)
        _from_lanes(Lt, 32, G, L)
        for ib in range(nb):
            o = ib * nbytes
            s = ib * 32
            the_min = -S[_MN * G + ib]
            _put_half(y, o, S[_SC * G + ib])
            _put_half(y, o + 2, -the_min)
            if nbytes == Q4_1_BYTES:
                for j in range(16):
                    y[o + 4 + j] = (np.int64(L[s + j]) | (np.int64(L[s + j + 16]) << 4)) & 0xFF
            else:
                qh = np.int64(0)
                for j in range(16):
                    x0 = np.int64(L[s + j])
                    x1 = np.int64(L[s + j + 16])
                    y[o + 8 + j] = ((x0 & 0xF) | ((x1 & 0xF) << 4)) & 0xFF
                    qh |= ((x0 & 0x10) >> 4) << j
                    qh |= ((x1 & 0x10) >> 4) << (j + 16)
                for k in range(4):
                    y[o + 4 + k] = (qh >> (8 * k)) & 0xFF
    return out


@njit(**_JIT)
def quantize_q4_1_imatrix(x, qw):
    """ggml_quantize_chunk(Q4_1, x, imatrix=qw); qw of length 0 = no imatrix (the _ref path)."""
    _check(x, qw, 32)
    if qw.size == 0:
        return quantize_q4_1(x)
    return _legacy_imatrix(x, qw, _I15, np.int64(Q4_1_BYTES))


@njit(**_JIT)
def quantize_q5_1_imatrix(x, qw):
    """ggml_quantize_chunk(Q5_1, x, imatrix=qw); qw of length 0 = no imatrix (the _ref path)."""
    _check(x, qw, 32)
    if qw.size == 0:
        return quantize_q5_1(x)
    return _legacy_imatrix(x, qw, _I31, np.int64(Q5_1_BYTES))


# name -> (quantize, dequantize, block size, block bytes)
KERNELS = {
    "Q2_K": (quantize_q2_k, dequantize_q2_k, QK_K, Q2_K_BYTES),
    "Q4_K": (quantize_q4_k, dequantize_q4_k, QK_K, Q4_K_BYTES),
    "Q5_K": (quantize_q5_k, dequantize_q5_k, QK_K, Q5_K_BYTES),
}
IMATRIX_LEGACY = {"Q4_1": quantize_q4_1_imatrix, "Q5_1": quantize_q5_1_imatrix}

# block bytes: kernels/ggml_types.py (the structs' fields, checked there)
