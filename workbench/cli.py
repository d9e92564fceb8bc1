"""The ``workbench`` command: sweep | eval | truth | formats | export | import | store | bench | imatrix | warm | serve.

Errors are one line on stderr and a non-zero exit, never a traceback (``EXIT_CODES``).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

# Exit codes (public: scripts test them). Documented in the README and in `workbench --help`.
EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_STORE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error (a bug: one line; WORKBENCH_DEBUG=1 prints the traceback)",
    EXIT_INPUT: "bad input: arguments, model file, format name, regex, imatrix or import file refused",
    EXIT_STORE: "the store is damaged or unusable (`workbench store check` found problems)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C/SIGTERM); rows finished so far are kept, a re-run resumes",
}

EXAMPLES = """examples:
  workbench sweep                                  # default model, default grid, default store
  workbench sweep --formats Q4_0,Q4s16_e4m3,small --tensors 'layer\\.0\\.'
  workbench sweep --model ~/models/llama.gguf --store /tmp/store
  workbench sweep --formats ggml --imatrix data/imatrix/all-MiniLM-L6-v2.imatrix.gguf
  workbench eval                                   # model-level truth: MiniLM drift, frontier + llama.cpp types
  workbench eval --model smollm2 --formats Q4_0,Q4_K   # KLD/PPL of SmolLM2 through llama.cpp
  workbench eval --sensitivity                     # each tensor group alone: shares, additivity
  workbench eval --sensitivity tensor --formats Q4_0   # each tensor alone
  workbench truth                                  # which weight metric predicts the model metric
  workbench formats default                        # list a grid with its bits per weight
  workbench formats ggml --model model.gguf        # which tensors each type applies to
  workbench export results.parquet --model all-MiniLM-L6-v2
  workbench import colleague.parquet
  workbench bench                                  # default grid timing + Numba vs gguf legacy
  workbench bench --vs llama.cpp                   # Numba vs llama.cpp's C quantizer, ratios
  workbench bench --vs llama.cpp --store           # ... and record them for the Throughput page
  workbench store check                            # unreadable, foreign or duplicate files
  workbench store check --repair                   # ... moved aside into <store>/quarantine/
  workbench warm                                   # compile every kernel once (setup does it)
  workbench serve                                  # the dashboard on http://localhost:5006/workbench

