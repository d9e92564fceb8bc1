"""The CuPy backend: the CUDA sources of ``kernels/cuda/`` on a GPU: the uniform family, and
llama.cpp's legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) without an imatrix.

The kernels are the per-unit routines that tests/test_cuda_host.py checks byte for byte against
the Numba kernels through their host build; here the same source is built for the device (nvcc
for the GPU's own architecture, cached like the host library, else NVRTC through CuPy) and
loaded with ``cupy.RawModule``. One thread encodes one unit (a block, or a super-block) at its
closed-form offset; the per-tensor fp8 normalizers are a max-reduction on the device, finished
on the host. Byte identity on a device is what ``scripts/gpu-check.sh`` checks when a GPU is lent.

A legacy type is written as llama-quantize writes it (``LegacyCodec``): rows of whole blocks of
32 in the type, on the device; other rows in llama.cpp's fallback, F16, converted on the host by
the same kernel the numba backend uses (a cast, no search). With an imatrix entry for a tensor,
llama.cpp quantizes Q4_0 … Q5_1 through its importance path, which the CUDA sources do not have
yet: such a (tensor, format) pair is refused (``codecs.NotOnThisBackend``) and the sweep skips it
with the reason, rather than storing a row that ignored the imatrix. Q8_0 (no importance path in
llama.cpp), F16 fallback rows and tensors the imatrix has no entry for are measured as on numba.
"""
from __future__ import annotations

import functools

import numpy as np

from workbench.codecs import Codec

THREADS = 128


@functools.cache
def _cupy():
    import cupy   # noqa: PLC0415 - optional: only this backend needs it
    return cupy


class CuPyGPU:
    name = "cupy"

    def available(self) -> str | None:
        try:
            cp = _cupy()
        except ImportError:
            return "CuPy is not installed (pip install cupy-cuda13x, or the package for your CUDA)"
        try:
            n = cp.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - no driver, no device: one line either way
            return f"CuPy sees no CUDA device ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        return None if n > 0 else "CuPy sees no CUDA device"

    def device(self) -> str:
        cp = _cupy()
        name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)

    def version(self) -> str:
        cp = _cupy()
        return f"cupy {cp.__version__}, CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}"

    def supports(self, spec) -> str | None:
        return supports(spec)

    def codec(self, spec):
        why = self.supports(spec)
        if why:
            raise ValueError(f"{spec.name}: {why}")
        return CuPyLegacyCodec(spec) if spec.family == "ggml" else CuPyUniformCodec(spec)


NO_IMPORTANCE_PATH = ("llama.cpp quantizes {} with an imatrix through its importance path, which "
                      "the CUDA sources do not have yet")


def supports(spec) -> str | None:
    """None when the CUDA sources have kernels for ``spec``, else why not, in one line. Shared
    with the host build's backend in the tests."""
    from workbench.cuda_host import LEGACY_TYPES, MAX_SUPER_BLOCK
    if spec.family == "ggml" and spec.ggml_type in LEGACY_TYPES:
        return None
    if spec.family != "uniform":
        return ("the cupy backend has kernels for the uniform family and llama.cpp's legacy types "
                f"({', '.join(LEGACY_TYPES)}) only so far ({spec.name}: {spec.family})")
    if (spec.super_block or 0) > MAX_SUPER_BLOCK:
        return f"super-blocks of more than {MAX_SUPER_BLOCK} blocks"
    return None


@functools.cache
def module(unit: str = "uniform"):
    """The RawModule of kernels/cuda/<unit>.cu (uniform, legacy) for the current device."""
    import os
    from pathlib import Path

    from workbench import cuda_host
    cp = _cupy()
    arch = str(cp.cuda.Device().compute_capability)     # CuPy gives it as digits: "90" for sm_90
    if cuda_host.nvcc():
        out = cuda_host.build_dir() / f"{unit}-{cuda_host.digest()}.sm_{arch}.cubin"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            part = Path(f"{out}.{os.getpid()}.part")
            cuda_host._run([cuda_host.nvcc(), *cuda_host.DEVICE_FLAGS, "--cubin", f"-arch=sm_{arch}",
                            "-o", str(part), str(cuda_host.source_dir() / f"{unit}.cu")])
            os.replace(part, out)
        return cp.RawModule(path=str(out))
    # NVRTC cannot be relied on for the sources' <cmath>/<cstdint>/<cstring>: nvcc builds them
    raise cuda_host.CudaUnavailable(f"the cupy backend builds its kernels with nvcc: {cuda_host.available()}")


