"""Backends as plug-ins (workbench.backends): the choice (numba, cupy, auto, and why), the codecs
they hand out, and the sweep, store and CLI taking the backend from there.

The sweep's plumbing is checked end to end with a backend that runs the CUDA sources' host build
(``cuda_host``: the same per-unit routines the cupy backend launches on a GPU, with the cupy
backend's own ``supports``), so a machine without a GPU exercises what a GPU run does: rows keyed
and labelled by the backend, the formats it lacks skipped with the reason, the same metrics as
numba. The cupy backend itself, on a device, is tests/test_backend_cupy.py (skipped here)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pathlib import Path

from workbench import backends, cuda_host, store as st
from workbench.backends.cupy import LegacyCodec
from workbench.codecs import Codec, NonFiniteError, NotOnThisBackend, codec_for
from workbench.formats import resolve
from workbench.sweep import run

from test_store_cli import TENSORS, cli, one_clear_line, snapshot

CUPY_WHY = backends.load("cupy").available()


def test_numba_is_the_default_and_needs_nothing():
    be, why = backends.choose(None)
    assert be.name == "numba-cpu" and be is backends.load("numba") and be.available() is None
    assert be.device() == st.device_name() and be.version().startswith("numba ")
    assert "asked for" in why


@pytest.mark.skipif(CUPY_WHY is None, reason="a GPU is visible here: auto picks cupy")
def test_auto_falls_back_to_numba_and_says_why():
    be, why = backends.choose("auto")
    assert be.name == "numba-cpu"
    assert why == f"auto: numba-cpu, because cupy cannot run here ({CUPY_WHY})"
    with pytest.raises(backends.BackendUnavailable, match=r"^--backend cupy: "):
        backends.choose("cupy")


def test_unknown_backend_is_refused():
    with pytest.raises(backends.BackendUnavailable, match="unknown backend 'tpu'"):
        backends.load("tpu")


def test_numba_codecs_are_the_families_own():
    for spec in resolve("Q4s32,Q4_K,NF4b64_f32,Q(4a16)xQ(6s16)_e4m3"):
        be = backends.load("numba")
        x = np.random.default_rng(3).standard_normal((4, 256)).astype(np.float32)
        assert type(codec_for(spec, be)) is type(codec_for(spec))
        assert np.array_equal(codec_for(spec, be).quantize(x), codec_for(spec).quantize(x))


def test_cupy_supports_the_uniform_family_and_the_legacy_types_so_far():
    gpu = backends.load("cupy")
    for name in ("Q4s32", "Q(4a16)xQ(6s16)_e4m3_rmse", *cuda_host.LEGACY_TYPES):
        assert gpu.supports(resolve(name)[0]) is None, name
    for name in ("Q4_K", "IQ4_NL", "NF4b64_f32"):
        why = gpu.supports(resolve(name)[0])
        assert why.startswith("the cupy backend has kernels for the uniform family and llama.cpp's "
                              "legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) only so far") and name in why


class HostCuda:
    """The cupy backend's kernels and format coverage, run through their host build."""
    name = "cuda-host"

    def available(self):
        return cuda_host.available()

    def device(self):
        return "CUDA sources, host build"

    def version(self):
        return "nvcc host build"

    def supports(self, spec):
        return backends.load("cupy").supports(spec)

    def codec(self, spec):
        if spec.family == "ggml":
            return HostLegacyCodec(spec)

        class HostCodec(Codec):
            def quantize(self, x, importance=None, threads=1):
                return cuda_host.quantize(x, self.spec)

            def dequantize(self, packed, shape):
                return cuda_host.dequantize(packed, shape, self.spec)
        return HostCodec(spec)


class HostLegacyCodec(LegacyCodec):
    """The cupy backend's legacy codec (fallback, refusals) on the host build's kernels."""

    def whole_rows(self):
        return cuda_host.legacy_quantize, cuda_host.legacy_dequantize


NEEDS_NVCC = pytest.mark.skipif(cuda_host.available() is not None, reason=str(cuda_host.available()))


