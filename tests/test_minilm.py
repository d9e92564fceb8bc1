"""workbench.minilm: the tokenizers-library tokenizer against the hand-written WordPiece, the
packed (unpadded) batched forward pass against one-sentence runs, the GELU/LayerNorm kernels,
and MiniLMEval — the encoder's model-level evaluator (embedding drift, retrieval agreement)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from workbench import evaltext as E
from workbench import minilm as M
from workbench.imatrix import CALIBRATION_TEXT
from workbench.sources import open_model


@pytest.fixture(scope="module")
def model() -> M.MiniLM:
    return M.load_minilm()


@pytest.fixture(scope="module")
def wordpiece(model) -> M.WordPiece:
    return M.WordPiece(model.path.parent / "vocab.txt")


@pytest.fixture(scope="module")
def full_eval() -> M.MiniLMEval:
    """The evaluator as the lead's orchestration builds it: default model, bundled text."""
    return M.MiniLMEval()


@pytest.fixture(scope="module")
def small_eval() -> M.MiniLMEval:
    """The same evaluator on 40 sentences of the bundled text (fast enough to run many times)."""
    bundled = E.load()
    text = "\n\n".join(bundled.sentences[:40])
    return M.MiniLMEval(text=E.EvalText.from_text(text, "first 40 sentences"))


def _round_to_grid(w: np.ndarray, step_in_std: float) -> np.ndarray:
    step = np.float32(w.std() * step_in_std)
    return (np.round(w / step) * step).astype(np.float32)


# ----------------------------------------------------------------------------- tokenizer
EDGE_CASES = [
    "", "   \t\n ", "ok",
    "Café déjà vu, naïve façade, Ångström, crème brûlée, São Paulo, Øresund, Dvořák.",
    "e\u0301 n\u0303 A\u030a\u0323 (combining marks) Œuvre ß straße İstanbul ǅemal",
    "東京タワーに行きました。北京欢迎你！한국어 문장입니다. 日本語のテキスト、漢字とカタカナ。𠀀𪜀",
    "Hello!!! ... (test) [x] {y} — “quotes” ‘single’ «guillemets» ¿Qué? ¡Sí! a/b\\c @#$%^&*_+=|~`",
    "don't can't it's O'Neill rock'n'roll state-of-the-art 3.14159 1,000,000 2024-03-05T14:30:00Z",
    "a" * 150, "x" * 100, "y" * 101, "supercalifragilisticexpialidocious" * 3,
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "a\x00b\u200bc\ufeffd\u0007e\ufffdf \x1c\x1d\x85 \x0b\x0c",
    "tab\tnew\nline\r\nnbsp\u00a0thin\u2009 line\u2028para\u2029end",
    "🙂 👍🏽 ❤️ 🇫🇷 Ελληνικά ΣΑΣ σας Русский العربية עברית हिन्दी ไทย",
    "ﬁne ligature ① ² ½ Ⅻ ＦＵＬＬ ｗｉｄｔｈ １２３ \ue000 private \u0378 unassigned",
    "[CLS] [SEP] [MASK] [PAD] [UNK] inside text, [cls] lower case",
]


def test_model_tokenizer_is_the_tokenizers_library(model):
    assert isinstance(model.tokenizer, M.BertTokenizer)
    assert (model.tokenizer.cls, model.tokenizer.sep, model.tokenizer.unk) == (101, 102, 100)
    # tokenizer.json truncates at 128 and pads to 128: both are off here (callers truncate)
    long = " ".join(["word"] * 300)
    assert model.tokenizer.encode(long) == [2773] * 300
    assert model.tokenizer.encode("") == []


