"""Element codes of the codebook family: sorted levels in [-1, 1] that a block's values, divided
by the block's absmax, are rounded to. These tables are the authority for
``workbench.families.codebook``.

* ``NF4``: bitsandbytes' NF4 constants (``bitsandbytes/functional.py get_4bit_type("nf4")``),
  float32. ``normal_map()`` regenerates them from their definition (normal quantiles).
* ``FP4_BNB``: bitsandbytes' FP4, in its bit-pattern order (index = stored 4-bit code):
  ``[0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3] / 12`` in float32.
* ``af4(block)``: Yoshida's AbnormalFloat ("NF4 isn't information theoretically optimal",
  arXiv 2306.06965) for any block size: levels -1, 0, 1 fixed, six in (-1, 0) and seven in
  (0, 1), each the *median* of its cell under the distribution of ``x = w / max|w|`` for B iid
  Gaussian weights, each half built apart with its innermost cell ending at 0 (``af4``).
  ``AF4_B64_PUBLISHED`` is the paper's B = 64 code.
* ``lloyd_max(block)``: the MSE-optimal code for the same distribution (each free level the
  conditional *mean* of its cell, ±1 fixed, no forced zero), by Lloyd's iteration.

The distribution of x for a block of B: point masses 1/(2B) at -1 and +1 (the maximum element
itself) and, with probability (B-1)/B, the other elements: given the block's absmax m (density
``B (2Φ(m)-1)^(B-1) 2φ(m)``, the largest of B half-normals) each is N(0, 1) truncated to
[-m, m], divided by m. Its density on (-1, 1) is tabulated once per block size on a grid of
step 1e-5 (``_density``), with Gauss-Legendre quadrature over m.
"""
from __future__ import annotations

import functools
import math

import numpy as np

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)
FP4_BNB = (np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3], np.float32)
           / np.float32(12)).astype(np.float32)
AF4_B64_PUBLISHED = np.array([-1.0, -0.69441008, -0.51243739, -0.3736951, -0.25607552, -0.14982478,
                              -0.04934812, 0.0, 0.04273164, 0.12934483, 0.21961274, 0.31675666,
                              0.42563882, 0.55496234, 0.72424863, 1.0])

_SQRT2 = math.sqrt(2.0)


def _phi_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / _SQRT2))


def norm_ppf(p: float) -> float:
    """The standard normal quantile, by bisection on math.erf (to float64 resolution)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _phi_cdf(mid) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-16:
            break
    return 0.5 * (lo + hi)


def normal_map(offset: float = 0.9677083, use_extra_value: bool = True) -> np.ndarray:
    """bitsandbytes' ``create_normal_map``: 8 positive normal quantiles over linspace(offset,
    0.5, 9)[:-1], 7 negative over linspace(offset, 0.5, 8)[:-1], and 0; sorted, over the max."""
    pos = [norm_ppf(p) for p in np.linspace(offset, 0.5, 9)[:-1]]
    neg = [-norm_ppf(p) for p in np.linspace(offset, 0.5, 8)[:-1]] if use_extra_value else []
    v = np.sort(np.array(pos + [0.0] + neg))
    return v / np.abs(v).max()


# ---------------------------------------------------------------- the block-normalized law
GRID_STEP = 1e-5


@functools.lru_cache(maxsize=None)
def _density(block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x grid on [-1, 1], continuous density there, its CDF from -1): the continuous part only,
    total mass (B-1)/B; the point masses 1/(2B) sit at ±1."""
    if block < 2:
        raise ValueError("a block needs at least 2 weights")
    nodes, weights = np.polynomial.legendre.leggauss(400)
    top = 9.0
    m = 0.5 * top * (nodes + 1.0)
    w = 0.5 * top * weights
    two_phi = np.array([2.0 * _phi_cdf(v) - 1.0 for v in m])          # P(|z| < m)
    pdf_m = np.exp(-0.5 * m * m) / math.sqrt(2.0 * math.pi)
    p_max = block * np.power(two_phi, block - 1) * 2.0 * pdf_m          # density of the absmax
    x = np.linspace(-1.0, 1.0, int(round(2.0 / GRID_STEP)) + 1)
    f = np.zeros_like(x)
    coef = w * p_max * m / np.maximum(two_phi, 1e-300)
    for k in range(m.size):                                            # sum over the quadrature nodes
        if coef[k] > 0:
            f += coef[k] * np.exp(-0.5 * (m[k] * x) ** 2)
    f *= (block - 1) / block / math.sqrt(2.0 * math.pi)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(x))])
    return x, f, cdf


