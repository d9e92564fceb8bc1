// llama.cpp's legacy block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) as per-block __host__ __device__
// routines: the CUDA twin of kernels/legacy.py, which is byte-identical to llama.cpp's
// quantize_row_*_ref (through gguf's numpy port; tests/test_legacy.py). The arithmetic is that
// file's, all float32, three separately rounded operations where it has three (no FMA):
//  * Q4_0/Q5_0: d = (the first element of largest |x|) / -8 (/ -16), id = d ? 1/d : 0,
//    q = min(u8(x*id + 8.5f), 15) (16.5f, 31); an all-zero block has d = +0 / -8;
//  * Q4_1/Q5_1: min and max by llama.cpp's sequential strict compares, d = (max - min) / 15 (/ 31),
//    q = min(u8((x - min)*id + 0.5f), 15) (31);
//  * Q8_0: d = max|x| / 127, q = roundf(x*id) (half away from zero) as an int8;
//  * u8(t): numpy's float32 -> uint8 cast on x86-64 (the low byte of the int32 truncation; 0
//    outside int32), reached only when id or d is infinite;
//  * scales: numpy's float32 -> float16 (f16_bits_numpy), little-endian.
// Non-finite weights are refused before these run (as llama.cpp's quantizers are not defined for
// them), so NaN needs no rule here.
#pragma once
#include <cmath>
#include "scales.cuh"

namespace wb {

enum Legacy { Q4_0 = 0, Q4_1 = 1, Q5_0 = 2, Q5_1 = 3, Q8_0 = 4 };
constexpr int QK = 32;

WB_HD int legacy_block_bytes(int type) {
    switch (type) {
        case Q4_0: return 18;
        case Q4_1: return 20;
        case Q5_0: return 22;
        case Q5_1: return 24;
        default: return 34;
    }
}

WB_HD int32_t u8_cast(float t) {
    if (t >= -2147483648.0f && t < 2147483648.0f) return int32_t(t) & 0xFF;
    return 0;
}

WB_HD void put_half(uint8_t* p, float f) {
    uint32_t h = f16_bits_numpy(f);
    p[0] = uint8_t(h & 0xFF);
    p[1] = uint8_t(h >> 8);
}
WB_HD float get_half(const uint8_t* p) { return f16_to_f32(int64_t(p[0]) | (int64_t(p[1]) << 8)); }

WB_HD void put_u32(uint8_t* p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = uint8_t((v >> (8 * k)) & 0xFF);
}
WB_HD uint32_t get_u32(const uint8_t* p) {
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

WB_HD float signed_absmax(const float* x) {   // the first element of largest |x|; 0 for a zero block
    float amax = 0.0f, v = 0.0f;
    for (int j = 0; j < QK; j++) {
        float a = fabsf(x[j]);
        if (amax < a) { amax = a; v = x[j]; }
    }
    return v;
}

WB_HD void min_max(const float* x, float& mn, float& mx) {
    mn = x[0];
    mx = x[0];
    for (int j = 1; j < QK; j++) {
        if (x[j] < mn) mn = x[j];
        if (x[j] > mx) mx = x[j];
    }
}

WB_HD float inv_or_zero(float d) { return d == 0.0f ? 0.0f : 1.0f / d; }

WB_HD int32_t roundf_i8(float v) {           // the byte of roundf(v) as an int8; 0 beyond int32
    float a = fabsf(v);
    if (!(a < 2147483648.0f)) return 0;
    float fl = floorf(a);
    int32_t q = int32_t(fl) + int32_t(floorf(2.0f * (a - fl)));
    q = v < 0.0f ? -q : q;
    return q & 0xFF;
}

// one block of 32 weights -> its bytes
WB_HD void quantize_legacy_block(int type, const float* x, uint8_t* o) {
    if (type == Q4_0 || type == Q5_0) {
        bool five = type == Q5_0;
        float d = signed_absmax(x) / (five ? -16.0f : -8.0f);
        float id = inv_or_zero(d);
        put_half(o, d);
        float bias = five ? 16.5f : 8.5f;
        int32_t top = five ? 31 : 15;
        uint32_t qh = 0;
        uint8_t* qs = o + (five ? 6 : 2);
        for (int j = 0; j < QK / 2; j++) {
            int32_t q0 = py_min(u8_cast(x[j] * id + bias), top);
            int32_t q1 = py_min(u8_cast(x[j + 16] * id + bias), top);
            qs[j] = uint8_t((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t(q0 >> 4) << j) | (uint32_t(q1 >> 4) << (j + 16));
        }
        if (five) put_u32(o + 2, qh);
        return;
    }
    if (type == Q4_1 || type == Q5_1) {
        bool five = type == Q5_1;
        float mn, mx;
        min_max(x, mn, mx);
        float d = (mx - mn) / (five ? 31.0f : 15.0f);
        float id = inv_or_zero(d);
        put_half(o, d);
        put_half(o + 2, mn);
        int32_t top = five ? 31 : 15;
        uint32_t qh = 0;
        uint8_t* qs = o + (five ? 8 : 4);
        for (int j = 0; j < QK / 2; j++) {
            int32_t q0 = py_min(u8_cast((x[j] - mn) * id + 0.5f), top);
            int32_t q1 = py_min(u8_cast((x[j + 16] - mn) * id + 0.5f), top);
            qs[j] = uint8_t((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t(q0 >> 4) << j) | (uint32_t(q1 >> 4) << (j + 16));
        }
        if (five) put_u32(o + 4, qh);
        return;
    }
    float amax = 0.0f;                            // Q8_0 (max |x| is exact in any order)
    for (int j = 0; j < QK; j++) amax = py_max(amax, fabsf(x[j]));
    float d = amax / 127.0f;
    float id = inv_or_zero(d);
    put_half(o, d);
    for (int j = 0; j < QK; j++) o[2 + j] = uint8_t(roundf_i8(x[j] * id));
}

WB_HD void dequantize_legacy_block(int type, const uint8_t* o, float* y) {
    float d = get_half(o);
    if (type == Q8_0) {
        for (int j = 0; j < QK; j++) y[j] = float(int8_t(o[2 + j])) * d;
        return;
    }
    bool five = type == Q5_0 || type == Q5_1;
    bool offset = type == Q4_1 || type == Q5_1;
    float m = offset ? get_half(o + 2) : 0.0f;
    uint32_t qh = five ? get_u32(o + (offset ? 4 : 2)) : 0u;
    const uint8_t* qs = o + (type == Q4_0 ? 2 : type == Q4_1 ? 4 : type == Q5_0 ? 6 : 8);
    int32_t zero = offset ? 0 : (five ? 16 : 8);
    for (int j = 0; j < QK / 2; j++) {
        int32_t q0 = int32_t(qs[j] & 0xF) | int32_t(((qh >> j) & 1u) << 4);
        int32_t q1 = int32_t(qs[j] >> 4) | int32_t(((qh >> (j + 16)) & 1u) << 4);
        if (offset) {
            y[j] = d * float(q0) + m;
            y[j + 16] = d * float(q1) + m;
        } else {
            y[j] = d * float(q0 - zero);
            y[j + 16] = d * float(q1 - zero);
        }
    }
}

}  // namespace wb
