"""The CUDA sources (kernels/cuda/) built for the host with nvcc and run through ctypes
(``workbench.cuda_host``), against the Numba kernels, which stay the reference: the claim is
"the same bytes", so every check is exact equality of bit patterns.

* the scale encodings: encode on every float32 whose low 16 bits are one of a set of patterns
  (every exponent and top mantissa, the rounding boundaries), on 2^21 random bit patterns and
  on the specials; decode on every code;
* the uniform family: packed bytes and decoded values of every uniform format of the default
  grid, of the searches grid (rmse, hqq), of every 5th format of the scales grid and of the seed's
  naive order, on slices of the default model's real tensors and on the edge-case tensors
  (zeros, NaN/Inf, denormals, huge values, odd shapes);
* the same sources compile for the device (sm_80, sm_90, cubin and PTX).
Skipped, saying why, where nvcc is missing (.ci/run does not skip: it compiles the kernels)."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from workbench import cuda_host
from workbench.codecs import as_kernel_input, codec_for
from workbench.formats import resolve
from workbench.kernels import scales
from workbench.kernels.encodings import ENCODINGS

from edge_tensors import uniform_edge_cases

NEEDS_NVCC = pytest.mark.skipif(cuda_host.available() is not None, reason=str(cuda_host.available()))

ENC_IDS = {e.name: e.id for e in ENCODINGS.values()}


@njit(cache=True)
def _numba_e8m0_ceil(x):
    out = np.empty(x.size, np.uint32)
    for i in range(x.size):
        out[i] = scales.encode_e8m0_ceil(x[i])
    return out


def float_patterns() -> np.ndarray:
    """float32 inputs as bit patterns: every high half with 24 low halves, random patterns, specials."""
    hi = np.arange(1 << 16, dtype=np.uint32) << 16
    lows = np.array([0, 1, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x2001, 0x3FFF, 0x4000, 0x7FFF, 0x8000,
                     0x8001, 0xBFFF, 0xC000, 0xEFFF, 0xF000, 0xFFFF, 0x0800, 0x17FF, 0x1800, 0x0001, 0x5555, 0xAAAA],
                    dtype=np.uint32)
    grid = (hi[:, None] | lows[None, :]).ravel()
    rand = np.random.default_rng(11).integers(0, 1 << 32, 1 << 21, dtype=np.uint64).astype(np.uint32)
    specials = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0x00000001,
                         0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0x477FF000, 0x477FEFFF, 0x33000000, 0x33000001,
                         0x38800000, 0x387FFFFF, 0x43E00000, 0x43E80000, 0x47600000, 0x47700000], dtype=np.uint32)
    return np.concatenate([grid, rand, specials])


@NEEDS_NVCC
@pytest.mark.parametrize("enc", list(ENC_IDS), ids=str)
def test_encode_gives_numbas_codes(enc):
    x = float_patterns().view(np.float32)
    want = scales.encode_array(x, ENC_IDS[enc])
    got = cuda_host.encode(x, ENC_IDS[enc])
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{bad.size} of {x.size} differ, e.g. x bits {x.view(np.uint32)[bad[:5]]}: "
                           f"{got[bad[:5]]} vs {want[bad[:5]]}")


@NEEDS_NVCC
@pytest.mark.parametrize("enc", list(ENC_IDS), ids=str)
def test_decode_gives_numbas_values(enc):
    e = ENCODINGS[enc]
    codes = (float_patterns() if e.bits == 32 else np.arange(1 << e.bits, dtype=np.uint32))
    want = scales.decode_array(codes, e.id).view(np.uint32)
    got = cuda_host.decode(codes, e.id).view(np.uint32)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{bad.size} differ, e.g. codes {codes[bad[:5]]}: {got[bad[:5]]} vs {want[bad[:5]]}"


@NEEDS_NVCC
def test_e8m0_ceil_gives_numbas_codes():
    x = float_patterns().view(np.float32)
    assert np.array_equal(cuda_host.e8m0_ceil(x), _numba_e8m0_ceil(x))


ROWS = {"encoder.layer.0.attention.self.query.weight": 32, "encoder.layer.3.output.dense.weight": 16,
        "embeddings.word_embeddings.weight": 48}    # both row widths, and the embedding


@pytest.fixture(scope="module")
def real_slices(minilm_tensors):
    return {name: as_kernel_input(minilm_tensors[name][:rows]) for name, rows in ROWS.items()}


def uniform_formats() -> list:
    scales_grid = [f for f in resolve("scales")][::5]
    extra = resolve(cuda_host.EXTRA_UNIFORM)
    seen, out = set(), []
    for f in [*resolve("default"), *resolve("searches"), *scales_grid, *extra]:
        if f.family == "uniform" and f.name not in seen:
            seen.add(f.name)
            out.append(f)
    return out


UNIFORM = uniform_formats()


def assert_same_values(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Equal bit patterns wherever the reference is a number (so -0 is not +0), NaN exactly where
    it is NaN. Which NaN an operation on two NaNs returns is not defined by IEEE 754 (x86 returns
    its first operand, and a compiler may swap the operands of a product), so NaN payloads and
    signs are not compared."""
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), f"{what}: NaN at other places"
    g, w = got.view(np.uint32)[~nan], want.view(np.uint32)[~nan]
    bad = np.flatnonzero(g != w)
    assert bad.size == 0, f"{what}: {bad.size} values differ, e.g. {got[~nan][bad[:3]]} vs {want[~nan][bad[:3]]}"


