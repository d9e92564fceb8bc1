"""The Data page: the runs in the store with their provenance, what each skipped and why, and
sharing: import a collaborator's Parquet file, export runs or a model as one.

Import goes through ``store.import_file`` (validates the whole file first, never changes a
stored row, skips rows whose natural key is already stored); export through ``store.export``,
whose file re-imports losslessly.
"""
from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

import duckdb
import pandas as pd
import panel as pn

from workbench import store as st

EMPTY_STORE = "no runs yet: run a sweep (Sweep page or `workbench sweep`) or import a Parquet file"
SKIP_COLUMNS = ["run_id", "tensor", "format", "reason"]
# what a run holds first (the table scrolls sideways), then where and how it was measured
SHOWN_COLUMNS = ["run_id", "model", "created_at", "rows", "tensors", "formats", "imatrix_file", "backend",
                 "device", "host", "workbench_version", "git_rev"]


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """store.runs() as shown: every provenance column (SHOWN_COLUMNS order), times as UTC text,
    missing values blank."""
    df = runs.reindex(columns=SHOWN_COLUMNS).copy()
    stamps = pd.to_datetime(df["created_at"], utc=True)
    df["created_at"] = stamps.dt.strftime("%Y-%m-%d %H:%M:%S UTC").where(stamps.notna(), "")
    text = [c for c in st.RUN_COLUMNS if c not in ("created_at", "rows", "tensors", "formats")]
    df[text] = df[text].astype(object).where(df[text].notna(), "")
    return df.reset_index(drop=True)


def export_name(models: list[str], rows: int) -> str:
    """``<model>-<n>rows.parquet`` (several models: ``<k>-models-<n>rows.parquet``)."""
    stem = models[0] if len(models) == 1 else f"{len(models)}-models"
    return f"{stem}-{rows}rows.parquet"


def safe_name(filename: str | None) -> str:
    """An uploaded file's name as shown in a message: its last part, plain characters only."""
    name = Path(str(filename or "upload.parquet").replace("\\", "/")).name
    return re.sub(r"[^\w.\- ]", "_", name)[:120] or "upload.parquet"


