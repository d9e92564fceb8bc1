"""The dashboard side of model-level truth without a browser: the Truth page, the Pareto page's
model-level axis and the Sweep page's evaluation, on a store of real evaluation rows.

The rows come from ``evaluate.run`` with small real networks (no model file needed):
``TinyNet``, a three-layer encoder (embedding drift), whose weights are also swept from an .npz
file so that the Pareto page has results for the same model; and ``TinyLM``, a next-token model
whose weights were stored as Q4_1, as SmolLM2's are (KLD, top-1 and perplexity against the
reference). ``build_store`` is shared with the UI tests (tests/ui/test_truth_ui.py).
"""
from __future__ import annotations

import contextlib
import gc
import shutil
import threading
import time
from pathlib import Path

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import pytest
from bokeh.models import Axis, LogAxis

from workbench import eval_store, evaluate, store as st, sweep, truth
from workbench.evaltext import EvalText
from workbench.formats import parse, spec_columns

# Bands of 0.25 bpw with at least three formats each (4.5, 5.0, 5.5), so within-band figures exist.
FORMATS = ("Q2a16,Q3a32,Q3s16_e4m3,Q4_0,Q4s32,Q4a64,IQ4_NL,MXFP4,Q4s16_e4m3,Q4_1,Q4a32,Q4s16,Q4_K,"
           "Q5_0,Q5s32,Q5a64,Q8_0")
SENSITIVITY = "Q4_0,Q4a32,Q3a32"
TENSOR_SENSITIVITY = "Q4_0,Q4a32"
LM_FORMATS = "Q3a32,Q4_0,Q4s32,Q4a64,IQ4_NL,Q4s16_e4m3,Q4_1,Q4a32,Q4a16,Q4s16,Q5_0,Q5s32,Q5_1,Q5a32,Q8_0"
TEXT = EvalText(name="test", text="one. two. three.", sentences=["one.", "two.", "three."], fingerprint="f" * 64)


class TinyNet:
    """Three ReLU layers over fixed inputs: drift of the L2-normalised outputs against float32."""
    kind = "encoder"
    model_id = "tiny-net"
    n_ctx = 0

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.w = {"layer.0.attention.self.query.weight": (rng.standard_normal((128, 256)) * 0.1).astype(np.float32),
                  "layer.0.intermediate.dense.weight": (rng.standard_t(4, (256, 128)) * 0.05 + 0.01).astype(np.float32),
                  "layer.0.output.dense.weight": (rng.standard_normal((64, 256)) * 0.05).astype(np.float32)}
        self.x = rng.standard_normal((64, 256)).astype(np.float32)
        self._ref = None

    def weights(self):
        return dict(self.w)

    def _out(self, w):
        h = np.maximum(self.x @ w["layer.0.attention.self.query.weight"].T, 0)
        h = np.maximum(h @ w["layer.0.intermediate.dense.weight"].T, 0)
        o = h @ w["layer.0.output.dense.weight"].T
        return o / np.linalg.norm(o, axis=1, keepdims=True)

    def reference(self):
        if self._ref is None:
            self._ref = self._out(self.w)
        return self._ref

    def evaluate(self, replaced):
        cos = (self._out({**self.w, **replaced}) * self.reference()).sum(1)
        return {"drift": float(1 - cos.mean()), "cosine_min": float(cos.min())}


