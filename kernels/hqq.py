"""HQQ's half-quadratic step, shared by the uniform and codebook kernels' ``hqq`` searches.

mobiusml/hqq (``hqq/core/optimize.py``, ``optimize_weights_proximal``) minimises
sum |x - Q^-1(Q(x))|^p over the zero-point z with the scale fixed, by half-quadratic splitting:
each step codes the group with the current z, takes the error e = x - r of its reconstruction,
shrinks it with the generalized soft threshold below, and sets z so that the reconstruction
matches x - shrink(e) in the mean. Its defaults: p = 0.7, beta = 10, 20 steps (the current
release no longer grows beta by kappa in this loop). The two quantizers that call it differ only
in how a value is coded: ``kernels.uniform._hqq_min`` (rint onto the integer grid) and
``kernels.codebook._hqq_offset`` (the nearest level of a table)."""
from __future__ import annotations

from numba import njit

P, BETA, ITERS = 0.7, 10.0, 20


@njit(cache=True, nogil=True, inline="always")
def shrink(e):
    """sign(e) * max(|e| - |e|^(p-1) / beta, 0), float64 (0 for e = 0, where |e|^(p-1) is inf)."""
    a = abs(e)
    if a == 0:
        return 0.0
    w = max(a - a ** (P - 1.0) / BETA, 0.0)
    return -w if e < 0 else w
