"""ik_llama.cpp's IQ4_KS (4.25 bpw) and IQ4_KSS (4.0 bpw): a family plug-in, kernels included.

Both quantize rows whose length is a multiple of 256 (QK_K) against ik_llama.cpp's non-linear
grid ``iq4k_values`` (IQ4_NL's 16 int8 levels, and the same +4: one shift bit per block picks
the half), with a 7-bit odd block scale per 32 weights and one f32 scale per row:

    row    : f32 row scale d | super-blocks of 256
    IQ4_KS : per super-block  8 block bytes ((l + 127) | shift, l odd in [-127, 127]) |
             128 bytes of nibbles (byte j of block ib: weight j low, weight j + 16 high)
    IQ4_KSS: per super-block  64 little-endian uint16: word 8·ib + k holds the four quants of
             weights 2k, 2k+16, 2k+1, 2k+17 of block ib (a 16-bit nibble word v with an even
             number of set bits, stored in 15 bits as g with v = g ^ (g << 1)) in its bits 1..15,
             and bit k of the block byte in bit 0

    weight = d · l · grid[shift][q]

bpw: IQ4_KS 136 bytes per 256 = 4.25, IQ4_KSS 128 per 256 = 4.0, + 32 bits per row. A row
whose length 256 does not divide is written as IQ4_NL, as ik_llama's llama-quantize does
(``plan``); this workbench measures it so and records the fallback.

The quantizers follow ik_llama.cpp's ``quantize_row_iq4_k_impl_bs128`` (IQ4_KS) and
``quantize_row_iq4_kss_impl`` (IQ4_KSS, iqk_quantize.cpp) step by step, in float32: per block,
a search over 15 trial inverse scales × both halves of the grid × both signs, each judged by
its least-squares scale (weights x², or an importance matrix's qw·sqrt(2Σx²/256 + x²)); the row
scale max|block scale| / 127, the 7-bit block scales rounded to odd integers, the elements
re-quantized, and a least-squares refit of the row scale (×1.01 for IQ4_KSS). IQ4_KSS builds
its parity constraint into the search: every candidate nibble word of odd parity is repaired
by the cheapest ±1/±2 level change of one of its four quants (``_prune``), and the shift is
chosen after the block scale is fixed. No byte oracle is at hand (mainline llama.cpp has no
such types): the tests check the layout, an independent numpy decoder, the parity of every
word, and where the errors land between IQ4_XS and Q3_K.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit

NAME = "iqk"
LABEL = KIND = "ik_llama.cpp"        # the Family filter's word and the legend group
TYPES = {"IQ4_KS": 136, "IQ4_KSS": 128}        # bytes per super-block of 256
QK_K, BLOCK = 256, 32
FALLBACK = "IQ4_NL"

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


TYPES_KS, TYPES_KSS = 136, 128


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


# ------------------------------------------------------------------------------- grammar
def parse(name: str):
    from workbench.formats import FormatSpec
    if name not in TYPES:
        return None
    return FormatSpec(NAME, 4, QK_K, True, "f32", ggml_type=name)


def name(spec) -> str:
    return spec.ggml_type


def validate(spec) -> None:
    from workbench.formats import FormatError
    if spec.ggml_type not in TYPES or (spec.bits, spec.block, spec.symmetric, spec.scale) != (4, QK_K, True, "f32") \
            or spec.double or spec.search != "absmax" or spec.naive or not spec.normalizer:
        raise FormatError(f"an ik_llama.cpp type is one of {', '.join(TYPES)}, with its own layout")


def plan(spec, shape):
    """(the type written, why): rows 256 does not divide are written as IQ4_NL."""
    cols = shape[-1]
    if cols % QK_K == 0:
        return spec.ggml_type, None
    from workbench.formats import ggml_plan
    applied, why = ggml_plan(FALLBACK, cols)
    reason = f"row length {cols} is not a multiple of {spec.ggml_type}'s super-block of {QK_K}"
    return applied, f"{reason}; ik_llama's llama-quantize writes {FALLBACK}" if applied == FALLBACK else \
        f"{reason}, and {why}"


# ------------------------------------------------------------------------------- layout
def uses_normalizer(spec) -> bool:
    return False


def unit(spec) -> int:
    return QK_K


def unit_bytes(spec, n: int) -> int:
    return TYPES[spec.ggml_type]


def header_bytes(spec) -> int:
    return 0


def nbytes(spec, shape) -> int:
    rows, cols = shape
    if cols % QK_K:
        from workbench.formats import parse as parse_format
        return parse_format(FALLBACK).nbytes(shape)          # IQ4_NL (or its own fallback)
    return rows * (4 + (cols // QK_K) * TYPES[spec.ggml_type])


def nominal_bpw(spec) -> float:
    return TYPES[spec.ggml_type] * 8 / QK_K


def scale_layout(spec) -> dict:
    return {"block": BLOCK, "scale_dtype": "int7", "super_block_weights": None, "super_scale_dtype": "f32"}


# ---------------------------------------------------------------------------------- codec
def codec(spec):
    return _codec_class()(spec)


@functools.cache
def _codec_class():
    from workbench.codecs import Codec, NonFiniteError, as_kernel_input, codec_for
    from workbench.formats import parse as parse_format

    class IqkCodec(Codec):
        """IQ4_KS / IQ4_KSS rows (this module's kernels); IQ4_NL for rows 256 does not divide."""

        def _fallback(self, shape):
            return codec_for(parse_format(FALLBACK)) if shape[-1] % QK_K else None

        def uses_importance(self, shape) -> bool:
            fb = self._fallback(shape)
            return True if fb is None else fb.uses_importance(shape)

        def quantize(self, x: np.ndarray, importance: np.ndarray | None = None,
                     threads: int = 1) -> np.ndarray:
            x = as_kernel_input(x)
            if (fb := self._fallback(x.shape)) is not None:
                return fb.quantize(x, importance, threads)
            if not np.isfinite(x).all():
                raise NonFiniteError(f"{self.spec.name}: tensor has non-finite values (NaN/Inf)")
            imp = (np.ascontiguousarray(importance, np.float32).reshape(-1) if importance is not None
                   else np.zeros(0, np.float32))
            if imp.size not in (0, x.shape[1]):
                raise ValueError(f"{self.spec.name}: an importance vector of {imp.size} values for rows "
                                 f"of {x.shape[1]}")
            packed = np.empty(self.spec.nbytes(x.shape), np.uint8)
            used = quantize(x, imp, self.spec.ggml_type == "IQ4_KSS", packed)
            if used != packed.size:
                raise AssertionError(f"{self.spec.name}: wrote {used} bytes, closed form says {packed.size}")
            return packed

        def dequantize(self, packed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
            if (fb := self._fallback(shape)) is not None:
                return fb.dequantize(packed, shape)
            y = np.empty(shape, np.float32)
            dequantize(packed, shape[0], shape[1], self.spec.ggml_type == "IQ4_KSS", y)
            return y

    return IqkCodec


GRIDS = {"iqk": lambda: [parse(n) for n in TYPES]}