@NEEDS_NVCC
@pytest.mark.parametrize("spec", UNIFORM, ids=lambda s: s.name)
def test_uniform_bytes_and_values_are_numbas(spec, real_slices):
    codec = codec_for(spec)
    checked = 0
    for name, x in {**real_slices, **uniform_edge_cases(nonfinite=True)}.items():
        if spec.applies_to(x.shape):
            continue
        want = codec.quantize(x)
        got = cuda_host.quantize(x, spec)
        assert got.size == want.size, (name, got.size, want.size)
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, f"{name}: {bad.size} of {want.size} bytes differ, first at {bad[:5]}"
        assert_same_values(cuda_host.dequantize(got, x.shape, spec), codec.dequantize(want, x.shape), name)
        checked += 1
    assert checked >= len(real_slices)


@NEEDS_NVCC
def test_the_formats_cover_every_search_encoding_and_level():
    kinds = {(f.search, f.scale, f.super_bits is not None, f.symmetric, f.naive, f.uses_normalizer) for f in UNIFORM}
    assert {k[0] for k in kinds} == {"absmax", "rmse", "hqq"}
    assert {k[1] for k in kinds} == set(ENC_IDS)
    assert {k[2] for k in kinds} == {True, False} and {k[3] for k in kinds} == {True, False}
    assert {k[4] for k in kinds} == {True, False} and {k[5] for k in kinds} == {True, False}


def test_other_families_are_refused_with_one_line():
    with pytest.raises(ValueError, match="uniform family only"):
        cuda_host.format_args(resolve("Q4_0")[0])


@NEEDS_NVCC
def test_the_sources_compile_for_the_device(tmp_path):
    made = cuda_host.compile_device(tmp_path)
    assert sorted(p.name for p in made) == sorted(f"{u}.sm_{a}.{k}" for u in ("uniform", "legacy")
                                                  for a in cuda_host.DEVICE_ARCHS for k in ("cubin", "ptx"))
    for p in made:
        assert p.stat().st_size > 1000
    kernels = {"uniform": ("wb_uniform_quantize_kernel", "wb_uniform_dequantize_kernel", "wb_uniform_norm_maxima_kernel"),
               "legacy": ("wb_legacy_quantize_kernel", "wb_legacy_dequantize_kernel")}
    for unit, names in kernels.items():
        ptx = (tmp_path / f"{unit}.sm_90.ptx").read_text()
        for kernel in names:
            assert f".entry {kernel}" in ptx
        assert "fma.rn.f32" not in ptx     # --fmad=false: no fused multiply-add, as in Numba


