"""Error metrics of a reconstruction, one pass, float64 accumulators (Numba, nogil)."""
from __future__ import annotations

import numpy as np
from numba import njit

BNL_BLOCK = 32  # the hyper-quantization seed's block-normalized L1 uses fixed 32-element blocks


@njit(cache=True, nogil=True)
def error_sums(x, y):
    """x, y: float32[rows, cols]. Returns
    [sse, sum_x2, sum_y2, sum_xy, max_abs_err, bnl_sum, bnl_blocks].

    bnl: per 32-element block along a row (the row's tail is a shorter block),
    mean|x - y| / std(x, unbiased), with a safe reciprocal (std 0 → contributes 0), then the
    mean over blocks — the seed's ``block_normalized_loss``. x's own sums come from
    ``signal_stats`` (the sweep computes them once per tensor), every sum in row-major order.
    """
    sx2, sd = signal_stats(x)
    return error_sums_given(x, y, sx2, sd)


@njit(cache=True, nogil=True)
def weighted_error_sums(x, y, w):
    """x, y: float32[rows, cols]; w: float[cols] (per-column importance, e.g. an imatrix entry).
    Returns [Σ_ij w_j (x_ij - y_ij)², Σ_ij w_j x_ij², rows · Σ_j w_j], accumulated in float64 in
    one pass (per-row partial sums, then added to the totals)."""
    rows, cols = x.shape
    swe = 0.0
    swx2 = 0.0
    sw = 0.0
    for c in range(cols):
        sw += np.float64(w[c])
    for r in range(rows):
        re = 0.0
        rx = 0.0
        for c in range(cols):
            a = np.float64(x[r, c])
            e = a - np.float64(y[r, c])
            wc = np.float64(w[c])
            re += wc * e * e
            rx += wc * a * a
        swe += re
        swx2 += rx
    return np.array([swe, swx2, sw * rows])


@njit(cache=True, nogil=True)
def signal_stats(x):
    """What ``error_sums`` computes from x alone, once per tensor instead of once per format:
    Σx² (same order, so the same float64) and each 32-block's unbiased std (0 where bnl skips
    the block). Returns (sum_x2, std[rows * blocks_per_row])."""
    rows, cols = x.shape
    nb = (cols + BNL_BLOCK - 1) // BNL_BLOCK
    sd = np.zeros(rows * nb)
    sx2 = 0.0
    for r in range(rows):
        for b in range(nb):
            c0 = b * BNL_BLOCK
            c1 = min(c0 + BNL_BLOCK, cols)
            n = c1 - c0
            s1 = 0.0
            s2 = 0.0
            for c in range(c0, c1):
                a = np.float64(x[r, c])
                sx2 += a * a
                s1 += a
                s2 += a * a
            if n > 1:
                var = (s2 - s1 * s1 / n) / (n - 1)
                if var > 0:
                    sd[r * nb + b] = np.sqrt(var)
    return sx2, sd


@njit(cache=True, nogil=True)
def error_sums_given(x, y, sx2, sd):
    """``error_sums(x, y)`` with x's own sums from ``signal_stats(x)``: the same values, bit for
    bit (every sum in the same order), with about half the arithmetic per format."""
    rows, cols = x.shape
    nb = (cols + BNL_BLOCK - 1) // BNL_BLOCK
    sse = 0.0
    sy2 = 0.0
    sxy = 0.0
    mae = 0.0
    bnl = 0.0
    for r in range(rows):
        for b in range(nb):
            c0 = b * BNL_BLOCK
            c1 = min(c0 + BNL_BLOCK, cols)
            n = c1 - c0
            l1 = 0.0
            for c in range(c0, c1):
                a = np.float64(x[r, c])
                v = np.float64(y[r, c])
                e = a - v
                sse += e * e
                sy2 += v * v
                sxy += a * v
                ae = abs(e)
                if ae > mae:
                    mae = ae
                l1 += ae
            s = sd[r * nb + b]
            if s > 0:
                bnl += (l1 / n) / s
    return np.array([sse, sx2, sy2, sxy, mae, bnl, np.float64(rows * nb)])
