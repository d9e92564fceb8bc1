"""Codebook (non-uniform) block quantizers in Numba: one scale per block, each element rounded
to the nearest level of a code. Two kinds of code:

* ``TABLE``: a sorted table of 16 levels in [-1, 1] (NF4, FP4, AF4, LM4): bitsandbytes'
  ``quantize_4bit`` rule. ``v = clamp(x * (1 / max(d, 1e-38)), -1, 1)`` in float32, ``d`` the
  block's absmax as its scale encoding decodes it (f32: the absmax itself). The level index is
  ``torch.bucketize(v, midpoints)`` (right=False: a value on a midpoint takes the lower level);
  the stored code maps the sorted index through ``store`` (bitsandbytes' bit patterns for its FP4).
* ``FLOAT`` / ``INT``: an element type in sign-magnitude (E2M1, E2M3, E3M2, E4M3, E5M2) or
  two's complement (MXINT8): ``levels`` its non-negative values by magnitude code. ``v = x * R``,
  ``|v|`` saturates at the largest level and rounds to the nearest level, a tie to the even code
  (round half to even); the sign bit is x's own (so -0 and a small negative are S.000).

The block scale and R (the reciprocal the elements are multiplied by) per scale mode:

=============  ===============================================================================
``BNB``        TABLE codes: the absmax in the scale encoding (e8m0: rounded up to a power of
               two; e4m3/e5m2: relative to the per-tensor normalizer), R = 1 / max(d, 1e-38)
``OCP``        e8m0, OCP MX v1.0 §6.3: X = 2^(floor(log2 amax) - emax), emax = the element
               type's largest exponent, clamped to [2^-127, 2^127]; R = 1/X exactly
``RCEIL``      e8m0, rounded up: X = 2^ceil(log2(amax / max_level)), so no element clips
               (NVIDIA's cvt.rp.satfinite.ue8m0 rule, recommended by its MXFP8 recipe)
``SCALED``     any other encoding: s = amax / max_level (fp8: s / N, N the per-tensor f32 scale
               max|x| / (max_level * max_finite), as NVFP4), stored round-to-nearest;
               R = (1 / N) / s8 and d = N * s8 (fp8), R = 1 / d (others); a zero scale gives R = 0,
               and where R overflows (a subnormal scale) the elements are x / d instead
=============  ===============================================================================

Decoding is ``value[code] * d`` in float32.

Normalizations of TABLE codes (``norm`` below; the scale encodings as in ``BNB``):

=============  ===============================================================================
``ABSMAX``     bitsandbytes: d = the block's absmax (above)
``SMAX``       signed max (BOF4-S): d = the block's element of largest magnitude with its sign
               (the first on a tie), so that element maps to +1 exactly; R = 1 / d
``MINMAX``     per-block min/max: two parameters, h = (max - min) / 2 and m = (max + min) / 2,
               each stored in the scale encoding; v = clamp((x - m') R, -1, 1) with R = 1 / h'
               (the primes: as decoded), decoded ``value[code] * h' + m'``
``HQQ``        MINMAX with m chosen by HQQ's half-quadratic solver (``_hqq_offset``)
=============  ===============================================================================

Packed layout of one tensor (``workbench.families.codebook`` has the closed-form sizes; the
tests check them against these bytes):

    header : f32 per-tensor scale N (fp8 scale encodings only)
    rows × blocks, each block:  scale (in the scale encoding) [| offset m (MINMAX, HQQ)] |
                                codes (``width`` bits each, an MSB-first bit stream,
                                zero-padded to a whole byte)

With 4-bit codes the stream is bitsandbytes' order (the first element in the high nibble), so an
f32-scaled NF4/FP4 block's bytes are bitsandbytes' bytes. A short last block in a row has its
own scale (the row-length policy of formats.py).

bitsandbytes' double quantization (``quantize_4bit(compress_statistics=True)``) is
``quantize_dq``: the element codes are computed against the f32 absmax as above; then the
absmax vector (row-major over all blocks) minus its mean ``offset`` is quantized in groups of
256 to bitsandbytes' 8-bit dynamic code (``codes.DYN8``): ``n = (a - offset) / a2`` with
``a2`` the group's max |a - offset| (f32), its nearest code (the left one on a tie, as
bitsandbytes' CPU quantizer). The decoded scale is ``DYN8[q] * a2 + offset``. Layout:

    header : offset (f32) | a2 (f32) × ceil(blocks / 256)
    rows × blocks, each block:  q (1 byte) | codes (4 bits each)
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from workbench.kernels import hqq
from workbench.kernels.bitpack import get_le, msb_end, msb_pull, msb_push, put_le

from workbench.kernels.scales import E8M0, _bits, decode, encode, encode_e8m0_ceil

ABSMAX_FLOOR = np.float32(1e-38)     # bitsandbytes: absmax.clamp(min=1e-38)
TABLE, FLOAT, INT = 0, 1, 2          # code kinds
BNB, OCP, RCEIL, SCALED = 0, 1, 2, 3  # scale modes
ABSMAX, SMAX, MINMAX, HQQ = 0, 1, 2, 3  # normalizations of TABLE codes (mode BNB)


@njit(cache=True, nogil=True, inline="always")
def _bucket(bounds, v):
    """bisect: the number of bounds strictly below v (torch.bucketize, right=False)."""
    lo, hi = 0, bounds.size
    while lo < hi:
        mid = (lo + hi) >> 1
        if bounds[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True, inline="always")
def _element(x, r, d, kind, bounds, store, top, width):
    """The stored code of one element x, multiplied by r (divided by d where r = 1/d overflows:
    a subnormal scale)."""
    if kind == TABLE:
        v = min(max(x * r, np.float32(-1.0)), np.float32(1.0))
        return np.uint32(store[_bucket(bounds, v)])
    a = min(abs(x * r if r < np.inf else x / d), top)
    k = _bucket(bounds, a)
    if k < bounds.size and bounds[k] == a and (k + 1) % 2 == 0:
        k += 1                                 # a tie: to the even code
    neg = math.copysign(1.0, x) < 0
    if kind == INT:
        return np.uint32((-k) & 0xFF) if neg else np.uint32(k)
    return np.uint32(k | (1 << (width - 1))) if neg else np.uint32(k)


@njit(cache=True, nogil=True)
def _scale_of(amax, mode, enc, max_finite, top, emax, norm):
    """(stored code, decoded scale d, reciprocal R) of one block's absmax."""
    if mode == OCP or mode == RCEIL:
        if mode == OCP:
            e = np.int64((_bits(amax) >> 23) & 0xFF) - 127 - emax   # floor(log2), as the spec
        else:
            e = np.int64(encode_e8m0_ceil(np.float32(amax / top))) - 127
        e = min(max(e, -127), 127)
        code = np.uint32(e + 127)
        return code, decode(code, E8M0), np.float32(2.0 ** (-e))
    if mode == BNB:
        if enc == E8M0:
            code = encode_e8m0_ceil(amax)
            d = decode(code, enc)
        else:
            s = amax / norm if norm != np.float32(1.0) else amax
            code = encode(min(s, max_finite), enc)
            d = decode(code, enc)
            if norm != np.float32(1.0):
                d = np.float32(d * norm)
        return code, d, np.float32(1.0) / max(d, ABSMAX_FLOOR)
    # SCALED
    t = np.float32(amax / top)
    if norm != np.float32(1.0):
        code = encode(min(np.float32(t / norm), max_finite), enc)
        s8 = decode(code, enc)
        if s8 == 0:
            return code, np.float32(0.0), np.float32(0.0)
        return code, np.float32(norm * s8), np.float32(np.float32(np.float32(1.0) / norm) / s8)
    code = encode(min(t, max_finite), enc)
    d = decode(code, enc)
    if d == 0:
        return code, d, np.float32(0.0)
    return code, d, np.float32(1.0) / d


