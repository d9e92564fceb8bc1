"""The notebooks run top to bottom against a small store the test builds (nbclient, real kernel)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from workbench import store as st
from workbench.formats import resolve
from workbench.sweep import run
from workbench.views.pareto import pareto_front
from workbench.views.tensors import tensor_stats

ROOT = Path(__file__).resolve().parents[1]
SEED_FORMATS = ("Q4s16_e4m3,Q4s32,Q4a16_e4m3,Q4a32,Q3s32_e4m3,Q3s64,Q(4s8)xQ(6s8)_e4m3,"
                "Q(4s16)xQ(6s16),Q4_0,Q4_K,IQ4_NL")


@pytest.fixture(scope="module")
def seed_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("nbstore")
    run(None, SEED_FORMATS, r"layer\.0\.(output\.dense|attention\.self\.query)", d, progress=False)
    return d


def execute(name: str, store: Path | None = None, env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """Run a notebook top to bottom; ``store`` sets WORKBENCH_STORE, ``env`` any other variable
    (the kernel inherits the environment). Errors stay in the outputs (see ``errors``)."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    env = {**({"WORKBENCH_STORE": str(store)} if store is not None else {}), **(env or {})}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def errors(nb) -> list[str]:
    """'ename: evalue (in: first line of the cell)' for every cell that raised."""
    return [f"{o['ename']}: {o['evalue']} (in: {c.source.splitlines()[0]})" for c in nb.cells
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


def figures(nb) -> int:
    """Code cells that rendered a HoloViews/bokeh object."""
    return sum(1 for c in nb.cells if c.cell_type == "code" and any(
        "application/vnd.holoviews_exec.v0+json" in o.get("data", {}) for o in c.get("outputs", [])))


def html_table(output) -> list[dict[str, str]]:
    """The rows of a displayed DataFrame (its text/html), as {column: cell text}."""
    html = output["data"]["text/html"]
    head = re.search(r"<thead>(.*?)</thead>", html, re.S).group(1)
    columns = re.findall(r"<th[^>]*>(.*?)</th>", re.search(r"<tr[^>]*>(.*?)</tr>", head, re.S).group(1))
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", re.search(r"<tbody>(.*?)</tbody>", html, re.S).group(1), re.S):
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, re.S)
        rows.append(dict(zip(columns[1:], cells[1:])))       # the first cell is the index
    return rows


