"""The cupy backend on a GPU: the packed bytes and decoded values of every uniform format the
host-build test covers (test_cuda_host.UNIFORM), on the edge cases with NaN/Inf and on real MiniLM
slices, and of llama.cpp's legacy types through the sweep's codec (with its F16 fallback), equal to
the Numba kernels'. Skipped, saying why, without CuPy or a CUDA device (every
machine CI runs on); scripts/gpu-check.sh runs the same comparison on a lent GPU without the
test dependencies."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench import backends
from workbench.codecs import codec_for

from edge_tensors import uniform_edge_cases
from test_cuda_host import UNIFORM, assert_same_values

GPU = backends.load("cupy")
NEEDS_GPU = pytest.mark.skipif(GPU.available() is not None, reason=str(GPU.available()))
ROOT = Path(__file__).resolve().parent.parent


@NEEDS_GPU
def test_cupy_bytes_and_values_are_numbas(minilm_tensors):
    cases = {**uniform_edge_cases(nonfinite=True),
             **{n: np.ascontiguousarray(minilm_tensors[n][:32]) for n in
                ("encoder.layer.0.attention.self.query.weight", "encoder.layer.3.output.dense.weight")}}
    failed = []
    for spec in UNIFORM:               # one test, every format: a failure lists each one that differs
        ref, dev = codec_for(spec), codec_for(spec, GPU)
        for name, x in cases.items():
            if spec.applies_to(x.shape):
                continue
            want, got = ref.quantize(x), dev.quantize(x)
            try:
                assert np.array_equal(got, want), "bytes differ"
                assert_same_values(dev.dequantize(got, x.shape), ref.dequantize(want, x.shape), name)
            except AssertionError as exc:
                failed.append(f"{spec.name} on {name}: {str(exc).splitlines()[0]}")
    assert not failed, f"{len(failed)} (format, tensor) pairs differ: {failed[:10]}"


@NEEDS_GPU
def test_cupy_legacy_types_write_numbas_bytes_with_the_fallback(minilm_tensors):
    from workbench.cuda_host import LEGACY_TYPES
    from workbench.formats import resolve
    x = np.ascontiguousarray(minilm_tensors["encoder.layer.0.attention.self.query.weight"])
    cases = {"query": x, "40 columns (F16 fallback)": np.ascontiguousarray(x[:16, :40]),
             "zeros": np.zeros((4, 64), np.float32)}
    for name in LEGACY_TYPES:
        spec = resolve(name)[0]
        ref, dev = codec_for(spec), codec_for(spec, GPU)
        for what, t in cases.items():
            want, got = ref.quantize(t), dev.quantize(t)
            assert np.array_equal(got, want), (name, what)
            assert_same_values(dev.dequantize(got, t.shape), ref.dequantize(want, t.shape), what)


@pytest.mark.skipif(GPU.available() is None, reason="a GPU is visible: gpu-check would run")
def test_gpu_check_says_in_one_line_why_it_cannot_run():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py")], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2
    assert p.stderr.strip() == f"gpu-check: cannot run: {GPU.available()}" and "Traceback" not in p.stderr
