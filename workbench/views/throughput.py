"""The Throughput page's pure functions: the store's results rows (``workbench.store.results``)
and reference timings (``workbench.store.timings``) in, tables and HoloViews out.

Weights per second of a format on one backend and device = Σ numel / Σ seconds over the
tensors it was timed on, each (tensor, format) counted once per backend and device (the
fastest of repeated measurements, as ``store.summary`` does), so one slow tensor weighs by its
size. A default sweep times each uniform format on one tensor (``sweep.timing_tensor``; the
other rows' errors come from the fused kernel and carry no timing): ``tensors`` counts the
timed ones. Nothing here touches the store or Panel.
"""
from __future__ import annotations

from dataclasses import dataclass

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend the opts below name)
import numpy as np
import pandas as pd
from bokeh.models import LogTicker, NumeralTickFormatter
from bokeh.palettes import Category10

NO_REFERENCE = "no llama.cpp reference measured: run `workbench bench --vs llama.cpp --store`"
REQUIRED = ("tensor", "format", "numel", "nbytes", "quant_s", "dequant_s", "backend", "device")
# shown tables: rates in millions of weights per second
TABLE_COLUMNS = ("format", "family", "bpw", "backend", "device", "tensors", "quantize Mw/s", "dequantize Mw/s")
REFERENCE_COLUMNS = ("format", "implementation", "threads", "bpw", "quant_wps", "identical", "device",
                     "imatrix_file", "created_at")
REFERENCE_ROWS = ("format", "implementation", "threads", "bpw", "quantize Mw/s", "identical", "device",
                  "imatrix_file", "measured")
# one marker per implementation, so the reference stands apart from the sweep's circles
MARKERS = {"llama.cpp": "triangle", "workbench-numba": "diamond"}
BPW = hv.Dimension("bpw", label="bits per weight")


@dataclass(frozen=True)
class Direction:
    name: str       # 'quant' | 'dequant': the column prefix in the store
    label: str

    @property
    def wps(self) -> str:
        return f"{self.name}_wps"


DIRECTIONS = {d.name: d for d in (Direction("quant", "quantize"), Direction("dequant", "dequantize"))}


# ------------------------------------------------------------------------------- data
def _check(df: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} have no columns {', '.join(missing)}")


def _wps(numel: pd.Series, seconds: pd.Series) -> pd.Series:
    """Σ numel / Σ seconds over the rows whose seconds are a real positive time."""
    ok = np.isfinite(seconds.astype(float)) & (seconds > 0)
    total = seconds.where(ok).sum(min_count=1)
    return numel.where(ok).sum() / total if pd.notna(total) else np.nan


def throughput_table(results: pd.DataFrame, imatrix: str | None = "") -> pd.DataFrame:
    """Weights per second per (format, backend, device) of one model's results rows.

    ``imatrix``: keep the runs with that importance matrix ("" = without one, None = all).
    Columns: format, family, backend, device, where ('backend · device'), tensors (timed), numel
    and bpw (stored bits / weights, over every tensor measured), quant_wps, dequant_wps; sorted by
    bpw, format."""
    _check(results, REQUIRED, "the results")
    cols = ["format", "family", "backend", "device", "where", "tensors", "numel", "bpw",
            "quant_wps", "dequant_wps"]
    df = results
    if imatrix is not None and "imatrix" in df.columns:
        df = df[df["imatrix"].fillna("") == imatrix]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.assign(family=df["family"] if "family" in df.columns else None)
    keys = ["format", "backend", "device"]
    per_tensor = df.groupby([*keys, "tensor"], dropna=False, sort=False).agg(
        family=("family", "first"), numel=("numel", "first"), nbytes=("nbytes", "first"),
        quant_s=("quant_s", "min"), dequant_s=("dequant_s", "min")).reset_index()
    rows = []
    for (fmt, backend, device), g in per_tensor.groupby(keys, dropna=False, sort=False):
        numel = g["numel"].astype(float)
        rows.append({"format": fmt, "family": g["family"].iloc[0], "backend": backend, "device": device,
                     "where": f"{backend} · {device}",
                     "tensors": int((g["quant_s"].astype(float) > 0).sum()), "numel": int(numel.sum()),
                     "bpw": g["nbytes"].sum() * 8.0 / numel.sum(),
                     "quant_wps": _wps(numel, g["quant_s"]), "dequant_wps": _wps(numel, g["dequant_s"])})
    return pd.DataFrame(rows, columns=cols).sort_values(["bpw", "format", "where"]).reset_index(drop=True)


