"""The bad-input catalogue: every case runs the real command line (``workbench.cli.main``, in
process: tiny inputs, no interpreter start per case) and asserts the documented exit code, one
line on stderr without a traceback, and a store that is byte-identical afterwards (or holds
exactly the rows expected). Signals run the command in a subprocess.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workbench import cli
from workbench import store as st
from workbench.formats import default_grid

FORMATS = "Q8_0,Q4s32"
EXIT = {"ok": cli.EXIT_OK, "input": cli.EXIT_INPUT, "store": cli.EXIT_STORE}


# ------------------------------------------------------------------------------ helpers
def tiny(seed: int = 0, rows: int = 4, cols: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def good_header(a: np.ndarray, b: np.ndarray) -> tuple[dict, bytes]:
    na, nb = a.nbytes, b.nbytes
    return ({"a.weight": {"dtype": "F32", "shape": list(a.shape), "data_offsets": [0, na]},
             "b.weight": {"dtype": "F32", "shape": list(b.shape), "data_offsets": [na, na + nb]}},
            a.tobytes() + b.tobytes())


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert "Traceback" not in err and "File \"" not in err
    return lines[0]


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> Path:
    """A store holding one real sweep of a tiny model: what every case must leave as it was."""
    root = tmp_path_factory.mktemp("catalogue")
    model = root / "tiny.safetensors"
    header, data = good_header(tiny(0), tiny(1, 2, 96))
    model.write_bytes(safetensors_bytes(header, data))
    store = root / "store"
    assert cli.main(["sweep", "--model", str(model), "--formats", FORMATS, "--store", str(store)]) == 0
    return store


@pytest.fixture
def store(base_store, tmp_path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(base_store, copy)
    return copy


# ------------------------------------------------------------------ model files (sweep)
def _st_case(mutate):
    def make(d: Path) -> Path:
        a, b = tiny(2), tiny(3, 2, 96)
        header, data = good_header(a, b)
        blob = mutate(header, data)
        p = d / "bad.safetensors"
        p.write_bytes(blob if isinstance(blob, bytes) else safetensors_bytes(*blob))
        return p
    return make


def _set(entry, field, value):
    def mutate(h, data):
        h[entry][field] = value
        return h, data
    return mutate


def _npz_bad_crc(d: Path) -> Path:
    p = d / "bad.npz"
    np.savez(p, a=tiny(4), b=tiny(5))
    raw = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as z:
        info = z.getinfo("b.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    raw[start] ^= 0xFF                          # a flipped byte inside the second member's data
    p.write_bytes(bytes(raw))
    return p


def _npz_short_member(d: Path) -> Path:
    p = d / "short.npz"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (64, 64)})
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a.npy", buf.getvalue() + tiny(6).tobytes())     # says 16 KiB, holds 1 KiB
    return p


def _npy_truncated(d: Path) -> Path:
    p = d / "w.npy"
    np.save(p, tiny(7, 64, 64))
    p.write_bytes(p.read_bytes()[:1000])
    return p


def _write(name: str, data: bytes):
    def make(d: Path) -> Path:
        p = d / name
        p.write_bytes(data)
        return p
    return make


def _shards_with_one_name(d: Path) -> Path:
    folder = d / "sharded"
    folder.mkdir()
    for i in (1, 2):
        h = {"w.weight": {"dtype": "F32", "shape": [4, 64], "data_offsets": [0, 1024]}}
        (folder / f"model-0000{i}.safetensors").write_bytes(safetensors_bytes(h, tiny(i).tobytes()))
    return folder


def _empty_dir(d: Path) -> Path:
    (d / "nothing").mkdir()
    return d / "nothing"


MODEL_CASES = {
    "safetensors truncated data": (_st_case(lambda h, data: safetensors_bytes(h, data)[:-100]), "truncated"),
    "header length beyond the file": (_st_case(lambda h, data: struct.pack("<Q", 10**6) + b"{}"), "truncated"),
    "header not JSON": (_st_case(lambda h, data: struct.pack("<Q", 5) + b"{oops"), "not valid JSON"),
    "header JSON but not an object": (_st_case(lambda h, data: (["a", 1], data)), "not an object"),
    "entry without data_offsets": (_st_case(lambda h, data: ({"a.weight": {"dtype": "F32", "shape": [4, 64]}}, data)),
                                   "needs dtype, shape and data_offsets"),
    "negative data_offsets": (_st_case(_set("a.weight", "data_offsets", [-64, 0])), "not 0 <= begin <= end"),
    "overlapping data_offsets": (_st_case(_set("b.weight", "data_offsets", [512, 512 + 768])), "overlap"),
    "overlap with matching sizes": (_st_case(lambda h, data: (
        {"a.weight": {"dtype": "F32", "shape": [4, 64], "data_offsets": [0, 1024]},
         "b.weight": {"dtype": "F32", "shape": [4, 64], "data_offsets": [512, 1536]}}, data[:1536])), "overlap"),
    "data_offsets as strings": (_st_case(_set("a.weight", "data_offsets", ["0", "1024"])), "two integers"),
    "data_offsets as floats": (_st_case(_set("a.weight", "data_offsets", [0.0, 1024.0])), "two integers"),
    "shape with a negative size": (_st_case(_set("a.weight", "shape", [-2, 8])), "non-negative integers"),
    "2^32 x 2^32 shape in 0 bytes": (_st_case(lambda h, data: (
        {**h, "huge": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [1792, 1792]}}, data)),
        "does not match shape"),
    "unknown dtype": (_st_case(_set("a.weight", "dtype", "F7")), "unknown dtype"),
    "dtype not a string": (_st_case(_set("a.weight", "dtype", 32)), "dtype must be a string"),
    "byte range does not match shape": (_st_case(_set("a.weight", "shape", [4, 65])), "does not match shape"),
    "bytes no tensor owns": (_st_case(lambda h, data: (h, data + b"\0" * 64)), "cover"),
    "__metadata__ not a string map": (_st_case(lambda h, data: ({**h, "__metadata__": {"k": 1}}, data)),
                                      "__metadata__"),
    "0-byte safetensors": (_write("empty.safetensors", b""), "not a safetensors file"),
    "npz with a bad CRC in its second member": (_npz_bad_crc, "bad.npz"),
    "npz that is not a zip": (_write("junk.npz", b"PK\x03\x04 not really a zip"), "cannot read numpy file"),
    "npz member shorter than its header says": (_npz_short_member, "the member holds"),
    "npy truncated": (_npy_truncated, "cannot read numpy file"),
    "gguf garbage": (_write("junk.gguf", b"GGUF" + b"\xff" * 64), "cannot read GGUF"),
    "unknown file type": (_write("weights.bin", b"\0" * 16), "unknown model file type"),
    "no such file": (lambda d: d / "missing.safetensors", "no such file"),
    "two shards with one tensor name": (_shards_with_one_name, "is in two shards"),
    "folder without safetensors": (_empty_dir, "holds no *.safetensors"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_file(case, store, tmp_path, capsys):
    make, expect = MODEL_CASES[case]
    path = make(tmp_path)
    before = snapshot(store)
    code, _out, err = run_cli(capsys, "sweep", "--model", path, "--formats", FORMATS, "--store", store)
    line = one_line(err)
    assert code == EXIT["input"], line
    assert line.startswith("workbench sweep: error:") and expect in line, line
    assert snapshot(store) == before


# ------------------------------------------------------------------ names, regexes, arguments
ARG_CASES = {
    "bits out of range": (["sweep", "--formats", "Q9s32"], "bits must be 1..8"),
    "20-digit block size": (["sweep", "--formats", "Q4s" + "9" * 20], "block"),
    "unknown format": (["sweep", "--formats", "bogus"], "bogus"),
    "unknown suffix": (["sweep", "--formats", "Q4s32_f17"], "unknown suffix"),
    "tensor regex does not compile": (["sweep", "--tensors", "("], "invalid regular expression"),
    "tensor regex matches nothing": (["sweep", "--tensors", "^nothing$"], "matches"),
    "imatrix file missing": (["sweep", "--imatrix", "/nonexistent/x.gguf"], "x.gguf"),
    "imatrix file garbage": (["sweep", "--imatrix", "@garbage.dat"], "garbage.dat"),
    "export regex does not compile": (["export", "@out.parquet", "--formats", "("], "invalid regular expression"),
    "export tensor regex does not compile": (["export", "@out.parquet", "--tensors", "[a"], "invalid regular expression"),
    "shape 0x0": (["formats", "small", "--shape", "0x0"], "positive sizes"),
    "shape not a shape": (["formats", "small", "--shape", "abc"], "ROWSxCOLS"),
    "grid name unknown": (["formats", "nosuchgrid"], "nosuchgrid"),
}


@pytest.mark.parametrize("case", list(ARG_CASES))
def test_bad_argument(case, store, tmp_path, capsys):
    argv, expect = ARG_CASES[case]
    (tmp_path / "garbage.dat").write_bytes(b"\x01\x02garbage")
    argv = [a.replace("@", str(tmp_path) + "/") if a.startswith("@") else a for a in argv]
    if argv[0] in ("sweep", "export"):
        argv += ["--store", str(store)]
        if argv[0] == "sweep" and "--formats" not in argv:
            argv += ["--formats", FORMATS]
    before = snapshot(store)
    code, _out, err = run_cli(capsys, *argv)
    line = one_line(err)
    assert code == EXIT["input"] and expect in line, line
    assert snapshot(store) == before
    assert not (tmp_path / "out.parquet").exists()


# ------------------------------------------------------------------------------- imports
def exported(store: Path, tmp_path: Path) -> pa.Table:
    out = tmp_path / "mine.parquet"
    st.export(store, out)
    return pq.read_table(out)


def _col(name, values_fn):
    def mutate(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index(name)
        return t.set_column(i, name, values_fn(t))
    return mutate


def _first(name, value, typ=None):
    def values(t):
        v = t.column(name).to_pylist()
        v[0] = value
        return pa.array(v, typ or t.schema.field(name).type)
    return _col(name, values)


IMPORT_CASES = {
    "bpw as a string": (_col("bpw", lambda t: pa.array([str(v) for v in t.column("bpw").to_pylist()])),
                        "column 'bpw' has type string"),
    "schema_version as a string": (_col("schema_version", lambda t: pa.array(["2"] * t.num_rows)),
                                   "column 'schema_version' has type string"),
    "schema_version -7": (_first("schema_version", -7), "not a known version"),
    "schema_version from the future": (_first("schema_version", 99), "newer than this workbench"),
    "bpw infinite": (_first("bpw", float("inf")), "bpw must be finite"),
    "bpw zero": (_first("bpw", 0.0), "bpw must be finite and > 0"),
    "mse negative": (_first("mse", -1.0), "mse must be finite and >= 0"),
    "nmse NaN": (_first("nmse", float("nan")), "nmse must be finite"),
    "cosine 7": (_first("cosine", 7.0), "cosine out of range"),
    "family contradicts the name": (_first("family", "codebook"), "column family is 'codebook', the name implies"),
    "bits contradict the name": (_first("bits", 3), "column bits is 3"),
    "bpw contradicts name and shape": (_first("bpw", 8.0), "the file says 8.0"),
    "nbytes contradict name and shape": (_first("nbytes", 12), "the file says 12"),
    "not a canonical name": (_first("format", "Q4s32_f16"), "not a canonical format name"),
    "unknown format name": (_first("format", "Q4x32"), "not a format name"),
    "empty tensor name": (_first("tensor", ""), "column 'tensor' has 1 empty values"),
    "model id with a slash": (_first("model", "../escape"), "invalid model id"),
    "rows x cols is not numel": (_first("rows", 5, pa.int64()), "rows × cols must equal numel"),
    "missing columns": (lambda t: t.drop_columns(["nmse", "bpw"]), "missing columns: bpw, nmse"),
}


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_bad_import(case, store, tmp_path, capsys):
    mutate, expect = IMPORT_CASES[case]
    bad = tmp_path / "theirs.parquet"
    pq.write_table(mutate(exported(store, tmp_path)), bad)
    before = snapshot(store)
    code, _out, err = run_cli(capsys, "import", bad, "--store", store)
    line = one_line(err)
    assert code == EXIT["input"] and expect in line, line
    assert snapshot(store) == before


@pytest.mark.parametrize("blob", [b"", b"PAR1", b"not parquet at all", b"PAR1" + b"\0" * 100 + b"PAR1"])
def test_garbage_import(blob, store, tmp_path, capsys):
    bad = tmp_path / "theirs.parquet"
    bad.write_bytes(blob)
    before = snapshot(store)
    code, _out, err = run_cli(capsys, "import", bad, "--store", store)
    assert code == EXIT["input"] and "not a readable Parquet file" in one_line(err)
    assert snapshot(store) == before


# ------------------------------------------------------------------------- store damage
def _damage(store: Path, kind: str) -> Path:
    folder = next(store.glob("model=*/table=results"))
    victim = sorted(folder.glob("*.parquet"))[0]
    if kind == "truncated":
        bad = folder / "truncated.parquet"
        bad.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    elif kind == "empty":
        bad = folder / "empty.parquet"
        bad.write_bytes(b"")
    else:  # foreign: a Parquet file of someone else's
        bad = folder / "foreign.parquet"
        pq.write_table(pa.table({"x": [1, 2, 3]}), bad)
    return bad


@pytest.mark.parametrize("kind", ["truncated", "empty", "foreign"])
def test_damaged_store_file_is_skipped_by_export(kind, store, tmp_path, capsys):
    rows = len(st.results(store))
    bad = _damage(store, kind)
    before = snapshot(store)
    code, out, err = run_cli(capsys, "export", tmp_path / "all.parquet", "--store", store)
    line = one_line(err)
    assert code == EXIT["ok"] and "skipped store file" in line and bad.name in line, line
    assert f"wrote {rows} rows" in out and pq.read_table(tmp_path / "all.parquet").num_rows == rows
    assert snapshot(store) == before


@pytest.mark.parametrize("kind", ["truncated", "empty"])
def test_damaged_store_file_does_not_stop_import(kind, base_store, tmp_path, capsys):
    theirs = tmp_path / "theirs.parquet"
    st.export(base_store, theirs)
    target = tmp_path / "target"
    target.mkdir()
    shutil.copytree(base_store / "model=tiny", target / "model=tiny")
    (target / "model=tiny" / "table=results").joinpath("a.parquet")  # keep layout
    for f in (target / "model=tiny" / "table=results").glob("*.parquet"):
        f.unlink()                                    # nothing of theirs stored yet
    (target / "model=tiny" / "table=results" / "x.parquet").write_bytes(b"" if kind == "empty" else b"PAR1xx")
    code, out, err = run_cli(capsys, "import", theirs, "--store", target)
    assert code == EXIT["ok"] and "skipped store file" in one_line(err)
    n = pq.read_metadata(theirs).num_rows
    assert f"imported {n} rows; 0 already present" in out
    assert len(st.results(target)) == n


def test_store_check_reports_and_repair_quarantines(store, capsys):
    rows = st.results(store)
    bad = _damage(store, "truncated")
    damaged = bad.read_bytes()
    before = snapshot(store)
    code, out, err = run_cli(capsys, "store", "check", "--store", store)
    assert code == EXIT["store"] and "unreadable" in out and bad.name in out and err == ""
    assert snapshot(store) == before                      # a check changes nothing
    code, out, _ = run_cli(capsys, "store", "check", "--repair", "--store", store)
    assert code == EXIT["ok"] and "moved 1 files" in out
    moved = list((store / "quarantine").rglob(bad.name))
    assert len(moved) == 1 and moved[0].read_bytes() == damaged          # moved aside, not deleted
    assert not bad.exists()
    pd.testing.assert_frame_equal(st.results(store), rows)
    assert run_cli(capsys, "store", "check", "--store", store)[0] == EXIT["ok"]


def test_store_check_on_a_missing_store(tmp_path, capsys):
    code, _out, err = run_cli(capsys, "store", "check", "--store", tmp_path / "nope")
    assert code == EXIT["input"] and "no such store folder" in one_line(err)
    assert not (tmp_path / "nope").exists()


# ------------------------------------------------------------------------------- values
def test_huge_weights_give_finite_metrics_or_a_listed_skip(tmp_path, capsys):
    """Weights near 1e37: float64 sums keep every metric finite; formats whose f16 scale
    overflows cannot represent the tensor and are listed as skipped, not stored as NaN."""
    a = (tiny(8) * 1e37).astype(np.float32)
    header, data = good_header(a, tiny(9, 2, 96))
    model = tmp_path / "huge.safetensors"
    model.write_bytes(safetensors_bytes(header, data))
    store = tmp_path / "store"
    code, out, _ = run_cli(capsys, "sweep", "--model", model, "--formats", "Q8_0,Q4s32,Q4s32_bf16,Q4s32_e4m3",
                           "--store", store)
    assert code == EXIT["ok"], out
    df = st.results(store)
    huge = df[df["tensor"] == "a.weight"].set_index("format")
    assert set(huge.index) == {"Q4s32", "Q4s32_bf16", "Q4s32_e4m3"}
    assert np.isfinite(huge[["mse", "nmse", "sqnr_db", "cosine", "max_abs_err"]].to_numpy()).all()
    assert (huge.loc[["Q4s32_bf16", "Q4s32_e4m3"], "nmse"] < 0.05).all()
    assert huge.loc["Q4s32", "nmse"] == pytest.approx(1, abs=1e-3)   # our f16 scale saturates at 65504
    skips = st.skips(store)
    skipped = skips[skips["tensor"] == "a.weight"]
    assert skipped["format"].tolist() == ["Q8_0"]                   # llama.cpp's f16 scale is +inf
    assert "cannot represent this tensor" in skipped["reason"].iloc[0]
    # and the store's own export imports back
    st.export(store, tmp_path / "e.parquet")
    assert st.import_file(tmp_path / "e.parquet", tmp_path / "other")[0] == len(df)


# ------------------------------------------------------------------------------ signals
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_sweep_exits_130_with_one_line_and_whole_rows(sig, tmp_path):
    store = tmp_path / "store"
    env = dict(os.environ, WORKBENCH_FLUSH_SECONDS="0")
    p = subprocess.Popen([sys.executable, "-m", "workbench", "sweep", "--formats", "default",
                          "--tensors", r"layer\.[0-2]\.", "--store", str(store)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(store.glob("model=*/table=results/*.parquet")):
        time.sleep(0.05)
    p.send_signal(sig)
    _out, err = p.communicate(timeout=120)
    lines = [ln for ln in err.replace("\r", "\n").splitlines()
             if ln.strip() and not ln.startswith(("sweep ", "loading kernels", "compiling kernels"))]  # bars
    assert p.returncode == cli.EXIT_INTERRUPTED, err[-500:]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err
    df = st.results(store)
    assert 0 < len(df) < 18 * len(default_grid()) and not df.duplicated(list(st.NATURAL_KEY)).any()
    assert not list(store.rglob("*.tmp"))


def test_a_tensor_that_fails_when_read_is_listed_as_skipped(tmp_path, monkeypatch, capsys):
    """Damage only found when the bytes are read (an I/O error on a mapped file) skips that
    tensor with the reason; the healthy tensor is measured."""
    from workbench import sources
    header, data = good_header(tiny(10), tiny(11, 2, 96))
    model = tmp_path / "m.safetensors"
    model.write_bytes(safetensors_bytes(header, data))
    real = sources.TensorInfo.load

    def load(self):
        if self.name == "b.weight":
            raise OSError(5, "Input/output error")
        return real(self)
    monkeypatch.setattr(sources.TensorInfo, "load", load)
    store = tmp_path / "store"
    code, out, _ = run_cli(capsys, "sweep", "--model", model, "--formats", FORMATS, "--store", store)
    assert code == EXIT["ok"] and "skipped     2 × tensor cannot be read" in out
    assert set(st.results(store)["tensor"]) == {"a.weight"}
    sk = st.skips(store)
    assert sorted(sk.loc[sk["tensor"] == "b.weight", "format"]) == ["Q4s32", "Q8_0"]
    assert sk.loc[sk["tensor"] == "b.weight", "reason"].str.contains("Input/output error").all()


def test_a_file_name_duckdb_would_glob_is_refused(store, tmp_path, capsys):
    theirs = tmp_path / "r*.parquet"
    st.export(store, theirs)
    st.export(store, tmp_path / "r1.parquet")          # what the glob would also read
    before = snapshot(store)
    code, _out, err = run_cli(capsys, "import", theirs, "--store", store)
    assert code == EXIT["input"] and "cannot be read without globbing" in one_line(err)
    assert snapshot(store) == before


def test_a_store_file_naming_another_model_is_foreign(store, tmp_path, capsys):
    folder = next(store.glob("model=*/table=results"))
    n = len(st.results(store))
    t = pq.read_table(sorted(folder.glob("*.parquet"))[0])
    pq.write_table(t.set_column(t.schema.get_field_index("model"), "model",
                                pa.array(["other"] * t.num_rows)), folder / "elsewhere.parquet")
    before = snapshot(store)
    code, out, _ = run_cli(capsys, "store", "check", "--store", store)
    assert code == EXIT["store"] and "foreign" in out and "elsewhere.parquet" in out
    assert snapshot(store) == before
    assert len(st.results(store)) == n                      # queries leave it out ...
    assert "elsewhere.parquet" in st.skipped_note(store)     # ... and say so


def test_a_signal_during_a_write_leaves_no_unfinished_file(store, monkeypatch):
    """SIGTERM/Ctrl-C arrive as KeyboardInterrupt wherever the writer is, mid-file included."""
    real = pq.write_table

    def interrupted(table, where, **kw):
        real(table, where, **kw)            # the temporary file exists ...
        raise KeyboardInterrupt             # ... when the signal lands
    monkeypatch.setattr(pq, "write_table", interrupted)
    before = snapshot(store)
    rows = st.results(store).assign(tensor="new.weight")
    with pytest.raises(KeyboardInterrupt):
        st.write_new(store, rows)
    assert snapshot(store) == before and not list(store.rglob("*.tmp"))
