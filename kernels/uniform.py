"""Uniform hyper-grid quantizers (single and double block quantization) in Numba.

Packed layout of one tensor (array of structs, like ggml; ``workbench.formats`` has the
closed-form sizes and the tests check them against these bytes):

    header : f32 normalizers (fp8 encodings only), one per kind of encoded parameter
    rows × units, each unit self-contained:
      single unit = one block:        param(scale[, min|zp]) | codes (bits × block / 8 bytes)
      double unit = one super-block:  vec(scales) [| vec(mins)] | codes (bits × unit / 8 bytes)
      vec = param(super-scale[, super-min|zp]) | b2-bit codes of the block scales (or mins)

* Codes are packed LSB-first; symmetric codes are stored offset-binary (q + 2^(b-1)).
* A param is stored in the scale encoding; an asymmetric group under an unsigned encoding
  (e8m0) stores a uint8 zero-point instead of a min (e8m0 has no sign and no mantissa).
* Symmetric groups use the signed-max convention: the largest-magnitude element maps exactly to
  -2^(b-1). Unsigned encodings cannot carry that sign, so they take the smallest scale for which
  neither the min nor the max clips.
* Codes are computed against the scale as it will be decoded. ``naive`` is the seed's order
  (tfernd/hyper-quantization ``quantize_tensor``/``double_quantize``): codes from the unrounded
  f32 scale (and min) at every level — the element codes from the unrounded block scales, and
  in double formats the b2-bit codes of the scale (and min) vector from the unrounded
  super-scale (and super-min); only the stored parameters are rounded to the encoding.
* A row that is not a whole number of units ends with a short unit: a shorter last block, or a
  super-block of fewer blocks (formats.py documents it); its bitstreams end on a byte.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from workbench.kernels import hqq
from workbench.kernels.bitpack import get_le, pack_lsb, put_le, unpack_lsb
from workbench.kernels.encodings import param_bytes

from workbench.kernels.metrics import BNL_BLOCK, pack_sums, row_error_sums
from workbench.kernels.scales import ENCODINGS, E8M0, F32, decode, encode, encode_e8m0_ceil

_BY_ID = sorted(ENCODINGS.values(), key=lambda e: e.id)
ENC_BYTES = np.array([e.bits // 8 for e in _BY_ID], dtype=np.int64)
ENC_SIGNED = np.array([1 if e.signed else 0 for e in _BY_ID], dtype=np.int64)
ENC_MAX = np.array([e.max_finite for e in _BY_ID], dtype=np.float32)
# bytes of one group's (scale[, min]) per encoding id: [asymmetric, symmetric] (encodings.param_bytes)
PARAM_BYTES = np.array([[param_bytes(e, False), param_bytes(e, True)] for e in _BY_ID], dtype=np.int64)
N_SEARCH = 9                       # candidates is = -9..9, as llama.cpp's make_qx_quants
ABSMAX, RMSE, HQQ = 0, 1, 2        # scale searches (``formats.SEARCHES`` order)


# bit packing: the shared primitives (LSB-first codes, little-endian fields)
_put_bytes, _get_bytes, _pack, _unpack = put_le, get_le, pack_lsb, unpack_lsb


# ------------------------------------------------------------------------ group quantizer
@njit(cache=True, nogil=True, inline="always")
def _store(x, enc, g):
    """Round a parameter through its encoding (with its normalizer g): (code, decoded).
    Beyond the encoding's range it saturates (the block clips) instead of becoming inf."""
    lim = ENC_MAX[enc]
    c = encode(np.float32(min(max(x / g, -lim), lim)), enc)
    return c, np.float32(decode(c, enc) * g)


@njit(cache=True, nogil=True)
def _group_sse(v, n, sym, bits, d, m):
    nmax = 1 << (bits - 1)
    nlev = (1 << bits) - 1
    err = 0.0
    inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
    for i in range(n):
        if sym:
            q = min(max(np.rint(v[i] * inv), -nmax), nmax - 1)
            e = v[i] - d * np.float32(q)
        else:
            q = min(max(np.rint((v[i] - m) * inv), 0), nlev)
            e = v[i] - (d * np.float32(q) + m)
        err += e * e
    return err


