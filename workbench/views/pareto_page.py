"""The Pareto page: bpw vs error for every format of one model, filters, brushing, drill-down.

For a model with evaluations (``workbench eval``: the ``model_eval`` table), the metric selector
also offers the model-level metrics of the formats evaluated on the whole model; with one chosen,
the chart holds both frontiers (model-level, and the same formats' weight error on a second axis)
and a note names the formats where they disagree. Such a model opens on the weight metric that
ranks its model-level metric best within equal-bpw bands (``truth.recommend``).

A bpw budget names the best format at or under it by the chosen metric, the runner-up and the
llama.cpp type nearest in bpw (``pareto.best_at_budget``). When served, the view (model, metric,
importance matrix, tensor subset, format filters, budget, the format drilled into) is kept in the
URL's query string (``pn.state.location.sync``), so a link opens the same view.

Widgets only: the figures come from ``workbench.views.pareto`` (pure functions) and the data
from ``workbench.store`` / ``workbench.eval_store`` (a view never queries DuckDB itself).
"""
from __future__ import annotations

import ast
import contextlib
import json
from pathlib import Path
from urllib.parse import parse_qsl

import duckdb
import holoviews as hv
import pandas as pd
import panel as pn
import param

from workbench import eval_store, truth
from workbench import store as st
from workbench.views.page import EMPTY_STORE, ModelPage, imatrix_options
from workbench.sources import TENSOR_KINDS, tensor_kind
from workbench.views.pareto import (BPW_SIG, DEFAULT_BUDGET, FORMAT_FILTERS, METRICS, MODEL_METRICS,
                                    TABLE_COLUMNS, WEIGHT_ERROR, WEIGHTED, best_at_budget,
                                    budget_readout, metric_name, disagreement_note, filter_formats, filter_values,
                                    frontier_gap, gap_label, kind_colors, model_level_plot, model_level_rows,
                                    ordered_kinds, pareto_plot, pareto_points, per_tensor_errors, place_labels,
                                    plottable, plotted, readable_cell, selected_table, tensor_cloud,
                                    tensors_matching, with_kind, identical_groups, merge_identical,
                                    native_tensors, tapped_point, COMPARE_MAX, tensor_wins,
                                    compare_tensors_plot)
from workbench.formats import GGML_TYPES

GAP = "vs_frontier"
# the sweep's metric for each weight metric of model_eval rows (w_bias, w_actmean and w_sens have
# no per-tensor counterpart in the results table)
SWEEP_METRIC = {"w_nmse": "nmse", "w_wnmse": "wnmse", "w_max_err": "max_abs_err", "w_bnl": "bnl"}
FILTER_LABELS = {"family": "Family", "structure": "Single / double", "scale_encoding": "Scale encoding",
                 "bits": "Bits", "block": "Block size", "symmetry": "Symmetric / asymmetric"}
# the Family buttons: each family's ``LABEL`` ('uniform grid' holds single- and double-level
# formats, the legend's 'single …' and 'double …' kinds; 'llama.cpp' is the ggml family)


def family_label(family: str) -> str:
    """The Family filter's word for a family: its plug-in's ``LABEL``, else its name."""
    from workbench.families import trait
    return trait(family, "LABEL", family)


# the view in the URL's query string, applied in this order (later ones depend on earlier ones)
URL_PARAMS = ("model", "imatrix", "metric", "tensor_regex", "tensor_kinds", "native_only", *FORMAT_FILTERS,
              "show_tensors",
              "budget", "selection", "focus")