class TinyLM:
    """A next-token model (tied embeddings, one residual ReLU MLP) over a fixed token sequence,
    whose weights were stored as Q4_1, as SmolLM2's are: each already lies on Q4_1's grid. Per
    scored token, as llama-perplexity: KLD of the reference distribution to the quantized one,
    whether the argmax is the same, and the perplexity of the next token."""
    kind = "llm"
    model_id = "SmolLM2-toy"
    n_ctx = 16

    def __init__(self, seed=1):
        from workbench.codecs import codec_for
        rng = np.random.default_rng(seed)
        raw = {"token_embd.weight": rng.standard_normal((96, 64)) * 0.5,
               "blk.0.ffn_up.weight": rng.standard_normal((128, 64)) * 0.15,
               "blk.0.ffn_down.weight": rng.standard_normal((64, 128)) * 0.15}
        q41 = codec_for(parse("Q4_1"))
        self.w = {}
        for name, x in raw.items():
            x = np.ascontiguousarray(x, dtype=np.float32)
            self.w[name] = q41.dequantize(q41.quantize(x), x.shape)
        self.tokens = rng.integers(0, 96, 257)
        self._ref = None

    def weights(self):
        return dict(self.w)

    def _logp(self, w):
        e = w["token_embd.weight"]
        x = e[self.tokens[:-1]].astype(np.float64)
        o = x + np.maximum(x @ w["blk.0.ffn_up.weight"].T, 0) @ w["blk.0.ffn_down.weight"].T
        z = 4.0 * (o @ e.T)
        z -= z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def reference(self):
        if self._ref is None:
            self._ref = self._logp(self.w)
        return self._ref

    def evaluate(self, replaced):
        ref, lp = self.reference(), self._logp({**self.w, **replaced})
        kld = np.maximum((np.exp(ref) * (ref - lp)).sum(axis=1), 0.0)
        nxt = self.tokens[1:]
        rows = np.arange(len(nxt))
        ppl, ppl_ref = float(np.exp(-lp[rows, nxt].mean())), float(np.exp(-ref[rows, nxt].mean()))
        return {"kld_mean": float(kld.mean()), "kld_median": float(np.median(kld)),
                "kld_p99": float(np.quantile(kld, 0.99)), "kld_max": float(kld.max()),
                "top1": float((lp.argmax(1) == ref.argmax(1)).mean()), "ppl": ppl, "ppl_ref": ppl_ref,
                "dppl": ppl - ppl_ref}


@contextlib.contextmanager
def fixed_text():
    """The bundled evaluation text stands in for a test one (the networks ignore it)."""
    with pytest.MonkeyPatch.context() as mp:
        import workbench.evaltext as et
        mp.setattr(et, "load", lambda path=None: TEXT)
        yield


def build_store(root: Path) -> Path:
    """``root/store``: a sweep of TinyNet's weights (``root/sweep-only`` keeps a copy of that
    alone), its evaluations (whole model, then sensitivity runs) and TinyLM's. Built once: a
    ``.complete`` marker makes later calls (other test modules) reuse it."""
    store = root / "store"
    if (root / ".complete").exists():
        return store
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    net = TinyNet()
    np.savez(root / "tiny-net.npz", **net.w)
    sweep.run(root / "tiny-net.npz", FORMATS, None, store, progress=False)
    shutil.copytree(store, root / "sweep-only")
    with fixed_text():
        evaluate.run(formats=FORMATS, store=store, evaluator=net, progress=False)
        evaluate.run(formats=SENSITIVITY, store=store, evaluator=net, progress=False, sensitivity=True)
        evaluate.run(formats=TENSOR_SENSITIVITY, store=store, evaluator=net, progress=False, sensitivity="tensor")
        evaluate.run(formats=LM_FORMATS, store=store, evaluator=TinyLM(), progress=False, native=False)
    (root / ".complete").touch()
    return store


@pytest.fixture(scope="module")
def truth_store(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.getbasetemp() / "truth-store")


@pytest.fixture(autouse=True, scope="module")
def _collect_streams():
    """Free HoloViews' streams while Python is alive (their __del__ fails at exit)."""
    yield
    gc.collect()


def render(obj):
    return hv.render(obj, backend="bokeh")


# ------------------------------------------------------------------------------ the rows
def test_the_store_holds_real_evaluations(truth_store):
    ev = eval_store.evals(truth_store)
    tiny = truth.whole_model(ev, "tiny-net").set_index("format")
    assert sorted(tiny.index) == sorted(FORMATS.split(","))
    # more bits, less drift and less weight error (real measurements, not numbers put there)
    assert tiny.loc["Q8_0", "drift"] < tiny.loc["Q5_0", "drift"] < tiny.loc["Q4_0", "drift"] < tiny.loc["Q2a16", "drift"]
    assert tiny.loc["Q8_0", "w_nmse"] < tiny.loc["Q4_0", "w_nmse"]
    lm = truth.whole_model(ev, "SmolLM2-toy").set_index("format")
    assert (lm["kind"] == "llm").all() and (lm["kld_mean"] >= 0).all()
    # Q4_1 itself and Q4a32 (the same grid: min/max, blocks of 32, f16) give the Q4_1-stored
    # weights back exactly: the source favours them
    assert set(f for f in lm.index if truth.contains_q4_1_grid(f)) >= {"Q4_1", "Q4a32"}
    assert (lm.loc[["Q4_1", "Q4a32"], "kld_mean"] == 0).all() and (lm.drop(index=["Q4_1", "Q4a32"])["kld_mean"] > 0).all()


