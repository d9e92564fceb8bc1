"""Backends as plug-ins: where a format's kernels run.

One module per backend registers, for the formats it has kernels for, a codec (quantize /
dequantize, and the fused error kernel where it has one) and says which device it runs on and
at which version. ``workbench.codecs.codec_for(spec, backend)`` goes through here; the sweep,
the evaluation and the default benchmark take their backend from ``choose`` (``--backend``),
and the store records its ``name`` and ``device()`` on every row.

* ``numba`` (``numba_cpu``): the Numba kernels on the CPU, every family. The reference.
* ``cupy`` (``cupy``): the CUDA sources of ``kernels/cuda/`` on a GPU through CuPy, the uniform
  family and llama.cpp's legacy types without an imatrix so far (their host build is tested byte for byte against Numba: tests/test_cuda_host.py).
* ``auto``: cupy when it sees a GPU, else numba; ``choose`` says which and why.

A backend object has: ``name`` (the store's ``backend`` value), ``available()`` (None, or why
not, in one line), ``device()``, ``version()``, ``supports(spec)`` (None, or why not; a (tensor, format) pair it cannot do as the reference
does, it refuses in ``quantize`` with ``codecs.NotOnThisBackend``, which the sweep lists) and
``codec(spec)``.
"""
from __future__ import annotations

import importlib

MODULES = {"numba": "workbench.backends.numba_cpu", "cupy": "workbench.backends.cupy"}
CHOICES = (*MODULES, "auto")
DEFAULT = "numba"


class BackendUnavailable(ValueError):
    """The backend asked for cannot run here (the message says why, in one line)."""


def load(name: str):
    """The backend object of a registered name (not checked for availability)."""
    if name not in MODULES:
        raise BackendUnavailable(f"unknown backend {name!r}: one of {', '.join(CHOICES)}")
    return importlib.import_module(MODULES[name]).BACKEND


def default():
    return load(DEFAULT)


def resolve(backend=None):
    """A backend object from one (kept), a name for ``choose`` (numba, cupy, auto) or None (numba)."""
    return backend if backend is not None and not isinstance(backend, str) else choose(backend)[0]


def choose(requested: str | None = None):
    """(backend, why) for ``--backend``: numba, cupy or auto. An explicit backend that cannot
    run here raises ``BackendUnavailable``; auto falls back to numba and says why."""
    requested = requested or DEFAULT
    if requested == "auto":
        gpu = load("cupy")
        why_not = gpu.available()
        if why_not is None:
            return gpu, f"auto: cupy sees {gpu.device()}"
        return default(), f"auto: numba-cpu, because cupy cannot run here ({why_not})"
    be = load(requested)
    why_not = be.available()
    if why_not is not None:
        raise BackendUnavailable(f"--backend {requested}: {why_not}")
    return be, f"asked for: {be.name} on {be.device()}"
