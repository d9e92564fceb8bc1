"""Tensor sources: safetensors (f32/f16/bf16), GGUF (F32/F16/BF16 + quantized, flagged), .npy/.npz."""
from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize, quantize

from workbench.sources import SKIP_1D, SKIP_INTEGER, SourceError, open_model


def write_safetensors(path, tensors: dict[str, tuple[str, np.ndarray]]):
    header, blobs, off = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        b = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_default_model_is_real_minilm(minilm):
    assert minilm.model_id == "all-MiniLM-L6-v2"
    w = minilm.weights()
    assert len(w) == 40 and sum(t.numel for t in w) == 22_682_112
    skipped = {t.name: t.skip_reason for t in minilm.skipped()}
    assert skipped["embeddings.position_ids"] == SKIP_INTEGER
    assert skipped["encoder.layer.0.attention.self.query.bias"] == SKIP_1D
    x = next(t for t in w if t.name == "encoder.layer.0.attention.self.query.weight").load()
    assert x.dtype == np.float32 and x.shape == (384, 384) and x.flags.c_contiguous
    assert 0.01 < float(x.std()) < 0.2  # real trained weights, not zeros or noise of scale 1


def test_safetensors_f32_f16_bf16(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 32)).astype(np.float32)
    write_safetensors(tmp_path / "m.safetensors", {
        "a": ("F32", a), "h": ("F16", a.astype(np.float16)),
        "b": ("BF16", a.astype(ml_dtypes.bfloat16).view(np.uint16)), "i": ("I64", np.arange(3)),
        "v": ("F32", a[0])})
    m = open_model(tmp_path / "m.safetensors")
    got = {t.name: t.load() for t in m.weights()}
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["h"], a.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(got["b"], a.astype(ml_dtypes.bfloat16).astype(np.float32))
    assert {t.name: t.skip_reason for t in m.skipped()} == {"i": SKIP_INTEGER, "v": SKIP_1D}


def test_gguf_plain_and_quantized(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((8, 64)).astype(np.float32)
    w = GGUFWriter(tmp_path / "m.gguf", "llama")
    w.add_tensor("f32", a)
    w.add_tensor("f16", a.astype(np.float16))
    q = quantize(a, GGMLQuantizationType.Q8_0)
    w.add_tensor("q8", q, raw_shape=q.shape, raw_dtype=GGMLQuantizationType.Q8_0)
    w.add_tensor("ids", np.arange(4, dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    m = open_model(tmp_path / "m.gguf")
    t = {x.name: x for x in m.tensors}
    assert t["f32"].shape == (8, 64) and not t["f32"].source_quantized
    np.testing.assert_array_equal(t["f32"].load(), a)
    np.testing.assert_array_equal(t["f16"].load(), a.astype(np.float16).astype(np.float32))
    assert t["q8"].source_quantized and t["q8"].shape == (8, 64)
    np.testing.assert_array_equal(t["q8"].load(), dequantize(q, GGMLQuantizationType.Q8_0))
    assert t["ids"].skip_reason == SKIP_INTEGER


def test_npy_and_npz(tmp_path):
    a = np.arange(64, dtype=np.float32).reshape(2, 32)
    np.save(tmp_path / "w.npy", a)
    np.savez(tmp_path / "w.npz", w=a, i=np.arange(3))
    (t,) = open_model(tmp_path / "w.npy").weights()
    np.testing.assert_array_equal(t.load(), a)
    m = open_model(tmp_path / "w.npz")
    assert [x.name for x in m.weights()] == ["w"] and m.skipped()[0].skip_reason == SKIP_INTEGER


@pytest.mark.parametrize("damage", ["truncated", "header", "json", "missing", "suffix", "gguf"])
def test_damaged_files_give_one_line(tmp_path, damage):
    from workbench.sources import default_model_path
    p = tmp_path / "m.safetensors"
    raw = default_model_path().read_bytes()
    if damage == "truncated":
        p.write_bytes(raw[:len(raw) - 1000])
    elif damage == "header":
        p.write_bytes(raw[:4])
    elif damage == "json":
        p.write_bytes(struct.pack("<Q", 10) + b"{not json}" + b"\0" * 10)
    elif damage == "suffix":
        p = tmp_path / "m.bin"
        p.write_bytes(b"x")
    elif damage == "gguf":
        p = tmp_path / "m.gguf"
        p.write_bytes(b"GGUF" + b"\xff" * 64)
    else:
        p = tmp_path / "nope.safetensors"
    with pytest.raises(SourceError) as exc:
        open_model(p)
    assert "\n" not in str(exc.value) and str(p) in str(exc.value)


def test_safetensors_fp8_tensors_are_float_weights(tmp_path):
    """F8_E4M3/F8_E5M2 are float weights (read through ml_dtypes), not integer buffers;
    F8_E8M0 (a power-of-two scale tensor) and integer types are listed with their own reason."""
    a = np.random.default_rng(2).standard_normal((4, 32)).astype(np.float32)
    e4, e5 = a.astype(ml_dtypes.float8_e4m3fn), a.astype(ml_dtypes.float8_e5m2)
    write_safetensors(tmp_path / "f8.safetensors", {
        "a": ("F8_E4M3", e4.view(np.uint8)), "b": ("F8_E5M2", e5.view(np.uint8)),
        "s": ("F8_E8M0", np.full((4, 1), 127, np.uint8)), "i": ("I32", np.arange(4, dtype=np.int32))})
    m = open_model(tmp_path / "f8.safetensors")
    got = {t.name: t.load() for t in m.weights()}
    np.testing.assert_array_equal(got["a"], e4.astype(np.float32))
    np.testing.assert_array_equal(got["b"], e5.astype(np.float32))
    reasons = {t.name: t.skip_reason for t in m.skipped()}
    assert reasons["i"] == SKIP_INTEGER and "F8_E8M0" in reasons["s"]
