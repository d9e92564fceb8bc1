"""Shared fixtures: the real default model (all-MiniLM-L6-v2), loaded once per session."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.sources import open_model


@pytest.fixture(scope="session")
def minilm():
    """The embedded default model as a ModelSource (real fp32 weights from site-packages)."""
    return open_model(None)


@pytest.fixture(scope="session")
def minilm_tensors(minilm) -> dict[str, np.ndarray]:
    """Every 2-D float weight matrix of the default model, as float32 C-contiguous arrays."""
    return {t.name: t.load() for t in minilm.weights()}


@pytest.fixture(scope="session")
def oracle():
    """llama.cpp's ggml_quantize_chunk (workbench.oracle); skips when `.[reference]` is missing."""
    from workbench import oracle as o
    if not o.available():
        pytest.skip(o.MISSING)
    return o


@pytest.fixture(scope="session")
def small_store(tmp_path_factory):
    """A real store: the default model's layer-0 tensors × the 12 'small' formats, measured once
    per session (read-only: copy it before writing)."""
    from workbench import sweep
    path = tmp_path_factory.getbasetemp() / "small-store"
    if not (path / ".complete").exists():
        sweep.run(formats="small", tensors=r"layer\.0\.", store=path, progress=False)
        (path / ".complete").touch()
    return path


@pytest.fixture
def store(small_store, tmp_path):
    """A private copy of the small store, for tests that write to it."""
    import shutil
    copy = tmp_path / "store"
    shutil.copytree(small_store, copy, ignore=shutil.ignore_patterns(".complete"))
    return copy
