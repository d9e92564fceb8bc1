"""llama.cpp's own types (``Q4_0`` … ``Q6_K``, ``IQ4_NL``, ``IQ4_XS``, ``MXFP4``, ``NVFP4``), bit-exact
with ``ggml_quantize_chunk``: a family plug-in. The one table of their structs, sizes, fallbacks
and imatrix use is ``workbench.kernels.ggml_types``; the Numba kernels are
``kernels.legacy``, ``kernels.kquant_type0``, ``kernels.kquant_type1`` and ``kernels.nonlinear``,
loaded by the codec on first use.

Rows a type's block does not divide are written as llama-quantize writes them: in the type's
fallback (Q4_K → Q5_0, Q6_K → Q8_0, IQ4_XS → IQ4_NL …), F16 when nothing fits (``plan``); NVFP4,
which llama-quantize cannot fall back from, is refused with the reason.
"""
from __future__ import annotations

import functools

from workbench.kernels.ggml_types import F16, GGML_TYPES

NAME = "ggml"
LABEL = KIND = "llama.cpp"          # the Family filter's word and the legend group
LLAMA_CPP = True                    # llama.cpp's own types: it writes and runs them (views, eval)


# ------------------------------------------------------------------------------- grammar
def parse(name: str):
    if name not in GGML_TYPES:
        return None
    from workbench.formats import FormatSpec
    t = GGML_TYPES[name]
    return FormatSpec(NAME, t.bits, t.block, t.symmetric, t.scale, ggml_type=name)


def name(spec) -> str:
    return spec.ggml_type


def validate(spec) -> None:
    if spec.ggml_type not in GGML_TYPES:
        from workbench.formats import FormatError
        raise FormatError(f"unknown llama.cpp type {spec.ggml_type!r}")


def ggml_plan(type_name: str, cols: int) -> tuple[str | None, str | None]:
    """The llama.cpp type llama-quantize writes for a row of ``cols`` when asked for
    ``type_name``, and why it differs (None when it does not); (None, reason) when llama-quantize
    refuses the tensor."""
    t = GGML_TYPES[type_name]
    if cols % t.block == 0:
        return type_name, None
    why = f"row length {cols} is not a multiple of {type_name}'s block of {t.block}"
    if t.fallback is None:
        if t.block <= 32:
            return "F16", f"{why}; llama-quantize writes F16"
        return None, f"{why}; llama-quantize has no fallback for {type_name}"
    fb = GGML_TYPES[t.fallback]
    if cols % fb.block:
        return "F16", f"{why}, nor of {fb.name}'s {fb.block}; llama-quantize writes F16"
    return fb.name, f"{why}; llama-quantize falls back to {fb.name}"


def plan(spec, shape):
    return ggml_plan(spec.ggml_type, shape[-1])


def applied_type(spec, shape) -> str:
    """The type llama-quantize writes a tensor of ``shape`` in; ValueError (why) when it refuses."""
    applied, note = plan(spec, shape)
    if applied is None:
        raise ValueError(note)
    return applied


# ------------------------------------------------------------------------------- layout
def uses_normalizer(spec) -> bool:
    return False


def unit_bytes(spec, n: int) -> int:
    return GGML_TYPES[spec.ggml_type].block_bytes


def header_bytes(spec) -> int:
    return 0


