"""The notebooks run top to bottom against a small store the test builds (nbclient, real kernel)."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from workbench.sweep import run

ROOT = Path(__file__).resolve().parents[1]
SEED_FORMATS = ("Q4s16_e4m3,Q4s32,Q4a16_e4m3,Q4a32,Q3s32_e4m3,Q3s64,Q(4s8)xQ(6s8)_e4m3,"
                "Q(4s16)xQ(6s16),Q4_0,Q4_K,IQ4_NL")


@pytest.fixture(scope="module")
def seed_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("nbstore")
    run(None, SEED_FORMATS, r"layer\.0\.(output\.dense|attention\.self\.query)", d, progress=False)
    return d


def execute(name: str, store: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    old = os.environ.get("WORKBENCH_STORE")
    os.environ["WORKBENCH_STORE"] = str(store)          # the kernel inherits the environment
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        if old is None:
            os.environ.pop("WORKBENCH_STORE", None)
        else:
            os.environ["WORKBENCH_STORE"] = old
    return nb


def text_of(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            out.append(str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def test_seed_figures_notebook(seed_store):
    nb = execute("01_seed_figures.ipynb", seed_store)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = text_of(nb)
    assert "all-MiniLM-L6-v2: 11 formats" in text
    # pairs: Q4s16_e4m3/Q4s32, Q4a16_e4m3/Q4a32, Q3s32_e4m3/Q3s64
    assert "of 3 pairs are net gains for e4m3 at B/2" in text
    assert "Q4s16_e4m3" in text and "Q3s32_e4m3" in text
    assert "llama.cpp types on the frontier:" in text
    assert "of 1 pairs are net gains for 8×8 e4m3" in text
    # every figure cell rendered a HoloViews/bokeh object
    figs = [c for c in nb.cells if c.cell_type == "code" and any(
        "application/vnd.holoviews_exec.v0+json" in o.get("data", {}) or "text/html" in o.get("data", {})
        for o in c.get("outputs", []))]
    assert len(figs) >= 3
