"""The Sweep page: measure a model from the dashboard and watch the results land in the store.

The sweep (``workbench.sweep.run``) runs in a background thread of the server; the thread only
writes a small state object under a lock, and a periodic callback on the page's document reads
it (with the document lock held, as every Bokeh callback is) to move the progress bar and
refresh the live table. Rows reach the store as immutable files while the sweep runs, so other
pages and other processes see them as they land, and a cancelled sweep keeps what finished.

An evaluation (``workbench.evaluate.run``: what formats do to the chosen model's outputs, one
``model_eval`` row per format) runs the same way in a thread of its own, with its own progress
bar, live table and cancel button; the Truth and Pareto pages read its rows when next shown.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import panel as pn
from bokeh.models.widgets.tables import NumberFormatter, ScientificFormatter
from panel.io.callbacks import PeriodicCallback
from panel.io.document import hold

from workbench import eval_store, evaluate, sweep, truth
from workbench import store as st
from workbench.formats import GRIDS, FormatError, FormatSpec, resolve
from workbench.imatrix import ImatrixError
from workbench.sources import (DEFAULT_MODEL_ID, TENSOR_KINDS, ModelSource, SourceError, data_dir,
                               model_files, open_model)
from workbench.views.pareto import tensors_matching

EMBEDDED = f"{DEFAULT_MODEL_ID} (embedded)"
IMATRIX_SUFFIXES = (".gguf", ".dat")
POLL_MS = 250          # progress bar refresh
STORE_EVERY = 4        # polls between store reads for the live table (rows land every few s)
LIVE_ROWS = 8
LIVE_COLUMNS = ["tensor", "format", "bpw", "nmse", "sqnr_db"]
EVAL_COLUMNS = ["format", "variant", "tensors", "bpw", "model_metric", "w_nmse"]
log = logging.getLogger(__name__)



def _set_bar(bar, value: int, top: int) -> None:
    """A progress bar to ``value`` of ``top``, never passing through value > max: a smaller max
    with the old, larger value still set would fail validation (the value goes down first)."""
    if value <= bar.value:
        bar.value = value
        bar.max = top
    else:
        bar.max = top
        bar.value = value

class PlanError(ValueError):
    """Sweep settings that cannot run; the message is one line for the user."""


# ------------------------------------------------------------------------------- choices
def model_options(folder: Path | None = None) -> dict[str, str]:
    """{label: value} for the model Select: the embedded default ("") and the model files under
    the data folder, by relative path (the only paths the browser can choose from)."""
    return {EMBEDDED: "", **{str(p): str(p) for p in model_files(folder)}}


def model_path(choice: str, folder: Path | None = None) -> Path | None:
    """The file to open for a Select value (None: the embedded default). Re-checked on the
    server: a value that is not one of ``model_files()`` is refused, whatever the browser sent."""
    if not choice:
        return None
    root = Path(folder) if folder else data_dir()
    if Path(choice) not in model_files(root):
        raise PlanError(f"{choice!r} is not a model file in the data folder ({root})")
    return root / choice


def imatrix_file_options(folder: Path | None = None) -> dict[str, str]:
    """{label: value}: "none" ("") and the importance-matrix files in <data folder>/imatrix."""
    root = (Path(folder) if folder else data_dir()) / "imatrix"
    files = sorted(p.name for p in root.glob("*") if p.is_file() and p.suffix.lower() in IMATRIX_SUFFIXES) \
        if root.is_dir() else []
    return {"none": "", **{f: f for f in files}}


def imatrix_path(choice: str, folder: Path | None = None) -> Path | None:
    if not choice:
        return None
    if choice not in imatrix_file_options(folder).values():
        raise PlanError(f"{choice!r} is not an importance matrix in the data folder's imatrix/")
    return (Path(folder) if folder else data_dir()) / "imatrix" / choice


def _compile(pattern: str, what: str) -> re.Pattern | None:
    if not pattern.strip():
        return None
    try:
        return re.compile(pattern.strip())
    except re.error as exc:
        raise PlanError(f"{what} regex {pattern.strip()!r}: {exc}") from None


def choose_formats(grid: str, pattern: str = "") -> list[FormatSpec]:
    """The formats of a named grid (formats.GRIDS) whose names match ``pattern`` (all if empty)."""
    if grid not in GRIDS:
        raise PlanError(f"unknown format grid {grid!r} (choose one of {', '.join(GRIDS)})")
    rx = _compile(pattern, "format")
    specs = [f for f in GRIDS[grid]() if rx is None or rx.search(f.name)]
    if not specs:
        raise PlanError(f"no format of the {grid!r} grid matches {pattern.strip()!r}")
    return specs


def choose_tensors(names: list[str], pattern: str = "", kinds: list[str] | tuple = ()) -> list[str]:
    """The weight tensors matching ``pattern`` (searched, as the CLI does) and of one of ``kinds``
    (sources.tensor_kind); either filter may be empty. The Pareto page's rule, as a PlanError."""
    try:
        return tensors_matching(names, pattern.strip(), list(kinds) or None)
    except ValueError as exc:
        raise PlanError(str(exc)) from None


