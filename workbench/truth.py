"""Which weight metric to trust: rank correlations of weight metrics with model-level truth.

For one model, every format evaluated on the whole model (``model_eval`` rows, variant "fake",
tensors "all") has a model-level metric (``MODEL_METRIC``: drift for an encoder, mean KLD for an
LLM) and weight metrics of the same quantized tensors (the ``w_*`` columns). For each weight
metric this module computes the Spearman rank correlation with the model metric

* overall, across every evaluated format, and
* within equal-bpw bands: formats whose bpw is nearest the same multiple of ``BAND`` (a band is
  [centre − 0.125, centre + 0.125) bpw); the within-band figure is the mean of the per-band
  Spearman coefficients over bands of at least ``MIN_BAND`` formats, weighted by the number of
  formats in the band. This is the figure
  that matters: across bit depths any metric ranks well, within a band is where a user chooses.

``w_sens`` is the sensitivity-weighted nmse Σ_g α_g · nmse_g (the HIGGS paper's linearity
theorem: the model's loss is close to a weighted sum of per-tensor errors), with α_g estimated
from sensitivity runs (one tensor group quantized at a time): α_g = median over formats of
metric(group g alone) / nmse_g. ``additivity`` compares the sum of the groups' figures (each
group quantized alone) with the whole-model figure.

Rows are compared only within one evaluation set-up: the same text, context, runtime version
and source model (``setup``: the set-up with the most whole-model evaluations, the bundled text
first). Mixes and partial evaluations (some tensors skipped) are not whole-model formats.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from workbench.metrics import higher_is_better

MODEL_METRIC = {"encoder": "drift", "llm": "kld_mean"}
HIGHER_IS_BETTER = set(higher_is_better("model"))       # workbench.metrics.REGISTRY
METRICS_OF_KIND = {"encoder": ("drift", "cosine_min", "rank_agreement", "top1_agreement"),
                   "llm": ("kld_mean", "kld_median", "kld_p99", "kld_max", "top1", "ppl", "dppl")}
SETUP = ("text", "n_ctx", "runtime_version", "model_fingerprint")
WEIGHT_METRICS = {
    "w_nmse": "nmse (numel-weighted over the quantized tensors)",
    "w_wnmse": "imatrix-weighted nmse (the model's importance matrix)",
    "w_max_err": "largest absolute error",
    "w_bnl": "block-normalised L1 (bnl)",
    "w_bias": "per-row error bias: Σ_r(Σ_c e)² / Σx² (≈ nmse for independent zero-mean errors)",
    "w_actmean": "error at the mean activation: ‖E·μ‖² / ‖W·μ‖²",
    "w_sens": "sensitivity-weighted nmse Σ_g α_g·nmse_g (α_g from one group at a time)",
}
BAND = 0.25
MIN_BAND = 3


def spearman(a, b) -> float:
    """Spearman's rho (average ranks for ties); NaN for fewer than 3 pairs or a constant side."""
    a = pd.Series(np.asarray(a, float))
    b = pd.Series(np.asarray(b, float))
    ok = a.notna() & b.notna() & np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    ra, rb = a[ok].rank(), b[ok].rank()
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def band_of(bpw) -> np.ndarray:
    """Band centre: the nearest multiple of BAND, a half-way value going up (4.125 -> 4.25)."""
    return np.floor(np.asarray(bpw, float) / BAND + 0.5) * BAND


def setup(ev: pd.DataFrame, model: str | None = None) -> pd.DataFrame:
    """``ev``'s rows of one model and one evaluation set-up (``SETUP``): the one with the most
    whole-model evaluations, the bundled evaluation text preferred."""
    if model is None and ev["model"].nunique() > 1:
        return pd.concat([setup(ev, m) for m in sorted(ev["model"].unique())])
    d = ev if model is None else ev[ev["model"] == model]
    if d.empty:
        return d
    key = d[list(SETUP)].astype(str).agg("\x00".join, axis=1)
    whole = (d["variant"] == "fake") & (d["tensors"] == "all")
    bundled = d["text_name"].astype(str).eq("data/eval/passages.txt") if "text_name" in d else False
    score = pd.DataFrame({"k": key, "w": whole.astype(int), "b": bundled}).groupby("k").agg(
        b=("b", "max"), w=("w", "sum")).sort_values(["b", "w"], ascending=False)
    return d[key == score.index[0]]


