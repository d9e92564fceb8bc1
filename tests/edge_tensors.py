"""Edge-case tensors for the uniform family's byte- and sum-identity tests (test_fused,
test_cuda_host): zeros, odd shapes, denormals, huge values, constant rows, one sign only, ties,
60 decades of scale, and (``nonfinite``) NaN and ±Inf, one of them first in its block, where a
block's min and max start."""
from __future__ import annotations

import numpy as np

from workbench.codecs import as_kernel_input


def uniform_edge_cases(nonfinite: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    tiny = np.finfo(np.float32).tiny
    x = {"zeros": np.zeros((3, 96)),
         "odd shape 5x100": rng.standard_normal((5, 100)),
         "one column": rng.standard_normal((9, 1)),
         "one row of 7": rng.standard_normal((1, 7)),
         "denormals": rng.standard_normal((4, 64)) * tiny * 0.01,
         "huge": rng.standard_normal((4, 64)) * 1e37,
         "constant rows": np.repeat(rng.standard_normal((4, 1)), 64, axis=1),
         "negative only": -np.abs(rng.standard_normal((4, 160))),
         "signed-max ties": np.tile([1.0, -1.0, 0.5, -0.5], (3, 16)),
         "mixed scales": rng.standard_normal((6, 256)) * np.logspace(-30, 30, 256)}
    if nonfinite:
        bad = np.random.default_rng(8).standard_normal((4, 96))
        bad[0, 5], bad[1, 0], bad[2, 40], bad[3, 0] = np.nan, np.inf, -np.inf, np.nan
        x["NaN and Inf"] = bad
    return {k: as_kernel_input(v.astype(np.float32)) for k, v in x.items()}