def exact_pattern(chosen: list[str], names: list[str]) -> str | None:
    """The ``tensors`` argument of sweep.run for exactly ``chosen`` (None: every weight)."""
    if set(chosen) >= set(names):
        return None
    return "^(?:" + "|".join(re.escape(n) for n in chosen) + ")$"


@dataclass(frozen=True)
class Plan:
    model: Path | None          # None: the embedded default
    model_id: str
    formats: list[FormatSpec]
    tensors: list[str]
    tensor_regex: str | None
    imatrix: Path | None

    @property
    def pairs(self) -> int:
        return len(self.formats) * len(self.tensors)


# ------------------------------------------------------------------------------ the job
class SweepJob:
    """One sweep in a background thread. The thread writes ``done``/``total``/``report``/
    ``error`` under ``lock``; the page reads them from its document's callbacks."""

    def __init__(self, plan: Plan, store: Path):
        self.plan, self.store = plan, store
        self.run_id = st.new_run_id()          # known before the first row lands: the live table
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.done = self.total = 0
        self.started = False                   # the first task finished (total is known)
        self.report: sweep.SweepReport | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._work, name=f"sweep-{self.run_id[:8]}", daemon=True)

    def start(self) -> "SweepJob":
        self.thread.start()
        return self

    @property
    def finished(self) -> bool:
        return not self.thread.is_alive() and (self.report is not None or self.error is not None)

    def _progress(self, done: int, total: int):
        with self.lock:
            self.done, self.total, self.started = done, total, True

    def _work(self):
        p = self.plan
        try:
            rep = sweep.run(p.model, p.formats, p.tensor_regex, self.store, progress=self._progress,
                            cancel=self.cancel, imatrix=p.imatrix, run_id=self.run_id)
        except (SourceError, ImatrixError, FormatError, st.StoreError) as exc:
            error = str(exc).splitlines()[0]
        except (OSError, duckdb.Error) as exc:
            error = f"cannot write to the store at {self.store}: {str(exc).splitlines()[0]}"
        except Exception as exc:  # a bug: the user sees one line, the server log the traceback
            log.exception("sweep %s failed", self.run_id)
            error = f"the sweep failed: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:
            with self.lock:
                self.report = rep
            return
        with self.lock:
            self.error = error


class EvalJob:
    """One evaluation (``evaluate.run``) in a background thread, reported like a SweepJob: the
    thread writes ``done``/``total``/``current``/``report``/``error`` under ``lock``."""

    def __init__(self, model: Path | None, formats: str | None, sensitivity: bool, store: Path, evaluator=None):
        self.model, self.formats, self.sensitivity, self.store = model, formats, sensitivity, store
        self.evaluator = evaluator            # an evaluator object instead of the model's (scripts, tests)
        self.run_id = st.new_run_id()
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.done = self.total = 0
        self.current = ""                     # the format evaluated last
        self.started = False
        self.report: evaluate.EvalReport | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._work, name=f"eval-{self.run_id[:8]}", daemon=True)

    def start(self) -> "EvalJob":
        self.thread.start()
        return self

    @property
    def finished(self) -> bool:
        return not self.thread.is_alive() and (self.report is not None or self.error is not None)

    def _progress(self, done: int, total: int, name: str):
        with self.lock:
            self.done, self.total, self.current, self.started = done, total, name, True

    def _work(self):
        try:
            rep = evaluate.run(model=str(self.model) if self.model else None, formats=self.formats,
                               store=self.store, sensitivity=self.sensitivity, progress=self._progress,
                               cancel=self.cancel, run_id=self.run_id, evaluator=self.evaluator)
        except (OSError, duckdb.Error) as exc:
            error = f"cannot evaluate into the store at {self.store}: {str(exc).splitlines()[0]}"
        except ValueError as exc:      # refused input (EvalError, FormatError, a bad text): one line
            error = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        except Exception as exc:  # a bug: the user sees one line, the server log the traceback
            log.exception("evaluation %s failed", self.run_id)
            error = f"the evaluation failed: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:
            with self.lock:
                self.report = rep
            return
        with self.lock:
            self.error = error


