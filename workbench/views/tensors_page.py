"""The Tensors page: which tensors are hard to quantize, and why.

A heatmap of tensor × format error relative to the best format at the same bpw, beside each
tensor's statistics (rows aligned); a click on a tensor (a heatmap cell or its statistics)
shows its weight histogram and the reconstruction error of a chosen format. Results come from
the store through ``workbench.store``; the weights (statistics, histograms) from the model file
(``sources.find_model``), when it is on this machine.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path

import duckdb
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from workbench import store as st
from workbench.views.page import EMPTY_STORE, ModelPage, imatrix_options  # noqa: F401  (EMPTY_STORE: re-exported)
from workbench.sources import TENSOR_KINDS, SourceError, data_dir, find_model, tensor_kind
from workbench.views.pareto import WEIGHTED, ordered_kinds
from workbench.views.tensors import (DEFAULT_BLOCK, DEFAULT_FORMAT_KINDS, LOWER_IS_BETTER, STAT_COLUMNS,
                                     default_error_format, error_heatmap, error_histogram,
                                     format_catalog, pick_formats, pick_tensors, reconstruct,
                                     relative_error_table, stats_plot, tensor_stats,
                                     weight_histogram)

NEEDS_MODEL = "statistics and histograms need the model file"
ROW_HEIGHT = 22      # pixels per tensor row, in the heatmap and the statistics alike
ANY_BLOCK = 0        # the block selector's "any"
NO_TENSOR = ""
BPW_TOLERANCE = 0.05   # "the same bpw": within ±5% (relative_error_table)

# tensor_stats per model file, shared by all sessions: a pass over the weights is paid once.
_STATS: dict[tuple[str, str], dict[str, dict]] = {}
_STATS_LOCK = threading.Lock()


def cached_stats(source, names: list[str]) -> pd.DataFrame:
    """``tensor_stats`` of the tensors ``names`` of ``source`` (a ModelSource), computed once
    per model file and process; names the file does not have are left out."""
    key = (str(source.path), source.fingerprint)
    with _STATS_LOCK:
        known = _STATS.setdefault(key, {})
        todo = set(names) - set(known)
        if todo:
            for t in source.weights():
                if t.name in todo:
                    known[t.name] = tensor_stats(t.load())
        rows = [dict(name=n, **known[n]) for n in names if n in known]
    return pd.DataFrame(rows, columns=["name", *STAT_COLUMNS])


def natural_key(name: str) -> tuple:
    """layer.2 before layer.10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


