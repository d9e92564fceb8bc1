"""Numba kernels of ik_llama.cpp's IQ4_KS and IQ4_KSS (the ``iqk`` family,
``workbench/families/iqk.py``, documents the layout and the algorithm). Kept apart from the
family module so that parsing a name, as the dashboard does for every format, never loads
Numba: the codec imports this module on first use."""
from __future__ import annotations

import numpy as np
from numba import njit

TYPES_KS, TYPES_KSS = 136, 128                  # bytes per super-block of 256
QK_K, BLOCK = 256, 32

# ik_llama.cpp ggml-common.h iq4k_values: IQ4_NL's grid, then the same + 4
IQ4K_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
                        -123, -100, -79, -61, -45, -31, -18, -6, 5, 17, 29, 42, 57, 73, 93, 117], np.int32)
# ik_llama.cpp iqk_quantize.cpp iq4nl_index: nearest level of the grid by the integer part of
# x - values[0] (16 + i: between levels i and i + 1, decided by a float compare)
_INDEX = np.array([
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 16, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    17, 17, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 18, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    3, 3, 3, 3, 19, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 20, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 21,
    21, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 22, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 23, 23, 8, 8, 8, 8, 8, 8, 8, 8,
    8, 8, 24, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 25, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 26, 26,
    11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 27, 27, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    12, 12, 12, 28, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 29, 14, 14, 14,
    14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 30, 15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15], np.int32)
assert _INDEX.size == 241

F0, F1, F127 = np.float32(0.0), np.float32(1.0), np.float32(127.0)
LARGE = np.float32(2.0 ** 16)


# ------------------------------------------------------------------------------- kernels
@njit(cache=True, nogil=True, inline="always")
def _best(values, off, x):
    """ik_llama's best_index_iq4nl: the index of values[off:off+16] nearest to x."""
    v0 = values[off]
    ix = np.int64(x) - v0                      # C's (int)x: truncation toward zero
    if ix < 0 or ix >= 241:
        return 0 if ix < 0 else 15
    ix = _INDEX[ix]
    if ix < 16:
        return ix
    lo, hi = np.float32(values[off + ix - 16]), np.float32(values[off + ix - 15])
    return ix - 16 if x - lo < hi - x else ix - 15


@njit(cache=True, nogil=True)
def _weights(xbl, j0, imp, sigma2, w):
    """The 32 weights of the block at xbl[j0:j0+32]: x² or qw·sqrt(sigma2 + x²)."""
    for j in range(BLOCK):
        x = xbl[j0 + j]
        if imp.size:
            w[j] = imp[j0 + j] * np.float32(np.sqrt(sigma2 + x * x))
        else:
            w[j] = x * x


@njit(cache=True, nogil=True)
def _sigma2(xbl):
    s = F0
    for j in range(QK_K):
        s += xbl[j] * xbl[j]
    return s * (np.float32(2.0) / np.float32(QK_K))


@njit(cache=True, nogil=True)
def _eval(xb, w, values, off, inv):
    p = p2 = m = m2 = F0
    for j in range(BLOCK):
        al = inv * xb[j]
        q = np.float32(values[off + _best(values, off, al)])
        p += w[j] * q * xb[j]
        p2 += w[j] * q * q
        q = np.float32(values[off + _best(values, off, -al)])
        m += w[j] * q * xb[j]
        m2 += w[j] * q * q
    return p, p2, m, m2


@njit(cache=True, nogil=True)
def _amax(xb):
    amax, mx = F0, F0
    for j in range(BLOCK):
        a = abs(xb[j])
        if a > amax:
            amax, mx = a, xb[j]
    return amax, mx


@njit(cache=True, nogil=True, inline="always")
def _block(xbl, ibl, ib, imp, sigma2, w):
    """Block ib of super-block xbl (number ibl), its weights into w."""
    _weights(xbl, ib * BLOCK, imp[ibl * QK_K:(ibl + 1) * QK_K] if imp.size else imp, sigma2, w)
    return xbl[ib * BLOCK:(ib + 1) * BLOCK]


@njit(cache=True, nogil=True, inline="always")
def _scale_byte(inv, s):
    """The block byte's scale bits: (l + 127) for the odd l nearest s / d (inv = 1 / d)."""
    return min(max(np.int64(np.rint(np.float32(0.5) * (inv * s + F127))), 0), 127) << 1


