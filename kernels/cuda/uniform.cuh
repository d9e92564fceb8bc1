// The uniform hyper-grid (single and double block quantization) as per-unit __host__ __device__
// routines: the CUDA twin of kernels/uniform.py, written to give its packed bytes exactly.
//
// Packed layout, rounding rules and the seed's ``naive`` order are documented in
// kernels/uniform.py. What matters for byte identity, and is kept here on purpose:
//  * every expression has the type Numba gives it: float32 op float32 stays float32 (no FMA:
//    host builds pass -ffp-contract=off, device builds --fmad=false), float32 op int64 is float64
//    (the rmse search's candidate scales), a float32 square added into a float64 sum;
//  * min/max are Python's (py_min/py_max: a NaN first argument is kept);
//  * np.rint is rintf (round half to even); a NaN step is code 0.
// One unit is one block (single) or one super-block of blocks (double), and each unit's bytes
// start at a closed-form offset (unit_bytes), so a GPU thread can encode a unit on its own.
// The HQQ search uses pow() in double: bit-exact on the host (the same libm as Numba); on a
// device CUDA's pow may differ in the last ulp, which scripts/gpu-check.sh is to measure.
#pragma once
#include <cmath>
#include "scales.cuh"

namespace wb {

enum Search { ABSMAX = 0, RMSE = 1, HQQ = 2 };
constexpr int N_SEARCH = 9;           // candidates k = -9..9, as llama.cpp's make_qx_quants
constexpr int HQQ_ITERS = 20;
constexpr double HQQ_P = 0.7, HQQ_BETA = 10.0;
constexpr int MAX_SUPER_BLOCK = 256;  // blocks per super-block a unit routine holds on its stack

struct Format {
    int bits, sym, block, enc, sbits, ssym, sblock, search, naive;
};

struct Fit {
    uint32_t scode, mcode;
    float sdec, mdec;   // the parameters as decoded
    float s0, m0;       // the raw (unrounded) scale and min
};

// Round a parameter through its encoding with normalizer g, saturating at the encoding's max.
WB_HD void store(float x, int enc, float g, uint32_t& code, float& dec) {
    float lim = enc_max(enc);
    code = encode(py_min(py_max(x / g, -lim), lim), enc);
    dec = decode(code, enc) * g;
}

// kernels/uniform.py _zero_point: -m0 / d rounded, clamped to [0, nlev]; 0 for d == 0 or a NaN step
WB_HD uint32_t zero_point(float m0, float d, int nlev) {
    if (d == 0) return 0u;
    float q = rintf(-m0 / d);
    if (q != q) return 0u;
    return uint32_t(py_min(py_max(double(q), 0.0), double(nlev)));
}

WB_HD double group_sse(const float* v, int n, bool sym, int bits, float d, float m) {
    int nmax = 1 << (bits - 1);
    int nlev = (1 << bits) - 1;
    double err = 0.0;
    float inv = d != 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++) {
        float e;
        if (sym) {
            float q = float(py_min(py_max(double(rintf(v[i] * inv)), double(-nmax)), double(nmax - 1)));
            e = v[i] - d * q;
        } else {
            float q = float(py_min(py_max(double(rintf((v[i] - m) * inv)), 0.0), double(nlev)));
            e = v[i] - (d * q + m);
        }
        float e2 = e * e;
        err += double(e2);
    }
    return err;
}

WB_HD double hqq_shrink(float e) {
    double a = fabs(double(e));
    if (a == 0) return 0.0;
    double w = py_max(a - pow(a, HQQ_P - 1.0) / HQQ_BETA, 0.0);
    return e < 0 ? -w : w;
}