def test_tokenizers_library_and_wordpiece_give_identical_ids(model, wordpiece):
    fast = model.tokenizer
    bundled = E.load()
    assert wordpiece.encode(CALIBRATION_TEXT) == fast.encode(CALIBRATION_TEXT)
    assert wordpiece.encode(bundled.text) == fast.encode(bundled.text)
    sentences = E.split_sentences(CALIBRATION_TEXT) + bundled.sentences
    assert len(sentences) > 300
    assert wordpiece.encode_batch(sentences) == fast.encode_batch(sentences)
    for case in EDGE_CASES:
        assert wordpiece.encode(case) == fast.encode(case), repr(case)
    # the edge cases do exercise the rules they are meant to
    assert fast.encode("a" * 150) == [fast.unk] and len(fast.encode("x" * 100)) >= 1
    assert fast.encode("café") == fast.encode("cafe") and fast.encode("   \t\n ") == []
    assert fast.encode("[CLS]") == [fast.cls] and fast.encode("東京") == fast.encode("東 京")


def test_tokenizers_agree_on_random_unicode(model, wordpiece):
    """Seeded random strings over many scripts, controls, marks and symbols (recently assigned
    code points, where the two libraries' Unicode tables differ, are left out)."""
    rng = np.random.default_rng(7)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
              (0x5D0, 0x5EA), (0x620, 0x64A), (0x905, 0x939), (0xE01, 0xE3A), (0x2000, 0x200F),
              (0x2010, 0x2027), (0x3040, 0x30FF), (0x4E00, 0x4E80), (0xAC00, 0xAC80), (0xFF01, 0xFF5E),
              (0x1F300, 0x1F5FF), (0x0, 0x1F), (0x7F, 0x9F)]
    texts = []
    for _ in range(400):
        n = int(rng.integers(1, 40))
        picks = [ranges[int(k)] for k in rng.integers(0, len(ranges), n)]
        texts.append("".join(chr(int(rng.integers(lo, hi + 1))) if rng.random() < 0.6
                             else " abc.,!"[int(rng.integers(7))] for lo, hi in picks))
    assert wordpiece.encode_batch(texts) == model.tokenizer.encode_batch(texts)


# ------------------------------------------------------------------------------- kernels
def test_gelu_matches_exact_erf_gelu():
    x = np.concatenate([np.linspace(-30, 30, 200001), [0.0, -0.0, 1e-30, -1e-30, 1e-8]]).astype(np.float32)
    y = x.copy()
    M._gelu_inplace(y)
    exact = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.astype(np.float64)])
    assert np.all(np.abs(y - exact) <= 1e-6 * np.maximum(1.0, np.abs(x)))
    assert y[-1] == np.float32(5e-9) and np.all(y[x <= -6] <= 0) and np.array_equal(y[x >= 6], x[x >= 6])


def test_layer_norm_matches_float64_reference():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((33, 384)) * 5 + 2).astype(np.float32)
    r = rng.standard_normal((33, 384)).astype(np.float32)
    g, b = rng.standard_normal(384).astype(np.float32), rng.standard_normal(384).astype(np.float32)
    for res in (None, r):
        s = x.astype(np.float64) + (0 if res is None else res)
        ref = (s - s.mean(1, keepdims=True)) / np.sqrt(s.var(1, keepdims=True) + 1e-12) * g + b
        np.testing.assert_allclose(M._layer_norm(x, g, b, 1e-12, res), ref, atol=2e-5, rtol=1e-5)


# ------------------------------------------------------------------------- batching
def test_packed_batch_equals_one_sentence_runs(model):
    """Sentences of mixed lengths (several sharing a length, so a group holds more than one)
    embedded together equal each sentence run alone, unpadded, through bert_forward."""
    bundled = E.load()
    b = M.batch(model, bundled.sentences)
    shared = [g for g in b.groups if g[1] >= 3][:3]
    k0 = {g: sum(x[1] for x in b.groups[:b.groups.index(g)]) for g in shared}
    pick = [int(i) for g in shared for i in b.order[k0[g]:k0[g] + 3]]
    pick += [int(np.argmin(b.lengths)), int(np.argmax(b.lengths)), 5, 77]
    sentences = [bundled.sentences[i] for i in pick] + ["", "Short one.", "Short one."]
    together = M.minilm_embed(sentences, model)
    tok = model.tokenizer
    for s, e in zip(sentences, together):
        h = M.bert_forward(model, [tok.cls] + tok.encode(s) + [tok.sep])[0].astype(np.float64).mean(0)
        alone = h / np.linalg.norm(h)
        assert np.abs(e - alone).max() <= 1e-5, s
    assert len(set(map(len, (tok.encode(s) for s in sentences)))) < len(sentences)   # lengths repeat


