"""Per-(tensor, format) metrics and their model-level aggregation (definitions in DESIGN.md)."""
from __future__ import annotations

import math

import numpy as np

from workbench.kernels.metrics import error_sums, error_sums_given, signal_stats, weighted_error_sums

METRICS = ("mse", "rmse", "nmse", "sqnr_db", "max_abs_err", "cosine", "bnl")


def signal_sums(x: np.ndarray):
    """x's own sums (``signal_stats``), computed once per tensor and passed to every format's
    ``tensor_metrics``: the metrics come out bit-identical, at about half the cost."""
    return signal_stats(x)


def tensor_metrics(x: np.ndarray, y: np.ndarray, stats=None) -> dict[str, float]:
    """Error of reconstruction y against original x (both float32 2-D, same shape).
    ``stats``: ``signal_sums(x)``, when several reconstructions of one x are measured."""
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {x.shape} vs {y.shape}")
    sums = error_sums(x, y) if stats is None else error_sums_given(x, y, stats[0], stats[1])
    sse, sx2, sy2, sxy, mae, bnl, nblk = (float(v) for v in sums)  # Python floats: no numpy warnings
    n = x.size
    mse = sse / n
    nmse = sse / sx2 if sx2 > 0 else (0.0 if sse == 0 else math.inf)
    return {
        "numel": int(n),
        "mse": mse,
        "rmse": math.sqrt(mse),
        "nmse": nmse,
        "sqnr_db": -10 * math.log10(nmse) if nmse > 0 else (math.inf if nmse == 0 else math.nan),
        "max_abs_err": mae,
        # sqrt of each sum apart: their product overflows float64 for weights near 1e38
        "cosine": sxy / (math.sqrt(sx2) * math.sqrt(sy2)) if sx2 > 0 and sy2 > 0 else (1.0 if sse == 0 else 0.0),
        "bnl": bnl / nblk if nblk else 0.0,
    }



WEIGHTED_METRICS = ("wmse", "wnmse")


def weighted_metrics(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """Importance-weighted error of reconstruction y against x (float32 [rows, cols]) with one
    non-negative weight per column (w: [cols], e.g. an imatrix entry, see workbench.imatrix):

    * ``wmse  = Σ_ij w_j (x_ij − y_ij)² / (rows · Σ_j w_j)`` — a weighted mean of squared errors
      (w ≡ 1 gives ``mse``); 0 when every weight is 0.
    * ``wnmse = Σ_ij w_j (x_ij − y_ij)² / Σ_ij w_j x_ij²`` — relative (w ≡ 1 gives ``nmse``);
      0 when the weighted error is 0, inf when only the weighted signal is.

    Sums are accumulated in float64 in a single pass (a Numba kernel that releases the GIL).
    """
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {x.shape} vs {y.shape}")
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D tensor, got shape {x.shape}")
    w = np.asarray(w)
    if w.shape != (x.shape[1],):
        raise ValueError(f"importance has shape {w.shape}, expected ({x.shape[1]},)")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("importance weights must be finite and non-negative")
    if w.dtype != np.float32 and w.dtype != np.float64:
        w = w.astype(np.float64)
    swe, swx2, sw = weighted_error_sums(x, y, w)
    wmse = swe / sw if sw > 0 else 0.0
    wnmse = swe / swx2 if swx2 > 0 else (0.0 if swe == 0 else math.inf)
    return {"wmse": float(wmse), "wnmse": float(wnmse)}
