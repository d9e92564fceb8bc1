"""The Throughput page: how fast each format quantizes and dequantizes, per backend and device,
against its bits per weight, with llama.cpp's own quantizer as a reference where it was
measured (``workbench bench --vs llama.cpp --store``)."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import panel as pn
import param
from bokeh.models.widgets.tables import NumberFormatter

from workbench import store as st
from workbench.views.page import EMPTY_STORE, ModelPage, imatrix_options  # noqa: F401  (EMPTY_STORE: re-exported)
from workbench.views.throughput import (DIRECTIONS, NO_REFERENCE, REFERENCE_ROWS, TABLE_COLUMNS,
                                        reference_rows, reference_table, table_rows, throughput_plot,
                                        throughput_table)

RATE = NumberFormatter(format="0,0.00")     # M weights/s
CAPTION = ("Sweep timings: one quantize and one dequantize call per (tensor, format) on one thread, "
           "while the other cores quantize other tensors. Reference: `workbench bench --vs llama.cpp`, "
           "the best of its passes over the same tensors for llama.cpp's C quantizer and ours.")


class ThroughputPage(ModelPage):
    """bpw vs weights per second per format, backend and device; llama.cpp reference overlaid."""

    model = param.Selector(default=None, objects=[], doc="Model whose timings are shown")
    imatrix = param.Selector(default="", objects=[""], doc="Importance matrix of the runs shown "
                             "(none: quantized without one)")
    direction = param.Selector(default="quant", objects={"quantize": "quant", "dequantize": "dequant"},
                               doc="Which rate is plotted")

    def __init__(self, store: str | Path | None = None, model: str | None = None, notify=None, **params):
        super().__init__(store, **params)
        self._cache: dict[tuple, tuple[pd.DataFrame, pd.DataFrame]] = {}
        self._loading = False
        self.message = pn.pane.Alert("", alert_type="info", visible=False)
        self.reference_note = pn.pane.Markdown("", styles={"font-weight": "600"}, margin=(0, 10))
        self.plot = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=460, linked_axes=False)
        self.table = pn.widgets.Tabulator(pd.DataFrame(columns=list(TABLE_COLUMNS)), show_index=False,
                                          disabled=True, sizing_mode="stretch_width", height=300,
                                          layout="fit_data_stretch")
        self.reference = pn.widgets.Tabulator(pd.DataFrame(columns=list(REFERENCE_ROWS)),
                                              show_index=False, disabled=True, height=240,
                                              sizing_mode="stretch_width", layout="fit_data_stretch")
        for t in (self.table, self.reference):
            t.formatters = {"bpw": NumberFormatter(format="0.000"), "quantize Mw/s": RATE,
                            "dequantize Mw/s": RATE}
        self.reference_section = pn.Column(
            pn.pane.Markdown("#### llama.cpp reference (quantization)", margin=(0, 10)), self.reference,
            sizing_mode="stretch_width")
        self.content = pn.Column(self.reference_note, self.plot,
                                 pn.pane.Markdown(CAPTION, styles={"font-size": "0.9em"}, margin=(0, 10)),
                                 pn.pane.Markdown("#### Weights per second by format", margin=(0, 10)),
                                 self.table, self.reference_section, sizing_mode="stretch_width")
        self.main = pn.Column(self.message, self.content, sizing_mode="stretch_width")
        self._open(model)
        self.controls = pn.Column(
            pn.widgets.Select.from_param(self.param.model, name="Model"),
            pn.widgets.Select.from_param(self.param.imatrix, name="Importance matrix"),
            pn.pane.Markdown("**Rate shown**", margin=(10, 10, 0, 10)),    # a button group has no title
            pn.widgets.RadioButtonGroup.from_param(self.param.direction, name="Rate shown",
                                                   button_type="primary", button_style="outline"),
            pn.pane.Markdown("Circles: the sweep's timings, one colour per backend · device. "
                             "Triangles: llama.cpp; diamonds: our kernels in the same benchmark.",
                             styles={"font-size": "0.9em"}),
        )
        if self.model is None:
            for widget in (self.controls[0], self.controls[1], self.controls[3]):
                widget.disabled = True

    def _forget(self):
        self._cache.clear()

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(per-format throughput, reference timings) of the chosen model and imatrix."""
        key = (self.model, self.imatrix)
        if key not in self._cache:
            measured = throughput_table(st.results(self.store, self.model), self.imatrix)
            reference = reference_table(st.timings(self.store, self.model), with_imatrix=self.imatrix != "")
            self._cache[key] = (measured, reference)
        return self._cache[key]

    @param.depends("model", watch=True)
    def _load_model(self):
        if self.model is None:
            return
        self._loading = True
        try:
            options = imatrix_options(self.store, self.model)
            self.param.imatrix.objects = options
            if self.imatrix not in options.values():
                self.imatrix = next(iter(options.values()), "")
        except (duckdb.Error, OSError) as exc:
            self._show_message(f"cannot read {self.model} from {self.store}: {str(exc).splitlines()[0]}",
                               "danger")
            return
        finally:
            self._loading = False
        self._refresh()

    # ---------------------------------------------------------------------------- updates
    @param.depends("imatrix", "direction", watch=True)
    def _refresh(self):
        if self.model is None or self._loading:
            return
        try:
            measured, reference = self.tables()
        except (duckdb.Error, OSError, ValueError) as exc:
            self._show_message(f"cannot read the timings of {self.model}: {str(exc).splitlines()[0]}",
                               "danger")
            return
        if measured.empty:
            self._show_message(f"{self.model}: no timings for this importance matrix", "warning")
            return
        d = DIRECTIONS[self.direction]
        self.message.visible = False
        self.content.visible = True
        self.plot.object = throughput_plot(measured, d.name, reference)
        self.table.value = table_rows(measured, d.name)
        self.reference.value = reference_rows(reference)
        self.reference_section.visible = not reference.empty
        if reference.empty:
            self.reference_note.object = NO_REFERENCE
        elif d.name != "quant":
            self.reference_note.object = ("the llama.cpp reference times quantization only: switch to "
                                          "quantize to see it")
        else:
            self.reference_note.object = (f"llama.cpp reference: {reference['format'].nunique()} types "
                                          f"measured on {', '.join(sorted(set(reference['device'])))}")

    def _show_message(self, text: str, kind: str):
        self.message.object, self.message.alert_type, self.message.visible = text, kind, True
        self.content.visible = False
