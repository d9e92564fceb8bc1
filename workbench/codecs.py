"""Format spec → kernel: quantize to the real packed bytes, and decode them back.

This is the only module that knows which kernel implements which family; the sweep, the
benchmarks and the tests go through ``codec_for(spec)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.formats import FormatSpec
from workbench.kernels import uniform as U
from workbench.kernels.scales import ENCODINGS

BACKEND = "numba-cpu"


class NonFiniteError(ValueError):
    """The tensor holds NaN/Inf; llama.cpp's quantizers are not defined for them."""


@dataclass(frozen=True)
class Codec:
    spec: FormatSpec

    def quantize(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def dequantize(self, packed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError


class UniformCodec(Codec):
    def _args(self):
        s = self.spec
        return (s.bits, s.symmetric, s.block, ENCODINGS[s.scale].id,
                s.super_bits or 0, bool(s.super_symmetric), s.super_block or 0)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        s = self.spec
        bits, sym, block, enc, sbits, ssym, sblock = self._args()
        rmse = s.search == "rmse"
        if s.uses_normalizer:
            norms = U.normalizers(x, bits, sym, block, enc, sbits, ssym, sblock, rmse)
        else:
            norms = np.empty(0, np.float32)
        packed = np.empty(s.nbytes(x.shape), np.uint8)
        assert norms.nbytes == s.header_bytes, (s.name, norms.nbytes, s.header_bytes)
        packed[:norms.nbytes] = norms.view(np.uint8)
        used = U.quantize(x, bits, sym, block, enc, sbits, ssym, sblock, rmse, s.naive, norms, packed)
        if used != packed.size:  # the layout and the closed form must agree, byte for byte
            raise AssertionError(f"{s.name}: wrote {used} bytes, closed form says {packed.size}")
        return packed

    def dequantize(self, packed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        bits, sym, block, enc, sbits, ssym, sblock = self._args()
        y = np.empty(shape, np.float32)
        U.dequantize(packed, shape[0], shape[1], bits, sym, block, enc, sbits, ssym, sblock,
                     self.spec.header_bytes // 4, y)
        return y


class GgmlCodec(Codec):
    def quantize(self, x: np.ndarray) -> np.ndarray:
        from workbench.kernels.legacy import LEGACY, check_finite
        if check_finite(x):
            raise NonFiniteError(f"{self.spec.name}: tensor has non-finite values (NaN/Inf); "
                                 "llama.cpp's quantizers are not defined for them")
        return LEGACY[self.spec.ggml_type][0](x)

    def dequantize(self, packed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        from workbench.kernels.legacy import LEGACY
        return LEGACY[self.spec.ggml_type][1](packed, shape[1])


_CODECS = {"uniform": UniformCodec, "ggml": GgmlCodec}


def codec_for(spec: FormatSpec) -> Codec:
    return _CODECS[spec.family](spec)
