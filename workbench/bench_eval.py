"""``workbench bench --eval``: how long model-level evaluation takes on this machine.

* SmolLM2 through llama.cpp: the reference log-probs (computed once per model and text, then
  cached), then one format fake-quantized (Q4_0 through our codec) and llama.cpp's own Q4_0
  model, over the bundled evaluation text (>= 8k tokens). Target: one format <= 60 s with the
  reference cached.
* MiniLM: ``MINILM_FORMATS`` (>= 40 formats, every llama.cpp type included) fake-quantized and
  evaluated on the bundled sentences. Target: <= 5 min.

Each figure is one run into a throwaway store (an evaluation is seconds long; the noise of
this machine is a few per cent of that).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from workbench.formats import GGML_TYPES

MINILM_FORMATS = tuple(GGML_TYPES) + (
    "Q2a16", "Q2a32", "Q3s16", "Q3a16", "Q3a32", "Q3s32_e4m3", "Q(3a16)xQ(4s16)", "Q(3s16)xQ(4s16)_e4m3",
    "Q4s16", "Q4a16", "Q4s32", "Q4a32", "Q4s64", "Q4a64", "Q4s32_e4m3", "Q4a32_e8m0", "Q4a64_bf16",
    "Q4s16_e4m3", "Q(4a16)xQ(6s16)", "Q(4s16)xQ(6s16)_e4m3", "Q(4a8)xQ(6s8)", "Q5s32", "Q5a32",
    "Q5a16_e8m0", "Q5s64_bf16", "Q(5a8)xQ(4s8)_e4m3", "Q6s32", "Q6a64_bf16", "Q8s32",
)


def main(out: Path | None = None, llm: bool = True, minilm: bool = True) -> int:
    from workbench import evaluate
    from workbench.evaltext import load as load_text
    lines = ["# Model-level evaluation: time on this machine", ""]
    txt = load_text(None)
    with tempfile.TemporaryDirectory(prefix="workbench-bench-eval-") as tmp:
        if llm:
            from workbench.llm import LlamaEval
            ev = LlamaEval(None, text=txt)
            t0 = time.perf_counter()
            ev.reference()
            t_ref = time.perf_counter() - t0
            t0 = time.perf_counter()
            ev2 = LlamaEval(None, text=txt)
            ev2.reference()
            t_cached = time.perf_counter() - t0
            t0 = time.perf_counter()
            rep = evaluate.run(formats="Q4_0", store=Path(tmp) / "llm", evaluator=ev2, progress=False)
            t_one = time.perf_counter() - t0
            rows = {r["variant"]: r for r in rep.rows}
            lines += [f"SmolLM2-135M-Instruct, {ev.n_tokens} tokens scored (n_ctx {ev.n_ctx}):", "",
                      "| step | seconds |", "|---|---:|",
                      f"| reference log-probs, first time | {t_ref:.1f} |",
                      f"| reference log-probs, from the cache | {t_cached:.1f} |",
                      f"| Q4_0 fake-quantized (quantize, write GGUF, evaluate) | {rows['fake']['eval_s']:.1f} |",
                      f"| Q4_0 by llama.cpp (llama_model_quantize, evaluate) | {rows['llama.cpp']['eval_s']:.1f} |",
                      f"| both, with set-up | {t_one:.1f} |", "",
                      f"target: one format <= 60 s with the reference cached: "
                      f"{'met' if rows['fake']['eval_s'] <= 60 else 'NOT met'}", ""]
        if minilm:
            t0 = time.perf_counter()
            rep = evaluate.run(formats=",".join(MINILM_FORMATS), store=Path(tmp) / "minilm", progress=False)
            t_all = time.perf_counter() - t0
            per = sorted(r["eval_s"] for r in rep.rows)
            lines += [f"all-MiniLM-L6-v2, {len(rep.rows)} formats on {rep.tensors} tensors, "
                      f"{len(txt.sentences)} sentences: {t_all:.1f} s in all "
                      f"(median {per[len(per) // 2]:.2f} s per format); target <= 300 s: "
                      f"{'met' if t_all <= 300 else 'NOT met'}", ""]
    text = "\n".join(lines)
    print(text)
    if out is not None:
        Path(out).write_text(text + "\n")
    return 0
