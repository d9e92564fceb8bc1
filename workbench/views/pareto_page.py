"""The Pareto page: bpw vs error for every format of one model, filters, brushing, drill-down.

Widgets only: the figures come from ``workbench.views.pareto`` (pure functions) and the data
from ``workbench.store`` (a view never queries DuckDB itself).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import duckdb
import holoviews as hv
import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import NumberFormatter, ScientificFormatter

from workbench import store as st
from workbench.views.page import EMPTY_STORE, ModelPage, imatrix_options
from workbench.sources import TENSOR_KINDS, tensor_kind
from workbench.views.pareto import (FORMAT_FILTERS, METRICS, TABLE_COLUMNS, WEIGHTED, filter_formats,
                                    filter_values, frontier_gap, gap_label, kind_colors, ordered_kinds,
                                    pareto_plot, pareto_points, per_tensor_errors, plottable,
                                    selected_table, tensor_cloud, tensors_matching, with_kind)

GAP = "vs_frontier"
FILTER_LABELS = {"family": "Family", "structure": "Single / double", "scale_dtype": "Scale encoding",
                 "bits": "Bits", "block": "Block size", "symmetry": "Symmetric / asymmetric"}


class ParetoPage(ModelPage):
    """bpw vs error for every format of one model: box- or lasso-select points to list them
    below with their distance to the frontier; click a listed format for its per-tensor errors."""

    metric = param.Selector(default="nmse", objects=list(METRICS), doc="Error metric (y axis)")
    imatrix = param.Selector(default="", objects=[""], doc="Importance matrix of the runs shown "
                             "(none: quantized without one)")
    tensor_regex = param.String(default="", doc="Only tensors whose name matches (Python regex)")
    tensor_kinds = param.ListSelector(default=[], objects=[], doc="Only tensors of these kinds")
    family = param.ListSelector(default=[], objects=[])
    structure = param.ListSelector(default=[], objects=[])
    scale_dtype = param.ListSelector(default=[], objects=[])
    bits = param.ListSelector(default=[], objects=[])
    block = param.ListSelector(default=[], objects=[])
    symmetry = param.ListSelector(default=[], objects=[])
    show_tensors = param.Boolean(default=False, doc="Also draw every (tensor, format) point")
    focus = param.String(default="", doc="The format whose per-tensor errors are shown")

    def __init__(self, store: str | Path | None = None, model: str | None = None, notify=None, **params):
        super().__init__(store, **params)
        # The brush: bokeh's own box/lasso/tap selection on the format points, reported as row
        # positions (a Selection1D per drawn plot). The browser fades the unselected points
        # itself, so a brush costs the server one table update and no redraw.
        self.points: hv.Points | None = None
        self.brush: hv.streams.Selection1D | None = None
        self._summaries: dict[tuple, pd.DataFrame] = {}
        self._summary_df = pd.DataFrame()    # this model's formats over the chosen tensors
        self._tensors: list[str] = []        # the chosen tensors
        self._all_tensors: list[str] = []
        self._data = pd.DataFrame()          # what is plotted now (filtered, plottable rows)
        self._colors: dict[str, str] = {}
        self._quiet = False                  # set while several parameters change at once

        self.message = pn.pane.Alert("", alert_type="info", visible=False)
        self.plot = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=480, visible=False)
        self.caption = pn.pane.Markdown("", visible=False, styles={"font-weight": "600"})
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=[*TABLE_COLUMNS, self.metric, GAP]),
            show_index=False, disabled=True, sizing_mode="stretch_width", height=320,
            layout="fit_data_stretch", visible=False, selectable=1)
        self.table.on_click(self._clicked)
        self._table_metric = None
        self.detail_title = pn.pane.Markdown("", visible=False)
        self.detail = pn.pane.HoloViews(None, sizing_mode="stretch_width")
        self.main = pn.Column(self.message, self.plot, self.caption, self.table, self.detail_title,
                              self.detail, sizing_mode="stretch_width")
        self._open(model)
        self.controls = self._controls()

    def _controls(self) -> pn.Column:
        """Widgets last, so they start from the loaded options and values."""
        def buttons(name: str, label: str):   # button groups render no label of their own
            return [pn.pane.Markdown(label, margin=(4, 10, 0, 10), styles={"font-size": "0.85em"}),
                    pn.widgets.CheckButtonGroup.from_param(
                        getattr(self.param, name), name=label, color="primary",
                        variant="outline", sizing_mode="stretch_width", margin=(0, 10, 4, 10))]
        self.filters = pn.Card(*[w for name in FORMAT_FILTERS for w in buttons(name, FILTER_LABELS[name])],
                               title="Formats", collapsed=False, sizing_mode="stretch_width")
        self.tensor_filter = pn.Card(
            pn.widgets.TextInput.from_param(self.param.tensor_regex, name="Tensor name (regex)",
                                            placeholder=r"e.g. layer\.[0-2]\."),
            *buttons("tensor_kinds", "Tensor kind"),
            title="Tensors", collapsed=False, sizing_mode="stretch_width")
        controls = pn.Column(
            pn.widgets.Select.from_param(self.param.model, name="Model"),
            pn.widgets.Select.from_param(self.param.metric, name="Metric"),
            pn.widgets.Select.from_param(self.param.imatrix, name="Importance matrix"),
            self.tensor_filter, self.filters,
            pn.widgets.Checkbox.from_param(self.param.show_tensors, css_classes=["every-point"],
                                           name="Every (tensor, format) point (density when many)"),
            pn.pane.Markdown("Drag on the plot to box-select formats (lasso and tap in the toolbar; "
                             "shift adds to the selection); the table lists them with their distance "
                             "to the frontier. Click a row, or tap a single point, for that format's "
                             "error on each tensor.", styles={"font-size": "0.9em"}),
        )
        if self.model is None:    # nothing to choose from: an empty option list renders oddly
            for widget in controls[:3]:
                widget.disabled = True
            for item in controls[3:]:
                item.visible = False
        return controls

    def _forget(self):
        self._summaries.clear()

    # ---------------------------------------------------------------------------- state
    @property
    def data(self) -> pd.DataFrame:
        """The rows now plotted: this model's formats passing the filters, drawable for the metric,
        with their distance to the frontier (column ``vs_frontier``)."""
        return self._data

    def selected(self) -> pd.DataFrame:
        """The plotted rows inside the current box/lasso selection (none when nothing is selected)."""
        if self.brush is None or not self.brush.index or self.points is None:
            return self._data.iloc[:0]
        rows = self.points.data.iloc[[i for i in self.brush.index if 0 <= i < len(self.points.data)]]
        return self._data.set_index("format").loc[rows["format"]].reset_index()

    def select(self, formats) -> None:
        """Select these formats as a brush would (for scripts and tests)."""
        names = set(formats)
        if self.brush is not None:
            self.brush.event(index=[i for i, f in enumerate(self.points.data["format"]) if f in names])

    @contextlib.contextmanager
    def _batch(self):
        """Change several parameters with one refresh at the end (by the caller)."""
        quiet, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = quiet

    def _summary(self) -> pd.DataFrame:
        every = len(self._tensors) == len(self._all_tensors)
        key = (self.model, self.imatrix, None if every else tuple(self._tensors))
        if key not in self._summaries:
            self._summaries[key] = with_kind(st.summary(
                self.store, self.model, imatrix=self.imatrix, tensors=None if every else self._tensors))
        return self._summaries[key]

    def _set_imatrix_options(self):
        """Runs without an imatrix ("none") and with each imatrix file (by fingerprint); the
        importance-weighted metrics are offered only with an imatrix."""
        options = imatrix_options(self.store, self.model)
        self.param.imatrix.objects = options
        if self.imatrix not in options.values():
            self.imatrix = next(iter(options.values()))
        self._set_metric_options()

    def _set_metric_options(self):
        names = [m for m in METRICS if self.imatrix or m not in WEIGHTED]
        self.param.metric.objects = names
        if self.metric not in names:
            self.metric = "nmse"

    # -------------------------------------------------------------------------- updates
    def _fail(self, what: str, exc: Exception):
        self._data = pd.DataFrame()
        self._show_message(f"{what}: {str(exc).splitlines()[0]}", "danger")

    @param.depends("model", watch=True)
    def _load_model(self):
        if self._quiet or self.model is None:
            return
        try:
            with self._batch():
                self._set_imatrix_options()
                self._all_tensors = st.tensor_names(self.store, self.model)
                kinds = [k for k in TENSOR_KINDS if k in {tensor_kind(t) for t in self._all_tensors}]
                self.param.tensor_kinds.objects = kinds
                self.tensor_kinds = kinds
        except (duckdb.Error, OSError) as exc:
            return self._fail(f"cannot read {self.model} from {self.store}", exc)
        self._load_runs()

    @param.depends("imatrix", watch=True)
    def _load_imatrix(self):
        if self._quiet:
            return
        with self._batch():
            self._set_metric_options()
        self._load_runs()

    @param.depends("tensor_regex", "tensor_kinds", watch=True)
    def _load_runs(self):
        """The tensor subset changed (or the model, or the imatrix): new model-level figures, and
        the format filters offer what they hold (all chosen)."""
        if self._quiet or self.model is None:
            return
        try:
            self._tensors = tensors_matching(self._all_tensors, self.tensor_regex, self.tensor_kinds)
        except ValueError as exc:
            return self._fail("tensor filter", exc)
        if not self._tensors:
            self._data = pd.DataFrame()
            return self._show_message(f"{self.model}: no tensor matches the tensor filter "
                                      f"({len(self._all_tensors)} tensors have results)", "warning")
        try:
            df = self._summary()
        except (duckdb.Error, OSError) as exc:
            return self._fail(f"cannot read {self.model} from {self.store}", exc)
        self._colors = kind_colors(ordered_kinds(df))
        with self._batch():
            for name, values in filter_values(df).items():
                before, current = list(self.param[name].objects or []), list(getattr(self, name))
                self.param[name].objects = values
                # a filter the user narrowed stays narrowed; one that allowed everything (or
                # whose choices are all gone) allows everything again
                kept = [v for v in current if v in values]
                setattr(self, name, values if not kept or set(current) >= set(before) else kept)
        self._summary_df = df
        self._refresh()

    @param.depends("metric", "show_tensors", *FORMAT_FILTERS, watch=True)
    def _refresh(self):
        if self.model is None or self._quiet or self._summary_df.empty and not self._tensors:
            return
        df = self._summary_df
        chosen = {name: getattr(self, name) for name in FORMAT_FILTERS}
        data = plottable(filter_formats(df, **chosen), self.metric)
        self._data = data.assign(**{GAP: frontier_gap(data, self.metric)}) if len(data) else data
        self._show_focus("")
        if self._data.empty:
            self._new_brush(None)
            why = "no formats pass the format filters" if not df.empty else EMPTY_STORE
            self._show_message(f"{self.model}: {why} to plot for {self.metric}", "warning")
        else:
            self.message.visible = False
            underlay = self._tensor_cloud() if self.show_tensors else None
            self._new_brush(pareto_points(self._data, self.metric, self._colors))
            self.plot.object = pareto_plot(self._data, self.metric, points=self.points,
                                           colors=self._colors, underlay=underlay)
            self.plot.visible = self.caption.visible = self.table.visible = self.detail_title.visible = True
        self._update_table()

    def _new_brush(self, points: hv.Points | None):
        """A fresh selection stream on the points about to be drawn: a brush on other data or
        another axis means nothing, so a redraw starts unselected."""
        if self.brush is not None:
            self.brush.source = None
            self.brush.clear()
        self.points = points
        self.brush = hv.streams.Selection1D(source=points) if points is not None else None
        if self.brush is not None:
            self.brush.param.watch(self._brushed, "index")

    def _brushed(self, event):
        self._update_table()
        if len(event.new) == 1:     # one point (a tap): straight to its per-tensor errors
            self.focus = str(self.points.data["format"].iloc[event.new[0]])

    def _tensor_cloud(self) -> hv.Element:
        rows = st.tensor_results(self.store, self.model, self.imatrix, formats=list(self._data["format"]),
                                 tensors=self._tensors)
        return tensor_cloud(rows, self.metric)

    def _update_table(self, *_):
        sel = self.selected()
        table = selected_table(sel, self.metric)
        if GAP in sel.columns:
            table[GAP] = sel.set_index("format").loc[table["format"], GAP].to_numpy()
        if self._table_metric != self.metric:   # new column set-up only with a new metric: it
            self._table_metric = self.metric      # makes the browser rebuild the whole table
            log = METRICS[self.metric].log
            self.table.formatters = {"bpw": NumberFormatter(format="0.000"),
                                     self.metric: ScientificFormatter(precision=3, power_limit_low=0)
                                     if log else NumberFormatter(format="0.0000"),
                                     GAP: NumberFormatter(format="0.000")}
            self.table.titles = {GAP: gap_label(self.metric)}
        self.table.value = table
        n, total = len(sel), len(self._data)
        self.caption.object = (f"Selected formats: {n} of {total} — click one for its per-tensor errors" if n else
                               f"Selected formats: none yet. Box-select points in the plot "
                               f"({total} formats of {self.model}).")

    # ----------------------------------------------------------------------- drill-down
    def _clicked(self, event):
        value = self.table.value
        if 0 <= event.row < len(value):
            self.focus = str(value["format"].iloc[event.row])

    @param.depends("focus", watch=True)
    def _focus_changed(self):
        self._show_focus(self.focus)

    def _show_focus(self, name: str):
        if name != self.focus:
            self.focus = name    # re-enters through the watcher with the same name
            return
        if not name:
            self.detail.object = None
            self.detail_title.object = "#### Per-tensor errors: click a format in the table"
            return
        try:
            rows = st.tensor_results(self.store, self.model, self.imatrix, formats=[name], tensors=self._tensors)
        except (duckdb.Error, OSError) as exc:
            return self._fail(f"cannot read {name} from {self.store}", exc)
        shown = plottable(rows, self.metric)
        fallback = rows["applied_type"].notna() & (rows["applied_type"] != rows["format"])
        note = (f"; {int(fallback.sum())} written as {', '.join(sorted(set(rows.loc[fallback, 'applied_type'])))}"
                if fallback.any() else "")
        self.detail_title.object = (f"#### {name}: {self.metric} on each tensor ({len(shown)} of "
                                    f"{len(rows)} tensors{note})")
        self.detail.object = per_tensor_errors(rows, self.metric, title=f"{name} per tensor")

    def _show_message(self, text: str, kind: str):
        self.message.object, self.message.alert_type, self.message.visible = text, kind, True
        self.plot.visible = self.caption.visible = self.table.visible = self.detail_title.visible = False
        self.detail.object = None