class ParetoPage(ModelPage):
    """bpw vs error for every format of one model: box- or lasso-select points to list them
    below with their distance to the frontier; click a listed format for its per-tensor errors."""

    metric = param.Selector(default="nmse", objects=list(METRICS), doc="Error metric (y axis)")
    imatrix = param.Selector(default="", objects=[""], doc="Importance matrix of the runs shown "
                             "(none: quantized without one)")
    tensor_regex = param.String(default="", doc="Only tensors whose name matches (Python regex)")
    tensor_kinds = param.ListSelector(default=[], objects=[], doc="Only tensors of these kinds")
    native_only = param.Boolean(default=False, doc="Only the tensors every llama.cpp type encodes "
                                "natively (no fallback type, none skipped): every format on those")
    family = param.ListSelector(default=[], objects=[])
    structure = param.ListSelector(default=[], objects=[])
    scale_encoding = param.ListSelector(default=[], objects=[])
    bits = param.ListSelector(default=[], objects=[])
    block = param.ListSelector(default=[], objects=[])
    symmetry = param.ListSelector(default=[], objects=[])
    show_tensors = param.Boolean(default=False, doc="Also draw every (tensor, format) point")
    budget = param.Number(default=DEFAULT_BUDGET, bounds=(0, 64), softbounds=(1, 17), step=0.125,
                          doc="bpw budget: the best format at or under it is named")
    focus = param.String(default="", doc="The format whose per-tensor errors are shown")
    selection = param.List(default=[], item_type=str, doc="The formats box-, lasso- or tap-selected")

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
        self._same: list[list[str]] = []     # formats with identical results on the chosen tensors
        self._all_tensors: list[str] = []
        self._data = pd.DataFrame()          # what is plotted now (filtered, plottable rows)
        self._colors: dict[str, str] = {}
        self._quiet = False                  # set while several parameters change at once
        self._evals = pd.DataFrame()         # this model's model_eval rows
        self._model_rows = pd.DataFrame()    # its whole-model evaluations as Pareto rows
        self._defaulted: str | None = None   # the model whose recommended metric was applied
        self._dropped_labels: list[str] = []  # llama.cpp names with no room beside their point
        self._pending_selection: list[str] | None = None   # from the URL, for the next drawing

        self.message = pn.pane.Alert("", alert_type="info", visible=False)
        self.recommendation = pn.pane.Markdown("", visible=False, css_classes=["recommended-metric"],
                                               sizing_mode="stretch_width", margin=(0, 10))
        self.frontier_note = pn.pane.Alert("", alert_type="warning", visible=False,
                                           css_classes=["frontier-note"], sizing_mode="stretch_width")
        self.readout = pn.pane.Markdown("", css_classes=["budget-readout"], sizing_mode="stretch_width",
                                        margin=(0, 10))
        # The plot panes are never hidden themselves: a HoloViews pane passes ``visible`` on to
        # its bokeh pane, which then fails to copy the figure's stylesheets back (a TypeError in
        # the server log). ``results`` holds them and is what an empty view hides.
        self.plot = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=480)
        self.labels_note = pn.pane.Markdown("", visible=False, css_classes=["labels-note"],
                                            styles={"font-size": "0.85em"}, margin=(0, 10))
        self.caption = pn.pane.Markdown("", styles={"font-weight": "600"}, css_classes=["selection-caption"])
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=[*TABLE_COLUMNS, self.metric, GAP]),
            show_index=False, disabled=True, sizing_mode="stretch_width", height=320,
            layout="fit_data_stretch", selectable=1)
        self.table.on_click(self._clicked)
        self._table_metric = None
        self.detail_title = pn.pane.Markdown("")
        self.detail = pn.pane.HoloViews(None, sizing_mode="stretch_width")
        self.compare_title = pn.pane.Markdown("", css_classes=["compare-title"])
        self.compare = pn.pane.HoloViews(None, sizing_mode="stretch_width", linked_axes=False)
        self.results = pn.Column(self.readout, self.plot, self.labels_note, self.caption, self.table,
                                 self.compare_title, self.compare, self.detail_title, self.detail,
                                 visible=False, sizing_mode="stretch_width")
        self.main = pn.Column(self.message, self.recommendation, self.frontier_note, self.results,
                              sizing_mode="stretch_width")
        self._open(model)
        self.controls = self._controls()
        self._sync_url()

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
            pn.widgets.Checkbox.from_param(self.param.native_only, css_classes=["native-only"],
                                           name="Native tensors only: those every llama.cpp type encodes "
                                                "without a fallback (all formats on them)"),
            title="Tensors", collapsed=False, sizing_mode="stretch_width")
        controls = pn.Column(
            pn.widgets.Select.from_param(self.param.model, name="Model"),
            pn.widgets.Select.from_param(self.param.metric, name="Metric"),
            pn.widgets.Select.from_param(self.param.imatrix, name="Importance matrix"),
            pn.widgets.FloatInput.from_param(self.param.budget, name="bpw budget (best at or under it)",
                                             css_classes=["bpw-budget"], format="0.000"),
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
        self._evals = self._model_rows = pd.DataFrame()

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

    def _per_tensor(self, tensors: list[str]) -> pd.DataFrame:
        """Every format's results on ``tensors`` (for the native-tensor subset and the identical
        formats); the store's query cache answers it once per store version for all sessions."""
        every = len(tensors) == len(self._all_tensors)
        return st.tensor_results(self.store, self.model, self.imatrix, tensors=None if every else tensors)

    def _ggml_skips(self) -> set[str]:
        """Tensors a llama.cpp type was skipped on (NVFP4 where llama-quantize has no fallback)."""
        sk = st.skips(self.store)
        if sk.empty:
            return set()
        sk = sk[(sk["model"] == self.model) & sk["format"].isin(list(GGML_TYPES))]
        return set(sk["tensor"])

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
        """The sweep's metrics (importance-weighted ones with an imatrix), then the model-level
        metrics the model's whole-model evaluations hold."""
        names = {m: m for m in METRICS if self.imatrix or m not in WEIGHTED}
        rows = self._model_rows
        names.update({f"{m} (model-level)": m for m in MODEL_METRICS
                      if m in rows.columns and pd.to_numeric(rows[m], errors="coerce").notna().any()})
        self.param.metric.objects = names
        if self.metric not in names.values():
            self.metric = "nmse"

    def _load_evals(self):
        """This model's evaluations (none: the page is as without them)."""
        self._evals = eval_store.evals(self.store, model=self.model)
        self._model_rows = model_level_rows(truth.whole_model(self._evals, self.model))

    def _apply_recommendation(self):
        """Once per model with evaluations: open on the sweep metric that ranks the model-level
        metric best within equal-bpw bands, and say so on the page."""
        if self._model_rows.empty:
            self.recommendation.visible = False
            return
        table = truth.correlations(self._evals, self.model)
        target = truth.MODEL_METRIC.get(str(self._evals["kind"].iloc[0]), "the model-level metric")
        offered = set(self.param.metric.objects)
        usable = table[[SWEEP_METRIC.get(w) in offered for w in table["weight_metric"]]]
        best, overall = truth.recommend(usable), truth.recommend(table)
        n = len(self._model_rows)
        if best is None:
            self.recommendation.object = (f"{self.model}: {n} formats evaluated on the whole model, too few "
                                          f"per bpw band to recommend a weight metric; the default stays nmse.")
        else:
            row = usable.set_index("weight_metric").loc[best]
            text = (f"**Default metric: {SWEEP_METRIC[best]}**, recommended for {self.model}: of the sweep's "
                    f"metrics its weight form `{best}` ranks the model-level {target} best within equal-bpw "
                    f"bands (Spearman {row['within_band']:+.2f}; {row['overall']:+.2f} overall, over {n} formats "
                    f"evaluated on the whole model; the Truth page has the table).")
            if overall not in (None, best):
                o = table.set_index("weight_metric").loc[overall]
                why = (f"choose an importance matrix to plot {SWEEP_METRIC[overall]}" if overall in SWEEP_METRIC
                       else "a sweep does not measure it per tensor")
                text += f" `{overall}` ranks it better ({o['within_band']:+.2f}): {why}."
            self.recommendation.object = text
            if self._defaulted != self.model:
                self.metric = SWEEP_METRIC[best]
        self._defaulted = self.model
        self.recommendation.visible = True

    @property
    def model_level(self) -> bool:
        """Whether the chosen metric is a model-level one (the evaluated formats are plotted)."""
        return self.metric in MODEL_METRICS

    # -------------------------------------------------------------------------- updates
    @property
    def column(self) -> str:
        """The column plotted for the chosen metric (``cosine_distance``, 1 − cosine, for cosine)."""
        return plotted(self.metric)

    def _fail(self, what: str, exc: Exception):
        self._data = pd.DataFrame()
        self._show_message(f"{what}: {str(exc).splitlines()[0]}", "danger")

    @param.depends("model", watch=True)
    def _load_model(self):
        if self._quiet or self.model is None:
            return
        try:
            with self._batch():
                self._load_evals()
                self._set_imatrix_options()
                self._apply_recommendation()
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

    @param.depends("tensor_regex", "tensor_kinds", "native_only", watch=True)
    def _load_runs(self):
        """The tensor subset changed (or the model, or the imatrix): new model-level figures, and
        the format filters offer what they hold (all chosen)."""
        if self._quiet or self.model is None:
            return
        # until the tensor subset is read again, nothing is drawn (a metric or format filter
        # change must not bring back figures of the previous subset under the message)
        self._summary_df, self._tensors = pd.DataFrame(), []
        try:
            tensors = tensors_matching(self._all_tensors, self.tensor_regex, self.tensor_kinds)
        except ValueError as exc:
            return self._fail("tensor filter", exc)
        if not tensors:
            self._data = pd.DataFrame()
            return self._show_message(f"{self.model}: no tensor matches the tensor filter "
                                      f"({len(self._all_tensors)} tensors have results)", "warning")
        try:
            rows = self._per_tensor(tensors)
            if self.native_only:
                matched = len(tensors)
                skipped = self._ggml_skips()
                tensors = native_tensors(rows, skipped)
                if not tensors:
                    self._data = pd.DataFrame()
                    return self._show_message(
                        f"{self.model}: none of the {matched} tensors the tensor filter keeps is encoded "
                        "natively by every llama.cpp type (untick 'native tensors only')", "warning")
                rows = rows[rows["tensor"].isin(tensors)]
            self._same = identical_groups(rows)
            self._tensors = tensors
            df = self._summary()
        except (duckdb.Error, OSError) as exc:
            self._tensors = []
            return self._fail(f"cannot read {self.model} from {self.store}", exc)
        both = pd.concat([df, self._model_rows], ignore_index=True) if len(self._model_rows) else df
        self._colors = kind_colors(ordered_kinds(both))
        with self._batch():
            for name, values in filter_values(both).items():
                before, current = list(self.param[name].objects or []), list(getattr(self, name))
                self.param[name].objects = ({family_label(v): v for v in values} if name == "family"
                                            else values)
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
        df = self._model_rows if self.model_level else self._summary_df
        chosen = {name: getattr(self, name) for name in FORMAT_FILTERS}
        col = self.column
        data = plottable(merge_identical(filter_formats(df, **chosen), self._same), col)
        self._data = data.assign(**{GAP: frontier_gap(data, col)}) if len(data) else data
        self._show_focus("")
        if self._data.empty:
            self._new_brush(None)
            off = [FILTER_LABELS[n] for n in FORMAT_FILTERS if not chosen[n] and self.param[n].objects]
            why = ("no formats pass the format filters" + (f" (nothing chosen in {', '.join(off)})" if off else "")
                   if not df.empty else EMPTY_STORE)
            self._show_message(f"{self.model}: {why} to plot for {self.metric}", "warning")
            return
        self.message.visible = False
        points = pareto_points(self._data, col, self._colors)
        restore, self._pending_selection = self._pending_selection, None
        picked = [i for i, f in enumerate(points.data["format"]) if f in set(restore or ())]
        if picked:     # drawn selected (the browser's own selection), and the stream told so
            points = points.opts(selected=picked)
        self._new_brush(points)
        if self.model_level:
            self.plot.object = model_level_plot(self._data, col, points=self.points, colors=self._colors)
            self.frontier_note.object = self._frontier_note()
        else:
            underlay = self._tensor_cloud() if self.show_tensors else None
            self.plot.object = pareto_plot(self._data, col, points=self.points, colors=self._colors,
                                           underlay=underlay)
        _, self._dropped_labels = place_labels(self._data, col)
        self.labels_note.object = (f"No room for the label of {', '.join(self._dropped_labels)}: hover the "
                                   f"point{'s' if len(self._dropped_labels) > 1 else ''} for the name."
                                   if self._dropped_labels else "")
        self.labels_note.visible = bool(self._dropped_labels)
        self.frontier_note.visible = self.model_level
        self.results.visible = True
        if picked:
            self.brush.event(index=picked)      # → _brushed: the table, and the selection kept
        else:
            self.selection = []
            self._update_table()
        self._show_readout()

    @param.depends("budget", watch=True)
    def _show_readout(self):
        """The best format at or under the budget, the runner-up and the nearest llama.cpp type
        (among the plotted formats); the plot is not redrawn, so a brush stays."""
        if self._data.empty:
            self.readout.object = ""
            return
        self.readout.object = budget_readout(best_at_budget(self._data, self.column, self.budget))

    def _frontier_note(self) -> str:
        """Where the plotted formats' model-level and weight-error frontiers disagree."""
        ev = self._evals[self._evals["format"].isin(self._data["format"])]
        note = disagreement_note(truth.frontier_disagreements(ev, self.model, self.metric, WEIGHT_ERROR),
                                 self.metric, WEIGHT_ERROR)
        return (f"{note} Circles and the solid line: {self.metric} of the {len(self._data)} formats evaluated "
                f"on the whole model (left axis; the tensor filter does not apply). Hollow black diamonds and the "
                f"dashed line: the same formats' weight error {WEIGHT_ERROR} (right axis).")

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
        self.selection = [str(f) for f in self.points.data["format"].iloc[
            [i for i in event.new if 0 <= i < len(self.points.data)]]]
        self._update_table()
        # one point, or points all at one spot (what a tap hits where formats sit a few pixels
        # apart, as Q8_0 beside Q8s32): straight to the top-drawn one's per-tensor errors
        top = tapped_point(self.points.data, self.column, event.new)
        if top is not None:
            self.focus = top

    def _tensor_cloud(self) -> hv.Element:
        rows = st.tensor_results(self.store, self.model, self.imatrix, formats=list(self._data["format"]),
                                 tensors=self._tensors)
        return tensor_cloud(rows, self.metric)

    def _update_table(self, *_):
        sel = self.selected()
        col = self.column
        table = selected_table(sel, col, extra=(WEIGHT_ERROR,) if self.model_level else ())
        if "same_as" in table.columns and not self._same:     # shown only where some format has a twin
            table = table.drop(columns="same_as")
        if GAP in sel.columns:
            table[GAP] = sel.set_index("format").loc[table["format"], GAP].to_numpy()
        if self._table_metric != col:   # new column set-up only with a new metric: it
            self._table_metric = col      # makes the browser rebuild the whole table
            # every number to 4 significant digits (bpw to 5), no e-notation: pareto.readable
            self.table.formatters = {"bpw": readable_cell(BPW_SIG), col: readable_cell(),
                                     WEIGHT_ERROR: readable_cell(), GAP: readable_cell()}
            self.table.titles = {GAP: gap_label(col), **({col: "1 − cosine"} if col != self.metric else {})}
        self.table.value = table
        self._show_compare(list(table["format"]))
        n, total = len(sel), len(self._data)
        self.caption.object = (f"Selected formats: {n} of {total} — click one for its per-tensor errors" if n else
                               f"Selected formats: none yet. Box-select points in the plot "
                               f"({total} formats of {self.model}).")

    def _show_compare(self, formats: list[str]):
        """The selected formats side by side on each tensor, when 2 to COMPARE_MAX are selected
        (a wider brush would draw a cloud, not a comparison): one line otherwise."""
        if not 2 <= len(formats) <= COMPARE_MAX:
            self.compare.object = None
            self.compare_title.object = (f"#### Tensor by tensor: select 2 to {COMPARE_MAX} formats to compare them "
                                         f"on each tensor" + (f" ({len(formats)} selected)" if formats else ""))
            return
        metric = self.column if self.metric in METRICS else "nmse"   # per tensor: the weight error
        try:
            rows = st.tensor_results(self.store, self.model, self.imatrix, formats=formats, tensors=self._tensors)
        except (duckdb.Error, OSError) as exc:
            return self._fail(f"cannot read {self.model} from {self.store}", exc)
        if rows.empty:
            self.compare.object = None
            self.compare_title.object = "#### Tensor by tensor: no sweep results for these formats (evaluated only)"
            return
        wins = tensor_wins(rows, formats, metric)
        best = wins.sort_values("wins", ascending=False, kind="stable").iloc[0]
        self.compare_title.object = (f"#### Tensor by tensor: {metric_name(metric)} of {len(formats)} formats on "
                                     f"{int(best['of'])} tensors — {best['format']} is best on "
                                     f"{int(best['wins'])} of them")
        self.compare.object = compare_tensors_plot(rows, formats, metric)

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
        metric = self.column if self.metric in METRICS else "nmse"   # per tensor: the weight error
        try:
            rows = st.tensor_results(self.store, self.model, self.imatrix, formats=[name], tensors=self._tensors)
        except (duckdb.Error, OSError) as exc:
            return self._fail(f"cannot read {name} from {self.store}", exc)
        if rows.empty:      # evaluated on the model, never swept
            self.detail.object = None
            self.detail_title.object = f"#### {name}: no sweep results for this format (evaluated only)"
            return
        shown = plottable(rows, metric)
        fallback = rows["applied_type"].notna() & (rows["applied_type"] != rows["format"])
        note = (f"; {int(fallback.sum())} written as {', '.join(sorted(set(rows.loc[fallback, 'applied_type'])))}"
                if fallback.any() else "")
        self.detail_title.object = (f"#### {name}: {metric_name(metric)} on each tensor ({len(shown)} of "
                                    f"{len(rows)} tensors{note})")
        self.detail.object = per_tensor_errors(rows, metric, title=f"{name} per tensor")

    def _show_message(self, text: str, kind: str):
        """One line instead of the figures: the plot, readout, caption and table go (hidden with
        their container, and emptied, so that nothing stale is left to come back)."""
        self.message.object, self.message.alert_type, self.message.visible = text, kind, True
        self.results.visible = False
        self.frontier_note.visible = False
        self.readout.object = self.caption.object = ""
        self.selection = []
        self.detail.object = None

    # ------------------------------------------------------------------------- the URL
    def _sync_url(self):
        """When served: the view in the query string, both ways. The link's values are applied
        first, in URL_PARAMS order (a model's options come before the filters over them), then
        ``pn.state.location.sync`` keeps the URL following every change."""
        location = pn.state.location
        if location is None or self.model is None:
            return
        query = dict(parse_qsl(location.search.lstrip("?"), keep_blank_values=True))
        values, ignored = {}, []
        for name in URL_PARAMS:
            if name in query:
                try:
                    values[name] = self._from_url(name, query[name])
                except ValueError:
                    ignored.append(name)
        def apply(names) -> bool:
            changed = False
            for name in names:
                if name in values and values[name] != getattr(self, name):
                    try:
                        setattr(self, name, values[name])
                        changed = True
                    except (ValueError, TypeError):
                        ignored.append(name)
            return changed
        # a plain link (no view in it) costs nothing more: the page is drawn once, as built
        apply(["model"])
        with self._batch():
            subset = apply(["imatrix"])
            if subset:
                self._set_metric_options()
            subset = apply(["metric", "tensor_regex", "tensor_kinds", "native_only"]) or subset
        if subset:
            self._load_runs()
        with self._batch():
            drawn = apply([*FORMAT_FILTERS, "show_tensors"])
        if drawn or values.get("selection"):
            self._pending_selection = values.get("selection")
            self._refresh()
            self._pending_selection = None
        apply(["budget", "focus"])
        location.sync(self, {name: name for name in URL_PARAMS}, on_error=lambda _: None)
        if ignored:
            note = f"From the link, not applied (not in this store): {', '.join(sorted(set(ignored)))}."
            self.recommendation.object = (self.recommendation.object + "\n\n" + note
                                          if self.recommendation.visible else note)
            self.recommendation.visible = True

    def _from_url(self, name: str, text: str):
        """A parameter's value from its query-string text (as ``location.sync`` writes it)."""
        p = self.param[name]
        if isinstance(p, (param.ListSelector, param.List)):
            # JSON as sync writes a change; a Python literal as Location.update_query re-encodes
            # the keys it did not change (["a"] comes back as ['a'])
            if not text.startswith("["):
                return [v for v in text.split(",") if v]
            try:
                value = json.loads(text)
            except ValueError:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise ValueError(name) from None
            if not isinstance(value, list):
                raise ValueError(name)
            return value
        if isinstance(p, param.Boolean):
            return text.lower() in ("true", "1", "yes")
        if isinstance(p, param.Number):
            return float(text)
        return text
