"""The CUDA sources (``kernels/cuda/``) built for the host, through ctypes: the GPU backend's
per-unit routines run on the CPU, so the bytes it will write can be checked against the Numba
kernels on a machine without a GPU (tests/test_cuda_host.py), and ``compile_device`` checks that
the same sources build for the device (sm_80 and sm_90, PTX and cubin; .ci/run calls it).

``nvcc`` builds the host library once per version of the sources (a digest in its file name)
under ``$WORKBENCH_CUDA_BUILD``, else ``~/.cache/workbench/cuda``. Host builds pass
``-ffp-contract=off`` and device builds ``--fmad=false``: no fused multiply-add, as in Numba.
Where ``nvcc`` is missing, ``available()`` says why and the callers skip.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SOURCE_DIR = Path(__file__).resolve().parent.parent / "kernels" / "cuda"
SOURCES = ("scales.cuh", "uniform.cuh", "uniform.cu", "legacy.cuh", "legacy.cu")
UNITS = ("uniform", "legacy")       # the .cu files: one host library, one device image each
HOST_FLAGS = ("-O2", "-std=c++17", "-Xcompiler", "-fPIC,-ffp-contract=off", "-shared")
DEVICE_ARCHS = ("80", "90")
DEVICE_FLAGS = ("-std=c++17", "--fmad=false")


class CudaUnavailable(RuntimeError):
    """No nvcc, or the sources did not build (the message says which)."""


def source_dir() -> Path:
    import workbench.kernels
    installed = Path(workbench.kernels.__file__).resolve().parent / "cuda"
    return installed if installed.is_dir() else SOURCE_DIR


def digest() -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (source_dir() / name).read_bytes())
    h.update(" ".join(HOST_FLAGS + DEVICE_FLAGS).encode())     # a changed flag is a new build
    return h.hexdigest()[:16]


def nvcc() -> str | None:
    return shutil.which("nvcc") or next((p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.exists(p)), None)


def available() -> str | None:
    """None when the host library can be built, else why not (one line)."""
    return None if nvcc() else "nvcc not found (install the CUDA toolkit, or put nvcc on PATH)"


def build_dir() -> Path:
    root = os.environ.get("WORKBENCH_CUDA_BUILD") or Path.home() / ".cache" / "workbench" / "cuda"
    return Path(root)


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise CudaUnavailable(f"{' '.join(cmd[:2])} … failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def build_host() -> Path:
    """The host library for the current sources (built if missing); its path."""
    why = available()
    if why:
        raise CudaUnavailable(why)
    out = build_dir() / f"libwb_cuda-{digest()}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:   # an interrupted build leaves no library
            part = Path(tmp) / out.name
            _run([nvcc(), *HOST_FLAGS, "-o", str(part), *(str(source_dir() / f"{u}.cu") for u in UNITS)])
            os.replace(part, out)
    return out


def compile_device(out_dir: str | os.PathLike) -> list[Path]:
    """Compile the kernels for every DEVICE_ARCHS (cubin and PTX) into out_dir; the files made."""
    why = available()
    if why:
        raise CudaUnavailable(why)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for unit in UNITS:
        for arch in DEVICE_ARCHS:
            for kind in ("cubin", "ptx"):
                path = out_dir / f"{unit}.sm_{arch}.{kind}"
                _run([nvcc(), *DEVICE_FLAGS, f"--{kind}", f"-arch=sm_{arch}", "-o", str(path),
                      str(source_dir() / f"{unit}.cu")])
                made.append(path)
    return made


_F = ctypes.c_int
_FORMAT = [_F] * 9      # bits, sym, block, enc, sbits, ssym, sblock, search, naive
_P = ctypes.c_void_p


@functools.cache
def library() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(build_host()))
    i64 = ctypes.c_int64
    lib.wb_encode.argtypes = [_P, _P, i64, _F]
    lib.wb_decode.argtypes = [_P, _P, i64, _F]
    lib.wb_e8m0_ceil.argtypes = [_P, _P, i64]
    lib.wb_uniform_nbytes.argtypes = [_F, _F, _F, *_FORMAT]
    lib.wb_uniform_nbytes.restype = i64
    lib.wb_uniform_normalizers.argtypes = [_P, _F, _F, *_FORMAT, _P]
    lib.wb_uniform_normalizers.restype = _F
    lib.wb_uniform_quantize.argtypes = [_P, _F, _F, *_FORMAT, _P, _F, _P]
    lib.wb_uniform_quantize.restype = i64
    lib.wb_uniform_dequantize.argtypes = [_P, _F, _F, *_FORMAT, _F, _P]
    lib.wb_uniform_dequantize.restype = i64
    lib.wb_legacy_quantize.argtypes = [_F, _P, _F, _F, _P]
    lib.wb_legacy_quantize.restype = i64
    lib.wb_legacy_dequantize.argtypes = [_F, _P, _F, _F, _P]
    return lib


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


# ------------------------------------------------------------------------------ encodings
def encode(x: np.ndarray, enc: int) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty(x.shape, np.uint32)
    library().wb_encode(_ptr(x), _ptr(out), x.size, enc)
    return out


def decode(codes: np.ndarray, enc: int) -> np.ndarray:
    codes = np.ascontiguousarray(codes, np.uint32)
    out = np.empty(codes.shape, np.float32)
    library().wb_decode(_ptr(codes), _ptr(out), codes.size, enc)
    return out


def e8m0_ceil(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty(x.shape, np.uint32)
    library().wb_e8m0_ceil(_ptr(x), _ptr(out), x.size)
    return out


# ------------------------------------------------------------------------------ uniform family
MAX_SUPER_BLOCK = 256    # uniform.cuh: blocks per super-block a unit holds on its stack
# Beside the grids, the paths no grid reaches (tests/test_cuda_host.py and scripts/gpu_check.py
# check both): the seed's naive order, f32 scales, an asymmetric super-level (four normalizers),
# e8m0 under an asymmetric super-level, hqq inside a double format, fp8 without the normalizer.
EXTRA_UNIFORM = ("Q4a32_naive,Q(3a16)xQ(4s16)_e4m3_naive,Q(4s16)xQ(8s16)_f32,Q4a32_f32,Q4s32_e4m3_nonorm,"
                 "Q(4a16)xQ(6a16)_e8m0,Q(4a8)xQ(6a8)_e4m3_hqq,Q(4a16)xQ(6a16)_e4m3")


def format_args(spec) -> tuple[int, ...]:
    """The kernel arguments of a uniform FormatSpec (the Numba codec's, plus search and naive)."""
    from workbench.formats import SEARCHES
    from workbench.kernels.encodings import ENCODINGS
    if spec.family != "uniform":
        raise ValueError(f"{spec.name}: the CUDA sources cover the uniform family only so far")
    if (spec.super_block or 0) > MAX_SUPER_BLOCK:
        raise ValueError(f"{spec.name}: super-blocks of more than {MAX_SUPER_BLOCK} blocks")
    return (spec.bits, int(spec.symmetric), spec.block, ENCODINGS[spec.scale].id, spec.super_bits or 0,
            int(bool(spec.super_symmetric)), spec.super_block or 0, SEARCHES.index(spec.search), int(spec.naive))


def normalizers(x: np.ndarray, spec) -> np.ndarray:
    if not spec.uses_normalizer:
        return np.empty(0, np.float32)
    x = np.ascontiguousarray(x, np.float32)
    res = np.empty(4, np.float32)
    k = library().wb_uniform_normalizers(_ptr(x), x.shape[0], x.shape[1], *format_args(spec), _ptr(res))
    return res[:k].copy()


def quantize(x: np.ndarray, spec) -> np.ndarray:
    """Packed bytes of x (float32[rows, cols]) in ``spec``, as the host build of the CUDA sources
    writes them: header (the normalizers), then every unit at its closed-form offset."""
    x = np.ascontiguousarray(x, np.float32)
    rows, cols = x.shape
    args = format_args(spec)
    norms = normalizers(x, spec)
    lib = library()
    packed = np.zeros(lib.wb_uniform_nbytes(rows, cols, norms.size, *args), np.uint8)
    packed[:norms.nbytes] = norms.view(np.uint8)
    used = lib.wb_uniform_quantize(_ptr(x), rows, cols, *args, _ptr(norms), norms.size, _ptr(packed))
    if used != packed.size:
        raise AssertionError(f"{spec.name}: units end at {used}, the closed form says {packed.size}")
    return packed


def dequantize(packed: np.ndarray, shape: tuple[int, int], spec) -> np.ndarray:
    packed = np.ascontiguousarray(packed, np.uint8)
    y = np.empty(shape, np.float32)
    used = library().wb_uniform_dequantize(_ptr(packed), shape[0], shape[1], *format_args(spec),
                                           spec.header_bytes // 4, _ptr(y))
    if used != packed.size:
        raise AssertionError(f"{spec.name}: read {used} of {packed.size} bytes")
    return y


def main(argv: list[str] | None = None) -> int:
    """`python -m workbench.cuda_host compile DIR`: the device build (.ci/run). Exit 0 when every
    kernel compiled, 2 when nvcc is missing, 1 when a source did not compile; one line each."""
    import sys
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "compile":
        print("usage: python -m workbench.cuda_host compile DIR", file=sys.stderr)
        return 2
    why = available()
    if why:
        print(f"CUDA sources not compiled: {why}", file=sys.stderr)
        return 2
    try:
        made = compile_device(args[1])
    except CudaUnavailable as exc:
        print(f"CUDA sources did not compile: {str(exc).splitlines()[0]}", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 1
    print(f"compiled {len(made)} device images ({', '.join(UNITS)}; sm_{', sm_'.join(DEVICE_ARCHS)}; cubin and PTX) "
          f"into {args[1]}")
    return 0


# ------------------------------------------------------------------------------ llama.cpp legacy types
LEGACY_TYPES = {"Q4_0": 0, "Q4_1": 1, "Q5_0": 2, "Q5_1": 3, "Q8_0": 4}
LEGACY_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34}


def _legacy_type(name: str, cols: int) -> int:
    if name not in LEGACY_TYPES:
        raise ValueError(f"{name}: not one of llama.cpp's legacy types ({', '.join(LEGACY_TYPES)})")
    if cols % 32:
        raise ValueError(f"{name}: rows of {cols} are not whole blocks of 32 (llama.cpp writes them in a fallback type)")
    return LEGACY_TYPES[name]


def legacy_quantize(x: np.ndarray, name: str) -> np.ndarray:
    """llama.cpp's bytes of x in a legacy type (finite x: the caller refuses NaN/Inf, as the
    workbench's codec does), as the host build of kernels/cuda/legacy.cu writes them."""
    x = np.ascontiguousarray(x, np.float32)
    rows, cols = x.shape
    t = _legacy_type(name, cols)
    out = np.empty((rows, cols // 32 * LEGACY_BLOCK_BYTES[name]), np.uint8)
    used = library().wb_legacy_quantize(t, _ptr(x), rows, cols, _ptr(out))
    if used != out.size:
        raise AssertionError(f"{name}: wrote {used} of {out.size} bytes")
    return out


def legacy_dequantize(packed: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    packed = np.ascontiguousarray(packed, np.uint8)
    t = _legacy_type(name, shape[1])
    if packed.size != shape[0] * shape[1] // 32 * LEGACY_BLOCK_BYTES[name]:
        raise ValueError(f"{name}: {packed.size} bytes do not hold a {shape[0]}x{shape[1]} tensor")
    y = np.empty(shape, np.float32)
    library().wb_legacy_dequantize(t, _ptr(packed), shape[0], shape[1], _ptr(y))
    return y


if __name__ == "__main__":
    raise SystemExit(main())
