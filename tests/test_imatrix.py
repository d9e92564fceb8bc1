"""workbench.imatrix: llama.cpp's imatrix files (GGUF and legacy .dat), the vector
llama-quantize computes from them, tensor matching, the importance-weighted metrics, and the
committed imatrix of the default model with the numpy BERT forward pass that made it."""
from __future__ import annotations

import ctypes
import hashlib
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

from workbench import imatrix as I
from workbench.imatrix import ImatrixError, load, save_dat, save_gguf, weights_for
from workbench.metrics import WEIGHTED_METRICS, tensor_metrics, weighted_metrics

REPO = Path(__file__).resolve().parents[1]
MINILM_IMATRIX = REPO / "data" / "imatrix" / "all-MiniLM-L6-v2.imatrix.gguf"
IMATRIX_KV = {"general.type": ("imatrix", GGUFValueType.STRING, None),
              "imatrix.datasets": (["calib.txt"], GGUFValueType.ARRAY, GGUFValueType.STRING),
              "imatrix.chunk_count": (3, GGUFValueType.UINT32, None),
              "imatrix.chunk_size": (512, GGUFValueType.UINT32, None)}


def stats():
    """Raw sums/counts as llama-imatrix holds them: two dense matrices and one 3-expert tensor
    whose expert 1 was never routed to (count 0, sums 0)."""
    rng = np.random.default_rng(7)
    exps = (rng.random((3, 32)) * 50).astype(np.float32)
    exps[1] = 0
    sums = {"blk.0.attn_q.weight": (rng.random(64) * 300).astype(np.float32),
            "blk.0.ffn_down.weight": (rng.random(96) * 3).astype(np.float32),
            "blk.1.ffn_down_exps.weight": exps}
    counts = {"blk.0.attn_q.weight": 1536, "blk.0.ffn_down.weight": 1000,
              "blk.1.ffn_down_exps.weight": [700, 0, 13]}
    return sums, counts


def quantize_cpp_gguf(s, c):
    """quantize.cpp load_imatrix for a GGUF entry, by hand: per matrix j, sums / (float) count,
    or 1 where the count is 0; flat, expert-major."""
    s = np.asarray(s, np.float32).reshape(len(np.atleast_1d(c)), -1)
    rows = [s[j] / np.float32(cj) if cj > 0 else np.ones(s.shape[1], np.float32)
            for j, cj in enumerate(np.atleast_1d(c))]
    return np.concatenate(rows).astype(np.float32)


def raw_gguf(path, tensors: dict, kv: dict = IMATRIX_KV, arch: str = ""):
    """A GGUF written directly with gguf-py's GGUFWriter (not through save_gguf)."""
    w = GGUFWriter(path, arch)
    for k, (v, t, sub) in kv.items():
        w.add_key_value(k, v, t, sub_type=sub)
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def legacy_bytes(entries, trailer: bytes | None = None) -> bytes:
    """A legacy imatrix byte by byte, as IMatrixCollector::save_imatrix_legacy writes it:
    int32 n_entries; per entry int32 len, name, int32 ncall, int32 nval, float32[nval];
    then int32 chunk count, int32 dataset length, dataset bytes (the trailer)."""
    out = struct.pack("<i", len(entries))
    for name, ncall, vals in entries:
        vals = np.asarray(vals, np.float32)
        out += struct.pack("<i", len(name)) + name + struct.pack("<ii", ncall, vals.size)
        out += struct.pack(f"<{vals.size}f", *vals.tolist())
    return out + (trailer or b"")