@njit(cache=True, nogil=True)
def tensor_normalizer(x, top, max_finite):
    """The per-tensor f32 scale of fp8 block scales: max |x| / (top * max_finite) (1 for an
    all-zero tensor)."""
    m = np.float32(0.0)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            a = abs(x[i, j])
            if a > m:
                m = a
    if m == 0:
        return np.float32(1.0)
    return np.float32(m / np.float32(top * max_finite))


@njit(cache=True, nogil=True)
def _codes(row, rcp, d, b0, n, kind, bounds, store, top, width, out, pos):
    """The codes of row[b0:b0+n] times rcp, as an MSB-first bit stream from out[pos]."""
    acc = np.uint64(0)
    nacc = 0
    for j in range(n):
        code = _element(row[b0 + j], rcp, d, kind, bounds, store, top, width)
        pos, acc, nacc = msb_push(out, pos, acc, nacc, code, width)
    return msb_end(out, pos, acc, nacc)


@njit(cache=True, nogil=True)
def _param(v, enc, max_finite, norm):
    """(code, decoded) of a signed parameter in a signed scale encoding (fp8: relative to the
    per-tensor scale ``norm``), saturating at the encoding's largest finite value."""
    s = np.float32(v / norm) if norm != np.float32(1.0) else np.float32(v)
    code = encode(min(max(s, -max_finite), max_finite), enc)
    d = decode(code, enc)
    if norm != np.float32(1.0):
        d = np.float32(d * norm)
    return code, d


