"""Error metrics of a reconstruction, one pass, float64 accumulators (Numba, nogil).

Two block-normalized L1 losses, both on 32-wide column groups of each row:

* ``bnl`` (contiguous blocks, llama.cpp's blocks): for each block of 32 consecutive weights
  of a row (the row's tail is a shorter block), mean|x − y| / std(x_block, unbiased), then the
  mean over all blocks. A block with std 0 (or of one element) counts as 0.
* ``bnl_seed`` (the seed's own number, ``hyper/utils.py::block_normalized_loss(x, y, 32)`` of
  tfernd/hyper-quantization): the seed views each row as [blocks × 32] and reduces over the
  *block* index, so for each row r and lane p ∈ 0..31 its group is the strided column set
  {p, p+32, p+64, …}: mean_b|x − y| / std_b(x, unbiased), then the mean over rows × 32 lanes.
  Rows of a multiple of 32 columns give the seed's function (accumulated in float64, where the
  seed reduces in float32 torch: the two agree to float32 rounding). Other rows, which the
  seed cannot reshape (torch's unflatten raises), are extended the obvious way: lane p holds
  every column c ≡ p (mod 32), the first cols % 32 lanes having one column more; a row of
  fewer than 32 columns has ``cols`` lanes. A lane with std 0 or of a single column (every
  lane of a 32-column row, where the seed's torch code gives NaN) counts as 0, as in ``bnl``;
  the mean is over rows × min(32, cols) lanes. The lane std is two-pass (a constant lane is
  exactly 0, as torch's std gives), the block std of ``bnl`` one-pass (unchanged).
"""
from __future__ import annotations

import numpy as np
from numba import njit

BNL_BLOCK = 32  # the hyper-quantization seed's block-normalized L1 uses fixed 32-element blocks


@njit(cache=True, nogil=True)
def error_sums(x, y):
    """x, y: float32[rows, cols]. Returns
    [sse, sum_x2, sum_y2, sum_xy, max_abs_err, bnl_sum, bnl_blocks, bnl_seed_sum, bnl_seed_lanes].

    bnl = bnl_sum / bnl_blocks and bnl_seed = bnl_seed_sum / bnl_seed_lanes (module docstring).
    x's own sums come from ``signal_stats`` (the sweep computes them once per tensor), every sum
    in row-major order.
    """
    sx2, sd, sds = signal_stats(x)
    return error_sums_given(x, y, sx2, sd, sds)


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
    Σx² (same order, so the same float64), each contiguous 32-block's unbiased std (0 where bnl
    skips the block) and each row's 32 strided lanes' unbiased std (0 where bnl_seed skips the
    lane). Returns (sum_x2, std[rows * blocks_per_row], lane_std[rows * min(32, cols)])."""
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
    return sx2, sd, lane_stats(x)


@njit(cache=True, nogil=True)
def lane_stats(x):
    """bnl_seed's denominators: for each row and lane p (columns c ≡ p mod 32), the unbiased std
    of x over the lane, two-pass (mean, then squared deviations: a constant lane is exactly 0, as
    in torch's std); 0 for a lane of one column. Returns float64[rows * min(32, cols)]."""
    rows, cols = x.shape
    nl = min(BNL_BLOCK, cols)
    sds = np.zeros(rows * nl)
    s1 = np.empty(nl)
    s2 = np.empty(nl)
    for r in range(rows):
        s1[:] = 0.0
        s2[:] = 0.0
        for c in range(cols):
            s1[c % BNL_BLOCK] += np.float64(x[r, c])
        for p in range(nl):
            s1[p] /= (cols - p + BNL_BLOCK - 1) // BNL_BLOCK     # the lane's mean
        for c in range(cols):
            d = np.float64(x[r, c]) - s1[c % BNL_BLOCK]
            s2[c % BNL_BLOCK] += d * d
        for p in range(nl):
            n = (cols - p + BNL_BLOCK - 1) // BNL_BLOCK
            if n > 1 and s2[p] > 0:
                sds[r * nl + p] = np.sqrt(s2[p] / (n - 1))
    return sds


@njit(cache=True, nogil=True)
def row_error_sums(x, r, yr, sd, sds, acc, lane_l1):
    """Row r of ``error_sums_given``: x[r] against its reconstruction yr (float32[cols]), added
    to acc = [sse, sy2, sxy, mae, bnl_sum, bnl_seed_sum] in the same order, element by element,
    as the whole-tensor loop (so a caller that reconstructs one row at a time, as the fused
    kernels of ``workbench.kernels.uniform`` do, gets the same sums bit for bit).
    lane_l1: float64[min(32, cols)] scratch."""
    cols = x.shape[1]
    nb = (cols + BNL_BLOCK - 1) // BNL_BLOCK
    nl = min(BNL_BLOCK, cols)
    sse = acc[0]
    sy2 = acc[1]
    sxy = acc[2]
    mae = acc[3]
    bnl = acc[4]
    bnls = acc[5]
    lane_l1[:] = 0.0
    for b in range(nb):
        c0 = b * BNL_BLOCK
        c1 = min(c0 + BNL_BLOCK, cols)
        n = c1 - c0
        l1 = 0.0
        for c in range(c0, c1):
            a = np.float64(x[r, c])
            v = np.float64(yr[c])
            e = a - v
            sse += e * e
            sy2 += v * v
            sxy += a * v
            ae = abs(e)
            if ae > mae:
                mae = ae
            l1 += ae
            lane_l1[c - c0] += ae           # c - c0 = c mod 32: the seed's lane
        s = sd[r * nb + b]
        if s > 0:
            bnl += (l1 / n) / s
    for p in range(nl):
        s = sds[r * nl + p]
        if s > 0:
            bnls += (lane_l1[p] / ((cols - p + BNL_BLOCK - 1) // BNL_BLOCK)) / s
    acc[0] = sse
    acc[1] = sy2
    acc[2] = sxy
    acc[3] = mae
    acc[4] = bnl
    acc[5] = bnls


@njit(cache=True, nogil=True, inline="always")
def pack_sums(acc, sx2, rows, cols):
    """The ``error_sums`` array from row_error_sums' accumulators."""
    nb = (cols + BNL_BLOCK - 1) // BNL_BLOCK
    nl = min(BNL_BLOCK, cols)
    return np.array([acc[0], sx2, acc[1], acc[2], acc[3], acc[4], np.float64(rows * nb), acc[5],
                     np.float64(rows * nl)])


@njit(cache=True, nogil=True)
def error_sums_given(x, y, sx2, sd, sds):
    """``error_sums(x, y)`` with x's own sums from ``signal_stats(x)``: the same values, bit for
    bit (every sum in the same order), with about half the arithmetic per format."""
    rows, cols = x.shape
    acc = np.zeros(6)
    lane_l1 = np.empty(min(BNL_BLOCK, cols))
    for r in range(rows):
        row_error_sums(x, r, y[r], sd, sds, acc, lane_l1)
    return pack_sums(acc, sx2, rows, cols)