exit codes:
""" + "\n".join(f"  {code:3d}  {what}" for code, what in EXIT_CODES.items()) + "\n"


def _backend_arg(p):
    from workbench.backends import CHOICES, DEFAULT
    p.add_argument("--backend", choices=CHOICES, default=DEFAULT, help="where the quantizers run: numba "
                   "(the CPU, every family: the reference), cupy (a GPU: the uniform family so far; "
                   "other formats are skipped and listed), auto (cupy when it sees a GPU, else numba; "
                   "it says which and why)")


def _chosen_backend(a):
    """The backend of --backend (an unusable one raises: one error line, nothing written)."""
    from workbench.backends import choose
    be, a.backend_why = choose(a.backend)
    return be


def _say_backend(a, be) -> None:
    """After a run, on stdout: which backend ran it and why (auto's choice, or one asked for)."""
    from workbench.backends import DEFAULT
    if a.backend != DEFAULT:
        print(f"  backend {be.name} on {be.device()} ({a.backend_why})")


def _store_arg(p):
    p.add_argument("--store", type=Path, default=None,
                   help="store folder (default: $WORKBENCH_STORE, else data/store in the checkout)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="workbench", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description="Measure the error and speed of weight-quantization formats "
                                             "on a model's real tensors.", epilog=EXAMPLES)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("sweep", help="quantize every (tensor, format) pair and store the metrics",
                       description="Quantize every weight matrix with every format, measure error and "
                                   "speed, and append the rows to the store. Resumable: a re-run does "
                                   "only the (tensor, format) pairs that are missing.")
    p.add_argument("--model", default=None, help="a .safetensors/.gguf/.npy/.npz file or a folder of "
                   "safetensors shards (default: the embedded all-MiniLM-L6-v2)")
    from workbench.formats import GRIDS          # every family's grids (workbench.families)
    p.add_argument("--formats", default=None, help="comma-separated format names and/or grid names "
                   f"({', '.join(GRIDS)}; `workbench formats GRID` lists one); default: the default grid")
    p.add_argument("--tensors", default=None, help="regular expression on tensor names")
    p.add_argument("--workers", type=int, default=None, help="threads (default: every core)")
    p.add_argument("--no-resume", action="store_true", help="measure again what is already stored: the "
                   "new rows replace the old, which move to <store>/quarantine/superseded/ (never deleted)")
    p.add_argument("--time-all", action="store_true", help="time quantize/dequantize on every tensor "
                   "(default: every format is timed on one tensor, sweep.timing_tensor, and the error "
                   "columns of the rest come from the fused kernel: the same values, faster)")
    p.add_argument("--imatrix", type=Path, default=None, help="importance matrix (llama.cpp GGUF or "
                   "legacy .dat): llama.cpp types are quantized with it as llama-quantize --imatrix "
                   "does, and wmse/wnmse are measured for every format")
    _backend_arg(p)
    _store_arg(p)

    p = sub.add_parser("eval", help="what formats do to a model's outputs (drift, KLD, perplexity)",
                       description="Fake-quantize the model's weight matrices with each format (quantize -> "
                                   "packed bytes -> dequantize) and evaluate the model against its reference "
                                   "on the evaluation text: embedding drift and retrieval agreement for the "
                                   "encoder, KL divergence, top-1 agreement and perplexity for an LLM through "
                                   "llama.cpp (and llama.cpp's own quantized model of its types). One "
                                   "model_eval row per evaluation; resumable like sweep.")
    p.add_argument("--model", default=None, help="default (the embedded all-MiniLM-L6-v2), smollm2 (the "
                   "embedded SmolLM2-135M-Instruct), a .gguf file, or a Hugging Face folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--formats", default=None, help="comma-separated format names and/or grids (default: the "
                   "model's weight-error frontier from the store plus every llama.cpp type)")
    g.add_argument("--frontier", action="store_true", help="only the weight-error frontier of the model's sweep")
    g.add_argument("--mix", default=None, help="one format per tensor: 'REGEX=FORMAT;REGEX=FORMAT;…' (first "
                   "match wins; unmatched tensors stay at the reference), or a .json list of [regex, format]")
    p.add_argument("--text", type=Path, default=None, help="a UTF-8 text file to evaluate on (default: "
                   "the bundled data/eval text)")
    p.add_argument("--tensors", default=None, help="regular expression: quantize only these tensors")
    p.add_argument("--sensitivity", nargs="?", const="group", default=None, choices=["group", "tensor"],
                   help="also quantize one part at a time and store each part's share: 'group' (the "
                   "default: attention q/k/v/o, FFN up/gate/down, embeddings, output) or 'tensor' (every "
                   "chosen tensor alone; narrow it with --tensors on a large model)")
    p.add_argument("--no-native", action="store_true", help="LLM: skip llama.cpp's own quantized models")
    p.add_argument("--no-resume", action="store_true", help="evaluate again what is already stored: the new "
                   "rows replace the old, which move to <store>/quarantine/superseded/ (never deleted)")
    _backend_arg(p)
    _store_arg(p)

    p = sub.add_parser("truth", help="rank correlation of each weight metric with the model-level metric",
                       description="For a model with evaluations: each weight metric's Spearman correlation "
                                   "with the model metric (drift or KLD), overall and within equal-bpw "
                                   "bands, the recommended metric, the sensitivity shares and their "
                                   "additivity, and the best format per band by weight and by model metric.")
    p.add_argument("--model", default=None, help="model id (default: every model with evaluations)")
    p.add_argument("--metric", default=None, help="model metric (default: drift / kld_mean)")
    p.add_argument("--exclude-q4-1-grid", action="store_true", help="leave out formats whose grid holds "
                   "Q4_1's (for a model shipped as Q4_1)")
    _store_arg(p)

    p = sub.add_parser("formats", help="list the formats of a grid with their bits per weight")
    p.add_argument("grid", nargs="?", default="default", help="grid name or comma-separated names")
    p.add_argument("--shape", default=None, help="ROWSxCOLS: bpw of that tensor shape (padding, header)")
    p.add_argument("--model", default=None, help="a model file (or 'default'): per format, the tensors "
                   "it encodes natively, by llama.cpp's fallback type, or not at all")

    p = sub.add_parser("export", help="write the store's results (optionally filtered) to one Parquet file")
    p.add_argument("out", type=Path)
    p.add_argument("--model", default=None)
    p.add_argument("--formats", default=None, help="regular expression on format names")
    p.add_argument("--tensors", default=None, help="regular expression on tensor names")
    p.add_argument("--table", choices=["results", "model_eval"], default="results", help="results (default; "
                   "the exported models' evaluations travel inside the file) or model_eval alone")
    _store_arg(p)

    p = sub.add_parser("import", help="validate a collaborator's Parquet file and merge it into the store")
    p.add_argument("file", type=Path)
    _store_arg(p)

    p = sub.add_parser("bench", help="benchmarks: default grid over the default model; Numba vs gguf legacy")
    p.add_argument("--quick", action="store_true", help="a few tensors only")
    p.add_argument("--out", type=Path, default=None, help="write the tables as Markdown here")
    p.add_argument("--vs", choices=["llama.cpp"], default=None, help="llama.cpp: our Numba quantizers "
                   "against llama.cpp's C ggml_quantize_chunk (needs .[reference]), 1 thread and all cores")
    p.add_argument("--brush", action="store_true", help="the dashboard: brush-end to table-update latency "
                   "on the Pareto page in headless chromium, with 100,000+ result rows in the store")
    p.add_argument("--base", type=Path, default=None, help="--brush: a store with a full default sweep "
                   "(default: sweep one first, ~2 min)")
    p.add_argument("--brushes", type=int, default=15, help="--brush: brushes timed per store")
    p.add_argument("--import", dest="import_", action="store_true", help="peak memory and time of "
                   "`workbench import` on a file of --rows rows (streams: target <= 300 MB for 1e6)")
    p.add_argument("--rows", type=int, default=1_000_000, help="--import: rows in the file")
    p.add_argument("--eval", dest="eval_", action="store_true", help="model-level evaluation: one format on "
                   "SmolLM2 through llama.cpp (target <= 60 s, reference cached), 40+ formats on MiniLM (<= 5 min)")
    p.add_argument("--sessions", type=int, default=None, metavar="N", help="N users at once on the Pareto "
                   "page in headless chromium: time to plot, brushes registered, server memory; then the same "
                   "clients on a reference page (one Bokeh plot of the same formats), side by side")
    p.add_argument("--no-reference", action="store_true", help="--sessions: the Pareto page only")
    _backend_arg(p)
    p.add_argument("--fused", action="store_true", help="the fused error kernel against quantize → bytes → "
                   "dequantize → metrics, side by side (uniform grid, layer 0; --out FILE)")
    p.add_argument("--cold", action="store_true", help="the README's main job from a cold Numba cache: "
                   "`workbench sweep` of the default grid with compilation, then again warm")
    p.add_argument("--families", action="store_true", help="sweep throughput per format family (uniform, "
                   "llama.cpp, the codebook kinds, ik_llama), side by side, as ratios to the uniform grid")
    p.add_argument("--threads", type=int, default=None, help="--vs: threads for the all-cores columns")
    p.add_argument("--store", type=Path, nargs="?", const=True, default=None, metavar="DIR",
                   help="--vs: also record the timings in this store (no DIR: $WORKBENCH_STORE, else "
                        "data/store), where the dashboard's Throughput page shows them")

    p = sub.add_parser("imatrix", help="inspect an imatrix file, or make the default model's",
                       description="With FILE: list what an importance-matrix file holds (llama.cpp's "
                                   "GGUF or legacy .dat format) and which tensors of --model it covers. "
                                   "With --make-default: regenerate data/imatrix/all-MiniLM-L6-v2.imatrix.gguf "
                                   "(a numpy forward pass of the embedded model over embedded text).")
    p.add_argument("file", type=Path, nargs="?", default=None)
    p.add_argument("--model", default=None, help="model whose tensors to match (default: the embedded one)")
    p.add_argument("--make-default", action="store_true", help="regenerate the default model's imatrix")

    p = sub.add_parser("store", help="check the store's files; --repair moves bad ones aside",
                       description="Read every file of the store and report unreadable files, foreign "
                                   "files (not a workbench table, or in the wrong place), unfinished "
                                   "writes and natural keys stored twice. Exit 0 when the store is "
                                   "sound, 3 when it is not. --repair moves every such file into "
                                   "<store>/quarantine/<time>/ (never deletes); a file holding some "
                                   "duplicate rows is moved aside and its other rows written again.")
    p.add_argument("action", choices=["check"], help="check (the only action)")
    p.add_argument("--repair", action="store_true", help="quarantine what the check finds")
    _store_arg(p)

    p = sub.add_parser("warm", help="compile (or load from Numba's cache) every kernel of the grids",
                       description="Run every format of the given grids once on tiny tensors, so the "
                                   "first sweep does not wait for Numba to compile; scripts/setup.sh "
                                   "runs it. The compiled kernels are cached next to the installed "
                                   "package (__pycache__).")
    p.add_argument("grid", nargs="?", default="default,ggml,scales,small",
                   help="grids/formats to warm (default: default,ggml,scales,small)")

    p = sub.add_parser("serve", help="serve the dashboard (panel serve workbench)")
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--address", default="localhost")
    p.add_argument("--show", action="store_true", help="open a browser")
    _store_arg(p)
    return ap


def cmd_sweep(a) -> int:
    from workbench import store as st
    from workbench.sweep import run
    be = _chosen_backend(a)
    rep = run(a.model, a.formats, a.tensors, a.store, a.workers, resume=not a.no_resume,
              imatrix=a.imatrix, timing="all" if a.time_all else "one", backend=be)
    print(f"{rep.model}: measured {rep.measured} (tensor, format) pairs in {rep.seconds:.1f} s; "
          f"{rep.already} already stored; {len(rep.skipped)} skipped")
    _say_backend(a, be)
    if rep.replacing:
        print(f"  replaced {rep.replacing} stored rows by the new measurements (the old files: "
              f"{Path(a.store or st.default_store()) / 'quarantine' / 'superseded'})")
    falls: dict[tuple[str, str], int] = {}
    for _t, f, applied in rep.fallbacks:
        falls[(f, applied)] = falls.get((f, applied), 0) + 1
    for (f, applied), n in sorted(falls.items()):
        print(f"  fallback {n:4d} tensors × {f} written as {applied} (llama-quantize's rule for rows "
              f"its block does not divide)")
    exact: dict[str, int] = {}
    for _t, f in rep.lossless:
        exact[f] = exact.get(f, 0) + 1
    for f, n in sorted(exact.items()):
        print(f"  lossless {n:4d} tensors × {f} re-quantize exactly: the source's weights already lie on "
              f"{f}'s grid (a model shipped quantized), so its error there is not the format's merit")
    reasons: dict[str, int] = {}
    for t, f, r in rep.skipped:
        reasons[r] = reasons.get(r, 0) + 1
    for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  skipped {n:5d} × {r}")
    return 0


def cmd_formats(a) -> int:
    from workbench.formats import resolve
    specs = resolve(a.grid)
    shape = None
    if a.shape:
        parts = a.shape.lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and 0 < int(p) < 2**40 for p in parts):
            raise ValueError(f"--shape must be ROWSxCOLS with positive sizes, like 384x1536; got {a.shape!r}")
        shape = (int(parts[0]), int(parts[1]))
    shapes = None
    if a.model:
        from workbench.sources import open_model
        src = open_model(None if a.model == "default" else a.model)
        shapes = [(t.name, t.matrix_shape) for t in src.weights()]
        print(f"{src.model_id}: {len(shapes)} weight tensors")
    print(f"{'format':32s} {'family':8s} {'bpw':>8s}" + ("  bpw@shape" if shape else "")
          + ("  applies to (native / llama.cpp fallback / not measured)" if shapes else ""))
    for f in sorted(specs, key=lambda f: (f.bpw(), f.name)):
        extra = f"  {f.bpw(shape):10.4f}" if shape and not f.applies_to(shape) else ("  n/a" if shape else "")
        if shapes:
            native, fb, none = 0, {}, 0
            for _n, shp in shapes:
                applied, _note = f.plan(shp)
                if applied is None:
                    none += 1
                elif applied == f.name:
                    native += 1
                else:
                    fb[applied] = fb.get(applied, 0) + 1
            parts = [f"{native} native"] + [f"{n} as {k}" for k, n in sorted(fb.items())]
            if none:
                parts.append(f"{none} skipped")
            extra += "  " + ", ".join(parts)
        print(f"{f.name:32s} {f.family:8s} {f.bpw():8.4f}{extra}")
    print(f"{len(specs)} formats")
    if shapes:
        print("fallback: rows a llama.cpp type's block does not divide are written as llama-quantize "
              "does (Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ4_XS -> IQ4_NL, "
              "F16 when nothing fits); the store records the type written per tensor (applied_type)")
    return 0


