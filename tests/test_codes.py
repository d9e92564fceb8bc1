"""workbench/codes.py: NF4 from its definition, AF4 derived for any block size against the
paper's B = 64 code, the Lloyd–Max code against NF4 and AF4 under the Gaussian block law,
and that law itself against a Monte Carlo draw."""
from __future__ import annotations

import numpy as np
import pytest

from workbench import codes as C

BLOCKS = (16, 32, 64, 128, 256)


def test_nf4_is_its_definition():
    assert np.abs(C.normal_map().astype(np.float32) - C.NF4).max() <= 1.2e-7
    assert C.NF4.dtype == np.float32 and np.all(np.diff(C.NF4) > 0)


def test_fp4_is_bitsandbytes_bit_patterns():
    assert C.FP4_BNB[3] == np.float32(1.0) and C.FP4_BNB[11] == np.float32(-1.0)
    assert sorted(np.abs(C.FP4_BNB[:8]) * 12) == [0, 0.0625, 2, 3, 4, 6, 8, 12]
    assert np.signbit(C.FP4_BNB[8]) and C.FP4_BNB[8] == 0      # code 8 is -0


def test_af4_at_64_is_the_published_code():
    a = C.af4(64)
    assert np.abs(a - C.AF4_B64_PUBLISHED).max() < 1e-4
    assert np.abs(a - C.AF4_B64_PUBLISHED).max() < 1e-7      # measured 4.4e-9


def test_af4_depends_on_the_block():
    a32, a256 = C.af4(32), C.af4(256)
    for a in (a32, a256):
        assert np.all(np.diff(a) > 0) and {-1.0, 0.0, 1.0} <= set(a) and a.size == 16
    assert np.abs(a32 - a256).max() > 0.05       # larger blocks: levels pulled toward 0
    assert a256[1] > a32[1]


@pytest.mark.parametrize("block", BLOCKS)
def test_lloyd_max_beats_nf4_and_af4(block):
    lm = C.lloyd_max(block)
    assert lm[0] == -1 and lm[-1] == 1 and np.all(np.diff(lm) > 0)
    e_lm = C.gaussian_mse(lm, block)
    assert e_lm < C.gaussian_mse(C.NF4, block) and e_lm < C.gaussian_mse(C.af4(block), block)


def test_gaussian_mse_matches_monte_carlo():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((40_000, 64))
    x = (w / np.abs(w).max(axis=1, keepdims=True)).ravel()
    code = np.sort(C.NF4.astype(np.float64))
    q = code[np.searchsorted(0.5 * (code[1:] + code[:-1]), x)]
    mc = np.mean((x - q) ** 2)
    assert C.gaussian_mse(C.NF4, 64) == pytest.approx(mc, rel=0.02)


@pytest.mark.parametrize("block", BLOCKS)
def test_signed_max_lloyd_max_frees_minus_one(block):
    """Under signed-max normalization (BOF4-S's: the block's extreme lands on +1 only) the
    Lloyd-Max code keeps +1, moves its lowest level off -1, and has a lower Gaussian MSE than
    the absmax code and NF4 under their own normalization, at every block size."""
    lm_s = C.lloyd_max(block, signed=True)
    assert lm_s[-1] == 1 and lm_s[0] > -1 and np.all(np.diff(lm_s) > 0)
    e_s = C.gaussian_mse(lm_s, block, signed=True)
    assert e_s < C.gaussian_mse(C.lloyd_max(block), block) < C.gaussian_mse(C.NF4, block)
    # a code with both ±1 costs the same under either normalization (the law is symmetric)
    assert C.gaussian_mse(C.NF4, block, signed=True) == pytest.approx(C.gaussian_mse(C.NF4, block), rel=1e-12)


def test_signed_gaussian_mse_matches_monte_carlo():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((40_000, 64))
    ext = w[np.arange(w.shape[0]), np.abs(w).argmax(axis=1)]
    x = (w / ext[:, None]).ravel()
    code = np.sort(C.lloyd_max(64, signed=True))
    q = code[np.searchsorted(0.5 * (code[1:] + code[:-1]), x)]
    mc = np.mean((x - q) ** 2)
    assert C.gaussian_mse(code, 64, signed=True) == pytest.approx(mc, rel=0.02)