# ------------------------------------------------------------------- pure figure functions
def test_model_level_rows_carry_the_format_columns_the_name_implies(truth_store):
    from workbench.views.pareto import model_level_rows
    whole = truth.whole_model(eval_store.evals(truth_store), "tiny-net")
    rows = model_level_rows(whole).set_index("format")
    for f in ("Q4_0", "Q4s16_e4m3", "Q5a64"):
        for col, value in spec_columns(parse(f)).items():
            if col != "format" and value is not None:
                assert rows.loc[f, col] == value, (f, col)
    assert np.allclose(rows.loc[whole["format"], "bpw"], whole["bpw"])
    assert np.allclose(rows.loc[whole["format"], "drift"], whole["drift"])
    assert rows.loc["Q4_0", "kind"] == "llama.cpp" and rows.loc["Q4s32", "kind"] == "single f16"
    assert model_level_rows(whole.iloc[:0]).empty


def test_model_level_plot_has_both_frontiers_on_two_axes(truth_store):
    from workbench.views.pareto import model_level_plot, model_level_rows, pareto_front
    rows = model_level_rows(truth.whole_model(eval_store.evals(truth_store), "tiny-net"))
    plot = model_level_plot(rows, "drift")
    curves = {c.label: c for c in plot.traverse(lambda e: e, [hv.Curve])}
    model_front, weight_front = curves["model-level frontier (drift)"], curves["weight-error frontier (w_nmse)"]
    assert list(model_front.data["bpw"]) == list(pareto_front(rows, "bpw", "drift")["bpw"])
    assert list(weight_front.data["w_nmse"]) == list(pareto_front(rows, "bpw", "w_nmse")["w_nmse"])
    fig = render(plot)
    axes = [a for a in fig.left + fig.right if isinstance(a, Axis)]
    assert len(axes) == 2 and all(isinstance(a, LogAxis) for a in axes)
    assert "w_nmse" in fig.extra_y_ranges
    lo, hi = fig.extra_y_ranges["w_nmse"].start, fig.extra_y_ranges["w_nmse"].end
    assert 0 < lo < rows["w_nmse"].min() and hi > rows["w_nmse"].max()
    # a linear model-level axis (rank agreement style) beside the log weight axis
    lin = rows.assign(top1=1 - rows["drift"])
    fig = render(model_level_plot(lin, "top1"))
    assert fig.extra_y_ranges["w_nmse"].start > 0


def test_disagreement_note_names_both_sides():
    from workbench.views.pareto import disagreement_note
    text = disagreement_note({"weight_only": ["Q5s32"], "model_only": ["Q3a32", "Q5_0"]}, "drift")
    assert "disagree" in text and "`Q5s32`" in text and "`Q3a32`, `Q5_0`" in text
    assert "weight-error (w_nmse) frontier only: `Q5s32`" in text and "(drift) frontier only" in text
    assert "agree" in disagreement_note({"weight_only": [], "model_only": []}, "kld_mean")


def test_truth_scatter_and_bars(truth_store):
    from workbench.views.truth_page import sensitivity_bars, truth_scatter
    ev = eval_store.evals(truth_store)
    whole = truth.whole_model(ev, "tiny-net")
    pts = truth_scatter(whole, "w_bnl", "drift")
    assert len(pts.data) == len(whole) and set(pts.data["family"]) == {"ggml", "uniform"}
    assert [d.name for d in pts.kdims] == ["w_bnl", "drift"]
    opts = pts.opts.get().kwargs
    assert opts["logx"] and opts["logy"]
    tips = dict(opts["hover_tooltips"])
    assert set(tips) == {"format", "family", "bpw", "w_bnl", "drift"}
    sens = truth.sensitivity(ev, "tiny-net")
    bars = sensitivity_bars(sens, "drift")
    assert np.allclose(bars.data.groupby("format")["share"].sum(), 1)
    render(pts), render(bars)


# ------------------------------------------------------------------------------ Pareto page
def recommended_sweep_metric(ev, model):
    from workbench.views.pareto_page import SWEEP_METRIC
    table = truth.correlations(ev, model)
    return SWEEP_METRIC[truth.recommend(table[table["weight_metric"].isin(["w_nmse", "w_max_err", "w_bnl"])])]


