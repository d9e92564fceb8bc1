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


LOADED = sources_digest()   # the kernels this process runs are imported with (or before) this module


class KernelSourcesChanged(RuntimeError):
    """The kernel files changed on disk since this process loaded them (a long-running server
    across a `git pull`): it would compile its old kernels into the new sources' cache."""


def ensure_fresh() -> int:
    """Drop a cache compiled from other kernel sources; returns the files removed. Refuses to
    run kernels in a process whose loaded kernels are older than the files on disk."""
    digest = sources_digest()
    if digest != LOADED:
        raise KernelSourcesChanged("the kernel sources changed since this process started: "
                                   "restart it (e.g. the dashboard) before measuring again")
    folder = cache_dir()
    if folder is None:
        return 0
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
    for p in list(folder.glob("*.nbi")) + list(folder.glob("*.nbc")) + list(folder.glob(".warmed-*")):
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


# --------------------------------------------------------------------- parallel first compile
# Seconds to compile each kernel group once on this project's 2-core machine (`workbench warm`
# on an empty cache): Numba compiles under one lock per process, so a cold cache is filled by
# several processes at once, the groups dealt out longest first.
COMPILE_SECONDS = {"uniform": 12, "legacy": 20, "Q2_K": 16, "Q4_K": 17, "Q3_K": 6, "Q5_K": 3.5,
                   "Q6_K": 3, "IQ4_NL": 2.5, "IQ4_XS": 2.5, "MXFP4": 1, "NVFP4": 2}


def marker() -> Path:
    """Lists the formats whose kernels the cache holds (for these kernel sources)."""
    root = Path(os.environ["NUMBA_CACHE_DIR"]) if os.environ.get("NUMBA_CACHE_DIR") else kernel_dir() / "__pycache__"
    return root / f".warmed-{LOADED[:16]}"   # ensure_fresh has checked the files still match


def warmed() -> set[str]:
    try:
        return set(marker().read_text().split())
    except OSError:
        return set()


def mark_warmed(names) -> None:
    path = marker()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}")
        tmp.write_text("\n".join(sorted(warmed() | set(names))) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass


def _group(spec) -> str:
    """A format's warm-up group: its plug-in's ``compile_group`` (llama.cpp's types, by type),
    else its family."""
    p = spec.plugin
    return p.compile_group(spec) if hasattr(p, "compile_group") else spec.family


def precompile(formats, processes: int | None = None, progress=None) -> int:
    """Fill a cold cache for ``formats`` in parallel processes (longest groups first); returns the
    processes used (0: the cache already holds them). ``progress(done, total)`` per finished process."""
    import subprocess
    import sys
    have = warmed()
    todo = [f for f in formats if f.name not in have]
    if not todo:
        return 0
    groups: dict[str, list[str]] = {}
    for f in todo:
        groups.setdefault(_group(f), []).append(f.name)
    n = max(1, min(processes or os.cpu_count() or 1, len(groups)))
    if n == 1:
        return 0                   # one group: compiling in this process is as fast
    shares: list[tuple[float, list[str]]] = [(0.0, []) for _ in range(n)]
    for g in sorted(groups, key=lambda g: -COMPILE_SECONDS.get(g, 1)):
        i = min(range(n), key=lambda k: shares[k][0])
        shares[i] = (shares[i][0] + COMPILE_SECONDS.get(g, 1), shares[i][1] + groups[g])
    procs = [subprocess.Popen([sys.executable, "-m", "workbench.kernel_cache", *names],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _, names in shares if names]
    try:
        for i, p in enumerate(procs):
            p.wait()               # a failed helper only costs time: the caller compiles the rest
            if progress is not None:
                progress(i + 1, len(procs))
    finally:                       # interrupted: no helper outlives the command
        for p in procs:
            if p.poll() is None:
                p.terminate()
    return len(procs)


if __name__ == "__main__":  # one share of a parallel first compile (see precompile)
    import sys
    from workbench.formats import parse
    from workbench.sweep import warm_up
    warm_up([parse(n) for n in sys.argv[1:]], parallel=False)
