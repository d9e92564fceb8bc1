"""Panel pages: widgets wired to the pure plot functions; the store is read through
``workbench.store`` only (a view never queries DuckDB itself)."""
from __future__ import annotations

from pathlib import Path

import duckdb
import holoviews as hv
import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import NumberFormatter, ScientificFormatter

from workbench import store as st
from workbench.views.pareto import (METRICS, TABLE_COLUMNS, WEIGHTED, kind_colors, ordered_kinds,
                                    pareto_plot, plottable, selected_table, with_kind)

EMPTY_STORE = "no results yet: run `workbench sweep`"


class ParetoPage(pn.viewable.Viewer):
    """bpw vs error for every format of one model: box-select points to list them below."""

    model = param.Selector(default=None, objects=[], doc="Model whose results are shown")
    metric = param.Selector(default="nmse", objects=list(METRICS), doc="Error metric (y axis)")
    kinds = param.ListSelector(default=[], objects=[], doc="Families and scale encodings shown")
    imatrix = param.Selector(default="", objects=[""], doc="Importance matrix of the runs shown "
                             "(none: quantized without one)")

    def __init__(self, store: str | Path | None = None, model: str | None = None, notify=None, **params):
        super().__init__(**params)
        self.store = Path(store) if store else st.default_store()
        # One link_selections per page, i.e. per session: brushing never leaks between users.
        self.selection = hv.link_selections.instance()
        self._summaries: dict[str, pd.DataFrame] = {}
        self._data = pd.DataFrame()          # what is plotted now (filtered, plottable rows)
        self._colors: dict[str, str] = {}

        self.message = pn.pane.Alert("", alert_type="info", visible=False)
        self.plot = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=480, visible=False)
        self.caption = pn.pane.Markdown("", visible=False, styles={"font-weight": "600"})
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=[*TABLE_COLUMNS, self.metric]),
            show_index=False, disabled=True, sizing_mode="stretch_width", height=320,
            layout="fit_data_stretch", visible=False)
        self.main = pn.Column(self.message, self.plot, self.caption, self.table,
                              sizing_mode="stretch_width")
        self.selection.param.watch(self._update_table, "selection_expr")
        self._loading = False
        self._open(model)
        # Widgets last, so they start from the loaded options and values.
        self.controls = pn.Column(
            pn.widgets.Select.from_param(self.param.model, name="Model"),
            pn.widgets.Select.from_param(self.param.metric, name="Metric"),
            pn.widgets.Select.from_param(self.param.imatrix, name="Importance matrix"),
            pn.pane.Markdown("**Family / scale encoding**", margin=(10, 10, 0, 10)),
            pn.widgets.CheckBoxGroup.from_param(self.param.kinds, inline=False),
            pn.pane.Markdown("Drag on the plot to box-select formats (shift-drag adds to the "
                             "selection); the table lists them.", styles={"font-size": "0.9em"}),
        )
        if self.model is None:    # nothing to choose from: an empty option list renders oddly
            for widget in self.controls[:3]:
                widget.disabled = True
            for item in self.controls[3:]:
                item.visible = False

    def _open(self, model: str | None):
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
        self.model = model if model in models else models[0]   # → _load_model

    def reload(self):
        """Re-read the store (a sweep or an import changed it), keeping the model if it is still there."""
        self._summaries.clear()
        model = self.model
        self.model = None
        self._open(model)
        if self.model == model and model is not None:   # unchanged value: no watcher fired
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
        key = (model, self.imatrix)
        if key not in self._summaries:
            self._summaries[key] = with_kind(st.summary(self.store, model, imatrix=self.imatrix))
        return self._summaries[key]

    def _set_imatrix_options(self, model: str):
        """Runs without an imatrix ("none") and with each imatrix file (by fingerprint); the
        importance-weighted metrics are offered only with an imatrix."""
        names = st.imatrices(self.store, model)
        fps = list(names)
        self.param.imatrix.objects = {(n if fp == "" else f"{n} ({fp[:8]})"): fp for fp, n in names.items()}
        if self.imatrix not in fps:
            self.imatrix = fps[0]
        self._set_metric_options()

    def _set_metric_options(self):
        names = [m for m in METRICS if self.imatrix or m not in WEIGHTED]
        self.param.metric.objects = names
        if self.metric not in names:
            self.metric = "nmse"

    # -------------------------------------------------------------------------- updates
    @param.depends("model", watch=True)
    def _load_model(self):
        self._loading = True
        try:
            self._set_imatrix_options(self.model)
        except (duckdb.Error, OSError):
            pass
        finally:
            self._loading = False
        self._load_runs()

    @param.depends("imatrix", watch=True)
    def _load_imatrix(self):
        if self._loading:
            return
        self._loading = True
        try:
            self._set_metric_options()
        finally:
            self._loading = False
        self._load_runs()

    def _load_runs(self):
        try:
            df = self._summary(self.model)
        except (duckdb.Error, OSError) as exc:
            self._data = pd.DataFrame()
            self._show_message(f"cannot read {self.model} from {self.store}: {str(exc).splitlines()[0]}",
                               "danger")
            return
        kinds = ordered_kinds(df)
        self._colors = kind_colors(kinds)
        self.param.kinds.objects = kinds
        self._loading = True        # one refresh for the new model, not one per parameter
        try:
            self.kinds = list(kinds)
        finally:
            self._loading = False
        self._refresh()

    @param.depends("metric", "kinds", watch=True)
    def _refresh(self):
        if self.model is None or self._loading:
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
                                 self.metric: ScientificFormatter(precision=3, power_limit_low=0)
                                 if METRICS[self.metric].log
                                 else NumberFormatter(format="0.0000")}
        n, total = len(sel), len(self._data)
        self.caption.object = (f"Selected formats: {n} of {total}" if n else
                               f"Selected formats: none yet. Box-select points in the plot "
                               f"({total} formats of {self.model}).")

    def _show_message(self, text: str, kind: str):
        self.message.object, self.message.alert_type, self.message.visible = text, kind, True
        self.plot.visible = self.caption.visible = self.table.visible = False