@njit(cache=True, nogil=True)
def _hqq_min(v, n, nlev, d, m):
    """HQQ's zero-point optimisation of one asymmetric group (mobiusml/hqq
    ``optimize_weights_proximal``: minimise sum |x - Q^-1(Q(x))|^p, p = 0.7, by half-quadratic
    splitting, the scale d fixed as it will be decoded): from z = -m / d, each step codes
    q = clamp(rint(x / d + z), 0, nlev), reconstructs r = (q - z) d, shrinks the error e = x - r
    to w = sign(e) max(|e| - |e|^(p-1) / beta, 0) and sets z = mean(q - (x - w) / d); beta = 10,
    at most 20 steps. HQQ stops when the whole tensor's mean |x - r| stops falling and keeps the
    zero of that last update, never evaluated; here each group stops on its own and keeps the
    zero whose reconstruction had the lowest mean |x - r| (blocks are independent). Returns
    the min -z d (f32, before storage rounding)."""
    inv = np.float32(1.0) / d
    z = np.float32(-m * inv)
    best = np.inf
    best_z = z
    for _ in range(hqq.ITERS):
        err = 0.0
        acc = 0.0
        for i in range(n):
            q = min(max(np.rint(np.float32(v[i] * inv + z)), np.float32(0.0)), np.float32(nlev))
            e = np.float32(v[i] - np.float32((q - z) * d))
            a = abs(e)
            w = hqq.shrink(e)
            acc += q - (v[i] - w) * inv
            err += a
        if err >= best:
            break
        best = err
        best_z = z
        z = np.float32(acc / n)
    return np.float32(-best_z * d)


@njit(cache=True, nogil=True, inline="always")
def _zero_point(m0, d, nlev):
    """The uint8 zero-point of an asymmetric group under an unsigned encoding (e8m0): -m0 / d
    rounded and clamped to [0, nlev]; 0 for a zero scale, and 0 when the step is NaN (a block
    that starts with a NaN, whose scale is then NaN). Without that rule the float -> uint32
    cast of a NaN is undefined, and the byte depended on the CPU (0xFF with AVX-512's
    vcvttsd2usi, 0 without)."""
    if d == 0:
        return np.uint32(0)
    q = np.rint(-m0 / d)
    if q != q:
        return np.uint32(0)
    return np.uint32(min(max(q, 0), nlev))


