"""Import a collaborator's results file into the store: validate everything first, then merge
the rows whose natural key is new, under the store lock. Nothing stored is ever changed.

The file is never loaded whole: DuckDB reads it in a streaming scan for every check (each a
single aggregate), and the merge is one ``COPY`` per model partition, so a file of millions of
rows imports in bounded memory (``MEMORY_LIMIT``).
"""
from __future__ import annotations

import math
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from workbench import store as st

MEMORY_LIMIT = os.environ.get("WORKBENCH_IMPORT_MEMORY", "128MB")   # DuckDB's share of the <= 300 MB peak
KNOWN_VERSIONS = tuple(range(1, st.SCHEMA_VERSION + 1))
PARTITION_ROWS = 500_000  # rows of the file de-duplicated per pass: bounds the digest table
COSINE_SLACK = 1e-9   # a float64 cosine of identical tensors may round to 1 + 2^-52


@dataclass(frozen=True)
class ImportPlan:
    """A validated file: what it holds and the columns it lacks (older minor schema → NULL)."""
    path: Path
    num_rows: int
    columns: tuple[str, ...]
    models: tuple[str, ...]


def _digest(columns, alias: str) -> str:
    """SQL for a 128-bit digest of a row's natural key ("" for a missing imatrix)."""
    return f"md5_number(concat_ws(chr(0), {st._key_sql(columns, alias + '.')}))"


