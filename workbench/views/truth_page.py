"""The Truth page: which weight metric predicts what a format does to the model's outputs?

For one model with evaluations (``workbench eval``: the ``model_eval`` table), a scatter of a
chosen weight metric against the model-level metric (one point per format evaluated on the whole
model), the Spearman correlation of every weight metric with it, overall and within equal-bpw
bands (``truth.correlations``; the recommended metric highlighted), and, from sensitivity runs
(one tensor group quantized at a time), each group's share of the model-level figure and how
additive the groups are (``truth.sensitivity``, ``truth.additivity``).

The pure figure functions come first (DataFrame in, HoloViews out, tested without a browser);
the Panel class only wires widgets to them. The data comes from ``workbench.eval_store`` and the
statistics from ``workbench.truth`` (a view never queries DuckDB itself).
"""
from __future__ import annotations

import re
from pathlib import Path

import duckdb
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import NumberFormatter, ScientificFormatter
from bokeh.palettes import Category10

from workbench import eval_store, truth
from workbench.formats import FormatError
from workbench.views.page import ModelPage
from workbench.views.pareto import ALL_METRICS, MODEL_METRICS

NO_EVALS = ("no model-level evaluations yet: run `workbench eval` (or **Evaluate formats on the model** "
            "on the Sweep page)")
# Models whose source weights already lie on Q4_1's grid (SmolLM2 ships as Q4_1).
Q4_1_SOURCE = re.compile(r"smollm2", re.I)
Q4_1_CAVEAT = ("SmolLM2 ships as Q4_1: its weights already lie on Q4_1's grid, so formats whose grid "
               "holds Q4_1's are favoured by the source; it proves the LLM path, it does not rank "
               "formats in general")
FAMILY_COLORS = {"ggml": "#222222", "uniform": "#1f77b4", "codebook": "#2ca02c"}
HIGHLIGHT = "background-color: #fde68a; font-weight: bold"
TABLE_COLUMNS = ["weight_metric", "within_band", "overall", "formats", "bands", "what"]
SCI = ScientificFormatter(precision=3, power_limit_low=0)
RHO = NumberFormatter(format="+0.000")


def fitted(rows: int) -> int:
    """A table's height in pixels for ``rows`` rows (header included), at most 12 rows' worth."""
    return 40 + 29 * max(1, min(rows, 12))


def q4_1_source(model: str | None) -> bool:
    """Whether ``model``'s source weights lie on Q4_1's grid (the caveat and its filter apply)."""
    return bool(model) and bool(Q4_1_SOURCE.search(model))


def holds_q4_1_grid(fmt: str) -> bool:
    """``truth.contains_q4_1_grid``, False for a name this version cannot parse."""
    try:
        return truth.contains_q4_1_grid(fmt)
    except FormatError:
        return False


# ------------------------------------------------------------------------------ figures
def family_colors(families) -> dict[str, str]:
    spare = iter(Category10[10][3:])
    return {f: FAMILY_COLORS.get(f) or next(spare, "#7f7f7f") for f in sorted(set(families))}


def _label(name: str) -> str:
    return ALL_METRICS[name].label if name in ALL_METRICS else truth.WEIGHT_METRICS.get(name, name)