def test_pareto_page_model_level_axis(truth_store):
    from workbench.views.pareto_page import ParetoPage
    ev = eval_store.evals(truth_store)
    page = ParetoPage(store=truth_store)
    assert page.model == "tiny-net"
    expected = recommended_sweep_metric(ev, "tiny-net")
    assert page.metric == expected and page.recommendation.visible
    assert f"Default metric: {expected}" in page.recommendation.object
    assert page.param.metric.names["drift (model-level)"] == "drift"
    assert "kld_mean" not in page.param.metric.objects          # an encoder: no KLD
    assert not page.frontier_note.visible

    page.metric = "drift"
    whole = truth.whole_model(ev, "tiny-net")
    assert sorted(page.data["format"]) == sorted(whole["format"])
    assert np.allclose(page.data.set_index("format").loc[whole["format"], "drift"], whole["drift"])
    curves = {c.label for c in page.plot.object.traverse(lambda e: e, [hv.Curve])}
    assert {"model-level frontier (drift)", "weight-error frontier (w_nmse)"} <= curves
    dis = truth.frontier_disagreements(ev, "tiny-net", "drift", "w_nmse")
    assert page.frontier_note.visible and (dis["weight_only"] or dis["model_only"])
    for f in dis["weight_only"] + dis["model_only"]:
        assert f"`{f}`" in page.frontier_note.object
    pn.panel(page).get_root()

    # brushing lists the evaluated formats with both values and the distance to the frontier
    page.select(["Q4_0", "Q4a32"])
    table = page.table.value
    assert list(table["format"]) == ["Q4_0", "Q4a32"] and {"drift", "w_nmse", "vs_frontier"} <= set(table.columns)
    page._clicked(type("Click", (), {"row": 0})())     # per tensor: the weight error of the sweep
    assert page.focus == "Q4_0" and "nmse on each tensor (3 of 3 tensors)" in page.detail_title.object

    # the format filters apply to the evaluated formats too; the note follows what is plotted
    page.family = ["ggml"]
    assert set(page.data["family"]) == {"ggml"}
    sub = ev[ev["format"].isin(page.data["format"])]
    dis = truth.frontier_disagreements(sub, "tiny-net", "drift", "w_nmse")
    assert all(f"`{f}`" in page.frontier_note.object for f in dis["weight_only"] + dis["model_only"])
    page.family = list(page.param.family.objects)

    page.metric = "nmse"                                 # back to the sweep: as before
    assert not page.frontier_note.visible and len(page.data) == len(st.summary(truth_store, "tiny-net"))
    page.reload()
    assert page.metric == "nmse"                         # a reload keeps the user's choice


def test_pareto_page_without_evaluations_keeps_its_default(truth_store):
    from workbench.views.pareto_page import ParetoPage
    page = ParetoPage(store=truth_store.parent / "sweep-only")
    assert page.metric == "nmse" and not page.recommendation.visible
    assert all(v not in page.param.metric.objects for v in ("drift", "kld_mean"))


# ------------------------------------------------------------------------------- Truth page
def test_truth_page_on_an_encoder(truth_store):
    from workbench.views.truth_page import TruthPage
    ev = eval_store.evals(truth_store)
    page = TruthPage(store=truth_store, model="tiny-net")
    assert list(page.param.model.objects) == ["SmolLM2-toy", "tiny-net"]
    table = truth.correlations(ev, "tiny-net")
    rec = truth.recommend(table)
    assert page.target == "drift" and page.recommended == rec and page.weight == rec
    assert not page.caveat.visible and not page.exclude_toggle.visible
    assert page.content.visible and not page.message.visible
    shown = page.table.value
    assert sorted(shown["weight_metric"]) == sorted(table["weight_metric"])
    assert np.allclose(shown.set_index("weight_metric").loc[table["weight_metric"], "within_band"],
                       table["within_band"], equal_nan=True)
    assert "w_sens" in set(shown["weight_metric"])          # sensitivity runs give α per group
    assert f"Recommended weight metric: `{rec}`" in page.summary.object
    root = page.table.get_root()
    row = int(np.flatnonzero(shown["weight_metric"] == rec)[0])
    assert root.cell_styles["data"][row] and all(
        ("background-color", "#fde68a") in cell for cell in root.cell_styles["data"][row].values())
    assert len(root.cell_styles["data"]) == 1                # that row only

    whole = truth.whole_model(ev, "tiny-net")
    assert len(page.scatter.object.data) == len(whole)
    page.weight = "w_max_err"
    assert page.scatter.object.kdims[0].name == "w_max_err" and page.weight == "w_max_err"

    sens = truth.sensitivity(ev, "tiny-net")
    assert page.sensitivity.visible
    assert sorted(page.bars.object.data["format"].unique()) == sorted(SENSITIVITY.split(","))
    assert np.allclose(page.bars.object.data["share"], sens["share"])
    add = truth.additivity(ev, "tiny-net")
    pd.testing.assert_frame_equal(page.additivity.value.sort_values("format").reset_index(drop=True),
                                  add.sort_values("format").reset_index(drop=True))
    assert "additivity ratio" in page.sensitivity_note.object
    pn.panel(page).get_root()
    page.reload()
    assert page.model == "tiny-net" and page.weight == "w_max_err"


