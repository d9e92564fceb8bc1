"""Sweep: every (tensor, format) pair of a model → metrics and timings → the store.

Work is split into (tensor, chunk of formats) tasks run on a thread pool (the Numba kernels
release the GIL, so threads use every core without copying tensors between processes). Rows
are flushed to the store as immutable files every few seconds, so a killed sweep loses at most
the last few seconds; a re-run skips every (tensor, format) already stored under the same
natural key (same backend, device and workbench version) and does only what is missing.
"""
from __future__ import annotations

import concurrent.futures as cf
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import workbench
from workbench import store as st
from workbench import backends
from workbench.codecs import NotOnThisBackend, as_kernel_input, codec_for
from workbench.formats import FormatSpec, resolve, spec_columns  # noqa: F401 (public here too)
from workbench.imatrix import load as load_imatrix, weights_for
from workbench.kernels.metrics import error_sums_given
from workbench.metrics import metrics_from_sums, tensor_metrics, signal_sums, weighted_metrics
from workbench.sources import ModelSource, TensorInfo, open_model

CHUNK = 24            # formats per task: small enough to balance a big tensor across cores
# at most this much finished work is lost when a sweep is killed (tests set it to 0)
FLUSH_SECONDS = float(os.environ.get("WORKBENCH_FLUSH_SECONDS", "5"))
FLUSH_ROWS = 2000


@dataclass
class SweepReport:
    model: str
    run_id: str
    measured: int = 0
    already: int = 0
    skipped: list[tuple[str, str, str]] = field(default_factory=list)   # (tensor, format, reason)
    fallbacks: list[tuple[str, str, str]] = field(default_factory=list)  # (tensor, format, applied)
    lossless: list[tuple[str, str]] = field(default_factory=list)  # (tensor, format) re-quantized exactly
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    replacing: int = 0          # --no-resume: stored pairs measured again (old rows moved aside)


def measure(spec: FormatSpec, x: np.ndarray, importance: np.ndarray | None = None, stats=None,
            timed: bool = True, check: bool = True, backend=None) -> dict:
    """Quantize → packed bytes → dequantize, timed; metrics of the reconstruction. With an
    importance vector (an imatrix entry for the tensor), formats that use one quantize with it
    (as llama-quantize --imatrix does) and the importance-weighted errors are added.

    ``timed=False``: the error columns only, by the fused kernel where the family has one (the
    uniform grid: ``codecs.UniformCodec.error_sums``, one pass, no bytes) — the same metrics
    bit for bit — and no timings (quant_s/dequant_s None). A timed measurement of a format with
    a fused kernel checks (``check``) the fused sums against the real path's and fails loudly if
    they differ. ``backend``: where the kernels run (``workbench.backends``; None: numba)."""
    codec = codec_for(spec, backend)
    rows, cols = x.shape
    applied, note = spec.plan(x.shape)
    use = importance is not None and codec.uses_importance(x.shape)
    fused = getattr(codec, "error_sums", None) if importance is None else None
    if stats is None and fused is not None:
        stats = signal_sums(x)
    if not timed and fused is not None:
        nbytes = spec.nbytes(x.shape)
        m = metrics_from_sums(fused(x, stats), x.size)
        t0 = t1 = t2 = None
    else:
        t0 = time.perf_counter()
        packed = codec.quantize(x, importance if use else None)
        t1 = time.perf_counter()
        y = codec.dequantize(packed, x.shape)
        t2 = time.perf_counter()
        nbytes = int(packed.size)
        sums = error_sums_given(x, y, *stats) if stats is not None else None
        m = metrics_from_sums(sums, x.size) if sums is not None else tensor_metrics(x, y)
        if check and fused is not None and not np.array_equal(fused(x, stats), sums, equal_nan=True):
            raise AssertionError(f"{spec.name}: the fused error kernel disagrees with quantize → "
                                 "dequantize on this tensor (a bug: report it)")
        if importance is not None:
            m.update(weighted_metrics(x, y, importance))
    if not (math.isfinite(m["mse"]) and math.isfinite(m["cosine"])):   # x is finite: y is not
        raise Unrepresentable(f"{spec.name} cannot represent this tensor (absmax "
                              f"{float(np.abs(x).max()):.3g}): its reconstruction holds Inf/NaN, a scale "
                              f"overflows its {spec.scale} encoding")
    return {**m, "bpw": nbytes * 8 / x.size, "nbytes": nbytes, "rows": rows, "cols": cols,
            "row_tail": spec.row_tail(cols),
            "applied_type": applied if spec.has_fallback else None, "fallback_note": note,
            "imatrix_note": None if importance is None or use else f"{applied} ignores the imatrix",
            "quant_s": None if t0 is None else t1 - t0, "dequant_s": None if t0 is None else t2 - t1}