def one_line_error(path, exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


# ----------------------------------------------------------------------------------- GGUF
def test_gguf_round_trip_matches_quantize_cpp_arithmetic(tmp_path):
    sums, counts = stats()
    p = save_gguf(tmp_path / "x.imatrix.gguf", sums, counts, ["calib.txt", "more.txt"], 7, 512)
    imx = load(p)
    assert (imx.format, imx.datasets, imx.chunk_count, imx.chunk_size) == ("gguf", ["calib.txt", "more.txt"], 7, 512)
    assert imx.fingerprint == hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    assert list(imx.entries) == sorted(sums)
    for name in sums:
        got = imx.entries[name]
        assert got.dtype == np.float32
        assert np.array_equal(got, quantize_cpp_gguf(sums[name], counts[name])), name
    exps = imx.entries["blk.1.ffn_down_exps.weight"]
    assert exps.shape == (96,) and np.all(exps[32:64] == 1)             # unrouted expert → ones
    assert np.array_equal(exps[:32], sums["blk.1.ffn_down_exps.weight"][0] / np.float32(700))
    # a second save of the same data is byte-identical (deterministic layout)
    q = save_gguf(tmp_path / "y.gguf", sums, counts, ["calib.txt", "more.txt"], 7, 512)
    assert q.read_bytes() == p.read_bytes()


def test_gguf_layout_is_llama_imatrix_s(tmp_path):
    sums, counts = stats()
    p = save_gguf(tmp_path / "x.gguf", sums, counts, ["calib.txt"], 3, 128)
    r = GGUFReader(p)
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    assert keys == ["general.type", "imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"]
    assert r.fields["general.type"].contents() == "imatrix"
    assert r.fields["imatrix.datasets"].types == [GGUFValueType.ARRAY, GGUFValueType.STRING]
    assert r.fields["imatrix.datasets"].contents() == ["calib.txt"]
    for k, v in (("imatrix.chunk_count", 3), ("imatrix.chunk_size", 128)):
        assert r.fields[k].types == [GGUFValueType.UINT32] and r.fields[k].contents() == v
    names = [t.name for t in r.tensors]
    assert names == [f"{n}{s}" for n in sorted(sums) for s in (".in_sum2", ".counts")]
    t = {x.name: x for x in r.tensors}
    assert all(x.tensor_type == GGMLQuantizationType.F32 for x in r.tensors)
    # ggml ne order, trailing 1s dropped as gguf.cpp writes ggml_n_dims() dimensions
    assert list(t["blk.0.attn_q.weight.in_sum2"].shape) == [64]
    assert list(t["blk.0.attn_q.weight.counts"].shape) == [1]
    assert list(t["blk.1.ffn_down_exps.weight.in_sum2"].shape) == [32, 3]
    assert list(t["blk.1.ffn_down_exps.weight.counts"].shape) == [1, 3]
    # raw sums and counts are stored, not the divided vector
    assert np.array_equal(np.asarray(t["blk.0.ffn_down.weight.in_sum2"].data), sums["blk.0.ffn_down.weight"])
    assert np.asarray(t["blk.1.ffn_down_exps.weight.counts"].data).ravel().tolist() == [700.0, 0.0, 13.0]


def test_gguf_from_gguf_writer_with_the_c_key_names(tmp_path):
    s = np.arange(1, 9, dtype=np.float32) * 10
    e = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = raw_gguf(tmp_path / "hand.gguf", {
        "blk.0.ffn_up.weight.in_sum2": s,
        "blk.0.ffn_up.weight.counts": np.array([2.5], np.float32),        # lround → 3
        "blk.2.ffn_gate_exps.weight.in_sum2": e,
        "blk.2.ffn_gate_exps.weight.counts": np.array([[4.0], [0.4], [1.0]], np.float32),  # 0.4 → 0
        "token_embd.weight": np.zeros((2, 8), np.float32),                  # not an imatrix tensor: ignored
    })
    imx = load(p)
    assert list(imx.entries) == ["blk.0.ffn_up.weight", "blk.2.ffn_gate_exps.weight"]
    assert np.array_equal(imx.entries["blk.0.ffn_up.weight"], s / np.float32(3))
    assert np.array_equal(imx.entries["blk.2.ffn_gate_exps.weight"],
                          np.concatenate([e[0] / np.float32(4), np.ones(4, np.float32), e[2]]))
    assert (imx.datasets, imx.chunk_count, imx.chunk_size) == (["calib.txt"], 3, 512)


def test_gguf_metadata_and_pairing_errors(tmp_path):
    pair = {"a.weight.in_sum2": np.ones(4, np.float32), "a.weight.counts": np.ones(1, np.float32)}
    no_size = {k: v for k, v in IMATRIX_KV.items() if k != "imatrix.chunk_size"}
    cases = {
        "nometa": (pair, no_size, "imatrix.chunk_size"),
        "model": ({"blk.0.attn_q.weight": np.ones((4, 4), np.float32)},
                  {"general.type": ("model", GGUFValueType.STRING, None)}, "not an imatrix"),
        "unpaired": ({"a.weight.in_sum2": np.ones(4, np.float32)}, IMATRIX_KV, "mismatched sums and counts"),
        "f16": ({"a.weight.in_sum2": np.ones(4, np.float32), "a.weight.counts": np.ones(1, np.float16)},
                IMATRIX_KV, "must be F32"),
        "i32meta": (pair, {**IMATRIX_KV, "imatrix.chunk_count": (3, GGUFValueType.INT32, None)}, "expected u32"),
        "ragged": ({"a.weight.in_sum2": np.ones(5, np.float32), "a.weight.counts": np.ones(2, np.float32)},
                   IMATRIX_KV, "not a multiple"),
    }
    for name, (tensors, kv, needle) in cases.items():
        p = raw_gguf(tmp_path / f"{name}.gguf", tensors, kv)
        with pytest.raises(ImatrixError) as ei:
            load(p)
        assert needle in one_line_error(p, ei), (name, str(ei.value))


# --------------------------------------------------------------------------------- legacy
def test_dat_round_trip_matches_quantize_cpp_arithmetic(tmp_path):
    sums, counts = stats()
    sums["blk.9.unused.weight"] = np.zeros(16, np.float32)
    counts["blk.9.unused.weight"] = 0                       # no data at all → not stored
    p = save_dat(tmp_path / "x.dat", sums, counts, ["first.txt", "calib.txt"], 5, 512)
    imx = load(p)
    assert (imx.format, imx.datasets, imx.chunk_count, imx.chunk_size) == ("dat", ["calib.txt"], 5, None)
    assert list(imx.entries) == sorted(n for n in sums if n != "blk.9.unused.weight")
    for name in imx.entries:
        c = np.atleast_1d(counts[name])
        ncall = math.ceil(c.max() / 512)                     # (max + chunk_size - 1) / chunk_size
        s = np.asarray(sums[name], np.float32).reshape(c.size, -1)
        cnt = np.where(c == 0, 1, c).astype(np.float32)[:, None]
        val = np.where(c[:, None] == 0, np.float32(1), s)
        stored = ((val / cnt) * np.float32(ncall)).astype(np.float32).ravel()   # what the file holds
        assert np.array_equal(imx.entries[name], stored / np.float32(ncall)), name
        np.testing.assert_allclose(imx.entries[name], quantize_cpp_gguf(sums[name], counts[name]), rtol=3e-7)


def test_dat_written_byte_by_byte(tmp_path):
    sums = {"b.weight": np.array([4.0, 8.0, 12.0], np.float32), "a.weight": np.array([1.0, 2.0], np.float32)}
    counts = {"b.weight": 600, "a.weight": 300}
    # chunk_size 512: ncall = ceil(600/512) = 2 and ceil(300/512) = 1; stored (sum/count)·ncall
    hand = legacy_bytes([(b"a.weight", 1, [1 / 300, 2 / 300]), (b"b.weight", 2, [4 / 600 * 2, 8 / 600 * 2, 12 / 600 * 2])],
                        struct.pack("<ii", 9, 9) + b"calib.txt")
    p = save_dat(tmp_path / "w.dat", sums, counts, ["calib.txt"], 9, 512)
    assert p.read_bytes() == hand
    imx = load(p)
    assert (imx.datasets, imx.chunk_count) == (["calib.txt"], 9)
    np.testing.assert_allclose(imx.entries["b.weight"], [4 / 600, 8 / 600, 12 / 600], rtol=1e-6)

    cases = {   # name → (bytes, {entry: expected vector}, chunk_count, datasets)
        "no_trailer": (legacy_bytes([(b"x", 4, [2.0, 6.0])]), {"x": [0.5, 1.5]}, 0, []),
        "count_only": (legacy_bytes([(b"x", 4, [2.0, 6.0])], struct.pack("<i", 11)), {"x": [0.5, 1.5]}, 11, []),
        "ncall_0": (legacy_bytes([(b"x", 0, [2.0, 6.0])], struct.pack("<ii", 1, 0)), {"x": [2.0, 6.0]}, 1, []),
        "ncall_neg": (legacy_bytes([(b"x", -3, [2.0, 6.0])]), {"x": [2.0, 6.0]}, 0, []),
        "c_string": (legacy_bytes([(b"x.weight\0junk", 2, [3.0])]), {"x.weight": [1.5]}, 0, []),
        "last_wins": (legacy_bytes([(b"x", 1, [1.0]), (b"x", 2, [4.0, 4.0])]), {"x": [2.0, 2.0]}, 0, []),
    }
    for name, (raw, want, cc, ds) in cases.items():
        q = tmp_path / f"{name}.dat"
        q.write_bytes(raw)
        imx = load(q)
        assert imx.format == "dat" and imx.chunk_count == cc and imx.datasets == ds, name
        assert {k: v.tolist() for k, v in imx.entries.items()} == want, name


# -------------------------------------------------------------------------- damaged files
def test_truncated_and_corrupt_files_raise_one_line(tmp_path):
    sums = {"blk.0.ffn_up.weight": np.arange(1, 9, dtype=np.float32),
            "blk.1.ffn_up_exps.weight": np.ones((2, 4), np.float32)}
    counts = {"blk.0.ffn_up.weight": 10, "blk.1.ffn_up_exps.weight": [3, 0]}
    g = save_gguf(tmp_path / "g.gguf", sums, counts, ["calib.txt"], 3, 512).read_bytes()
    d = save_dat(tmp_path / "d.dat", sums, counts, ["calib.txt"], 3, 512).read_bytes()
    entries_end = len(d) - 4 - 4 - len(b"calib.txt")
    # llama.cpp reads a legacy file that ends right after its entries or after the chunk count
    valid_dat_lengths = {entries_end, entries_end + 4, len(d)}
    t = tmp_path / "t"
    for raw, fmt, valid in ((g, "gguf", {len(g)}), (d, "dat", valid_dat_lengths)):
        for n in range(len(raw)):
            t.write_bytes(raw[:n])
            if n in valid:
                assert load(t).format == fmt
                continue
            with pytest.raises(ImatrixError) as ei:
                load(t)
            one_line_error(t, ei)
    garbage = {
        "empty": b"",
        "zero_entries": struct.pack("<i", 0),
        "negative_entries": struct.pack("<i", -5),
        "huge_name": struct.pack("<ii", 1, 1 << 30) + b"abc",
        "nval_0": legacy_bytes([(b"x", 1, [])]),
        "text": b"this is not an imatrix at all, just some text\n" * 3,
        "random": np.random.default_rng(3).bytes(400),
        "gguf_v1": b"GGUF" + struct.pack("<IQQ", 1, 0, 0),
        "gguf_big_endian": b"GGUF" + struct.pack(">IQQ", 3, 0, 0),
        "gguf_no_tensors": b"GGUF" + struct.pack("<IQQ", 3, 0, 0),
        "gguf_bad_key": g[:40] + b"\xff" * 8 + g[48:],                 # key bytes not UTF-8
        "gguf_huge_count": g[:16] + struct.pack("<Q", 1 << 60) + g[24:],  # n_kv far beyond the file
    }
    for name, raw in garbage.items():
        t = tmp_path / f"{name}.bin"
        t.write_bytes(raw)
        with pytest.raises(ImatrixError) as ei:
            load(t)
        one_line_error(t, ei)
    with pytest.raises(ImatrixError) as ei:
        load(tmp_path / "missing.gguf")
    one_line_error(tmp_path / "missing.gguf", ei)
    with pytest.raises(ImatrixError) as ei:
        load(tmp_path)
    one_line_error(tmp_path, ei)
    assert issubclass(ImatrixError, ValueError)


def test_nan_inf_and_negative_entries_are_rejected(tmp_path):
    def gguf_with(vals, count=1.0):
        return {"a.weight.in_sum2": np.array(vals, np.float32), "a.weight.counts": np.array([count], np.float32)}

    bad = {
        "nan.gguf": raw_gguf(tmp_path / "nan.gguf", gguf_with([1.0, np.nan])),
        "inf.gguf": raw_gguf(tmp_path / "inf.gguf", gguf_with([np.inf, 1.0])),
        "neg.gguf": raw_gguf(tmp_path / "neg.gguf", gguf_with([-1.0, 1.0])),
        "negcount.gguf": raw_gguf(tmp_path / "negcount.gguf", gguf_with([1.0, 1.0], -2.0)),
        "nancount.gguf": raw_gguf(tmp_path / "nancount.gguf", gguf_with([1.0, 1.0], np.nan)),
    }
    for name, raw in {"nan.dat": legacy_bytes([(b"a", 1, [np.nan, 1.0])]),
                      "inf.dat": legacy_bytes([(b"a", 1, [1.0, np.inf])]),
                      "neg.dat": legacy_bytes([(b"a", 2, [1.0, -4.0])])}.items():
        (tmp_path / name).write_bytes(raw)
        bad[name] = tmp_path / name
    for name, p in bad.items():
        with pytest.raises(ImatrixError) as ei:
            load(p)
        msg = one_line_error(p, ei)
        assert "'a" in msg and ("non-finite" in msg or "negative" in msg), (name, msg)
    # the writers refuse to produce such files
    with pytest.raises(ValueError):
        save_gguf(tmp_path / "w.gguf", {"a": np.array([np.nan], np.float32)}, {"a": 1}, ["x"], 1, 1)
    with pytest.raises(ValueError):
        save_gguf(tmp_path / "w.gguf", {"a": np.ones(2, np.float32)}, {"a": 1}, [], 1, 1)   # no dataset


# ------------------------------------------------------------------------------- matching
def test_weights_for_matching_rules_and_reasons(tmp_path):
    sums = {"encoder.layer.2.attention.self.query.weight": np.full(8, 2, np.float32),   # HF, with .weight
            "blk.3.ffn_down.weight": np.full(8, 3, np.float32),                          # llama.cpp GGUF name
            "plain": np.full(8, 4, np.float32),                                          # no .weight
            "both.weight": np.full(8, 5, np.float32), "both": np.full(8, 6, np.float32),
            "blk.0.ffn_down_exps.weight": np.arange(24, dtype=np.float32).reshape(3, 8)}  # 3 experts × 8
    counts = {k: 1 for k in sums}
    counts["blk.0.ffn_down_exps.weight"] = [1, 1, 1]
    imx = load(save_gguf(tmp_path / "m.gguf", sums, counts, ["x"], 1, 1))

    def val(name, cols=8, **kw):
        w, why = weights_for(imx, name, cols, **kw)
        assert (w is None) == (why is not None)
        return (None, why) if w is None else (float(w.ravel()[0]), w.shape)

    assert val("encoder.layer.2.attention.self.query.weight") == (2.0, (8,))      # 1: exact
    assert val("plain.weight") == (4.0, (8,))                                      # 2: + .weight
    assert val("encoder.layer.2.attention.self.query") == (2.0, (8,))             # 2: − .weight
    assert val("both") == (6.0, (8,)) and val("both.weight") == (5.0, (8,))       # exact wins
    assert val("blk.2.attn_q.weight") == (2.0, (8,))                              # 3: GGUF → HF (BERT)
    assert val("encoder.layer.3.output.dense.weight") == (3.0, (8,))              # 3: HF (BERT) → GGUF
    assert val("model.layers.3.mlp.down_proj.weight") == (3.0, (8,))              # 3: HF (LLaMA) → GGUF
    w, _ = weights_for(imx, "blk.2.attn_q.weight", 8)
    assert w.dtype == np.float32 and w.flags.c_contiguous
    for name in ("encoder.layer.2.attention.self.key.weight", "blk.4.ffn_down.weight", "nothing"):
        none, why = val(name)
        assert none is None and name in why and "no entry" in why
    assert val("blk.3.ffn_down.weight", cols=32) == (None, "imatrix has 8 columns, tensor has 32")
    # a 3-D (expert) entry: n_mat rows of cols, or a reason when asked for one matrix
    assert val("blk.0.ffn_down_exps.weight", n_mat=3) == (0.0, (3, 8))
    none, why = val("blk.0.ffn_down_exps.weight")
    assert none is None and why.startswith("imatrix has 24 columns, tensor has 8") and "3 expert" in why
    assert val("blk.0.ffn_down_exps.weight", n_mat=2)[1] == "imatrix has 24 values, tensor has 2 matrices × 8 columns"


# ------------------------------------------------------------------------- weighted metrics
def weighted_reference(x, y, w):
    x64, e = x.astype(np.float64), x.astype(np.float64) - y.astype(np.float64)
    w64 = w.astype(np.float64)[None, :]
    num = (w64 * e ** 2).sum()
    return num / (w64.sum() * x.shape[0]), num / (w64 * x64 ** 2).sum()


@pytest.mark.parametrize("shape", [(7, 96), (1, 5), (33, 384)])
def test_weighted_metrics_match_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    y = (x + rng.standard_normal(shape) * 0.05).astype(np.float32)
    w = rng.random(shape[1]).astype(np.float32) * 10
    got = weighted_metrics(x, y, w)
    assert tuple(got) == WEIGHTED_METRICS == ("wmse", "wnmse")
    wmse, wnmse = weighted_reference(x, y, w)
    assert got["wmse"] == pytest.approx(wmse, rel=1e-12) and got["wnmse"] == pytest.approx(wnmse, rel=1e-12)
    # w ≡ 1 reduces to mse / nmse; a constant scale of w changes nothing
    plain = tensor_metrics(x, y)
    ones = weighted_metrics(x, y, np.ones(shape[1], np.float32))
    assert ones["wmse"] == pytest.approx(plain["mse"], rel=1e-12)
    assert ones["wnmse"] == pytest.approx(plain["nmse"], rel=1e-12)
    scaled = weighted_metrics(x, y, w * 4)
    assert scaled["wmse"] == pytest.approx(got["wmse"], rel=1e-6) and scaled["wnmse"] == pytest.approx(got["wnmse"], rel=1e-6)
    assert weighted_metrics(x, y, w.astype(np.float64))["wmse"] == pytest.approx(wmse, rel=1e-12)


def test_weighted_metrics_edge_cases():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    y = x.copy()
    y[:, :8] += 1                          # errors only in columns 0..7
    w = np.zeros(16, np.float32)
    w[8:] = 1                              # …which carry no weight
    assert weighted_metrics(x, y, w) == {"wmse": 0.0, "wnmse": 0.0}
    w[0] = 2
    wmse, wnmse = weighted_reference(x, y, w)
    got = weighted_metrics(x, y, w)
    assert got["wmse"] == pytest.approx(wmse, rel=1e-12) == pytest.approx(2 * 4 / (4 * 10))
    assert got["wnmse"] == pytest.approx(wnmse, rel=1e-12)
    assert weighted_metrics(x, y, np.zeros(16, np.float32)) == {"wmse": 0.0, "wnmse": 0.0}   # all weights 0
    z = np.zeros((3, 8), np.float32)
    assert weighted_metrics(z, z, np.ones(8, np.float32)) == {"wmse": 0.0, "wnmse": 0.0}   # all-zero x, exact
    off = weighted_metrics(z, z + 0.5, np.ones(8, np.float32))                               # all-zero x, error
    assert off["wmse"] == pytest.approx(0.25) and off["wnmse"] == math.inf
    for bad in (np.ones(7, np.float32), -np.ones(8, np.float32), np.full(8, np.nan, np.float32)):
        with pytest.raises(ValueError):
            weighted_metrics(z, z, bad)


# ----------------------------------------------------------- the default model's imatrix
def test_committed_minilm_imatrix_covers_every_linear_weight(minilm, minilm_tensors):
    imx = load(MINILM_IMATRIX)
    assert imx.format == "gguf" and imx.datasets == [I.CALIBRATION_NAME]
    assert imx.chunk_size == 128 and imx.chunk_count >= 2
    linear = {n for n in minilm_tensors if n.startswith("encoder.layer.")}
    assert len(linear) == 36 and set(imx.entries) == linear
    for name, x in minilm_tensors.items():
        w, why = weights_for(imx, name, x.shape[1])
        if name in linear:
            assert why is None and w.shape == (x.shape[1],) and w.dtype == np.float32, name
            assert np.isfinite(w).all() and (w > 0).all() and w.max() > 3 * np.median(w), name
            # weighted error of a crude rounding is finite and of the order of the plain one
            y = np.round(x * 16) / 16
            m = weighted_metrics(x, y, w)
            assert 0 < m["wnmse"] < 10 * tensor_metrics(x, y)["nmse"]
        else:   # embedding tables and the pooler never see a matmul over activations
            assert w is None and "no entry" in why, name
    # Q, K and V multiply the same activations: identical importance
    for i in range(6):
        q = imx.entries[f"encoder.layer.{i}.attention.self.query.weight"]
        for k in ("key", "value"):
            assert np.array_equal(q, imx.entries[f"encoder.layer.{i}.attention.self.{k}.weight"])
    assert {v.size for v in imx.entries.values()} == {384, 1536}


def test_regenerating_the_minilm_imatrix_reproduces_the_committed_one(tmp_path, capsys):
    out = tmp_path / "regen.imatrix.gguf"
    assert I.main([str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    new, old = load(out), load(MINILM_IMATRIX)
    assert (new.chunk_count, new.chunk_size, new.datasets) == (old.chunk_count, old.chunk_size, old.datasets)
    assert list(new.entries) == list(old.entries)
    for k in old.entries:
        np.testing.assert_allclose(new.entries[k], old.entries[k], rtol=1e-4, atol=1e-7, err_msg=k)
    # counts = every token of every chunk (rows of activations = tokens), as llama-imatrix counts
    r = GGUFReader(out)
    n_tokens = new.chunk_count * new.chunk_size
    for t in r.tensors:
        if t.name.endswith(".counts"):
            assert np.asarray(t.data).tolist() == [float(n_tokens)]


def test_wordpiece_and_forward_pass_match_sentence_transformers():
    model = I.load_minilm()
    tok = model.tokenizer
    sentences = ["This is an example sentence", "Each sentence is converted.", "", "Café déjà vu — 東京"]
    # bert-base-uncased vocabulary ids, and the first dimensions of sentence-transformers'
    # normalized all-MiniLM-L6-v2 embeddings for these sentences (as recorded by a public test
    # suite that checks them against SentenceTransformers to 1e-6)
    ids = [[101, 2023, 2003, 2019, 2742, 6251, 102], [101, 2169, 6251, 2003, 4991, 1012, 102], [101, 102],
           [101, 7668, 2139, 3900, 24728, 1517, 1879, 1755, 102]]
    prefix = [[0.06765693, 0.06349593, 0.04871314, 0.07930495, 0.03744806, 0.00265273],
              [0.07853645, 0.08856265, -0.00209270, -0.00717247, -0.01252624, 0.01881747],
              [-0.11883835, 0.04829856, -0.00254805, -0.01101118, 0.05195070, 0.01029179],
              [0.05083271, 0.00967685, 0.09635572, -0.00997369, -0.01987603, 0.01692343]]
    assert [[tok.cls] + tok.encode(s) + [tok.sep] for s in sentences] == ids
    emb = I.minilm_embed(sentences, model)
    assert emb.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(emb[:, :6], prefix, atol=2e-5)


def test_forward_pass_sanity_similar_sentences_are_closer():
    e = I.minilm_embed(["A man is eating food.", "A man is eating a piece of bread.",
                        "The stock market fell sharply today.",
                        "The weather is lovely and sunny this morning.", "It is a bright, warm and sunny day."])
    cos = e @ e.T
    assert cos[0, 1] > 0.6 and cos[3, 4] > 0.6          # paraphrases
    assert cos[0, 2] < 0.2 and cos[1, 3] < 0.2          # unrelated
    assert min(cos[0, 1], cos[3, 4]) - max(cos[0, 2], cos[0, 3], cos[1, 2], cos[2, 4]) > 0.4


# ------------------------------------------------------ llama.cpp's own GGUF reader (ggml)
class _GGUFInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def test_llama_cpp_gguf_reader_parses_our_files(oracle, tmp_path):
    """gguf_init_from_file from libggml-base (the code common_imatrix_load calls) reads the
    committed imatrix and a save_gguf file with expert entries; the vectors computed from the
    bytes at its offsets, with quantize.cpp's arithmetic, equal load()'s."""
    lib = ctypes.CDLL(oracle.library_path())
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, _GGUFInitParams]
    for f, res, args in (("gguf_free", None, [ctypes.c_void_p]),
                         ("gguf_get_n_tensors", ctypes.c_int64, [ctypes.c_void_p]),
                         ("gguf_get_tensor_name", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
                         ("gguf_get_tensor_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
                         ("gguf_get_tensor_offset", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
                         ("gguf_get_tensor_ne", ctypes.POINTER(ctypes.c_int64), [ctypes.c_void_p, ctypes.c_int64]),
                         ("gguf_get_data_offset", ctypes.c_size_t, [ctypes.c_void_p]),
                         ("gguf_find_key", ctypes.c_int64, [ctypes.c_void_p, ctypes.c_char_p]),
                         ("gguf_get_kv_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
                         ("gguf_get_arr_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
                         ("gguf_get_arr_n", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
                         ("gguf_get_arr_str", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t]),
                         ("gguf_get_val_u32", ctypes.c_uint32, [ctypes.c_void_p, ctypes.c_int64]),
                         ("gguf_get_val_str", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64])):
        getattr(lib, f).restype, getattr(lib, f).argtypes = res, args
    sums, counts = stats()
    files = [MINILM_IMATRIX, save_gguf(tmp_path / "e.gguf", sums, counts, ["calib.txt"], 3, 512)]
    for path in files:
        ours = load(path)
        ctx = lib.gguf_init_from_file(str(path).encode(), _GGUFInitParams(True, None))
        assert ctx, f"llama.cpp cannot parse {path}"
        try:
            key = lambda k: lib.gguf_find_key(ctx, k.encode())   # noqa: E731
            assert lib.gguf_get_val_str(ctx, key("general.type")) == b"imatrix"
            kd = key("imatrix.datasets")
            assert (lib.gguf_get_kv_type(ctx, kd), lib.gguf_get_arr_type(ctx, kd)) == (9, 8)   # array of string
            assert [lib.gguf_get_arr_str(ctx, kd, i).decode() for i in range(lib.gguf_get_arr_n(ctx, kd))] == ours.datasets
            for k, v in (("imatrix.chunk_count", ours.chunk_count), ("imatrix.chunk_size", ours.chunk_size)):
                assert lib.gguf_get_kv_type(ctx, key(k)) == 4 and lib.gguf_get_val_u32(ctx, key(k)) == v
            raw, base = path.read_bytes(), lib.gguf_get_data_offset(ctx)
            tensors = {}
            for i in range(lib.gguf_get_n_tensors(ctx)):
                assert lib.gguf_get_tensor_type(ctx, i) == 0                          # F32
                ne = lib.gguf_get_tensor_ne(ctx, i)
                n = ne[0] * ne[1] * ne[2] * ne[3]
                tensors[lib.gguf_get_tensor_name(ctx, i).decode()] = np.frombuffer(
                    raw, "<f4", n, base + lib.gguf_get_tensor_offset(ctx, i))
            assert len(tensors) == 2 * len(ours.entries)
            for name, vec in ours.entries.items():
                c = np.trunc(tensors[name + ".counts"].astype(np.float64) + 0.5).astype(np.int64)   # lround
                assert np.array_equal(vec, quantize_cpp_gguf(tensors[name + ".in_sum2"], c)), name
        finally:
            lib.gguf_free(ctx)


def test_minilm_statistics_are_llama_imatrix_accumulation_of_the_linear_inputs():
    """compute_minilm's sums are, for every Linear weight, the float32 row-by-row sum of the
    squared input activations (one row per token), and its counts the number of rows."""
    model = I.load_minilm()
    tok = model.tokenizer
    ids = tok.encode(I.CALIBRATION_TEXT)[:126]
    seen: dict[str, np.ndarray] = {}
    I.bert_forward(model, [tok.cls] + ids + [tok.sep], lambda name, x: seen.setdefault(name, x.copy()))
    sums, counts, n = I.compute_minilm(max_chunks=1, model=model)
    assert n == 1 and set(sums) == set(seen) and len(seen) == 36
    for name, x in seen.items():
        w = model.params[name]
        assert x.shape == (128, w.shape[1]) and counts[name] == 128, name
        acc = np.zeros(x.shape[1], np.float32)
        for row in x:                                  # acc[j] += x[j] * x[j], in float32
            acc = (acc + row * row).astype(np.float32)
        assert np.array_equal(sums[name], acc), name
