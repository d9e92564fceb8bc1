"""The result store: a folder of immutable Parquet files, queried with DuckDB.

Layout: ``<store>/model=<id>/table=<results|skips>/<uuid>.parquet``. Every file is written to a
temporary name and renamed, so readers (DuckDB's glob) never see a partial file, and several
processes (a sweep, the dashboard, an import) can work at once without a database lock. Files
are never rewritten; each row carries its provenance and the schema version.

Natural key (dedupe on import, resume of a sweep): ``model, tensor, format, imatrix, backend,
device, workbench_version`` — the same measurement by the same code on the same kind of device
with the same importance matrix (``imatrix`` is the file's fingerprint, "" for none).

Schema history: 1 = first release; 2 adds ``applied_type``/``fallback_note`` (the llama.cpp type
actually written for a tensor and why it differs from ``format``), ``imatrix``/``imatrix_note``
(fingerprint), ``imatrix_file`` (its file name) and the importance-weighted errors
``wmse``/``wnmse``. Version-1 files import with those NULL
(``imatrix`` ""). 3 adds ``bnl_seed`` (the seed project's strided block-normalised loss) and the
``model_eval`` table (what a format does to a model's outputs: ``workbench eval``), whose natural
key is ``EVAL_KEY``.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import functools
import threading
import json
import os
import platform
import re
import socket
import subprocess
import uuid
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import workbench
from workbench.formats import SPEC_COLUMNS

SCHEMA_VERSION = 4
# Schema 4 records a format's scale granularity as users know it (formats.scale_layout): block =
# weights per scale (Q4_K 32, NVFP4 16), scale_dtype = that scale's encoding (int6 for Q4_K's
# sub-block scales and a double format's block scales), super_block_weights / super_scale_dtype
# for two-level formats. Versions 1-3 stored the unit (Q4_K 256) and the float encoding there:
# rows of those versions are migrated on read (``connect``), from the format name.
LAYOUT_SINCE = 4
LAYOUT_COLS = ("block", "scale_dtype", "super_block_weights", "super_scale_dtype")
NATURAL_KEY = ("model", "tensor", "format", "imatrix", "backend", "device", "workbench_version")
MAY_BE_EMPTY = ("imatrix",)  # natural-key columns where "" is a value (no imatrix)
MODEL_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")

# quant_s/dequant_s: seconds of the real quantize → bytes and bytes → dequantize of that pair;
# empty (null) where the error columns came from the fused kernel without bytes (a default
# sweep times each uniform format on one tensor only: workbench/sweep.py ``timing_tensor``).
# The format's columns: their names and order are ``formats.SPEC_COLUMNS`` (what
# ``formats.spec_columns`` writes for a spec), their types here.
SPEC_TYPES = {
    "format": pa.string(), "family": pa.string(), "bits": pa.int16(), "block": pa.int32(),
    "symmetric": pa.bool_(), "scale_dtype": pa.string(), "super_bits": pa.int16(),
    "super_block": pa.int32(), "super_symmetric": pa.bool_(), "super_block_weights": pa.int32(),
    "super_scale_dtype": pa.string(), "search": pa.string(), "normalizer": pa.bool_(),
    "naive": pa.bool_(),
}
assert tuple(SPEC_TYPES) == SPEC_COLUMNS, "store.SPEC_TYPES and formats.SPEC_COLUMNS disagree"
RESULTS_SCHEMA = pa.schema([
    ("model", pa.string()), ("tensor", pa.string()), *SPEC_TYPES.items(), ("applied_type", pa.string()), ("fallback_note", pa.string()),
    ("imatrix", pa.string()), ("imatrix_file", pa.string()), ("imatrix_note", pa.string()),
    ("bpw", pa.float64()), ("nbytes", pa.int64()), ("numel", pa.int64()), ("rows", pa.int64()),
    ("cols", pa.int64()), ("row_tail", pa.int32()),
    ("mse", pa.float64()), ("rmse", pa.float64()), ("nmse", pa.float64()), ("sqnr_db", pa.float64()),
    ("max_abs_err", pa.float64()), ("cosine", pa.float64()), ("bnl", pa.float64()),
    ("bnl_seed", pa.float64()), ("wmse", pa.float64()), ("wnmse", pa.float64()),
    ("quant_s", pa.float64()), ("dequant_s", pa.float64()),
    ("source_dtype", pa.string()), ("source_quantized", pa.bool_()), ("model_fingerprint", pa.string()),
    ("backend", pa.string()), ("device", pa.string()), ("host", pa.string()),
    ("run_id", pa.string()), ("created_at", pa.timestamp("us", tz="UTC")),
    ("workbench_version", pa.string()), ("git_rev", pa.string()), ("packages", pa.string()),
    ("schema_version", pa.int32()),
])
# Columns an imported file must have (the rest may be missing in an older minor schema → NULL).
REQUIRED = ("model", "tensor", "format", "family", "bpw", "numel", "mse", "nmse", "backend",
            "device", "run_id", "created_at", "workbench_version", "schema_version")

SKIPS_SCHEMA = pa.schema([
    ("model", pa.string()), ("tensor", pa.string()), ("format", pa.string()), ("reason", pa.string()),
    ("backend", pa.string()), ("run_id", pa.string()), ("created_at", pa.timestamp("us", tz="UTC")),
    ("workbench_version", pa.string()), ("schema_version", pa.int32()),
])
# Reference timings of `workbench bench --vs llama.cpp --store`: llama.cpp's C quantizer and our
# Numba kernels on the same tensors, best of the benchmark's passes (quantization only). imatrix
# is the importance matrix's fingerprint ("" without one), as in results.
TIMINGS_SCHEMA = pa.schema([
    ("model", pa.string()), ("format", pa.string()), ("implementation", pa.string()),
    ("threads", pa.int32()), ("imatrix", pa.string()), ("imatrix_file", pa.string()),
    ("tensors", pa.int32()), ("numel", pa.int64()), ("bpw", pa.float64()), ("repeat", pa.int32()),
    ("quant_s", pa.float64()), ("quant_wps", pa.float64()), ("identical", pa.bool_()),
    ("reference_version", pa.string()), ("host", pa.string()), ("device", pa.string()),
    ("run_id", pa.string()), ("created_at", pa.timestamp("us", tz="UTC")),
    ("workbench_version", pa.string()), ("git_rev", pa.string()), ("packages", pa.string()),
    ("schema_version", pa.int32()),
])
# Model-level truth (``workbench eval``, workbench/evaluate.py): one row per (model, format or mix,
# tensors quantized, text) — what the fake-quantized model's outputs lose against the reference.
# variant: "fake" (our quantize -> bytes -> dequantize, evaluated in float32) or "llama.cpp" (the
# model llama.cpp's own llama_model_quantize writes, evaluated by its quantized matmuls).
# tensors: "all", "group:<name>" (one group at a time: sensitivity) or "tensor:<name>".
# Encoder metrics (kind "encoder"): drift = 1 - mean cosine to the reference sentence embeddings,
# cosine_min, rank_agreement (mean Spearman of each query's similarity ranking), top1_agreement.
# LLM metrics (kind "llm"), as `llama-perplexity --kl-divergence`: kld_mean/median/p99/max, top1
# (same argmax), ppl, ppl_ref, dppl = ppl - ppl_ref. The w_* columns are weight metrics of the
# same quantized tensors (numel-weighted means over them), and group_nmse a JSON object
# {group: nmse} (the sensitivity-weighted metric of workbench/truth.py is built from it).
MODEL_EVAL_SCHEMA = pa.schema([
    ("model", pa.string()), ("kind", pa.string()), ("format", pa.string()), ("variant", pa.string()),
    ("mix", pa.string()), ("tensors", pa.string()), ("family", pa.string()),
    ("n_tensors", pa.int32()), ("numel", pa.int64()), ("numel_total", pa.int64()), ("bpw", pa.float64()),
    ("lossless_tensors", pa.int32()), ("fallback_tensors", pa.int32()), ("applied_types", pa.string()),
    ("skipped_tensors", pa.string()), ("source_types", pa.string()),
    ("text_name", pa.string()), ("text", pa.string()), ("n_tokens", pa.int64()), ("n_ctx", pa.int32()),
    ("drift", pa.float64()), ("cosine_min", pa.float64()), ("rank_agreement", pa.float64()),
    ("top1_agreement", pa.float64()),
    ("kld_mean", pa.float64()), ("kld_median", pa.float64()), ("kld_p99", pa.float64()),
    ("kld_max", pa.float64()), ("top1", pa.float64()), ("ppl", pa.float64()), ("ppl_ref", pa.float64()),
    ("dppl", pa.float64()),
    ("w_nmse", pa.float64()), ("w_wnmse", pa.float64()), ("w_max_err", pa.float64()),
    ("w_bnl", pa.float64()), ("w_bias", pa.float64()), ("w_actmean", pa.float64()),
    ("group_nmse", pa.string()), ("eval_s", pa.float64()),
    ("model_fingerprint", pa.string()), ("runtime", pa.string()), ("runtime_version", pa.string()),
    ("backend", pa.string()), ("device", pa.string()), ("host", pa.string()),
    ("run_id", pa.string()), ("created_at", pa.timestamp("us", tz="UTC")),
    ("workbench_version", pa.string()), ("git_rev", pa.string()), ("packages", pa.string()),
    ("schema_version", pa.int32()),
])
EVAL_KEY = ("model", "model_fingerprint", "format", "variant", "tensors", "text", "n_ctx", "backend",
            "device", "workbench_version", "runtime_version")
EVAL_REQUIRED = EVAL_KEY + ("kind", "bpw", "run_id", "created_at", "schema_version")
TABLES = {"results": RESULTS_SCHEMA, "skips": SKIPS_SCHEMA, "timings": TIMINGS_SCHEMA,
          "model_eval": MODEL_EVAL_SCHEMA}


class StoreError(ValueError):
    """A refused store operation; the message is one line for the user. Nothing was written."""


def default_store() -> Path:
    """$WORKBENCH_STORE, else data/store in the project checkout."""
    env = os.environ.get("WORKBENCH_STORE")
    if env:
        return Path(env)
    return Path(workbench.__file__).resolve().parent.parent / "data" / "store"


# ------------------------------------------------------------------------------- provenance
@functools.cache
def device_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(workbench.__file__).parent, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def package_versions() -> str:
    import numba
    return json.dumps({"workbench": workbench.__version__, "numpy": np.__version__,
                       "numba": numba.__version__, "python": platform.python_version()}, sort_keys=True)


def provenance(run_id: str, backend: str, device: str | None = None) -> dict:
    """The columns every row of a run shares; ``device``: the backend's (default: this CPU)."""
    return {"backend": backend, "device": device or device_name(), "host": socket.gethostname(),
            "run_id": run_id, "created_at": pd.Timestamp.now(tz="UTC"),
            "workbench_version": workbench.__version__, "git_rev": git_rev(),
            "packages": package_versions(), "schema_version": SCHEMA_VERSION}