@njit(cache=True, nogil=True)
def _hqq_offset(row, b0, n, r, h, m, levels, bounds):
    """HQQ's zero-point optimisation (mobiusml/hqq ``optimize_weights_proximal``: minimise
    sum |x - Q^-1(Q(x))|^p, p = 0.7, by half-quadratic splitting) for a table code with the
    block's half-range h fixed as decoded (R = 1 / h): from z = -m R, each step takes the
    level q nearest clamp(x R + z, -1, 1), reconstructs (q - z) h, shrinks the error e to
    w = sign(e) max(|e| - |e|^(p-1) / beta, 0) and sets z = mean(q - (x - w) R); beta = 10, at
    most 20 steps, each block stopping when its mean |error| stops falling and keeping the
    zero that had the lowest (as ``kernels.uniform._hqq_min``). Returns the offset -z h."""
    z = np.float32(-m * r)
    best = np.inf
    best_z = z
    for _ in range(hqq.ITERS):
        err = 0.0
        acc = 0.0
        for j in range(n):
            x = row[b0 + j]
            v = min(max(np.float32(x * r + z), np.float32(-1.0)), np.float32(1.0))
            q = levels[_bucket(bounds, v)]
            e = np.float32(x - np.float32((q - z) * h))
            a = abs(e)
            w = hqq.shrink(e)
            acc += q - (x - w) * r
            err += a
        if err >= best:
            break
        best = err
        best_z = z
        z = np.float32(acc / n)
    return np.float32(-best_z * h)


_put_code = put_le      # a stored scale: little-endian (kernels.bitpack)


@njit(cache=True, nogil=True)
def quantize(x, kind, bounds, store, top, emax, width, block, mode, enc, enc_bytes, max_finite,
             norm, nmode, levels, out, pos0):
    """Quantize float32[rows, cols] into ``out`` from byte ``pos0``; returns the end position.
    ``nmode``: the normalization of a TABLE code (ABSMAX for the others); ``levels``: the
    sorted levels (HQQ reconstructs with them)."""
    rows, cols = x.shape
    pos = pos0
    for i in range(rows):
        row = x[i]
        for b0 in range(0, cols, block):
            n = min(block, cols - b0)
            if nmode == ABSMAX:
                amax = np.float32(0.0)
                for j in range(n):
                    a = abs(row[b0 + j])
                    if a > amax:
                        amax = a
                code, d, r = _scale_of(amax, mode, enc, max_finite, top, emax, norm)
                pos = _put_code(out, pos, code, enc_bytes)
                pos = _codes(row, r, d, b0, n, kind, bounds, store, top, width, out, pos)
                continue
            if nmode == SMAX:
                ext = row[b0]
                for j in range(n):
                    if abs(row[b0 + j]) > abs(ext):
                        ext = row[b0 + j]
                code, d = _param(ext, enc, max_finite, norm)
                r = np.float32(1.0) / (d if abs(d) >= ABSMAX_FLOOR else ABSMAX_FLOOR)
                pos = _put_code(out, pos, code, enc_bytes)
                pos = _codes(row, r, d, b0, n, kind, bounds, store, top, width, out, pos)
                continue
            lo = row[b0]
            hi = row[b0]
            for j in range(n):
                lo = min(lo, row[b0 + j])
                hi = max(hi, row[b0 + j])
            hcode, h = _param(np.float32((hi - lo) * np.float32(0.5)), enc, max_finite, norm)
            r = np.float32(1.0) / max(h, ABSMAX_FLOOR)
            mcode, m = _param(np.float32((hi + lo) * np.float32(0.5)), enc, max_finite, norm)
            if nmode == HQQ and h > 0:
                mcode, m = _param(_hqq_offset(row, b0, n, r, h, m, levels, bounds), enc, max_finite, norm)
            pos = _put_code(out, pos, hcode, enc_bytes)
            pos = _put_code(out, pos, mcode, enc_bytes)
            pos = _codes_offset(row, r, m, b0, n, bounds, store, width, out, pos)
    return pos