def _keep(d: pd.DataFrame, exclude) -> pd.DataFrame:
    return d if exclude is None else d[[not exclude(f) for f in d["format"]]]


def whole_model(ev: pd.DataFrame, model: str | None = None, exclude=None) -> pd.DataFrame:
    """One row per format evaluated fake-quantized on the whole model, in one set-up (the
    latest if repeated); mixes and rows with skipped tensors are left out."""
    d = setup(ev, model)
    d = d[(d["variant"] == "fake") & (d["tensors"] == "all")]
    if "mix" in d:
        d = d[d["mix"].isna()]
    if "skipped_tensors" in d:
        d = d[d["skipped_tensors"].isna()]
    d = _keep(d, exclude)
    return d.sort_values("created_at").drop_duplicates("format", keep="last").reset_index(drop=True)


LEVELS = ("group", "tensor")


def sensitivity(ev: pd.DataFrame, model: str | None = None, metric: str | None = None,
                exclude=None, level: str = "group") -> pd.DataFrame:
    """Per (format, part): the model metric with only that part quantized, its share of the
    sum over the parts, the part's nmse and α = metric / nmse. ``level`` "group": the parts are
    tensor groups (``eval --sensitivity``); "tensor": single tensors (``eval --sensitivity
    tensor``), with the group each belongs to in ``group`` and its name in ``tensor``."""
    if level not in LEVELS:
        raise ValueError(f"level {level!r}: one of {', '.join(LEVELS)}")
    cols = ["format", "group", "tensor", "value", "share", "nmse", "alpha", "bpw"]
    d = setup(ev, model)
    prefix = f"{level}:"
    d = _keep(d[(d["variant"] == "fake") & d["tensors"].str.startswith(prefix)], exclude)
    if d.empty:
        return pd.DataFrame(columns=cols)
    metric = metric or MODEL_METRIC[d["kind"].iloc[0]]
    d = d.sort_values("created_at").drop_duplicates(["format", "tensors"], keep="last")
    if level == "tensor":
        from workbench.evaluate import group_of
    rows = []
    for _, r in d.iterrows():
        part = r["tensors"][len(prefix):]
        if level == "group":
            nm = json.loads(r["group_nmse"]).get(part) if isinstance(r["group_nmse"], str) else None
            g, t = part, None
        else:
            nm = float(r["w_nmse"]) if pd.notna(r.get("w_nmse")) else None
            g, t = group_of(part), part
        v = float(r[metric])
        rows.append({"format": r["format"], "group": g, "tensor": t, "value": v, "nmse": nm,
                     "alpha": v / nm if nm else math.nan, "bpw": r["bpw"]})
    out = pd.DataFrame(rows, columns=[c for c in cols if c != "share"])
    tot = out.groupby("format")["value"].transform("sum")
    out["share"] = np.where(tot > 0, out["value"] / tot, math.nan)
    return out[cols].sort_values(["format", "group", "tensor"], na_position="first").reset_index(drop=True)


def additivity(ev: pd.DataFrame, model: str | None = None, metric: str | None = None,
               exclude=None, level: str = "group") -> pd.DataFrame:
    """Per format with sensitivity runs: Σ over the parts of the metric (each part quantized
    alone) against the whole-model metric; ratio = sum / whole (1 = perfectly additive)."""
    sens = sensitivity(ev, model, metric, exclude, level)
    whole = whole_model(ev, model, exclude)
    if sens.empty or whole.empty:
        return pd.DataFrame(columns=["format", "parts", "sum_of_parts", "whole", "ratio"])
    metric = metric or MODEL_METRIC[whole["kind"].iloc[0]]
    w = dict(zip(whole["format"], whole[metric]))
    n_whole = dict(zip(whole["format"], whole["n_tensors"]))
    rows = []
    for f, g in sens.groupby("format"):
        # a tensor-level sum is the whole model's only when every quantized tensor ran alone
        if f in w and (level == "group" or len(g) == n_whole.get(f)):
            s = float(g["value"].sum())
            rows.append({"format": f, "parts": len(g), "sum_of_parts": s, "whole": float(w[f]),
                         "ratio": s / float(w[f]) if w[f] else math.nan})
    return pd.DataFrame(rows, columns=["format", "parts", "sum_of_parts", "whole", "ratio"])


