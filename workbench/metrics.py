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
from dataclasses import dataclass

import numpy as np


# ----------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Metric:
    """One metric, as every part of the workbench names, orders and draws it."""
    name: str               # the store's column
    label: str              # axis and selector text
    lower_is_better: bool
    log: bool               # drawn on a log axis
    scope: str              # SCOPES
    plotted: bool = True    # offered by the Pareto page's metric selector


SCOPES = {
    "weight": "per tensor and format, every sweep (``tensor_metrics``)",
    "weighted": "per tensor and format, with an importance matrix only (``weighted_metrics``)",
    "model": "whole-model, ``workbench eval`` (model_eval)",
    "throughput": "quantize / dequantize speed, from the time columns (numel / seconds)",
    "derived": "what a plot draws for a metric that reads badly as itself",
}
REGISTRY: dict[str, Metric] = {m.name: m for m in (
    Metric("nmse", "NMSE  Σ(x−y)²/Σx²", True, True, "weight"),
    Metric("sqnr_db", "SQNR (dB)", False, False, "weight"),
    Metric("bnl", "BNL (block-normalized L1)", True, True, "weight"),
    Metric("bnl_seed", "BNL as the seed computes it (strided lanes)", True, True, "weight"),
    Metric("max_abs_err", "max |x−y|", True, True, "weight"),
    Metric("cosine", "cosine similarity", False, False, "weight"),
    Metric("mse", "MSE", True, True, "weight", plotted=False),
    Metric("rmse", "RMSE", True, True, "weight", plotted=False),
    # with an importance matrix only (NaN otherwise, so the views drop the rows)
    Metric("wnmse", "importance-weighted NMSE  Σw(x−y)²/Σwx²", True, True, "weighted"),
    Metric("wmse", "importance-weighted MSE  Σw(x−y)²/Σw", True, True, "weighted"),
    # what a format does to the model's outputs; rank/top-1 agreement are linear (often 1)
    Metric("drift", "embedding drift  1 − mean cosine", True, True, "model"),
    Metric("rank_agreement", "retrieval rank agreement (Spearman)", False, False, "model"),
    Metric("top1_agreement", "retrieval top-1 agreement", False, False, "model"),
    Metric("kld_mean", "mean KLD to the reference logits", True, True, "model"),
    Metric("kld_p99", "99th percentile KLD", True, True, "model"),
    Metric("dppl", "ΔPPL (perplexity − reference)", True, False, "model"),
    Metric("top1", "top-1 agreement with the reference model", False, False, "model"),
    Metric("cosine_min", "smallest embedding cosine", False, False, "model", plotted=False),
    Metric("kld_median", "median KLD", True, True, "model", plotted=False),
    Metric("kld_max", "largest KLD", True, True, "model", plotted=False),
    Metric("ppl", "perplexity", True, False, "model", plotted=False),
    Metric("quant_wps", "quantize (weights/s)", False, True, "throughput", plotted=False),
    Metric("dequant_wps", "dequantize (weights/s)", False, True, "throughput", plotted=False),
    # cosine similarity sits at 0.99-0.99999 for every format above 4 bpw: its distance to 1
    # goes on a log axis
    Metric("cosine_distance", "1 − cosine similarity", True, True, "derived"),
)}


def metrics_of(*scopes: str, plotted: bool | None = None) -> dict[str, Metric]:
    """The registry's metrics of these scopes, in registry order (``plotted``: only those the
    Pareto page offers, or only those it does not)."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown metric scope(s) {sorted(unknown)} (one of {', '.join(SCOPES)})")
    return {n: m for n, m in REGISTRY.items()
            if m.scope in scopes and (plotted is None or m.plotted == plotted)}


def lower_is_better(*scopes: str) -> tuple[str, ...]:
    return tuple(n for n, m in metrics_of(*scopes).items() if m.lower_is_better)


def higher_is_better(*scopes: str) -> tuple[str, ...]:
    return tuple(n for n, m in metrics_of(*scopes).items() if not m.lower_is_better)


# the columns ``tensor_metrics`` and ``weighted_metrics`` fill
METRICS = tuple(metrics_of("weight"))


def signal_sums(x: np.ndarray):
    """x's own sums (``signal_stats``), computed once per tensor and passed to every format's
    ``tensor_metrics``: the metrics come out bit-identical, at about half the cost."""
    from workbench.kernels.metrics import signal_stats
    return signal_stats(x)


def tensor_metrics(x: np.ndarray, y: np.ndarray, stats=None) -> dict[str, float]:
    """Error of reconstruction y against original x (both float32 2-D, same shape).
    ``stats``: ``signal_sums(x)``, when several reconstructions of one x are measured."""
    from workbench.kernels.metrics import error_sums, error_sums_given
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



WEIGHTED_METRICS = ("wmse", "wnmse")                   # in the order weighted_metrics returns them
assert set(WEIGHTED_METRICS) == set(metrics_of("weighted"))


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
    from workbench.kernels.metrics import weighted_error_sums
    swe, swx2, sw = weighted_error_sums(x, y, w)
    wmse = swe / sw if sw > 0 else 0.0
    wnmse = swe / swx2 if swx2 > 0 else (0.0 if swe == 0 else math.inf)
    return {"wmse": float(wmse), "wnmse": float(wnmse)}