@njit(cache=True, nogil=True)
def _codes_offset(row, rcp, m, b0, n, bounds, store, width, out, pos):
    """The TABLE codes of (row[b0:b0+n] - m) times rcp, as ``_codes`` writes them."""
    acc = np.uint64(0)
    nacc = 0
    for j in range(n):
        v = min(max(np.float32((row[b0 + j] - m) * rcp), np.float32(-1.0)), np.float32(1.0))
        pos, acc, nacc = msb_push(out, pos, acc, nacc, store[_bucket(bounds, v)], width)
    return msb_end(out, pos, acc, nacc)


@njit(cache=True, nogil=True)
def _decode_block(packed, pos, n, width, values, d, y, b0):
    acc = np.uint64(0)
    nacc = 0
    for j in range(n):
        c, pos, acc, nacc = msb_pull(packed, pos, acc, nacc, width)
        y[b0 + j] = values[c] * d
    return pos


@njit(cache=True, nogil=True)
def _get_param(packed, pos, enc, enc_bytes, mode, norm):
    d = decode(get_le(packed, pos, enc_bytes), enc)
    if mode != OCP and mode != RCEIL and enc != E8M0 and norm != np.float32(1.0):
        d = np.float32(d * norm)
    return d


@njit(cache=True, nogil=True)
def dequantize(packed, rows, cols, values, width, block, mode, enc, enc_bytes, norm, nmode, pos0, y):
    """Decode the bytes ``quantize`` wrote into float32 y[rows, cols]."""
    pos = pos0
    offset = nmode == MINMAX or nmode == HQQ
    for i in range(rows):
        row = y[i]
        for b0 in range(0, cols, block):
            n = min(block, cols - b0)
            d = _get_param(packed, pos, enc, enc_bytes, mode, norm)
            pos += enc_bytes
            if not offset:
                pos = _decode_block(packed, pos, n, width, values, d, row, b0)
                continue
            m = _get_param(packed, pos, enc, enc_bytes, mode, norm)
            pos += enc_bytes
            pos = _decode_block(packed, pos, n, width, values, d, row, b0)
            for j in range(n):
                row[b0 + j] = np.float32(row[b0 + j] + m)
    return pos


# ----------------------------------------------------------- bitsandbytes' double quantization
@njit(cache=True, nogil=True)
def block_absmax(x, block):
    """Every block's absmax, row-major (float32[rows * blocks per row])."""
    rows, cols = x.shape
    per = (cols + block - 1) // block
    out = np.empty(rows * per, np.float32)
    for i in range(rows):
        for b in range(per):
            b0 = b * block
            amax = np.float32(0.0)
            for j in range(b0, min(b0 + block, cols)):
                a = abs(x[i, j])
                if a > amax:
                    amax = a
            out[i * per + b] = amax
    return out


