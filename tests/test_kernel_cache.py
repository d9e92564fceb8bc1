"""Numba's kernel cache follows the kernel sources: a cache stamped with other sources is dropped
before the first kernel runs (Numba alone would keep an inlined routine from a changed module)."""
from __future__ import annotations

import pytest

from workbench import kernel_cache as kc


def test_a_cache_from_other_sources_is_dropped_and_restamped(tmp_path, monkeypatch):
    kernels = tmp_path / "kernels"
    (kernels / "__pycache__").mkdir(parents=True)
    (kernels / "scales.py").write_text("x = 1\n")
    monkeypatch.setattr(kc, "kernel_dir", lambda: kernels)
    monkeypatch.setattr(kc, "LOADED", kc.sources_digest())       # a process that loaded these
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    cache = kernels / "__pycache__"
    for name in ("uniform.quantize-10.py311.nbi", "uniform.quantize-10.py311.1.nbc", "scales.cpython-311.pyc"):
        (cache / name).write_bytes(b"old")
    assert kc.ensure_fresh() == 2                         # no stamp: unknown sources
    assert sorted(p.name for p in cache.iterdir()) == [kc.STAMP, "scales.cpython-311.pyc"]
    (cache / "uniform.quantize-10.py311.nbi").write_bytes(b"new")
    assert kc.ensure_fresh() == 0                         # same sources: the cache is kept
    (kernels / "scales.py").write_text("x = 2\n")         # a routine others inline changed ...
    with pytest.raises(kc.KernelSourcesChanged):           # ... under a running process: refused
        kc.ensure_fresh()
    assert (cache / "uniform.quantize-10.py311.nbi").exists()
    monkeypatch.setattr(kc, "LOADED", kc.sources_digest())       # a new process: the cache goes
    (cache / ".warmed-0123").write_text("Q4s32\n")
    assert kc.ensure_fresh() == 2 and not (cache / "uniform.quantize-10.py311.nbi").exists()
    assert not (cache / ".warmed-0123").exists()


def test_no_cache_yet_is_stamped_before_numba_writes_it(tmp_path, monkeypatch):
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    (kernels / "a.py").write_text("")
    monkeypatch.setattr(kc, "kernel_dir", lambda: kernels)
    monkeypatch.setattr(kc, "LOADED", kc.sources_digest())
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert kc.ensure_fresh() == 0
    assert (kernels / "__pycache__" / kc.STAMP).read_text().strip() == kc.sources_digest()


def test_a_user_cache_dir_is_left_alone(monkeypatch):
    monkeypatch.setattr(kc, "LOADED", kc.sources_digest())
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/somewhere")
    assert kc.cache_dir() is None and kc.ensure_fresh() == 0


def test_a_cold_cache_is_filled_by_one_process_per_core(tmp_path, monkeypatch):
    """precompile deals the kernel groups out longest first, every format exactly once, and
    leaves out the formats the cache already holds (the marker of these kernel sources)."""
    import subprocess
    from workbench.formats import resolve
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    started = []

    class Fake:
        def __init__(self, cmd, **kw):
            started.append(cmd[3:])
        def wait(self):
            return 0

        def poll(self):
            return 0
    monkeypatch.setattr(subprocess, "Popen", Fake)
    specs = resolve("default")
    assert kc.precompile(specs, processes=2) == 2
    names = [n for share in started for n in share]
    assert sorted(names) == sorted(f.name for f in specs)            # each format once
    legacy = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}
    share_of = {n: i for i, share in enumerate(started) for n in share}
    assert len({share_of[n] for n in legacy}) == 1                   # one group stays together
    assert share_of["Q4_K"] != share_of["Q4_0"]                      # the two longest apart
    kc.mark_warmed(f.name for f in specs)
    started.clear()
    assert kc.precompile(specs, processes=2) == 0 and started == []  # already in the cache
