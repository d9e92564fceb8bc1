// Block-scale encodings (f32, f16, bf16, e4m3, e5m2, e8m0) as __host__ __device__ functions:
// the CUDA twin of kernels/scales.py and kernels/half.py, integer work on the float32 bit
// pattern, so the host build (nvcc for the CPU, tests/test_cuda_host.py) and the device build
// give the same codes as the Numba kernels, bit for bit. The rules, and why e4m3/e5m2 saturate and
// e8m0 encodes |x|, are in kernels/scales.py's docstring; this file follows it line by line.
#pragma once
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define WB_HD __host__ __device__ __forceinline__
#else
#define WB_HD inline
#endif

namespace wb {

enum Encoding { F32 = 0, F16 = 1, BF16 = 2, E4M3 = 3, E5M2 = 4, E8M0 = 5 };

constexpr int64_t F32_INF = 0x7F800000, F32_QNAN = 0x7FC00000;

WB_HD uint32_t bits_of(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
WB_HD float float_of(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

// Python's (and Numba's) min/max of two values: min(a, b) is b only if b < a, max(a, b) is b
// only if b > a, so a NaN in the first argument is kept and one in the second is ignored.
template <class T> WB_HD T py_min(T a, T b) { return b < a ? b : a; }
template <class T> WB_HD T py_max(T a, T b) { return b > a ? b : a; }

// ---------------------------------------------------------------- table (encodings.py)
WB_HD int enc_bytes(int enc) { return enc == F32 ? 4 : (enc == F16 || enc == BF16) ? 2 : 1; }
WB_HD bool enc_signed(int enc) { return enc != E8M0; }
WB_HD float enc_max(int enc) {
    switch (enc) {
        case F32: return float_of(0x7F7FFFFFu);    // 3.4028234663852886e38
        case F16: return 65504.0f;
        case BF16: return float_of(0x7F7F0000u);   // 3.3895313892515355e38
        case E4M3: return 448.0f;
        case E5M2: return 57344.0f;
        default: return float_of(0x7F000000u);     // e8m0: 2^127
    }
}
// bytes of one group's (scale[, min]): a min in the same encoding, or a uint8 zero-point under
// an unsigned encoding (encodings.param_bytes)
WB_HD int param_bytes(int enc, bool sym) {
    int nb = enc_bytes(enc);
    return sym ? nb : nb + (enc_signed(enc) ? nb : 1);
}

// ---------------------------------------------------------------- shared rounder (scales.py)
// Finite |x| bits -> |code| with mbits mantissa bits, round to nearest even; unbounded above.
WB_HD int64_t rne(int64_t a, int mbits, int bias) {
    int64_t e = a >> 23;
    int64_t emin = 128 - bias;
    if (e >= emin) {
        int sh = 23 - mbits;
        return ((a + (int64_t(1) << (sh - 1)) - 1 + ((a >> sh) & 1)) >> sh) - (int64_t(127 - bias) << mbits);
    }
    int64_t sig = (a & 0x7FFFFF) | (e > 0 ? 0x800000 : 0);
    int64_t sh = 23 - mbits + emin - py_max<int64_t>(e, 1);
    if (sh >= 25) return 0;
    int64_t q = sig >> sh;
    int64_t rem = sig & ((int64_t(1) << sh) - 1);
    int64_t half = int64_t(1) << (sh - 1);
    if (rem > half || (rem == half && (q & 1) == 1)) q += 1;
    return q;
}

WB_HD uint32_t to_small(float x, int ebits, int mbits, int bias, int64_t top, int64_t nan) {
    int64_t b = bits_of(x);
    int64_t s = (b >> 31) << (ebits + mbits);
    int64_t a = b & 0x7FFFFFFF;
    if (a > F32_INF) return uint32_t(s | nan);
    return uint32_t(s | py_min<int64_t>(rne(a, mbits, bias), top));
}

WB_HD float from_small(int64_t c, int ebits, int mbits, int bias, bool ieee) {
    int64_t s = ((c >> (ebits + mbits)) & 1) << 31;
    int64_t e = (c >> mbits) & ((int64_t(1) << ebits) - 1), m = c & ((int64_t(1) << mbits) - 1);
    if (e == (int64_t(1) << ebits) - 1 && (ieee || m == (int64_t(1) << mbits) - 1))
        return float_of(uint32_t(s | ((ieee && m == 0) ? F32_INF : (F32_QNAN | (m << (23 - mbits))))));
    if (e == 0) {
        if (m == 0) return float_of(uint32_t(s));
        e = 1;
        while (m < (int64_t(1) << mbits)) { m <<= 1; e -= 1; }
        m -= int64_t(1) << mbits;
    }
    return float_of(uint32_t(s | ((e - bias + 127) << 23) | (m << (23 - mbits))));
}

// ---------------------------------------------------------------- binary16 (half.py)
WB_HD uint32_t f16_bits_numpy(float f) {      // numpy's astype(float16), payload kept
    int64_t b = bits_of(f);
    int64_t sign = (b >> 16) & 0x8000;
    int64_t a = b & 0x7FFFFFFF;
    if (a >= 0x7F800000) {
        if (a == 0x7F800000) return uint32_t(sign | 0x7C00);
        int64_t h = 0x7C00 + ((a & 0x7FFFFF) >> 13);
        if (h == 0x7C00) h += 1;
        return uint32_t(sign | h);
    }
    if (a >= 0x477FF000) return uint32_t(sign | 0x7C00);
    if (a >= 0x38800000) return uint32_t(sign | ((a - 0x38000000 + 0xFFF + ((a >> 13) & 1)) >> 13));
    if (a <= 0x33000000) return uint32_t(sign);
    int64_t e = a >> 23;
    int64_t mant = (a & 0x7FFFFF) | 0x800000;
    int64_t shift = 126 - e;
    int64_t q = mant >> shift;
    int64_t rem = mant & ((int64_t(1) << shift) - 1);
    int64_t half = int64_t(1) << (shift - 1);
    if (rem > half || (rem == half && (q & 1) == 1)) q += 1;
    return uint32_t(sign | q);
}

WB_HD float f16_to_f32(int64_t h) {
    h &= 0xFFFF;
    int64_t sign = (h & 0x8000) << 16;
    int64_t e = (h >> 10) & 0x1F;
    int64_t m = h & 0x3FF;
    int64_t bits;
    if (e == 0x1F) {
        bits = sign | 0x7F800000 | (m << 13);
    } else if (e == 0) {
        if (m == 0) {
            bits = sign;
        } else {
            int64_t e2 = 113;
            while ((m & 0x400) == 0) { m <<= 1; e2 -= 1; }
            bits = sign | (e2 << 23) | ((m & 0x3FF) << 13);
        }
    } else {
        bits = sign | ((e + 112) << 23) | (m << 13);
    }
    return float_of(uint32_t(bits));
}

// ---------------------------------------------------------------- the encodings
WB_HD uint32_t f32_to_f16(float x) {           // a NaN as the canonical quiet NaN
    if (x != x) return uint32_t(((int64_t(bits_of(x)) >> 16) & 0x8000) | 0x7E00);
    return f16_bits_numpy(x);
}
WB_HD uint32_t f32_to_bf16(float x) { return to_small(x, 8, 7, 127, 0x7F80, 0x7FC0); }
WB_HD float bf16_to_f32(int64_t h) { return float_of(uint32_t((h & 0xFFFF) << 16)); }
WB_HD uint32_t f32_to_e4m3(float x) { return to_small(x, 4, 3, 7, 0x7E, 0x7F); }
WB_HD float e4m3_to_f32(int64_t c) { return from_small(c, 4, 3, 7, false); }
WB_HD uint32_t f32_to_e5m2(float x) { return to_small(x, 5, 2, 15, 0x7B, 0x7E); }
WB_HD float e5m2_to_f32(int64_t c) { return from_small(c, 5, 2, 15, true); }

WB_HD uint32_t f32_to_e8m0(float x) {
    int64_t a = bits_of(x) & 0x7FFFFFFF;
    if (a >= F32_INF) return 0xFF;
    int64_t e = a >> 23, m = a & 0x7FFFFF;
    if (e == 0) return m >= 0x600000 ? 1 : 0;
    int64_t c = e + (m >= 0x400000 ? 1 : 0);
    return c > 0xFE ? 0xFF : uint32_t(c);
}
WB_HD float e8m0_to_f32(int64_t c) {
    c &= 0xFF;
    if (c == 0xFF) return float_of(uint32_t(F32_QNAN));
    return float_of(uint32_t(c > 0 ? c << 23 : 0x400000));
}
// the smallest power of two >= |x|, clamped to [2^-127, 2^127]; NaN -> 0xFF
WB_HD uint32_t e8m0_ceil(float x) {
    int64_t a = bits_of(x) & 0x7FFFFFFF;
    if (a > F32_INF) return 0xFF;
    int64_t e = a >> 23, m = a & 0x7FFFFF;
    if (e == 0) return m > 0x400000 ? 1 : 0;
    return uint32_t(py_min<int64_t>(e + (m != 0 ? 1 : 0), 0xFE));
}

WB_HD uint32_t encode(float x, int enc) {
    switch (enc) {
        case F16: return f32_to_f16(x);
        case BF16: return f32_to_bf16(x);
        case E4M3: return f32_to_e4m3(x);
        case E5M2: return f32_to_e5m2(x);
        case E8M0: return f32_to_e8m0(x);
        default: return bits_of(x);
    }
}
WB_HD float decode(uint32_t code, int enc) {
    switch (enc) {
        case F16: return f16_to_f32(code);
        case BF16: return bf16_to_f32(code);
        case E4M3: return e4m3_to_f32(code);
        case E5M2: return e5m2_to_f32(code);
        case E8M0: return e8m0_to_f32(code);
        default: return float_of(code);
    }
}

}  // namespace wb