@NEEDS_NVCC
def test_a_sweep_on_another_backend_keys_and_labels_its_rows(tmp_path):
    formats = "Q4s32,Q(4a16)xQ(6s16)_e4m3,Q3a64_e8m0_rmse,Q4_0,Q8_0,Q4_K"
    ref = run(None, formats, TENSORS, tmp_path / "numba", progress=False)
    rep = run(None, formats, TENSORS, tmp_path / "host", progress=False, backend=HostCuda())
    assert ref.measured == 2 * 6 and rep.measured == 2 * 5
    pairs = [(f, r) for _t, f, r in rep.skipped if f]        # (f == "": tensors the model skips)
    assert sorted(f for f, _r in pairs) == ["Q4_K", "Q4_K"]
    assert all(r.startswith("backend cuda-host: the cupy backend has kernels for the uniform family and")
               for _f, r in pairs)
    a = st.results(tmp_path / "numba").set_index(["tensor", "format"]).sort_index()
    b = st.results(tmp_path / "host").set_index(["tensor", "format"]).sort_index()
    assert set(b["backend"]) == {"cuda-host"} and set(b["device"]) == {"CUDA sources, host build"}
    assert set(a["backend"]) == {"numba-cpu"}
    cols = ["bpw", "nbytes", "mse", "nmse", "sqnr_db", "max_abs_err", "cosine", "bnl"]
    pd.testing.assert_frame_equal(b[cols], a.loc[b.index, cols])     # the same bytes: the same metrics
    skipped = st.query(tmp_path / "host", "SELECT format, reason, backend FROM skips WHERE format <> ''")
    assert set(skipped["backend"]) == {"cuda-host"} and set(skipped["format"]) == {"Q4_K"}
    again = run(None, formats, TENSORS, tmp_path / "host", progress=False, backend=HostCuda())
    assert again.measured == 0 and again.already == 2 * 5          # resumed under its own key


