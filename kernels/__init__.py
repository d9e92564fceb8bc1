"""Numba CPU kernels (and, later, CUDA sources) — installed as ``workbench.kernels``."""