def nbytes(spec, shape) -> int:
    rows, cols = shape
    applied, _ = plan(spec, shape)
    if applied is None:
        from workbench.formats import FormatError
        raise FormatError(f"{spec.name} cannot encode rows of {cols}")
    t = F16 if applied == "F16" else GGML_TYPES[applied]
    return rows * (cols // t.block) * t.block_bytes


def scale_layout(spec) -> dict:
    t = GGML_TYPES[spec.ggml_type]
    two_level = t.super_scale is not None
    return {"block": t.weights_per_scale, "scale_dtype": t.scale_encoding,
            "super_block_weights": t.block if two_level else None, "super_scale_dtype": t.super_scale}


def compile_group(spec) -> str:
    """The kernel-cache warm-up group (``kernel_cache``): a type with its own compile-time
    figure, else 'legacy'."""
    from workbench.kernel_cache import COMPILE_SECONDS
    return spec.ggml_type if spec.ggml_type in COMPILE_SECONDS else "legacy"


# ---------------------------------------------------------------------------------- grids
def DEFAULTS() -> list:
    """Every llama.cpp type: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0, Q2_K..Q6_K, IQ4_NL IQ4_XS, MXFP4 NVFP4 (14)."""
    return [parse(n) for n in GGML_TYPES]


GRIDS = {"ggml": DEFAULTS}


# ---------------------------------------------------------------------------------- codec
def codec(spec):
    return _codec_class()(spec)


def _f16_quantize(x, qw):
    import numpy as np
    with np.errstate(over="ignore"):    # |x| > 65504 becomes inf, as in ggml: the sweep lists it
        return np.ascontiguousarray(x, np.float32).astype(np.float16).view(np.uint8)


def _f16_dequantize(packed, cols):
    import numpy as np
    return packed.view(np.float16).astype(np.float32)


def _legacy_entry(q, q_imatrix):
    def quantize(x, qw):
        return q(x) if q_imatrix is None or qw.size == 0 else q_imatrix(x, qw)
    return quantize


@functools.cache
def ggml_kernels() -> dict[str, tuple]:
    """llama.cpp type → (quantize(x, qw), dequantize(packed, cols)); qw = float32[cols]
    importance, or an empty array for none. Every entry reproduces ggml_quantize_chunk."""
    from workbench.kernels import kquant_type0, kquant_type1, nonlinear
    from workbench.kernels.legacy import LEGACY
    imat = {**kquant_type0.IMATRIX_LEGACY, **kquant_type1.IMATRIX_LEGACY}
    out = {name: (_legacy_entry(q, imat.get(name)), dq) for name, (q, dq, *_r) in LEGACY.items()}
    for mod in (kquant_type0, kquant_type1, nonlinear):
        out.update({name: (q, dq) for name, (q, dq, *_r) in mod.KERNELS.items()})
    out["F16"] = (_f16_quantize, _f16_dequantize)
    return out


@functools.cache
def _codec_class():
    import numpy as np

    from workbench.codecs import NO_IMPORTANCE, Codec, NonFiniteError, threaded_rows

    class GgmlCodec(Codec):
        """A llama.cpp type, as llama-quantize writes it: rows its block does not divide are
        written in llama.cpp's fallback type (``spec.plan``)."""

        def applied(self, shape) -> str:
            return applied_type(self.spec, shape)

        def uses_importance(self, shape) -> bool:
            applied = self.applied(shape)
            return applied != "F16" and GGML_TYPES[applied].uses_imatrix

        def quantize(self, x, importance=None, threads: int = 1):
            from workbench.kernels.legacy import check_finite
            if check_finite(x):
                raise NonFiniteError(f"{self.spec.name}: tensor has non-finite values (NaN/Inf); "
                                     "llama.cpp's quantizers are not defined for them")
            qw = NO_IMPORTANCE
            if importance is not None:
                qw = np.ascontiguousarray(importance, np.float32)
                if qw.shape != (x.shape[1],):
                    raise ValueError(f"importance has shape {qw.shape}, tensor rows have {x.shape[1]} columns")
            q = ggml_kernels()[self.applied(x.shape)][0]
            return threaded_rows(q, np.ascontiguousarray(x, np.float32), threads, qw)

        def dequantize(self, packed, shape):
            return ggml_kernels()[self.applied(shape)][1](packed, shape[1]).reshape(shape)

    return GgmlCodec


def __getattr__(attr):          # the codec class is built on first use (it loads Numba)
    if attr == "GgmlCodec":
        return _codec_class()
    raise AttributeError(attr)