def cmd_export(a) -> int:
    from workbench import store as st
    if a.table == "model_eval":
        from workbench import eval_store
        if a.tensors:
            raise ValueError("--tensors filters results rows; evaluations are per model")
        n = eval_store.export(a.store or st.default_store(), a.out, a.model, a.formats)
        print(f"wrote {n} evaluation rows to {a.out}")
        return 0
    n = st.export(a.store or st.default_store(), a.out, a.model, a.formats, a.tensors)
    import json
    import pyarrow.parquet as pq
    meta = json.loads((pq.read_schema(a.out).metadata or {}).get(st.EXPORT_META, b"{}"))
    carried = meta.get("model_eval_rows", 0)
    print(f"wrote {n} rows to {a.out}" + (f" (and {carried} evaluation rows inside it)" if carried else ""))
    return 0


def cmd_import(a) -> int:
    from workbench import store as st
    from workbench import store_import
    st.import_file(a.file, a.store or st.default_store())
    (added, dup), (e_added, e_dup) = store_import.LAST["results"], store_import.LAST["model_eval"]
    if added or dup or not (e_added or e_dup):
        print(f"imported {added} rows; {dup} already present (same model, tensor, format, imatrix, backend, device, version)")
    if e_added or e_dup:
        print(f"imported {e_added} evaluation rows; {e_dup} already present (same model, format, variant, "
              "tensors, text, backend, device, versions)")
    return 0


