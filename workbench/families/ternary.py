"""Ternary weights, {-1, 0, +1} × one scale per block: BitNet b1.58's absmean rule, and the
absmax rule of llama.cpp's TQ2_0 (a family plug-in; its Numba kernels in
``workbench.kernels.ternary``, loaded by the codec on first use).

Names: ``TERNb{block}[_{enc}][_absmax]``: ``TERNb64`` (absmean, f16 scale per 64), ``TERNb256_absmax``
(TQ2_0's rule and block; TQ2_0's own bytes interleave differently), ``TERNb128_bf16``. Scale
encodings f16 (default, omitted), bf16, f32. The trits are stored as 2-bit codes: bpw = 2 + scale
bits / block (TERNb256: 2.0625, TQ2_0's figure; llama.cpp's TQ1_0 packs 5 trits per byte for
1.6875). This family is the worked example of docs/families.md: one module, one kernel module
and one line in ``workbench.families.PLUGINS``.
"""
from __future__ import annotations

import functools
import re

NAME = "ternary"
LABEL = "ternary"
ENCODINGS = ("f16", "bf16", "f32")
RULES = ("absmean", "absmax")
_NAME = re.compile(r"TERNb(?P<block>\d+)")


def parse(name: str):
    from workbench.formats import FormatError, FormatSpec
    base, *suffixes = name.split("_")
    m = _NAME.fullmatch(base)
    if m is None:
        return None
    kw = {"scale": "f16", "search": "absmean"}
    for s in suffixes:
        if s in ENCODINGS and kw["scale"] == "f16" and s != "f16":
            kw["scale"] = s
        elif s == "absmax" and kw["search"] == "absmean":
            kw["search"] = s
        else:
            raise FormatError(f"{name!r}: unknown or repeated suffix {s!r} (encodings: "
                              f"{', '.join(ENCODINGS[1:])}; option: absmax)")
    try:
        return FormatSpec(NAME, 2, int(m["block"]), True, **kw)
    except FormatError as exc:
        raise FormatError(f"{name!r}: {exc}") from None


def name(spec) -> str:
    return "_".join([f"TERNb{spec.block}"] + ([spec.scale] if spec.scale != "f16" else [])
                    + (["absmax"] if spec.search == "absmax" else []))


def validate(spec) -> None:
    from workbench.formats import FormatError
    if spec.bits != 2 or not spec.symmetric or spec.double or spec.naive or not spec.normalizer \
            or spec.code is not None or spec.ggml_type is not None:
        raise FormatError("a ternary format has 2-bit codes, one symmetric scale per block, no options")
    if spec.block < 4 or spec.block % 4:
        raise FormatError(f"block must be a multiple of 4 (>= 4), got {spec.block}")
    if spec.scale not in ENCODINGS:
        raise FormatError(f"ternary scales are {', '.join(ENCODINGS)}, not {spec.scale!r}")
    if spec.search not in RULES:
        raise FormatError(f"unknown ternary scale rule {spec.search!r} ({', '.join(RULES)})")


def uses_normalizer(spec) -> bool:
    return False


def unit_bytes(spec, n: int) -> int:
    from workbench.kernels.encodings import ENCODINGS as ENC, packed_bytes, param_bytes
    return param_bytes(ENC[spec.scale], True) + packed_bytes(n, 2)


def header_bytes(spec) -> int:
    return 0


def scale_layout(spec) -> dict:
    return {"block": spec.block, "scale_dtype": spec.scale, "super_block_weights": None,
            "super_scale_dtype": None}


def grid():
    """Blocks 32–256 × absmean/absmax, f16 scales (10)."""
    return [parse(f"TERNb{b}{'_absmax' if r == 'absmax' else ''}") for b in (32, 64, 128, 256) for r in RULES] + \
        [parse("TERNb64_bf16"), parse("TERNb64_f32")]


GRIDS = {"ternary": grid}


def codec(spec):
    return _codec_class()(spec)


@functools.cache
def _codec_class():
    import numpy as np

    from workbench.codecs import Codec, NonFiniteError, as_kernel_input
    from workbench.kernels import ternary as K
    from workbench.kernels.encodings import ENCODINGS as ENC

    class TernaryCodec(Codec):
        def _enc(self):
            e = ENC[self.spec.scale]
            return e.id, e.bits // 8

        def quantize(self, x, importance=None, threads: int = 1):
            x = as_kernel_input(x)
            if not np.isfinite(x).all():
                raise NonFiniteError(f"{self.spec.name}: tensor has non-finite values (NaN/Inf)")
            out = np.empty(self.spec.nbytes(x.shape), np.uint8)
            rule = K.ABSMAX if self.spec.search == "absmax" else K.ABSMEAN
            used = K.quantize(x, self.spec.block, rule, *self._enc(), np.float32(ENC[self.spec.scale].max_finite), out)
            if used != out.size:
                raise AssertionError(f"{self.spec.name}: wrote {used} bytes, closed form says {out.size}")
            return out

        def dequantize(self, packed, shape):
            y = np.empty(shape, np.float32)
            K.dequantize(packed, shape[0], shape[1], self.spec.block, *self._enc(), y)
            return y

    return TernaryCodec