def eval_rows(store: Path, run_id: str) -> pd.DataFrame:
    """The evaluations one run stored so far (EVAL_COLUMNS; ``model_metric``: drift for an
    encoder, mean KLD for an LLM), in the order they landed."""
    ev = eval_store.evals(store)
    ev = ev[ev["run_id"] == run_id].sort_values("created_at")
    metric = [r[truth.MODEL_METRIC.get(r["kind"], "drift")] for _, r in ev.iterrows()]
    return ev.assign(model_metric=metric)[EVAL_COLUMNS].reset_index(drop=True)


# ------------------------------------------------------------------------------ the page
class SweepPage(pn.viewable.Viewer):
    """Choose a model, formats and tensors; run a sweep in the background; watch it land."""

    def __init__(self, store: str | Path | None = None, notify=None, evaluator=None, **params):
        super().__init__(**params)
        self.store = Path(store) if store else st.default_store()
        self.notify = notify
        self.evaluator = evaluator             # evaluations use it instead of the chosen model's
        self.job: SweepJob | None = None
        self.eval_job: EvalJob | None = None
        self._eval_shown: EvalJob | None = None
        self._eval_poll: PeriodicCallback | None = None
        self._eval_polls = self._eval_stored = 0
        self._shown: SweepJob | None = None     # the job whose outcome is on the page
        self._poll: PeriodicCallback | None = None
        self._polls = 0
        self._stored = 0                       # rows of the running job seen in the store
        self._sources: dict[str, ModelSource] = {}

        self.model = pn.widgets.Select(label="Model", options=model_options())
        self.grid = pn.widgets.Select(label="Format grid", options=list(GRIDS), value="small")
        self.format_regex = pn.widgets.TextInput(label="Format names (regex, optional)", placeholder=r"e.g. ^Q4|_e4m3")
        self.tensor_regex = pn.widgets.TextInput(label="Tensors (regex, optional)", placeholder=r"e.g. layer\.0\.")
        self.kinds = pn.widgets.MultiChoice(label="Tensor kinds (optional)", options=list(TENSOR_KINDS))
        self.imatrix = pn.widgets.Select(label="Importance matrix", options=imatrix_file_options())
        self.choice = pn.pane.Markdown("", margin=(0, 10))
        self.run_button = pn.widgets.Button(label="Run sweep", color="primary")
        self.cancel_button = pn.widgets.Button(label="Cancel", color="warning", disabled=True)
        self.inputs = [self.model, self.grid, self.format_regex, self.tensor_regex, self.kinds, self.imatrix]

        self.message = pn.pane.Alert("", alert_type="info", visible=False)
        self.progress = pn.indicators.Progress(label="Sweep progress", value=0, max=1, visible=False,
                                               sizing_mode="stretch_width", bar_color="primary")
        self.status = pn.pane.Markdown("", margin=(0, 10))
        self.live_caption = pn.pane.Markdown("", visible=False)
        self.live = pn.widgets.Tabulator(pd.DataFrame(columns=LIVE_COLUMNS), show_index=False, disabled=True,
                                         sizing_mode="stretch_width", height=260, layout="fit_data_stretch",
                                         visible=False,
                                         formatters={"bpw": NumberFormatter(format="0.000"),
                                                     "nmse": ScientificFormatter(precision=3, power_limit_low=0),
                                                     "sqnr_db": NumberFormatter(format="0.00")})
        self.eval_formats = pn.widgets.TextInput(
            label="Formats to evaluate (optional)", placeholder="e.g. Q4_0,Q4_K,Q4s32",
            description="Format names or grids, comma-separated. Empty: the nmse frontier of the model's "
                        "sweep, and llama.cpp's types")
        self.eval_sensitivity = pn.widgets.Checkbox(label="Also each tensor group alone (sensitivity)")
        self.eval_button = pn.widgets.Button(label="Evaluate formats on the model", color="primary",
                                             sizing_mode="stretch_width")
        # "Stop", not "Cancel": the sweep's Cancel button keeps a name of its own
        self.eval_cancel = pn.widgets.Button(label="Stop evaluation", color="warning", disabled=True,
                                             sizing_mode="stretch_width")
        self.eval_message = pn.pane.Alert("", alert_type="info", visible=False)
        self.eval_progress = pn.indicators.Progress(label="Evaluation progress", value=0, max=1, visible=False,
                                                    sizing_mode="stretch_width", bar_color="primary")
        self.eval_status = pn.pane.Markdown("", margin=(0, 10), css_classes=["eval-status"])
        self.eval_live = pn.widgets.Tabulator(pd.DataFrame(columns=EVAL_COLUMNS), show_index=False, disabled=True,
                                              sizing_mode="stretch_width", height=220, layout="fit_data_stretch",
                                              visible=False, css_classes=["eval-live"],
                                              formatters={"bpw": NumberFormatter(format="0.000"),
                                                          "model_metric": ScientificFormatter(precision=3, power_limit_low=0),
                                                          "w_nmse": ScientificFormatter(precision=3, power_limit_low=0)})
        self.controls = pn.Column(
            *self.inputs, self.choice, pn.Row(self.run_button, self.cancel_button), pn.layout.Divider(),
            pn.pane.Markdown("**Model-level truth**: quantize every weight of the chosen model with each "
                             "format and measure what it does to the model's outputs (drift for an encoder, "
                             "KLD for an LLM): the Truth page.", styles={"font-size": "0.9em"}),
            self.eval_formats, self.eval_sensitivity, self.eval_button, self.eval_cancel)
        # the evaluation's bar, status and table join the page with its first evaluation
        self.eval_section = pn.Column(self.eval_message, sizing_mode="stretch_width")
        self.main = pn.Column(self.message, self.progress, self.status, self.live_caption, self.live,
                              self.eval_section, sizing_mode="stretch_width")

        for w in self.inputs:
            w.param.watch(self._describe, "value")
        self.run_button.on_click(lambda _: self.run())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.eval_button.on_click(lambda _: self.evaluate())
        self.eval_cancel.on_click(lambda _: self.cancel_evaluation())
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            doc.on_session_destroyed(lambda _ctx: [j.cancel.set() for j in (self.job, self.eval_job) if j])  # tab closed
        self._describe()

    def __panel__(self):
        return pn.Row(pn.Column(self.controls, width=300), self.main, sizing_mode="stretch_width")

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.finished

    def reload(self):
        """Re-list the data folder's model and imatrix files (the store is read per run)."""
        self._sources.clear()           # a file may have been replaced since it was opened
        for widget, options in ((self.model, model_options()), (self.imatrix, imatrix_file_options())):
            value = widget.value
            widget.options = options
            widget.value = value if value in options.values() else ""
        self._describe()

    # ------------------------------------------------------------------------ planning
    def _source(self, path: Path | None) -> ModelSource:
        key = str(path or "")
        if key not in self._sources:    # opening validates the file's header: once per model
            self._sources[key] = open_model(path)
        return self._sources[key]

    def plan(self) -> Plan:
        """What Run would sweep, from the widgets; PlanError (one line) when it cannot run."""
        path = model_path(self.model.value or "")
        try:
            src = self._source(path)
        except SourceError as exc:
            raise PlanError(str(exc).splitlines()[0]) from None
        formats = choose_formats(self.grid.value, self.format_regex.value or "")
        names = [t.name for t in src.weights()]
        chosen = choose_tensors(names, self.tensor_regex.value or "", self.kinds.value)
        if not chosen:
            raise PlanError(f"no weight tensor of {src.model_id} matches the tensor regex and kinds")
        return Plan(path, src.model_id, formats, chosen, exact_pattern(chosen, names),
                    imatrix_path(self.imatrix.value or ""))

    def _describe(self, *_):
        if self.running:
            return
        try:
            p = self.plan()
        except PlanError as exc:
            self.choice.object = ""
            self._show(str(exc), "danger")
            return
        if self.message.alert_type == "danger":
            self.message.visible = False       # the settings are valid again
        self.choice.object = (f"**{len(p.formats)} formats** × **{len(p.tensors)} tensors** of "
                              f"{p.model_id} = {p.pairs} pairs (pairs already stored are skipped)")

    # ------------------------------------------------------------------------- running
    def run(self) -> SweepJob | None:
        """Start the sweep in the background (one at a time per page); None if it cannot run."""
        if self.running:
            return None
        try:
            plan = self.plan()
        except PlanError as exc:
            self._show(str(exc), "danger")
            return None
        self.job = SweepJob(plan, self.store)
        self._polls = self._stored = 0
        self._set_running(True)
        self.message.visible = False
        self.progress.value = -1
        self.progress.param.update(visible=True, max=max(plan.pairs, 1))   # -1: preparing
        self.status.object = f"preparing {plan.pairs} pairs (compiling kernels, skipping stored pairs)…"
        self.live.value = pd.DataFrame(columns=LIVE_COLUMNS)
        self.live_caption.visible = self.live.visible = False
        self.job.start()
        self._poll = PeriodicCallback(callback=self.poll, period=POLL_MS, log=False, background=True)
        self._poll.start()      # attaches to this session's document when served
        return self.job

    def cancel(self):
        """Stop after the tasks in flight; everything finished is kept in the store."""
        if self.running:
            self.job.cancel.set()
            self.cancel_button.disabled = True
            self.status.object = "cancelling: waiting for the tasks in flight…"

    def wait(self, timeout: float | None = None):
        """Block until the job's thread ends, then show its outcome (for scripts and tests)."""
        if self.job is not None:
            self.job.thread.join(timeout)
            self.poll()

    def poll(self):
        """Copy the job's state to the widgets (runs on the document's event loop when served),
        in one held batch: the bar and the status text reach the browser in the same patch."""
        with hold():
            self._poll_once()

    def _poll_once(self):
        job = self.job
        if job is None or job is self._shown:
            return
        with job.lock:
            done, total, started, rep, error = job.done, job.total, job.started, job.report, job.error
        finished = job.finished
        if started:
            _set_bar(self.progress, min(done, max(total, 1)), max(total, 1))
            self.status.object = f"{done} of {total} measured"
        self._polls += 1
        if finished or self._polls % STORE_EVERY == 0:
            self._refresh_live(job)
        if finished:
            self._finish(job, done, total, rep, error)

    def _refresh_live(self, job: SweepJob):
        try:
            count = int(st.runs(self.store, [job.run_id])["rows"].sum())
            best = st.run_results(self.store, job.run_id, LIVE_ROWS) if count else None
        except (duckdb.Error, OSError):
            return          # a store mid-write or unreadable: the next poll tries again
        if count == self._stored:
            return
        self._stored = count
        self.live.value = best[LIVE_COLUMNS].reset_index(drop=True)
        self.live_caption.object = f"**{count} rows** of this run stored so far; lowest nmse:"
        self.live_caption.visible = self.live.visible = True
        if self.notify:
            self.notify()       # other pages re-read the store when next shown

    def _finish(self, job: SweepJob, done: int, total: int, rep, error: str | None):
        self._shown = job
        if self._poll is not None:
            self._poll.stop()
            self._poll = None
        self._set_running(False)
        if error is not None:
            self.progress.visible = False
            self.status.object = ""
            self._show(error, "danger")
            return
        _set_bar(self.progress, min(done, max(total, 1)) if total else 1, max(total, 1))
        # whole tensors skipped (biases, norms) are listed on every run; pairs are worth a word
        pairs_skipped = sum(1 for _, fmt, _ in rep.skipped if fmt)
        extra = (f"; {rep.already} pairs were already stored" if rep.already else "") + \
                (f"; {pairs_skipped} pairs do not apply (reasons on the Data page)" if pairs_skipped else "")
        if job.cancel.is_set():
            self.status.object = f"cancelled after {done} of {total}; {rep.measured} rows kept"
            self._show(f"Sweep of {rep.model} cancelled after {done} of {total}; {rep.measured} rows kept "
                       f"(run {rep.run_id[:8]}){extra}.", "warning")
        else:
            self.status.object = (f"{done} of {total} measured" if total else
                                  f"nothing to measure: all {rep.already} pairs already stored")
            self._show(f"Sweep of {rep.model} done: {rep.measured} rows measured in {rep.seconds:.1f} s "
                       f"(run {rep.run_id[:8]}){extra}.", "success")
        if self.notify:
            self.notify()

    def _set_running(self, running: bool):
        for w in (*self.inputs, self.run_button):
            w.disabled = running
        self.cancel_button.disabled = not running

    # ---------------------------------------------------------------------- evaluation
    @property
    def evaluating(self) -> bool:
        return self.eval_job is not None and not self.eval_job.finished

    def evaluate(self) -> EvalJob | None:
        """Evaluate the chosen formats on the chosen model in the background; None if it cannot start."""
        if self.evaluating:
            return None
        formats = (self.eval_formats.value or "").strip() or None
        try:
            model = model_path(self.model.value or "")
            if formats:
                resolve(formats)           # a bad name: refused before anything starts
        except (PlanError, FormatError) as exc:
            self._show_eval(str(exc).splitlines()[0], "danger")
            return None
        self.eval_job = EvalJob(model, formats, bool(self.eval_sensitivity.value), self.store, self.evaluator)
        self.eval_section.objects = [self.eval_message, self.eval_progress, self.eval_status, self.eval_live]
        self._eval_polls = self._eval_stored = 0
        self._set_evaluating(True)
        self.eval_message.visible = False
        self.eval_progress.value = -1
        self.eval_progress.param.update(visible=True, max=1)
        self.eval_status.object = "preparing: loading the model and its reference outputs…"
        self.eval_live.value = pd.DataFrame(columns=EVAL_COLUMNS)
        self.eval_live.visible = False
        self.eval_job.start()
        self._eval_poll = PeriodicCallback(callback=self.poll_evaluation, period=POLL_MS, log=False, background=True)
        self._eval_poll.start()
        return self.eval_job

    def cancel_evaluation(self):
        """Stop after the evaluation in flight; every finished one is kept in the store."""
        if self.evaluating:
            self.eval_job.cancel.set()
            self.eval_cancel.disabled = True
            self.eval_status.object = "cancelling: waiting for the evaluation in flight…"

    def wait_evaluation(self, timeout: float | None = None):
        """Block until the evaluation's thread ends, then show its outcome (scripts and tests)."""
        if self.eval_job is not None:
            self.eval_job.thread.join(timeout)
            self.poll_evaluation()

    def poll_evaluation(self):
        """Copy the evaluation's state to the widgets (the document's event loop when served)."""
        job = self.eval_job
        if job is None or job is self._eval_shown:
            return
        with job.lock:
            done, total, current, started, rep, error = (job.done, job.total, job.current, job.started,
                                                         job.report, job.error)
        finished = job.finished
        if started:
            _set_bar(self.eval_progress, min(done, max(total, 1)), max(total, 1))
            self.eval_status.object = f"{done} of {total} evaluated (last: `{current}`)"
        self._eval_polls += 1
        if finished or self._eval_polls % STORE_EVERY == 0:
            self._refresh_eval_live(job)
        if finished:
            self._finish_evaluation(job, done, total, rep, error)

    def _refresh_eval_live(self, job: EvalJob):
        try:
            rows = eval_rows(self.store, job.run_id)
        except (duckdb.Error, OSError):
            return
        if len(rows) == self._eval_stored:
            return
        self._eval_stored = len(rows)
        self.eval_live.value = rows
        self.eval_live.visible = True
        if self.notify:
            self.notify()

    def _finish_evaluation(self, job: EvalJob, done: int, total: int, rep, error: str | None):
        self._eval_shown = job
        if self._eval_poll is not None:
            self._eval_poll.stop()
            self._eval_poll = None
        self._set_evaluating(False)
        if error is not None:
            self.eval_progress.visible = False
            self.eval_status.object = ""
            self._show_eval(error, "danger")
            return
        # a format that does not apply to the model reports no progress: the bar ends where the run did
        _set_bar(self.eval_progress, max(total, 1) if not job.cancel.is_set() else min(done, max(total, 1)),
                 max(total, 1))
        extra = (f"; {rep.already} were already stored" if rep.already else "") + \
                (f"; {len(rep.skipped)} do not apply ({rep.skipped[0][0]}: {rep.skipped[0][1]})" if rep.skipped else "")
        if job.cancel.is_set():
            self.eval_status.object = f"cancelled after {done} of {total}; {rep.measured} evaluations kept"
            self._show_eval(f"Evaluation of {rep.model} cancelled: {rep.measured} evaluations kept "
                            f"(run {rep.run_id[:8]}){extra}.", "warning")
        else:
            self.eval_status.object = (f"{done} of {total} evaluated" if total else
                                       f"nothing to evaluate: all {rep.already} already stored")
            self._show_eval(f"Evaluation of {rep.model} done: {rep.measured} evaluations in {rep.seconds:.1f} s "
                            f"(run {rep.run_id[:8]}){extra}. The Truth page shows them.", "success")
        if self.notify:
            self.notify()

    def _set_evaluating(self, running: bool):
        for w in (self.eval_formats, self.eval_sensitivity, self.eval_button):
            w.disabled = running
        self.eval_cancel.disabled = not running

    def _show_eval(self, text: str, kind: str):
        self.eval_message.object, self.eval_message.alert_type, self.eval_message.visible = text, kind, True

    def _show(self, text: str, kind: str):
        self.message.object, self.message.alert_type, self.message.visible = text, kind, True
