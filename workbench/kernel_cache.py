"""Numba's on-disk cache of the kernels, kept in step with their sources.

Numba keys a cached function by its own file's modification time only: a kernel that inlines a
routine from another module (every kernel uses ``scales``' encoders) keeps running the old
routine after that module changes, until its own file changes too. So the cache is stamped with
a digest of every kernel source, and a cache from other sources is dropped whole before the
first kernel runs (``ensure_fresh``, called by ``sweep.warm_up``, hence by every sweep and by
``workbench warm``, which scripts/setup.sh runs to fill the cache).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import workbench.kernels

STAMP = ".sources-sha256"


def kernel_dir() -> Path:
    return Path(workbench.kernels.__file__).resolve().parent


def cache_dir() -> Path | None:
    """Where Numba caches the kernels (None: NUMBA_CACHE_DIR is set, the user manages it)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    return kernel_dir() / "__pycache__"


def sources_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(kernel_dir().glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def ensure_fresh() -> int:
    """Drop a cache compiled from other kernel sources; returns the files removed."""
    folder = cache_dir()
    if folder is None:
        return 0
    digest = sources_digest()
    if not folder.is_dir():       # no cache yet: stamp the one Numba is about to write
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return 0
    stamp = folder / STAMP
    try:
        if stamp.read_text().strip() == digest:
            return 0
    except OSError:
        pass
    removed = 0
    for p in list(folder.glob("*.nbi")) + list(folder.glob("*.nbc")):
        try:
            p.unlink()
            removed += 1
        except OSError:       # another process removed it first
            pass
    try:
        tmp = stamp.with_name(f"{STAMP}.{os.getpid()}")
        tmp.write_text(digest + "\n")
        os.replace(tmp, stamp)
    except OSError:           # a read-only install: Numba then compiles in memory
        pass
    return removed
