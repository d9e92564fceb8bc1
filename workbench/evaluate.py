"""Model-level truth: what each format does to a model's outputs (``workbench eval``).

For a format F (or a mix, one format per tensor), every chosen weight tensor goes quantize ->
packed bytes -> dequantize through the same codec a sweep uses (``codecs.codec_for``), and the
model is evaluated with those reconstructions in place of its reference weights:

* the embedded encoder (all-MiniLM-L6-v2, ``workbench.minilm.MiniLMEval``): embedding drift and
  retrieval agreement of the bundled evaluation sentences against the fp32 embeddings;
* an LLM through llama.cpp (``workbench.llm.LlamaEval``; SmolLM2-135M-Instruct by default): KL
  divergence, top-1 agreement and perplexity against the reference model, as
  ``llama-perplexity --kl-divergence`` computes them. For llama.cpp's own types the model that
  ``llama_model_quantize`` writes is evaluated too (variant "llama.cpp"): its quantized matmuls
  also quantize the activations, so the two differ by design.

Each evaluation is one ``model_eval`` row (``workbench.eval_store``), written as soon as it is
measured, so an interrupted run loses at most the evaluation in flight and a re-run does only
what is missing. Beside the model-level figures a row carries weight metrics of the same
quantized tensors (``w_*``) and the nmse per tensor group, which ``workbench.truth`` ranks against
the model-level metric.
"""
from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

import workbench
from workbench import store as st
from workbench import backends
from workbench.codecs import as_kernel_input, codec_for
from workbench.families import with_trait
from workbench.formats import GGML_TYPES, FormatSpec, resolve

# Tensor groups for sensitivity (one group quantized at a time). BERT (safetensors names) and
# llama.cpp's GGUF names; the first rule that matches wins.
GROUP_RULES = (
    ("attn_q", r"(attention\.self\.query|attn_q)\.weight$"),
    ("attn_k", r"(attention\.self\.key|attn_k)\.weight$"),
    ("attn_v", r"(attention\.self\.value|attn_v)\.weight$"),
    ("attn_o", r"(attention\.output\.dense|attn_output)\.weight$"),
    ("ffn_up", r"(intermediate\.dense|ffn_up)\.weight$"),
    ("ffn_gate", r"ffn_gate\.weight$"),
    ("ffn_down", r"(layer\.\d+\.output\.dense|ffn_down)\.weight$"),
    ("embed", r"(embeddings\.|token_embd)"),
    ("output", r"^output\.weight$"),
)
_GROUPS = [(g, re.compile(rx)) for g, rx in GROUP_RULES]

# Formats evaluated when the store holds no sweep of the model to take a weight-error frontier
# from: a spread of the uniform grid over 2.5-8.5 bpw (single and double, symmetric and
# asymmetric, every scale encoding). llama.cpp's types are always added.
FALLBACK_UNIFORM = (
    "Q2a16", "Q3s16_e4m3", "Q3a32", "Q(3a16)xQ(4s16)", "Q4s32", "Q4a32", "Q4s16_e4m3", "Q4a64_bf16",
    "Q4s32_e8m0", "Q(4a16)xQ(6s16)", "Q(4s16)xQ(6s16)_e4m3", "Q5s32", "Q5a32", "Q5a16_e8m0",
    "Q(5a8)xQ(4s8)_e4m3", "Q6s32", "Q6a64_bf16", "Q8s32",
)
SENSITIVITY_LEVELS = {True: "group", "group": "group", "tensor": "tensor"}
SENSITIVITY_FORMATS = ("Q4_0", "Q4_K", "Q4a32", "MXFP4")   # --sensitivity without --formats


@dataclass(frozen=True)
class Mix:
    """One format per tensor: ``rules`` = ((regex, format name), ...), the first whose regex
    matches a tensor name (re.search) wins; a tensor no rule matches stays at the reference.
    Written ``'ffn_down=Q6_K;attn_v=Q6_K;.=Q4_K'`` on the command line."""
    rules: tuple[tuple[str, str], ...]
    family = "mix"
    double = False

    @property
    def name(self) -> str:
        import hashlib
        return "mix:" + hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def to_json(self) -> str:
        return json.dumps([list(r) for r in self.rules])

    def spec_for(self, tensor: str) -> FormatSpec | None:
        for rx, fmt in self._compiled():
            if rx.search(tensor):
                return fmt
        return None

    def _compiled(self):
        return [(re.compile(rx), resolve(f)[0]) for rx, f in self.rules]


