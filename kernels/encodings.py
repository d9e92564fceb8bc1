"""The scale encodings as a table of constants (what they are; the kernels in ``scales`` say how
they round). Kept apart from the Numba module so code that only needs the facts — format names,
bpw, the import validator — does not load Numba."""
from __future__ import annotations

from dataclasses import dataclass

# Integer ids for njit code (module globals are compile-time constants to Numba).
F32, F16, BF16, E4M3, E5M2, E8M0 = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class ScaleEncoding:
    name: str
    id: int
    bits: int
    signed: bool
    max_finite: float
    min_subnormal: float  # smallest positive value
    needs_normalizer: bool


ENCODINGS: dict[str, ScaleEncoding] = {e.name: e for e in (
    ScaleEncoding("f32", F32, 32, True, 3.4028234663852886e38, 2.0**-149, False),
    ScaleEncoding("f16", F16, 16, True, 65504.0, 2.0**-24, False),
    ScaleEncoding("bf16", BF16, 16, True, 3.3895313892515355e38, 2.0**-133, False),
    # Real weights' block scales (~1e-4..1e-2) sit below fp8's normal range (e4m3: < 2^-6) and lose
    # mantissa bits there unless a per-tensor f32 normalizer first lifts them to the top of the range.
    ScaleEncoding("e4m3", E4M3, 8, True, 448.0, 2.0**-9, True),
    ScaleEncoding("e5m2", E5M2, 8, True, 57344.0, 2.0**-16, True),
    ScaleEncoding("e8m0", E8M0, 8, False, 2.0**127, 2.0**-127, False),
)}


def param_bytes(enc: ScaleEncoding, symmetric: bool) -> int:
    """Bytes of one group's stored parameters: the scale in its encoding and, for an asymmetric
    group, the min in the same encoding — or a uint8 zero-point when the encoding is unsigned
    (e8m0 cannot hold a signed min). The one statement of this rule: the formats' closed-form
    sizes and the uniform kernels' ``PARAM_BYTES`` table are built from it."""
    nbytes = enc.bits // 8
    if symmetric:
        return nbytes
    return nbytes + (nbytes if enc.signed else 1)


def packed_bytes(n: int, bits: int) -> int:
    """Bytes of n codes of ``bits`` each, packed into one bitstream that ends on a byte
    (``kernels.bitpack``'s packers write exactly this many)."""
    return -(-n * bits // 8)
