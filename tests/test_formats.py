"""Format names: canonical names parse back to the same spec; bpw closed form vs real bytes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from workbench.codecs import codec_for
from workbench.formats import GGML_TYPES, FormatError, FormatSpec, default_grid, parse, resolve
from workbench.kernels.scales import ENCODINGS

uniform_specs = st.builds(
    lambda bits, block, sym, enc, double, b2, ssym, sb, rmse, naive, nonorm: FormatSpec(
        "uniform", bits, block, sym, enc,
        super_bits=b2 if double else None, super_symmetric=ssym if double else None,
        super_block=sb if double else None, search="rmse" if rmse else "absmax", naive=naive,
        normalizer=not (nonorm and ENCODINGS[enc].needs_normalizer)),
    st.integers(1, 8), st.sampled_from([8, 16, 24, 32, 64, 128, 256, 512]), st.booleans(),
    st.sampled_from(sorted(ENCODINGS)), st.booleans(), st.integers(2, 8), st.booleans(),
    st.sampled_from([8, 16, 32]), st.booleans(), st.booleans(), st.booleans())


@given(uniform_specs)
@settings(max_examples=400, deadline=None)
def test_canonical_name_round_trips(spec):
    assert parse(spec.name) == spec
    assert parse(spec.name).name == spec.name


def test_seed_names_and_aliases():
    s = parse("Q(4a16)xQ(6s16)_fp8")
    assert s.name == "Q(4a16)xQ(6s16)_e4m3"
    assert (s.bits, s.block, s.symmetric, s.super_bits, s.super_block, s.super_symmetric, s.scale) == \
        (4, 16, False, 6, 16, True, "e4m3")
    assert parse("Q4s32").scale == "f16" and parse("Q4s32_f16").name == "Q4s32"
    assert parse("Q4s16_e4m3_rmse_nonorm").name == "Q4s16_e4m3_rmse_nonorm"
    assert parse("Q4s16_nonorm_e4m3_rmse").name == "Q4s16_e4m3_rmse_nonorm"  # canonical order
    for name in GGML_TYPES:
        assert parse(name).name == name and parse(name).family == "ggml"


@pytest.mark.parametrize("bad", ["Q9s32", "Q4x32", "Q4s12", "Q4s32_e9m9", "Q4s32_nonorm",
                                 "Q4s32_rmse_rmse", "Q4s32_e4m3_bf16", "Q(4s16)xQ(1s16)", "", "Q4_2"])
def test_bad_names_are_refused_with_one_line(bad):
    with pytest.raises(FormatError) as exc:
        parse(bad)
    assert "\n" not in str(exc.value)


def test_llama_cpp_bpw_table():
    assert {n: t.bpw for n, t in GGML_TYPES.items()} == {
        "Q4_0": 4.5, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_1": 6.0, "Q8_0": 8.5, "Q2_K": 2.625,
        "Q3_K": 3.4375, "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625, "IQ4_NL": 4.5, "IQ4_XS": 4.25,
        "MXFP4": 4.25, "NVFP4": 4.5}


def test_default_grid_size_and_uniqueness():
    grid = default_grid()
    names = [f.name for f in grid]
    assert len(names) == len(set(names)) == 7 * 5 * 2 * 4 + 7 * 2 * 2 * 3 * 2 + 14 + 15 == 477
    assert {f.family for f in grid} == {"uniform", "ggml", "codebook", "iqk"}
    assert {f.name for f in grid if f.family in ("codebook", "iqk")} == {
        "NF4b64_f32", "NF4b64_dq", "FP4b64_f32", "FP4b64_dq", "AF4b64_f32", "AF4b256_f32", "E2M1b32_e8m0",
        "E2M3b32_e8m0", "E3M2b32_e8m0", "E4M3b32_e8m0", "E5M2b32_e8m0", "INT8b32_e8m0", "E2M1b16_e4m3",
        "IQ4_KS", "IQ4_KSS"}
    assert resolve("default,Q4_0") == grid  # duplicates collapse


@pytest.mark.parametrize("shape", [(3, 384), (2, 1536), (5, 100), (1, 7)])
def test_closed_form_bpw_equals_packed_bytes_for_every_grid_format(shape):
    """bpw from the layout formula == bpw from the bytes the kernel really writes (pad included)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32) * 0.02
    for spec in resolve("default,scales,small,iqk,searches,codebook-norms"):
        if spec.applies_to(shape):
            continue
        packed = codec_for(spec).quantize(x)
        assert packed.size == spec.nbytes(shape), spec.name
        assert packed.size * 8 / x.size == pytest.approx(spec.bpw(shape), rel=0, abs=1e-12)
        native = spec.plan(shape)[0] == spec.name           # not a fallback type's bytes
        if native and spec.family == "iqk":                 # + one f32 scale per row
            assert spec.bpw(shape) == spec.bpw() + 32 / shape[1], spec.name
        elif (native and spec.row_tail(shape[1]) == 0 and spec.header_bytes == 0
              and not (spec.family == "codebook" and spec.double)):   # bnb dq: an f32 per 256 blocks
            assert spec.bpw(shape) == spec.bpw(), spec.name
        if not native:
            assert spec.row_tail(shape[1]) == 0             # the fallback type's rows are whole


def test_scales_grid_has_every_encoding_on_the_default_shapes():
    """The fp8 page's grid: every scale encoding (fp8 with and without the normalizer) on the
    default grid's single and double shapes, names canonical, the default's uniform formats in it."""
    from workbench.formats import ALL_SCALES, GRIDS, default_grid, parse, resolve, scales_grid
    grid = scales_grid()
    names = [f.name for f in grid]
    assert len(names) == len(set(names)) == 7 * 5 * 2 * 7 + 7 * 2 * 2 * 3 * 7 == 1078
    assert all(parse(n) == f for n, f in zip(names, grid))
    assert {f.name for f in default_grid() if f.family == "uniform"} <= set(names)
    for enc, norm in ALL_SCALES:
        single = [f for f in grid if not f.double and f.scale == enc and f.normalizer == norm]
        double = [f for f in grid if f.double and f.scale == enc and f.normalizer == norm]
        assert len(single) == 70 and len(double) == 84, (enc, norm)
    assert sum(n.endswith("_nonorm") for n in names) == 2 * (70 + 84)
    assert [f.name for f in resolve("scales")] == names and GRIDS["scales"] is scales_grid


def test_searches_and_norms_grids():
    from workbench.formats import GRIDS
    g = GRIDS["searches"]()
    assert len(g) == len({f.name for f in g}) == 140 and all(parse(f.name) == f for f in g)
    assert {f.search for f in g} == {"rmse", "hqq"} and not any(f.symmetric for f in g)
    n = GRIDS["codebook-norms"]()
    assert len(n) == len({f.name for f in n}) == 130 and all(parse(f.name) == f for f in n)
    assert {f.search for f in n} == {"smax", "minmax", "hqq"}
