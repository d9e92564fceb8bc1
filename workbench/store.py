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
(``imatrix`` "").
"""
from __future__ import annotations

import datetime as _dt
import functools
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

SCHEMA_VERSION = 2
NATURAL_KEY = ("model", "tensor", "format", "imatrix", "backend", "device", "workbench_version")
MAY_BE_EMPTY = ("imatrix",)  # natural-key columns where "" is a value (no imatrix)
MODEL_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")

RESULTS_SCHEMA = pa.schema([
    ("model", pa.string()), ("tensor", pa.string()), ("format", pa.string()),
    ("family", pa.string()), ("bits", pa.int16()), ("block", pa.int32()), ("symmetric", pa.bool_()),
    ("scale_dtype", pa.string()), ("super_bits", pa.int16()), ("super_block", pa.int32()),
    ("super_symmetric", pa.bool_()), ("search", pa.string()), ("normalizer", pa.bool_()),
    ("naive", pa.bool_()), ("applied_type", pa.string()), ("fallback_note", pa.string()),
    ("imatrix", pa.string()), ("imatrix_file", pa.string()), ("imatrix_note", pa.string()),
    ("bpw", pa.float64()), ("nbytes", pa.int64()), ("numel", pa.int64()), ("rows", pa.int64()),
    ("cols", pa.int64()), ("row_tail", pa.int32()),
    ("mse", pa.float64()), ("rmse", pa.float64()), ("nmse", pa.float64()), ("sqnr_db", pa.float64()),
    ("max_abs_err", pa.float64()), ("cosine", pa.float64()), ("bnl", pa.float64()),
    ("wmse", pa.float64()), ("wnmse", pa.float64()),
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
TABLES = {"results": RESULTS_SCHEMA, "skips": SKIPS_SCHEMA, "timings": TIMINGS_SCHEMA}


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


def provenance(run_id: str, backend: str) -> dict:
    return {"backend": backend, "device": device_name(), "host": socket.gethostname(),
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


def write(store: str | Path, table: str, rows: list[dict] | pd.DataFrame) -> list[Path]:
    """Append rows as new immutable files, one per model partition; returns the files."""
    t = _to_table(rows, TABLES[table])
    if t.num_rows == 0:
        return []
    paths = []
    for model in sorted(set(t.column("model").to_pylist())):
        if not isinstance(model, str) or not MODEL_ID.match(model):
            raise StoreError(f"invalid model id {model!r} (letters, digits, '.', '_', '-')")
        part = t.filter(pa.compute.equal(t.column("model"), model))
        folder = Path(store) / f"model={model}" / f"table={table}"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{uuid.uuid4().hex}.parquet"
        tmp = final.with_suffix(".parquet.tmp")
        pq.write_table(part, tmp, compression="zstd")
        os.replace(tmp, final)  # atomic publish: the glob never sees a partial file
        paths.append(final)
    return paths


# ------------------------------------------------------------------------------------- read
def _glob(store: str | Path, table: str) -> str:
    return str(Path(store) / "model=*" / f"table={table}" / "*.parquet")


def has_files(store: str | Path, table: str = "results") -> bool:
    return any(Path(store).glob(f"model=*/table={table}/*.parquet"))


_SQL_TYPES = {"bool": "BOOLEAN", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT",
              "double": "DOUBLE", "timestamp[us, tz=UTC]": "TIMESTAMPTZ"}


def connect(store: str | Path) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection (one per query/thread) with views over the store."""
    con = duckdb.connect()
    for table, schema in TABLES.items():
        if has_files(store, table):
            con.execute(f"""CREATE VIEW {table}_files AS SELECT * EXCLUDE ("table") FROM read_parquet(
                '{_glob(store, table)}', hive_partitioning=true, union_by_name=true,
                hive_types={{'model': VARCHAR, 'table': VARCHAR}})""")
            # files of an older schema lack newer columns: present them as NULL ("" for a
            # natural-key column), so every query sees the current schema
            have = {r[0] for r in con.execute(f"DESCRIBE {table}_files").fetchall()}
            cols = []
            for f in schema:
                if f.name in have:
                    cols.append(f"coalesce(\"{f.name}\", '') AS \"{f.name}\"" if f.name in MAY_BE_EMPTY
                                else f'"{f.name}"')
                else:
                    sqltype = "VARCHAR" if pa.types.is_string(f.type) else _SQL_TYPES.get(str(f.type), "DOUBLE")
                    default = "''" if f.name in MAY_BE_EMPTY else "NULL"
                    cols.append(f'CAST({default} AS {sqltype}) AS "{f.name}"')
            con.execute(f"CREATE VIEW {table} AS SELECT {', '.join(cols)} FROM {table}_files")
        else:  # an empty store still answers queries, with the right columns
            con.from_arrow(schema.empty_table()).create_view(table)
    return con


def query(store: str | Path, sql: str, params: list | None = None) -> pd.DataFrame:
    con = connect(store)
    try:
        return con.execute(sql, params or []).df()
    finally:
        con.close()


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