def truth_scatter(whole: pd.DataFrame, weight: str, metric: str) -> hv.Points:
    """``weight`` (x, log) against the model-level ``metric`` (y) for the formats evaluated on
    the whole model, one point per format coloured by family; the hover names the format, its
    bpw and both values. Rows a log axis cannot show (≤ 0, non-finite) are left out."""
    m = ALL_METRICS[metric]
    x = pd.to_numeric(whole[weight], errors="coerce").to_numpy(float) if weight in whole else np.array([])
    y = pd.to_numeric(whole[metric], errors="coerce").to_numpy(float) if metric in whole else np.array([])
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & ((y > 0) if m.log else True)
    data = whole.loc[ok, ["format", "family", "bpw", weight, metric]].sort_values("family").reset_index(drop=True)
    fmt_y = "{0.000e}" if m.log else "{0.0000}"
    return hv.Points(data, [hv.Dimension(weight, label=_label(weight)), hv.Dimension(metric, label=m.label)],
                     ["format", "family", "bpw"]).opts(
        color="family", cmap=family_colors(data["family"]), size=10, alpha=0.85, line_color="white",
        logx=True, logy=m.log, tools=["hover"], show_legend=True, legend_position="right",
        hover_tooltips=[("format", "@format"), ("family", "@family"), ("bpw", "@bpw{0.000}"),
                        (weight, "@{%s}{0.000e}" % weight), (metric, "@{%s}%s" % (metric, fmt_y))],
        title=f"{metric} against {weight}: one point per format evaluated on the whole model",
        responsive=True, min_height=420, show_grid=True)