// HQQ's zero-point search of one asymmetric group (kernels/uniform.py _hqq_min)
WB_HD float hqq_min(const float* v, int n, int nlev, float d, float m) {
    float inv = 1.0f / d;
    float z = -m * inv;
    double best = INFINITY;
    float best_z = z;
    for (int it = 0; it < HQQ_ITERS; it++) {
        double err = 0.0, acc = 0.0;
        for (int i = 0; i < n; i++) {
            float t = v[i] * inv + z;
            float q = py_min(py_max(rintf(t), 0.0f), float(nlev));
            float r = (q - z) * d;
            float e = v[i] - r;
            float a = fabsf(e);
            double w = hqq_shrink(e);
            // Numba: q - (v - w) * inv with w float64: the product and difference in float64
            acc += double(q) - (double(v[i]) - w) * double(inv);
            err += double(a);
        }
        if (err >= best) break;
        best = err;
        best_z = z;
        z = float(acc / n);
    }
    return -best_z * d;
}

// Choose one group's parameters (kernels/uniform.py _fit)
WB_HD Fit fit(const float* v, int n, int bits, bool sym, int enc, int search, float gs, float gm) {
    int nmax = 1 << (bits - 1);
    int nlev = (1 << bits) - 1;
    float amax = 0.0f, ext = 0.0f, mn = v[0], mx = v[0];
    for (int i = 0; i < n; i++) {
        float a = fabsf(v[i]);
        if (a > amax) { amax = a; ext = v[i]; }
        mn = py_min(mn, v[i]);
        mx = py_max(mx, v[i]);
    }
    bool sgn = enc_signed(enc);
    Fit f;
    f.mcode = 0;
    f.mdec = 0.0f;
    float s0, m0;
    if (sym) {
        s0 = sgn ? ext / float(-nmax) : py_max(-mn / float(nmax), mx / float(nmax - 0.5));
        m0 = 0.0f;
    } else if (sgn) {
        s0 = (mx - mn) / float(nlev);
        m0 = mn;
        store(mn, enc, gm, f.mcode, f.mdec);
    } else {
        float lo = py_min(mn, 0.0f);
        s0 = (py_max(mx, 0.0f) - lo) / float(nlev);
        m0 = lo;
    }
    if (sgn || s0 == 0) {
        store(s0, enc, gs, f.scode, f.sdec);
    } else {
        f.scode = e8m0_ceil(s0 / gs);
        f.sdec = decode(f.scode, enc) * gs;
    }
    if (!sym && !sgn) {
        f.mcode = zero_point(m0, f.sdec, nlev);
        f.mdec = -f.sdec * float(f.mcode);
    }
    if (search == HQQ && !sym && sgn && f.sdec != 0)
        store(hqq_min(v, n, nlev, f.sdec, f.mdec), enc, gm, f.mcode, f.mdec);
    if (search == RMSE && s0 != 0) {
        double best = group_sse(v, n, sym, bits, f.sdec, f.mdec);
        int top = sym ? nmax : nlev;
        for (int k = -N_SEARCH; k <= N_SEARCH; k++) {
            if (k == 0) continue;
            float sc = float(double(s0) * double(top) / (double(top) + 0.1 * double(k)));
            uint32_t c, mc = f.mcode;
            float d, m = f.mdec;
            store(sc, enc, gs, c, d);
            if (!sym && !sgn) {
                mc = zero_point(m0, d, nlev);
                m = -d * float(mc);
            }
            double err = group_sse(v, n, sym, bits, d, m);
            if (err < best) { best = err; f.scode = c; f.sdec = d; f.mcode = mc; f.mdec = m; }
        }
    }
    f.s0 = s0;
    f.m0 = m0;
    return f;
}

// The code of x, always in [0, 2^bits)
WB_HD int32_t code_of(float x, bool sym, int bits, float inv, float m) {
    float q = sym ? rintf(x * inv) : rintf((x - m) * inv);
    if (q != q) q = 0.0f;
    if (sym) {
        int nmax = 1 << (bits - 1);
        return int32_t(py_min(py_max(q, float(-nmax)), float(nmax - 1))) + nmax;
    }
    return int32_t(py_min(py_max(q, 0.0f), float((1 << bits) - 1)));
}

