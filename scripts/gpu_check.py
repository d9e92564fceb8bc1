"""The device checks of issue 13, in one run on a lent GPU (scripts/gpu-check.sh; ≤ 8 minutes on
one H100/H200). Needs numpy, numba and cupy (the device image has them) and nvcc; nothing is
installed and nothing leaves the machine.

1. Byte identity: the cupy backend (kernels/cuda/uniform.cu built for this GPU) against the Numba
   kernels, on every uniform format of the default and searches grids and every 5th of the scales
   grid, on the edge-case tensors (zeros, NaN/Inf, denormals, huge, odd shapes), two LLM-shaped
   synthetic tensors and, with --slices FILE.npz, real tensor slices. Packed bytes equal, and the
   decoded values equal (NaN where Numba has NaN; payloads are not defined by IEEE 754).
2. Throughput: the quantize and dequantize kernels on a 4096×14336 tensor (an 8 B model's FFN
   shape) for single-level uniform formats, in GB/s of bytes read + written, as a fraction of a
   device-to-device copy measured in the same run (target ≥ 60 %).

Prints Markdown; exit 0 when every byte matched, 1 when one did not, 2 when it cannot run.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bootstrap() -> None:
    """Import the workbench from the checkout without installing it (kernels/ is installed as
    workbench.kernels: pyproject's package-dir)."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    import workbench
    try:
        import workbench.kernels  # noqa: F401
    except ImportError:
        spec = importlib.util.spec_from_file_location("workbench.kernels", ROOT / "kernels" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "kernels")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["workbench.kernels"] = mod
        workbench.kernels = mod
        spec.loader.exec_module(mod)


def formats():
    from workbench.formats import resolve
    seen, out = set(), []
    from workbench.cuda_host import EXTRA_UNIFORM
    for f in [*resolve("default"), *resolve("searches"), *resolve("scales")[::5], *resolve(EXTRA_UNIFORM)]:
        if f.family == "uniform" and f.name not in seen:
            seen.add(f.name)
            out.append(f)
    return out


def tensors(slices: Path | None):
    import numpy as np
    from edge_tensors import uniform_edge_cases
    rng = np.random.default_rng(5)
    out = uniform_edge_cases(nonfinite=True)
    ffn = (rng.standard_normal((64, 4096)) * 0.02).astype(np.float32)
    ffn[:, rng.integers(0, 4096, 16)] *= 30          # outlier channels, as in LLM weights
    out["ffn-like 64x4096"] = ffn
    out["embedding-like 32x2048"] = (rng.standard_t(4, (32, 2048)) * 0.01).astype(np.float32)
    if slices is not None:
        with np.load(slices) as z:
            out.update({f"real {k}": np.ascontiguousarray(z[k], np.float32) for k in z.files})
    return out


def same_values(got, want) -> bool:
    import numpy as np
    nan = np.isnan(want)
    return bool(np.array_equal(np.isnan(got), nan)
                and np.array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan]))


def identity(gpu, fmts, xs) -> tuple[int, int, list[str]]:
    from workbench.codecs import codec_for
    pairs, bad, notes = 0, 0, []
    for spec in fmts:
        ref, dev = codec_for(spec), gpu.codec(spec)
        for name, x in xs.items():
            if spec.applies_to(x.shape):
                continue
            pairs += 1
            want, got = ref.quantize(x), dev.quantize(x)
            why = None
            if got.shape != want.shape:
                why = f"{got.size} bytes written, Numba {want.size}"
            elif not (got == want).all():
                why = f"{int((got != want).sum())} bytes differ"
            elif not same_values(dev.dequantize(got, x.shape), ref.dequantize(want, x.shape)):
                why = "the bytes agree, the decoded values differ"
            if why:
                bad += 1
                if len(notes) < 20:
                    # hqq's zero-point search uses pow() in double, which CUDA does not round correctly
                    tag = " (hqq: device pow)" if spec.search == "hqq" else ""
                    notes.append(f"{spec.name} on {name}: {why}{tag}")
    return pairs, bad, notes