def test_long_input_is_truncated_like_sentence_transformers(model):
    assert model.max_seq_length == 256
    b = M.batch(model, [" ".join(["word"] * 400), "tiny"])
    assert list(b.lengths) == [256, 3] and b.n_tokens == 259
    assert b.ids[b.groups[1][0]:][:2].tolist() == [101, 2773] and b.ids[-1] == 102


# ----------------------------------------------------------------------------- evaluator
def test_evaluator_interface(full_eval):
    ev = full_eval
    src = open_model(None)
    assert ev.kind == "encoder" and ev.model_id == src.model_id == "all-MiniLM-L6-v2"
    assert ev.text.fingerprint == E.load().fingerprint and len(ev.text.sentences) >= 200
    assert ev.n_tokens == sum(len(ids) + 2 for ids in ev.model.tokenizer.encode_batch(ev.text.sentences))
    w = ev.weights()
    assert list(w) == [t.name for t in src.weights()] and len(w) == 40
    for t in src.weights():
        assert w[t.name].dtype == np.float32 and w[t.name].ndim == 2
        assert np.array_equal(w[t.name], ev.model.params[t.name]), t.name
    ref = ev.reference()
    assert ref is ev.reference() and ref.dtype == np.float32
    assert ref.shape == (len(ev.text.sentences), 384)
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-6)


def test_identity_gives_exactly_zero_drift(full_eval):
    exact = {"drift": 0.0, "cosine_min": 1.0, "rank_agreement": 1.0, "top1_agreement": 1.0}
    assert full_eval.evaluate({}) == exact


def test_fp32_copies_and_the_unused_pooler_change_nothing(small_eval):
    exact = {"drift": 0.0, "cosine_min": 1.0, "rank_agreement": 1.0, "top1_agreement": 1.0}
    w = small_eval.weights()
    assert small_eval.evaluate({k: v.copy() for k, v in w.items()}) == exact
    # sentence-transformers mean-pools the hidden states: the pooler is never run
    zero_pooler = {"pooler.dense.weight": np.zeros_like(w["pooler.dense.weight"])}
    assert small_eval.evaluate(zero_pooler) == exact


def test_perturbing_one_weight_moves_embeddings_and_retrieval(small_eval):
    w = small_eval.weights()
    name = "encoder.layer.2.intermediate.dense.weight"
    r = small_eval.evaluate({name: _round_to_grid(w[name], 1.0)})
    assert 0 < r["drift"] < 0.5 and r["cosine_min"] < 1
    assert r["rank_agreement"] < 1 and 0 <= r["top1_agreement"] <= 1
    assert r["drift"] <= 1 - r["cosine_min"] + 1e-12


def test_coarser_rounding_of_every_weight_drifts_more(small_eval):
    w = small_eval.weights()
    results = [small_eval.evaluate({k: _round_to_grid(v, step) for k, v in w.items()}) for step in (0.05, 0.3, 1.0)]
    fine, mid, coarse = results
    assert 0 < fine["drift"] < mid["drift"] < coarse["drift"]
    assert fine["rank_agreement"] > mid["rank_agreement"] > coarse["rank_agreement"]
    assert fine["cosine_min"] > coarse["cosine_min"]
    assert fine["top1_agreement"] >= coarse["top1_agreement"]