WB_HD float value_of(int32_t c, bool sym, int bits, float d, float m) {
    if (sym) return d * float(c - (1 << (bits - 1)));
    return d * float(c) + m;
}

// ---------------------------------------------------------------- bytes
WB_HD int64_t packed_bytes(int64_t n, int bits) { return (n * bits + 7) / 8; }

WB_HD uint8_t* put_le(uint8_t* p, uint32_t code, int nbytes) {
    for (int k = 0; k < nbytes; k++) p[k] = uint8_t((code >> (8 * k)) & 0xFF);
    return p + nbytes;
}
WB_HD uint32_t get_le(const uint8_t* p, int nbytes) {
    uint32_t c = 0;
    for (int k = 0; k < nbytes; k++) c |= uint32_t(p[k]) << (8 * k);
    return c;
}

// LSB-first bit packer, one stream at a time (kernels/bitpack.py pack_lsb), padded to a byte
struct BitWriter {
    uint8_t* p;
    uint64_t acc = 0;
    int nacc = 0;
    WB_HD explicit BitWriter(uint8_t* out) : p(out) {}
    WB_HD void push(uint32_t code, int bits) {
        acc |= uint64_t(code) << nacc;
        nacc += bits;
        while (nacc >= 8) { *p++ = uint8_t(acc & 0xFF); acc >>= 8; nacc -= 8; }
    }
    WB_HD uint8_t* end() {
        if (nacc > 0) { *p++ = uint8_t(acc & 0xFF); acc = 0; nacc = 0; }
        return p;
    }
};
struct BitReader {
    const uint8_t* p;
    uint64_t acc = 0;
    int nacc = 0;
    WB_HD explicit BitReader(const uint8_t* in) : p(in) {}
    WB_HD int32_t pull(int bits) {
        while (nacc < bits) { acc |= uint64_t(*p++) << nacc; nacc += 8; }
        int32_t c = int32_t(acc & ((uint64_t(1) << bits) - 1));
        acc >>= bits;
        nacc -= bits;
        return c;
    }
    WB_HD const uint8_t* end() { return p; }   // the stream ends on a byte: what is left is padding
};

WB_HD uint8_t* write_param(uint8_t* p, int enc, bool sym, const Fit& f) {
    p = put_le(p, f.scode, enc_bytes(enc));
    if (!sym) p = put_le(p, f.mcode, param_bytes(enc, false) - enc_bytes(enc));
    return p;
}
WB_HD const uint8_t* read_param(const uint8_t* p, int enc, bool sym, float gs, float gm, float& d, float& m) {
    d = decode(get_le(p, enc_bytes(enc)), enc) * gs;
    p += enc_bytes(enc);
    m = 0.0f;
    if (!sym) {
        if (enc_signed(enc)) {
            m = decode(get_le(p, enc_bytes(enc)), enc) * gm;
            p += enc_bytes(enc);
        } else {
            m = -d * float(*p);
            p += 1;
        }
    }
    return p;
}

// bytes of one unit of n weights (formats.py has the same closed form)
WB_HD int64_t unit_bytes(const Format& F, int n) {
    if (F.sbits == 0) return param_bytes(F.enc, F.sym) + packed_bytes(n, F.bits);
    int nb = (n + F.block - 1) / F.block;
    int kinds = F.sym ? 1 : 2;
    return kinds * (param_bytes(F.enc, F.ssym) + packed_bytes(nb, F.sbits)) + packed_bytes(n, F.bits);
}
WB_HD int unit_size(const Format& F) { return F.block * (F.sbits > 0 ? F.sblock : 1); }
// bytes of one row: whole units, then a short last unit
WB_HD int64_t row_bytes(const Format& F, int cols) {
    int unit = unit_size(F);
    int full = cols / unit, tail = cols - full * unit;
    return int64_t(full) * unit_bytes(F, unit) + (tail ? unit_bytes(F, tail) : 0);
}
WB_HD int64_t unit_offset(const Format& F, int nnorms, int cols, int r, int u) {
    return 4 * int64_t(nnorms) + int64_t(r) * row_bytes(F, cols) + int64_t(u) * unit_bytes(F, unit_size(F));
}