def legacy_identity(xs) -> tuple[int, int, list[str]]:
    """llama.cpp's legacy types on the device against the Numba kernels: the launchers on finite
    tensors whose rows are whole blocks of 32, then the sweep's codec (``CuPyLegacyCodec``) on
    every finite tensor and a slice whose rows are not whole blocks (llama.cpp's F16 fallback)."""
    import cupy as cp
    import numpy as np
    from workbench.backends.cupy import BACKEND, legacy_kernels
    from workbench.codecs import codec_for
    from workbench.cuda_host import LEGACY_BLOCK_BYTES
    from workbench.formats import resolve
    pairs, bad, notes = 0, 0, []
    for name, bb in LEGACY_BLOCK_BYTES.items():
        ref = codec_for(resolve(name)[0])
        for what, x in xs.items():
            if x.shape[1] % 32 or not np.isfinite(x).all():
                continue
            pairs += 1
            blocks = x.size // 32
            q, dq = legacy_kernels(name, None, blocks)
            xd, out, y = cp.asarray(x), cp.zeros(blocks * bb, cp.uint8), cp.empty(x.shape, cp.float32)
            q(xd, out)
            dq(out, y)
            want = ref.quantize(x).reshape(-1)
            got = cp.asnumpy(out)
            if not np.array_equal(got, want):
                bad += 1
                notes.append(f"{name} on {what}: {int((got != want).sum())} bytes differ")
            elif not same_values(cp.asnumpy(y), ref.dequantize(want.reshape(x.shape[0], -1), x.shape)):
                bad += 1
                notes.append(f"{name} on {what}: the bytes agree, the decoded values differ")
        sweep_codec = BACKEND.codec(resolve(name)[0])
        finite = {w: x for w, x in xs.items() if np.isfinite(x).all()}
        first = next(iter(finite.values()), None)
        if first is not None and first.shape[1] > 40:
            finite["a slice of 40 columns (F16 fallback)"] = np.ascontiguousarray(first[:, :40])
        for what, x in finite.items():
            pairs += 1
            want, got = ref.quantize(x), sweep_codec.quantize(x)
            if got.shape != want.shape or not np.array_equal(got, want):
                bad += 1
                notes.append(f"{name} (sweep codec) on {what}: the bytes differ")
            elif not same_values(sweep_codec.dequantize(got, x.shape), ref.dequantize(want, x.shape)):
                bad += 1
                notes.append(f"{name} (sweep codec) on {what}: the bytes agree, the decoded values differ")
    return pairs, bad, notes


