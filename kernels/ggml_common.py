"""Scalar helpers every llama.cpp kernel shares, with ggml's exact semantics (ggml-impl.h,
ggml-quants.c). One copy, imported by kquant_type0, kquant_type1 and nonlinear.

* ``nearest_int(f)``: ggml's ``nearest_int``: the low 23 bits of ``f + 1.5*2^23`` (float32)
  minus 2^22 — round half to even for |f| <= 4194303, and the same bits as the C for any other
  input (ggml's assert is compiled out), NaN included.
* ``ggml_fp16_bits(f)``: ``GGML_FP32_TO_FP16`` (``ggml_compute_fp32_to_fp16``): numpy's
  round-to-nearest-even (``legacy._f32_to_f16_bits``) except that every NaN becomes
  ``sign | 0x7E00`` (numpy keeps the payload).
* ``get_half(buf, o)``: ``GGML_FP16_TO_FP32`` of the little-endian half at ``buf[o:o+2]``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from workbench.kernels.legacy import _f16_bits_to_f32, _f32_to_f16_bits

MAGIC = np.float32(12582912.0)      # 1.5 * 2^23


@njit(cache=True, nogil=True, inline="always")
def nearest_int(f):
    i = np.int64(np.float32(f + MAGIC).view(np.int32))
    return (i & 0x7FFFFF) - 0x400000


@njit(cache=True, nogil=True, inline="always")
def ggml_fp16_bits(f):
    if f != f:
        return ((np.int64(np.float32(f).view(np.uint32)) >> 16) & 0x8000) | 0x7E00
    return _f32_to_f16_bits(f)


@njit(cache=True, nogil=True, inline="always")
def get_half(buf, o):
    return _f16_bits_to_f32(np.int64(buf[o]) | (np.int64(buf[o + 1]) << 8))
