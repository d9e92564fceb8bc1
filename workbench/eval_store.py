"""The ``model_eval`` table: model-level truth (``workbench eval``) in the store.

Same discipline as ``results``: immutable Parquet files under ``model=<id>/table=model_eval/``,
provenance on every row, a natural key (``store.EVAL_KEY``) checked under the store lock at write
time, so a key is never stored twice whatever runs at once; a store that holds a key twice (an
older version, a copy made around the lock) reads as one row (the first stored).

Sharing: ``workbench export`` embeds the evaluations of the exported models in the results file's
metadata (key ``workbench.model_eval``: a Parquet file, base64), so a collaborator's one file
brings its evaluations along; ``workbench export --table model_eval`` writes them as a
self-describing file of their own. ``workbench import`` takes either, validates every row first
and merges the keys that are new.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from workbench import store as st

EMBED_KEY = b"workbench.model_eval"
KINDS = ("encoder", "llm")
VARIANTS = ("fake", "llama.cpp")
# (column, lowest, highest): values outside are impossible; None = unbounded on that side
RANGES = (("bpw", 0.0, 64.0), ("drift", 0.0, 2.0), ("cosine_min", -1.0, 1.0),
          ("rank_agreement", -1.0, 1.0), ("top1_agreement", 0.0, 1.0), ("kld_mean", 0.0, None),
          ("kld_median", 0.0, None), ("kld_p99", 0.0, None), ("kld_max", 0.0, None), ("top1", 0.0, 1.0),
          ("ppl", 1.0, None), ("ppl_ref", 1.0, None), ("w_nmse", 0.0, None), ("w_wnmse", 0.0, None),
          ("w_max_err", 0.0, None), ("w_bnl", 0.0, None), ("w_bias", 0.0, None), ("w_actmean", 0.0, None),
          ("n_tensors", 0, None), ("numel", 0, None), ("n_tokens", 1, None), ("n_ctx", 0, None),
          ("dppl", None, None), ("eval_s", 0.0, None), ("numel_total", 0, None))
SLACK = 1e-9   # float64 round-off at a bound (a cosine of 1 + 2^-52, a KLD of -1e-12)
POSITIVE = ("bpw",)   # strictly above its lower bound


def _key_value(c: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(int(v)) if c == "n_ctx" else str(v)     # 512, 512.0 and "512" are one key


def _keys(df: pd.DataFrame) -> list[tuple]:
    return list(zip(*([_key_value(c, v) for v in df[c].tolist()] for c in st.EVAL_KEY)))


def _file_eval_keys(path: Path, model: str, strict: bool = True) -> list[tuple] | None:
    """The natural keys of one model_eval file (None when queries skip it). ``strict``: a file
    that queries read but whose keys cannot be read raises (never write without its keys)."""
    if st.file_fault(path, "model_eval"):
        return None
    try:
        names = pq.read_schema(path).names
        df = pq.read_table(path, columns=[c for c in st.EVAL_KEY if c in names]).to_pandas()
    except Exception:  # noqa: BLE001 - readable a moment ago
        if not strict:
            return None
        raise st.StoreError(f"{path}: cannot read its keys to check for duplicates; nothing written") from None
    if "model" not in df:
        df["model"] = model
    for c in st.EVAL_KEY:
        if c not in df:
            df[c] = None
    return _keys(df)


def _stored_keys(store: str | Path, models: list[str]) -> set[tuple]:
    """Natural keys stored for ``models`` (call with the store lock held)."""
    have: set[tuple] = set()
    for model in models:
        for path in sorted((Path(store) / f"model={model}" / "table=model_eval").glob("*.parquet")):
            have.update(_file_eval_keys(path, model) or ())
    return have


def write_evals(store: str | Path, rows: list[dict] | pd.DataFrame, locked: bool = False,
                replace: bool = False) -> tuple[list[Path], int]:
    """Append evaluation rows whose natural key is new (in the store and earlier in ``rows``),
    checked under the store lock (``locked``: the caller holds it); returns (files, rows dropped).
    ``replace`` (``eval --no-resume``): the rows supersede the stored rows of their keys, which
    move to quarantine/superseded/ with their files (``store._supersede``)."""
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows.copy()
    if len(df) == 0:
        return [], 0
    for c in st.EVAL_KEY:
        if c not in df:
            df[c] = None
    df["model_fingerprint"] = df["model_fingerprint"].fillna("")
    before = len(df)
    keys = _keys(df)
    first = pd.Series(keys).duplicated(keep="first").to_numpy()
    with (contextlib.nullcontext() if locked else st.store_lock(store)):
        if replace:
            st._supersede(store, df[~first], "model_eval", wanted=set(_keys(df[~first])),
                          keys_of=lambda path: _file_eval_keys(path, path.parent.parent.name[len("model="):],
                                                               strict=False))
        have = _stored_keys(store, sorted(set(df["model"].astype(str))))
        mask = np.fromiter((k not in have for k in keys), bool, len(df)) & ~first
        df = df[mask]
        paths = st._write_unlocked(store, "model_eval", df)
    return paths, before - len(df)


def evals(store: str | Path, model: str | None = None, variant: str | None = None,
          tensors: str | None = None) -> pd.DataFrame:
    """Stored evaluations (one row per natural key), oldest first; filters combine."""
    conds, params = [], []
    for col, val in (("model", model), ("variant", variant), ("tensors", tensors)):
        if val is not None:
            conds.append(f"{col} = ?")
            params.append(val)
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    return st.query(store, f"SELECT * FROM model_eval {where} ORDER BY model, created_at, format, tensors", params)


def done(store: str | Path, key_fixed: dict) -> set[tuple[str, str, str]]:
    """(format, variant, tensors) already evaluated under the other natural-key columns
    ``key_fixed`` (model, model_fingerprint, text, n_ctx, backend, device, versions)."""
    df = evals(store, model=key_fixed["model"])
    if df.empty:
        return set()
    m = np.ones(len(df), bool)
    for c, v in key_fixed.items():
        m &= np.array([_key_value(c, x) == _key_value(c, v) for x in df[c].tolist()], bool)
    d = df[m]
    return set(zip(d["format"], d["variant"], d["tensors"]))


# ---------------------------------------------------------------------------------- sharing
def _table(df: pd.DataFrame) -> pa.Table:
    return st._to_table(df, st.MODEL_EVAL_SCHEMA)


def embed(df: pd.DataFrame) -> bytes:
    """Evaluation rows as metadata bytes for a results export (base64 of a Parquet file)."""
    buf = io.BytesIO()
    pq.write_table(_table(df), buf, compression="zstd")
    return base64.b64encode(buf.getvalue())


def embedded(path: str | Path) -> pa.Table | None:
    """The evaluation rows a results export carries (None: it carries none)."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(EMBED_KEY)
    if raw is None:
        return None
    try:
        return pq.read_table(io.BytesIO(base64.b64decode(raw, validate=True)))
    except Exception as exc:  # noqa: BLE001
        raise st.StoreError(f"{path}: its embedded evaluations are unreadable ({exc.__class__.__name__}); "
                            "nothing was stored") from None


