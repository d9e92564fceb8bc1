// The uniform family's entry points, two builds of one source:
//  * for the host (nvcc -shared, workbench/cuda_host.py): extern "C" functions that loop over
//    the units and call the same per-unit routines as the device kernels, so the bytes the GPU
//    backend will write can be tested against the Numba kernels on a machine without a GPU;
//  * for the device (cupy.RawModule, sm_80/sm_90; .ci/run compiles both): thin __global__
//    launchers, one thread per unit (a block, or a super-block of blocks), each unit at its
//    closed-form offset. The per-tensor normalizers are a max-reduction (atomicMax on the bits
//    of non-negative floats, so the order of the units does not matter), finished on the host.
#include "uniform.cuh"

using wb::Format;

#ifdef __CUDACC__
#define WB_KERNEL extern "C" __global__
#endif

namespace {
WB_HD Format make_format(int bits, int sym, int block, int enc, int sbits, int ssym, int sblock, int search, int naive) {
    Format F;
    F.bits = bits; F.sym = sym; F.block = block; F.enc = enc; F.sbits = sbits; F.ssym = ssym;
    F.sblock = sblock; F.search = search; F.naive = naive;
    return F;
}
}  // namespace

#define WB_FORMAT_ARGS int bits, int sym, int block, int enc, int sbits, int ssym, int sblock, int search, int naive
#define WB_FORMAT make_format(bits, sym, block, enc, sbits, ssym, sblock, search, naive)

// ------------------------------------------------------------------ host entry points
extern "C" {

void wb_encode(const float* x, uint32_t* out, int64_t n, int enc) {
    for (int64_t i = 0; i < n; i++) out[i] = wb::encode(x[i], enc);
}
void wb_decode(const uint32_t* codes, float* out, int64_t n, int enc) {
    for (int64_t i = 0; i < n; i++) out[i] = wb::decode(codes[i], enc);
}
void wb_e8m0_ceil(const float* x, uint32_t* out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = wb::e8m0_ceil(x[i]);
}

// bytes of the packed tensor (header of nnorms f32 normalizers included)
int64_t wb_uniform_nbytes(int rows, int cols, int nnorms, WB_FORMAT_ARGS) {
    Format F = WB_FORMAT;
    return 4 * int64_t(nnorms) + int64_t(rows) * wb::row_bytes(F, cols);
}

// the normalizers the format stores, into res[0..4); returns how many
int wb_uniform_normalizers(const float* x, int rows, int cols, WB_FORMAT_ARGS, float* res) {
    Format F = WB_FORMAT;
    int unit = wb::unit_size(F);
    int nunits = (cols + unit - 1) / unit;
    float g[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int r = 0; r < rows; r++)
        for (int u = 0; u < nunits; u++)
            wb::unit_norm_maxima(F, x + int64_t(r) * cols + int64_t(u) * unit, wb::py_min(unit, cols - u * unit), g);
    return wb::finish_norms(F, g, res);
}

// x: float32[rows, cols] -> packed (the caller writes the nnorms header floats); returns the
// bytes used, or -1 if a unit did not end where the closed form says the next one starts
int64_t wb_uniform_quantize(const float* x, int rows, int cols, WB_FORMAT_ARGS,
                            const float* norms, int nnorms, uint8_t* packed) {
    Format F = WB_FORMAT;
    int unit = wb::unit_size(F);
    int nunits = (cols + unit - 1) / unit;
    int64_t end = 4 * int64_t(nnorms);
    for (int r = 0; r < rows; r++)
        for (int u = 0; u < nunits; u++) {
            int64_t off = wb::unit_offset(F, nnorms, cols, r, u);
            if (off != end) return -1;
            uint8_t* e = wb::quantize_unit(F, x + int64_t(r) * cols + int64_t(u) * unit,
                                           wb::py_min(unit, cols - u * unit), norms, nnorms, packed + off);
            end = e - packed;
        }
    return end;
}

int64_t wb_uniform_dequantize(const uint8_t* packed, int rows, int cols, WB_FORMAT_ARGS, int nnorms, float* y) {
    Format F = WB_FORMAT;
    int unit = wb::unit_size(F);
    int nunits = (cols + unit - 1) / unit;
    float norms[4];
    for (int k = 0; k < nnorms; k++) norms[k] = wb::float_of(wb::get_le(packed + 4 * k, 4));
    int64_t end = 4 * int64_t(nnorms);
    for (int r = 0; r < rows; r++)
        for (int u = 0; u < nunits; u++) {
            int64_t off = wb::unit_offset(F, nnorms, cols, r, u);
            if (off != end) return -1;
            const uint8_t* e = wb::dequantize_unit(F, packed + off, wb::py_min(unit, cols - u * unit), norms, nnorms,
                                                   y + int64_t(r) * cols + int64_t(u) * unit);
            end = e - packed;
        }
    return end;
}

}  // extern "C"

// ------------------------------------------------------------------ device launchers
#ifdef __CUDACC__
// this thread's unit: row r, unit u of the row, n weights (a short last unit has fewer)
__device__ __forceinline__ bool thread_unit(const Format& F, int rows, int cols, int& r, int& u, int& n) {
    int unit = wb::unit_size(F);
    int nunits = (cols + unit - 1) / unit;
    int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= int64_t(rows) * nunits) return false;
    r = int(t / nunits);
    u = int(t % nunits);
    n = wb::py_min(unit, cols - u * unit);
    return true;
}

WB_KERNEL void wb_uniform_norm_maxima_kernel(const float* x, int rows, int cols, WB_FORMAT_ARGS, unsigned int* g4) {
    Format F = WB_FORMAT;
    int r, u, n;
    if (!thread_unit(F, rows, cols, r, u, n)) return;
    int64_t c0 = int64_t(r) * cols + int64_t(u) * wb::unit_size(F);
    float g[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    wb::unit_norm_maxima(F, x + c0, n, g);
    for (int k = 0; k < 4; k++) atomicMax(g4 + k, wb::bits_of(g[k]));   // g >= 0, never NaN
}

WB_KERNEL void wb_uniform_quantize_kernel(const float* x, int rows, int cols, WB_FORMAT_ARGS,
                                          const float* norms, int nnorms, uint8_t* packed) {
    Format F = WB_FORMAT;
    int r, u, n;
    if (!thread_unit(F, rows, cols, r, u, n)) return;
    int64_t c0 = int64_t(r) * cols + int64_t(u) * wb::unit_size(F);
    wb::quantize_unit(F, x + c0, n, norms, nnorms, packed + wb::unit_offset(F, nnorms, cols, r, u));
}

WB_KERNEL void wb_uniform_dequantize_kernel(const uint8_t* packed, int rows, int cols, WB_FORMAT_ARGS,
                                            const float* norms, int nnorms, float* y) {
    Format F = WB_FORMAT;
    int r, u, n;
    if (!thread_unit(F, rows, cols, r, u, n)) return;
    int64_t c0 = int64_t(r) * cols + int64_t(u) * wb::unit_size(F);
    wb::dequantize_unit(F, packed + wb::unit_offset(F, nnorms, cols, r, u), n, norms, nnorms, y + c0);
}
#endif