@njit(cache=True, nogil=True)
def quantize_ks_row(x, imp, out, pos):
    """One row of IQ4_KS into out[pos:]; returns the end position."""
    n = x.size
    nsb = n // QK_K
    scales = np.zeros(n // BLOCK, np.float32)
    w = np.empty(BLOCK, np.float32)
    amax_scale = F0
    head = pos
    pos += 4
    for ibl in range(nsb):
        xbl = x[ibl * QK_K:(ibl + 1) * QK_K]
        base = pos + ibl * TYPES_KS
        for k in range(TYPES_KS):
            out[base + k] = 0
        sigma2 = _sigma2(xbl) if imp.size else F0
        for ib in range(QK_K // BLOCK):
            xb = _block(xbl, ibl, ib, imp, sigma2, w)
            amax, mx = _amax(xb)
            if amax < np.float32(1e-16):
                scales[ibl * 8 + ib] = F0
                continue
            d = -mx / np.float32(IQ4K_VALUES[0])
            p, p2, m, m2 = _eval(xb, w, IQ4K_VALUES, 0, F1 / d)
            d = p / p2
            best = d * p
            shifted = False
            if m2 > 0 and m * m > best * m2:
                d = m / m2
                best = d * m
            for itry in range(-7, 8):
                for off in (0, 16):
                    p, p2, m, m2 = _eval(xb, w, IQ4K_VALUES, off,
                                         np.float32(itry + IQ4K_VALUES[off]) / mx)
                    if p2 > 0 and p * p > best * p2:
                        d = p / p2
                        best = d * p
                        shifted = off == 16
                    if m2 > 0 and m * m > best * m2:
                        d = m / m2
                        best = d * m
                        shifted = off == 16
            if shifted:
                out[base + ib] = 1
            scales[ibl * 8 + ib] = d
            amax_scale = max(amax_scale, abs(d))
    d = amax_scale / F127
    _put_f32(out, head, d)
    if d == 0:
        return pos + nsb * TYPES_KS
    inv = F1 / d
    sumqx = sumq2 = F0
    w2 = np.empty(BLOCK, np.float32)
    for ibl in range(nsb):
        xbl = x[ibl * QK_K:(ibl + 1) * QK_K]
        base = pos + ibl * TYPES_KS
        sigma2 = _sigma2(xbl) if imp.size else F0
        for ib in range(QK_K // BLOCK):
            xb = _block(xbl, ibl, ib, imp, sigma2, w2)
            off = 16 if out[base + ib] & 1 else 0
            li = _scale_byte(inv, scales[ibl * 8 + ib])
            out[base + ib] |= li
            li -= 127
            dl = d * np.float32(li)
            idl = F1 / dl if dl != 0 else F0
            for j in range(16):
                i1 = _best(IQ4K_VALUES, off, idl * xb[j])
                i2 = _best(IQ4K_VALUES, off, idl * xb[j + 16])
                out[base + 8 + 16 * ib + j] = i1 | (i2 << 4)
                q1 = np.float32(IQ4K_VALUES[off + i1] * li)
                q2 = np.float32(IQ4K_VALUES[off + i2] * li)
                sumqx += w2[j] * q1 * xb[j] + w2[j + 16] * q2 * xb[j + 16]
                sumq2 += w2[j] * q1 * q1 + w2[j + 16] * q2 * q2
    if sumq2 > 0:
        _put_f32(out, head, sumqx / sumq2)
    return pos + nsb * TYPES_KS



@njit(cache=True, nogil=True, inline="always")
def _put_f32(out, pos, v):
    b = np.array([v], np.float32).view(np.uint8)
    for k in range(4):
        out[pos + k] = b[k]


@njit(cache=True, nogil=True, inline="always")
def _popcount(v):
    c = 0
    while v:
        c += v & 1
        v >>= 1
    return c


@njit(cache=True, nogil=True)
def _prune(v, values, off, xv, wv, dl):
    """ik_llama's prune_iq4ks: a nibble word of odd parity gets the cheapest change of one
    quant by ±1 or ±2 levels that makes the parity even (its reference error uses the
    unshifted grid, as the source does)."""
    if _popcount(v) % 2 == 0:
        return v
    best = np.float32(np.inf)
    jbest, qbest = -1, 0
    for j in range(4):
        q = (v >> (4 * j)) & 0xF
        pc = _popcount(q)
        diff0 = dl * np.float32(IQ4K_VALUES[q]) - xv[j]
        for iq in range(max(q - 2, 0), min(q + 2, 15) + 1):
            if iq == q:
                continue
            if abs(_popcount(iq) - pc) % 2 == 1:
                diff1 = dl * np.float32(values[off + iq]) - xv[j]
                score = wv[j] * (diff1 * diff1 - diff0 * diff0)
                if score < best:
                    best, jbest, qbest = score, j, iq
    return (v & ~(0xF << (4 * jbest))) | (qbest << (4 * jbest))


@njit(cache=True, nogil=True, inline="always")
def _group(xb, w, k, xv, wv):
    for j, src in enumerate((2 * k, 2 * k + 16, 2 * k + 1, 2 * k + 17)):
        xv[j] = xb[src]
        wv[j] = w[src]


@njit(cache=True, nogil=True)
def _scramble(v):
    """g with g ^ (g << 1) == v (v of even parity): bit k of g is the XOR of bits 0..k of v."""
    g, acc = 0, 0
    for k in range(15):
        acc ^= (v >> k) & 1
        g |= acc << k
    return g


@njit(cache=True, nogil=True)
def quantize_kss_row(x, imp, out, pos):
    """One row of IQ4_KSS into out[pos:]; returns the end position."""
    n = x.size
    nsb = n // QK_K
    scales = np.zeros(n // BLOCK, np.float32)
    w = np.empty(BLOCK, np.float32)
    xv = np.empty(4, np.float32)
    wv = np.empty(4, np.float32)
    amax_scale = F0
    head = pos
    pos += 4
    _put_f32(out, head, F0)
    for k in range(nsb * TYPES_KSS):
        out[pos + k] = 0
    for ibl in range(nsb):
        xbl = x[ibl * QK_K:(ibl + 1) * QK_K]
        sigma2 = _sigma2(xbl) if imp.size else F0
        for ib in range(QK_K // BLOCK):
            xb = _block(xbl, ibl, ib, imp, sigma2, w)
            amax, mx = _amax(xb)
            if amax < np.float32(1e-16):
                scales[ibl * 8 + ib] = F0
                continue
            best = F0
            d = -mx / np.float32(IQ4K_VALUES[0])
            for itry in range(-7, 8):
                for off in (0, 16):
                    inv = np.float32(itry + IQ4K_VALUES[off]) / mx
                    this_d = F1 / inv
                    p = p2 = m = m2 = F0
                    for k in range(8):
                        _group(xb, w, k, xv, wv)
                        vp = vm = 0
                        for j in range(4):
                            al = inv * xv[j]
                            vp |= _best(IQ4K_VALUES, off, al) << (4 * j)
                            vm |= _best(IQ4K_VALUES, off, -al) << (4 * j)
                        vp = _prune(vp, IQ4K_VALUES, off, xv, wv, this_d)
                        vm = _prune(vm, IQ4K_VALUES, off, xv, wv, this_d)
                        for j in range(4):
                            q = np.float32(IQ4K_VALUES[off + ((vp >> (4 * j)) & 0xF)])
                            p += wv[j] * q * xv[j]
                            p2 += wv[j] * q * q
                            q = np.float32(IQ4K_VALUES[off + ((vm >> (4 * j)) & 0xF)])
                            m += wv[j] * q * xv[j]
                            m2 += wv[j] * q * q
                    if p2 > 0 and p * p > best * p2:
                        d = p / p2
                        best = d * p
                    if m2 > 0 and m * m > best * m2:
                        d = m / m2
                        best = d * m
            scales[ibl * 8 + ib] = d
            amax_scale = max(amax_scale, abs(d))
    d = amax_scale / F127
    _put_f32(out, head, d)
    if d == 0:
        return pos + nsb * TYPES_KSS
    inv = F1 / d
    sumqx = sumq2 = F0
    vps = np.empty(8, np.int64)
    vms = np.empty(8, np.int64)
    for ibl in range(nsb):
        xbl = x[ibl * QK_K:(ibl + 1) * QK_K]
        base = pos + ibl * TYPES_KSS
        sigma2 = _sigma2(xbl) if imp.size else F0
        for ib in range(QK_K // BLOCK):
            xb = _block(xbl, ibl, ib, imp, sigma2, w)
            li = _scale_byte(inv, scales[ibl * 8 + ib]) - 127
            dl = d * np.float32(li)
            idl = F1 / dl
            mse_p = mse_m = F0
            for k in range(8):
                _group(xb, w, k, xv, wv)
                vp = vm = 0
                for j in range(4):
                    al = idl * xv[j]
                    vp |= _best(IQ4K_VALUES, 0, al) << (4 * j)
                    vm |= _best(IQ4K_VALUES, 16, al) << (4 * j)
                vp = _prune(vp, IQ4K_VALUES, 0, xv, wv, dl)
                vm = _prune(vm, IQ4K_VALUES, 16, xv, wv, dl)
                for j in range(4):
                    e = xv[j] - dl * np.float32(IQ4K_VALUES[(vp >> (4 * j)) & 0xF])
                    mse_p += wv[j] * e * e
                    e = xv[j] - dl * np.float32(IQ4K_VALUES[16 + ((vm >> (4 * j)) & 0xF)])
                    mse_m += wv[j] * e * e
                vps[k], vms[k] = vp, vm
            shifted = mse_m < mse_p
            off = 16 if shifted else 0
            byte = (li + 127) | (1 if shifted else 0)
            for k in range(8):
                _group(xb, w, k, xv, wv)
                v = vms[k] if shifted else vps[k]
                for j in range(4):
                    q = np.float32(IQ4K_VALUES[off + ((v >> (4 * j)) & 0xF)] * li)
                    sumqx += wv[j] * q * xv[j]
                    sumq2 += wv[j] * q * q
                word = (_scramble(v & 0x7FFF) << 1) | ((byte >> k) & 1)
                at = base + 2 * (8 * ib + k)
                out[at] = word & 0xFF
                out[at + 1] = word >> 8
    if sumq2 > 0:
        _put_f32(out, head, (sumqx / sumq2) * np.float32(1.01))
    return pos + nsb * TYPES_KSS


@njit(cache=True, nogil=True)
def quantize(x, imp, kss, out):
    """All rows into out; returns the bytes written. A row whose absmax exceeds 2^16 (where the
    float32 sums of w·x² of the search overflow: from about 1e13) is quantized as x / 2^k, its
    absmax in [1, 2), and its row scale multiplied back by 2^k: a power of two is exact, and the
    search's choices do not depend on a common scale of x and its weights. Rows up to 2^16 run
    unchanged, as ik_llama.cpp's code does (all real weights)."""
    pos = 0
    for r in range(x.shape[0]):
        row = x[r]
        amax = F0
        for v in row:
            amax = max(amax, abs(v))
        k = 0
        if amax > LARGE:
            k = int(np.floor(np.log2(np.float64(amax))))
            row = (row.astype(np.float64) * 2.0 ** -k).astype(np.float32)
        head = pos
        if kss:
            pos = quantize_kss_row(row, imp, out, pos)
        else:
            pos = quantize_ks_row(row, imp, out, pos)
        if k:
            d = out[head:head + 4].copy().view(np.float32)[0]
            _put_f32(out, head, np.float32(np.float64(d) * 2.0 ** k))
    return pos


@njit(cache=True, nogil=True)
def dequantize(packed, rows, cols, kss, y):
    per = TYPES_KSS if kss else TYPES_KS
    pos = 0
    nib = np.zeros(16, np.int64)
    for r in range(rows):
        d = packed[pos:pos + 4].copy().view(np.float32)[0]
        pos += 4
        for ibl in range(cols // QK_K):
            base = pos + ibl * per
            for ib in range(QK_K // BLOCK):
                if kss:
                    byte = 0
                    for k in range(8):
                        word = np.int64(packed[base + 2 * (8 * ib + k)]) | (np.int64(packed[base + 2 * (8 * ib + k) + 1]) << 8)
                        byte |= (word & 1) << k
                        a = word & 0xFFFE
                        a ^= a >> 1
                        nib[2 * k] = a & 0xFF
                        nib[2 * k + 1] = a >> 8
                else:
                    byte = np.int64(packed[base + ib])
                off = 16 if byte & 1 else 0
                dl = d * np.float32((byte & 254) - 127)
                j0 = ibl * QK_K + ib * BLOCK
                for j in range(16):
                    q = nib[j] if kss else np.int64(packed[base + 8 + 16 * ib + j])
                    y[r, j0 + j] = dl * np.float32(IQ4K_VALUES[off + (q & 0xF)])
                    y[r, j0 + j + 16] = dl * np.float32(IQ4K_VALUES[off + (q >> 4)])
        pos += (cols // QK_K) * per
    return pos