FORMAT_COLS = ("family", "bits", "block", "symmetric", "scale_dtype", "super_bits", "super_block",
               "super_symmetric", "search", "normalizer", "naive")


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
               avg(mse) AS mse, avg(nmse) AS nmse, avg(bnl) AS bnl, avg(cosine) AS cosine,
               avg(wmse) AS wmse, avg(wnmse) AS wnmse,
               max(max_abs_err) AS max_abs_err, min(quant_s) AS quant_s, min(dequant_s) AS dequant_s
        FROM results {where} GROUP BY model, tensor, format)
    SELECT model, format, {fcols},
           count(*) AS tensors, sum(numel) AS numel, sum(nbytes) * 8.0 / sum(numel) AS bpw,
           sum(mse * numel) / sum(numel) AS mse, sum(nmse * numel) / sum(numel) AS nmse,
           sum(bnl * numel) / sum(numel) AS bnl, sum(cosine * numel) / sum(numel) AS cosine,
           sum(wmse * numel) / sum(numel) AS wmse, sum(wnmse * numel) / sum(numel) AS wnmse,
           max(max_abs_err) AS max_abs_err,
           sum(numel) / sum(quant_s) AS quant_wps, sum(numel) / sum(dequant_s) AS dequant_wps,
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
               avg(mse) AS mse, avg(nmse) AS nmse, avg(bnl) AS bnl, avg(cosine) AS cosine,
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
    conds, params = [], []
    for col, val, op in (("model", model, "="), ("format", formats, "~"), ("tensor", tensors, "~")):
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
    t = t.replace_schema_metadata({**(t.schema.metadata or {}), EXPORT_META: json.dumps(meta).encode()})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(t, tmp, compression="zstd")
    os.replace(tmp, out)
    return t.num_rows


# ---------------------------------------------------------------------------- share: import
def validate_import(path: str | Path) -> pa.Table:
    """Read and check a collaborator's file; raise StoreError with one line if it is unusable."""
    from workbench.formats import FormatError, parse
    path = Path(path)
    try:
        t = pq.read_table(path)
    except FileNotFoundError:
        raise StoreError(f"{path}: no such file") from None
    except Exception as exc:  # pyarrow raises several types for garbage
        raise StoreError(f"{path}: not a readable Parquet file ({exc.__class__.__name__})") from None
    missing = [c for c in REQUIRED if c not in t.column_names]
    if missing:
        raise StoreError(f"{path}: not a workbench results file (missing columns: {', '.join(missing)})")
    versions = set(t.column("schema_version").to_pylist())
    if any(v is None or v > SCHEMA_VERSION for v in versions):
        raise StoreError(f"{path}: schema version {sorted(map(str, versions))} is newer than this "
                         f"workbench's ({SCHEMA_VERSION}); upgrade to import it")
    extra = [c for c in t.column_names if c not in RESULTS_SCHEMA.names]
    if extra:
        t = t.drop_columns(extra)
    try:
        t = _to_table(t.to_pandas(), RESULTS_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError) as exc:
        raise StoreError(f"{path}: column types do not match the results schema ({str(exc).splitlines()[0][:100]})") from None
    df = t.to_pandas()
    if df["imatrix"].isna().any():  # schema 1 had no imatrix: those rows were measured without
        df["imatrix"] = df["imatrix"].fillna("")
        t = _to_table(df, RESULTS_SCHEMA)
    for c in NATURAL_KEY + ("run_id",):
        if c in MAY_BE_EMPTY:
            continue
        if df[c].isna().any() or (df[c].astype(str) == "").any():
            raise StoreError(f"{path}: column {c!r} has empty values")
    bad = [m for m in df["model"].unique() if not MODEL_ID.match(m)]
    if bad:
        raise StoreError(f"{path}: invalid model id {bad[0]!r}")
    for name in df["format"].unique():
        try:
            if parse(name).name != name:
                raise FormatError(f"{name!r} is not a canonical format name")
        except FormatError as exc:
            raise StoreError(f"{path}: {exc}") from None
    if not (df["numel"] > 0).all() or not (df["bpw"] > 0).all() or not (df["nmse"] >= 0).all():
        raise StoreError(f"{path}: impossible values (numel, bpw must be > 0 and nmse >= 0)")
    return t


def import_file(path: str | Path, store: str | Path) -> tuple[int, int]:
    """Merge a collaborator's results file; existing rows are never changed. Rows whose natural
    key is already stored (or repeated in the file) are skipped. Returns (added, skipped)."""
    t = validate_import(path)
    df = t.to_pandas()
    key = list(NATURAL_KEY)
    before = len(df)
    df = df.drop_duplicates(key, keep="first")
    have = query(store, f"SELECT DISTINCT {', '.join(key)} FROM results")
    if len(have):
        df = df.merge(have.astype({c: str for c in key}), on=key, how="left", indicator=True)
        df = df[df["_merge"] == "left_only"].drop(columns="_merge")
    write(store, "results", df)
    return len(df), before - len(df)