def throughput(gpu) -> list[str]:
    import cupy as cp
    import numpy as np
    from workbench.formats import resolve
    x = (np.random.default_rng(1).standard_normal((4096, 14336)) * 0.02).astype(np.float32)
    xd = cp.asarray(x)

    def timed(fn, reps=20):
        fn()
        cp.cuda.Device().synchronize()
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(reps):
            fn()
        stop.record()
        stop.synchronize()
        return cp.cuda.get_elapsed_time(start, stop) / 1e3 / reps

    dst = cp.empty_like(xd)
    copy_s = timed(lambda: cp.copyto(dst, xd))
    copy_gbs = 2 * xd.nbytes / copy_s / 1e9
    rows = [f"device-to-device copy of {xd.nbytes / 2**20:.0f} MiB: {copy_gbs:.0f} GB/s (read + written)", "",
            "Quantize figures exclude the fp8 formats' normalizer pass (one more read of x, timed in its own row).",
            "", "| format | quantize GB/s | of copy | dequantize GB/s | of copy |", "|---|---|---|---|---|"]
    for name in ("Q4s32", "Q4a32", "Q8s32", "Q4s32_e4m3", "Q4s16_e8m0", "Q6a64_bf16", "Q(4a16)xQ(6s16)_e4m3"):
        spec = resolve(name)[0]
        codec = gpu.codec(spec)
        args, units = codec._geometry(x.shape)
        nn = spec.header_bytes // 4
        norms = cp.ones(max(nn, 1), cp.float32)
        packed = cp.zeros(spec.nbytes(x.shape), cp.uint8)
        y = cp.empty_like(xd)
        r, c = np.int32(x.shape[0]), np.int32(x.shape[1])
        q_s = timed(lambda: codec._launch("wb_uniform_quantize_kernel", units, xd, r, c, *args, norms, np.int32(nn), packed))
        d_s = timed(lambda: codec._launch("wb_uniform_dequantize_kernel", units, packed, r, c, *args, norms, np.int32(nn), y))
        moved = xd.nbytes + packed.nbytes
        q, d = moved / q_s / 1e9, moved / d_s / 1e9
        rows.append(f"| {name} | {q:.0f} | {q / copy_gbs:.0%} | {d:.0f} | {d / copy_gbs:.0%} |")
        if spec.uses_normalizer:
            g4 = cp.zeros(4, cp.uint32)
            n_s = timed(lambda: codec._launch("wb_uniform_norm_maxima_kernel", units, xd, r, c, *args, g4))
            rows.append(f"| {name}: its normalizer pass (reads x) | {xd.nbytes / n_s / 1e9:.0f} | "
                        f"{xd.nbytes / n_s / 1e9 / copy_gbs:.0%} | | |")
    from workbench.backends.cupy import legacy_kernels
    from workbench.cuda_host import LEGACY_BLOCK_BYTES
    blocks = x.size // 32
    for name, bb in LEGACY_BLOCK_BYTES.items():
        qk, dk = legacy_kernels(name, xd, blocks)
        packed = cp.zeros(blocks * bb, cp.uint8)
        y = cp.empty_like(xd)
        q_s = timed(lambda: qk(xd, packed))
        d_s = timed(lambda: dk(packed, y))
        moved = xd.nbytes + packed.nbytes
        q, d = moved / q_s / 1e9, moved / d_s / 1e9
        rows.append(f"| {name} (llama.cpp) | {q:.0f} | {q / copy_gbs:.0%} | {d:.0f} | {d / copy_gbs:.0%} |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=Path, default=None, help=".npz of real tensor slices (name -> 2-D float32)")
    ap.add_argument("--no-throughput", action="store_true")
    a = ap.parse_args(argv)
    _bootstrap()
    from workbench import backends
    gpu = backends.load("cupy")
    why = gpu.available()
    if why:
        print(f"gpu-check: cannot run: {why}", file=sys.stderr)
        return 2
    print(f"# gpu-check on {gpu.device()} ({gpu.version()})\n")
    from workbench.backends.cupy import module
    from workbench.cuda_host import CudaUnavailable
    try:
        module("uniform")
        module("legacy")
    except CudaUnavailable as exc:
        print(f"gpu-check: cannot run: the kernels did not build for this GPU: {str(exc).splitlines()[0]}",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    fmts, xs = formats(), tensors(a.slices)
    pairs, bad, notes = identity(gpu, fmts, xs)
    print(f"## Byte identity, cupy vs Numba\n\n{len(fmts)} uniform formats × {len(xs)} tensors: {pairs} pairs, "
          f"{bad} differ ({time.perf_counter() - t0:.0f} s)")
    for n in notes:
        print(f"- {n}")
    lp, lb, lnotes = legacy_identity(xs)
    print(f"\nllama.cpp legacy types (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0) × the finite tensors of whole blocks: {lp} pairs, {lb} differ")
    for n in lnotes[:20]:
        print(f"- {n}")
    bad += lb
    if not a.no_throughput:
        print("\n## Throughput (4096×14336 float32)\n")
        print("\n".join(throughput(gpu)))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