@njit(cache=True, nogil=True)
def _fit(v, n, bits, sym, enc, search, gs, gm, out):
    """Choose one group's parameters. out = [scale_code, min_code, scale, min, raw_scale, raw_min].

    The decoded value of a parameter is decode(code)·g; symmetric groups have min 0; under an
    unsigned encoding the min code is a zero-point and min = -scale·zp. ``search``: ABSMAX, RMSE
    (19 candidate scales), HQQ (asymmetric groups with a stored min: the min from ``_hqq_min``).
    """
    nmax = 1 << (bits - 1)
    nlev = (1 << bits) - 1
    amax = np.float32(0.0)
    ext = np.float32(0.0)
    mn = v[0]
    mx = v[0]
    for i in range(n):
        a = abs(v[i])
        if a > amax:
            amax = a
            ext = v[i]
        mn = min(mn, v[i])
        mx = max(mx, v[i])
    signed = ENC_SIGNED[enc] == 1
    mcode = np.uint32(0)
    mdec = np.float32(0.0)
    if sym:
        s0 = ext / np.float32(-nmax) if signed else max(-mn / np.float32(nmax), mx / np.float32(nmax - 0.5))
        m0 = np.float32(0.0)
    elif signed:
        s0 = (mx - mn) / np.float32(nlev)
        m0 = mn
        mcode, mdec = _store(mn, enc, gm)
    else:
        lo = min(mn, np.float32(0.0))
        s0 = (max(mx, np.float32(0.0)) - lo) / np.float32(nlev)
        m0 = lo
    if signed or s0 == 0:
        scode, sdec = _store(s0, enc, gs)
    else:
        scode = encode_e8m0_ceil(np.float32(s0 / gs))
        sdec = np.float32(decode(scode, enc) * gs)
    if not sym and not signed:
        mcode = _zero_point(m0, sdec, nlev)
        mdec = -sdec * np.float32(mcode)
    if search == HQQ and not sym and signed and sdec != 0:
        mcode, mdec = _store(_hqq_min(v, n, nlev, sdec, mdec), enc, gm)
    if search == RMSE and s0 != 0:
        best = _group_sse(v, n, sym, bits, sdec, mdec)
        for k in range(-N_SEARCH, N_SEARCH + 1):
            if k == 0:
                continue
            top = nmax if sym else nlev
            sc = np.float32(s0 * top / (top + 0.1 * k))
            c, d = _store(sc, enc, gs)
            mc, m = mcode, mdec
            if not sym and not signed:
                mc = _zero_point(m0, d, nlev)
                m = -d * np.float32(mc)
            err = _group_sse(v, n, sym, bits, d, m)
            if err < best:
                best, scode, sdec, mcode, mdec = err, c, d, mc, m
    out[0] = scode
    out[1] = mcode
    out[2] = sdec
    out[3] = mdec
    out[4] = s0
    out[5] = m0


@njit(cache=True, nogil=True, inline="always")
def _code(x, sym, bits, inv, m):
    """The code of x, always in [0, 2^bits): a NaN step (a NaN weight, or 0 × the infinite
    inverse of a subnormal raw scale in a naive format) is step 0, never an out-of-range
    integer that would spill into the neighbouring codes when packed."""
    q = np.rint(x * inv) if sym else np.rint((x - m) * inv)
    if q != q:
        q = np.float32(0.0)
    if sym:
        nmax = 1 << (bits - 1)
        return np.int32(min(max(q, -nmax), nmax - 1) + nmax)
    return np.int32(min(max(q, 0), (1 << bits) - 1))


@njit(cache=True, nogil=True, inline="always")
def _value(c, sym, bits, d, m):
    if sym:
        return d * np.float32(c - (1 << (bits - 1)))
    return d * np.float32(c) + m


@njit(cache=True, nogil=True, inline="always")
def _param_bytes(enc, sym):
    return PARAM_BYTES[enc, 1 if sym else 0]


@njit(cache=True, nogil=True)
def _write_param(buf, pos, enc, sym, out):
    pos = _put_bytes(buf, pos, np.uint32(out[0]), ENC_BYTES[enc])
    if not sym:       # the min in the encoding, or a uint8 zero-point (PARAM_BYTES)
        pos = _put_bytes(buf, pos, np.uint32(out[1]), PARAM_BYTES[enc, 0] - ENC_BYTES[enc])
    return pos


@njit(cache=True, nogil=True)
def _read_param(buf, pos, enc, sym, gs, gm):
    """-> (pos, scale, min) decoded."""
    sc = _get_bytes(buf, pos, ENC_BYTES[enc])
    pos += ENC_BYTES[enc]
    d = np.float32(decode(sc, enc) * gs)
    m = np.float32(0.0)
    if not sym:
        if ENC_SIGNED[enc] == 1:
            m = np.float32(decode(_get_bytes(buf, pos, ENC_BYTES[enc]), enc) * gm)
            pos += ENC_BYTES[enc]
        else:
            m = -d * np.float32(buf[pos])
            pos += 1
    return pos, d, m


@njit(cache=True, nogil=True, inline="always")
def _load_unit(x, r, c0, n, buf):
    for i in range(n):
        buf[i] = x[r, c0 + i]