def parse_mix(text: str) -> Mix:
    """'regex=FORMAT;regex=FORMAT;…' (or a .json file of [[regex, format], …]) -> Mix."""
    from workbench.formats import FormatError
    from workbench.sources import compile_regex
    p = Path(text)
    if text.endswith(".json"):
        if not p.is_file():
            raise EvalError(f"--mix {text}: no such file")
        try:
            raw = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise EvalError(f"{p}: unreadable JSON ({exc.__class__.__name__})") from None
        if not isinstance(raw, list) or not all(isinstance(r, list) and len(r) == 2
                                                and all(isinstance(v, str) for v in r) for r in raw):
            raise EvalError(f"{p}: not a JSON list of [regex, format] pairs")
        pairs = [tuple(r) for r in raw]
    else:
        pairs = []
        for part in filter(None, (x.strip() for x in text.split(";"))):
            rx, sep, fmt = part.rpartition("=")
            if not sep or not rx:
                raise EvalError(f"--mix: {part!r} is not REGEX=FORMAT")
            pairs.append((rx, fmt.strip()))
    if not pairs:
        raise EvalError("--mix names no REGEX=FORMAT rule")
    canon = []
    for rx, fmt in pairs:
        compile_regex(rx, "--mix")
        specs = resolve(fmt)
        if len(specs) != 1:
            raise FormatError(f"--mix: {fmt!r} names {len(specs)} formats, a rule takes one")
        canon.append((rx, specs[0].name))     # canonical names: q4_k and Q4_K are one mix
    return Mix(tuple(canon))


def group_of(name: str) -> str:
    for g, rx in _GROUPS:
        if rx.search(name):
            return g
    return "other"


class EvalError(ValueError):
    """A refused evaluation (a model llama.cpp cannot load, a bad text file); one line."""