def reference_table(timings: pd.DataFrame, with_imatrix: bool = False) -> pd.DataFrame:
    """The latest recorded reference timing per (format, implementation, threads, device),
    with or without an importance matrix, and a 'series' label ('llama.cpp, 1 thread')."""
    _check(timings, ("format", "implementation", "threads", "imatrix", "bpw", "quant_wps", "device",
                     "created_at"), "the timings")
    df = timings[(timings["imatrix"].fillna("") != "") == with_imatrix]
    cols = [*REFERENCE_COLUMNS, "series"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.assign(**{c: None for c in ("identical", "imatrix_file") if c not in df.columns})
    df = (df.sort_values("created_at", kind="stable")
            .drop_duplicates(["format", "implementation", "threads", "device"], keep="last"))
    df = df.assign(threads=df["threads"].astype(int))
    df["series"] = [f"{i}, {n} thread{'s' if n != 1 else ''}" for i, n in zip(df["implementation"], df["threads"])]
    return df[cols].sort_values(["bpw", "format", "implementation", "threads"]).reset_index(drop=True)


def table_rows(table: pd.DataFrame, direction: str = "quant") -> pd.DataFrame:
    """The page's table: one row per (format, backend, device), rates in M weights/s, fastest
    first for ``direction``."""
    d = DIRECTIONS[direction]
    out = table.sort_values([d.wps, "format"], ascending=[False, True], na_position="last")
    out = out.assign(**{f"{x.label} Mw/s": out[x.wps] / 1e6 for x in DIRECTIONS.values()})
    return out[list(TABLE_COLUMNS)].reset_index(drop=True)


def reference_rows(reference: pd.DataFrame) -> pd.DataFrame:
    """The page's reference table: a ``reference_table`` with rates in M weights/s and the
    time of measurement as text."""
    when = pd.to_datetime(reference["created_at"], utc=True).dt.strftime("%Y-%m-%d %H:%M UTC")
    out = reference.assign(**{"quantize Mw/s": reference["quant_wps"] / 1e6, "measured": when})
    return out[list(REFERENCE_ROWS)].reset_index(drop=True)


def plottable(table: pd.DataFrame, direction: str = "quant") -> pd.DataFrame:
    """Rows drawable on the log axis: finite bpw and a positive, finite rate in ``direction``."""
    wps = pd.to_numeric(table[DIRECTIONS[direction].wps], errors="coerce").to_numpy(float)
    bpw = pd.to_numeric(table["bpw"], errors="coerce").to_numpy(float)
    return table[np.isfinite(wps) & (wps > 0) & np.isfinite(bpw)]


# ------------------------------------------------------------------------------ plots
def series_colors(names) -> dict[str, str]:
    """A stable colour per series (sorted names → Category10), whatever order they come in."""
    palette = Category10[10]
    return {n: palette[i % len(palette)] for i, n in enumerate(sorted(set(names)))}


def throughput_plot(table: pd.DataFrame, direction: str = "quant",
                    reference: pd.DataFrame | None = None) -> hv.Overlay:
    """bpw (x) vs weights per second (y, log) of every format, one colour per backend · device;
    the reference timings (quantization only) on top, one colour per series and one marker per
    implementation. The plotted rate is the column 'wps' of every layer, whatever the direction.
    One layer per legend entry: bokeh refuses a legend item over renderers with different data
    sources (E-1006), which one layer coloured by a column would need."""
    d = DIRECTIONS[direction]
    wps = hv.Dimension("wps", label=f"{d.label}: M weights per second")
    data = plottable(table, direction).assign(wps=lambda t: t[d.wps].astype(float) / 1e6)
    ref = reference if reference is not None and d.name == "quant" else None
    ref = plottable(ref, "quant").assign(wps=lambda t: t["quant_wps"].astype(float) / 1e6) if ref is not None else None
    colors = series_colors(list(data["where"]) + (list(ref["series"]) if ref is not None else []))
    hover = [("format", "@format"), ("bpw", "@bpw{0.000}"), ("Mw/s", "@wps{0,0.000}")]
    vdims = ["where", "format", "family", "tensors"]
    layers = [hv.Points(g[["bpw", "wps", *vdims]], kdims=[BPW, wps], vdims=vdims, label=name).opts(
        color=colors[name], size=9, alpha=0.85, line_color="white", logy=True, tools=["hover"],
        hover_tooltips=hover + [("where", "@where"), ("tensors", "@tensors")])
        for name, g in data.groupby("where", sort=True)]
    if ref is not None:
        vdims = ["series", "format", "implementation", "threads"]
        layers += [hv.Points(g[["bpw", "wps", *vdims]], kdims=[BPW, wps], vdims=vdims, label=name).opts(
            color=colors[name], marker=MARKERS.get(g["implementation"].iloc[0], "square"), size=13,
            line_color="black", alpha=0.9, logy=True, tools=["hover"],
            hover_tooltips=hover + [("measured by", "@implementation, @threads thread(s)")])
            for name, g in ref.groupby("series", sort=True)]
    if not layers:     # nothing measured: an empty frame with the right axes
        layers = [hv.Points([], kdims=[BPW, wps]).opts(logy=True)]
    return hv.Overlay(layers).opts(
        title=f"{d.label}: M weights per second (higher is faster)",
        logy=True, show_grid=True, responsive=True, min_height=460, legend_position="right",
        yticks=rate_ticker(), yformatter=rate_formatter())


# Rates in M weights/s on a log axis: ticks at 1, 2 and 5 of every decade, so a range narrower
# than a decade (most formats sit within 100-500 Mw/s) still has labels, written as plain numbers.
# (New models per plot: a Bokeh model belongs to one document, i.e. one session.)
def rate_formatter() -> NumeralTickFormatter:
    return NumeralTickFormatter(format="0,0.[00]")


def rate_ticker() -> LogTicker:
    return LogTicker(mantissas=[1, 2, 5], desired_num_ticks=10)