def test_truth_page_single_tensor_sensitivity(truth_store):
    """The level switch shows each tensor alone: bars per tensor and format, additivity over
    tensors, and the within-group table (one tensor per group here: exactly the group alone)."""
    from workbench.views.truth_page import TruthPage
    page = TruthPage(truth_store, model="tiny-net")
    assert page.level == "group" and "tensor groups" in page.sensitivity_note.object
    page.level = "tensor"
    ev = eval_store.evals(truth_store)
    sens = truth.sensitivity(ev, "tiny-net", level="tensor")
    bars = page.bars.object
    assert [d.name for d in bars.kdims] == ["tensor", "format"]
    assert sorted(bars.data["format"].unique()) == sorted(TENSOR_SENSITIVITY.split(","))
    assert sorted(bars.data["tensor"].unique()) == sorted(TinyNet().w)
    merged = bars.data.merge(sens, on=["format", "tensor"], suffixes=("", "_t"))
    assert len(merged) == len(sens) == 6 and np.allclose(merged["share"], merged["share_t"])
    assert "2 formats × 3 tensors" in page.sensitivity_note.object
    add = page.additivity.value
    assert sorted(add["format"]) == sorted(TENSOR_SENSITIVITY.split(",")) and (add["parts"] == 3).all()
    assert page.within_box.visible
    within = page.within.value
    assert len(within) == 6 and np.allclose(within["ratio"], 1.0, rtol=0, atol=1e-12)
    assert "over tensors" in page.additivity_note.object
    pn.panel(page).get_root()
    page.level = "group"
    assert [d.name for d in page.bars.object.kdims] == ["format", "group"] and not page.within_box.visible


def test_truth_page_on_smollm2_shows_the_caveat_and_filters_q4_1_grids(truth_store):
    from workbench.views.truth_page import Q4_1_CAVEAT, TruthPage
    ev = eval_store.evals(truth_store)
    page = TruthPage(store=truth_store)
    assert page.model == "SmolLM2-toy" and page.target == "kld_mean"
    assert page.caveat.visible and page.caveat.object.startswith(Q4_1_CAVEAT)
    assert "SmolLM2 ships as Q4_1: its weights already lie on Q4_1's grid" in page.caveat.object
    assert page.exclude_toggle.visible and not page.exclude_q4_1
    assert {"kld_mean", "top1", "dppl"} <= set(page.param.target.objects)
    assert "drift" not in page.param.target.objects
    everything = truth.correlations(ev, "SmolLM2-toy")
    assert set(page.table.value["formats"]) == set(everything["formats"])

    page.exclude_q4_1 = True
    kept = truth.correlations(ev, "SmolLM2-toy", exclude=truth.contains_q4_1_grid)
    held = [f for f in truth.whole_model(ev, "SmolLM2-toy")["format"] if truth.contains_q4_1_grid(f)]
    assert held and int(page.table.value["formats"].max()) == int(everything["formats"].max()) - len(held)
    assert np.allclose(page.table.value.set_index("weight_metric").loc[kept["weight_metric"], "overall"],
                       kept["overall"])
    assert not set(page.scatter.object.data["format"]) & set(held)
    assert f"{len(held)} whose grid holds Q4_1's left out" in page.summary.object
    assert "No sensitivity runs" in page.sensitivity_note.object and not page.sensitivity.visible

    page.model = "tiny-net"                 # another model: no caveat, no filter
    assert not page.caveat.visible and not page.exclude_toggle.visible and page.exclude() is None
    pn.panel(page).get_root()


def test_truth_page_on_a_store_without_evaluations(truth_store, tmp_path):
    from workbench.views.truth_page import NO_EVALS, TruthPage
    for store in (tmp_path / "empty", truth_store.parent / "sweep-only"):
        page = TruthPage(store=store)
        assert page.model is None and page.message.visible and NO_EVALS in page.message.object
        assert "workbench eval" in page.message.object and not page.content.visible
        assert page.controls[0].disabled
        pn.panel(page).get_root()
        page.reload()