def finish_norms(spec, g: np.ndarray) -> np.ndarray:
    """The stored normalizers from the per-kind maxima (uniform.cuh ``finish_norms``)."""
    from workbench.kernels.encodings import ENCODINGS
    double = spec.super_bits is not None
    sym, ssym = spec.symmetric, bool(spec.super_symmetric)
    kinds = (1 if ssym else 2) * (1 if sym else 2) if double else (1 if sym else 2)
    order = (0, 2, 1, 3) if double and ssym else (0, 1, 2, 3)
    top = np.float32(ENCODINGS[spec.scale].max_finite)
    out = np.empty(kinds, np.float32)
    for k in range(kinds):
        v = np.float32(g[order[k]]) / top
        out[k] = v if v > 0 else np.float32(1.0)
    return out


class CuPyUniformCodec(Codec):
    def _launch(self, name, units, *args):
        kern = module().get_function(name)
        kern(((units + THREADS - 1) // THREADS,), (THREADS,), args)

    def _geometry(self, shape):
        from workbench.cuda_host import format_args
        args = tuple(np.int32(v) for v in format_args(self.spec))
        s = self.spec
        unit = s.block * (s.super_block or 1)
        return args, shape[0] * (-(-shape[1] // unit))

    def quantize(self, x, importance=None, threads: int = 1):
        cp = _cupy()
        s = self.spec
        x = np.ascontiguousarray(x, np.float32)
        rows, cols = x.shape
        args, units = self._geometry(x.shape)
        xd = cp.asarray(x)
        if s.uses_normalizer:
            g4 = cp.zeros(4, cp.uint32)
            self._launch("wb_uniform_norm_maxima_kernel", units, xd, np.int32(rows), np.int32(cols), *args, g4)
            norms = finish_norms(s, cp.asnumpy(g4).view(np.float32))
        else:
            norms = np.empty(0, np.float32)
        packed = cp.zeros(s.nbytes(x.shape), cp.uint8)
        packed[:norms.nbytes] = cp.asarray(norms.view(np.uint8))
        nd = cp.asarray(norms if norms.size else np.zeros(1, np.float32))
        self._launch("wb_uniform_quantize_kernel", units, xd, np.int32(rows), np.int32(cols), *args,
                     nd, np.int32(norms.size), packed)
        return cp.asnumpy(packed)

    def dequantize(self, packed, shape):
        cp = _cupy()
        s = self.spec
        args, units = self._geometry(shape)
        nn = s.header_bytes // 4
        norms = np.frombuffer(np.ascontiguousarray(packed[:4 * nn]).tobytes(), np.float32) if nn else np.zeros(1, np.float32)
        pd_ = cp.asarray(np.ascontiguousarray(packed, np.uint8))
        y = cp.empty(shape, cp.float32)
        self._launch("wb_uniform_dequantize_kernel", units, pd_, np.int32(shape[0]), np.int32(shape[1]), *args,
                     cp.asarray(norms), np.int32(nn), y)
        return cp.asnumpy(y)


class LegacyCodec(Codec):
    """A legacy llama.cpp type as llama-quantize writes it, on the kernels ``whole_rows`` gives:
    (quantize(x, name) -> uint8[rows, row bytes], dequantize(packed, shape, name) -> float32) for
    rows of whole blocks. Rows that are not take the type's fallback (``spec.plan``: F16), by the
    numba backend's own F16 kernel. NaN/Inf are refused as the numba codec refuses them."""

    def whole_rows(self):
        raise NotImplementedError

    def applied(self, shape) -> str:
        from workbench.families.ggml import applied_type
        return applied_type(self.spec, shape)

    def uses_importance(self, shape) -> bool:
        # as llama.cpp's (Q8_0 and F16 rows: no), so that a caller with an imatrix entry for a
        # tensor that would use it gets quantize's refusal, not a row that silently ignored it
        from workbench.kernels.ggml_types import GGML_TYPES
        applied = self.applied(shape)
        return applied != "F16" and GGML_TYPES[applied].uses_imatrix

    def quantize(self, x, importance=None, threads: int = 1):
        from workbench.codecs import NO_IMPORTANCE, NonFiniteError, NotOnThisBackend
        from workbench.families.ggml import ggml_kernels
        from workbench.kernels.legacy import check_finite
        x = np.ascontiguousarray(x, np.float32)
        if check_finite(x):             # (the numba codec's order: non-finite, then the imatrix)
            raise NonFiniteError(f"{self.spec.name}: tensor has non-finite values (NaN/Inf); "
                                 "llama.cpp's quantizers are not defined for them")
        if importance is not None:
            if np.shape(importance) != (x.shape[1],):
                raise ValueError(f"importance has shape {np.shape(importance)}, tensor rows have {x.shape[1]} columns")
            if self.uses_importance(x.shape):
                raise NotOnThisBackend(NO_IMPORTANCE_PATH.format(self.applied(x.shape)))
        applied = self.applied(x.shape)
        if applied == "F16":
            return ggml_kernels()["F16"][0](x, NO_IMPORTANCE)
        return self.whole_rows()[0](x, applied)

    def dequantize(self, packed, shape):
        from workbench.families.ggml import ggml_kernels
        applied = self.applied(shape)
        if applied == "F16":
            return ggml_kernels()["F16"][1](np.ascontiguousarray(packed, np.uint8), shape[1]).reshape(shape)
        return self.whole_rows()[1](packed, tuple(shape), applied)


class CuPyLegacyCodec(LegacyCodec):
    def whole_rows(self):
        return _device_legacy_quantize, _device_legacy_dequantize


def _device_legacy_quantize(x: np.ndarray, name: str) -> np.ndarray:
    from workbench.cuda_host import LEGACY_BLOCK_BYTES
    cp = _cupy()
    rows, cols = x.shape
    blocks = rows * cols // 32
    xd = cp.asarray(np.ascontiguousarray(x, np.float32))
    out = cp.empty(blocks * LEGACY_BLOCK_BYTES[name], cp.uint8)
    legacy_kernels(name, xd, blocks)[0](xd, out)
    return cp.asnumpy(out).reshape(rows, -1)


def _device_legacy_dequantize(packed: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    from workbench.cuda_host import LEGACY_BLOCK_BYTES
    cp = _cupy()
    blocks = shape[0] * shape[1] // 32
    packed = np.ascontiguousarray(packed, np.uint8).reshape(-1)
    if packed.size != blocks * LEGACY_BLOCK_BYTES[name]:
        raise ValueError(f"{name}: {packed.size} bytes do not hold a {shape[0]}x{shape[1]} tensor")
    y = cp.empty(shape, cp.float32)
    legacy_kernels(name, None, blocks)[1](cp.asarray(packed), y)
    return cp.asnumpy(y)


def legacy_kernels(name: str, x_device, blocks: int):
    """(quantize, dequantize) launchers of llama.cpp's legacy type ``name`` over ``blocks``
    blocks of 32 on the device (kernels/cuda/legacy.cu): each takes (input, output) device arrays.
    The sweep's codec is ``CuPyLegacyCodec``; scripts/gpu-check.sh uses these directly for byte
    identity and throughput."""
    from workbench.cuda_host import LEGACY_TYPES
    t = np.int32(LEGACY_TYPES[name])
    mod = module("legacy")
    grid = ((blocks + THREADS - 1) // THREADS,)

    def quantize(x, out):
        mod.get_function("wb_legacy_quantize_kernel")(grid, (THREADS,), (t, x, np.int64(blocks), out))

    def dequantize(packed, y):
        mod.get_function("wb_legacy_dequantize_kernel")(grid, (THREADS,), (t, packed, np.int64(blocks), y))
    return quantize, dequantize


BACKEND = CuPyGPU()