def _cdf(block: int, t: np.ndarray) -> np.ndarray:
    x, _, cdf = _density(block)
    return np.interp(t, x, cdf)


def _inv_cdf(block: int, p: np.ndarray) -> np.ndarray:
    x, _, cdf = _density(block)
    return np.interp(p, cdf, x)


def _partial_mean(block: int, t: np.ndarray) -> np.ndarray:
    """∫_{-1}^{t} x f(x) dx of the continuous part."""
    x, f, _ = _density(block)
    g = x * f
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (g[1:] + g[:-1]) * np.diff(x))])
    return np.interp(t, x, cum)


def _bounds(levels: np.ndarray) -> np.ndarray:
    return np.concatenate([[-1.0], 0.5 * (levels[1:] + levels[:-1]), [1.0]])


def _af4_half(block: int, n: int, tol: float, iters: int) -> np.ndarray:
    """n levels in (-1, 0): each the median of its cell, the cells running from the midpoint
    with -1 to the midpoints between the levels and, for the last, to 0 itself (where the
    distribution's median lies; Yoshida's ``interval_code_search``)."""
    lv = np.linspace(-1.0, 0.0, n + 2)[1:-1]
    for _ in range(iters):
        b = np.concatenate([[(-1.0 + lv[0]) / 2], 0.5 * (lv[1:] + lv[:-1]), [0.0]])
        new = _inv_cdf(block, 0.5 * (_cdf(block, b[:-1]) + _cdf(block, b[1:])))
        step = np.abs(new - lv).max()
        lv = new
        if step < tol:
            break
    return lv


@functools.lru_cache(maxsize=None)
def af4(block: int, tol: float = 1e-13, iters: int = 100_000) -> np.ndarray:
    """AF4 for ``block``: -1, 0, 1 fixed; six levels in (-1, 0) and seven in (0, 1), each the
    median of its cell, the two halves built apart (the law is symmetric: the positive half is
    the mirror of a seven-level negative one). Within a half, a cell runs between midpoints of
    neighbouring levels, from the midpoint with ±1, and the cell next to 0 ends at 0: the
    construction of the paper's code (davisyoshida/abnormal-floats), whose B = 64 levels
    ``AF4_B64_PUBLISHED`` are the check (tests/test_codes.py)."""
    neg = _af4_half(block, 6, tol, iters)
    pos = -_af4_half(block, 7, tol, iters)[::-1]
    return np.concatenate([[-1.0], neg, [0.0], pos, [1.0]])


@functools.lru_cache(maxsize=None)
def lloyd_max(block: int, levels: int = 16, tol: float = 1e-10, iters: int = 3_000,
              signed: bool = False) -> np.ndarray:
    """The MSE-optimal code for ``block`` (±1 fixed, the rest free), by Lloyd's iteration from NF4.

    ``signed``: for signed-max normalization (BOF4-S's), where each block's extreme lands on +1
    only: the law is the same continuous part with its point mass 1/B at +1, so +1 stays fixed
    and -1 is freed (15 free levels)."""
    if levels != 16:
        raise ValueError("4-bit codes: 16 levels")
    lv = NF4.astype(np.float64).copy()
    free = np.arange(0 if signed else 1, 15)
    for _ in range(iters):
        b = _bounds(lv)
        lo, hi = b[free], b[free + 1]
        mass = _cdf(block, hi) - _cdf(block, lo)
        new = (_partial_mean(block, hi) - _partial_mean(block, lo)) / np.maximum(mass, 1e-300)
        step = np.abs(new - lv[free]).max()
        lv[free] = new
        if step < tol:
            break
    return lv


def gaussian_mse(code, block: int, signed: bool = False) -> float:
    """E[(x - Q(x))^2] for x = w / max|w| over a block of Gaussian weights, Q the nearest level
    of ``code`` (numerical integration; the point masses at ±1 included). ``signed``: x = w /
    (the block's signed extreme), whose point mass 1/B sits at +1 alone."""
    c = np.sort(np.asarray(code, np.float64))
    x, f, _ = _density(block)
    mids = 0.5 * (c[1:] + c[:-1])
    q = c[np.searchsorted(mids, x)]
    g = (x - q) ** 2 * f
    cont = float(np.sum(0.5 * (g[1:] + g[:-1]) * np.diff(x)))
    if signed:
        return cont + (1.0 - c[-1]) ** 2 / block
    ends = ((1.0 - c[-1]) ** 2 + (-1.0 - c[0]) ** 2) / (2 * block)
    return cont + ends