@njit(cache=True, nogil=True)
def dq_scales(absmax, offset, dyn, group):
    """bitsandbytes' quantize_blockwise of (absmax - offset) in groups of ``group`` to the
    sorted 256-entry code ``dyn``: (codes uint8[n], group scales float32[groups])."""
    n = absmax.size
    ng = (n + group - 1) // group
    q = np.empty(n, np.uint8)
    a2 = np.empty(ng, np.float32)
    for g in range(ng):
        lo, hi = g * group, min(n, (g + 1) * group)
        m = np.float32(0.0)
        for i in range(lo, hi):
            m = max(m, abs(np.float32(absmax[i] - offset)))
        a2[g] = m
        for i in range(lo, hi):
            if m == 0:
                v = np.float32(0.0)
            else:
                v = np.float32(np.float32(absmax[i] - offset) / m)
            # the left neighbour: the largest k with dyn[k] <= v (v is in [-1, 1] = [dyn[0], dyn[255]])
            a, b = 0, dyn.size - 1
            while a < b:
                mid = (a + b + 1) >> 1
                if dyn[mid] <= v:
                    a = mid
                else:
                    b = mid - 1
            k = a
            if k < dyn.size - 1 and abs(v - dyn[k + 1]) < abs(v - dyn[k]):
                k += 1
            q[i] = k
    return q, a2


@njit(cache=True, nogil=True)
def quantize_dq(x, bounds, store, block, absmax, q, out, pos0):
    """The element codes of a double-quantized tensor (against the f32 absmax) and each block's
    1-byte scale code q, from byte ``pos0``; returns the end position."""
    rows, cols = x.shape
    per = (cols + block - 1) // block
    pos = pos0
    for i in range(rows):
        row = x[i]
        for b in range(per):
            b0 = b * block
            n = min(block, cols - b0)
            out[pos] = q[i * per + b]
            pos += 1
            r = np.float32(1.0) / max(absmax[i * per + b], ABSMAX_FLOOR)
            pos = _codes(row, r, np.float32(1.0), b0, n, TABLE, bounds, store, np.float32(1.0), 4, out, pos)
    return pos


@njit(cache=True, nogil=True)
def dequantize_dq(packed, rows, cols, values, block, dyn, a2, offset, group, pos0, y):
    per = (cols + block - 1) // block
    pos = pos0
    for i in range(rows):
        row = y[i]
        for b in range(per):
            b0 = b * block
            n = min(block, cols - b0)
            idx = i * per + b
            d = np.float32(np.float32(dyn[packed[pos]] * a2[idx // group]) + offset)
            pos += 1
            pos = _decode_block(packed, pos, n, 4, values, d, row, b0)
    return pos


# ------------------------------------------------------------------------- the data-fitted code
@njit(cache=True, nogil=True)
def normalized_histogram(x, block, nbins, nmode=ABSMAX):
    """Histogram of every element normalized as ``nmode`` normalizes it (ABSMAX: divided by its
    block's absmax; SMAX: by the block's signed extreme; MINMAX, HQQ: minus the block's
    mid-range, divided by its half-range; in [-1, 1]) over ``nbins`` equal bins, each element
    weighted by the square of its block's scale (a block's share of the weight-space squared
    error): (weight, weighted sum of the values) per bin, float64. Each block's extreme lands
    on ±1 (+1 under SMAX; both under MINMAX); blocks of one value weigh nothing."""
    rows, cols = x.shape
    count = np.zeros(nbins, np.float64)
    total = np.zeros(nbins, np.float64)
    for i in range(rows):
        for b0 in range(0, cols, block):
            n = min(block, cols - b0)
            amax = np.float32(0.0)
            ext = x[i, b0]
            lo = x[i, b0]
            hi = x[i, b0]
            for j in range(n):
                a = abs(x[i, b0 + j])
                if a > amax:
                    amax = a
                    ext = x[i, b0 + j]
                lo = min(lo, x[i, b0 + j])
                hi = max(hi, x[i, b0 + j])
            mid = np.float32(0.0)
            if nmode == SMAX:
                amax = ext
            elif nmode == MINMAX or nmode == HQQ:
                amax = np.float32((hi - lo) * np.float32(0.5))
                mid = np.float32((hi + lo) * np.float32(0.5))
            if amax == 0:
                continue
            inv = np.float32(1.0) / amax
            w = np.float64(amax) * np.float64(amax)
            for j in range(n):
                v = min(max(np.float32(x[i, b0 + j] - mid) * inv, np.float32(-1.0)), np.float32(1.0))
                k = min(int((v + 1.0) * 0.5 * nbins), nbins - 1)
                count[k] += w
                total[k] += w * v
    return count, total
