"""`workbench store check [--repair]`: find what queries cannot use, and move it aside.

Kinds of problem:

* ``unreadable``: a ``.parquet`` file whose footer or data cannot be read (truncated, 0 bytes);
* ``foreign``: a file that is not one of the store's tables (wrong columns or types, a model
  column that disagrees with its ``model=`` folder, an unknown table, a stray file);
* ``unfinished``: a ``.parquet.tmp`` left by a writer that was killed before it published
  (only when older than ``STALE_SECONDS``: a younger one may be a write in progress);
* ``duplicate``: a results file whose natural keys were all stored before (queries already
  read the first copy); ``partial-dup``: a file with some such rows.

``repair`` moves every such file into ``<store>/quarantine/<UTC time>/`` under its relative
path (nothing is deleted), and writes the non-duplicate rows of a ``partial-dup`` file again as
a new file, so the store is left with exactly one row per key and nothing lost.
"""
from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from workbench import store as st

QUARANTINE = "quarantine"
STALE_SECONDS = 600


@dataclass(frozen=True)
class Problem:
    kind: str
    path: Path
    detail: str
    keep_rows: tuple[int, ...] = ()   # partial-dup: the rows queries read (written again on repair)


def _walk(store: Path):
    for dirpath, dirnames, filenames in os.walk(store):
        rel = Path(dirpath).relative_to(store)
        if rel.parts[:1] == (QUARANTINE,):
            dirnames[:] = []
            continue
        for name in filenames:
            yield Path(dirpath) / name


def check(store: str | Path) -> list[Problem]:
    """Every problem in the store (reads every file completely), in path order."""
    store = Path(store)
    problems: list[Problem] = []
    results: list[tuple[Path, object]] = []
    for path in sorted(_walk(store)):
        rel = path.relative_to(store)
        if rel.as_posix() == st.LOCK_NAME:
            continue
        if path.name.endswith(".parquet.tmp"):
            if time.time() - path.stat().st_mtime > STALE_SECONDS:
                problems.append(Problem("unfinished", path, "a write that never published (killed writer)"))
            continue
        parts = rel.parts
        table = parts[1][len("table="):] if len(parts) == 3 and parts[1].startswith("table=") else None
        model = parts[0][len("model="):] if len(parts) == 3 and parts[0].startswith("model=") else None
        if path.suffix != ".parquet" or table not in st.TABLES or not model:
            problems.append(Problem("foreign", path, "not a store table file "
                                    "(expected model=<id>/table=<results|skips|timings>/<name>.parquet)"))
            continue
        try:
            t = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types on damage
            problems.append(Problem("unreadable", path, f"{exc.__class__.__name__}: "
                                    f"{' '.join(str(exc).split())[:100]}"))
            continue
        fault = st.schema_fault(t.schema, table, in_store=True) or st._model_fault(path)
        if fault:
            problems.append(Problem("foreign", path, fault))
            continue
        if table == "results":
            results.append((path, t))
    problems += _duplicates(results)
    return sorted(problems, key=lambda p: str(p.path))


def _duplicates(files: list[tuple[Path, object]]) -> list[Problem]:
    """Files holding natural keys stored earlier, in the order queries use (the first stored
    wins: earliest created_at, then file name, then row)."""
    rows = []
    for path, t in files:
        df = st.key_frame(t, path, ("created_at",))
        df["file"] = str(path)
        df["row"] = range(len(df))
        rows.append(df)
    if not rows:
        return []
    import pandas as pd
    df = pd.concat(rows, ignore_index=True).sort_values(["created_at", "file", "row"], kind="stable")
    df["dup"] = df.duplicated(list(st.NATURAL_KEY), keep="first")
    out = []
    for file, g in df.groupby("file", sort=True):
        n = int(g["dup"].sum())
        if n == len(g) and n:
            out.append(Problem("duplicate", Path(file), f"all {n} rows' natural keys were stored earlier"))
        elif n:
            out.append(Problem("partial-dup", Path(file), f"{n} of {len(g)} rows' natural keys were stored "
                               "earlier (queries read the earlier rows)",
                               keep_rows=tuple(sorted(int(r) for r in g.loc[~g["dup"], "row"]))))
    return out


def repair(store: str | Path) -> tuple[int, int, Path]:
    """Move every problem file aside; returns (files moved, rows written again, quarantine dir).
    The check runs again under the store lock, the rows to keep are written first, then the
    files move: an interruption leaves at worst a duplicate, which a later repair removes,
    never a lost row."""
    store = Path(store)
    where = store / QUARANTINE / _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    moved = rewritten = 0
    with st.store_lock(store):
        problems = check(store)
        for p in problems:
            if p.kind == "partial-dup":
                df = _rows_to_keep(p)
                st._write_unlocked(store, "results", df)
                rewritten += len(df)
        for p in problems:
            dest = where / p.path.relative_to(store)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(p.path, dest)
                moved += 1
            except FileNotFoundError:   # gone since the check (another repair)
                pass
    return moved, rewritten, where


def _rows_to_keep(p: Problem):
    """The rows of a partly duplicate file that queries read, with its folder's model."""
    df = pq.read_table(p.path).to_pandas().iloc[list(p.keep_rows)].reset_index(drop=True)
    if "model" not in df:
        df["model"] = p.path.parent.parent.name[len("model="):]
    return df
