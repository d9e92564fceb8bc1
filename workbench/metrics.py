"""Per-(tensor, format) metrics and their model-level aggregation (definitions in DESIGN.md)."""
from __future__ import annotations

import math

import numpy as np

from workbench.kernels.metrics import error_sums

METRICS = ("mse", "rmse", "nmse", "sqnr_db", "max_abs_err", "cosine", "bnl")


def tensor_metrics(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Error of reconstruction y against original x (both float32 2-D, same shape)."""
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {x.shape} vs {y.shape}")
    sse, sx2, sy2, sxy, mae, bnl, nblk = error_sums(x, y)
    n = x.size
    mse = sse / n
    nmse = sse / sx2 if sx2 > 0 else (0.0 if sse == 0 else math.inf)
    return {
        "numel": int(n),
        "mse": mse,
        "rmse": math.sqrt(mse),
        "nmse": nmse,
        "sqnr_db": -10 * math.log10(nmse) if nmse > 0 else math.inf,
        "max_abs_err": mae,
        "cosine": sxy / math.sqrt(sx2 * sy2) if sx2 > 0 and sy2 > 0 else (1.0 if sse == 0 else 0.0),
        "bnl": bnl / nblk if nblk else 0.0,
    }

