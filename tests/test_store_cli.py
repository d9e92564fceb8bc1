"""Store, sweep and CLI behaviour: resume after a kill, bad input refused with one line and no change."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workbench import store as st
from workbench.formats import default_grid
from workbench.sources import default_model_path
from workbench.sweep import run

TENSORS = r"layer\.0\.(attention\.self\.query|output\.dense)\.weight"
KEY = list(st.NATURAL_KEY)
METRICS = ["bpw", "numel", "nbytes", "mse", "nmse", "sqnr_db", "max_abs_err", "cosine", "bnl"]


def cli(*args, env=None, **kw):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "workbench", *map(str, args)], capture_output=True,
                          text=True, env=e, timeout=600, **kw)


def snapshot(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


def one_clear_line(proc):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert len(err.splitlines()) == 1, err
    assert "error" in err
    return err


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("store")
    rep = run(None, "small", TENSORS, d, progress=False)
    assert rep.measured == 2 * 12
    return d


def test_sweep_rows_and_provenance(small_store):
    df = st.results(small_store)
    assert len(df) == 24 and not df.duplicated(KEY).any()
    for col in ("run_id", "host", "device", "git_rev", "packages", "created_at", "schema_version"):
        assert df[col].notna().all(), col
    assert (df["schema_version"] == st.SCHEMA_VERSION).all()
    assert np.allclose(df["bpw"], df["nbytes"] * 8 / df["numel"])
    skips = st.query(small_store, "SELECT * FROM skips")
    assert {"1-D tensor (bias/norm); only 2-D weight matrices are swept by default",
            "integer buffer, not a weight"} <= set(skips["reason"])
    assert "embeddings.position_ids" in set(skips["tensor"])


def test_summary_is_numel_weighted_mean(small_store):
    df = st.results(small_store)
    s = st.summary(small_store).set_index("format")
    for fmt, g in df.groupby("format"):
        w = g["numel"] / g["numel"].sum()
        assert s.loc[fmt, "nmse"] == pytest.approx((g["nmse"] * w).sum(), rel=1e-12)
        assert s.loc[fmt, "bpw"] == pytest.approx((g["nbytes"].sum() * 8) / g["numel"].sum(), rel=1e-12)
        assert s.loc[fmt, "tensors"] == 2


def test_rerun_does_nothing_new(small_store):
    before = snapshot(small_store)
    rep = run(None, "small", TENSORS, small_store, progress=False)
    assert rep.measured == 0 and rep.already == 24
    after = snapshot(small_store)
    new = set(after) - set(before)
    assert all("table=skips" in p for p in new)  # only the skip list of this run is added
    assert all(after[p] == before[p] for p in before)


def test_no_resume_replaces_the_stored_rows(tmp_path):
    """--no-resume measures again and its rows replace the stored ones: one row per key, the
    new run's; the old files move to quarantine/superseded/ (their other rows written again),
    the store checks sound, and the CLI says how many rows it replaced."""
    store = tmp_path / "s"
    first = run(None, "Q4_0,Q8_0", TENSORS, store, progress=False)
    proc = cli("sweep", "--formats", "Q4_0,NF4b64", "--tensors", TENSORS, "--no-resume", "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert "replaced 2 stored rows" in proc.stdout and "superseded" in proc.stdout
    df = st.results(store)
    assert len(df) == 6 and not df.duplicated(KEY).any()
    runs = df.groupby("format")["run_id"].agg(set)
    assert runs["Q8_0"] == {first.run_id}                  # untouched rows keep their run
    assert first.run_id not in runs["Q4_0"] | runs["NF4b64"]    # replaced by the new run's rows
    old = list((store / "quarantine" / "superseded").rglob("*.parquet"))
    assert old and sum(pq.read_metadata(p).num_rows for p in old) == 4   # moved whole, never deleted
    assert cli("store", "check", "--store", store).returncode == 0


def test_killed_sweep_resumes_to_the_same_rows(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    tensors = r"layer\.[01]\."
    env = {"WORKBENCH_FLUSH_SECONDS": "0"}
    p = subprocess.Popen([sys.executable, "-m", "workbench", "sweep", "--formats", "default",
                          "--tensors", tensors, "--store", killed], env=dict(os.environ, **env),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(killed.glob("model=*/table=results/*.parquet")):
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    partial = st.results(killed)
    total = 12 * len(default_grid())
    assert 0 < len(partial) < total, "the sweep was not interrupted mid-way"
    # resume, and an uninterrupted sweep for comparison
    assert cli("sweep", "--formats", "default", "--tensors", tensors, "--store", killed, env=env).returncode == 0
    run(None, "default", tensors, clean, progress=False)
    a = st.results(killed).sort_values(KEY).reset_index(drop=True)
    b = st.results(clean).sort_values(KEY).reset_index(drop=True)
    assert len(a) == len(b) == total
    assert not a.duplicated(KEY).any()
    pd.testing.assert_frame_equal(a[KEY + METRICS], b[KEY + METRICS])


def test_truncated_model_is_refused_and_store_unchanged(small_store, tmp_path):
    src = default_model_path().read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(src[: len(src) // 2])
    before = snapshot(small_store)
    err = one_clear_line(cli("sweep", "--model", bad, "--store", small_store))
    assert "truncated" in err
    assert snapshot(small_store) == before


@pytest.mark.parametrize("content", ["garbage", "wrong_columns", "future_schema", "bad_format"])
def test_bad_import_is_refused_and_store_unchanged(small_store, tmp_path, content):
    f = tmp_path / "colleague.parquet"
    if content == "garbage":
        f.write_bytes(os.urandom(4096))
    elif content == "wrong_columns":
        pq.write_table(pa.table({"a": [1, 2]}), f)
    else:
        st.export(small_store, f)
        t = pq.read_table(f)
        col = "schema_version" if content == "future_schema" else "format"
        val = pa.array([99] * t.num_rows, pa.int32()) if col == "schema_version" else pa.array(["Q4x99"] * t.num_rows)
        t = t.set_column(t.schema.get_field_index(col), col, val)
        pq.write_table(t, f)
    before = snapshot(small_store)
    one_clear_line(cli("import", f, "--store", small_store))
    assert snapshot(small_store) == before


def test_export_import_round_trip(small_store, tmp_path):
    f = tmp_path / "share.parquet"
    assert cli("export", f, "--store", small_store).returncode == 0
    meta = pq.read_schema(f).metadata
    assert b"workbench" in meta
    other = tmp_path / "other"
    r = cli("import", f, "--store", other)
    assert r.returncode == 0 and "imported 24 rows" in r.stdout
    a = st.results(small_store).sort_values(KEY).reset_index(drop=True)
    b = st.results(other).sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    before = snapshot(other)
    r = cli("import", f, "--store", other)  # importing again adds nothing, changes nothing
    assert r.returncode == 0 and "imported 0 rows; 24 already present" in r.stdout
    assert snapshot(other) == before


def test_cli_help_and_formats():
    r = cli("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("sweep", "formats", "export", "import", "bench", "serve"))
    for c in ("sweep", "formats", "export", "import", "bench", "serve"):
        assert cli(c, "--help").returncode == 0
    r = cli("formats", "small", "--shape", "384x384")
    assert r.returncode == 0 and "Q(4a16)xQ(6s16)_e4m3" in r.stdout and "12 formats" in r.stdout
    one_clear_line(cli("formats", "Q9z1"))


def test_non_finite_tensor_is_listed_not_swept(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    x[1, 3] = np.nan
    np.savez(tmp_path / "m.npz", good=np.ones((2, 64), np.float32), bad=x, ids=np.arange(5))
    rep = run(tmp_path / "m.npz", "Q4_0,Q4s32", None, tmp_path / "s", progress=False)
    assert rep.measured == 2
    reasons = {(t, f): r for t, f, r in rep.skipped}
    assert reasons[("bad", "Q4_0")] == "tensor has 1 non-finite values (NaN/Inf)"
    assert reasons[("ids", "")] == "integer buffer, not a weight"