def test_bad_replacements_raise_one_line(small_eval):
    w = small_eval.weights()
    name = "encoder.layer.0.attention.self.query.weight"
    bad = [
        ({"encoder.layer.9.attention.self.query.weight": w[name]}, "unknown tensor"),
        ({"encoder.layer.0.attention.self.query.bias": w[name][0]}, "unknown tensor"),   # not a weight matrix
        ({name: w[name].T[:, :-1]}, "shape"),
        ({name: w[name].reshape(-1)}, "shape"),
        ({name: np.full_like(w[name], np.nan)}, "non-finite"),
        ({name: np.array([["a"] * 384] * 384)}, "not numeric"),
    ]
    for replaced, message in bad:
        with pytest.raises(ValueError, match=message) as exc:
            small_eval.evaluate(replaced)
        assert "\n" not in str(exc.value)
    assert small_eval.evaluate({name: w[name].astype(np.float64)})["drift"] == 0.0   # any float dtype


def test_compare_metrics_on_known_embeddings():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((6, 8))
    assert M.compare(ref, ref) == {"drift": 0.0, "cosine_min": 1.0, "rank_agreement": 1.0, "top1_agreement": 1.0}
    scaled = M.compare(ref * 3.0, ref)                       # cosines ignore length
    assert abs(scaled["drift"]) < 1e-12 and scaled["rank_agreement"] == pytest.approx(1.0)
    flipped = ref.copy()
    flipped[0] = -flipped[0]
    r = M.compare(flipped, ref)
    assert r["drift"] == pytest.approx(2 / 6) and r["cosine_min"] == pytest.approx(-1.0)
    # query 0's similarities to the others all change sign (its ranking reverses: Spearman −1);
    # every other query sees only sentence 0 move. Checked against the obvious slow computation
    rho, top1 = _slow_retrieval(flipped, ref)
    assert rho[0] == pytest.approx(-1.0) and all(x < 1 for x in rho[1:])
    assert r["rank_agreement"] == pytest.approx(np.mean(rho), abs=1e-12)
    assert r["top1_agreement"] == pytest.approx(np.mean(top1), abs=1e-12)
    moved = ref + 0.3 * rng.standard_normal(ref.shape)
    rho, top1 = _slow_retrieval(moved, ref)
    m = M.compare(moved, ref)
    assert m["rank_agreement"] == pytest.approx(np.mean(rho), abs=1e-12)
    assert m["top1_agreement"] == pytest.approx(np.mean(top1), abs=1e-12)
    ranks = M._rank_rows(np.array([[0.5, 0.1, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    assert ranks.tolist() == [[2.5, 1.0, 2.5, 4.0], [4.0, 3.0, 2.0, 1.0], [2.5, 2.5, 2.5, 2.5]]


def _slow_retrieval(emb: np.ndarray, ref: np.ndarray) -> tuple[list[float], list[bool]]:
    """Per query: Spearman correlation of its cosine similarities to the others (no ties), and
    whether its nearest other sentence is unchanged, computed the slow obvious way."""
    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    rho, top1 = [], []
    for i in range(len(ref)):
        others = [j for j in range(len(ref)) if j != i]
        s_ref = [cos(ref[i], ref[j]) for j in others]
        s_emb = [cos(emb[i], emb[j]) for j in others]
        rho.append(float(np.corrcoef(np.argsort(np.argsort(s_ref)), np.argsort(np.argsort(s_emb)))[0, 1]))
        top1.append(int(np.argmax(s_ref)) == int(np.argmax(s_emb)))
    return rho, top1


def test_evaluator_on_a_user_text(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_text("\n\n".join(E.load().sentences[100:120]), encoding="utf-8")
    ev = M.MiniLMEval(text=E.load(p))
    assert ev.reference().shape == (20, 384) and ev.text.name == "mine.txt"
    with pytest.raises(ValueError, match="at least 3"):
        M.MiniLMEval(text=E.EvalText.from_text("One. Two.", "tiny"))