# ------------------------------------------------------------------ float element types (MX)
@functools.lru_cache(maxsize=None)
def float_levels(ebits: int, mbits: int, bias: int, finite: int) -> np.ndarray:
    """The non-negative values of a sign-magnitude float element type, by magnitude code
    (code k: exponent field k >> mbits, mantissa k & (2^mbits - 1); field 0 subnormal), for
    the first ``finite`` codes. Monotone in the code, so a value's nearest level is a bisection
    and a tie goes to the even code (the even mantissa: round half to even)."""
    out = []
    for k in range(finite):
        e, m = k >> mbits, k & ((1 << mbits) - 1)
        if e == 0:
            out.append(m / (1 << mbits) * 2.0 ** (1 - bias))
        else:
            out.append((1 + m / (1 << mbits)) * 2.0 ** (e - bias))
    return np.array(out, np.float32)


# name: (element bits, ebits, mbits, bias, finite magnitude codes); OCP MX v1.0 §5.3, with
# E4M3 as float8_e4m3fn (S.1111.111 is NaN: max 448) and E5M2 as IEEE (exponent 31 inf/NaN)
FLOAT_ELEMENTS = {
    "E2M1": (4, 2, 1, 1, 8),       # max 6
    "E2M3": (6, 2, 3, 1, 32),      # max 7.5
    "E3M2": (6, 3, 2, 3, 32),      # max 28
    "E4M3": (8, 4, 3, 7, 127),     # max 448
    "E5M2": (8, 5, 2, 15, 124),    # max 57344
}
# MXINT8 (OCP MX §5.4): two's complement with an implicit scale 2^-6, used symmetrically
# (±127/64; microxcaling clamps to that range, so -128 is never written).
INT8_LEVELS = (np.arange(128, dtype=np.float32) / np.float32(64)).astype(np.float32)


def element_levels(name: str) -> np.ndarray:
    if name == "INT8":
        return INT8_LEVELS
    _, e, m, b, n = FLOAT_ELEMENTS[name]
    return float_levels(e, m, b, n)


# ---------------------------------------------------------- bitsandbytes' 8-bit dynamic code
# bitsandbytes' ``create_dynamic_map(signed=True)`` (Dettmers' dynamic tree code: a sign, a
# run of zeros for the decimal exponent, a 1, then a linear fraction), 256 sorted float32
# values as bitsandbytes computes them (torch.linspace); its double quantization decodes with
# this table. (Its CPU quantizer searches a copy whose entry 0 is -1.0, csrc/cpu_ops.cpp; the
# workbench rounds to the nearest entry of the table itself.) tests/test_codebook.py checks
# these against bitsandbytes.
_DYN8_HEX = (
    "bf7e3333bf7a999abf770000bf736666bf6fcccdbf6c3333bf68999abf650000bf616666bf5dcccdbf5a3333"
    "bf56999abf530000bf4f6666bf4bcccdbf483333bf44999abf410000bf3d6666bf39cccdbf363334bf32999a"
    "bf2f0000bf2b6666bf27cccdbf243334bf20999abf1d0000bf196666bf15cccdbf123334bf0e999abf0b0000"
    "bf076666bf03ccccbf003333bef93332bef20000beeaccccbee3999abedc6666bed53333bece0000bec6cccc"
    "bebf999abeb86666beb13333beaa0000bea2ccccbe9b999abe946666be8d3334be860000be7d9999be6f3333"
    "be60cccdbe526666be440000be35999abe273333be18cccdbe0a6666bdf80000bddb3334bdc9eb85bdc428f7"
    "bdbe6667bdb8a3d7bdb2e148bdad1eb8bda75c2abda1999abd9bd70abd96147bbd9051ebbd8a8f5dbd84cccd"
    "bd7e147bbd728f5dbd670a3dbd5b851fbd500000bd447ae1bd38f5c3bd2d70a3bd21eb85bd166667bd0ae148"
    "bcfeb852bce7ae15bcd0a3d7bcb9999abca28f5dbc8b851fbc68f5c3bc3ae148bc1f3b64bc160418bc0ccccd"
    "bc039581bbf4bc6abbe24dd3bbcfdf3bbbbd70a4bbab020dbb989374bb8624ddbb676c8abb428f5cbb1db22d"
    "baf1a9fcbaa7ef9dba7765ffba59e83eba3c6a80ba1eecc1ba016f01b9c7e283b98ce705b923d70bb8ba1f4b"
    "b88aefb3b8378034b7b24206b70205ffb65a1a94b513a3b7000000003513a3b7365a1a94370205ff37b24206"
    "38378034388aefb338ba1f4b3923d70b398ce70539c7e2833a016f013a1eecc13a3c6a803a59e83e3a7765ff"
    "3aa7ef9d3af1a9fc3b1db22d3b428f5c3b676c8a3b8624dd3b9893743bab020d3bbd70a43bcfdf3b3be24dd3"
    "3bf4bc6a3c0395813c0ccccd3c1604183c1f3b643c3ae1483c68f5c33c8b851f3ca28f5d3cb9999a3cd0a3d7"
    "3ce7ae153cfeb8523d0ae1483d1666673d21eb853d2d70a33d38f5c33d447ae13d5000003d5b851f3d670a3d"
    "3d728f5d3d7e147b3d84cccd3d8a8f5d3d9051eb3d96147b3d9bd70a3da1999a3da75c2a3dad1eb83db2e148"
    "3db8a3d73dbe66673dc428f73dc9eb853ddb33343df800003e0a66663e18cccd3e2733333e35999a3e440000"
    "3e5266663e60cccd3e6f33333e7d99993e8600003e8d33343e9466663e9b999a3ea2cccc3eaa00003eb13333"
    "3eb866663ebf999a3ec6cccc3ece00003ed533333edc66663ee3999a3eeacccc3ef200003ef933323f003333"
    "3f03cccc3f0766663f0b00003f0e999a3f1233343f15cccd3f1966663f1d00003f20999a3f2433343f27cccd"
    "3f2b66663f2f00003f32999a3f3633343f39cccd3f3d66663f4100003f44999a3f4833333f4bcccd3f4f6666"
    "3f5300003f56999a3f5a33333f5dcccd3f6166663f6500003f68999a3f6c33333f6fcccd3f7366663f770000"
    "3f7a999a3f7e33333f800000")