def evaluator_for(model: str | None = None, text=None):
    """The evaluator for ``model``: None/'default'/the MiniLM id -> the embedded encoder;
    'smollm2' -> the embedded LLM; a .gguf file -> that LLM; a folder with a BERT config.json ->
    that encoder; another Hugging Face folder -> converted with llama.cpp's convert_hf_to_gguf."""
    key = (model or "default").strip()
    if key.lower() in ("default", "minilm", "all-minilm-l6-v2"):
        from workbench.minilm import MiniLMEval
        return MiniLMEval(text=text)
    if key.lower() in ("smollm2", "smollm2-135m-instruct"):
        from workbench.llm import LlamaEval
        return LlamaEval(None, text=text)
    p = Path(key).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        from workbench.llm import LlamaEval
        return LlamaEval(p, text=text)
    if p.is_dir() and (p / "config.json").is_file():
        try:
            cfg = json.loads((p / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise EvalError(f"{p / 'config.json'}: unreadable ({exc.__class__.__name__})") from None
        if cfg.get("model_type") == "bert":
            from workbench.minilm import MiniLMEval
            return MiniLMEval(model_dir=str(p), text=text)
        from workbench.llm import LlamaEval, convert_hf
        return LlamaEval(convert_hf(p), text=text)
    raise EvalError(f"{model}: not a model to evaluate (the default encoder, 'smollm2', a .gguf file, "
                    "or a Hugging Face folder with config.json)")


def default_formats(store: str | Path | None, model_id: str, frontier_only: bool = False) -> list[FormatSpec]:
    """The weight-error (nmse) frontier of the model's sweep in the store, plus every llama.cpp
    type (``frontier_only``: the frontier alone). Without a sweep: ``FALLBACK_UNIFORM``."""
    names: list[str] = []
    if store is not None and st.has_files(store):
        summ = st.summary(store, model_id)
        if len(summ):
            from workbench.views.pareto import pareto_front
            names = pareto_front(summ[summ["family"] != "ggml"], "bpw", "nmse")["format"].tolist()
    if not names and not frontier_only:
        names = list(FALLBACK_UNIFORM)
    if not frontier_only:
        names += [n for n in GGML_TYPES if n not in names]
    if not names:
        raise EvalError(f"no sweep of {model_id} in the store to take a frontier from: run "
                        f"`workbench sweep` first, or name --formats")
    return [resolve(n)[0] for n in names]


# --------------------------------------------------------------------------- quantization
@dataclass
class Quantized:
    """One tensor through one format."""
    y: np.ndarray | None          # reconstruction (None: left at the reference, see ``why``)
    nbytes: int = 0
    applied: str | None = None
    lossless: bool = False
    metrics: dict = field(default_factory=dict)
    why: str | None = None


def quantize_tensor(spec: FormatSpec, x: np.ndarray, importance: np.ndarray | None = None,
                    quantize_with_importance: bool = False, backend=None) -> Quantized:
    """Quantize -> bytes -> dequantize one tensor, with its weight metrics. ``importance``
    (an imatrix entry) weights the wnmse metric; the quantizer uses it only with
    ``quantize_with_importance`` (as a sweep without --imatrix, so every format is judged on
    the same footing)."""
    from workbench.metrics import signal_sums, tensor_metrics, weighted_metrics
    why = spec.applies_to(x.shape) or (backend.supports(spec) if backend is not None else None)
    if why:
        return Quantized(None, why=why)
    codec = codec_for(spec, backend)
    applied, _note = spec.plan(x.shape)
    use = importance if quantize_with_importance and importance is not None and codec.uses_importance(x.shape) else None
    packed = codec.quantize(x, use)
    y = codec.dequantize(packed, x.shape)
    if not np.isfinite(y).all():
        return Quantized(None, why=f"{spec.name} cannot represent this tensor (a scale overflows)")
    m = tensor_metrics(x, y, signal_sums(x))
    if importance is not None:
        m.update(weighted_metrics(x, y, importance))
    e = (y.astype(np.float64) - x)
    sx2 = float(np.dot(x.ravel().astype(np.float64), x.ravel()))
    # per-row sum of the error: independent zero-mean errors give E[Σ_r(Σ_c e)^2] = Σe^2, so
    # w_bias ≈ nmse; errors biased along a row (a clipped tail, an off-centre zero) make it larger
    rs = e.sum(axis=1)
    m["bias"] = float(rs @ rs) / sx2 if sx2 > 0 else 0.0
    return Quantized(y, int(packed.size), applied, bool(np.array_equal(y, x)), m)


def _actmean(x: np.ndarray, y: np.ndarray, mu: np.ndarray) -> tuple[float, float]:
    """(‖(Y−X)·μ‖², ‖X·μ‖²): the error a layer adds to its output at the mean activation μ."""
    mu = mu.astype(np.float64)
    d = (y.astype(np.float64) - x) @ mu
    r = x.astype(np.float64) @ mu
    return float(d @ d), float(r @ r)


def _summary(spec_names: dict[str, str], q: dict[str, Quantized], weights: dict[str, np.ndarray],
             means: dict[str, np.ndarray] | None) -> dict:
    """Row columns for the tensors ``q`` quantized: bits, counts (a fallback: a tensor llama.cpp
    writes in another type than the format ``spec_names[name]``), weight metrics."""
    done = {n: v for n, v in q.items() if v.y is not None}
    numel = sum(weights[n].size for n in done)
    out = {"n_tensors": len(done), "numel": numel,
           "bpw": sum(v.nbytes for v in done.values()) * 8 / numel if numel else math.nan,
           "lossless_tensors": sum(v.lossless for v in done.values()),
           "fallback_tensors": sum(1 for n, v in done.items() if v.applied not in (None, spec_names[n])),
           "applied_types": ",".join(f"{t}:{c}" for t, c in sorted(Counter(
               v.applied for v in done.values() if v.applied).items())) or None,
           "skipped_tensors": json.dumps({n: v.why for n, v in q.items() if v.y is None}, sort_keys=True)
           if any(v.y is None for v in q.values()) else None}
    if numel:
        wavg = lambda k: sum(v.metrics[k] * weights[n].size for n, v in done.items()) / numel  # noqa: E731
        out.update(w_nmse=wavg("nmse"), w_bnl=wavg("bnl"), w_bias=wavg("bias"),
                   w_max_err=max(v.metrics["max_abs_err"] for v in done.values()))
        wt = [n for n, v in done.items() if "wnmse" in v.metrics]   # tensors the imatrix covers
        if wt:
            out["w_wnmse"] = sum(done[n].metrics["wnmse"] * weights[n].size for n in wt) / sum(weights[n].size for n in wt)
        lin = [n for n in done if means and n in means]   # matmul weights (not lookups, not the pooler)
        if lin:
            num = den = 0.0
            for n in lin:
                a, b = _actmean(weights[n], done[n].y, means[n])
                num, den = num + a, den + b
            out["w_actmean"] = num / den if den > 0 else 0.0
        groups: dict[str, list] = {}
        for n, v in done.items():
            groups.setdefault(group_of(n), []).append((v.metrics["nmse"], weights[n].size))
        out["group_nmse"] = json.dumps({g: sum(a * b for a, b in L) / sum(b for _a, b in L)
                                        for g, L in sorted(groups.items())})
    return out


# ----------------------------------------------------------------------------------- run
@dataclass
class EvalReport:
    model: str
    run_id: str
    measured: int = 0
    already: int = 0
    rows: list[dict] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)      # (format, reason)
    lossless: dict[str, int] = field(default_factory=dict)            # format -> tensors exact
    tensors: int = 0
    seconds: float = 0.0
    replacing: int = 0          # --no-resume: stored evaluations done again (old rows moved aside)


def _importance(ev, names: list[str], weights: dict[str, np.ndarray]):
    """The model's imatrix entries (the embedded encoder's bundled imatrix) of the tensors it
    covers, for the w_wnmse metric (formats quantize without them, as a sweep without
    --imatrix does), or None."""
    path = getattr(ev, "imatrix_path", None)
    if not path:
        return None, None
    from workbench.imatrix import load as load_imatrix, weights_for
    imx = load_imatrix(path)
    got = {}
    for n in names:
        w, _why = weights_for(imx, n, weights[n].shape[1])
        if w is not None:
            got[n] = w
    return (got or None), imx


def run(model: str | None = None, formats: str | list[FormatSpec] | None = None, frontier: bool = False,
        text: str | Path | None = None, tensors: str | None = None, store: str | Path | None = None,
        sensitivity: bool | str = False, native: bool = True, resume: bool = True,
        progress: bool | Callable[[int, int, str], None] = True, cancel: threading.Event | None = None,
        run_id: str | None = None, evaluator=None, mix: Mix | str | None = None, backend=None) -> EvalReport:
    """Evaluate formats on a model; every evaluation becomes one ``model_eval`` row.

    ``formats``: names/grids (``resolve``) or specs; None: ``default_formats`` (``frontier``:
    the weight-error frontier alone). ``tensors``: a regex; only matching tensors are
    quantized (the rest stay at the reference). ``sensitivity``: besides the whole model, each
    tensor group alone (True or "group": ``GROUP_RULES``) or each tensor alone ("tensor") for
    every format (default ``SENSITIVITY_FORMATS``).
    ``native``: for an LLM, also llama.cpp's own quantized model of each llama.cpp type.
    ``mix``: one format per tensor (``Mix`` or its text form) instead of ``formats``."""
    from workbench import eval_store
    from workbench.evaltext import load as load_text
    from workbench.sources import compile_regex
    t_start = time.perf_counter()
    level = SENSITIVITY_LEVELS.get(sensitivity)
    if level is None and sensitivity not in (False, None):
        raise EvalError(f"sensitivity {sensitivity!r}: one of group, tensor")
    store = Path(store) if store is not None else st.default_store()
    txt = load_text(text)
    rx = compile_regex(tensors, "--tensors") if tensors else None
    ev = evaluator if evaluator is not None else evaluator_for(model, txt)
    weights = ev.weights()
    names = [n for n in weights if rx is None or rx.search(n)]
    if not names:
        raise EvalError(f"--tensors {tensors!r} matches none of {ev.model_id}'s {len(weights)} weight matrices")
    if mix is not None:
        specs = [parse_mix(mix) if isinstance(mix, str) else mix]
    elif formats is None:
        specs = [resolve(n)[0] for n in SENSITIVITY_FORMATS] if sensitivity else \
            default_formats(store, ev.model_id, frontier_only=frontier)
    elif isinstance(formats, str):
        specs = resolve(formats)
    else:
        specs = list(formats)
    seen, uniq = set(), []
    for s in specs:
        if s.name not in seen:
            seen.add(s.name)
            uniq.append(s)
    specs = uniq
    label = "all" if rx is None else f"re:{tensors}"
    jobs: list[tuple[FormatSpec, str, str, list[str]]] = []    # (spec, variant, tensors label, names)
    native_skips: list[tuple[str, str]] = []
    for s in specs:
        jobs.append((s, "fake", label, names))
        pre = "" if rx is None else f"{label}/"   # a --tensors run's parts are labelled apart
        if level == "group":
            by_group: dict[str, list[str]] = {}
            for n in names:
                by_group.setdefault(group_of(n), []).append(n)
            if len(by_group) > 1:
                jobs += [(s, "fake", f"{pre}group:{g}", ns) for g, ns in sorted(by_group.items())]
        elif level == "tensor" and len(names) > 1:
            jobs += [(s, "fake", f"{pre}tensor:{n}", [n]) for n in names]
        if native and ev.kind == "llm" and s.family in with_trait("LLAMA_CPP") and rx is None:
            from workbench.llm import NATIVE_FTYPES
            if s.name in NATIVE_FTYPES:
                jobs.append((s, "llama.cpp", "all", names))
            else:
                native_skips.append((s.name, f"llama.cpp's own model: this llama.cpp cannot write {s.name}"))

    run_id = run_id or st.new_run_id()
    be = backends.resolve(backend)
    prov = st.provenance(run_id, be.name, be.device())
    runtime_version = getattr(ev, "llama_cpp_version", None) or f"numpy {np.__version__}"
    fingerprint = getattr(ev, "fingerprint", None) or getattr(getattr(ev, "source", None), "fingerprint", None) or ""
    fixed = {"model": ev.model_id, "model_fingerprint": fingerprint, "text": txt.fingerprint, "n_ctx": int(getattr(ev, "n_ctx", 0) or 0),
             "backend": be.name, "device": prov["device"], "workbench_version": workbench.__version__,
             "runtime_version": runtime_version}
    rep = EvalReport(ev.model_id, run_id, tensors=len(names), skipped=list(native_skips))
    stored = eval_store.done(store, fixed)
    have = stored if resume else set()
    todo = [j for j in jobs if (j[0].name, j[1], j[2]) not in have]
    rep.already = len(jobs) - len(todo)
    rep.replacing = 0 if resume else sum((j[0].name, j[1], j[2]) in stored for j in todo)
    imp, _imx = _importance(ev, names, weights)
    means = ev.activation_means() if hasattr(ev, "activation_means") else None
    src_types = ev.source_types() if hasattr(ev, "source_types") else {n: "F32" for n in names}
    base = {**prov, **fixed, "kind": ev.kind, "text_name": txt.name,
            "source_types": ",".join(f"{t}:{c}" for t, c in sorted(Counter(src_types.get(n, "?") for n in names).items())),
            "numel_total": sum(weights[n].size for n in names),
            "runtime": "llama.cpp" if ev.kind == "llm" else "numpy"}
    bar = None
    if progress is True and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), unit="eval", desc=f"eval {ev.model_id}", dynamic_ncols=True)
    if todo:
        ev.reference()              # computed (or loaded from its cache) before the first timing
    cache: tuple[str, dict[str, Quantized]] | None = None       # one format's tensors at a time
    schema = set(st.MODEL_EVAL_SCHEMA.names)
    try:
        for i, (spec, variant, tlabel, ns) in enumerate(todo):
            if cancel is not None and cancel.is_set():
                break
            t0 = time.perf_counter()
            row = {**base, "format": spec.name, "variant": variant, "tensors": tlabel,
                   "family": spec.family, "mix": spec.to_json() if isinstance(spec, Mix) else None, "created_at": pd.Timestamp.now(tz="UTC")}
            if variant == "llama.cpp":
                m = dict(ev.evaluate_native(spec.name))
                m.pop("tensor_types", None)
                counts = m.pop("applied_types", None)      # {type: tensors} llama.cpp wrote
                row["applied_types"] = (",".join(f"{t}:{c}" for t, c in sorted(counts.items()))
                                        if isinstance(counts, dict) else counts)
                row.update(n_tensors=len(ns), numel=base["numel_total"])
                row["bpw"] = m.pop("bpw", None)
                if row["bpw"] is None:
                    row["bpw"] = spec.bpw()
            else:
                per = {n: (spec.spec_for(n) if isinstance(spec, Mix) else spec) for n in names}
                if cache is None or cache[0] != spec.name:
                    cache = (spec.name, {n: quantize_tensor(per[n], as_kernel_input(weights[n]),
                                                            imp.get(n) if imp else None, backend=be)
                                         if per[n] is not None else Quantized(None, why="no rule of the mix matches")
                                         for n in names})
                q = {n: cache[1][n] for n in ns}
                if all(v.y is None for v in q.values()):
                    why = next(iter(q.values())).why
                    rep.skipped.append((spec.name, f"{tlabel}: {why}"))
                    if bar is not None:
                        bar.update(1)
                    elif callable(progress):
                        progress(i + 1, len(todo), spec.name)
                    continue
                row.update(_summary({n: (per[n] or spec).name for n in ns}, q, weights, means))
                if tlabel == label and row["lossless_tensors"]:
                    rep.lossless[spec.name] = row["lossless_tensors"]
                m = ev.evaluate({n: v.y for n, v in q.items() if v.y is not None})
            row.update({k: v for k, v in m.items() if k in schema})
            row["eval_s"] = time.perf_counter() - t0
            eval_store.write_evals(store, [row], replace=not resume)   # --no-resume: supersede
            rep.rows.append(row)
            rep.measured += 1
            if bar is not None:
                bar.update(1)
            elif callable(progress):
                progress(i + 1, len(todo), spec.name)
    finally:
        if bar is not None:
            bar.close()
        rep.seconds = time.perf_counter() - t_start
    return rep