def export(store: str | Path, out: str | Path, model: str | None = None, formats: str | None = None) -> int:
    """A self-describing file of evaluation rows (``workbench export --table model_eval``)."""
    import datetime as _dt
    import workbench
    df = evals(store, model=model)
    if formats:
        from workbench.sources import compile_regex
        rx = compile_regex(formats, "--formats")
        df = df[[bool(rx.search(f)) for f in df["format"]]]
    t = _table(df)
    meta = {"schema_version": st.SCHEMA_VERSION, "table": "model_eval",
            "exported_by": f"workbench {workbench.__version__}",
            "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(), "natural_key": list(st.EVAL_KEY)}
    return st.write_export(t.replace_schema_metadata({**(t.schema.metadata or {}),
                                                       st.EXPORT_META: json.dumps(meta).encode()}), out)


def is_eval_file(path: str | Path) -> bool:
    """A file written by ``export --table model_eval`` (by its metadata, else by its columns)."""
    schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(st.EXPORT_META)
    if raw:
        try:
            return json.loads(raw).get("table") == "model_eval"
        except ValueError:
            return False
    return "variant" in schema.names and "tensor" not in schema.names


def validate(table: pa.Table, where: str) -> pd.DataFrame:
    """Check evaluation rows (a file's or an export's embedded ones) before anything is stored;
    StoreError naming the first problem. Column types are judged on the file's own schema.
    Returns the rows in the store's schema."""
    fail = lambda msg: (_ for _ in ()).throw(st.StoreError(f"{where}: {msg}; nothing was stored"))  # noqa: E731
    fault = st.schema_fault(table.schema, "model_eval")
    if fault:
        fail(fault)
    df = table.to_pandas()
    for c in st.EVAL_KEY + ("run_id", "kind"):
        bad = df[c].isna() if c in ("n_ctx", "model_fingerprint") else (df[c].isna() | (df[c].astype(str) == ""))
        if bad.any():
            fail(f"column {c!r} has {int(bad.sum())} empty values")
    versions = set(df["schema_version"].tolist())
    if not versions <= set(range(3, st.SCHEMA_VERSION + 1)):
        v = sorted(versions - set(range(3, st.SCHEMA_VERSION + 1)), key=str)[0]
        if isinstance(v, (int, np.integer)) and v > st.SCHEMA_VERSION:
            fail(f"schema version {v} is newer than this workbench's ({st.SCHEMA_VERSION}); upgrade to import it")
        fail(f"schema_version {v!r} is not a version with evaluations (3..{st.SCHEMA_VERSION})")
    bad = [m for m in df["model"] if not st.MODEL_ID.match(str(m))]
    if bad:
        fail(f"invalid model id {bad[0]!r}")
    for col, allowed in (("kind", KINDS), ("variant", VARIANTS)):
        bad = sorted(set(df[col]) - set(allowed))
        if bad:
            fail(f"{col} {bad[0]!r} is not one of {', '.join(allowed)}")
    if df["created_at"].isna().any():
        fail("column 'created_at' has empty values")
    for col, lo, hi in RANGES:
        if col not in df:
            continue
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
        given = ~pd.isna(df[col]).to_numpy()
        low = False if lo is None else ((v <= lo) if col in POSITIVE else (v < lo - SLACK))
        bad = given & (~np.isfinite(v) | low | ((v > hi + SLACK) if hi is not None else False))
        if bad.any():
            rng = (f"{'(' if col in POSITIVE else '['}{lo if lo is not None else '-inf'}, "
                   f"{hi if hi is not None else 'inf'}{']' if hi is not None else ')'}")
            fail(f"impossible values: {col} outside {rng} ({int(bad.sum())} rows)")
    for g in df.get("group_nmse", pd.Series(dtype=object)).dropna():
        try:
            obj = json.loads(g)
            ok = isinstance(obj, dict) and all(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0
                                               for x in obj.values())
        except (TypeError, ValueError):
            ok = False
        if not ok:
            fail("group_nmse is not a JSON object of non-negative numbers")
    return _table(df).to_pandas()


def read_file(path: str | Path) -> pa.Table:
    path = Path(path)
    try:
        return pq.read_table(path)
    except Exception as exc:  # noqa: BLE001
        raise st.StoreError(f"{path}: not a readable Parquet file ({exc.__class__.__name__})") from None


def import_rows(df: pd.DataFrame, store: str | Path, locked: bool = False) -> tuple[int, int]:
    """Merge validated rows; returns (added, skipped as already stored or repeated)."""
    if df is None or len(df) == 0:
        return 0, 0
    df = df.sort_values("created_at", kind="stable")      # the first stored wins, as in results
    paths, dropped = write_evals(store, df, locked=locked)
    return len(df) - dropped, dropped