# ------------------------------------------------------------------------------- normalizers
@njit(cache=True, nogil=True)
def normalizers(x, bits, sym, block, enc, sbits, ssym, sblock, search):
    """Per-tensor f32 normalizers so the largest encoded parameter lands on the encoding's max.

    single: [block scales, block mins]; double: [super-scale, super-min] of the scale vector,
    then of the min vector. Only the kinds the format stores are returned.
    """
    rows, cols = x.shape
    double = sbits > 0
    unit = block * (sblock if double else 1)
    nunits = -(-cols // unit)
    buf = np.empty(unit, np.float32)
    out = np.empty(6, np.float64)
    sv = np.empty(max(sblock, 1), np.float32)
    mv = np.empty(max(sblock, 1), np.float32)
    g = np.zeros(4, np.float32)
    one = np.float32(1.0)
    for r in range(rows):
        for u in range(nunits):
            n = min(unit, cols - u * unit)
            _load_unit(x, r, u * unit, n, buf)
            if not double:
                _fit(buf, n, bits, sym, F32, ABSMAX, one, one, out)
                g[0] = max(g[0], abs(out[4]))
                g[1] = max(g[1], abs(out[5]))
                continue
            nb = -(-n // block)
            for j in range(nb):
                _fit(buf[j * block:], min(block, n - j * block), bits, sym, F32, search, one, one, out)
                sv[j] = out[2]
                mv[j] = out[3]
            _fit(sv, nb, sbits, ssym, F32, ABSMAX, one, one, out)
            g[0] = max(g[0], abs(out[4]))
            g[1] = max(g[1], abs(out[5]))
            if not sym:
                _fit(mv, nb, sbits, ssym, F32, ABSMAX, one, one, out)
                g[2] = max(g[2], abs(out[4]))
                g[3] = max(g[3], abs(out[5]))
    kinds = (1 if ssym else 2) * (1 if sym else 2) if double else (1 if sym else 2)
    res = np.empty(kinds, np.float32)
    if double:
        order = (0, 1, 2, 3) if not ssym else (0, 2, 1, 3)
    else:
        order = (0, 1, 2, 3)
    for k in range(kinds):
        v = g[order[k]] / ENC_MAX[enc]
        res[k] = v if v > 0 else one
    return res


# ------------------------------------------------------------------------------ quantize
@njit(cache=True, nogil=True)
def quantize(x, bits, sym, block, enc, sbits, ssym, sblock, search, naive, norms, packed):
    """x: float32[rows, cols] → packed uint8 (header written by the caller); returns bytes used."""
    rows, cols = x.shape
    double = sbits > 0
    unit = block * (sblock if double else 1)
    nunits = -(-cols // unit)
    nb_norm = norms.shape[0]
    gs = norms[0] if nb_norm > 0 else np.float32(1.0)
    gm = norms[1] if nb_norm > 1 else np.float32(1.0)
    pos = 4 * nb_norm
    buf = np.empty(unit, np.float32)
    codes = np.empty(unit, np.int32)
    out = np.empty(6, np.float64)
    one = np.float32(1.0)
    # double: per block decoded (scale, min) and raw (scale, min)
    dsc = np.empty(max(sblock, 1), np.float32)
    dmn = np.zeros(max(sblock, 1), np.float32)
    rsc = np.empty(max(sblock, 1), np.float32)
    rmn = np.zeros(max(sblock, 1), np.float32)
    vcodes = np.empty(max(sblock, 1), np.int32)
    for r in range(rows):
        for u in range(nunits):
            n = min(unit, cols - u * unit)
            _load_unit(x, r, u * unit, n, buf)
            if not double:
                _fit(buf, n, bits, sym, enc, search, gs, gm, out)
                pos = _write_param(packed, pos, enc, sym, out)
                d, m = np.float32(out[2]), np.float32(out[3])
                if naive:
                    d, m = np.float32(out[4]), np.float32(out[5])
                inv = one / d if d != 0 else np.float32(0.0)
                for i in range(n):
                    codes[i] = _code(buf[i], sym, bits, inv, m)
                pos = _pack(codes, n, bits, packed, pos)
                continue
            nb = -(-n // block)
            for j in range(nb):
                _fit(buf[j * block:], min(block, n - j * block), bits, sym, F32, search, one, one, out)
                rsc[j] = out[2]
                rmn[j] = out[3]
            # level 2: quantize the vector of block scales (and of block mins) of this unit
            for kind in range(1 if sym else 2):
                vec = rsc if kind == 0 else rmn
                dst = dsc if kind == 0 else dmn
                g_s = norms[kind * (1 if ssym else 2)] if nb_norm > 0 else one
                g_m = norms[kind * 2 + 1] if (nb_norm > 0 and not ssym) else one
                _fit(vec, nb, sbits, ssym, enc, search, g_s, g_m, out)
                pos = _write_param(packed, pos, enc, ssym, out)
                d2, m2 = np.float32(out[2]), np.float32(out[3])
                c2, cm2 = d2, m2
                if naive:  # the seed codes the scale vector from the unrounded super-scale too
                    c2, cm2 = np.float32(out[4]), np.float32(out[5])
                inv2 = one / c2 if c2 != 0 else np.float32(0.0)
                for j in range(nb):
                    vcodes[j] = _code(vec[j], ssym, sbits, inv2, cm2)
                    dst[j] = _value(vcodes[j], ssym, sbits, d2, m2)
                pos = _pack(vcodes, nb, sbits, packed, pos)
            for j in range(nb):
                d = rsc[j] if naive else dsc[j]
                m = rmn[j] if naive else dmn[j]
                inv = one / d if d != 0 else np.float32(0.0)
                for i in range(j * block, min((j + 1) * block, n)):
                    codes[i] = _code(buf[i], sym, bits, inv, m)
            pos = _pack(codes, n, bits, packed, pos)
    return pos


@njit(cache=True, nogil=True)
def error_sums(x, sx2, sd, sds, bits, sym, block, enc, sbits, ssym, sblock, search, naive, norms):
    """The fused path: ``metrics.error_sums_given(x, dequantize(quantize(x)), ...)`` without the
    bytes. Each unit is encoded exactly as ``quantize`` encodes it (the same steps; keep the two
    in step), decoded into a row buffer as ``dequantize`` decodes it, and each row's errors are
    added in the same order as the whole-tensor loop (``metrics.row_error_sums``): the same
    reconstruction, value for value, and the same sums, bit for bit. tests/test_fused.py checks
    it on every uniform format of the default grid and the edge cases, and every sweep checks it
    again on the tensor it times. One pass over x: no packing, no unpacking, no reconstructed
    tensor. (A shared per-unit routine called from both kernels made ``quantize`` up to 1.7×
    slower: Numba does not inline it; measured, not landed.)"""
    rows, cols = x.shape
    double = sbits > 0
    unit = block * (sblock if double else 1)
    nunits = -(-cols // unit)
    nb_norm = norms.shape[0]
    gs = norms[0] if nb_norm > 0 else np.float32(1.0)
    gm = norms[1] if nb_norm > 1 else np.float32(1.0)
    buf = np.empty(unit, np.float32)
    out = np.empty(6, np.float64)
    one = np.float32(1.0)
    dsc = np.empty(max(sblock, 1), np.float32)
    dmn = np.zeros(max(sblock, 1), np.float32)
    rsc = np.empty(max(sblock, 1), np.float32)
    rmn = np.zeros(max(sblock, 1), np.float32)
    yr = np.empty(cols, np.float32)
    acc = np.zeros(6)
    lane_l1 = np.empty(min(BNL_BLOCK, cols))
    for r in range(rows):
        for u in range(nunits):
            c0 = u * unit
            n = min(unit, cols - c0)
            _load_unit(x, r, c0, n, buf)
            if not double:
                _fit(buf, n, bits, sym, enc, search, gs, gm, out)
                d, m = np.float32(out[2]), np.float32(out[3])
                cd, cm = (np.float32(out[4]), np.float32(out[5])) if naive else (d, m)
                inv = one / cd if cd != 0 else np.float32(0.0)
                for i in range(n):
                    yr[c0 + i] = _value(_code(buf[i], sym, bits, inv, cm), sym, bits, d, m)
                continue
            nb = -(-n // block)
            for j in range(nb):
                _fit(buf[j * block:], min(block, n - j * block), bits, sym, F32, search, one, one, out)
                rsc[j] = out[2]
                rmn[j] = out[3]
            for kind in range(1 if sym else 2):
                vec = rsc if kind == 0 else rmn
                dst = dsc if kind == 0 else dmn
                g_s = norms[kind * (1 if ssym else 2)] if nb_norm > 0 else one
                g_m = norms[kind * 2 + 1] if (nb_norm > 0 and not ssym) else one
                _fit(vec, nb, sbits, ssym, enc, search, g_s, g_m, out)
                d2, m2 = np.float32(out[2]), np.float32(out[3])
                c2, cm2 = (np.float32(out[4]), np.float32(out[5])) if naive else (d2, m2)
                inv2 = one / c2 if c2 != 0 else np.float32(0.0)
                for j in range(nb):
                    dst[j] = _value(_code(vec[j], ssym, sbits, inv2, cm2), ssym, sbits, d2, m2)
            for j in range(nb):
                d, m = dsc[j], dmn[j]
                cd, cm = (rsc[j], rmn[j]) if naive else (d, m)
                inv = one / cd if cd != 0 else np.float32(0.0)
                for i in range(j * block, min((j + 1) * block, n)):
                    yr[c0 + i] = _value(_code(buf[i], sym, bits, inv, cm), sym, bits, d, m)
        row_error_sums(x, r, yr, sd, sds, acc, lane_l1)
    return pack_sums(acc, sx2, rows, cols)


@njit(cache=True, nogil=True, inline="always")
def _f32_from_bits(b):
    a = np.empty(1, np.uint32)
    a[0] = b
    return a.view(np.float32)[0]


@njit(cache=True, nogil=True)
def dequantize(packed, rows, cols, bits, sym, block, enc, sbits, ssym, sblock, nnorms, y):
    double = sbits > 0
    unit = block * (sblock if double else 1)
    nunits = -(-cols // unit)
    norms = np.empty(4, np.float32)
    for k in range(nnorms):
        norms[k] = _f32_from_bits(_get_bytes(packed, 4 * k, 4))
    gs = norms[0] if nnorms > 0 else np.float32(1.0)
    gm = norms[1] if nnorms > 1 else np.float32(1.0)
    one = np.float32(1.0)
    pos = 4 * nnorms
    codes = np.empty(unit, np.int32)
    dsc = np.empty(max(sblock, 1), np.float32)
    dmn = np.zeros(max(sblock, 1), np.float32)
    vcodes = np.empty(max(sblock, 1), np.int32)
    for r in range(rows):
        for u in range(nunits):
            c0 = u * unit
            n = min(unit, cols - c0)
            if not double:
                pos, d, m = _read_param(packed, pos, enc, sym, gs, gm)
                pos = _unpack(packed, pos, n, bits, codes)
                for i in range(n):
                    y[r, c0 + i] = _value(codes[i], sym, bits, d, m)
                continue
            nb = -(-n // block)
            for kind in range(1 if sym else 2):
                dst = dsc if kind == 0 else dmn
                g_s = norms[kind * (1 if ssym else 2)] if nnorms > 0 else one
                g_m = norms[kind * 2 + 1] if (nnorms > 0 and not ssym) else one
                pos, d2, m2 = _read_param(packed, pos, enc, ssym, g_s, g_m)
                pos = _unpack(packed, pos, nb, sbits, vcodes)
                for j in range(nb):
                    dst[j] = _value(vcodes[j], ssym, sbits, d2, m2)
            pos = _unpack(packed, pos, n, bits, codes)
            for i in range(n):
                j = i // block
                y[r, c0 + i] = _value(codes[i], sym, bits, dsc[j], dmn[j])
    return pos
