"""Panel pages: widgets wired to the pure plot functions; the store is read through
``workbench.store`` only (a view never queries DuckDB itself)."""
from __future__ import annotations

from pathlib import Path

import duckdb
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import NumberFormatter, ScientificFormatter

from workbench import store as st
from workbench.views.pareto import (METRICS, kind_colors, ordered_kinds, pareto_plot, plottable,
                                    selected_table, with_kind)

EMPTY_STORE = "no results yet: run `workbench sweep`"


def model_summary(store: str | Path, model: str) -> pd.DataFrame:
    """``store.summary`` for one model. Until store.summary quotes its column names, DuckDB 2.0
    rejects ``any_value(symmetric)`` (a keyword); then the same query runs with them quoted."""
    try:
        return st.summary(store, model)
    except duckdb.ParserException:
        return _summary_quoted(store, model)


def _summary_quoted(store: str | Path, model: str) -> pd.DataFrame:
    # Stand-in for store.summary (same SQL, identifiers quoted); delete once store.py is fixed.
    fcols = ", ".join(f'any_value("{c}") AS "{c}"' for c in st.FORMAT_COLS)
    sql = f"""
    WITH per_tensor AS (
        SELECT model, tensor, format, {fcols}, any_value(numel) AS numel, any_value(nbytes) AS nbytes,
               avg(mse) AS mse, avg(nmse) AS nmse, avg(bnl) AS bnl, avg(cosine) AS cosine,
               max(max_abs_err) AS max_abs_err, min(quant_s) AS quant_s, min(dequant_s) AS dequant_s
        FROM results WHERE model = ? GROUP BY model, tensor, format)
    SELECT model, format, {fcols}, count(*) AS tensors, sum(numel) AS numel,
           sum(nbytes) * 8.0 / sum(numel) AS bpw,
           sum(mse * numel) / sum(numel) AS mse, sum(nmse * numel) / sum(numel) AS nmse,
           sum(bnl * numel) / sum(numel) AS bnl, sum(cosine * numel) / sum(numel) AS cosine,
           max(max_abs_err) AS max_abs_err,
           sum(numel) / sum(quant_s) AS quant_wps, sum(numel) / sum(dequant_s) AS dequant_wps
    FROM per_tensor GROUP BY model, format ORDER BY model, bpw"""
    df = st.query(store, sql, [model])
    df["rmse"] = np.sqrt(df["mse"])
    with np.errstate(divide="ignore"):
        df["sqnr_db"] = -10 * np.log10(df["nmse"].astype(float))
    return df


class ParetoPage(pn.viewable.Viewer):
    """bpw vs error for every format of one model: box-select points to list them below."""

    model = param.Selector(default=None, objects=[], doc="Model whose results are shown")
    metric = param.Selector(default="nmse", objects=list(METRICS), doc="Error metric (y axis)")
    kinds = param.ListSelector(default=[], objects=[], doc="Families and scale encodings shown")

    def __init__(self, store: str | Path | None = None, model: str | None = None, **params):
        super().__init__(**params)
        self.store = Path(store) if store else st.default_store()
        # One link_selections per page, i.e. per session: brushing never leaks between users.
        self.selection = hv.link_selections.instance()
        self._summaries: dict[str, pd.DataFrame] = {}
        self._data = pd.DataFrame()          # what is plotted now (filtered, plottable rows)
        self._colors: dict[str, str] = {}

        self.message = pn.pane.Alert("", alert_type="info", visible=False)
        self.plot = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=480, visible=False)
        self.caption = pn.pane.Markdown("", visible=False)
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=list(selected_table(pd.DataFrame(
                columns=["format", "bpw", "nmse"])).columns)),
            show_index=False, disabled=True, sizing_mode="stretch_width", height=320,
            layout="fit_data_stretch", visible=False, name="selected formats")
        self.controls = pn.Column(
            pn.widgets.Select.from_param(self.param.model, name="Model"),
            pn.widgets.Select.from_param(self.param.metric, name="Metric"),
            pn.widgets.CheckBoxGroup.from_param(self.param.kinds, name="Family / scale encoding",
                                                inline=False),
            pn.pane.Markdown("Drag on the plot to box-select formats (shift adds to the "
                             "selection); the table lists them.", styles={"font-size": "0.9em"}),
        )
        self.main = pn.Column(self.message, self.plot, self.caption, self.table,
                              sizing_mode="stretch_width")
        self.selection.param.watch(self._update_table, "selection_expr")

        try:
            models = st.models(self.store)
        except (duckdb.Error, OSError) as exc:
            self._show_message(f"cannot read the store at {self.store}: {str(exc).splitlines()[0]}",
                               "danger")
            return
        if not models:
            self._show_message(f"{EMPTY_STORE} (store: {self.store})", "info")
            return
        self.param.model.objects = models
        with param.parameterized.discard_events(self):
            self.model = model if model in models else models[0]
        self._load_model()

    def __panel__(self):
        return pn.Row(pn.Column(self.controls, width=300), self.main, sizing_mode="stretch_width")

    # ---------------------------------------------------------------------------- state
    @property
    def data(self) -> pd.DataFrame:
        """The rows now plotted: this model's formats of the chosen kinds, drawable for the metric."""
        return self._data

    def selected(self) -> pd.DataFrame:
        """The plotted rows inside the current box/lasso selection (none when nothing is selected)."""
        if self.selection.selection_expr is None or self._data.empty:
            return self._data.iloc[:0]
        return self.selection.filter(self._data)

    def _summary(self, model: str) -> pd.DataFrame:
        if model not in self._summaries:
            self._summaries[model] = with_kind(model_summary(self.store, model))
        return self._summaries[model]

    # -------------------------------------------------------------------------- updates
    @param.depends("model", watch=True)
    def _load_model(self):
        df = self._summary(self.model)
        kinds = ordered_kinds(df)
        self._colors = kind_colors(kinds)
        self.param.kinds.objects = kinds
        with param.parameterized.discard_events(self):
            self.kinds = list(kinds)
        self._refresh()

    @param.depends("metric", "kinds", watch=True)
    def _refresh(self):
        if self.model is None:
            return
        df = self._summary(self.model)
        self._data = plottable(df[df["kind"].isin(self.kinds)], self.metric)
        self.selection.selection_expr = None   # a brush on other data or another axis means nothing
        if self._data.empty:
            why = "no formats of the chosen kinds" if not df.empty else EMPTY_STORE
            self._show_message(f"{self.model}: {why} to plot for {self.metric}", "warning")
        else:
            self.message.visible = False
            self.plot.object = pareto_plot(self._data, self.metric, selection=self.selection,
                                           colors=self._colors)
            self.plot.visible = self.caption.visible = self.table.visible = True
        self._update_table()

    def _update_table(self, *_):
        sel = self.selected()
        self.table.value = selected_table(sel, self.metric)
        self.table.formatters = {"bpw": NumberFormatter(format="0.000"),
                                 self.metric: ScientificFormatter(precision=3) if METRICS[self.metric].log
                                 else NumberFormatter(format="0.0000")}
        n, total = len(sel), len(self._data)
        self.caption.object = (f"**Selected formats: {n} of {total}**" if n else
                               f"**Selected formats:** none yet — box-select points in the plot "
                               f"({total} formats of {self.model}).")

    def _show_message(self, text: str, kind: str):
        self.message.object, self.message.alert_type, self.message.visible = text, kind, True
        self.plot.visible = self.caption.visible = self.table.visible = False