// the normalizers' per-tensor norm slots (kernels/uniform.py normalizers' g[0..3]): the
// largest |raw| parameter of each kind in one unit, folded into g with Python's max
WB_HD void unit_norm_maxima(const Format& F, const float* x, int n, float* g) {
    const float one = 1.0f;
    if (F.sbits == 0) {
        Fit f = fit(x, n, F.bits, F.sym, F32, ABSMAX, one, one);
        g[0] = float(py_max(double(g[0]), fabs(double(f.s0))));
        g[1] = float(py_max(double(g[1]), fabs(double(f.m0))));
        return;
    }
    float sv[MAX_SUPER_BLOCK], mv[MAX_SUPER_BLOCK];
    int nb = (n + F.block - 1) / F.block;
    for (int j = 0; j < nb; j++) {
        Fit f = fit(x + j * F.block, py_min(F.block, n - j * F.block), F.bits, F.sym, F32, F.search, one, one);
        sv[j] = f.sdec;
        mv[j] = f.mdec;
    }
    Fit f = fit(sv, nb, F.sbits, F.ssym, F32, ABSMAX, one, one);
    g[0] = float(py_max(double(g[0]), fabs(double(f.s0))));
    g[1] = float(py_max(double(g[1]), fabs(double(f.m0))));
    if (!F.sym) {
        f = fit(mv, nb, F.sbits, F.ssym, F32, ABSMAX, one, one);
        g[2] = float(py_max(double(g[2]), fabs(double(f.s0))));
        g[3] = float(py_max(double(g[3]), fabs(double(f.m0))));
    }
}

// the stored normalizers from the maxima g[0..3]; returns how many the format stores
WB_HD int finish_norms(const Format& F, const float* g, float* res) {
    bool dbl = F.sbits > 0;
    int kinds = dbl ? (F.ssym ? 1 : 2) * (F.sym ? 1 : 2) : (F.sym ? 1 : 2);
    int order[4] = {0, 1, 2, 3};
    if (dbl && F.ssym) { order[1] = 2; order[2] = 1; }
    for (int k = 0; k < kinds; k++) {
        float v = g[order[k]] / enc_max(F.enc);
        res[k] = v > 0 ? v : 1.0f;
    }
    return kinds;
}