def test_the_compile_command_says_in_one_line_when_nvcc_is_missing(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cuda_host, "nvcc", lambda: None)
    assert cuda_host.main(["compile", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["CUDA sources not compiled: nvcc not found (install the CUDA toolkit, or put nvcc on PATH)"]
    assert cuda_host.main(["bogus"]) == 2


# ------------------------------------------------------------------------------ llama.cpp legacy types
LEGACY = list(cuda_host.LEGACY_TYPES)


def legacy_edge_cases() -> dict[str, np.ndarray]:
    """Finite edge cases (llama.cpp's quantizers are not defined for NaN/Inf: the codec refuses them)."""
    rng = np.random.default_rng(9)
    tiny = np.finfo(np.float32).tiny
    ties = np.tile(np.array([3.0, -3.0] + [0.5] * 30, np.float32), (2, 2))
    ties[1, :2] = (-3.0, 3.0)                      # the first of a +-tie sets the sign of d
    zeros = np.zeros((3, 64), np.float32)
    zeros[1] = -0.0                                # blocks of -0.0 and of mixed-sign zeros
    zeros[2, ::2] = -0.0
    x = {"zeros": zeros, "ties": ties,
         "one block": rng.standard_normal((5, 32)),
         "denormals": rng.standard_normal((4, 64)) * tiny * 0.01,
         "f32 denormal blocks (inverse scale inf)": rng.standard_normal((2, 64)) * 1e-44,
         "huge (f16 scale overflows)": rng.standard_normal((4, 64)) * 1e37,
         "constant rows": np.repeat(rng.standard_normal((4, 1)), 96, axis=1),
         "negative only": -np.abs(rng.standard_normal((4, 160))),
         "mixed scales": rng.standard_normal((6, 256)) * np.logspace(-30, 30, 256),
         "half-way values": np.round(rng.standard_normal((4, 128)) * 8) / 16}
    return {k: as_kernel_input(np.asarray(v, np.float32)) for k, v in x.items()}


@NEEDS_NVCC
@pytest.mark.parametrize("name", LEGACY)
def test_legacy_bytes_and_values_are_numbas_on_every_tensor_of_the_model(name, minilm_tensors):
    spec = resolve(name)[0]
    codec = codec_for(spec)
    cases = {**{k: as_kernel_input(v) for k, v in minilm_tensors.items()}, **legacy_edge_cases()}
    assert len(cases) >= 40 + 10
    for what, x in cases.items():
        want = codec.quantize(x)
        got = cuda_host.legacy_quantize(x, name)
        bad = np.flatnonzero(got.ravel() != want.ravel())
        assert got.shape == want.shape and bad.size == 0, f"{what}: {bad.size} bytes differ, first at {bad[:5]}"
        assert_same_values(cuda_host.legacy_dequantize(got, x.shape, name), codec.dequantize(want, x.shape), what)


def test_legacy_refuses_partial_blocks_and_other_types():
    with pytest.raises(ValueError, match="not whole blocks of 32"):
        cuda_host._legacy_type("Q4_0", 100)
    with pytest.raises(ValueError, match="not one of llama.cpp's legacy types"):
        cuda_host._legacy_type("Q4_K", 256)


@NEEDS_NVCC
@pytest.mark.parametrize("name", LEGACY)
def test_legacy_bytes_are_llama_cpps(name, minilm_tensors, oracle):
    """Against llama.cpp itself (ggml_quantize_chunk, no imatrix), not only through Numba."""
    for tname in ("encoder.layer.0.attention.self.query.weight", "encoder.layer.5.intermediate.dense.weight"):
        x = as_kernel_input(minilm_tensors[tname])
        ref = np.asarray(oracle.quantize(name, x)).reshape(-1)
        assert np.array_equal(cuda_host.legacy_quantize(x, name).reshape(-1), ref), tname
    x = legacy_edge_cases()["ties"]
    assert np.array_equal(cuda_host.legacy_quantize(x, name).reshape(-1), np.asarray(oracle.quantize(name, x)).reshape(-1))
