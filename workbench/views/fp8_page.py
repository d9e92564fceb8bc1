"""The fp8-vs-fp16-scales page: the seed's two ratio analyses (workbench.views.ratios) for any
pair of scale encodings, model and metric, and the same question for codebooks (one code and
block, scale A vs scale B), each ratio also taken at equal bpw (the A format
against encoding B's error curve). Only gains — a lower error at equal or lower bpw — are
highlighted in the table; the heatmap's diverging colours (equal-bpw or the seed's paired
ratio) carry each cell's number."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import NumberFormatter, ScientificFormatter

from workbench import store as st
from workbench.views.page import EMPTY_STORE, ModelPage  # noqa: F401  (EMPTY_STORE: re-exported)
from workbench.views.pareto import METRICS, WEIGHTED
from workbench.views.ratios import (OUT_OF_RANGE, RATIO_METRICS, VALUES, codebook_missing, codebook_ratio_table,
                                    double_ratio_table, encoding_label,
                                    encodings_present, gain_row_styles, gain_summary, missing_pairs,
                                    paired_summary, parse_encoding, ratio_heatmap, ratio_scatter,
                                    single_ratio_table, super_bits_present)

DEFAULT_A, DEFAULT_B = "e4m3", "f16"
TABLE_HEIGHT, ROW_HEIGHT = 300, 30      # px: short tables shrink to their rows
TABLE_COLUMNS = ("label", "bits", "format_a", "format_b", "metric_a", "metric_b", "curve_b", "eq_ratio",
                 "ratio", "bpw_label", "bpw_a", "bpw_b", "gain")
# the table's headers (metric_a/metric_b/curve_b are named after the metric when shown)
HEADERS = {"eq_ratio": "ratio at equal bpw", "ratio": "paired ratio", "bpw_label": "bpw A − B (paired)",
           "bpw_a": "bpw A", "bpw_b": "bpw B"}
COLOUR_BY = {label: key for key, (_, _, label) in VALUES.items()}


class RatioSection:
    """One analysis (single or double quantization): heading, summary line, heatmap, scatter
    and the table of pairs, gains first and highlighted."""

    def __init__(self, x: str):
        self.x = x
        self.heading = pn.pane.Markdown("", margin=(10, 10, 0, 10))
        self.summary = pn.pane.Markdown("", styles={"font-weight": "600"}, margin=(0, 10))
        self.paired = pn.pane.Markdown("", margin=(0, 10))
        # unlinked: the single and double heatmaps share dimension names but not categories
        self.heatmap = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=340, linked_axes=False)
        self.scatter = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=340, linked_axes=False)
        self.table = pn.widgets.Tabulator(pd.DataFrame(columns=list(TABLE_COLUMNS)), show_index=False,
                                          disabled=True, sizing_mode="stretch_width", height=TABLE_HEIGHT,
                                          layout="fit_data_stretch")
        self.table.style.apply(gain_row_styles, axis=1)     # kept across value updates
        self.figures = pn.Row(self.heatmap, self.scatter, sizing_mode="stretch_width")
        self.layout = pn.Column(self.heading, self.summary, self.paired, self.figures, self.table,
                                sizing_mode="stretch_width")

    def show(self, heading: str, table: pd.DataFrame, summary: str, title: str, metric: str,
             paired: str = "", colour_by: str = "eq", axes: tuple[str, str] = ("bits", "s/a × B")):
        self.heading.object = f"#### {heading}"
        self.summary.object = summary
        self.paired.object = paired
        has = not table.empty
        self.figures.visible = self.table.visible = self.paired.visible = has
        if not has:
            self.heatmap.object = self.scatter.object = None
            if len(self.table.value) or list(self.table.value.columns) != list(TABLE_COLUMNS):
                self.table.value = pd.DataFrame(columns=list(TABLE_COLUMNS))     # a hidden table: once
            return
        self.heatmap.object = ratio_heatmap(table, title, value=colour_by, xlabel=axes[0], ylabel=axes[1])
        self.scatter.object = ratio_scatter(table, x=self.x).opts(
            title="paired ratio vs its bpw cost; at equal bpw (0)")
        # gains first (by their ratio at equal bpw), then the rest; out of range last
        rows = table.assign(_rank=~table["gain"].astype(bool)).sort_values(
            ["_rank", "eq_ratio", "ratio"], kind="stable", na_position="last")
        rows = rows[list(TABLE_COLUMNS)].reset_index(drop=True)
        names = {"metric_a": f"{metric} A", "metric_b": f"{metric} B", "curve_b": f"{metric} B curve at bpw A",
                 **HEADERS}
        self.table.value = rows.rename(columns=names)
        # the same formatter objects for the same metric: a new set would make the client rebuild
        # the table's columns on every refresh (and race its own re-render)
        formatters = self._formatters(metric, names)
        if self.table.formatters is not formatters:
            self.table.formatters = formatters
        if self.table.hidden_columns != ["gain"]:
            self.table.hidden_columns = ["gain"]
        self.table.height = min(TABLE_HEIGHT, ROW_HEIGHT * (len(rows) + 1) + 12)

    def _formatters(self, metric: str, names: dict) -> dict:
        cache = self.__dict__.setdefault("_formatter_cache", {})
        if metric not in cache:
            value = (ScientificFormatter(precision=3, power_limit_low=0, nan_format=OUT_OF_RANGE,
                                         null_format=OUT_OF_RANGE) if METRICS[metric].log
                     else NumberFormatter(format="0.00000", nan_format=OUT_OF_RANGE, null_format=OUT_OF_RANGE))
            ratio = NumberFormatter(format="0.0000", nan_format=OUT_OF_RANGE, null_format=OUT_OF_RANGE)
            bpw = NumberFormatter(format="0.0000")
            cache[metric] = {f"{metric} A": value, f"{metric} B": value, names["curve_b"]: value,
                             HEADERS["eq_ratio"]: ratio, HEADERS["ratio"]: ratio,
                             HEADERS["bpw_a"]: bpw, HEADERS["bpw_b"]: bpw}
        return cache[metric]


class Fp8Page(ModelPage):
    """Loss of encoding A at half the block (or 8×8 hyper-blocks) over encoding B at the full
    block (16×16): ratios below 1 are net gains for A."""

    model = param.Selector(default=None, objects=[], doc="Model whose results are compared")
    metric = param.Selector(default="nmse", objects=["nmse"], doc="Error metric of the ratio")
    enc_a = param.Selector(default=None, objects=[], doc="Scale encoding of side A (B/2, 8×8)")
    enc_b = param.Selector(default=None, objects=[], doc="Scale encoding of side B (B, 16×16)")
    super_bits = param.Selector(default="all", objects=["all"], doc="Super-scale bits (double)")
    colour_by = param.Selector(default="eq", objects=COLOUR_BY, doc="The ratio the heatmaps colour")

    def __init__(self, store: str | Path | None = None, model: str | None = None, notify=None, **params):
        super().__init__(store, **params)
        self._summaries: dict[str, pd.DataFrame] = {}
        self._loading = False
        self.message = pn.pane.Alert("", alert_type="info", visible=False)
        self.single = RatioSection(x="bpw_diff")
        self.double = RatioSection(x="bpw_diff_pct")
        self.codebook = RatioSection(x="bpw_diff")
        self.main = pn.Column(self.message, self.single.layout, self.double.layout, self.codebook.layout,
                              sizing_mode="stretch_width")
        self._open(model)
        self.controls = pn.Column(
            pn.widgets.Select.from_param(self.param.model, name="Model"),
            pn.widgets.Select.from_param(self.param.metric, name="Metric"),
            pn.widgets.Select.from_param(self.param.enc_a, name="Encoding A (half block, 8×8)"),
            pn.widgets.Select.from_param(self.param.enc_b, name="Encoding B (full block, 16×16)"),
            pn.widgets.Select.from_param(self.param.super_bits, name="Super-scale bits (double)"),
            pn.widgets.RadioButtonGroup.from_param(self.param.colour_by, name="Heatmap colour",
                                                   orientation="vertical"),
            pn.pane.Markdown("ratio = error(A) / error(B): below 1 (blue) A is better. **At equal bpw**: "
                             "the A format against encoding B's error curve (its frontier, log-"
                             "interpolated) at the A format's bpw; 'out of range' ('–' in a cell) where "
                             "B has no format that cheap or that dear; grey: no pair. **Paired**: the seed's pairs, at "
                             "their own bpw difference. Highlighted rows are gains only: a lower "
                             "error at equal or lower bpw. Runs without an importance matrix.",
                             styles={"font-size": "0.9em"}),
        )
        if self.model is None:
            for widget in self.controls[:6]:
                widget.disabled = True

    def _forget(self):
        self._summaries.clear()

    def summary(self) -> pd.DataFrame:
        """The model-level summary the ratios are computed from (runs without an imatrix)."""
        if self.model not in self._summaries:
            self._summaries[self.model] = st.summary(self.store, self.model, imatrix="")
        return self._summaries[self.model]

    @param.depends("model", watch=True)
    def _load_model(self):
        if self.model is None:
            return
        try:
            df = self.summary()
        except (duckdb.Error, OSError) as exc:
            self._show_message(f"cannot read {self.model} from {self.store}: {str(exc).splitlines()[0]}",
                               "danger")
            return
        metrics = [m for m in METRICS if m in RATIO_METRICS and m not in WEIGHTED and m in df.columns
                   and df[m].notna().any()] or ["nmse"]
        encodings = encodings_present(df)
        bits = super_bits_present(df)
        self._loading = True        # one refresh for the new model, not one per parameter
        try:
            self.param.metric.objects = metrics
            if self.metric not in metrics:
                self.metric = metrics[0]
            labels = {encoding_label(k): k for k in encodings}
            self.param.enc_a.objects = labels
            self.param.enc_b.objects = labels
            if self.enc_a not in encodings:
                self.enc_a = DEFAULT_A if DEFAULT_A in encodings else next(iter(encodings), None)
            if self.enc_b not in encodings:
                self.enc_b = DEFAULT_B if DEFAULT_B in encodings else next(iter(encodings), None)
            self.param.super_bits.objects = {"all": "all", **{f"{b} bits": str(b) for b in bits}}
            if self.super_bits not in ["all", *map(str, bits)]:
                self.super_bits = "all"
        finally:
            self._loading = False
        self._refresh()

    # ---------------------------------------------------------------------------- updates
    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """The single, double and codebook ratio tables for the current choices."""
        df = self.summary()
        enc_a, norm_a = parse_encoding(self.enc_a)
        enc_b, norm_b = parse_encoding(self.enc_b)
        return (single_ratio_table(df, enc_a, enc_b, self.metric, norm_a, norm_b),
                double_ratio_table(df, enc_a, enc_b, self.metric, self._super_bits(), norm_a, norm_b),
                codebook_ratio_table(df, enc_a, enc_b, self.metric, norm_a, norm_b))

    def _super_bits(self) -> int | None:
        return None if self.super_bits == "all" else int(self.super_bits)

    @param.depends("metric", "enc_a", "enc_b", "super_bits", "colour_by", watch=True)
    def _refresh(self):
        if self.model is None or self._loading:
            return
        # every section's changes reach the browser as one patch: separate patches re-render the
        # sections' plots and tables while the previous re-render is still in flight
        with pn.io.hold():
            self._redraw()

    def _redraw(self):
        if self.enc_a is None or self.enc_b is None:
            self._show_message(f"{self.model}: no uniform or codebook formats with absmax scales to compare "
                               f"(sweep formats such as Q4s16_e4m3 and Q4s32, or the codebooks grid)", "warning")
            return
        try:
            single, double, codebook = self.tables()
        except ValueError as exc:      # a metric the summary lacks: one line, nothing drawn
            self._show_message(f"{self.model}: {exc}", "warning")
            return
        self.message.visible = False
        self.single.layout.visible = self.double.layout.visible = True
        self.codebook.layout.visible = True
        a, b, m = encoding_label(self.enc_a), encoding_label(self.enc_b), self.metric

        def caption(table, double):     # the gain count, or which side is missing
            if len(table):
                return gain_summary(table, self.enc_a, self.enc_b, double)
            return missing_pairs(self.summary(), self.enc_a, self.enc_b, double,
                                 self._super_bits() if double else None)

        def seed(table, double):
            return paired_summary(table, self.enc_a, self.enc_b, double) if len(table) else ""

        eq = self.colour_by == "eq"
        self.single.show(f"Single quantization: blocks of B/2 with {a} scales vs blocks of B with {b}",
                         single, caption(single, False),
                         f"{m}(B/2, {a}) / {b} curve at equal bpw" if eq else f"{m}(B/2, {a}) / {m}(B, {b})", m,
                         seed(single, False), self.colour_by)
        self.double.show(f"Double quantization: 8×8 hyper-blocks with {a} super-scales vs 16×16 with {b}",
                         double, caption(double, True),
                         f"{m}(8×8, {a}) / {b} double curve at equal bpw" if eq
                         else f"{m}(8×8, {a}) / {m}(16×16, {b})", m,
                         seed(double, True), self.colour_by)
        self.codebook.show(f"Codebooks: the same code and block with {a} scales vs {b}",
                           codebook, gain_summary(codebook, self.enc_a, self.enc_b, "codebook") if len(codebook)
                           else codebook_missing(self.summary(), self.enc_a, self.enc_b),
                           f"{m}({a}) / {b} codebook curve at equal bpw" if eq else f"{m}({a}) / {m}({b})", m,
                           paired_summary(codebook, self.enc_a, self.enc_b, "codebook") if len(codebook) else "",
                           self.colour_by, axes=("code", "block"))

    def _show_message(self, text: str, kind: str):
        self.message.object, self.message.alert_type, self.message.visible = text, kind, True
        self.single.layout.visible = self.double.layout.visible = self.codebook.layout.visible = False