def correlation_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The correlation table as shown: best within-band Spearman first."""
    if table.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    return table.sort_values(["within_band", "overall"], ascending=False, na_position="last")[
        TABLE_COLUMNS].reset_index(drop=True)


def sensitivity_bars(sens: pd.DataFrame, metric: str) -> hv.Bars:
    """Per format, each tensor group's share of the summed model-level ``metric`` (that group
    alone quantized), stacked to 1."""
    data = sens[["format", "group", "share", "value", "nmse", "alpha"]].copy()
    data["nmse"] = pd.to_numeric(data["nmse"], errors="coerce")
    groups = sorted(data["group"].unique())
    colors = {g: Category10[10][i % 10] for i, g in enumerate(groups)}
    return hv.Bars(data, ["format", "group"], ["share", "value", "nmse", "alpha"]).opts(
        stacked=True, color="group", cmap=colors, tools=["hover"], legend_position="right",
        hover_tooltips=[("format", "@format"), ("group", "@group"), ("share", "@share{0.0%}"),
                        (metric, "@value{0.000e}"), ("group nmse", "@nmse{0.000e}"), ("α", "@alpha{0.00}")],
        ylabel=f"share of Σ {metric} over groups", xlabel="format", responsive=True, min_height=320,
        title=f"Tensor-group sensitivity: each group alone, its share of {metric}", show_grid=True)


def tensor_bars(sens: pd.DataFrame, metric: str, top: int = 40) -> hv.Bars:
    """Single-tensor sensitivity: each tensor's share of the summed ``metric`` (that tensor
    alone quantized), one bar per format, the ``top`` tensors by their largest share."""
    data = sens[["format", "group", "tensor", "share", "value", "nmse", "alpha"]].copy()
    data["nmse"] = pd.to_numeric(data["nmse"], errors="coerce")
    order = data.groupby("tensor")["share"].max().sort_values(ascending=False)
    data = data[data["tensor"].isin(order.index[:top])]
    data["tensor"] = pd.Categorical(data["tensor"], categories=list(order.index[:top]), ordered=True)
    data = data.sort_values(["tensor", "format"])
    data["tensor"] = data["tensor"].astype(str)
    shown = f"the {top} largest of {len(order)}" if len(order) > top else f"{len(order)}"
    return hv.Bars(data, ["tensor", "format"], ["share", "value", "group", "nmse", "alpha"]).opts(
        color="format", cmap="Category10", tools=["hover"], xrotation=60, multi_level=False,
        hover_tooltips=[("tensor", "@tensor"), ("group", "@group"), ("format", "@format"),
                        ("share", "@share{0.00%}"), (metric, "@value{0.000e}"),
                        ("tensor nmse", "@nmse{0.000e}"), ("α", "@alpha{0.00}")],
        ylabel=f"share of Σ {metric} over tensors", xlabel="tensor", responsive=True, min_height=380,
        title=f"Single-tensor sensitivity ({shown} tensors): each tensor alone, its share of {metric}",
        show_grid=True, legend_position="top_right")


# ----------------------------------------------------------------------------- the page
class TruthPage(ModelPage):
    """Weight metrics against model-level truth for one model with evaluations."""

    model = param.Selector(default=None, objects=[], doc="Model whose evaluations are shown")
    weight = param.Selector(default="w_nmse", objects=["w_nmse"], doc="Weight metric (x axis)")
    target = param.Selector(default="drift", objects=["drift"], doc="Model-level metric (y axis)")
    exclude_q4_1 = param.Boolean(default=False, doc="Leave out formats whose grid holds Q4_1's")
    level = param.Selector(default="group", objects=list(truth.LEVELS),
                           doc="Sensitivity bars: tensor groups or single tensors")

    def __init__(self, store: str | Path | None = None, model: str | None = None, notify=None, **params):
        super().__init__(store, **params)
        self._ev = pd.DataFrame()
        self._quiet = False
        self._shown_for: tuple | None = None       # (model, target, exclude) the weight default was set for
        self.recommended: str | None = None
        self.message = pn.pane.Alert("", alert_type="info", visible=False)
        self.caveat = pn.pane.Alert(Q4_1_CAVEAT + ".", alert_type="warning", visible=False,
                                    css_classes=["q4-1-caveat"], sizing_mode="stretch_width")
        self.summary = pn.pane.Markdown("", sizing_mode="stretch_width", margin=(0, 10))
        self.scatter = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=420)
        self.table = pn.widgets.Tabulator(pd.DataFrame(columns=TABLE_COLUMNS), show_index=False, disabled=True,
                                          sizing_mode="stretch_width", layout="fit_data_stretch",
                                          height=260, css_classes=["correlations"],
                                          formatters={"within_band": RHO, "overall": RHO})
        self.table.style.apply(lambda row: [HIGHLIGHT if row["weight_metric"] == self.recommended else ""
                                            for _ in row], axis=1)
        self.bars = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=320)
        self.additivity = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True,
                                               sizing_mode="stretch_width", layout="fit_data_stretch", height=180,
                                               formatters={"sum_of_parts": SCI, "whole": SCI,
                                                           "ratio": NumberFormatter(format="0.000")})
        self.within = pn.widgets.Tabulator(pd.DataFrame(), show_index=False, disabled=True,
                                           sizing_mode="stretch_width", layout="fit_data_stretch", height=180,
                                           css_classes=["group-additivity"],
                                           formatters={"sum_of_tensors": SCI, "group_alone": SCI,
                                                       "ratio": NumberFormatter(format="0.000")})
        self.within_box = pn.Column(pn.pane.Markdown(
            "**Within each group**: Σ of its tensors' metric (each tensor alone) ÷ the metric of the "
            "group alone.", margin=(0, 10)), self.within, visible=False, sizing_mode="stretch_width")
        self.level_widget = pn.widgets.RadioButtonGroup.from_param(
            self.param.level, name="Sensitivity of", css_classes=["sensitivity-level"])
        self.sensitivity_note = pn.pane.Markdown("", margin=(0, 10))
        self.additivity_note = pn.pane.Markdown("", margin=(0, 10))
        self.sensitivity = pn.Column(self.bars, self.additivity_note, self.additivity, self.within_box,
                                     sizing_mode="stretch_width")
        self.content = pn.Column(
            self.summary, self.scatter,
            pn.pane.Markdown("#### Which weight metric to trust", margin=(0, 10)),
            pn.pane.Markdown("Spearman rank correlation of each weight metric with the model-level metric: "
                             "*within_band* is the size-weighted mean over bands of equal bpw (±0.125, at "
                             f"least {truth.MIN_BAND} formats), where a user actually chooses; *overall* spans "
                             "every bit depth. The recommended metric is highlighted.",
                             styles={"font-size": "0.9em"}, margin=(0, 10)),
            self.table,
            pn.pane.Markdown("#### Sensitivity", margin=(0, 10)), self.level_widget, self.sensitivity_note,
            self.sensitivity, sizing_mode="stretch_width")
        self.main = pn.Column(self.message, self.caveat, self.content, sizing_mode="stretch_width")
        self._open(model)
        self.exclude_toggle = pn.widgets.Checkbox.from_param(
            self.param.exclude_q4_1, name="Leave out formats whose grid holds Q4_1's",
            css_classes=["exclude-q4-1"], visible=q4_1_source(self.model))
        self.controls = pn.Column(
            pn.widgets.Select.from_param(self.param.model, name="Model"),
            pn.widgets.Select.from_param(self.param.weight, name="Weight metric (x axis)"),
            pn.widgets.Select.from_param(self.param.target, name="Model-level metric (y axis)"),
            self.exclude_toggle,
            pn.pane.Markdown("Points: formats evaluated fake-quantized on the whole model. Bars: "
                             "`workbench eval --sensitivity` (one tensor group at a time) or "
                             "`--sensitivity tensor` (one tensor at a time).",
                             styles={"font-size": "0.9em"}))
        if self.model is None:
            for widget in self.controls[:3]:
                widget.disabled = True

    # -------------------------------------------------------------------------- loading
    def _open(self, model: str | None):
        """Offer the models that have evaluations (not those with sweep results only)."""
        try:
            self._ev = eval_store.evals(self.store)
        except (duckdb.Error, OSError) as exc:
            return self._show_message(f"cannot read the store at {self.store}: {str(exc).splitlines()[0]}", "danger")
        models = sorted(self._ev["model"].unique())
        if not models:
            return self._show_message(f"{NO_EVALS} (store: {self.store})", "info")
        self.param.model.objects = models
        self.model = model if model in models else models[0]

    def _forget(self):
        self._ev = pd.DataFrame()

    @property
    def evals(self) -> pd.DataFrame:
        """This model's evaluation rows."""
        return self._ev[self._ev["model"] == self.model] if len(self._ev) else self._ev

    @param.depends("model", watch=True)
    def _load_model(self):
        if self.model is None:
            return
        ev = self.evals
        whole = truth.whole_model(ev, self.model)
        kind = str(ev["kind"].iloc[0]) if len(ev) else "encoder"
        targets = [m for m in MODEL_METRICS if m in whole and pd.to_numeric(whole[m], errors="coerce").notna().any()]
        self._quiet = True
        try:
            self.param.target.objects = targets or [truth.MODEL_METRIC[kind]]
            self.target = truth.MODEL_METRIC[kind] if truth.MODEL_METRIC[kind] in targets else \
                (targets[0] if targets else truth.MODEL_METRIC[kind])
            if not q4_1_source(self.model):
                self.exclude_q4_1 = False
        finally:
            self._quiet = False
        self.caveat.visible = q4_1_source(self.model)
        if hasattr(self, "exclude_toggle"):
            self.exclude_toggle.visible = q4_1_source(self.model)
        self._refresh()

    # --------------------------------------------------------------------------- update
    def exclude(self):
        """The formats left out of every figure (None: none)."""
        return holds_q4_1_grid if self.exclude_q4_1 and q4_1_source(self.model) else None

    def _kept(self, df: pd.DataFrame) -> pd.DataFrame:
        ex = self.exclude()
        return df if ex is None or df.empty else df[[not ex(f) for f in df["format"]]]

    @param.depends("level", watch=True)
    def _relevel(self):
        if self.model is not None and not self._quiet and len(self.evals):
            self._show_sensitivity(self.evals, self.target)

    @param.depends("weight", "target", "exclude_q4_1", watch=True)
    def _refresh(self):
        if self.model is None or self._quiet:
            return
        ev, target = self.evals, self.target
        whole = self._kept(truth.with_sensitivity_metric(truth.whole_model(ev, self.model),
                                                         truth.alphas(ev, self.model, target)))
        if whole.empty:
            return self._show_message(f"{self.model}: no format evaluated on the whole model yet "
                                      f"(run `workbench eval`); {len(ev)} evaluations of tensor subsets", "warning")
        table = truth.correlations(ev, self.model, target, self.exclude())
        self.recommended = truth.recommend(table)
        options = [w for w in table["weight_metric"]] or [w for w in truth.WEIGHT_METRICS if w in whole]
        key = (self.model, target, self.exclude_q4_1)
        self._quiet = True
        try:
            self.param.weight.objects = options
            if self.weight not in options or self._shown_for != key:
                self.weight = self.recommended or options[0]
        finally:
            self._quiet = False
        self._shown_for = key
        self.message.visible = False
        self.content.visible = True
        self.scatter.object = truth_scatter(whole, self.weight, target)
        self.table.value = correlation_rows(table)
        self.table.height = fitted(len(self.table.value))
        self.summary.object = self._summary_text(whole, table)
        self._show_sensitivity(ev, target)

    def _summary_text(self, whole: pd.DataFrame, table: pd.DataFrame) -> str:
        left_out = len(truth.whole_model(self.evals, self.model)) - len(whole)
        text = (f"**{len(whole)} formats** of {self.model} evaluated on the whole model "
                f"({whole['bpw'].min():.2f}–{whole['bpw'].max():.2f} bpw)"
                + (f", {left_out} whose grid holds Q4_1's left out" if left_out else "") + ". ")
        if self.recommended is None:
            return text + (f"Too few formats per bpw band (at least {truth.MIN_BAND}) to recommend a weight "
                           "metric: evaluate more formats of the same bpw.")
        r = table.set_index("weight_metric").loc[self.recommended]
        return text + (f"**Recommended weight metric: `{self.recommended}`** ({truth.WEIGHT_METRICS[self.recommended]}): "
                       f"within-band Spearman {r['within_band']:+.2f} with {self.target}, {r['overall']:+.2f} overall.")

    def _show_sensitivity(self, ev: pd.DataFrame, target: str):
        level = self.level
        sens = self._kept(truth.sensitivity(ev, self.model, target, level=level))
        if sens.empty:
            self.sensitivity.visible = False
            how = "`workbench eval --sensitivity`" + (" tensor" if level == "tensor" else "")
            part = "one tensor" if level == "tensor" else "one tensor group"
            of = " of single tensors" if level == "tensor" else ""
            self.sensitivity_note.object = (f"No sensitivity runs{of} for this model: {how} "
                                            f"quantizes {part} at a time.")
            return
        add = self._kept(truth.additivity(ev, self.model, target, level=level))
        self.bars.object = sensitivity_bars(sens, target) if level == "group" else tensor_bars(sens, target)
        self.additivity.value = add.reset_index(drop=True)
        self.additivity.height = fitted(len(add))
        parts = "groups" if level == "group" else "tensors"
        self.additivity_note.object = (
            f"**Additivity**: Σ over {parts} of the metric (each alone) ÷ the whole-model metric "
            f"(1 = their effects add up)" + ("" if len(add) else
                                            f": no format has every tensor of the whole model run alone") + ".")
        within = self._kept(truth.group_additivity(ev, self.model, target)) if level == "tensor" else pd.DataFrame()
        self.within.value = within.reset_index(drop=True)
        self.within.height = fitted(len(within))
        self.within_box.visible = bool(len(within))
        ratios = add["ratio"].dropna()
        n_parts = sens["group" if level == "group" else "tensor"].nunique()
        self.sensitivity_note.object = (
            f"{sens['format'].nunique()} formats × {n_parts} {'tensor groups' if level == 'group' else 'tensors'}"
            + (f"; additivity ratio {ratios.min():.3f}–{ratios.max():.3f}" if len(ratios) else "") + ".")
        self.sensitivity.visible = True

    def _show_message(self, text: str, kind: str):
        self.message.object, self.message.alert_type, self.message.visible = text, kind, True
        self.content.visible = False
