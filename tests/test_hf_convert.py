"""A Hugging Face safetensors folder as an evaluation model: converted by llama.cpp's own
convert_hf_to_gguf.py (vendored in the llama-cpp-python sdist), then evaluated through
llama.cpp like any GGUF.

The LLM is a small llama-architecture model written here (random weights, a SentencePiece
tokenizer trained on the bundled text), so the test needs no download; the encoder is the
embedded MiniLM's real folder. Both need the `convert` extra (torch, transformers), which
scripts/setup.sh installs; without it these tests skip and say why."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench import eval_store, evaluate, llm

MISSING = [m for m in ("torch", "transformers", "sentencepiece", "safetensors", "google.protobuf")
           if importlib.util.find_spec(m.split(".")[0]) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"the convert extra is not installed (missing "
                                f"{', '.join(MISSING)}): pip install -e '.[convert]'")

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, VOCAB = 256, 512, 2, 4, 2, 384


def _need_sources():
    try:
        return llm.vendored_llama_cpp()
    except ValueError as exc:
        pytest.skip(str(exc))


def _oracle():
    from workbench import oracle
    if not oracle.available():
        pytest.skip(oracle.MISSING)


def write_tiny_llama(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """config.json, tokenizer.model and model.safetensors of a 2-layer llama (grouped-query
    attention, untied output); returns the weights by their Hugging Face names."""
    import sentencepiece as spm
    from safetensors.numpy import save_file
    folder.mkdir(parents=True)
    text = Path(__file__).resolve().parents[1] / "data" / "eval" / "passages.txt"
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "tokenizer"), vocab_size=VOCAB,
                                   model_type="bpe", character_coverage=1.0, byte_fallback=True,
                                   bos_id=1, eos_id=2, unk_id=0, pad_id=-1, num_threads=1,
                                   minloglevel=2)
    (folder / "tokenizer.vocab").unlink()
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
           "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
           "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "max_position_embeddings": 1024,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
           "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32", "hidden_act": "silu"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "add_bos_token": True, "add_eos_token": False}))
    rng = np.random.default_rng(seed)
    head = HIDDEN // HEADS
    w = {"model.embed_tokens.weight": rng.standard_normal((VOCAB, HIDDEN)) * 0.5,
         "lm_head.weight": rng.standard_normal((VOCAB, HIDDEN)) * 0.08,
         "model.norm.weight": 1 + 0.1 * rng.standard_normal(HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w.update({p + "self_attn.q_proj.weight": rng.standard_normal((HIDDEN, HIDDEN)) * 0.08,
                  p + "self_attn.k_proj.weight": rng.standard_normal((KV_HEADS * head, HIDDEN)) * 0.08,
                  p + "self_attn.v_proj.weight": rng.standard_normal((KV_HEADS * head, HIDDEN)) * 0.08,
                  p + "self_attn.o_proj.weight": rng.standard_normal((HIDDEN, HIDDEN)) * 0.08,
                  p + "mlp.gate_proj.weight": rng.standard_normal((FFN, HIDDEN)) * 0.08,
                  p + "mlp.up_proj.weight": rng.standard_t(5, (FFN, HIDDEN)) * 0.06,
                  p + "mlp.down_proj.weight": rng.standard_normal((HIDDEN, FFN)) * 0.06,
                  p + "input_layernorm.weight": 1 + 0.1 * rng.standard_normal(HIDDEN),
                  p + "post_attention_layernorm.weight": 1 + 0.1 * rng.standard_normal(HIDDEN)})
    w = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in w.items()}
    save_file(w, str(folder / "model.safetensors"))
    return w


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    _need_sources()
    root = tmp_path_factory.mktemp("hf")
    folder = root / "tiny-llama"
    weights = write_tiny_llama(folder)
    return folder, weights


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch):
    """A conversion cache of this module's own (the sdist stays where setup.sh put it)."""
    root = llm.cache_root()
    conv = tmp_path_factory.getbasetemp() / "conv-cache"
    monkeypatch.setenv("WORKBENCH_CACHE", str(conv))
    conv.mkdir(exist_ok=True)
    for name in ("sdist", f"llama.cpp-{llm._installed_version()}"):
        if (root / name).exists() and not (conv / name).exists():
            (conv / name).symlink_to(root / name)
    return conv