def cmd_eval(a) -> int:
    from workbench import evaluate, store as st
    store = a.store or st.default_store()
    rep = evaluate.run(model=a.model, formats=a.formats, frontier=a.frontier, text=a.text, tensors=a.tensors,
                       store=store, sensitivity=a.sensitivity or False, native=not a.no_native, resume=not a.no_resume,
                       mix=a.mix, backend=(be := _chosen_backend(a)))
    print(f"evaluated {rep.measured} of {rep.model} ({rep.tensors} tensors) in {rep.seconds:.1f} s; "
          f"{rep.already} already stored; store {store}")
    _say_backend(a, be)
    if rep.replacing:
        print(f"  replaced {rep.replacing} stored evaluations by the new ones (the old files: "
              f"{Path(store) / 'quarantine' / 'superseded'})")
    for f, n in sorted(rep.lossless.items()):
        print(f"  lossless   {f}: {n} of {rep.tensors} tensors re-quantize exactly (the source's weights "
              "already lie on its grid)")
    for f, why in rep.skipped:
        print(f"  skipped    {f}: {why}")
    if rep.rows:
        import pandas as pd
        df = pd.DataFrame(rep.rows)
        cols = [c for c in ("format", "variant", "tensors", "bpw", "drift", "rank_agreement", "kld_mean",
                            "top1", "ppl", "dppl", "w_nmse") if c in df and df[c].notna().any()]
        with pd.option_context("display.width", 160, "display.max_rows", 200):
            print(df[cols].sort_values(["tensors", "bpw"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def cmd_truth(a) -> int:
    import pandas as pd
    from workbench import eval_store, store as st, truth
    ev = eval_store.evals(a.store or st.default_store(), model=a.model)
    if ev.empty:
        raise ValueError("no evaluations in the store: run `workbench eval` first")
    for model, d in ev.groupby("model"):
        kind = d["kind"].iloc[0]
        metric = a.metric or truth.MODEL_METRIC[kind]
        if metric not in truth.METRICS_OF_KIND[kind]:
            raise ValueError(f"--metric {metric!r} is not a model metric of an {kind} "
                             f"({', '.join(truth.METRICS_OF_KIND[kind])})")
        excl = truth.contains_q4_1_grid if a.exclude_q4_1_grid else None
        whole = truth.whole_model(d, model, excl)
        if whole.empty or not whole[metric].notna().any():
            print(f"{model}: no whole-model evaluation with {metric}")
            continue
        table = truth.correlations(d, model, metric, exclude=excl)
        print(f"{model}: Spearman of each weight metric with {metric} ({len(whole)} formats on the whole "
              f"model{', leaving out the formats whose grid holds Q4_1' if excl else ''})")
        if table.empty:
            print("  no rank correlation: it needs at least 3 formats evaluated on the whole model")
        with pd.option_context("display.width", 200, "display.max_colwidth", 80):
            if len(table):
                print(table.drop(columns=["what"]).to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
        best = truth.recommend(table)
        if best:
            print(f"  recommended: {best} ({truth.WEIGHT_METRICS[best]})")
        sens = truth.sensitivity(d, model, metric, excl)
        if len(sens):
            print(f"  sensitivity: each group's share of the sum of {metric} over the groups quantized alone")
            print(sens.pivot(index="group", columns="format", values="share").to_string(
                float_format=lambda v: f"{v:.3f}"))
        add = truth.additivity(d, model, metric, excl)
        if len(add):
            print("  additivity (sum of groups alone / whole model):")
            print(add.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        tens = truth.sensitivity(d, model, metric, excl, level="tensor")
        if len(tens):
            top = tens.sort_values("share", ascending=False).groupby("format").head(8)
            print(f"  single-tensor sensitivity: the largest shares of the sum of {metric} over tensors alone "
                  f"({tens['tensor'].nunique()} tensors)")
            print(top[["format", "tensor", "group", "value", "share", "nmse", "alpha"]].to_string(
                index=False, float_format=lambda v: f"{v:.4g}"))
            add_t = truth.additivity(d, model, metric, excl, level="tensor")
            if len(add_t):
                print("  additivity (sum of tensors alone / whole model):")
                print(add_t.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
            within = truth.group_additivity(d, model, metric, excl)
            if len(within):
                print("  within each group (sum of its tensors alone / the group alone):")
                print(within.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        bands = truth.best_per_band(d, model, metric, exclude=excl)
        if len(bands):
            print("  best per bpw band, by w_nmse and by " + metric + ":")
            print(bands.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def cmd_bench(a) -> int:
    modes = (a.fused, a.sessions is not None, a.eval_, a.import_, a.families, a.cold, a.brush, a.vs)
    if a.backend != "numba" and any(modes):
        raise ValueError("--backend applies to the default benchmark (`workbench bench` without a mode) so far")
    if a.fused:
        from workbench.bench_fused import main as fused_main
        return fused_main(["--out", str(a.out)] if a.out else [])
    if a.sessions is not None:
        from workbench.bench_sessions import main as sessions_main
        return sessions_main(["--sessions", str(a.sessions)] + (["--base", str(a.base)] if a.base else [])
                             + (["--out", str(a.out)] if a.out else []) + (["--no-reference"] if a.no_reference else []))
    if a.eval_:
        from workbench.bench_eval import main as eval_main
        return eval_main(out=a.out)
    if a.import_:
        from workbench.bench_import import main as import_main
        return import_main(rows=a.rows, out=a.out)
    if a.families:
        from workbench.bench_families import main as families_main
        return families_main(quick=a.quick, out=a.out)
    if a.cold:
        from workbench.bench_cold import main as cold_main
        return cold_main(out=a.out)
    if a.brush:
        from workbench.bench_brush import main as brush_main
        args = ["--brushes", str(a.brushes)] + (["--base", str(a.base)] if a.base else []) \
            + (["--out", str(a.out)] if a.out else [])
        return brush_main(args)
    if a.store is not None and a.vs != "llama.cpp":
        raise ValueError("--store records the llama.cpp reference timings: use it with --vs llama.cpp")
    if a.vs == "llama.cpp":
        from workbench import store as st
        from workbench.bench_llamacpp import main as vs_main
        store = st.default_store() if a.store is True else a.store
        return vs_main(quick=a.quick, out=a.out, threads=a.threads, store=store)
    from workbench.bench import main as bench_main
    be = _chosen_backend(a)
    _say_backend(a, be)
    return bench_main(quick=a.quick, out=a.out, backend=be)


def cmd_imatrix(a) -> int:
    from workbench import imatrix as im
    if a.make_default:
        return im.main([str(a.file)] if a.file else [])
    if a.file is None:
        raise ValueError("give an imatrix FILE, or --make-default")
    imx = im.load(a.file)
    print(f"{a.file}: {imx.format} imatrix, {len(imx.entries)} entries, fingerprint {imx.fingerprint}, "
          f"datasets {imx.datasets}, {imx.chunk_count} chunks")
    from workbench.sources import open_model
    src = open_model(a.model)
    n = 0
    for t in src.weights():
        w, why = im.weights_for(imx, t.name, t.matrix_shape[1])
        n += w is not None
        print(f"  {t.name:60s} {'imatrix' if w is not None else why}")
    print(f"{n} of {len(src.weights())} weight tensors of {src.model_id} have an entry; the rest are "
          "quantized without one (as llama-quantize does)")
    return 0


def cmd_store(a) -> int:
    from workbench import store as st
    from workbench.store_check import check, repair
    store = a.store or st.default_store()
    if not store.is_dir():
        raise ValueError(f"{store}: no such store folder")
    problems = check(store)
    for p in problems:
        print(f"  {p.kind:12s} {p.path.relative_to(store)}: {p.detail}")
    if not problems:
        print(f"{store}: sound (every file readable, no foreign file, no key stored twice)")
        return EXIT_OK
    if not a.repair:
        print(f"{store}: {len(problems)} problems; `workbench store check --repair` moves them aside")
        return EXIT_STORE
    moved, rewritten, where = repair(store)      # checks again under the store lock
    print(f"{store}: moved {moved} files into {where.relative_to(store)}; wrote {rewritten} rows again "
          "(the non-duplicate rows of partly duplicate files)")
    left = check(store)
    if left:
        print(f"{store}: {len(left)} problems remain", file=sys.stderr)
        return EXIT_STORE
    return EXIT_OK


def cmd_warm(a) -> int:
    import time
    from workbench.formats import resolve
    from workbench.sweep import warm_up
    specs = resolve(a.grid)
    t0 = time.perf_counter()
    warm_up(specs, progress=True)
    print(f"warmed {len(specs)} formats in {time.perf_counter() - t0:.1f} s (Numba's cache is now filled)")
    return EXIT_OK


def cmd_serve(a) -> int:
    from workbench import store as st
    from workbench.browser import SERVE_ARGS, SERVE_ENV
    env = dict(os.environ, **SERVE_ENV, WORKBENCH_STORE=str((a.store or st.default_store()).resolve()))
    app = Path(__file__).resolve().parent
    cmd = [sys.executable, "-m", "panel", "serve", str(app), "--port", str(a.port), "--address", a.address,
           "--allow-websocket-origin", f"{a.address}:{a.port}", *SERVE_ARGS]
    if a.show:
        cmd.append("--show")
    # The server replaces this process (exec), so one `kill` (SIGTERM/SIGINT) reaches it and
    # frees the port: a wrapper waiting on a child would die alone and leave the child serving.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, env)
    return 1    # not reached


COMMANDS = {"sweep": cmd_sweep, "eval": cmd_eval, "truth": cmd_truth, "formats": cmd_formats, "export": cmd_export, "import": cmd_import,
            "bench": cmd_bench, "imatrix": cmd_imatrix, "store": cmd_store, "warm": cmd_warm,
            "serve": cmd_serve}


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())   # library messages span lines: one line for the user
    return (msg or exc.__class__.__name__)[:400]


def _library_errors() -> tuple[type, ...]:
    """Exceptions of the libraries under the workbench that mean bad input or a damaged file."""
    import re
    import struct
    import zipfile
    errs: list[type] = [re.error, zipfile.BadZipFile, struct.error, UnicodeError, EOFError]
    try:
        import duckdb
        errs.append(duckdb.Error)
    except ImportError:  # pragma: no cover
        pass
    try:
        import pyarrow as pa
        errs.append(pa.ArrowException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def main(argv: list[str] | None = None) -> int:
    from workbench.formats import FormatError
    from workbench.sources import SourceError
    from workbench.store import StoreError
    import signal
    a = build_parser().parse_args(argv)

    def _term(_sig, _frame):   # SIGTERM as Ctrl-C: finished rows are flushed, exit 130
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, _term) if a.cmd != "serve" else None
    try:
        code = COMMANDS[a.cmd](a)
        _warn_skipped_files(a)
        return code
    except StoreError as exc:
        print(f"workbench {a.cmd}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_STORE if getattr(exc, "damaged", False) else EXIT_INPUT
    except (FormatError, SourceError, ValueError, OSError, MemoryError, OverflowError,
            RecursionError) + _library_errors() as exc:
        print(f"workbench {a.cmd}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"workbench {a.cmd}: interrupted; everything finished so far is kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, the traceback on request
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        print(f"workbench {a.cmd}: internal error: {exc.__class__.__name__}: {_one_line(exc)} "
              "(WORKBENCH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _warn_skipped_files(a) -> None:
    """Name every store file the command's queries left out (unreadable or foreign)."""
    store = getattr(a, "store", None)
    if a.cmd not in ("sweep", "eval", "truth", "export", "import") or store is True:
        return
    from workbench import store as st
    for path, why in st.skipped_files(store or st.default_store()):
        print(f"workbench {a.cmd}: warning: skipped store file {path}: {why} "
              "(workbench store check --repair moves it aside)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