def new_run_id() -> str:
    return uuid.uuid4().hex


# ------------------------------------------------------------------------------------ write
def _to_table(rows: list[dict] | pd.DataFrame, schema: pa.Schema) -> pa.Table:
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows
    for f in schema:
        if f.name not in df.columns:
            df[f.name] = None
    return pa.Table.from_pandas(df[[f.name for f in schema]], schema=schema, preserve_index=False)


LOCK_NAME = ".lock"


@contextlib.contextmanager
def store_lock(store: str | Path):
    """The store-wide writer lock (flock on ``<store>/.lock``): every writer — sweeps, imports,
    repairs, in any process — checks natural keys and publishes files while holding it, so no
    key is ever stored twice. Readers never take it."""
    Path(store).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(store) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _publish(store: str | Path, table: str, part: pa.Table, model: str) -> Path:
    folder = Path(store) / f"model={model}" / f"table={table}"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{uuid.uuid4().hex}.parquet"
    tmp = final.with_suffix(".parquet.tmp")
    try:
        pq.write_table(part, tmp, compression="zstd")
        os.replace(tmp, final)  # atomic publish: the glob never sees a partial file
    except BaseException:       # an error or a signal mid-write leaves no unfinished file
        tmp.unlink(missing_ok=True)
        raise
    return final