TIMING_MAX_WEIGHTS = 1 << 22


def timing_tensor(weights: list[TensorInfo]) -> str | None:
    """The tensor a default sweep times every format on: the largest of at most
    ``TIMING_MAX_WEIGHTS`` (4 Mi) weights — big enough for a stable rate, small enough to be
    cheap — else the smallest; the first in model order among equals. (MiniLM: the 1536×384
    ``encoder.layer.0.intermediate.dense.weight``.)"""
    if not weights:
        return None
    sizes = [(t.numel, i) for i, t in enumerate(weights)]
    small = [(n, -i) for n, i in sizes if n <= TIMING_MAX_WEIGHTS]
    pick = -max(small)[1] if small else min(sizes)[1]
    return weights[pick].name


class Unrepresentable(ValueError):
    """A format whose reconstruction of a finite tensor is not finite (a scale overflows)."""


def warm_up(formats: list[FormatSpec], progress: bool | Callable[[int, int], None] = False,
            parallel: bool = True) -> None:
    """Run every format once on tiny tensors (a full block and a row tail) before anything is
    timed, so no timing includes compilation or the load of Numba's cache. Kernels specialise
    per scale encoding, single/double and search; llama.cpp types also run with an importance
    vector and on their fallbacks. The sweep hands kernels writable arrays only (``codecs.as_kernel_input``),
    so one array kind is compiled: Numba types a read-only array apart from a writable one.
    ``progress``: True shows a bar (the first run compiles; later runs load Numba's cache).
    ``parallel``: a cold cache is first filled by one process per core (``kernel_cache.precompile``)."""
    from workbench import kernel_cache
    kernel_cache.ensure_fresh()    # a cache compiled from other kernel sources is dropped first
    todo = list(formats)
    bar = None
    if parallel:
        have = kernel_cache.warmed()
        cold = [f for f in todo if f.name not in have]
        if cold and progress is True:
            from tqdm import tqdm
            with tqdm(total=None, unit="process", desc="compiling kernels (first run only)",
                      dynamic_ncols=True) as cbar:
                kernel_cache.precompile(cold, progress=lambda d, n: (setattr(cbar, "total", n), cbar.update(1)))
        elif cold:
            kernel_cache.precompile(cold)
    if progress is True:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), unit="fmt", desc="loading kernels", dynamic_ncols=True)
    for i, f in enumerate(todo):
        for cols in (256, 96):
            x = np.linspace(-1, 1, 2 * cols, dtype=np.float32).reshape(2, cols)
            if f.applies_to(x.shape):
                continue
            measure(f, x, stats=signal_sums(x))
            measure(f, x, stats=signal_sums(x), timed=False)    # the fused kernel too
            if codec_for(f).uses_importance(x.shape):     # the importance path compiles apart
                measure(f, x, np.linspace(0.5, 2, cols, dtype=np.float32))
        if bar is not None:
            bar.update(1)
        elif callable(progress):
            progress(i + 1, len(todo))
    if bar is not None:
        bar.close()
    kernel_cache.mark_warmed(f.name for f in todo)


def _non_finite(x: np.ndarray) -> int:
    return int(x.size - np.count_nonzero(np.isfinite(x)))


