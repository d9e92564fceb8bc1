"""The bytes of every format the workbench names stay identical across refactors.

``tests/data/format_bytes.json`` holds, for every format of every grid, the sha256 of its packed
bytes and of its decoded float32 values on a fixed set of inputs: slices of real MiniLM tensors
(384- and 1536-wide rows) and edge tensors (zeros, denormals, huge values, mixed signs, an odd
row length that leaves a short last unit). It was written from the code before the families
moved into plug-ins (commit 30ed046) with ``python tests/test_format_bytes.py --write``; rewrite
it only for a deliberate change of a format's bytes, and say so in the commit.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench.formats import GRIDS, FormatSpec, resolve

DIGESTS = Path(__file__).parent / "data" / "format_bytes.json"
GRID_NAMES = ("default", "scales", "searches", "codebooks", "codebook-norms", "iqk", "ggml", "small")
REAL = ("encoder.layer.0.attention.self.query.weight", "encoder.layer.2.output.dense.weight")


def _edges() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((6, 512)).astype(np.float32) * 0.02
    x[0] = 0.0                                            # an all-zero row
    x[1, :256] = np.float32(1e-41)                       # denormals
    x[1, 256:] = -np.float32(3e-39)
    x[2, ::7] = 3e4                                       # huge values beside small ones
    x[3] = np.linspace(-1, 1, 512, dtype=np.float32)
    x[4, 100:200] = 0.0
    x[5] = rng.standard_normal(512).astype(np.float32) * np.float32(1e-6)
    odd = (rng.standard_normal((5, 100)) * 0.05).astype(np.float32)
    odd[0, :3] = (65000.0, -1e-8, 0.0)
    bad = (rng.standard_normal((2, 256)) * 0.02).astype(np.float32)
    bad[0, 5], bad[1, 9] = np.nan, np.inf
    return {"edges": x, "odd": odd, "nonfinite": bad}


def inputs(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {name: np.ascontiguousarray(tensors[name][:16]) for name in REAL}
    out.update(_edges())
    return out


def formats() -> list[FormatSpec]:
    return resolve(",".join(GRID_NAMES))


def digest(spec: FormatSpec, xs: dict[str, np.ndarray]) -> dict[str, str]:
    from workbench.codecs import codec_for
    codec = codec_for(spec)
    out = {}
    for key, x in xs.items():
        if spec.applies_to(x.shape) is not None:
            out[key] = "skip"
            continue
        try:
            packed = codec.quantize(x)
        except ValueError as exc:                        # NaN/Inf: refused, and how
            out[key] = f"refused: {type(exc).__name__}"
            continue
        y = codec.dequantize(packed, x.shape)
        h = hashlib.sha256(np.ascontiguousarray(packed).view(np.uint8).tobytes())
        y = np.array(y, np.float32)
        y[np.isnan(y)] = np.nan                          # (the sign and payload of a NaN: see below)
        h.update(y.tobytes())
        if hasattr(codec, "error_sums"):                 # the fused error path the sweep uses
            from workbench.metrics import signal_sums
            sums = np.asarray(codec.error_sums(x, signal_sums(x)), np.float64).copy()
            # a sum over NaN is NaN; IEEE 754 leaves the sign and payload of an arithmetic NaN
            # unspecified (they varied between the machines CI ran on): every NaN, here and in
            # the decoded values, is hashed as numpy's quiet NaN
            sums[np.isnan(sums)] = np.nan
            h.update(sums.tobytes())
        out[key] = h.hexdigest()[:20]
    return out


def _expected() -> dict:
    return json.loads(DIGESTS.read_text())


def test_every_format_is_pinned():
    """Every format of every grid has a pinned digest (a new format gets one by --write)."""
    pinned = _expected()["formats"]
    missing = [f.name for f in formats() if f.name not in pinned]
    assert not missing, f"{len(missing)} formats without pinned bytes, e.g. {missing[:5]}"
    assert len(pinned) > 1500


@pytest.mark.parametrize("grid", GRID_NAMES)
def test_bytes_identical_to_pinned(grid, minilm_tensors):
    xs = inputs(minilm_tensors)
    pinned = _expected()["formats"]
    changed = []
    for spec in GRIDS[grid]():
        got = digest(spec, xs)
        if got != pinned[spec.name]:
            changed.append(f"{spec.name}: {[k for k in got if got[k] != pinned[spec.name].get(k)]}")
    assert not changed, f"{len(changed)} formats changed bytes: {changed[:8]}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_format_bytes.py --write   (pins the current bytes)")
    from workbench.sources import open_model
    tensors = {t.name: t.load() for t in open_model(None).weights() if t.name in REAL}
    xs = inputs(tensors)
    data = {"inputs": {k: list(v.shape) for k, v in xs.items()},
            "formats": {f.name: digest(f, xs) for f in formats()}}
    lines = ",\n".join(f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(data["formats"].items()))
    DIGESTS.write_text(f'{{"inputs": {json.dumps(data["inputs"])},\n"formats": {{\n{lines}\n}}}}\n')
    print(f"pinned {len(data['formats'])} formats on {len(xs)} inputs -> {DIGESTS}")
