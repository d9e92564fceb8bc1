"""llama.cpp's block types, declared once: the one table that formats, codecs, the kernels and the
oracle read (ggml keeps one struct per type with a ``static_assert`` on its size plus one
``type_traits[]`` table; this is both).

Each type lists its struct's fields in order, as ggml-common.h declares them (ggml_half = fp16,
little-endian); the block's bytes are their sum and every field's byte offset is derived from
them, so a size is written nowhere else. The kernels take their block sizes and field offsets
from here (``block_bytes``, ``offset``), ``formats.GGML_TYPES`` is this table, and the oracle's
type ids are gguf's ``GGMLQuantizationType`` values (``type_id``); ``tests/test_ggml_types.py``
checks every (block, bytes) against gguf's ``GGML_QUANT_SIZES``.

No Numba here: the dashboard imports this table to parse names.
"""
from __future__ import annotations

from dataclasses import dataclass

QK_K = 256          # weights per super-block of the k-quants and IQ4_XS


@dataclass(frozen=True)
class GgmlType:
    """A llama.cpp block type: its struct, what it stores and how llama-quantize treats it."""
    name: str
    block: int                        # weights per block (struct)
    fields: tuple                     # ((field, bytes), ...) in struct order
    bits: int                         # element code bits
    symmetric: bool
    scale: str                        # encoding of the (super-)block scale
    fallback: str | None = None       # llama-quantize's type for rows the block does not divide
    uses_imatrix: bool = True         # False: quantize_<type> ignores quant_weights
    kind: str = "legacy"              # legacy | k-quant | non-linear | fp4 | float
    # Scale granularity as users know it (the store's block / scale_dtype / super_block_weights /
    # super_scale_dtype): weights per scale and the scale's encoding; a two-level type's
    # sub-block scales are integer codes ("int6": 6 bits) of a super-block scale in
    # super_scale. 0 / None: the block itself (one scale per block, no super-scale).
    scale_block: int = 0
    scale_dtype: str | None = None
    super_scale: str | None = None

    @property
    def block_bytes(self) -> int:
        return sum(n for _, n in self.fields)

    def offset(self, field: str) -> int:
        """The byte offset of ``field`` in the block (the sum of the fields before it)."""
        pos = 0
        for name, n in self.fields:
            if name == field:
                return pos
            pos += n
        raise KeyError(f"{self.name} has no field {field!r}")

    @property
    def type_id(self) -> int:
        """enum ggml_type, as gguf's GGMLQuantizationType numbers it."""
        from gguf import GGMLQuantizationType
        return int(GGMLQuantizationType[self.name].value)

    @property
    def weights_per_scale(self) -> int:
        return self.scale_block or self.block

    @property
    def scale_encoding(self) -> str:
        return self.scale_dtype or self.scale

    @property
    def bpw(self) -> float:
        return self.block_bytes * 8 / self.block


# Fallback as llama.cpp's tensor_type_fallback (src/llama-quant.cpp): a row that the block does
# not divide is quantized with the fallback type, and with F16 if that does not divide it either;
# a 64-block type (NVFP4) has no fallback: llama-quantize stops with an error.
GGML_TYPES = {t.name: t for t in (
    # legacy: 32 weights; qs: weight j in the low nibble of byte j, j+16 in the high one;
    # qh: bit j = the 5th bit of weight j (a LE uint32)
    GgmlType("Q4_0", 32, (("d", 2), ("qs", 16)), 4, True, "f16"),
    GgmlType("Q4_1", 32, (("d", 2), ("m", 2), ("qs", 16)), 4, False, "f16"),
    GgmlType("Q5_0", 32, (("d", 2), ("qh", 4), ("qs", 16)), 5, True, "f16"),
    GgmlType("Q5_1", 32, (("d", 2), ("m", 2), ("qh", 4), ("qs", 16)), 5, False, "f16"),
    GgmlType("Q8_0", 32, (("d", 2), ("qs", 32)), 8, True, "f16", uses_imatrix=False),
    # k-quants: super-block of 256 = 16 blocks of 16 (Q2_K, Q3_K, Q6_K) or 8 of 32 (Q4_K, Q5_K)
    GgmlType("Q2_K", QK_K, (("scales", 16), ("qs", 64), ("d", 2), ("dmin", 2)), 2, False, "f16", "Q4_0",
             kind="k-quant", scale_block=16, scale_dtype="int4", super_scale="f16"),
    GgmlType("Q3_K", QK_K, (("hmask", 32), ("qs", 64), ("scales", 12), ("d", 2)), 3, True, "f16", "Q4_0",
             kind="k-quant", scale_block=16, scale_dtype="int6", super_scale="f16"),
    GgmlType("Q4_K", QK_K, (("d", 2), ("dmin", 2), ("scales", 12), ("qs", 128)), 4, False, "f16", "Q5_0",
             kind="k-quant", scale_block=32, scale_dtype="int6", super_scale="f16"),
    GgmlType("Q5_K", QK_K, (("d", 2), ("dmin", 2), ("scales", 12), ("qh", 32), ("qs", 128)), 5, False, "f16",
             "Q5_1", kind="k-quant", scale_block=32, scale_dtype="int6", super_scale="f16"),
    GgmlType("Q6_K", QK_K, (("ql", 128), ("qh", 64), ("scales", 16), ("d", 2)), 6, True, "f16", "Q8_0",
             kind="k-quant", scale_block=16, scale_dtype="int8", super_scale="f16"),
    GgmlType("IQ4_NL", 32, (("d", 2), ("qs", 16)), 4, True, "f16", kind="non-linear"),
    GgmlType("IQ4_XS", QK_K, (("d", 2), ("scales_h", 2), ("scales_l", 4), ("qs", 128)), 4, True, "f16",
             "IQ4_NL", kind="non-linear", scale_block=32, scale_dtype="int6", super_scale="f16"),
    GgmlType("MXFP4", 32, (("e", 1), ("qs", 16)), 4, True, "e8m0", uses_imatrix=False, kind="fp4"),
    GgmlType("NVFP4", 64, (("d", 4), ("qs", 32)), 4, True, "ue4m3", uses_imatrix=False, kind="fp4",
             scale_block=16),
)}
# Only reached as a fallback (llama-quantize writes F16 when no block type fits a row).
F16 = GgmlType("F16", 1, (("h", 2),), 16, True, "f16", uses_imatrix=False, kind="float")

# The struct sizes, checked once (ggml-common.h's static_asserts): every code field holds
# exactly its weights' bits, and the bytes are ggml's.
for _t in GGML_TYPES.values():
    _code_bits = sum(8 * n for f, n in _t.fields if f in ("qs", "qh", "ql", "hmask"))
    assert _code_bits == _t.block * _t.bits, _t.name
assert [t.block_bytes for t in GGML_TYPES.values()] == [18, 20, 22, 24, 34, 84, 110, 144, 176, 210,
                                                        18, 136, 17, 36]


def block_bytes(name: str) -> int:
    return GGML_TYPES[name].block_bytes


def layout(name: str) -> tuple:
    """(block, block bytes, ((field, byte offset, bytes), ...)): the struct as the kernels'
    docstrings draw it."""
    t = GGML_TYPES[name]
    return t.block, t.block_bytes, tuple((f, t.offset(f), n) for f, n in t.fields)