def run(model: str | os.PathLike | None = None, formats: str | list[FormatSpec] | None = None,
        tensors: str | None = None, store: str | os.PathLike | None = None, workers: int | None = None,
        resume: bool = True, progress: bool | Callable[[int, int], None] = True,
        cancel: threading.Event | None = None, imatrix: str | os.PathLike | None = None,
        run_id: str | None = None, timing: str = "one", backend=None) -> SweepReport:
    """Sweep a model; see the module docstring. ``progress`` is True (a tqdm bar), False, or a
    callback(done, total). Setting ``cancel`` stops after the tasks in flight and keeps them.
    ``imatrix``: an importance-matrix file (llama.cpp's GGUF or legacy .dat): llama.cpp types
    are quantized with it as ``llama-quantize --imatrix`` does, and every row gets the
    importance-weighted errors; rows are keyed by the file's fingerprint, so a sweep with and
    one without an imatrix live side by side. A tensor the file has no entry for is measured
    without one, and the row says why (``imatrix_note``). ``run_id``: the id the rows get (new
    by default); a caller that watches the store while the sweep runs picks it first.

    ``timing``: "one" (the default) times the real quantize → bytes → dequantize path of every
    format on one tensor (``timing_tensor``) and measures the error columns of the others with
    the fused kernel where the family has one (same values, bit for bit; quant_s/dequant_s
    stay empty on those rows); "all" times every (tensor, format) pair, as before.

    ``backend``: a backend object or name (``workbench.backends``: numba, cupy, auto; default
    numba). Its name and device go into every row and into the resume key; a format it has no
    kernels for is skipped and listed with the reason."""
    if timing not in ("one", "all"):
        raise ValueError(f"timing {timing!r}: one of one, all")
    t_start = time.perf_counter()
    src: ModelSource = open_model(model)            # validates the whole file before any write
    imx = load_imatrix(imatrix) if imatrix is not None else None   # likewise: one-line error
    imx_fp = imx.fingerprint if imx is not None else ""
    specs = resolve(formats) if not isinstance(formats, list) else formats
    store = Path(store) if store else st.default_store()
    run_id = run_id or st.new_run_id()
    be = backends.resolve(backend)
    prov = st.provenance(run_id, be.name, be.device())
    rep = SweepReport(src.model_id, run_id)
    stored = st.done_keys(store, src.model_id, be.name, prov["device"], workbench.__version__, imx_fp)
    done = stored if resume else set()      # --no-resume: measure again, the new rows replace the old

    skips = [(t.name, "", t.skip_reason) for t in src.skipped()]
    weights = src.weights(tensors)
    if tensors and not weights:
        raise st.StoreError(f"no weight tensor of {src.model_id} matches --tensors {tensors!r}")
    timed_name = timing_tensor(weights) if timing == "one" else None
    tasks: list[tuple[TensorInfo, list[FormatSpec]]] = []
    unsupported = {f.name: f"backend {be.name}: {why}" for f in specs if (why := be.supports(f))}
    for t in weights:
        todo = []
        for f in specs:
            if (t.name, f.name) in done:
                rep.already += 1
                continue
            reason = f.applies_to(t.matrix_shape) or unsupported.get(f.name)
            if reason:
                skips.append((t.name, f.name, reason))
            else:
                todo.append(f)
        tasks += [(t, todo[i:i + CHUNK]) for i in range(0, len(todo), CHUNK)]
    total = sum(len(fs) for _, fs in tasks)
    rep.replacing = 0 if resume else sum((t.name, f.name) in stored for t, fs in tasks for f in fs)

    base = {"model": src.model_id, "model_fingerprint": src.fingerprint, "imatrix": imx_fp,
            "imatrix_file": Path(imatrix).name if imx is not None else None, **prov}
    lock = threading.Lock()
    pending: list[dict] = []
    last_flush = [time.monotonic()]

    def flush(force=False):
        with lock:
            if not pending or not (force or len(pending) >= FLUSH_ROWS
                                   or time.monotonic() - last_flush[0] > FLUSH_SECONDS):
                return
            batch = pending[:]
            pending.clear()
            last_flush[0] = time.monotonic()
        try:
            files, dropped = st.write_new(store, batch, replace=not resume)   # keys checked again under the lock
        except BaseException:   # interrupted mid-write: the rows go back for the final flush
            with lock:
                pending[:0] = batch
            raise
        rep.files += files
        rep.measured -= dropped     # another writer stored them since this sweep started
        rep.already += dropped

    bar = None
    count = [0]

    def task(t: TensorInfo, fs: list[FormatSpec]):
        if cancel is not None and cancel.is_set():
            return [], []
        prepared = recent.get(t.name)
        if prepared is None:
            try:
                x = as_kernel_input(t.load())
            except Exception as exc:  # noqa: BLE001 - damage found only when the bytes are read
                why = (str(exc).splitlines() or [exc.__class__.__name__])[0][:160]
                return [], [(t.name, f.name, f"tensor cannot be read ({why})") for f in fs]
            bad = _non_finite(x)
            prepared = (x, bad, None if bad else signal_sums(x))   # x's own sums, once per tensor
            with lock:
                recent[t.name] = prepared
                while len(recent) > 2 * workers:   # tasks run in tensor order: keep the last few
                    recent.pop(next(iter(recent)))
        x, bad, stats = prepared
        if bad:
            return [], [(t.name, f.name, f"tensor has {bad} non-finite values (NaN/Inf)") for f in fs]
        w, why = (None, None) if imx is None else weights_for(imx, t.name, x.shape[1])
        out, sk = [], []
        for f in fs:
            try:
                m = measure(f, x, w, stats, timed=timed_name is None or t.name == timed_name,
                            check=timed_name is not None, backend=be)   # --time-all: the old path, unchanged
            except Unrepresentable as exc:
                sk.append((t.name, f.name, str(exc)))
                continue
            except NotOnThisBackend as exc:     # e.g. an imatrix on a backend without that path
                sk.append((t.name, f.name, f"backend {be.name}: {exc}"))
                continue
            row = {**base, "tensor": t.name, "source_dtype": t.dtype,
                   "source_quantized": t.source_quantized, **spec_columns(f), **m}
            if why:
                row["imatrix_note"] = why
            out.append(row)
        return out, sk

    recent: dict[str, tuple] = {}               # tensor name -> (x, non-finite count, x's sums)
    workers = workers or os.cpu_count() or 1
    if be.name == backends.default().name:      # Numba compiles (or loads) its kernels first
        warm_up(specs, progress=progress is True)   # its own bar: the sweep's ETA starts after it
    if progress is True:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="fmt", desc=f"sweep {src.model_id}", dynamic_ncols=True)
    pool = cf.ThreadPoolExecutor(max_workers=workers)
    try:
        futs = [pool.submit(task, t, fs) for t, fs in tasks]
        for fut in cf.as_completed(futs):
            if fut.cancelled():
                continue
            rows, sk = fut.result()
            skips += sk
            rep.fallbacks += [(r["tensor"], r["format"], r["applied_type"]) for r in rows if r["fallback_note"]]
            rep.lossless += [(r["tensor"], r["format"]) for r in rows if r["mse"] == 0]
            with lock:
                pending.extend(rows)
            flush()
            n = len(rows) + len(sk)
            count[0] += n
            rep.measured += len(rows)
            if bar is not None:
                bar.update(n)
            elif callable(progress):
                progress(count[0], total)
            if cancel is not None and cancel.is_set():
                for f in futs:
                    f.cancel()
        pool.shutdown()
    except BaseException:  # Ctrl-C or a failure: drop queued tasks, keep what has finished
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        flush(force=True)
        if bar is not None:
            bar.close()
        rep.skipped = skips
        if skips:
            rep.files += st.write(store, "skips", [
                {"model": src.model_id, "tensor": t, "format": f, "reason": r, "backend": be.name,
                 "run_id": run_id, "created_at": prov["created_at"],
                 "workbench_version": workbench.__version__, "schema_version": st.SCHEMA_VERSION}
                for t, f, r in skips])
        rep.seconds = time.perf_counter() - t_start
    return rep