# ------------------------------------------------------------------------ Sweep page: eval
def poll_until_done(page, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while page.evaluating and time.monotonic() < deadline:
        page.poll_evaluation()
        time.sleep(0.02)
    page.wait_evaluation(timeout=max(0.0, deadline - time.monotonic()))
    assert not page.evaluating


class GatedNet(TinyNet):
    """TinyNet whose evaluations from the ``hold_from``-th on wait for ``gate``, so that a test
    sees the page while an evaluation is surely in flight (TinyNet alone can finish at once)."""

    def __init__(self, hold_from: int = 1):
        super().__init__()
        self.gate, self.calls, self.hold_from = threading.Event(), 0, hold_from

    def evaluate(self, replaced):
        self.calls += 1
        if self.calls >= self.hold_from:
            self.gate.wait(30)
        return super().evaluate(replaced)


def test_sweep_page_evaluates_formats_with_live_progress(tmp_path):
    from workbench.views.sweep_page import EVAL_COLUMNS, SweepPage
    notified = []
    net = GatedNet()
    with fixed_text():
        page = SweepPage(store=tmp_path, notify=lambda: notified.append(1), evaluator=net)
        page.eval_formats.value = "Q4_0,Q8_0,Q4a32"
        assert page.eval_section.objects == [page.eval_message]     # no second progress bar until then
        job = page.evaluate()
        assert page.eval_progress in page.eval_section.objects and page.eval_live in page.eval_section.objects
        assert job is not None and page.evaluating and page.evaluate() is None      # one at a time
        assert page.eval_button.disabled and not page.eval_cancel.disabled and page.eval_formats.disabled
        assert page.eval_progress.visible and page.eval_progress.value == -1 and "preparing" in page.eval_status.object
        net.gate.set()
        poll_until_done(page)
    rows = eval_store.evals(tmp_path)
    assert sorted(rows["format"]) == ["Q4_0", "Q4a32", "Q8_0"] and set(rows["run_id"]) == {job.run_id}
    assert page.eval_progress.value == page.eval_progress.max == 3
    assert page.eval_status.object == "3 of 3 evaluated"
    assert page.eval_message.alert_type == "success" and "3 evaluations" in page.eval_message.object
    assert list(page.eval_live.value.columns) == EVAL_COLUMNS and len(page.eval_live.value) == 3
    assert np.allclose(page.eval_live.value.set_index("format").loc[rows["format"], "model_metric"], rows["drift"])
    assert notified and not page.eval_button.disabled and page.eval_cancel.disabled
    with fixed_text():
        page.evaluate()                                   # resumable: nothing left (the gate is open)
        poll_until_done(page)
    assert "nothing to evaluate: all 3 already stored" in page.eval_status.object
    assert len(eval_store.evals(tmp_path)) == 3
    pn.panel(page).get_root()


def test_sweep_page_evaluation_refuses_bad_input(tmp_path):
    from workbench.views.sweep_page import SweepPage
    page = SweepPage(store=tmp_path, evaluator=TinyNet())
    page.eval_formats.value = "Q4_0,Q9z"
    assert page.evaluate() is None and page.eval_job is None
    assert page.eval_message.alert_type == "danger" and "Q9z" in page.eval_message.object
    assert "\n" not in page.eval_message.object and not list(tmp_path.rglob("*.parquet"))
    page.eval_formats.value = ""
    page.model.value = "../../etc/passwd"                 # what a forged request could send
    assert page.evaluate() is None and "not a model file in the data folder" in page.eval_message.object


def test_sweep_page_evaluation_cancel_keeps_what_finished(tmp_path):
    from workbench.views.sweep_page import SweepPage
    net = GatedNet(hold_from=2)
    with fixed_text():
        page = SweepPage(store=tmp_path, evaluator=net)
        page.eval_formats.value = "Q4_0,Q8_0,Q4a32,Q5_0,Q3a32"
        job = page.evaluate()
        deadline = time.monotonic() + 60
        while net.calls < 2 and time.monotonic() < deadline:   # the second evaluation is in flight
            time.sleep(0.01)
        page.cancel_evaluation()
        assert page.eval_cancel.disabled and "cancelling" in page.eval_status.object
        net.gate.set()
        poll_until_done(page)
    kept = eval_store.evals(tmp_path)
    assert len(kept) == job.report.measured == 2 and job.total == 5       # the first and the one in flight
    assert page.eval_status.object == "cancelled after 2 of 5; 2 evaluations kept"
    assert page.eval_message.alert_type == "warning"
