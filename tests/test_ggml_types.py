"""The one table of llama.cpp's types (kernels/ggml_types.py) against gguf, the package that
mirrors ggml's own enum and sizes, and the modules that read it."""
from __future__ import annotations

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from workbench import formats, oracle
from workbench.kernels import ggml_types as T


def test_every_type_matches_gguf():
    assert list(T.GGML_TYPES) == ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                                  "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4", "NVFP4"]
    for name, t in T.GGML_TYPES.items():
        q = GGMLQuantizationType[name]
        assert GGML_QUANT_SIZES[q] == (t.block, t.block_bytes), name
        assert t.type_id == q.value == oracle.GGML_TYPE_IDS[name], name
    assert GGML_QUANT_SIZES[GGMLQuantizationType.F16] == (T.F16.block, T.F16.block_bytes)


def test_offsets_are_derived_from_the_fields():
    assert T.layout("Q5_1") == (32, 24, (("d", 0, 2), ("m", 2, 2), ("qh", 4, 4), ("qs", 8, 16)))
    assert T.GGML_TYPES["Q3_K"].offset("d") == 108 and T.GGML_TYPES["Q6_K"].offset("scales") == 192
    assert T.GGML_TYPES["IQ4_XS"].offset("qs") == 8


def test_every_reader_takes_the_table():
    """formats, the kernels' LAYOUT/KERNELS views and the codec registry agree with the table:
    the sizes are written once."""
    from workbench.kernels import kquant_type0, kquant_type1, legacy, nonlinear
    assert formats.GGML_TYPES is T.GGML_TYPES
    views = {**legacy.LAYOUT, **kquant_type0.LAYOUT, **nonlinear.LAYOUT}
    for name, lay in views.items():
        assert lay == T.layout(name), name
    kernels = {**legacy.LEGACY, **kquant_type0.KERNELS, **kquant_type1.KERNELS, **nonlinear.KERNELS}
    assert set(kernels) == set(T.GGML_TYPES)
    for name, (_q, _dq, qk, nbytes) in kernels.items():
        assert (qk, nbytes) == (T.GGML_TYPES[name].block, T.GGML_TYPES[name].block_bytes), name