def stderr(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stderr")


def stream(nb) -> str:
    """Everything the notebook printed (stdout and stderr)."""
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")


def text_of(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            out.append(str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def test_seed_figures_notebook(seed_store):
    nb = execute("01_seed_figures.ipynb", seed_store)
    assert not errors(nb)
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


# ------------------------------------------------------------------------- 02: one tensor
TENSOR = "encoder.layer.0.output.dense.weight"      # the notebook's default; in seed_store
NB02_FORMATS = ("Q4s32", "Q4s16_e4m3", "Q(4s8)xQ(6s8)_e4m3", "Q4_K")   # the notebook's FORMATS


def test_one_tensor_notebook(seed_store, minilm):
    nb = execute("02_one_tensor.ipynb", seed_store)
    assert not errors(nb)
    assert not stderr(nb)
    out = stream(nb)
    model = st.models(seed_store)[0]
    rows = st.summary(seed_store, model, tensor_regex=f"^{re.escape(TENSOR)}$")
    x = next(t for t in minilm.weights() if t.name == TENSOR).load()
    assert f"{model} · {TENSOR}: {x.shape[0]}×{x.shape[1]}, {len(rows)} formats measured" in out

    # the tail statistic, and the block-scale span recomputed here with plain numpy
    assert f"excess kurtosis {tensor_stats(x)['excess_kurtosis']:.1f}: rank " in out
    amax = np.abs(x.astype(np.float64)).reshape(x.shape[0], -1, 32).max(axis=2)
    assert f"{amax.size} blocks of 32: scales span {np.log2(amax.max() / amax.min()):.1f} binades" in out

    # reconstructing each format here reproduces the stored measurement bit for bit
    stored = st.results(seed_store, model).query("tensor == @TENSOR").set_index("format")["nmse"]
    for f in NB02_FORMATS:
        assert f"{f}: nmse {stored[f]:.6e} here, {stored[f]:.6e} stored: identical" in out

    # each llama.cpp type against the best uniform single/double at no more bits (plain pandas)
    uniform = rows[rows.family == "uniform"]
    for g in rows[rows.family == "ggml"].itertuples():
        line = next(ln for ln in out.splitlines() if ln.startswith(f"{g.format} ({g.bpw:.3f} bpw): "))
        pools = {"single": uniform[uniform.super_bits.isna()], "double": uniform[uniform.super_bits.notna()]}
        for side, pool in pools.items():
            cand = pool[pool.bpw <= g.bpw + 1e-9]
            if len(cand):
                best = cand.sort_values(["nmse", "bpw", "format"]).iloc[0]
                assert f"best {side} {best.format} ({best.bpw:.3f} bpw) ratio {best.nmse / g.nmse:.3f}" in line
            else:
                assert f"no {side} format" in line
    # every llama.cpp type of the sweep had its line checked
    assert set(rows[rows.family == "ggml"].format) == {f.name for f in resolve(SEED_FORMATS) if f.family == "ggml"}
    assert figures(nb) >= 6


# ------------------------------------------------------------------ 03: two stores compared
FORMATS_A = "Q4s32,Q4s16_e4m3,Q4_0,Q4_K,Q(4s8)xQ(6s8)_e4m3"
FORMATS_B = "Q4s32,Q4_0,Q4_K,Q3s64,IQ4_NL,Q(4s16)xQ(6s16)"
TENSORS_A = r"layer\.0\.(attention\.self\.(query|key)|intermediate)"
TENSORS_B = r"layer\.0\.attention\.self\.(query|key|value)"


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    """Two real sweeps with overlapping tensors and formats; B is handed over as an exported file,
    as a collaborator would send it."""
    d = tmp_path_factory.mktemp("compare")
    run(None, FORMATS_A, TENSORS_A, d / "a", progress=False)
    run(None, FORMATS_B, TENSORS_B, d / "b", progress=False)
    st.export(d / "b", d / "b.parquet")
    return d / "a", d / "b", d / "b.parquet"


def test_compare_stores_notebook(two_stores, tmp_path):
    a, b, b_file = two_stores
    merged = tmp_path / "merged"
    nb = execute("03_compare_stores.ipynb", env={"WORKBENCH_STORE_A": str(a), "WORKBENCH_STORE_B": str(b_file),
                                                 "WORKBENCH_STORE_MERGED": str(merged)})
    assert not errors(nb)
    assert not stderr(nb)
    out = stream(nb)
    ra, rb = st.results(a), st.results(b)
    fa, fb = set(ra.format), set(rb.format)
    ta, tb = set(ra.tensor), set(rb.tensor)
    assert fa & fb and fa - fb and fb - fa and ta & tb     # the fixture overlaps partly
    assert f"formats in both ({len(fa & fb)}) {', '.join(sorted(fa & fb))}" in out
    assert f"formats only in B ({len(fb - fa)}) {', '.join(sorted(fb - fa))}" in out

    # same tensor, same format, same code: the same error, bit for bit
    pairs = set(zip(ra.tensor, ra.format)) & set(zip(rb.tensor, rb.format))
    assert len(pairs) == len(ta & tb) * len(fa & fb)
    assert f"{len(pairs)} (tensor, format) pairs in both: {len(pairs)} identical nmse, 0 differ" in out
    assert "quantize throughput A / B: median" in out

    # the merge: B's keys that A holds already are skipped, nothing else
    key = list(st.NATURAL_KEY)
    shared = len(ra[key].merge(rb[key], on=key))
    assert shared == len(pairs)                            # same machine and version: key = (tensor, format)
    assert f"store B: {len(rb)} rows exported; {len(rb) - shared} added to {merged}, {shared} already there" in out
    assert len(st.results(merged)) == len(ra) + len(rb) - shared

    # the union frontier over the common tensors, each format marked with its origin
    regex = "^(?:" + "|".join(re.escape(t) for t in sorted(ta & tb)) + ")$"
    union = st.summary(merged, tensor_regex=regex)
    assert set(union.format) == fa | fb and (union.tensors == len(ta & tb)).all()
    front = pareto_front(union, "bpw", "nmse")
    origin = {f: "both" if f in fa and f in fb else ("A" if f in fa else "B") for f in union.format}
    listed = ", ".join(f"{f} [{origin[f]}]" for f in front.format)
    assert f"union frontier over {len(ta & tb)} tensors: {listed}" in out
    assert figures(nb) >= 2

    # the final table: one row per format both measured, over the common tensors, ratio 1
    table = html_table(nb.cells[-1].outputs[-1])
    assert sorted(r["format"] for r in table) == sorted(fa & fb)
    common = ra[ra.tensor.isin(ta & tb)]
    for r in table:
        mine = common[common.format == r["format"]]
        want = (mine.nmse * mine.numel).sum() / mine.numel.sum()
        assert int(r["tensors"]) == len(ta & tb) and int(r["mismatches"]) == 0
        # shown to 6 decimals
        assert float(r["nmse_a"]) == pytest.approx(want, abs=5e-7) and r["nmse_a"] == r["nmse_b"]
        assert float(r["ratio"]) == 1.0
