"""The model_eval table: natural key under the lock, dedupe of old duplicates, export/import
(standalone and carried inside a results export), validation before anything is written, and the
evaluation orchestration on a small real two-layer network (so these tests need no model file)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from workbench import eval_store, evaluate, store as st, truth
from workbench.evaltext import EvalText


class TinyNet:
    """A two-layer MLP over fixed inputs: drift of its outputs against the float32 reference."""
    kind = "encoder"
    model_id = "tiny-net"
    n_ctx = 0

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.w = {"layer.0.attention.self.query.weight": rng.standard_normal((64, 96)).astype(np.float32) * 0.1,
                  "layer.0.intermediate.dense.weight": (rng.standard_normal((96, 64)) * 0.05 + 0.02).astype(np.float32)}
        self.x = rng.standard_normal((40, 96)).astype(np.float32)
        self.calls = 0

    def weights(self):
        return dict(self.w)

    def _out(self, w):
        h = np.maximum(self.x @ w["layer.0.attention.self.query.weight"].T, 0)
        o = h @ w["layer.0.intermediate.dense.weight"].T
        return o / np.linalg.norm(o, axis=1, keepdims=True)

    def reference(self):
        return self._out(self.w)

    def evaluate(self, replaced):
        self.calls += 1
        w = {**self.w, **replaced}
        cos = (self._out(w) * self.reference()).sum(1)
        return {"drift": float(1 - cos.mean()), "cosine_min": float(cos.min())}


TEXT = EvalText(name="test", text="one. two. three.", sentences=["one.", "two.", "three."],
                fingerprint="f" * 64)


def run(store, formats="Q4_0,Q8_0,Q4a32", **kw):
    return evaluate.run(formats=formats, store=store, evaluator=kw.pop("ev", TinyNet()),
                        text=None, progress=False, **kw)


@pytest.fixture(autouse=True)
def _text(monkeypatch):
    import workbench.evaltext as et
    monkeypatch.setattr(et, "load", lambda path=None: TEXT)


def files(store):
    return sorted(p.relative_to(store).as_posix() for p in Path(store).rglob("*") if p.is_file() and p.name != ".lock")


def test_eval_rows_are_real_and_resumable(tmp_path):
    ev = TinyNet()
    rep = run(tmp_path, ev=ev)
    assert rep.measured == 3 and ev.calls == 3
    df = eval_store.evals(tmp_path)
    assert sorted(df["format"]) == ["Q4_0", "Q4a32", "Q8_0"]
    d = df.set_index("format")
    # finer grid, smaller drift and weight error; Q8_0 is 8.5 bpw on these shapes
    assert d.loc["Q8_0", "drift"] < d.loc["Q4_0", "drift"] and d.loc["Q8_0", "w_nmse"] < d.loc["Q4_0", "w_nmse"]
    assert d.loc["Q8_0", "bpw"] == pytest.approx(8.5) and d.loc["Q4_0", "bpw"] == pytest.approx(4.5)
    assert (d["n_tensors"] == 2).all() and (d["numel"] == 2 * 64 * 96).all()
    # the stored nmse is the numel-weighted mean of the tensors' own
    from workbench.codecs import codec_for
    from workbench.formats import resolve
    from workbench.metrics import tensor_metrics
    c = codec_for(resolve("Q4_0")[0])
    nm = [tensor_metrics(x, c.dequantize(c.quantize(x), x.shape))["nmse"] for x in ev.w.values()]
    assert d.loc["Q4_0", "w_nmse"] == pytest.approx(np.mean(nm), rel=1e-12)
    assert set(json.loads(d.loc["Q4_0", "group_nmse"])) == {"attn_q", "ffn_up"}
    before = files(tmp_path)
    ev2 = TinyNet()
    rep2 = run(tmp_path, ev=ev2)
    assert rep2.measured == 0 and rep2.already == 3 and ev2.calls == 0 and files(tmp_path) == before


def test_no_resume_replaces_the_stored_evaluations(tmp_path):
    """resume=False evaluates again and the new rows replace the stored ones (one row per key,
    the new run's); the old file moves to quarantine/superseded/ and its other row is kept."""
    first = run(tmp_path, formats="Q4_0,Q8_0")
    rep = run(tmp_path, formats="Q4_0,Q4a32", resume=False)
    assert rep.measured == 2 and rep.replacing == 1
    df = eval_store.evals(tmp_path).set_index("format")
    assert sorted(df.index) == ["Q4_0", "Q4a32", "Q8_0"]
    assert df.loc["Q8_0", "run_id"] == first.run_id and df.loc["Q4_0", "run_id"] == rep.run_id
    old = list((Path(tmp_path) / "quarantine" / "superseded").rglob("*.parquet"))
    assert len(old) == 1 and pq.read_metadata(old[0]).num_rows == 1     # one row per write: Q4_0's


def test_fallbacks_are_counted(tmp_path):
    """Rows of 96 and 64: Q4_K's 256-blocks divide neither, llama-quantize writes Q5_0."""
    run(tmp_path, formats="Q4_K,Q4_0")
    d = eval_store.evals(tmp_path).set_index("format")
    assert d.loc["Q4_K", "fallback_tensors"] == 2 and d.loc["Q4_K", "applied_types"] == "Q5_0:2"
    assert d.loc["Q4_0", "fallback_tensors"] == 0 and d.loc["Q4_0", "applied_types"] == "Q4_0:2"


def test_bias_metric_sees_a_biased_grid(tmp_path):
    """w_bias equals nmse for unbiased errors and exceeds it for Q4_0's one-sided clipping of
    weights with a positive mean (the second tensor)."""
    run(tmp_path)
    d = eval_store.evals(tmp_path).set_index("format")
    assert d.loc["Q4_0", "w_bias"] > d.loc["Q4a32", "w_bias"]


def test_sensitivity_groups_and_additivity(tmp_path):
    run(tmp_path, formats="Q4_0,Q3a32", sensitivity=True)
    ev = eval_store.evals(tmp_path)
    assert sorted(ev["tensors"].unique()) == ["all", "group:attn_q", "group:ffn_up"]
    sens = truth.sensitivity(ev)
    assert len(sens) == 4 and np.allclose(sens.groupby("format")["share"].sum(), 1)
    add = truth.additivity(ev)
    assert set(add["format"]) == {"Q4_0", "Q3a32"} and (add["ratio"] > 0).all()
    a = truth.alphas(ev)
    whole = truth.with_sensitivity_metric(truth.whole_model(ev), a)
    assert whole["w_sens"].notna().all()


class ThreeTensorNet(TinyNet):
    """Two tensors of one group (attn_q of layers 0 and 1) and one of another (ffn_up)."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.w = {"layer.0.attention.self.query.weight": (rng.standard_normal((96, 96)) * 0.1).astype(np.float32),
                  "layer.1.attention.self.query.weight": (rng.standard_normal((64, 96)) * 0.1).astype(np.float32),
                  "layer.0.intermediate.dense.weight": (rng.standard_normal((96, 64)) * 0.05 + 0.02).astype(np.float32)}
        self.x = rng.standard_normal((40, 96)).astype(np.float32)
        self.calls = 0

    def _out(self, w):
        h = np.maximum(self.x @ w["layer.0.attention.self.query.weight"].T, 0)
        h = np.maximum(h @ w["layer.1.attention.self.query.weight"].T, 0)
        o = h @ w["layer.0.intermediate.dense.weight"].T
        return o / np.linalg.norm(o, axis=1, keepdims=True)


def test_sensitivity_single_tensors(tmp_path):
    """--sensitivity tensor: one row per tensor alone, labelled tensor:<name>, whose drift is
    that of the network with only that tensor quantized and whose nmse is the tensor's own."""
    ev = ThreeTensorNet()
    rep = run(tmp_path, formats="Q4_0,Q3a32", ev=ev, sensitivity="tensor")
    assert rep.measured == 8 and ev.calls == 8             # 2 formats × (whole + 3 tensors)
    rows = eval_store.evals(tmp_path)
    names = sorted(ThreeTensorNet().w)
    assert sorted(rows["tensors"].unique()) == sorted(["all"] + [f"tensor:{n}" for n in names])
    sens = truth.sensitivity(rows, level="tensor")
    assert len(sens) == 6 and np.allclose(sens.groupby("format")["share"].sum(), 1)
    assert dict(zip(sens["tensor"], sens["group"])) == {
        "layer.0.attention.self.query.weight": "attn_q", "layer.1.attention.self.query.weight": "attn_q",
        "layer.0.intermediate.dense.weight": "ffn_up"}
    # the stored figures are the real ones: recompute one tensor alone by hand
    from workbench.codecs import codec_for
    from workbench.formats import resolve
    from workbench.metrics import tensor_metrics
    c = codec_for(resolve("Q4_0")[0])
    name = "layer.1.attention.self.query.weight"
    x = ev.w[name]
    y = c.dequantize(c.quantize(x), x.shape)
    r = sens[(sens["format"] == "Q4_0") & (sens["tensor"] == name)].iloc[0]
    assert r["value"] == pytest.approx(ThreeTensorNet().evaluate({name: y})["drift"], rel=1e-12)
    assert r["nmse"] == pytest.approx(tensor_metrics(x, y)["nmse"], rel=1e-12)
    add = truth.additivity(rows, level="tensor")
    assert sorted(add["format"]) == ["Q3a32", "Q4_0"] and (add["parts"] == 3).all()
    whole = truth.whole_model(rows).set_index("format")
    for f, g in sens.groupby("format"):
        got = add.set_index("format").loc[f]
        assert got["sum_of_parts"] == pytest.approx(g["value"].sum()) and got["whole"] == whole.loc[f, "drift"]
    assert truth.sensitivity(rows, level="group").empty     # no group runs yet
    assert truth.group_additivity(rows).empty
    # groups too: within ffn_up (one tensor) the tensor alone is the group alone, exactly
    run(tmp_path, formats="Q4_0,Q3a32", ev=ThreeTensorNet(), sensitivity=True)
    within = truth.group_additivity(eval_store.evals(tmp_path)).set_index(["format", "group"])
    assert sorted(within.index) == [("Q3a32", "attn_q"), ("Q3a32", "ffn_up"), ("Q4_0", "attn_q"), ("Q4_0", "ffn_up")]
    assert (within.loc[(slice(None), "attn_q"), "tensors"] == 2).all()
    assert np.allclose(within.loc[(slice(None), "ffn_up"), "ratio"], 1.0, rtol=0, atol=1e-15)
    assert (within.loc[(slice(None), "attn_q"), "ratio"] > 0).all()


def test_sensitivity_single_tensors_of_a_subset_and_bad_levels(tmp_path):
    """A --tensors run labels its single tensors apart (they are not the whole model's parts);
    one tensor chosen gives no extra runs; an unknown level is refused before anything runs."""
    ev = ThreeTensorNet()
    run(tmp_path, formats="Q4_0", ev=ev, sensitivity="tensor", tensors="query")
    labels = sorted(eval_store.evals(tmp_path)["tensors"].unique())
    assert labels == ["re:query", "re:query/tensor:layer.0.attention.self.query.weight",
                      "re:query/tensor:layer.1.attention.self.query.weight"]
    assert truth.sensitivity(eval_store.evals(tmp_path), level="tensor").empty
    rep = run(tmp_path / "one", formats="Q4_0", ev=ThreeTensorNet(), sensitivity="tensor", tensors="layer\\.1\\.")
    assert rep.measured == 1
    before = files(tmp_path)
    with pytest.raises(evaluate.EvalError, match="one of group, tensor"):
        run(tmp_path, formats="Q4_0", ev=ThreeTensorNet(), sensitivity="tensors")
    with pytest.raises(ValueError, match="level"):
        truth.sensitivity(eval_store.evals(tmp_path), level="row")
    assert files(tmp_path) == before


def test_duplicate_key_never_written(tmp_path):
    run(tmp_path, formats="Q4_0")
    row = eval_store.evals(tmp_path).iloc[0].to_dict()
    files_, dropped = eval_store.write_evals(tmp_path, [row, dict(row)])
    assert files_ == [] and dropped == 2
    assert len(eval_store.evals(tmp_path)) == 1


def test_old_duplicates_read_as_one_row(tmp_path):
    run(tmp_path, formats="Q4_0")
    row = eval_store.evals(tmp_path).iloc[0].to_dict()
    later = {**row, "drift": 0.5, "created_at": row["created_at"] + pd.Timedelta(seconds=5)}
    st._write_unlocked(tmp_path, "model_eval", [later])   # around the lock, as an old version could
    df = eval_store.evals(tmp_path)
    assert len(df) == 1 and df["drift"].iloc[0] == row["drift"]     # the first stored wins


def write_one_result(store):
    """One results row of the tiny network, so a results export has something to carry."""
    st.write(store, "results", [{"model": "tiny-net", "tensor": "t", "format": "Q4_0", "family": "ggml", "bpw": 4.5,
                                 "numel": 64, "mse": 0.1, "nmse": 0.01, "backend": "numba-cpu", "device": "d",
                                 "run_id": "r", "created_at": pd.Timestamp.now(tz="UTC"), "workbench_version": "0",
                                 "schema_version": st.SCHEMA_VERSION, "rows": 1, "cols": 64, "imatrix": ""}])


def test_export_carries_evaluations_and_import_brings_them(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(a)
    write_one_result(a)
    out = tmp_path / "x.parquet"
    st.export(a, out, model="tiny-net")
    assert eval_store.EMBED_KEY in pq.read_schema(out).metadata
    assert pq.read_table(out).num_rows == 1           # the results table itself is unchanged
    added, skipped = st.import_file(out, b)
    assert (added, skipped) == (4, 0)
    pd.testing.assert_frame_equal(eval_store.evals(a).drop(columns=[]), eval_store.evals(b))
    assert st.import_file(out, b) == (0, 4)           # again: every key already stored
    only = tmp_path / "evals.parquet"
    assert eval_store.export(a, only) == 3
    c = tmp_path / "c"
    assert st.import_file(only, c) == (3, 0)
    pd.testing.assert_frame_equal(eval_store.evals(a), eval_store.evals(c))


@pytest.mark.parametrize("change, msg", [
    ({"drift": -0.5}, "impossible values: drift"),
    ({"kld_mean": float("inf")}, "impossible values: kld_mean"),
    ({"top1_agreement": 1.5}, "impossible values: top1_agreement"),
    ({"bpw": 0.0}, None),
    ({"variant": "other"}, "variant 'other' is not one of"),
    ({"kind": "vision"}, "kind 'vision' is not one of"),
    ({"model": "../evil"}, "invalid model id"),
    ({"schema_version": 99}, "newer than this workbench"),
    ({"group_nmse": "[1, 2]"}, "group_nmse is not a JSON object"),
    ({"format": ""}, "column 'format' has 1 empty values"),
])
def test_bad_evaluation_file_changes_nothing(tmp_path, change, msg):
    a, b = tmp_path / "a", tmp_path / "b"
    run(a, formats="Q4_0")
    run(b, formats="Q8_0")
    only = tmp_path / "e.parquet"
    eval_store.export(a, only)
    t = pq.read_table(only)
    df = t.to_pandas()
    for k, v in change.items():
        df[k] = v
    import pyarrow as pa
    bad = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(t.schema.metadata)
    pq.write_table(bad, only)
    before = {p: p.read_bytes() for p in b.rglob("*.parquet")}
    if msg is None:   # bpw 0 is out of range too
        msg = "impossible values: bpw"
    proc = subprocess.run([sys.executable, "-m", "workbench", "import", str(only), "--store", str(b)],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert msg in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in b.rglob("*.parquet")} == before


def test_correlations_on_stored_rows(tmp_path):
    run(tmp_path, formats="Q2a16,Q3a32,Q4_0,Q4s32,Q4_1,Q4a32,Q4s16,Q5_0,Q5s32,Q6s32,Q8_0")
    ev = eval_store.evals(tmp_path)
    table = truth.correlations(ev)
    r = table.set_index("weight_metric")
    assert r.loc["w_nmse", "overall"] > 0.8          # across bit depths nmse ranks drift
    assert r["within_band"].notna().any() and "5:" in r.loc["w_nmse", "bands"]   # Q4_1, Q4a32, Q4s16
    assert truth.recommend(table) in truth.WEIGHT_METRICS
    bands = truth.best_per_band(ev)
    assert set(bands.columns) >= {"band", "best_by_weight", "best_by_model", "agree"}


def test_spearman_definition():
    assert truth.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1)
    assert truth.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)
    assert np.isnan(truth.spearman([1, 2], [1, 2]))
    assert np.isnan(truth.spearman([1, 1, 1], [1, 2, 3]))
    # ties take average ranks: scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]) = 0.9486832980505138
    assert truth.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505138)