def group_additivity(ev: pd.DataFrame, model: str | None = None, metric: str | None = None,
                     exclude=None) -> pd.DataFrame:
    """Within each group: Σ of its tensors' figures (each tensor alone) against the figure of
    the group alone, per (format, group) where both were measured on every tensor of the group."""
    cols = ["format", "group", "tensors", "sum_of_tensors", "group_alone", "ratio"]
    ts = sensitivity(ev, model, metric, exclude, "tensor")
    gs = sensitivity(ev, model, metric, exclude, "group")
    if ts.empty or gs.empty:
        return pd.DataFrame(columns=cols)
    d = setup(ev, model)
    counts = {}     # (format, group) -> tensors quantized in the group-alone run
    for _, r in d[(d["variant"] == "fake") & d["tensors"].str.startswith("group:")].iterrows():
        counts[(r["format"], r["tensors"][len("group:"):])] = int(r["n_tensors"])
    alone = {(r.format, r.group): r.value for r in gs.itertuples()}
    rows = []
    for (f, g), t in ts.groupby(["format", "group"]):
        if (f, g) in alone and counts.get((f, g)) == len(t):
            s = float(t["value"].sum())
            rows.append({"format": f, "group": g, "tensors": len(t), "sum_of_tensors": s,
                         "group_alone": float(alone[(f, g)]),
                         "ratio": s / alone[(f, g)] if alone[(f, g)] else math.nan})
    return pd.DataFrame(rows, columns=cols)


def alphas(ev: pd.DataFrame, model: str | None = None, metric: str | None = None,
           exclude=None) -> dict[str, float]:
    sens = sensitivity(ev, model, metric, exclude)
    if sens.empty:
        return {}
    return {g: float(np.nanmedian(d["alpha"])) for g, d in sens.groupby("group") if np.isfinite(d["alpha"]).any()}


def with_sensitivity_metric(whole: pd.DataFrame, a: dict[str, float]) -> pd.DataFrame:
    """``whole`` with ``w_sens`` = Σ_g α_g · nmse_g (NaN where a group has no α)."""
    out = whole.copy()
    vals = []
    for g in out.get("group_nmse", pd.Series([None] * len(out))):
        try:
            gn = json.loads(g) if isinstance(g, str) else None
        except ValueError:
            gn = None
        if not gn or not a or any(k not in a for k in gn):
            vals.append(math.nan)
        else:
            vals.append(sum(a[k] * v for k, v in gn.items()))
    out["w_sens"] = vals
    return out


def contains_q4_1_grid(fmt: str) -> bool:
    """Whether a format reproduces a Q4_1 tensor exactly: min/max asymmetric, 4 bits, blocks of
    32, scale and min stored exactly (f16/f32, not quantized again). Its grid is then Q4_1's
    block for block, so on a model shipped as Q4_1 its error is the source's, not its merit.
    (A 5-bit grid steps by (max−min)/31 and misses the 4-bit points; a 16-weight block rescales to
    its own min and max: measured, neither is exact.) A format that re-quantizes a tensor
    losslessly is also reported per row (``lossless_tensors``)."""
    from workbench.formats import FormatError, resolve
    try:
        s = resolve(fmt)[0]
    except FormatError:      # a mix, or a name this version does not know
        return False
    if s.ggml_type is not None:      # a llama.cpp-style type: only Q4_1 itself
        return fmt == "Q4_1"
    return (not s.symmetric and s.bits == 4 and s.block == 32 and s.scale in ("f16", "f32")
            and not s.double)