def _gguf_tensors(path: Path) -> dict[str, np.ndarray]:
    import gguf
    r = gguf.GGUFReader(str(path))
    return {t.name: np.array(t.data) for t in r.tensors}


def test_convert_hf_llama_gives_its_weights_exactly(tiny_llama, cache):
    folder, w = tiny_llama
    before = sorted(p.name for p in folder.iterdir())
    out = llm.convert_hf(folder)
    assert out.is_file() and out.is_relative_to(cache / "converted")
    assert sorted(p.name for p in folder.iterdir()) == before          # nothing written into the folder
    t = _gguf_tensors(out)
    same = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
            "output_norm.weight": "model.norm.weight"}
    for i in range(LAYERS):
        same.update({f"blk.{i}.attn_v.weight": f"model.layers.{i}.self_attn.v_proj.weight",
                     f"blk.{i}.attn_output.weight": f"model.layers.{i}.self_attn.o_proj.weight",
                     f"blk.{i}.ffn_gate.weight": f"model.layers.{i}.mlp.gate_proj.weight",
                     f"blk.{i}.ffn_up.weight": f"model.layers.{i}.mlp.up_proj.weight",
                     f"blk.{i}.ffn_down.weight": f"model.layers.{i}.mlp.down_proj.weight",
                     f"blk.{i}.attn_norm.weight": f"model.layers.{i}.input_layernorm.weight",
                     f"blk.{i}.ffn_norm.weight": f"model.layers.{i}.post_attention_layernorm.weight"})
    assert set(same) | {f"blk.{i}.attn_{x}.weight" for i in range(LAYERS) for x in "qk"} == set(t)
    for g, h in same.items():
        assert t[g].dtype == np.float32 and np.array_equal(t[g].reshape(w[h].shape), w[h]), g
    # q and k: llama.cpp's rotary layout permutes the rows of each head, bit for bit the same rows
    for i in range(LAYERS):
        for x, heads in (("q", HEADS), ("k", KV_HEADS)):
            src = w[f"model.layers.{i}.self_attn.{x}_proj.weight"]
            got = t[f"blk.{i}.attn_{x}.weight"].reshape(src.shape)
            d = src.shape[0] // heads
            perm = src.reshape(heads, 2, d // 2, -1).swapaxes(1, 2).reshape(src.shape)
            assert np.array_equal(got, perm) and not np.array_equal(got, src)
    mtime = out.stat().st_mtime_ns
    assert llm.convert_hf(folder) == out and out.stat().st_mtime_ns == mtime     # reused, not redone


def test_hf_folder_is_evaluated_through_llama_cpp(tiny_llama, cache, tmp_path):
    """`workbench eval --model FOLDER`: converted once, reference logits of the bundled text,
    fake-quantized and llama.cpp-quantized evaluations stored as rows; a second run resumes."""
    _oracle()
    folder, _w = tiny_llama
    store = tmp_path / "store"
    env = dict(os.environ, WORKBENCH_CACHE=str(cache))
    cmd = [sys.executable, "-m", "workbench.cli", "eval", "--model", str(folder), "--formats", "Q4_0,Q8_0",
           "--store", str(store)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    ev = eval_store.evals(store)
    assert sorted(zip(ev["format"], ev["variant"])) == [("Q4_0", "fake"), ("Q4_0", "llama.cpp"),
                                                        ("Q8_0", "fake"), ("Q8_0", "llama.cpp")]
    assert (ev["kind"] == "llm").all() and ev["model"].nunique() == 1
    assert (ev["n_tokens"] >= 8000).all() and (ev["source_types"] == "F32:16").all()
    d = ev.set_index(["format", "variant"])
    for v in ("fake", "llama.cpp"):
        assert 0 < d.loc[("Q8_0", v), "kld_mean"] < d.loc[("Q4_0", v), "kld_mean"]
        assert d.loc[("Q8_0", v), "top1"] > d.loc[("Q4_0", v), "top1"]
    assert d.loc[("Q4_0", "fake"), "bpw"] == pytest.approx(4.5)
    assert d.loc[("Q8_0", "fake"), "w_nmse"] < d.loc[("Q4_0", "fake"), "w_nmse"]
    assert np.isfinite(d["ppl_ref"]).all() and d["ppl_ref"].nunique() == 1
    r2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r2.returncode == 0 and "evaluated 0 of" in r2.stdout and "4 already stored" in r2.stdout


def test_embedded_minilm_folder_converts_exactly(cache):
    """The real MiniLM folder (BERT) through the same converter: F32 tensors equal the
    safetensors' bit for bit."""
    _need_sources()
    from safetensors.numpy import load_file
    from workbench.sources import default_model_path
    folder = default_model_path().parent
    src = load_file(str(folder / "model.safetensors"))
    t = _gguf_tensors(llm.convert_hf(folder))
    pairs = {"token_embd.weight": "embeddings.word_embeddings.weight",
             "blk.0.attn_q.weight": "encoder.layer.0.attention.self.query.weight",
             "blk.5.ffn_down.weight": "encoder.layer.5.output.dense.weight"}
    for g, h in pairs.items():
        key = h if h in src else next(k for k in src if k.endswith(h))
        assert np.array_equal(t[g].reshape(src[key].shape), src[key]), g


def test_bad_folders_get_one_line(tiny_llama, cache, tmp_path):
    """No weights, an architecture llama.cpp does not know: one line, exit 2, nothing stored."""
    import shutil
    folder, _w = tiny_llama
    store = tmp_path / "store"
    bad = tmp_path / "no-weights"
    bad.mkdir()
    shutil.copy(folder / "config.json", bad / "config.json")
    unknown = tmp_path / "unknown-arch"
    shutil.copytree(folder, unknown)
    cfg = json.loads((unknown / "config.json").read_text())
    cfg["architectures"] = ["NoSuchModelForCausalLM"]
    (unknown / "config.json").write_text(json.dumps(cfg))
    env = dict(os.environ, WORKBENCH_CACHE=str(cache))
    for path, says in ((bad, "not a Hugging Face model folder"), (unknown, "NoSuchModelForCausalLM")):
        r = subprocess.run([sys.executable, "-m", "workbench.cli", "eval", "--model", str(path),
                            "--formats", "Q4_0", "--store", str(store)],
                           capture_output=True, text=True, env=env, timeout=600)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and says in lines[0], r.stderr
        assert "Traceback" not in r.stderr
    assert not store.exists() or not any(store.rglob("*.parquet"))


@pytest.mark.parametrize("has_filter", [True, False])
def test_safe_extract_refuses_what_writes_elsewhere(tmp_path, monkeypatch, has_filter):
    """The sdist is unpacked with tarfile's "data" filter, or the same checks by hand where
    Python lacks it (Debian 12's python3 is 3.11.2): files land inside, links and paths
    outside the folder are refused."""
    import io
    import tarfile
    from workbench.llm import safe_extract
    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)

    def tar_of(members):
        path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.tar"
        with tarfile.open(path, "w") as t:
            for name, kind in members:
                info = tarfile.TarInfo(name)
                if kind == "file":
                    info.size = 1
                    t.addfile(info, io.BytesIO(b"x"))
                else:
                    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                    t.addfile(info)
        return tarfile.open(path)

    out = tmp_path / "out"
    with tar_of([("pkg/a.txt", "file"), ("pkg/sub/b.txt", "file")]) as t:
        safe_extract(t, out)
    assert (out / "pkg" / "sub" / "b.txt").read_bytes() == b"x"
    for bad in ([("../evil.txt", "file")], [("pkg/link", "sym")]):
        with tar_of(bad) as t, pytest.raises(Exception):
            safe_extract(t, tmp_path / "out2")
        assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out2" / "pkg" / "link").exists()
    # an absolute name: refused by hand, or (the data filter) written inside with its "/" stripped
    with tar_of([("/abs-member-of-a-test.txt", "file")]) as t:
        try:
            safe_extract(t, tmp_path / "out3")
        except Exception:  # noqa: BLE001 - refused is fine
            pass
    assert not Path("/abs-member-of-a-test.txt").exists()