def _con(spill: str | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    if spill:
        con.execute(f"SET temp_directory = {_lit(Path(spill))}")
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET threads = 1")          # one writer's buffers: the file streams through
    return con


def _lit(path: Path) -> str:
    return st.sql_path(path)


def _fail(path: Path, msg: str):
    raise st.StoreError(f"{path}: {msg}")


def _value_checks(cols: set[str]) -> list[tuple[str, str]]:
    """(SQL condition that is true for a bad row, what it means), for the columns present."""
    fin = "isfinite({c})"
    checks = [("numel IS NULL OR numel <= 0", "numel must be > 0"),
              ("bpw IS NULL OR NOT isfinite(bpw) OR bpw <= 0", "bpw must be finite and > 0"),
              (f"mse IS NULL OR NOT {fin.format(c='mse')} OR mse < 0", "mse must be finite and >= 0"),
              (f"nmse IS NULL OR NOT {fin.format(c='nmse')} OR nmse < 0", "nmse must be finite and >= 0")]
    optional = {
        "rmse": "rmse IS NOT NULL AND (NOT isfinite(rmse) OR rmse < 0)",
        "max_abs_err": "max_abs_err IS NOT NULL AND (NOT isfinite(max_abs_err) OR max_abs_err < 0)",
        "bnl": "bnl IS NOT NULL AND (NOT isfinite(bnl) OR bnl < 0)",
        "bnl_seed": "bnl_seed IS NOT NULL AND (NOT isfinite(bnl_seed) OR bnl_seed < 0)",
        "wmse": "wmse IS NOT NULL AND (NOT isfinite(wmse) OR wmse < 0)",
        "wnmse": "wnmse IS NOT NULL AND (NOT isfinite(wnmse) OR wnmse < 0)",
        "cosine": f"cosine IS NOT NULL AND (isnan(cosine) OR abs(cosine) > 1 + {COSINE_SLACK})",
        "quant_s": "quant_s IS NOT NULL AND (NOT isfinite(quant_s) OR quant_s < 0)",
        "dequant_s": "dequant_s IS NOT NULL AND (NOT isfinite(dequant_s) OR dequant_s < 0)",
        "nbytes": "nbytes IS NOT NULL AND nbytes <= 0",
        "sqnr_db": "sqnr_db IS NOT NULL AND (isnan(sqnr_db) OR (NOT isfinite(sqnr_db) AND nmse <> 0))",
    }
    checks += [(cond, f"{c} out of range") for c, cond in optional.items() if c in cols]
    if {"rows", "cols"} <= cols:
        checks.append(("rows IS NOT NULL AND cols IS NOT NULL AND (rows <= 0 OR cols <= 0 OR rows * cols <> numel)",
                       "rows × cols must equal numel"))
    if {"rmse", "mse"} <= cols:
        checks.append(("rmse IS NOT NULL AND abs(rmse - sqrt(mse)) > 1e-9 * (1 + sqrt(mse))", "rmse must be √mse"))
    return checks


def _check_formats(con, src: str, path: Path, cols: set[str]) -> None:
    """Every distinct (format, layout columns, shape) agrees with what the name implies: family,
    bits, block, symmetry, scale encoding, the type llama.cpp writes, and bpw recomputed from the
    name and the tensor's shape (the store's bpw comes from the real packed bytes, which equal
    the closed form)."""
    from workbench.formats import FormatError, legacy_spec_columns, parse, spec_columns
    fmt_cols = [c for c in st.FORMAT_COLS if c in cols]
    shape_cols = [c for c in ("rows", "cols", "nbytes", "applied_type") if c in cols]
    names = ["format", *fmt_cols, *shape_cols, "numel", "bpw", *(["schema_version"] if "schema_version" in cols else [])]
    sel = ", ".join(f'"{c}"' for c in names)
    cur = con.execute(f"SELECT DISTINCT {sel} FROM {src}")
    specs: dict[str, object] = {}
    while batch := cur.fetchmany(5000):
        for values in batch:
            r = dict(zip(names, values))
            name = r["format"]
            if name not in specs:
                try:
                    spec = parse(name)
                except FormatError as exc:
                    _fail(path, str(exc))
                if spec.name != name:
                    _fail(path, f"{name!r} is not a canonical format name (it reads as {spec.name!r})")
                specs[name] = spec
            spec = specs[name]
            want = spec_columns(spec)
            # rows written before schema 4 hold the layout columns as those versions defined
            # them (st.LAYOUT_SINCE), or as migrated on read when a store re-exports them
            older = (r.get("schema_version") or 0) < st.LAYOUT_SINCE
            legacy = legacy_spec_columns(spec) if older else {}
            for c in fmt_cols:
                if r[c] is not None and r[c] != want[c] and not (c in legacy and r[c] == legacy[c]):
                    _fail(path, f"format {name}: column {c} is {r[c]!r}, the name implies {want[c]!r}")
            shape = (r.get("rows"), r.get("cols"))
            if None in shape:
                continue   # a schema without the shape: bpw is checked for range only
            applied, note = spec.plan(shape)
            if applied is None:
                _fail(path, f"format {name} cannot encode a {shape[0]}x{shape[1]} tensor ({note})")
            if "applied_type" in r and r["applied_type"] is not None and spec.has_fallback \
                    and r["applied_type"] != applied:
                _fail(path, f"format {name} on a {shape[0]}x{shape[1]} tensor writes {applied}, "
                            f"the file says {r['applied_type']}")
            nbytes = spec.nbytes(shape)
            if r.get("nbytes") is not None and r["nbytes"] != nbytes:
                _fail(path, f"format {name} on a {shape[0]}x{shape[1]} tensor takes {nbytes} bytes, "
                            f"the file says {r['nbytes']}")
            bpw = nbytes * 8 / r["numel"]
            if not math.isclose(r["bpw"], bpw, rel_tol=1e-9):
                _fail(path, f"format {name} on a {shape[0]}x{shape[1]} tensor has {bpw:.6g} bpw, "
                            f"the file says {r['bpw']!r}")


def validate_import(path: str | Path) -> ImportPlan:
    """Check a collaborator's file without loading it whole; StoreError (one line) if unusable."""
    path = Path(path)
    if not path.is_file():
        _fail(path, "no such file")
    try:
        schema = pq.read_schema(path)
        num_rows = pq.read_metadata(path).num_rows
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for garbage
        _fail(path, f"not a readable Parquet file ({exc.__class__.__name__})")
    fault = st.schema_fault(schema, "results")
    if fault:
        _fail(path, fault)
    cols = {c for c in schema.names if c in st.RESULTS_SCHEMA.names}
    src = f"read_parquet({_lit(path)})"
    con = _con()
    try:
        versions = [v for (v,) in con.execute(f"SELECT DISTINCT schema_version FROM {src}").fetchall()]
        bad_v = [v for v in versions if v not in KNOWN_VERSIONS]
        if bad_v:
            newer = [v for v in bad_v if v is not None and v > st.SCHEMA_VERSION]
            if newer:
                _fail(path, f"schema version {max(newer)} is newer than this workbench's "
                            f"({st.SCHEMA_VERSION}); upgrade to import it")
            _fail(path, f"schema_version {bad_v[0]!r} is not a known version "
                        f"({', '.join(map(str, KNOWN_VERSIONS))})")
        for c in st.NATURAL_KEY + ("run_id",):
            if c in st.MAY_BE_EMPTY or c not in cols:
                continue
            (n,) = con.execute(f"SELECT count(*) FROM {src} WHERE \"{c}\" IS NULL OR \"{c}\" = ''").fetchone()
            if n:
                _fail(path, f"column {c!r} has {n} empty values")
        (n,) = con.execute(f"SELECT count(*) FROM {src} WHERE created_at IS NULL").fetchone()
        if n:
            _fail(path, f"column 'created_at' has {n} empty values")
        models = [m for (m,) in con.execute(f"SELECT DISTINCT model FROM {src} ORDER BY model").fetchall()]
        bad = [m for m in models if not st.MODEL_ID.match(m)]
        if bad:
            _fail(path, f"invalid model id {bad[0]!r}")
        checks = _value_checks(cols)      # one scan of the file for every range check
        counts = con.execute("SELECT " + ", ".join(f"count(*) FILTER (WHERE {cond})" for cond, _ in checks)
                             + f" FROM {src}").fetchone()
        for (_cond, what), n in zip(checks, counts):
            if n:
                _fail(path, f"impossible values: {what} ({n} rows)")
        _check_formats(con, src, path, cols)
    except duckdb.Error as exc:
        _fail(path, f"cannot be read ({exc.__class__.__name__}: {str(exc).splitlines()[0][:100]})")
    finally:
        con.close()
    return ImportPlan(path, num_rows, tuple(sorted(cols)), tuple(models))


def _select(plan: ImportPlan) -> str:
    """The file's rows in the store's schema (missing columns NULL, "" for imatrix)."""
    return st.schema_columns(st.RESULTS_SCHEMA, plan.columns, "i.")


def import_file(path: str | Path, store: str | Path) -> tuple[int, int]:
    """Merge a collaborator's file; existing rows are never changed. Rows whose natural key is
    already stored (or repeated in the file: the first stored, by created_at, wins) are
    skipped. A results export's embedded evaluations (and a ``model_eval`` export) are validated
    before anything is written and merged the same way. Returns (added, skipped), results and
    evaluations together (``last_import`` has them apart)."""
    from workbench import eval_store as ev
    path = Path(path)
    if path.is_file():
        try:
            eval_only = ev.is_eval_file(path)
        except Exception:  # noqa: BLE001 - garbage: validate_import says why in one line
            eval_only = False
        if eval_only:
            rows = ev.validate(ev.read_file(path), str(path))
            added, skipped = ev.import_rows(rows, store)
            LAST.update(results=(0, 0), model_eval=(added, skipped))
            return added, skipped
    plan = validate_import(path)
    carried = ev.embedded(path)
    carried = ev.validate(carried, f"{path} (embedded evaluations)") if carried is not None else None
    got: dict[str, tuple[int, int]] = {}
    # under the one lock of the results import: the evaluations are written once the results are
    # staged, before they are published, so a failure in either leaves the store unchanged
    added, skipped = _import_results(plan, path, store,
                                     also=lambda: got.update(e=ev.import_rows(carried, store, locked=True)))
    e_added, e_skipped = got.get("e", (0, 0))
    LAST.update(results=(added, skipped), model_eval=(e_added, e_skipped))
    return added + e_added, skipped + e_skipped


LAST: dict[str, tuple[int, int]] = {}   # the last import_file's (added, skipped) per table


def _import_results(plan: ImportPlan, path: Path, store: str | Path, also=None) -> tuple[int, int]:
    store = Path(store)
    added, staged = 0, []
    with st.store_lock(store), tempfile.TemporaryDirectory(prefix="workbench-import-") as spill:
        con = _con(spill)
        try:
            stored = st.store_files(store, "results")[0]
            src = f"read_parquet({_lit(plan.path)}, file_row_number=true)"
            parts = max(1, math.ceil(plan.num_rows / PARTITION_ROWS))
            for model, part in ((m, p) for m in plan.models for p in range(parts)):
                # rows to keep, by a 128-bit digest of the natural key, a hash partition at a
                # time (bounded memory for millions of rows): the first of each key in the file
                # (created_at, then row) ...
                con.execute(f"""CREATE OR REPLACE TEMP TABLE keep AS
                    SELECT k, arg_min(file_row_number, (created_at, file_row_number)) AS r FROM (
                        SELECT {_digest(plan.columns, 'i')} AS k, created_at, file_row_number
                        FROM {src} i WHERE model = ?) WHERE k % {parts} = {part} GROUP BY k""", [model])
                # ... that no stored row has
                mine = [p for p in stored if p.parent.parent.name == f"model={model}"]
                if mine:
                    con.execute(f"CREATE OR REPLACE VIEW have_raw AS SELECT * FROM read_parquet("
                                f"{st._sql_list(mine)}, union_by_name=true, hive_partitioning=true, "
                                "hive_types={'model': VARCHAR, 'table': VARCHAR})")
                    present = tuple(r[0] for r in con.execute("DESCRIBE have_raw").fetchall())
                    con.execute(f"DELETE FROM keep WHERE k IN (SELECT {_digest(present, 'h')} FROM have_raw h)")
                if not con.execute("SELECT count(*) FROM keep").fetchone()[0]:
                    continue
                folder = store / f"model={model}" / "table=results"
                folder.mkdir(parents=True, exist_ok=True)
                final = folder / f"{uuid.uuid4().hex}.parquet"
                tmp = final.with_suffix(".parquet.tmp")
                staged.append((tmp, final))
                con.execute(f"""COPY (SELECT {_select(plan)} FROM {src} i
                                      WHERE i.file_row_number IN (SELECT r FROM keep))
                                TO {_lit(tmp)} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)""")
        except BaseException as exc:   # an error or a signal: nothing staged stays behind
            for tmp, _final in staged:
                tmp.unlink(missing_ok=True)
            if isinstance(exc, duckdb.Error):
                raise st.StoreError(f"{path}: import failed ({exc.__class__.__name__}: "
                                    f"{str(exc).splitlines()[0][:100]}); nothing was stored") from None
            raise
        finally:
            con.close()
        if also is not None:          # the caller's writes under the same lock, before publishing
            try:
                also()
            except BaseException:
                for tmp, _final in staged:
                    tmp.unlink(missing_ok=True)
                raise
        for tmp, final in staged:     # every partition staged: publish them all
            n = pq.read_metadata(tmp).num_rows
            if n:
                os.replace(tmp, final)
                added += n
            else:
                tmp.unlink()
    return added, plan.num_rows - added