class DataPage(pn.viewable.Viewer):
    """Runs and provenance; import and export Parquet."""

    def __init__(self, store: str | Path | None = None, notify=None, **params):
        super().__init__(**params)
        self.store = Path(store) if store else st.default_store()
        self.notify = notify
        self._runs = pd.DataFrame(columns=list(st.RUN_COLUMNS))

        self.upload = pn.widgets.FileInput(label="Import a Parquet file", accept=".parquet")
        self.model = pn.widgets.Select(label="Model to export when no run is selected", options=[])
        self.download = pn.widgets.FileDownload(callback=self._export_file, filename="export.parquet",
                                                label="Export Parquet")
        self.export_note = pn.pane.Markdown("", margin=(0, 10))
        self.controls = pn.Column(
            pn.pane.Markdown("**Import** a collaborator's results file (`workbench export`): rows "
                             "already stored are skipped, stored rows never change.", margin=(0, 10)),
            self.upload, pn.layout.Divider(),
            pn.pane.Markdown("**Export** the selected runs, or a whole model, as one Parquet file.",
                             margin=(0, 10)),
            self.model, self.export_note, self.download)

        self.message = pn.pane.Alert("", alert_type="info", visible=False)
        self.runs = pn.widgets.Tabulator(runs_table(self._runs), show_index=False, disabled=True,
                                         frozen_columns=["run_id"],
                                         selectable="checkbox", sizing_mode="stretch_width", height=300,
                                         layout="fit_data_stretch", css_classes=["runs-table"])
        self.skips_caption = pn.pane.Markdown("")
        self.skips = pn.widgets.Tabulator(pd.DataFrame(columns=SKIP_COLUMNS), show_index=False, disabled=True,
                                          sizing_mode="stretch_width", height=260, layout="fit_data_stretch",
                                          visible=False, css_classes=["skips-table"])
        self.main = pn.Column(self.message, pn.pane.Markdown("**Runs** (tick runs to list what they "
                                                             "skipped and to export them)"),
                              self.runs, self.skips_caption, self.skips, sizing_mode="stretch_width")

        self.upload.param.watch(self._on_upload, "value")
        self.runs.param.watch(self._on_select, "selection")
        self.model.param.watch(self._describe_export, "value")
        self.reload()

    def __panel__(self):
        return pn.Row(pn.Column(self.controls, width=300), self.main, sizing_mode="stretch_width")

    # ------------------------------------------------------------------------ reading
    def reload(self):
        """Re-read the runs (a sweep or an import changed the store), keeping the ticked runs."""
        keep = self.selected_run_ids()
        try:
            self._runs = st.runs(self.store)
        except (duckdb.Error, OSError) as exc:
            self._runs = pd.DataFrame(columns=list(st.RUN_COLUMNS))
            self._show(f"cannot read the store at {self.store}: {str(exc).splitlines()[0]}", "danger")
        else:
            # the shell names skipped store files above every page; here only when nothing is left
            note = st.skipped_note(self.store) if self._runs.empty else ""
            if note:
                self._show(note, "danger")
            elif self._runs.empty:
                self._show(f"{EMPTY_STORE} (store: {self.store})", "info")
            elif self.message.object.startswith(EMPTY_STORE):
                self.message.visible = False
        self.runs.value = runs_table(self._runs)
        self.runs.selection = [i for i, r in enumerate(self._runs["run_id"]) if r in keep]
        models = sorted(self._runs["model"].unique().tolist())
        model = self.model.value
        self.model.options = models
        self.model.value = model if model in models else (models[0] if models else None)
        self.model.disabled = self._runs.empty
        self._on_select()

    def selected_run_ids(self) -> list[str]:
        ids = self._runs["run_id"].tolist()
        return list(dict.fromkeys(ids[i] for i in self.runs.selection if i < len(ids)))

    def _on_select(self, *_):
        ids = self.selected_run_ids()
        self._describe_export()
        if not ids:
            self.skips_caption.object = "Tick runs above to list the tensors and formats they skipped, and why."
            self.skips.visible = False
            return
        try:
            skips = st.skips(self.store, ids)
        except (duckdb.Error, OSError) as exc:
            self._show(f"cannot read the skips of the selected runs: {str(exc).splitlines()[0]}", "danger")
            return
        whole = int((skips["format"] == "").sum())
        self.skips_caption.object = (
            f"**Skipped by the {len(ids)} selected run(s):** {len(skips) - whole} (tensor, format) pairs and "
            f"{whole} whole tensors, with the reason" if len(skips) else
            f"**The {len(ids)} selected run(s) recorded no skips** (an imported file carries results only)")
        self.skips.value = skips[SKIP_COLUMNS].reset_index(drop=True)
        self.skips.visible = not skips.empty

    # ------------------------------------------------------------------------- export
    def export_scope(self) -> tuple[dict, list[str], int]:
        """What Export writes: store.export's filters, the models it covers and its row count."""
        ids = self.selected_run_ids()
        if ids:
            chosen = self._runs[self._runs["run_id"].isin(ids)]
            return {"run_ids": ids}, sorted(chosen["model"].unique()), int(chosen["rows"].sum())
        model = self.model.value
        chosen = self._runs[self._runs["model"] == model]
        return {"model": model}, [model] if model else [], int(chosen["rows"].sum())

    def _describe_export(self, *_):
        scope, models, rows = self.export_scope()
        if not rows:
            self.export_note.object = ""
        elif "run_ids" in scope:
            self.export_note.object = f"Export: the {len(scope['run_ids'])} selected run(s), {rows} rows"
        else:
            self.export_note.object = f"Export: all {rows} rows of {models[0]} (tick runs to export only those)"
        self.download.disabled = not rows

    def export_bytes(self) -> tuple[str, bytes]:
        """(file name, Parquet bytes) of the current selection; StoreError etc. propagate."""
        scope, models, _ = self.export_scope()
        with tempfile.TemporaryDirectory(prefix="workbench-export-") as tmp:
            out = Path(tmp) / "export.parquet"
            rows = st.export(self.store, out, **scope)
            return export_name(models, rows), out.read_bytes()

    def _export_file(self):
        """FileDownload's callback: the Parquet bytes, named after what they hold. A failure is
        shown in the page (and the file downloaded is a one-line text saying why)."""
        try:
            name, data = self.export_bytes()
        except (st.StoreError, duckdb.Error, OSError) as exc:
            line = f"export failed: {str(exc).splitlines()[0]}"
            self._show(line, "danger")
            self.download.filename = "export-failed.txt"
            return io.BytesIO(line.encode())
        self.download.filename = name
        return io.BytesIO(data)

    # ------------------------------------------------------------------------- import
    def _on_upload(self, *_):
        data = self.upload.value
        if not data:        # cleared (after an import), or an empty selection
            return
        self.import_bytes(data, self.upload.filename)
        self.upload.clear()  # the same file can be chosen again (and is then all skipped)

    def import_bytes(self, data: bytes, filename: str | None) -> tuple[int, int] | None:
        """Import an uploaded file's bytes; shows "added n rows, skipped m already stored" or
        the reason it was refused (nothing is written then). Returns (added, skipped) or None."""
        name = safe_name(filename)
        with tempfile.TemporaryDirectory(prefix="workbench-import-") as tmp:
            path = Path(tmp) / "upload.parquet"
            path.write_bytes(data)
            try:
                added, skipped = st.import_file(path, self.store)
            except st.StoreError as exc:   # its message names the temp file: name the upload
                self._show(str(exc).splitlines()[0].replace(str(path), name), "danger")
                return None
            except (duckdb.Error, OSError) as exc:
                self._show(f"{name}: cannot import into the store at {self.store}: "
                           f"{str(exc).splitlines()[0]}", "danger")
                return None
        self.message.visible = False
        self.reload()
        self._show(f"{name}: added {added} rows, skipped {skipped} already stored",
                   "success" if added else "info")
        if added and self.notify:
            self.notify()
        return added, skipped

    def _show(self, text: str, kind: str):
        self.message.object, self.message.alert_type, self.message.visible = text, kind, True