KEY_FIXED = ("model", "backend", "device", "workbench_version", "imatrix")  # a writer's constants
_KEY_INDEX: dict[tuple, tuple[set[str], set[tuple[str, str]]]] = {}      # -> (files read, keys)


def _stored_pairs(store: str | Path, fixed: tuple) -> set[tuple[str, str]]:
    """(tensor, format) pairs stored under the natural-key constants ``fixed`` (KEY_FIXED order).
    Files are immutable, so each is read once per process (key columns only); call it with the
    store lock held so no file appears between this read and the caller's write."""
    folder = Path(store) / f"model={fixed[0]}" / "table=results"
    entry = _KEY_INDEX.setdefault((str(Path(store).resolve()), fixed), (set(), set()))
    seen, pairs = entry
    files = {p.name for p in folder.glob("*.parquet")}
    if seen - files:              # a file was moved aside (store repair): read everything again
        seen.clear()
        pairs.clear()
    for name in sorted(files - seen):
        fault = file_fault(folder / name, "results")
        keys = None if fault else _file_keys(folder / name)
        if keys is None and not fault:   # readable a moment ago: never write without its keys
            raise StoreError(f"{folder / name}: cannot read its keys to check for duplicates; nothing written")
        if keys is not None:      # a file queries skip holds no row they see
            m = np.ones(len(keys), bool)
            for col, val in zip(KEY_FIXED, fixed):
                m &= keys[col].to_numpy() == val
            pairs.update(zip(keys["tensor"][m], keys["format"][m]))
        seen.add(name)
    return pairs


def _file_keys(path: Path) -> pd.DataFrame | None:
    try:
        names = pq.read_schema(path).names
        t = pq.read_table(path, columns=[c for c in NATURAL_KEY if c in names])
    except Exception:  # noqa: BLE001 - a damaged file: `workbench store check` reports it
        return None
    return key_frame(t, path)