// Encode one unit of n weights x[0..n) into out; returns the end of its bytes.
WB_HD uint8_t* quantize_unit(const Format& F, const float* x, int n, const float* norms, int nnorms, uint8_t* out) {
    const float one = 1.0f;
    float gs = nnorms > 0 ? norms[0] : one;
    float gm = nnorms > 1 ? norms[1] : one;
    uint8_t* p = out;
    if (F.sbits == 0) {
        Fit f = fit(x, n, F.bits, F.sym, F.enc, F.search, gs, gm);
        p = write_param(p, F.enc, F.sym, f);
        float d = F.naive ? f.s0 : f.sdec, m = F.naive ? f.m0 : f.mdec;
        float inv = d != 0 ? one / d : 0.0f;
        BitWriter w(p);
        for (int i = 0; i < n; i++) w.push(uint32_t(code_of(x[i], F.sym, F.bits, inv, m)), F.bits);
        return w.end();
    }
    float rsc[MAX_SUPER_BLOCK], rmn[MAX_SUPER_BLOCK], dsc[MAX_SUPER_BLOCK], dmn[MAX_SUPER_BLOCK];
    int nb = (n + F.block - 1) / F.block;
    for (int j = 0; j < nb; j++) {
        Fit f = fit(x + j * F.block, py_min(F.block, n - j * F.block), F.bits, F.sym, F32, F.search, one, one);
        rsc[j] = f.sdec;
        rmn[j] = f.mdec;
        dmn[j] = 0.0f;
    }
    for (int kind = 0; kind < (F.sym ? 1 : 2); kind++) {
        const float* vec = kind == 0 ? rsc : rmn;
        float* dst = kind == 0 ? dsc : dmn;
        float g_s = nnorms > 0 ? norms[kind * (F.ssym ? 1 : 2)] : one;
        float g_m = (nnorms > 0 && !F.ssym) ? norms[kind * 2 + 1] : one;
        Fit f = fit(vec, nb, F.sbits, F.ssym, F.enc, F.search, g_s, g_m);
        p = write_param(p, F.enc, F.ssym, f);
        float c2 = F.naive ? f.s0 : f.sdec, cm2 = F.naive ? f.m0 : f.mdec;
        float inv2 = c2 != 0 ? one / c2 : 0.0f;
        BitWriter w(p);
        for (int j = 0; j < nb; j++) {
            int32_t c = code_of(vec[j], F.ssym, F.sbits, inv2, cm2);
            w.push(uint32_t(c), F.sbits);
            dst[j] = value_of(c, F.ssym, F.sbits, f.sdec, f.mdec);
        }
        p = w.end();
    }
    BitWriter w(p);
    for (int j = 0; j < nb; j++) {
        float d = F.naive ? rsc[j] : dsc[j];
        float m = F.naive ? rmn[j] : dmn[j];
        float inv = d != 0 ? one / d : 0.0f;
        int hi = py_min((j + 1) * F.block, n);
        for (int i = j * F.block; i < hi; i++) w.push(uint32_t(code_of(x[i], F.sym, F.bits, inv, m)), F.bits);
    }
    return w.end();
}

// Decode one unit of n weights from in into y[0..n); returns the end of its bytes.
WB_HD const uint8_t* dequantize_unit(const Format& F, const uint8_t* in, int n, const float* norms, int nnorms, float* y) {
    const float one = 1.0f;
    float gs = nnorms > 0 ? norms[0] : one;
    float gm = nnorms > 1 ? norms[1] : one;
    const uint8_t* p = in;
    if (F.sbits == 0) {
        float d, m;
        p = read_param(p, F.enc, F.sym, gs, gm, d, m);
        BitReader rd(p);
        for (int i = 0; i < n; i++) y[i] = value_of(rd.pull(F.bits), F.sym, F.bits, d, m);
        return p + packed_bytes(n, F.bits);
    }
    float dsc[MAX_SUPER_BLOCK], dmn[MAX_SUPER_BLOCK];
    int nb = (n + F.block - 1) / F.block;
    for (int j = 0; j < nb; j++) dmn[j] = 0.0f;
    for (int kind = 0; kind < (F.sym ? 1 : 2); kind++) {
        float* dst = kind == 0 ? dsc : dmn;
        float g_s = nnorms > 0 ? norms[kind * (F.ssym ? 1 : 2)] : one;
        float g_m = (nnorms > 0 && !F.ssym) ? norms[kind * 2 + 1] : one;
        float d2, m2;
        p = read_param(p, F.enc, F.ssym, g_s, g_m, d2, m2);
        BitReader rd(p);
        for (int j = 0; j < nb; j++) dst[j] = value_of(rd.pull(F.sbits), F.ssym, F.sbits, d2, m2);
        p += packed_bytes(nb, F.sbits);
    }
    BitReader rd(p);
    for (int i = 0; i < n; i++) {
        int j = i / F.block;
        y[i] = value_of(rd.pull(F.bits), F.sym, F.bits, dsc[j], dmn[j]);
    }
    return p + packed_bytes(n, F.bits);
}

}  // namespace wb