def test_q4_1_grid():
    assert truth.contains_q4_1_grid("Q4_1") and truth.contains_q4_1_grid("Q4a32")
    assert not truth.contains_q4_1_grid("Q5a32") and not truth.contains_q4_1_grid("Q5_1")
    assert not truth.contains_q4_1_grid("Q4a16") and not truth.contains_q4_1_grid("Q4a64")
    assert not truth.contains_q4_1_grid("Q4_0") and not truth.contains_q4_1_grid("Q4a32_bf16")
    assert not truth.contains_q4_1_grid("Q(4a16)xQ(6s16)")


def test_q4_1_grid_rule_matches_exact_requantization():
    """The rule holds on real Q4_1 data: Q4_1's own reconstruction re-quantizes exactly under
    the formats the rule names, and not under the others."""
    from workbench.codecs import codec_for
    from workbench.formats import resolve
    x = np.random.default_rng(3).standard_normal((8, 256)).astype(np.float32)
    c = codec_for(resolve("Q4_1")[0])
    src = c.dequantize(c.quantize(x), x.shape)
    for f in ("Q4_1", "Q4a32", "Q4a16", "Q5a32", "Q5_1", "Q4_0", "Q4a64"):
        k = codec_for(resolve(f)[0])
        exact = np.array_equal(k.dequantize(k.quantize(src), src.shape), src)
        assert exact == truth.contains_q4_1_grid(f), f


