"""Per-(tensor, format) metrics and their model-level aggregation (definitions in DESIGN.md).

``bnl`` and ``bnl_seed`` are two block-normalized L1 losses (``workbench.kernels.metrics`` has
the exact definitions, docs/seed-fidelity.md the numbers): ``bnl`` normalises each contiguous
32-weight block of a row by its own std (llama.cpp's blocks); ``bnl_seed`` is the
hyper-quantization seed's ``block_normalized_loss(x, y, 32)`` as its code computes it — each row
viewed as [blocks × 32] and reduced over the block index, i.e. the strided column lanes
{p, p+32, p+64, …} normalised by their std. Use ``bnl_seed`` to compare with the seed's
figures. On MiniLM it reads ~6 % above ``bnl`` on 384-wide rows and ~1 % above on 1536-wide
ones (median over tensors and formats) — partly because a lane of a 384-wide row holds only 12
weights, and the reciprocal of a std estimated from fewer samples is larger on average.
"""
from __future__ import annotations

import math

import numpy as np

from workbench.kernels.metrics import error_sums, error_sums_given, signal_stats, weighted_error_sums

METRICS = ("mse", "rmse", "nmse", "sqnr_db", "max_abs_err", "cosine", "bnl", "bnl_seed")


def signal_sums(x: np.ndarray):
    """x's own sums (``signal_stats``), computed once per tensor and passed to every format's
    ``tensor_metrics``: the metrics come out bit-identical, at about half the cost."""
    return signal_stats(x)


def tensor_metrics(x: np.ndarray, y: np.ndarray, stats=None) -> dict[str, float]:
    """Error of reconstruction y against original x (both float32 2-D, same shape).
    ``stats``: ``signal_sums(x)``, when several reconstructions of one x are measured."""
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch {x.shape} vs {y.shape}")
    return metrics_from_sums(error_sums(x, y) if stats is None else error_sums_given(x, y, *stats), x.size)


def metrics_from_sums(sums: np.ndarray, n: int) -> dict[str, float]:
    """The metrics of ``tensor_metrics`` from the kernels' error sums (``error_sums`` layout)
    of a tensor of ``n`` weights: the reconstruction path and the fused one
    (``codecs.UniformCodec.error_sums``) share it."""
    # Python floats: no numpy warnings
    sse, sx2, sy2, sxy, mae, bnl, nblk, bnl_seed, nlanes = (float(v) for v in sums)
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
        "bnl_seed": bnl_seed / nlanes if nlanes else 0.0,
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