class TensorsPage(ModelPage):
    """Per-tensor error relative to the best format at the same bpw, with the statistics that
    explain it; click a tensor for its weight and error histograms."""

    model = param.Selector(default=None, objects=[], doc="Model whose results are shown")
    imatrix = param.Selector(default="", objects=[""], doc="Importance matrix of the runs shown")
    metric = param.Selector(default="nmse", objects=list(LOWER_IS_BETTER), doc="Error metric")
    tensor_kinds = param.ListSelector(default=[], objects=[], doc="What the tensors do in the network")
    tensor_regex = param.String(default="", doc="Regex searched in tensor names")
    format_kinds = param.ListSelector(default=[], objects=[], doc="Families and scale encodings shown")
    block = param.Selector(default=ANY_BLOCK, objects=[ANY_BLOCK], doc="Block size of the uniform formats")
    format_regex = param.String(default="", doc="Regex searched in format names")
    tensor = param.Selector(default=NO_TENSOR, objects=[NO_TENSOR], doc="Tensor whose histograms are shown")
    error_format = param.Selector(default=None, objects=[None], doc="Format of the error histogram")

    def __init__(self, store: str | Path | None = None, model: str | None = None, notify=None, **params):
        super().__init__(store, **params)    # notify: unused, this page never changes the store
        self._results: dict[str, pd.DataFrame] = {}
        self._relative: dict[tuple, pd.DataFrame] = {}
        self._sources: dict[str, object] = {}     # model -> ModelSource | None | error line
        self._shown = pd.DataFrame()               # the heatmap's cells (relative_error_table rows)
        self._catalog = pd.DataFrame()
        self._taps: list[hv.streams.Tap] = []
        self._loading = False

        self.message = pn.pane.Alert("", alert_type="info", visible=False)
        self.note = pn.pane.Alert("", alert_type="secondary", visible=False)
        # two panes side by side, not an hv.Layout: a gridplot does not stretch the heatmap.
        # Unlinked: Panel would share the `row` range between them and keep the old rows on a redraw.
        self.stats_pane = pn.pane.HoloViews(None, visible=False, linked_axes=False)
        self.heatmap_pane = pn.pane.HoloViews(None, sizing_mode="stretch_width", linked_axes=False)
        # the heatmap scrolls sideways when its columns no longer fit (tensors.FIT_COLUMNS)
        self.heatmap_box = pn.Column(self.heatmap_pane, scroll=True, sizing_mode="stretch_width",
                                     css_classes=["heatmap-box"])
        self.overview = pn.Row(self.stats_pane, self.heatmap_box, sizing_mode="stretch_width", visible=False)
        self.hint = pn.pane.Markdown("Click a tensor (a heatmap cell or its statistics) for its "
                                     "weight and error histograms.", visible=False)
        self.caption = pn.pane.Markdown("")
        self.detail_message = pn.pane.Alert("", alert_type="warning", visible=False)
        self.weights_plot = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=280)
        self.error_plot = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=280)
        self.detail = pn.Column(
            self.caption,
            pn.Row(pn.widgets.Select.from_param(self.param.tensor, name="Tensor", width=380),
                   pn.widgets.Select.from_param(self.param.error_format, name="Error histogram format",
                                                width=260)),
            self.detail_message, pn.Row(self.weights_plot, self.error_plot, sizing_mode="stretch_width"),
            sizing_mode="stretch_width", visible=False)
        self.main = pn.Column(self.message, self.note, self.hint, self.overview, self.detail,
                              sizing_mode="stretch_width")
        self._open(model)
        self.controls = pn.Column(
            pn.widgets.Select.from_param(self.param.model, name="Model"),
            pn.widgets.Select.from_param(self.param.imatrix, name="Importance matrix"),
            pn.widgets.Select.from_param(self.param.metric, name="Metric"),
            pn.pane.Markdown("**Tensor kinds**", margin=(10, 10, 0, 10)),
            pn.widgets.CheckBoxGroup.from_param(self.param.tensor_kinds, name="Tensor kinds", inline=False),
            pn.widgets.TextInput.from_param(self.param.tensor_regex, name="Tensor regex",
                                            placeholder=r"e.g. layer\.0\."),
            pn.pane.Markdown("**Format kinds**", margin=(10, 10, 0, 10)),
            pn.widgets.CheckBoxGroup.from_param(self.param.format_kinds, name="Format kinds", inline=False),
            pn.widgets.Select.from_param(self.param.block, name="Block size (uniform formats)"),
            pn.widgets.TextInput.from_param(self.param.format_regex, name="Format regex",
                                            placeholder="e.g. ^Q4"),
            pn.pane.Markdown("Shown by default: llama.cpp's types and the f16-scale uniform singles "
                             f"at block {DEFAULT_BLOCK}, so the heatmap stays readable; the kinds, "
                             "block and regex widen or narrow it. Colour: log10 of the error over "
                             f"the best format (of all measured) within ±{BPW_TOLERANCE:.0%} bpw.",
                             styles={"font-size": "0.9em"}),
        )
        if self.model is None:    # nothing to choose from
            for w in self.controls:
                if isinstance(w, pn.widgets.Widget):
                    w.disabled = True

    def _forget(self):
        self._results.clear()
        self._relative.clear()

    @property
    def shown(self) -> pd.DataFrame:
        """The heatmap's cells: relative_error_table rows of the shown tensors and formats."""
        return self._shown

    def rows(self) -> list[str]:
        """The heatmap's rows (tensor names), top to bottom."""
        return list(dict.fromkeys(self._shown["tensor"])) if len(self._shown) else []

    def _results_of(self, model: str) -> pd.DataFrame:
        if model not in self._results:
            self._results[model] = st.results(self.store, model)
        return self._results[model]

    def _rel(self) -> pd.DataFrame:
        key = (self.model, self.imatrix, self.metric)
        if key not in self._relative:
            df = self._results_of(self.model)
            df = df[df["imatrix"].fillna("") == self.imatrix]
            self._relative[key] = relative_error_table(df, self.metric, BPW_TOLERANCE)
        return self._relative[key]

    def _source(self, model: str):
        """The model's ModelSource, None when its file is not here, or a one-line error."""
        if model not in self._sources:
            try:
                self._sources[model] = find_model(model)
            except (SourceError, OSError) as exc:
                self._sources[model] = f"cannot open the model file of {model}: {str(exc).splitlines()[0]}"
        return self._sources[model]

    # -------------------------------------------------------------------------- updates
    @param.depends("model", watch=True)
    def _load_model(self):
        if self.model is None:
            return
        try:
            df = self._results_of(self.model)
            options = imatrix_options(self.store, self.model)
        except (duckdb.Error, OSError) as exc:
            self._show_message(f"cannot read {self.model} from {self.store}: {str(exc).splitlines()[0]}",
                               "danger")
            return
        self._loading = True        # one refresh for the new model, not one per parameter
        try:
            self.param.imatrix.objects = options or {"none": ""}
            if self.imatrix not in options.values():
                self.imatrix = next(iter(options.values()), "")
            self._set_metric_options()
            self._catalog = format_catalog(df)
            kinds = ordered_kinds(self._catalog)
            self.param.format_kinds.objects = kinds
            self.format_kinds = [k for k in DEFAULT_FORMAT_KINDS if k in kinds] or kinds
            blocks = sorted({int(b) for b, f in zip(self._catalog["block"], self._catalog["family"])
                             if f != "ggml" and pd.notna(b)})
            self.param.block.objects = {"any": ANY_BLOCK, **{str(b): b for b in blocks}}
            self.block = DEFAULT_BLOCK if DEFAULT_BLOCK in blocks else ANY_BLOCK
            present = {tensor_kind(t) for t in df["tensor"].unique()}
            tkinds = [k for k in TENSOR_KINDS if k in present]
            self.param.tensor_kinds.objects = tkinds
            self.tensor_kinds = tkinds
        finally:
            self._loading = False
        self._show_model_note()
        self._refresh()

    def _set_metric_options(self):
        names = [m for m in LOWER_IS_BETTER if self.imatrix or m not in WEIGHTED]
        self.param.metric.objects = names
        if self.metric not in names:
            self.metric = "nmse"

    @param.depends("imatrix", watch=True)
    def _load_imatrix(self):
        if self._loading:
            return
        self._loading = True
        try:
            self._set_metric_options()
        finally:
            self._loading = False
        self._refresh()

    def _show_model_note(self):
        src = self._source(self.model)
        if isinstance(src, str):
            self.note.object, self.note.visible = src, True
        elif src is None:
            self.note.object = (f"{NEEDS_MODEL}: {self.model} is not the embedded default and no "
                                f"model file with that name is under {data_dir()}")
            self.note.visible = True
        else:
            self.note.visible = False

    @param.depends("metric", "tensor_kinds", "tensor_regex", "format_kinds", "block", "format_regex", watch=True)
    def _refresh(self):
        if self.model is None or self._loading:
            return
        try:
            rel = self._rel()
        except ValueError as exc:      # e.g. the store's files lack this metric's column
            return self._show_message(f"{self.model}: {exc}", "warning")
        if rel.empty or not np.isfinite(pd.to_numeric(rel["ratio"], errors="coerce")).any():
            return self._show_message(f"{self.model}: no {self.metric} results"
                                      + (" with this importance matrix" if self.imatrix else ""), "warning")
        try:
            formats = pick_formats(self._catalog, self.format_kinds, self.block or None, self.format_regex)
            tensors = pick_tensors(sorted(rel["tensor"].unique(), key=natural_key), self.tensor_kinds,
                                   self.tensor_regex)
        except ValueError as exc:
            return self._show_message(str(exc), "warning")
        if not tensors:
            return self._show_message(f"no tensor of {self.model} matches the tensor kinds and regex",
                                      "warning")
        if not formats:
            return self._show_message("no format matches the format kinds, block size and regex", "warning")
        order = {t: i for i, t in enumerate(tensors)}
        shown = rel[rel["tensor"].isin(order) & rel["format"].isin(formats)]
        if shown.empty:
            return self._show_message(f"{self.model} has no results for the chosen tensors and formats",
                                      "warning")
        self._shown = shown.iloc[np.argsort(shown["tensor"].map(order).to_numpy(), kind="stable")]
        self.message.visible = False
        self._draw_overview()
        rows = self.rows()
        target = self.tensor if self.tensor in rows else NO_TENSOR
        self._loading = True   # (new options make the widget pick its first; the target is set after)
        try:
            self.param.tensor.objects = [NO_TENSOR, *rows]
            self.tensor = target
        finally:
            self._loading = False
        self._select_tensor()

    def _draw_overview(self):
        rows = self.rows()
        heatmap = error_heatmap(self._shown, row_height=ROW_HEIGHT)
        for tap in self._taps:          # the old plot's streams: detached, not left subscribed
            tap.source = None
        self._taps = [hv.streams.Tap(source=heatmap)]
        src = self._source(self.model)
        if src is None or isinstance(src, str):
            self.stats_pane.object, self.stats_pane.visible = None, False
        else:
            stats = stats_plot(cached_stats(src, rows), rows, ROW_HEIGHT)
            self._taps.append(hv.streams.Tap(source=stats))
            heatmap.opts(yaxis=None)      # the statistics beside it name the rows
            self.stats_pane.object, self.stats_pane.visible = stats, True
        for tap in self._taps:
            tap.add_subscriber(self._on_tap)
        self.heatmap_pane.object = heatmap
        self.overview.visible = self.hint.visible = True

    def _on_tap(self, x=None, y=None, **_):
        """A click on a heatmap cell or a statistics cell: y is the tensor row."""
        if y is not None and y in self.param.tensor.objects:
            self.tensor = y

    # --------------------------------------------------------------------- one tensor
    @param.depends("tensor", watch=True)
    def _select_tensor(self):
        if self._loading:
            return
        if self.tensor == NO_TENSOR:
            self.detail.visible = False
            return
        cells = self._shown[self._shown["tensor"] == self.tensor]
        formats = list(cells.sort_values(["bpw", "format"], kind="stable")["format"])
        # a format chosen earlier stays while it is shown
        target = (self.error_format if self.error_format in formats
                  else default_error_format(self._shown, self.tensor, self._catalog))
        self._loading = True
        try:
            self.param.error_format.objects = formats
            self.error_format = target
        finally:
            self._loading = False
        self._draw_detail()

    @param.depends("error_format", watch=True)
    def _draw_detail(self):
        if self._loading or self.tensor == NO_TENSOR:
            return
        self.detail.visible = True
        cell = self._shown[(self._shown["tensor"] == self.tensor) & (self._shown["format"] == self.error_format)]
        line = f"**{self.tensor}** ({tensor_kind(self.tensor)})"
        if len(cell):
            c, within = cell.iloc[0], f"within ±{BPW_TOLERANCE:.0%} bpw"
            if not np.isfinite(c["metric"]):
                line += f" · {self.error_format}: no {self.metric} measured"
            elif c["ratio"] == 1:
                line += f" · {self.error_format}: {self.metric} {c['metric']:.3e}, the best {within}"
            else:
                line += (f" · {self.error_format}: {self.metric} {c['metric']:.3e}, {c['ratio']:.3g}× the "
                         f"best {within} ({c['best_format']})")
        src = self._source(self.model)
        self.detail_message.visible = False
        if src is None or isinstance(src, str):
            self.weights_plot.object = self.error_plot.object = None
            self.caption.object = line
            return self._detail_warning(src if isinstance(src, str) else f"{NEEDS_MODEL} (not on this machine)")
        info = next((t for t in src.weights() if t.name == self.tensor), None)
        if info is None:
            self.caption.object = line
            self.weights_plot.object = self.error_plot.object = None
            return self._detail_warning(f"{self.tensor} is not in the model file {src.path.name}")
        x = info.load()
        self.caption.object = line + f" · {x.shape[0]}×{x.shape[1]} = {x.size:,} weights"
        self.weights_plot.object = weight_histogram(x, title=f"{self.tensor}: weights")
        try:
            y = reconstruct(x, self.error_format)
        except ValueError as exc:
            self.error_plot.object = None
            return self._detail_warning(str(exc).splitlines()[0])
        title = f"{self.tensor}: error of {self.error_format}"
        if self.imatrix:
            title += " (without the imatrix)"
        self.error_plot.object = error_histogram(x, y, title=title)

    def _detail_warning(self, text: str):
        self.detail_message.object, self.detail_message.visible = text, True

    def _show_message(self, text: str, kind: str):
        self.message.object, self.message.alert_type, self.message.visible = text, kind, True
        self.overview.visible = self.hint.visible = self.detail.visible = False
        self._shown = pd.DataFrame()