def test_groups():
    g = evaluate.group_of
    assert g("encoder.layer.3.attention.self.value.weight") == "attn_v"
    assert g("encoder.layer.3.output.dense.weight") == "ffn_down"
    assert g("encoder.layer.3.attention.output.dense.weight") == "attn_o"
    assert g("blk.7.ffn_gate.weight") == "ffn_gate" and g("token_embd.weight") == "embed"
    assert g("embeddings.word_embeddings.weight") == "embed" and g("output.weight") == "output"


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args, msg", [
    (["--model", "/nonexistent/model.gguf"], "not a model to evaluate"),
    (["--text", "/nonexistent.txt"], "/nonexistent.txt"),
    (["--tensors", "("], "--tensors"),
    (["--formats", "Q9x"], "Q9x"),
    (["--tensors", "no-such-tensor"], "matches none"),
])
def test_eval_bad_input_is_one_line_and_writes_nothing(tmp_path, args, msg):
    proc = _cli("eval", "--store", str(tmp_path / "s"), *args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and msg in err[0] and "Traceback" not in proc.stderr
    assert not list((tmp_path / "s").rglob("*.parquet"))


def test_eval_cli_on_the_embedded_encoder(tmp_path):
    """A real evaluation of the default model from the command line: one tensor, two formats;
    then `workbench truth` reads it back, and a re-run is resumed (nothing new)."""
    store = tmp_path / "s"
    proc = _cli("eval", "--formats", "Q4_0,Q8_0", "--tensors", r"layer\.0\.intermediate", "--store", str(store))
    assert proc.returncode == 0, proc.stderr
    assert "evaluated 2 of all-MiniLM-L6-v2 (1 tensors)" in proc.stdout
    d = eval_store.evals(store).set_index("format")
    assert d.loc["Q8_0", "drift"] < d.loc["Q4_0", "drift"] and d.loc["Q4_0", "drift"] > 0
    assert (d["tensors"] == r"re:layer\.0\.intermediate").all() and (d["n_tensors"] == 1).all()
    assert (d["text_name"] == "data/eval/passages.txt").all() and (d["kind"] == "encoder").all()
    again = _cli("eval", "--formats", "Q4_0,Q8_0", "--tensors", r"layer\.0\.intermediate", "--store", str(store))
    assert again.returncode == 0 and "evaluated 0" in again.stdout and "2 already stored" in again.stdout
    truth_out = _cli("truth", "--store", str(store))
    assert truth_out.returncode == 0 and "all-MiniLM-L6-v2" in truth_out.stdout


def test_mix_one_format_per_tensor(tmp_path):
    ev = TinyNet()
    rep = evaluate.run(mix="intermediate=Q8_0;.=Q4_0", store=tmp_path, evaluator=ev, progress=False)
    (row,) = rep.rows
    assert row["format"].startswith("mix:") and row["family"] == "mix"
    assert json.loads(row["mix"]) == [["intermediate", "Q8_0"], [".", "Q4_0"]]
    assert row["applied_types"] == "Q4_0:1,Q8_0:1" and row["fallback_tensors"] == 0
    # bpw of the mix = total bits / total weights of its two tensors (Q4_0 4.5, Q8_0 8.5, equal sizes)
    assert row["bpw"] == pytest.approx(6.5)
    d = eval_store.evals(tmp_path)
    assert len(d) == 1 and d["format"].iloc[0] == row["format"]
    only = evaluate.run(mix="query=Q4_0", store=tmp_path / "b", evaluator=TinyNet(), progress=False).rows[0]
    assert only["n_tensors"] == 1 and "no rule of the mix matches" in only["skipped_tensors"]
    with pytest.raises(ValueError, match="is not REGEX=FORMAT"):
        evaluate.parse_mix("Q4_0")
    with pytest.raises(ValueError, match="Q9"):
        evaluate.parse_mix(".=Q9")


def test_tensors_subset_groups_never_pose_as_whole_groups(tmp_path):
    run(tmp_path, formats="Q4_0", tensors="layer", sensitivity=True)
    labels = set(eval_store.evals(tmp_path)["tensors"])
    assert labels == {"re:layer", "re:layer/group:attn_q", "re:layer/group:ffn_up"}
    assert truth.sensitivity(eval_store.evals(tmp_path)).empty


def test_source_model_is_part_of_the_key(tmp_path):
    """Two files that share a model id (foo-F16.gguf, foo-Q8_0.gguf) are two references."""
    a, b = TinyNet(0), TinyNet(1)
    a.fingerprint, b.fingerprint = "aaa", "bbb"
    assert run(tmp_path, formats="Q4_0", ev=a).measured == 1
    assert run(tmp_path, formats="Q4_0", ev=b).measured == 1
    ev = eval_store.evals(tmp_path)
    assert sorted(ev["model_fingerprint"]) == ["aaa", "bbb"]
    assert len(truth.whole_model(ev)) == 1          # one set-up at a time, never both mixed


def test_one_setup_at_a_time(tmp_path, monkeypatch):
    import workbench.evaltext as et
    run(tmp_path, formats="Q4_0,Q8_0,Q4a32")
    other = EvalText(name="mine.txt", text="x", sentences=["x"], fingerprint="e" * 64)
    monkeypatch.setattr(et, "load", lambda path=None: other)
    run(tmp_path, formats="Q4_0,Q8_0")
    ev = eval_store.evals(tmp_path)
    assert len(ev) == 5
    w = truth.whole_model(ev)
    assert len(w) == 3 and set(w["text"]) == {"f" * 64}    # the set-up with the most evaluations


def test_import_of_a_file_written_by_other_tools(tmp_path):
    """No pandas metadata, an all-null integer column: the file's own schema is what counts."""
    import pyarrow as pa
    a = tmp_path / "a"
    run(a, formats="Q4_0")
    t = pq.read_table(eval_store.export(a, tmp_path / "e.parquet") and tmp_path / "e.parquet")
    t = t.set_column(t.schema.get_field_index("lossless_tensors"), "lossless_tensors",
                     pa.nulls(t.num_rows, pa.int32())).replace_schema_metadata(None)
    pq.write_table(t, tmp_path / "plain.parquet")
    assert st.import_file(tmp_path / "plain.parquet", tmp_path / "b") == (1, 0)


def test_failed_evaluation_import_leaves_the_results_unpublished(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    run(a)
    write_one_result(a)
    out = tmp_path / "x.parquet"
    st.export(a, out, model="tiny-net")

    def boom(*a, **k):
        raise st.StoreError("disk full; nothing written")
    monkeypatch.setattr(eval_store, "import_rows", boom)
    with pytest.raises(st.StoreError):
        st.import_file(out, b)
    assert not [p for p in b.rglob("*") if p.is_file() and p.name != ".lock"]