DYN8 = np.frombuffer(bytes.fromhex(_DYN8_HEX), ">u4").astype(np.uint32).view(np.float32).copy()
assert DYN8.size == 256 and (np.diff(DYN8) > 0).all() and DYN8[0] == np.float32(-0.99296875) and DYN8[-1] == 1.0


# ---------------------------------------------------------------------------- the fitted code
FIT_BINS = 1 << 16


def fit_levels(count: np.ndarray, total: np.ndarray, tol: float = 1e-9, iters: int = 200,
               free_low: bool = False) -> np.ndarray:
    """The data-fitted code: Lloyd's iteration (±1 fixed, 14 free levels, from NF4) on the
    empirical law of a tensor's block-normalized values, each weighted by its block's absmax²
    so that it minimises the weight-space squared error, given as a fine histogram (weight and
    weighted sum of the values per bin, ``kernels.codebook.normalized_histogram``): each free
    level becomes the weighted mean of the values nearer to it than to its neighbours.
    float32[16], sorted. ``free_low``: -1 is free too (signed-max normalization: 15 free levels)."""
    centers = np.where(count > 0, total / np.where(count > 0, count, 1.0), 0.0)
    keep = count > 0
    c, w = centers[keep], count[keep]
    lv = NF4.astype(np.float64).copy()
    if c.size == 0:
        return lv.astype(np.float32)
    cw, cs = np.concatenate([[0.0], np.cumsum(w)]), np.concatenate([[0.0], np.cumsum(w * c)])
    first = 0 if free_low else 1
    for _ in range(iters):
        mids = 0.5 * (lv[1:] + lv[:-1])
        cut = np.concatenate([[0], np.searchsorted(c, mids, side="right")])   # values <= a midpoint go lower
        lo, hi = cut[first:-1], cut[first + 1:]            # the free cells (levels first..14)
        mass = cw[hi] - cw[lo]
        new = np.where(mass > 0, (cs[hi] - cs[lo]) / np.maximum(mass, 1e-300), lv[first:-1])
        step = np.abs(new - lv[first:-1]).max()
        lv[first:-1] = new
        if step < tol:
            break
    out = np.sort(lv).astype(np.float32)
    # distinct float32 levels (a cell without data keeps its start; nudge duplicates apart)
    for k in range(1, 16):
        if out[k] <= out[k - 1]:
            out[k] = np.nextafter(out[k - 1], np.float32(2))
    return out