def correlations(ev: pd.DataFrame, model: str | None = None, metric: str | None = None,
                 exclude=None) -> pd.DataFrame:
    """The correlation table: per weight metric, formats, overall and within-band Spearman
    against the model metric, the bands used. ``exclude(format) -> bool`` drops formats."""
    whole = whole_model(ev, model, exclude)
    cols = ["weight_metric", "what", "formats", "overall", "within_band", "bands"]
    if whole.empty:
        return pd.DataFrame(columns=cols)
    metric = metric or MODEL_METRIC[whole["kind"].iloc[0]]
    whole = with_sensitivity_metric(whole, alphas(ev, model, metric, exclude))
    target = whole[metric].astype(float) * (-1 if metric in HIGHER_IS_BETTER else 1)
    band = band_of(whole["bpw"])
    rows = []
    for wm, what in WEIGHT_METRICS.items():
        if wm not in whole or whole[wm].notna().sum() < 3:
            continue
        x = whole[wm].astype(float)
        per = []
        for b in np.unique(band):
            m = (band == b) & np.isfinite(x.to_numpy(float)) & np.isfinite(target.to_numpy(float))
            if m.sum() >= MIN_BAND:
                r = spearman(x[m], target[m])
                if np.isfinite(r):
                    per.append((b, r, int(m.sum())))
        within = (sum(r * n for _b, r, n in per) / sum(n for _b, _r, n in per)) if per else math.nan
        rows.append({"weight_metric": wm, "what": what, "formats": int(x.notna().sum()),
                     "overall": spearman(x, target), "within_band": within,
                     "bands": ", ".join(f"{b:g}:{r:+.2f}(n={n})" for b, r, n in per)})
    return pd.DataFrame(rows, columns=cols)


def recommend(table: pd.DataFrame) -> str | None:
    """The weight metric with the highest within-band Spearman (overall breaks ties)."""
    t = table.dropna(subset=["within_band"])
    if t.empty:
        return None
    return t.sort_values(["within_band", "overall"], ascending=False)["weight_metric"].iloc[0]


def best_per_band(ev: pd.DataFrame, model: str | None = None, metric: str | None = None,
                  weight: str = "w_nmse", exclude=None) -> pd.DataFrame:
    """Per bpw band: the best format by the weight metric and by the model metric, side by side
    (``agree`` False names a band where weight error sends a user to the wrong format)."""
    whole = whole_model(ev, model, exclude)
    if whole.empty:
        return pd.DataFrame(columns=["band", "formats", "best_by_weight", "best_by_model", "agree"])
    metric = metric or MODEL_METRIC[whole["kind"].iloc[0]]
    sign = -1 if metric in HIGHER_IS_BETTER else 1
    whole = whole.assign(band=band_of(whole["bpw"]))
    rows = []
    for b, d in whole.groupby("band"):
        d = d[np.isfinite(d[metric].astype(float))]
        if d.empty:
            continue
        bw = d.loc[d[weight].astype(float).idxmin(), "format"] if d[weight].notna().any() else None
        bm = d.loc[(sign * d[metric].astype(float)).idxmin(), "format"]
        rows.append({"band": b, "formats": len(d), "best_by_weight": bw, "best_by_model": bm,
                     "weight_value": float(d.loc[d["format"] == bw, metric].iloc[0]) if bw else math.nan,
                     "model_value": float(d.loc[d["format"] == bm, metric].iloc[0]), "agree": bw == bm})
    return pd.DataFrame(rows)


def frontier_disagreements(ev: pd.DataFrame, model: str | None = None, metric: str | None = None,
                           weight: str = "w_nmse", exclude=None) -> dict[str, list[str]]:
    """Formats on the weight-error frontier but not the model-level one, and the reverse."""
    from workbench.views.pareto import pareto_front
    whole = whole_model(ev, model, exclude)
    if whole.empty:
        return {"weight_only": [], "model_only": []}
    metric = metric or MODEL_METRIC[whole["kind"].iloc[0]]
    fw = set(pareto_front(whole, "bpw", weight, lower_is_better=True)["format"])
    fm = set(pareto_front(whole, "bpw", metric, lower_is_better=metric not in HIGHER_IS_BETTER)["format"])
    return {"weight_only": sorted(fw - fm), "model_only": sorted(fm - fw)}