def key_frame(t: pa.Table, path: Path, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """The natural key of each row of a store file's table ``t`` (and the ``extra`` columns),
    as queries see it: the model from the ``model=`` folder when the file lacks it, "" for an
    imatrix older files lack."""
    df = t.select([c for c in NATURAL_KEY + extra if c in t.column_names]).to_pandas()
    if "model" not in df:          # written without it: the folder names the model
        df["model"] = path.parent.parent.name[len("model="):]
    for c in NATURAL_KEY:
        if c not in df:
            df[c] = "" if c in MAY_BE_EMPTY else None
    df["imatrix"] = df["imatrix"].fillna("")
    return df


def write_new(store: str | Path, rows: list[dict] | pd.DataFrame,
              replace: bool = False) -> tuple[list[Path], int]:
    """Append results rows whose natural key is not stored yet (nor repeated earlier in
    ``rows``), checked under the store lock at write time; returns (files, rows dropped).

    ``replace`` (``sweep --no-resume``): the rows supersede the stored rows of their keys, which
    move aside with their files (``_supersede``); nothing is dropped."""
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows
    if len(df) == 0:
        return [], 0
    df = df.copy()
    df["imatrix"] = df["imatrix"].fillna("") if "imatrix" in df else ""
    before = len(df)
    df = df.drop_duplicates(list(NATURAL_KEY), keep="first")
    paths: list[Path] = []
    with store_lock(store):
        if replace:
            _supersede(store, df)
        keep = []
        for fixed, group in df.groupby(list(KEY_FIXED), sort=True, dropna=False):
            have = _stored_pairs(store, tuple(fixed))
            pair = list(zip(group["tensor"], group["format"]))
            mask = np.fromiter((p not in have for p in pair), bool, len(pair))
            keep.append(group[mask])
        df = pd.concat(keep) if keep else df.iloc[:0]
        paths = _write_unlocked(store, "results", df)
        for fixed, group in df.groupby(list(KEY_FIXED), sort=True, dropna=False):
            entry = _KEY_INDEX.get((str(Path(store).resolve()), tuple(fixed)))
            if entry is not None:   # our own files: their keys are known without reading them
                entry[0].update(p.name for p in paths if f"model={fixed[0]}" in p.parts)
                entry[1].update(zip(group["tensor"], group["format"]))
    return paths, before - len(df)


SUPERSEDED = "superseded"      # <store>/quarantine/superseded/<UTC time>/: rows a re-measure replaced


def _result_keys(path: Path) -> list[tuple] | None:
    keys = _file_keys(path)
    return None if keys is None else list(keys[list(NATURAL_KEY)].astype(str).itertuples(index=False, name=None))


def _supersede(store: str | Path, df: pd.DataFrame, table: str = "results", keys_of=None,
               wanted: set | None = None) -> int:
    """Under the store lock: move every ``table`` file holding one of ``df``'s natural keys into
    ``quarantine/superseded/<UTC time>/`` (nothing is deleted), after writing its other rows
    again as a new file. An interruption leaves at worst those other rows twice (``store check
    --repair`` removes the copy) or the replaced keys missing (a resumed run measures them);
    never a lost row, never two rows queries could both read. ``keys_of(path)``: a file's keys
    (None: unreadable, skipped) in the form of ``wanted`` (default: the results' natural key as
    text). Returns the files moved."""
    store = Path(store)
    keys_of = keys_of or _result_keys
    if wanted is None:
        wanted = set(map(tuple, df[list(NATURAL_KEY)].astype(str).itertuples(index=False, name=None)))
    moved = []
    for model in sorted(set(df["model"].astype(str))):
        for path in sorted((store / f"model={model}" / f"table={table}").glob("*.parquet")):
            keys = keys_of(path)
            if keys is None:                  # damaged: queries skip it, `store check` reports it
                continue
            hit = np.fromiter((k in wanted for k in keys), bool, len(keys))
            if hit.any():
                moved.append((path, hit))
    if not moved:
        return 0
    where = store / "quarantine" / SUPERSEDED / _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    for path, hit in moved:
        if not hit.all():
            rest = pq.read_table(path).to_pandas().iloc[np.flatnonzero(~hit)].reset_index(drop=True)
            if "model" not in rest:
                rest["model"] = path.parent.parent.name[len("model="):]
            _write_unlocked(store, table, rest)
    for path, _ in moved:
        dest = where / path.relative_to(store)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
    return len(moved)


def write(store: str | Path, table: str, rows: list[dict] | pd.DataFrame) -> list[Path]:
    """Append rows as new immutable files, one per model partition; returns the files. Results
    rows go through ``write_new``: a natural key already stored is never written again."""
    if table == "results":
        return write_new(store, rows)[0]
    if table == "model_eval":
        from workbench.eval_store import write_evals
        return write_evals(store, rows)[0]
    with store_lock(store):
        return _write_unlocked(store, table, rows)


def _write_unlocked(store: str | Path, table: str, rows: list[dict] | pd.DataFrame) -> list[Path]:
    t = _to_table(rows, TABLES[table])
    if t.num_rows == 0:
        return []
    models = sorted(set(t.column("model").to_pylist()), key=str)
    for model in models:   # every partition name is checked before the first file is written
        if not isinstance(model, str) or not MODEL_ID.match(model):
            raise StoreError(f"invalid model id {model!r} (letters, digits, '.', '_', '-')")
    return [_publish(store, table, t.filter(pa.compute.equal(t.column("model"), m)), m) for m in models]


# ------------------------------------------------------------------------------------- read
def _glob(store: str | Path, table: str) -> str:
    return str(Path(store) / "model=*" / f"table={table}" / "*.parquet")


def has_files(store: str | Path, table: str = "results") -> bool:
    return any(Path(store).glob(f"model=*/table={table}/*.parquet"))


_SQL_TYPES = {"bool": "BOOLEAN", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT",
              "double": "DOUBLE", "timestamp[us, tz=UTC]": "TIMESTAMPTZ", "string": "VARCHAR"}


def sql_type(t: pa.DataType) -> str:
    return "VARCHAR" if pa.types.is_string(t) else _SQL_TYPES.get(str(t), "DOUBLE")


def _kind(t: pa.DataType) -> str:
    """A column type's kind, for telling a compatible file (int32 for int16) from a foreign one."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t) and \
            pa.types.is_string(t.value_type):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_null(t):
        return "null"
    return str(t)


def schema_fault(file_schema: pa.Schema, table: str, in_store: bool = False) -> str | None:
    """Why a Parquet schema is not one of ``table``'s (None: it is, maybe an older minor one).
    ``in_store``: a file inside the store, whose model may come from its ``model=`` folder."""
    want = TABLES[table]
    need = {"results": REQUIRED, "model_eval": EVAL_REQUIRED}.get(table, ("model", "run_id"))
    missing = [c for c in need if c not in file_schema.names and not (in_store and c == "model")]
    if missing:
        return f"not a workbench {table} file (missing columns: {', '.join(missing)})"
    for f in want:
        if f.name not in file_schema.names:
            continue
        got, exp = _kind(file_schema.field(f.name).type), _kind(f.type)
        if got != exp and got != "null" and not (exp == "float" and got == "int"):
            return f"column {f.name!r} has type {file_schema.field(f.name).type}, expected {f.type}"
    return None


# (path, size, mtime_ns) -> None (usable) or why a store file is skipped by every query
_FILE_FAULTS: dict[tuple[str, int, int], str | None] = {}


def file_fault(path: Path, table: str) -> str | None:
    """Why a store file cannot be queried (footer, schema), cached while the file is unchanged."""
    try:
        st_ = path.stat()
    except OSError as exc:
        return f"cannot stat ({exc.strerror})"
    key = (str(path), st_.st_size, st_.st_mtime_ns)
    if key not in _FILE_FAULTS:
        try:
            fault = schema_fault(pq.read_schema(path), table, in_store=True) or _model_fault(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types on a damaged file
            first = (str(exc).splitlines() or [""])[0].split(". ")[0][:100]   # its first sentence
            fault = f"unreadable Parquet ({exc.__class__.__name__}: {first})"
        _FILE_FAULTS[key] = fault
    return _FILE_FAULTS[key]


def _model_fault(path: Path) -> str | None:
    """A file whose rows name another model than its ``model=`` folder (queries would file its
    rows under the folder's model while their keys say another)."""
    folder = path.parent.parent.name[len("model="):]
    meta = pq.read_metadata(path)
    names = meta.schema.to_arrow_schema().names
    if "model" not in names or meta.num_rows == 0:
        return None
    i = names.index("model")
    values = set()
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(i).statistics
        if stats is None or not stats.has_min_max:
            values = set(pq.read_table(path, columns=["model"]).column("model").to_pylist())
            break
        values |= {stats.min, stats.max}
    values = {v.decode() if isinstance(v, bytes) else v for v in values}
    return None if values == {folder} else f"its rows name another model than its folder model={folder}"


def store_files(store: str | Path, table: str) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The table's files every query reads, and the ones it skips with the reason."""
    good, bad = [], []
    for path in sorted(Path(store).glob(f"model=*/table={table}/*.parquet")):
        fault = file_fault(path, table)
        (bad.append((path, fault)) if fault else good.append(path))
    return good, bad


def skipped_files(store: str | Path) -> list[tuple[Path, str]]:
    """Store files that queries leave out (unreadable or foreign), with the reason: the CLI and
    the dashboard name them; `workbench store check --repair` moves them aside."""
    return [b for table in TABLES for b in store_files(store, table)[1]]


def skipped_note(store: str | Path) -> str:
    """One line naming the store files queries leave out ("" when there are none)."""
    bad = skipped_files(store)
    if not bad:
        return ""
    names = "; ".join(f"{Path(p).relative_to(store)} ({why})" for p, why in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return (f"skipped {len(bad)} store file(s) that cannot be read: {names}{more}; "
            "`workbench store check --repair` moves them aside")


GLOB_CHARS = set("*?[")


def sql_path(path: str | Path) -> str:
    """A path as a DuckDB string literal; DuckDB would glob *, ? and [, so those are refused."""
    text = str(path)
    if GLOB_CHARS & set(text):
        raise StoreError(f"{text}: a path with '*', '?' or '[' cannot be read without globbing; rename it")
    return "'" + text.replace("'", "''") + "'"


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join(sql_path(p) for p in paths) + "]"


def _key_sql(have, alias: str = "") -> str:
    """The natural key over raw files' columns ``have`` ("" for an imatrix column older files lack)."""
    return ", ".join((f"coalesce({alias}\"{c}\", '')" if c in have else "''") if c in MAY_BE_EMPTY
                     else f'{alias}"{c}"' for c in NATURAL_KEY)


def schema_columns(schema: pa.Schema, have, alias: str = "", migrate: str | None = None) -> str:
    """SELECT list presenting raw columns ``have`` in ``schema``'s current form: each column cast
    to its type, a column older files lack as NULL ("" for a natural-key column such as imatrix).
    ``migrate``: the alias of a table of ``LAYOUT_COLS`` by format (``layout_table``) that
    replaces those columns in rows written before schema ``LAYOUT_SINCE``."""
    cols = []
    old = f'coalesce({alias}"schema_version", 0) < {LAYOUT_SINCE}' if "schema_version" in have else "TRUE"
    for f in schema:
        if f.name in have:
            expr = f"coalesce({alias}\"{f.name}\", '')" if f.name in MAY_BE_EMPTY else f'{alias}"{f.name}"'
        else:
            expr = "''" if f.name in MAY_BE_EMPTY else "NULL"
        if migrate and f.name in LAYOUT_COLS:
            expr = f'CASE WHEN {old} AND {migrate}."format" IS NOT NULL THEN {migrate}."{f.name}" ELSE {expr} END'
        cols.append(f'CAST({expr} AS {sql_type(f.type)}) AS "{f.name}"')
    return ", ".join(cols)


_LAYOUTS: dict[tuple, list[str]] = {}   # results files (path, size, mtime) -> formats in pre-4 rows


def layout_table(con: duckdb.DuckDBPyConnection, src: str, have, sig: tuple | None = None) -> str | None:
    """Register ``layout_v4``: ``LAYOUT_COLS`` of each format name found in rows of ``src``
    written before schema ``LAYOUT_SINCE`` (names that do not parse keep their stored values).
    None when there are no such rows. ``sig``: cache key of immutable files."""
    from workbench.formats import FormatError, parse, spec_columns
    if "format" not in have:
        return None
    if sig is None or sig not in _LAYOUTS:
        cond = f'coalesce("schema_version", 0) < {LAYOUT_SINCE}' if "schema_version" in have else "TRUE"
        names = [n for (n,) in con.execute(f'SELECT DISTINCT "format" FROM {src} WHERE {cond}').fetchall()]
        if sig is not None:
            if len(_LAYOUTS) > 256:
                _LAYOUTS.clear()
            _LAYOUTS[sig] = names
    else:
        names = _LAYOUTS[sig]
    rows = []
    for name in names:
        try:
            cols = spec_columns(parse(name))
        except (FormatError, TypeError, ValueError):
            continue
        rows.append({"format": name, **{c: cols[c] for c in LAYOUT_COLS}})
    if not rows:
        return None
    table = pa.Table.from_pylist(rows, schema=pa.schema([("format", pa.string())] + [
        RESULTS_SCHEMA.field(c) for c in LAYOUT_COLS]))
    con.register("layout_v4", table)
    return "layout_v4"


_DUPLICATES: dict[tuple, bool] = {}   # results files (path, size, mtime) -> any key stored twice


def _has_duplicates(con: duckdb.DuckDBPyConnection, table: str, files: list[Path], key: str) -> bool:
    """Whether some natural key is stored twice in ``files`` (only an older version, or a write
    around the store lock, makes that): then the results view de-duplicates. Cached per set of
    files, which are immutable, so the window is paid only by stores that need it."""
    sig = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if sig not in _DUPLICATES:
        if len(_DUPLICATES) > 256:
            _DUPLICATES.clear()
        (n,) = con.execute(f"""SELECT count(*) FROM (SELECT 1 FROM {table}_files
                               GROUP BY {key} HAVING count(*) > 1)""").fetchone()
        _DUPLICATES[sig] = n > 0
    return _DUPLICATES[sig]


def connect(store: str | Path) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection (one per query/thread) with views over the store.
    Files that cannot be read are left out (``skipped_files`` names them). A natural key stored
    more than once (by a version before the store lock; ``EVAL_KEY`` for ``model_eval``) reads
    as one row: the first stored wins (earliest ``created_at``, then file name, then position in the file)."""
    con = duckdb.connect()
    for table, schema in TABLES.items():
        files = store_files(store, table)[0]
        if files:
            con.execute(f"""CREATE VIEW {table}_files AS SELECT * EXCLUDE ("table") FROM read_parquet(
                {_sql_list(files)}, hive_partitioning=true, union_by_name=true, filename=true,
                file_row_number=true, hive_types={{'model': VARCHAR, 'table': VARCHAR}})""")
            # files of an older schema lack newer columns: present them as NULL ("" for a
            # natural-key column), so every query sees the current schema
            have = {r[0] for r in con.execute(f"DESCRIBE {table}_files").fetchall()}
            migrate = None
            if table == "results":     # rows of schema < 4: block/scale columns from the name
                sig = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
                migrate = layout_table(con, f"{table}_files", have, sig)
            join = f'LEFT JOIN {migrate} m ON m."format" = r."format"' if migrate else ""
            dedupe = ""
            key = {"results": _key_sql(have) if table == "results" else "",
                   "model_eval": ", ".join(f'"{c}"' for c in EVAL_KEY)}.get(table)
            if key and _has_duplicates(con, table, files, key):
                key_r = _key_sql(have, "r.") if table == "results" else ", ".join(f'r."{c}"' for c in EVAL_KEY)
                dedupe = (f"QUALIFY row_number() OVER (PARTITION BY {key_r} "
                          "ORDER BY r.created_at, r.filename, r.file_row_number) = 1")
            con.execute(f"CREATE VIEW {table} AS SELECT {schema_columns(schema, have, 'r.', 'm' if migrate else None)} "
                        f"FROM {table}_files r {join} {dedupe}")
        else:  # an empty store still answers queries, with the right columns
            con.from_arrow(schema.empty_table()).create_view(table)
    return con


def store_version(store: str | Path) -> tuple:
    """What every query of ``store`` depends on: (path, size, mtime) of each table file. Store
    files are immutable and every write adds, replaces or moves one, so a write changes it."""
    sig = []
    for path in sorted(Path(store).glob("model=*/table=*/*.parquet")):
        try:
            s_ = path.stat()
        except OSError:
            continue
        sig.append((path.as_posix(), s_.st_size, s_.st_mtime_ns))
    return tuple(sig)


# Query answers, shared by every dashboard session of this process: (store, version, sql,
# params) -> DataFrame. Twenty users opening the Pareto page run the same few queries; they are
# answered once per store version (a write changes the version: the stale answers are dropped
# then, so their memory goes back). Bounded by QUERY_CACHE_CELLS cells; callers get copies.
_QUERY_CACHE: dict[tuple, pd.DataFrame] = {}
_QUERY_LOCK = threading.Lock()
QUERY_CACHE_CELLS = 20_000_000
QUERY_STATS = {"hits": 0, "misses": 0}


def _cache_put(key: tuple, df: pd.DataFrame) -> None:
    with _QUERY_LOCK:
        for k in [k for k in _QUERY_CACHE if k[0] == key[0] and k[1] != key[1]]:
            del _QUERY_CACHE[k]            # answers of an older version of the same store
        _QUERY_CACHE[key] = df
        while sum(d.size for d in _QUERY_CACHE.values()) > QUERY_CACHE_CELLS and len(_QUERY_CACHE) > 1:
            del _QUERY_CACHE[next(iter(_QUERY_CACHE))]    # oldest first


def clear_query_cache() -> None:
    with _QUERY_LOCK:
        _QUERY_CACHE.clear()


def query(store: str | Path, sql: str, params: list | None = None) -> pd.DataFrame:
    """``sql`` over the store's views (``connect``). Answers are cached per store version
    (``store_version``): the same query of an unchanged store is not run again."""
    key = (str(Path(store).resolve()), store_version(store), sql, repr(params or []))
    with _QUERY_LOCK:
        hit = _QUERY_CACHE.get(key)
        QUERY_STATS["hits" if hit is not None else "misses"] += 1
    if hit is not None:
        return hit.copy()
    con = connect(store)
    try:
        res = con.execute(sql, params or [])
        varchar = [d[0] for d in res.description if str(d[1]) == "VARCHAR"]
        df = res.df()
    finally:
        con.close()
    for c in varchar:   # an all-NULL VARCHAR column comes back as object: one dtype for text columns
        if c in df.columns and df[c].dtype == object and df[c].isna().all():
            df[c] = df[c].astype("str")
    _cache_put(key, df)
    return df.copy()


def results(store: str | Path, model: str | None = None) -> pd.DataFrame:
    where, params = ("WHERE model = ?", [model]) if model else ("", [])
    return query(store, f"SELECT * FROM results {where} ORDER BY model, tensor, format", params)


def timings(store: str | Path, model: str | None = None) -> pd.DataFrame:
    """The recorded reference timings (``TIMINGS_SCHEMA``), oldest first."""
    where, params = ("WHERE model = ?", [model]) if model else ("", [])
    return query(store, f"""SELECT * FROM timings {where}
                            ORDER BY created_at, format, implementation, threads""", params)


def models(store: str | Path) -> list[str]:
    return query(store, "SELECT DISTINCT model FROM results ORDER BY model")["model"].tolist()


def _run_filter(run_ids: list[str] | None) -> tuple[str, list]:
    """A WHERE clause keeping ``run_ids`` (None: every run; an empty list: none)."""
    if run_ids is None:
        return "", []
    return "WHERE list_contains(CAST(? AS VARCHAR[]), run_id)", [list(run_ids)]   # typed: [] is valid


RUN_COLUMNS = ("run_id", "model", "created_at", "host", "backend", "device", "workbench_version",
               "git_rev", "imatrix_file", "rows", "tensors", "formats")


def runs(store: str | Path, run_ids: list[str] | None = None) -> pd.DataFrame:
    """One row per run (and model: an imported file may mix them) with its provenance and what it
    measured (rows, distinct tensors and formats), newest first. ``run_ids``: only those runs."""
    where, params = _run_filter(run_ids)
    prov = ", ".join(f"any_value({c}) AS {c}" for c in RUN_COLUMNS[3:9])
    return query(store, f"""SELECT run_id, model, min(created_at) AS created_at, {prov},
                            count(*) AS rows, count(DISTINCT tensor) AS tensors,
                            count(DISTINCT format) AS formats
                            FROM results {where} GROUP BY run_id, model
                            ORDER BY created_at DESC, run_id, model""", params)


def skips(store: str | Path, run_ids: list[str] | None = None) -> pd.DataFrame:
    """What runs did not measure, and why: one row per (run, tensor, format); ``format`` is ""
    for a tensor skipped whole (a bias, an integer buffer). ``run_ids``: only those runs."""
    where, params = _run_filter(run_ids)
    return query(store, f"""SELECT DISTINCT run_id, model, tensor, format, reason FROM skips {where}
                            ORDER BY run_id, model, tensor, format""", params)


def run_results(store: str | Path, run_id: str, limit: int | None = None) -> pd.DataFrame:
    """The rows of one run stored so far, lowest nmse first (``limit``: only the first few)."""
    return query(store, f"""SELECT * FROM results WHERE run_id = ? ORDER BY nmse, tensor, format
                            {'LIMIT ' + str(int(limit)) if limit is not None else ''}""", [run_id])


def done_keys(store: str | Path, model: str, backend: str, device: str, version: str,
              imatrix: str = "") -> set[tuple[str, str]]:
    """(tensor, format) pairs already measured under this natural key (for resuming)."""
    df = query(store, """SELECT DISTINCT tensor, format FROM results WHERE model = ? AND backend = ?
                         AND device = ? AND workbench_version = ? AND coalesce(imatrix, '') = ?""",
               [model, backend, device, version, imatrix])
    return set(zip(df["tensor"], df["format"]))


FORMAT_COLS = SPEC_COLUMNS[1:]      # what a format's name implies, "format" itself aside


def imatrices(store: str | Path, model: str | None = None) -> dict[str, str]:
    """{fingerprint: file name} of the imatrices results exist for; "" (measured without one,
    named "none") first."""
    where, params = ("WHERE model = ?", [model]) if model else ("", [])
    df = query(store, f"""SELECT imatrix, any_value(imatrix_file) AS file FROM results {where}
                          GROUP BY imatrix ORDER BY imatrix""", params)
    return {fp: ("none" if fp == "" else (f or "?")) for fp, f in zip(df["imatrix"], df["file"])}


def summary(store: str | Path, model: str | None = None, tensor_regex: str | None = None,
            imatrix: str = "", tensors: list[str] | None = None) -> pd.DataFrame:
    """Model-level figures per (model, format): numel-weighted means over tensors (pooled sums
    would let one big tensor hide the rest); bpw = total stored bits / total weights.
    Repeated measurements of a (tensor, format) — other devices, other runs — count once.
    ``imatrix``: the runs with that importance matrix ("" = without one). ``fallback_tensors``
    counts tensors a llama.cpp type wrote in its fallback type (``applied_types`` lists the
    types written), and ``label`` is the format name with a ``*`` when there are any.
    ``tensors``: only these tensor names (None: all; combines with ``tensor_regex``)."""
    conds, params = ["imatrix = ?"], [imatrix]
    if model:
        conds.append("model = ?")
        params.append(model)
    if tensor_regex:
        conds.append("regexp_matches(tensor, ?)")
        params.append(tensor_regex)
    if tensors is not None:
        conds.append("list_contains(?, tensor)")
        params.append(list(tensors))
    where = "WHERE " + " AND ".join(conds)
    fcols = ", ".join(f'any_value("{c}") AS "{c}"' for c in FORMAT_COLS)  # "symmetric" is a keyword
    sql = f"""
    WITH per_tensor AS (
        SELECT model, tensor, format, {fcols}, any_value(numel) AS numel, any_value(nbytes) AS nbytes,
               any_value(applied_type) AS applied_type,
               avg(mse) AS mse, avg(nmse) AS nmse, avg(bnl) AS bnl, avg(bnl_seed) AS bnl_seed, avg(cosine) AS cosine,
               avg(wmse) AS wmse, avg(wnmse) AS wnmse,
               max(max_abs_err) AS max_abs_err, min(quant_s) AS quant_s, min(dequant_s) AS dequant_s
        FROM results {where} GROUP BY model, tensor, format)
    SELECT model, format, {fcols},
           count(*) AS tensors, sum(numel) AS numel, sum(nbytes) * 8.0 / sum(numel) AS bpw,
           sum(mse * numel) / sum(numel) AS mse, sum(nmse * numel) / sum(numel) AS nmse,
           sum(bnl * numel) / sum(numel) AS bnl, sum(bnl_seed * numel) / sum(numel) AS bnl_seed, sum(cosine * numel) / sum(numel) AS cosine,
           sum(wmse * numel) / sum(numel) AS wmse, sum(wnmse * numel) / sum(numel) AS wnmse,
           max(max_abs_err) AS max_abs_err,
           sum(numel) FILTER (WHERE quant_s > 0) / sum(quant_s) FILTER (WHERE quant_s > 0) AS quant_wps,
           sum(numel) FILTER (WHERE dequant_s > 0) / sum(dequant_s) FILTER (WHERE dequant_s > 0) AS dequant_wps,
           count(*) FILTER (WHERE applied_type IS NOT NULL AND applied_type <> format) AS fallback_tensors,
           string_agg(DISTINCT applied_type, ',' ORDER BY applied_type) AS applied_types
    FROM per_tensor GROUP BY model, format ORDER BY model, bpw"""
    df = query(store, sql, params)
    df["rmse"] = np.sqrt(df["mse"])
    with np.errstate(divide="ignore"):
        df["sqnr_db"] = -10 * np.log10(df["nmse"].astype(float))
    df["label"] = [f + ("*" if n else "") for f, n in zip(df["format"], df["fallback_tensors"])]
    return df


def tensor_names(store: str | Path, model: str) -> list[str]:
    """The tensors of ``model`` that have results, sorted."""
    return query(store, "SELECT DISTINCT tensor FROM results WHERE model = ? ORDER BY tensor",
                 [model])["tensor"].tolist()


def tensor_results(store: str | Path, model: str, imatrix: str = "", formats: list[str] | None = None,
                   tensors: list[str] | None = None) -> pd.DataFrame:
    """One row per (tensor, format) of ``model``: the format's columns, the tensor's own bpw and
    errors (repeated measurements averaged, as ``summary`` does). ``formats``/``tensors``: only
    those names (None: all)."""
    conds, params = ["model = ?", "imatrix = ?"], [model, imatrix]
    for col, names in (("format", formats), ("tensor", tensors)):
        if names is not None:
            conds.append(f"list_contains(?, {col})")
            params.append(list(names))
    fcols = ", ".join(f'any_value("{c}") AS "{c}"' for c in FORMAT_COLS)
    df = query(store, f"""
        SELECT model, tensor, format, {fcols}, any_value(numel) AS numel,
               any_value(nbytes) * 8.0 / any_value(numel) AS bpw, any_value(applied_type) AS applied_type,
               avg(mse) AS mse, avg(nmse) AS nmse, avg(bnl) AS bnl, avg(bnl_seed) AS bnl_seed, avg(cosine) AS cosine,
               avg(wmse) AS wmse, avg(wnmse) AS wnmse, max(max_abs_err) AS max_abs_err,
               any_value(numel) / min(quant_s) AS quant_wps, any_value(numel) / min(dequant_s) AS dequant_wps
        FROM results WHERE {' AND '.join(conds)} GROUP BY model, tensor, format
        ORDER BY tensor, bpw, format""", params)
    df["rmse"] = np.sqrt(df["mse"])
    with np.errstate(divide="ignore"):
        df["sqnr_db"] = -10 * np.log10(df["nmse"].astype(float))
    return df


# ---------------------------------------------------------------------------- share: export
EXPORT_META = b"workbench"


def export(store: str | Path, out: str | Path, model: str | None = None,
           formats: str | None = None, tensors: str | None = None,
           run_ids: list[str] | None = None) -> int:
    """Write one self-describing Parquet file (results rows + schema metadata); returns rows.
    Filters combine: ``model``, ``formats``/``tensors`` regexes, ``run_ids`` (None: every run;
    an empty list: no row)."""
    from workbench.sources import compile_regex
    conds, params = [], []
    for col, val, op in (("model", model, "="), ("format", formats, "~"), ("tensor", tensors, "~")):
        if val and op == "~":
            compile_regex(val, f"--{col}s")      # one line for a bad pattern, before any query
        if val:
            conds.append(f"{col} = ?" if op == "=" else f"regexp_matches({col}, ?)")
            params.append(val)
    if run_ids is not None:
        conds.append("list_contains(CAST(? AS VARCHAR[]), run_id)")
        params.append(list(run_ids))
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    df = query(store, f"SELECT * FROM results {where} ORDER BY model, tensor, format", params)
    t = _to_table(df, RESULTS_SCHEMA)
    meta = {"schema_version": SCHEMA_VERSION, "table": "results",
            "exported_by": f"workbench {workbench.__version__}",
            "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "natural_key": list(NATURAL_KEY)}
    extra = {EXPORT_META: json.dumps(meta).encode()}
    exported = sorted(set(df["model"]))
    if exported:    # the evaluations of the exported models travel in the same file
        from workbench import eval_store
        ev = eval_store.evals(store)
        ev = ev[ev["model"].isin(exported)]
        if formats:
            ev = ev[ev["format"].str.contains(formats, regex=True)]
        if len(ev):
            extra[eval_store.EMBED_KEY] = eval_store.embed(ev)
            meta["model_eval_rows"] = len(ev)
            extra[EXPORT_META] = json.dumps(meta).encode()
    return write_export(t.replace_schema_metadata({**(t.schema.metadata or {}), **extra}), out)


def write_export(t: pa.Table, out: str | Path) -> int:
    """Write an export file atomically (a temporary name, then a rename); returns its rows."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(t, tmp, compression="zstd")
    os.replace(tmp, out)
    return t.num_rows


# ---------------------------------------------------------------------------- share: import
def validate_import(path: str | Path):
    """Check a collaborator's file (``workbench.store_import``); StoreError if it is unusable."""
    from workbench.store_import import validate_import as _validate
    return _validate(path)


def import_file(path: str | Path, store: str | Path) -> tuple[int, int]:
    """Merge a collaborator's results file (``workbench.store_import``); returns (added, skipped)."""
    from workbench.store_import import import_file as _import
    return _import(path, store)
