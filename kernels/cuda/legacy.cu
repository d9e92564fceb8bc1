// llama.cpp's legacy types: host entry points (workbench/cuda_host.py) and thin device launchers
// (one thread per block of 32), over the per-block routines of legacy.cuh. Rows are whole
// blocks (cols % 32 == 0: the workbench writes other rows in llama.cpp's fallback type).
#include "legacy.cuh"

extern "C" {

// x: float32[rows, cols] -> rows * cols/32 blocks; returns the bytes written
int64_t wb_legacy_quantize(int type, const float* x, int rows, int cols, uint8_t* out) {
    int nb = cols / wb::QK;
    int bb = wb::legacy_block_bytes(type);
    for (int64_t b = 0; b < int64_t(rows) * nb; b++) wb::quantize_legacy_block(type, x + b * wb::QK, out + b * bb);
    return int64_t(rows) * nb * bb;
}

void wb_legacy_dequantize(int type, const uint8_t* packed, int rows, int cols, float* y) {
    int nb = cols / wb::QK;
    int bb = wb::legacy_block_bytes(type);
    for (int64_t b = 0; b < int64_t(rows) * nb; b++) wb::dequantize_legacy_block(type, packed + b * bb, y + b * wb::QK);
}

}  // extern "C"

#ifdef __CUDACC__
extern "C" __global__ void wb_legacy_quantize_kernel(int type, const float* x, int64_t blocks, uint8_t* out) {
    int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (b < blocks) wb::quantize_legacy_block(type, x + b * wb::QK, out + b * wb::legacy_block_bytes(type));
}

extern "C" __global__ void wb_legacy_dequantize_kernel(int type, const uint8_t* packed, int64_t blocks, float* y) {
    int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (b < blocks) wb::dequantize_legacy_block(type, packed + b * wb::legacy_block_bytes(type), y + b * wb::QK);
}
#endif