@NEEDS_NVCC
def test_legacy_types_on_the_cuda_sources_write_what_llama_quantize_writes(tmp_path):
    """Whole-block rows in the type, other rows in F16 (llama.cpp's fallback for the legacy
    types), NaN/Inf refused: the same bytes, rows and reasons as the numba backend."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 96)).astype(np.float32)
    x[0, :32] = 0.0                                  # an all-zero block
    x[1, 5] = 3e4                                    # a block whose scale is huge
    x[2, 40:72] = np.float32(1e-42)                  # float32 denormals
    odd = rng.standard_normal((5, 72)).astype(np.float32)    # 72 = 2 blocks + 8: F16
    for name in cuda_host.LEGACY_TYPES:
        spec = resolve(name)[0]
        host, ref = HostLegacyCodec(spec), codec_for(spec)
        for t in (x, odd, x[:1, :32], np.zeros((3, 64), np.float32)):
            q = host.quantize(t)
            assert np.array_equal(q, ref.quantize(t)), (name, t.shape)
            assert np.array_equal(host.dequantize(q, t.shape), ref.dequantize(q, t.shape)), (name, t.shape)
        assert host.applied(odd.shape) == "F16" and host.applied(x.shape) == name
        assert host.uses_importance(x.shape) == ref.uses_importance(x.shape) and not host.uses_importance(odd.shape)
        bad = x.copy()
        bad[3, 7] = np.nan
        with pytest.raises(NonFiniteError, match="non-finite"):
            host.quantize(bad)
        w = np.linspace(0.5, 2, 96, dtype=np.float32)
        if name == "Q8_0":      # llama.cpp's Q8_0 has no importance path: the same bytes with one
            assert np.array_equal(host.quantize(x, importance=w), ref.quantize(x, importance=w))
        else:
            with pytest.raises(NotOnThisBackend, match=f"quantizes {name} with an imatrix through its importance path"):
                host.quantize(x, importance=w)
        # F16 rows take no imatrix in llama.cpp either: the same bytes with one
        assert np.array_equal(host.quantize(odd, importance=w[:72]), ref.quantize(odd, importance=w[:72]))
        with pytest.raises(ValueError, match="importance has shape"):
            host.quantize(x, importance=w[:64])
        with pytest.raises(NonFiniteError):             # non-finite first, as numba
            host.quantize(np.full((1, 32), np.inf, np.float32), importance=w[:32])

    model = tmp_path / "m.npz"
    inf = x.copy()
    inf[4, 4] = np.inf
    np.savez(model, **{"a.weight": x, "b.weight": odd, "c.weight": inf})
    formats = ",".join(cuda_host.LEGACY_TYPES)
    ref = run(str(model), formats, None, tmp_path / "numba", progress=False)
    rep = run(str(model), formats, None, tmp_path / "host", progress=False, backend=HostCuda())
    assert rep.measured == ref.measured == 2 * 5
    assert sorted(rep.skipped) == sorted(ref.skipped) and len([s for s in rep.skipped if s[0] == "c.weight"]) == 5
    a = st.results(tmp_path / "numba").set_index(["tensor", "format"]).sort_index()
    b = st.results(tmp_path / "host").set_index(["tensor", "format"]).sort_index()
    cols = ["bpw", "nbytes", "mse", "nmse", "max_abs_err", "cosine", "applied_type", "fallback_note"]
    pd.testing.assert_frame_equal(b[cols], a[cols])
    assert set(b.loc["b.weight", "applied_type"]) == {"F16"}
    assert set(b.loc["a.weight", "applied_type"]) == set(cuda_host.LEGACY_TYPES)


@NEEDS_NVCC
def test_with_an_imatrix_the_legacy_types_are_skipped_on_the_cuda_sources_and_say_why(tmp_path):
    imatrix = Path(__file__).resolve().parents[1] / "data/imatrix/all-MiniLM-L6-v2.imatrix.gguf"
    rep = run(None, "Q4s32,Q4_0,Q8_0", TENSORS, tmp_path / "host", progress=False, backend=HostCuda(), imatrix=imatrix)
    ref = run(None, "Q4s32,Q8_0", TENSORS, tmp_path / "numba", progress=False, imatrix=imatrix)
    assert rep.measured == ref.measured == 2 * 2
    pairs = [(f, r) for _t, f, r in rep.skipped if f]
    assert [f for f, _r in pairs] == ["Q4_0", "Q4_0"]
    assert all(r == "backend cuda-host: llama.cpp quantizes Q4_0 with an imatrix through its importance "
                    "path, which the CUDA sources do not have yet" for _f, r in pairs)
    assert rep.skipped and all(f == "Q4_0" or not f for _t, f, _r in rep.skipped)
    a = st.results(tmp_path / "numba").set_index(["tensor", "format"]).sort_index()
    b = st.results(tmp_path / "host").set_index(["tensor", "format"]).sort_index()
    cols = ["bpw", "mse", "nmse", "cosine", "imatrix", "imatrix_note"]     # Q8_0: "ignores the imatrix"
    pd.testing.assert_frame_equal(b[cols], a[cols])
    assert set(b.loc[(slice(None), "Q8_0"), "imatrix_note"]) == {"Q8_0 ignores the imatrix"}


@pytest.mark.skipif(CUPY_WHY is None, reason="a GPU is visible here")
def test_cli_refuses_cupy_without_a_gpu_in_one_line_and_changes_nothing(tmp_path):
    store = tmp_path / "s"
    assert cli("sweep", "--formats", "Q4s32", "--tensors", TENSORS, "--store", store).returncode == 0
    before = snapshot(store)
    p = cli("sweep", "--backend", "cupy", "--formats", "Q4s32", "--tensors", TENSORS, "--store", store, "--no-resume")
    assert p.returncode == 2
    assert one_clear_line(p) == f"workbench sweep: error: --backend cupy: {CUPY_WHY}"
    assert snapshot(store) == before
    p = cli("bench", "--fused", "--backend", "auto")
    assert p.returncode == 2 and "applies to the default benchmark" in one_clear_line(p)


@pytest.mark.skipif(CUPY_WHY is None, reason="a GPU is visible here: auto picks cupy")
def test_cli_auto_says_which_backend_and_why(tmp_path):
    p = cli("sweep", "--backend", "auto", "--formats", "Q4s32", "--tensors", TENSORS, "--store", tmp_path / "s")
    assert p.returncode == 0, p.stderr
    assert (f"  backend numba-cpu on {st.device_name()} (auto: numba-cpu, because cupy cannot "
            f"run here ({CUPY_WHY}))") in p.stdout.splitlines()
    assert p.stderr.strip() == "" or "Traceback" not in p.stderr
    assert set(st.results(tmp_path / "s")["backend"]) == {"numba-cpu"}
