"""Format specs: one model for every family, named by a canonical string that parses back.

Names (public: they appear in shared Parquet files)

* llama.cpp types keep llama.cpp's names: ``Q4_0``, ``Q4_1``, ``Q5_0``, ``Q5_1``, ``Q8_0``,
  ``Q2_K`` … ``Q6_K``, ``IQ4_NL``, ``IQ4_XS``, ``MXFP4``, ``NVFP4``.
* uniform single: ``Q{bits}{s|a}{block}[_{suffix}...]``, e.g. ``Q4s32`` (f16 scale),
  ``Q4s16_e4m3``, ``Q3a64_bf16``.
* uniform double: ``Q({b}{s|a}{block})xQ({b2}{s|a}{blocks_per_super})[_{suffix}...]``, e.g.
  ``Q(4a16)xQ(6s16)_e4m3`` (the hyper-quantization seed's naming).

Suffixes, in this canonical order — the single place where they are documented:

===========  ==========================================================================
``_<enc>``   scale encoding: ``f32, bf16, e4m3, e5m2, e8m0`` (``f16``, the default, is
             omitted; ``fp8`` is accepted as an alias of ``e4m3``). In double formats it is
             the encoding of the super-scales; the block scales are ``b2``-bit integers.
``_rmse``    scale chosen by an RMSE search over 19 candidate scales (as llama.cpp's
             ``make_qx_quants``), each judged after storage rounding. Default: absmax.
``_hqq``     asymmetric formats: the min of each group optimised by HQQ's half-quadratic
             solver (mobiusml/hqq: minimise sum |error|^0.7, beta 10, at most 20 steps,
             the scale fixed at (max - min) / (2^b - 1) as decoded; ``kernels.uniform._hqq_min``),
             at every level as ``_rmse``. Needs a min stored as a value: not with e8m0
             single-level formats (their min is an integer zero-point).
``_naive``   the seed's order: codes computed from the unrounded f32 scale (and min)
             instead of the scale as it will be decoded, at every level — in double
             formats both the element codes (from the unrounded block scales) and the
             b2-bit codes of the scale/min vectors (from the unrounded super-scale). It
             reproduces the seed's reconstructions bit for bit (tests/test_seed_fidelity.py;
             docs/seed-fidelity.md). For comparison only: it is never better.
``_nonorm``  fp8 encodings (e4m3, e5m2) without the per-tensor f32 normalizer. Without it
             typical block scales (1e-4..1e-2) fall into e4m3's subnormals and lose bits.
===========  ==========================================================================

Row-length policy. Blocks run along rows. When the block (single) or super-block (double) does
not divide a row, the row ends with a short unit: a shorter last block with its own scale, or a
super-block of fewer blocks; its bitstreams are padded to a whole byte, and those bytes count
in bpw. No padding weights are invented, and the store records ``row_tail`` (the short unit's
length) for the tensor. llama.cpp types follow llama-quantize: a row their block does not divide is
written in llama.cpp's fallback type (Q4_K → Q5_0, Q6_K → Q8_0, IQ4_XS → IQ4_NL …, F16 when
nothing fits; :func:`ggml_plan`), and the store records the type actually written
(``applied_type``) and why; NVFP4, which llama-quantize cannot fall back from, is skipped and
listed with the reason.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from workbench.kernels.encodings import ENCODINGS

from workbench.families import PLUGINS  # noqa: E402  (the registry: names only, no imports)

FAMILIES = ("ggml", "uniform", *PLUGINS)
SEARCHES = ("absmax", "rmse", "hqq")      # kernels.uniform's ABSMAX, RMSE, HQQ, in this order
ENCODING_ALIASES = {"fp8": "e4m3"}
DEFAULT_SCALE = "f16"
OPTION_ORDER = ("rmse", "hqq", "naive", "nonorm")


# llama.cpp's types: the one table (structs, sizes, fallbacks, imatrix use, scale granularity)
from workbench.kernels.ggml_types import F16, GGML_TYPES, GgmlType  # noqa: E402,F401


def ggml_plan(type_name: str, cols: int) -> tuple[str | None, str | None]:
    """The llama.cpp type llama-quantize writes for a row of ``cols`` when asked for
    ``type_name``, and why it differs (None when it does not); (None, reason) when llama-quantize
    refuses the tensor."""
    t = GGML_TYPES[type_name]
    if cols % t.block == 0:
        return type_name, None
    why = f"row length {cols} is not a multiple of {type_name}'s block of {t.block}"
    if t.fallback is None:
        if t.block <= 32:
            return "F16", f"{why}; llama-quantize writes F16"
        return None, f"{why}; llama-quantize has no fallback for {type_name}"
    fb = GGML_TYPES[t.fallback]
    if cols % fb.block:
        return "F16", f"{why}, nor of {fb.name}'s {fb.block}; llama-quantize writes F16"
    return fb.name, f"{why}; llama-quantize falls back to {fb.name}"


class FormatError(ValueError):
    """A format name or spec that is not valid; the message is one line for the user."""


@dataclass(frozen=True)
class FormatSpec:
    family: str
    bits: int
    block: int
    symmetric: bool
    scale: str = DEFAULT_SCALE
    super_bits: int | None = None
    super_symmetric: bool | None = None
    super_block: int | None = None       # blocks per super-block (double quantization)
    search: str = "absmax"
    normalizer: bool = True              # only meaningful for fp8 encodings
    naive: bool = False
    ggml_type: str | None = None
    code: str | None = None              # the codebook family's element code (NF4, AF4 …)

    def __post_init__(self):
        validate(self)

    # ------------------------------------------------------------------ naming
    @property
    def double(self) -> bool:
        return self.super_bits is not None

    @property
    def name(self) -> str:
        if self.family == "ggml":
            return self.ggml_type
        if (p := _plugin(self.family)) is not None:
            return p.name(self)
        sa = "s" if self.symmetric else "a"
        if self.double:
            s2 = "s" if self.super_symmetric else "a"
            base = f"Q({self.bits}{sa}{self.block})xQ({self.super_bits}{s2}{self.super_block})"
        else:
            base = f"Q{self.bits}{sa}{self.block}"
        parts = [base]
        if self.scale != DEFAULT_SCALE:
            parts.append(self.scale)
        if self.search != "absmax":
            parts.append(self.search)
        if self.naive:
            parts.append("naive")
        if not self.normalizer:
            parts.append("nonorm")
        return "_".join(parts)

    def __str__(self) -> str:
        return self.name

    # ------------------------------------------------------------------ layout
    @property
    def uses_normalizer(self) -> bool:
        if (p := _plugin(self.family)) is not None:
            return p.uses_normalizer(self)
        return self.family == "uniform" and self.normalizer and ENCODINGS[self.scale].needs_normalizer

    @property
    def unit(self) -> int:
        """Weights per self-contained unit: a block, or a super-block for double formats."""
        if (p := _plugin(self.family)) is not None:
            return p.unit(self)
        return self.block * (self.super_block or 1)

    def _param_bytes(self, symmetric: bool) -> int:
        """Bytes of one group's (scale[, min]) in the scale encoding; an unsigned encoding
        (e8m0) cannot hold a signed min, so asymmetric groups store a uint8 zero-point."""
        enc = ENCODINGS[self.scale]
        nbytes = enc.bits // 8
        if symmetric:
            return nbytes
        return nbytes + (nbytes if enc.signed else 1)

    def _unit_bytes(self, n: int) -> int:
        """Bytes of a unit holding n weights (n < unit only for a row's short last unit)."""
        if self.family == "ggml":
            return GGML_TYPES[self.ggml_type].block_bytes
        if (p := _plugin(self.family)) is not None:
            return p.unit_bytes(self, n)
        codes = -(-self.bits * n // 8)
        if not self.double:
            return self._param_bytes(self.symmetric) + codes
        # one level-2 group per quantized vector: block scales, and block mins if asymmetric
        nblocks = -(-n // self.block)
        per_vector = self._param_bytes(self.super_symmetric) + -(-self.super_bits * nblocks // 8)
        return per_vector * (1 if self.symmetric else 2) + codes

    @property
    def unit_bytes(self) -> int:
        return self._unit_bytes(self.unit)

    @property
    def header_bytes(self) -> int:
        """Per-tensor bytes: one f32 normalizer per kind of encoded parameter (fp8 only):
        single: block scales [, block mins]; double: super-scales [, super-mins] of the
        scale vector [, and of the min vector]."""
        if (p := _plugin(self.family)) is not None:
            return p.header_bytes(self)
        if not self.uses_normalizer:
            return 0
        kinds = 1 if self.symmetric else 2
        if self.double:
            kinds *= 1 if self.super_symmetric else 2
        return 4 * kinds

    def row_tail(self, cols: int) -> int:
        """Length of a row's short last unit (0 when the unit divides the row, and for a type
        that falls back to another on such rows: llama.cpp's, ik_llama's)."""
        if self.has_fallback:
            return 0
        return cols % self.unit

    @property
    def has_fallback(self) -> bool:
        """Whether rows the unit does not divide are written in another type (``plan``)."""
        if self.family == "ggml":
            return True
        p = _plugin(self.family)
        return p is not None and hasattr(p, "plan")

    def plan(self, shape: tuple[int, int]) -> tuple[str | None, str | None]:
        """What encodes a (rows, cols) tensor: (this format's name, None) when it fits; for a
        llama.cpp type whose block does not divide the rows, llama-quantize's fallback type and
        the reason ((None, reason) when llama-quantize refuses it). See :func:`ggml_plan`."""
        if self.family != "ggml":
            if (p := _plugin(self.family)) is not None and hasattr(p, "plan"):
                return p.plan(self, shape)
            return self.name, None
        return ggml_plan(self.ggml_type, shape[-1])

    def applies_to(self, shape: tuple[int, int]) -> str | None:
        """None if the tensor can be measured (natively or by llama.cpp's fallback), else why not."""
        applied, note = self.plan(shape)
        return note if applied is None else None

    def nbytes(self, shape: tuple[int, int]) -> int:
        """Closed-form packed size of a (rows, cols) tensor (of the fallback type if one is used)."""
        rows, cols = shape
        if self.family == "ggml":
            applied, _ = self.plan(shape)
            if applied is None:
                raise FormatError(f"{self.name} cannot encode rows of {cols}")
            t = F16 if applied == "F16" else GGML_TYPES[applied]
            return rows * (cols // t.block) * t.block_bytes
        if (p := _plugin(self.family)) is not None and hasattr(p, "nbytes"):
            return p.nbytes(self, shape)
        tail = self.row_tail(cols)
        per_row = (cols // self.unit) * self.unit_bytes + (self._unit_bytes(tail) if tail else 0)
        return self.header_bytes + rows * per_row

    def bpw(self, shape: tuple[int, int] | None = None) -> float:
        """Bits per weight; nominal (whole units, no per-tensor header) without a shape."""
        if shape is None:
            if (p := _plugin(self.family)) is not None and hasattr(p, "nominal_bpw"):
                return p.nominal_bpw(self)
            return self.unit_bytes * 8 / self.unit
        return self.nbytes(shape) * 8 / (shape[0] * shape[1])

    def with_(self, **kw) -> "FormatSpec":
        return replace(self, **kw)


def scale_layout(spec: FormatSpec) -> dict:
    """How a format's scales are laid out, as users name it (the store's columns since schema 4):

    * ``block``: weights per (innermost) scale — Q4_K 32, Q6_K 16, NVFP4 16, Q4s32 32, and a
      double format's block;
    * ``scale_dtype``: that scale's encoding — a float encoding (``f16``, ``e4m3``, ``ue4m3`` …)
      or, in two-level formats, an integer code of the super-scale (``int6``: 6 bits);
    * ``super_block_weights``: weights sharing a super-scale (Q4_K 256; a double format's
      block × blocks per super-block); None for single-level formats;
    * ``super_scale_dtype``: the super-scale's float encoding (Q4_K f16, a double format's
      suffix); None for single-level formats.

    ``scale_encoding`` (not stored) is the float encoding a user picks between — the
    super-scale's in two-level formats, else the scale's: what the Scale-encoding filter files
    a format under."""
    if spec.family == "ggml":
        t = GGML_TYPES[spec.ggml_type]
        two_level = t.super_scale is not None
        out = {"block": t.weights_per_scale, "scale_dtype": t.scale_encoding,
               "super_block_weights": t.block if two_level else None, "super_scale_dtype": t.super_scale}
    elif (p := _plugin(spec.family)) is not None:
        out = p.scale_layout(spec)
    elif spec.double:
        out = {"block": spec.block, "scale_dtype": f"int{spec.super_bits}",
               "super_block_weights": spec.block * spec.super_block, "super_scale_dtype": spec.scale}
    else:
        out = {"block": spec.block, "scale_dtype": spec.scale, "super_block_weights": None,
               "super_scale_dtype": None}
    out["scale_encoding"] = out["super_scale_dtype"] or out["scale_dtype"]
    return out


def spec_columns(spec: FormatSpec) -> dict:
    """The store's format columns of a spec (what its name implies; ``scale_layout`` for the
    block and scale columns)."""
    lay = scale_layout(spec)
    return {"format": spec.name, "family": spec.family, "bits": spec.bits, "block": lay["block"],
            "symmetric": spec.symmetric, "scale_dtype": lay["scale_dtype"], "super_bits": spec.super_bits,
            "super_block": spec.super_block, "super_symmetric": spec.super_symmetric,
            "super_block_weights": lay["super_block_weights"], "super_scale_dtype": lay["super_scale_dtype"],
            "search": spec.search, "normalizer": spec.uses_normalizer, "naive": spec.naive}


def legacy_spec_columns(spec: FormatSpec) -> dict:
    """The format columns as schema versions 1-3 wrote them: ``block`` the format's unit (Q4_K
    256, NVFP4 64), ``scale_dtype`` the float encoding (a double format's super-scale's), no
    super_block_weights / super_scale_dtype. Read only to accept and migrate older files."""
    cols = spec_columns(spec)
    cols.update(block=spec.block, scale_dtype=spec.scale)
    del cols["super_block_weights"], cols["super_scale_dtype"]
    return cols


def validate(spec: FormatSpec) -> None:
    if spec.family not in FAMILIES:
        raise FormatError(f"unknown family {spec.family!r}")
    if spec.family == "ggml":
        if spec.ggml_type not in GGML_TYPES:
            raise FormatError(f"unknown llama.cpp type {spec.ggml_type!r}")
        return
    if (p := _plugin(spec.family)) is not None:
        return p.validate(spec)
    if spec.family != "uniform":
        raise FormatError(f"family {spec.family!r} is not implemented yet")
    if not 1 <= spec.bits <= 8:
        raise FormatError(f"bits must be 1..8, got {spec.bits}")
    if spec.block < 8 or spec.block % 8:
        raise FormatError(f"block must be a multiple of 8 (>= 8), got {spec.block}")
    if spec.scale not in ENCODINGS:
        raise FormatError(f"unknown scale encoding {spec.scale!r} (one of {', '.join(ENCODINGS)})")
    if spec.search not in SEARCHES:
        raise FormatError(f"unknown scale search {spec.search!r}")
    if spec.search == "hqq":
        if spec.symmetric:
            raise FormatError("hqq optimises a min (zero-point): it needs an asymmetric format (Q4a32_hqq)")
        if not spec.double and not ENCODINGS[spec.scale].signed:
            raise FormatError(f"hqq needs a min stored as a value; an asymmetric {spec.scale} format "
                              "stores an integer zero-point")
    if not spec.normalizer and not ENCODINGS[spec.scale].needs_normalizer:
        raise FormatError(f"'nonorm' applies to fp8 encodings only, not {spec.scale}")
    if spec.double:
        if not 2 <= spec.super_bits <= 8:
            raise FormatError(f"super-block scale bits must be 2..8, got {spec.super_bits}")
        if spec.super_block is None or spec.super_block < 8 or spec.super_block % 8:
            raise FormatError(f"blocks per super-block must be a multiple of 8, got {spec.super_block}")
        if spec.super_symmetric is None:
            raise FormatError("double format needs super_symmetric")


_SINGLE = re.compile(r"Q(?P<bits>\d)(?P<sa>[sa])(?P<block>\d+)")
_DOUBLE = re.compile(r"Q\((?P<bits>\d)(?P<sa>[sa])(?P<block>\d+)\)xQ\((?P<b2>\d)(?P<sa2>[sa])(?P<sb>\d+)\)")


def parse(name: str) -> FormatSpec:
    """Parse a format name (canonical or with aliases) into its spec."""
    name = name.strip()
    if name in GGML_TYPES:
        t = GGML_TYPES[name]
        return FormatSpec("ggml", t.bits, t.block, t.symmetric, t.scale, ggml_type=name)
    from workbench.families import plugins
    for p in plugins():
        if (spec := p.parse(name)) is not None:
            return spec
    base, *suffixes = name.split("_")
    m = _DOUBLE.fullmatch(base) or _SINGLE.fullmatch(base)
    if m is None:
        raise FormatError(f"not a format name: {name!r} (e.g. Q4s32, Q4s16_e4m3, Q(4a16)xQ(6s16)_e4m3, Q4_0, "
                          f"NF4b64_f32)")
    kw = dict(family="uniform", bits=int(m["bits"]), block=int(m["block"]), symmetric=m["sa"] == "s")
    if "b2" in m.groupdict():
        kw.update(super_bits=int(m["b2"]), super_symmetric=m["sa2"] == "s", super_block=int(m["sb"]))
    seen = []
    for s in suffixes:
        s = ENCODING_ALIASES.get(s, s)
        if s in ENCODINGS:
            if "scale" in kw:
                raise FormatError(f"{name!r}: two scale encodings")
            kw["scale"] = s
        elif s in OPTION_ORDER:
            if s in seen:
                raise FormatError(f"{name!r}: option {s!r} given twice")
            seen.append(s)
        else:
            raise FormatError(f"{name!r}: unknown suffix {s!r} (encodings: {', '.join(ENCODINGS)}; options: {', '.join(OPTION_ORDER)})")
    if "rmse" in seen and "hqq" in seen:
        raise FormatError(f"{name!r}: one scale search (rmse or hqq)")
    kw["search"] = "rmse" if "rmse" in seen else "hqq" if "hqq" in seen else "absmax"
    kw["naive"] = "naive" in seen
    kw["normalizer"] = "nonorm" not in seen
    try:
        return FormatSpec(**kw)
    except FormatError as exc:
        raise FormatError(f"{name!r}: {exc}") from None


# ------------------------------------------------------------------------------- grids
GRID_BITS = range(2, 9)
GRID_BLOCKS = (16, 32, 64, 128, 256)
GRID_SCALES = ("f16", "bf16", "e4m3", "e8m0")
GRID_DOUBLE = ((8, 8), (16, 16))          # (block, blocks per super-block): the seed's hyper-blocks
GRID_DOUBLE_SCALES = ("f16", "e4m3")
GRID_SUPER_BITS = (4, 6, 8)


def default_grid() -> list[FormatSpec]:
    """The default sweep: the seed's figures and llama.cpp's legacy types.

    single: bits 2–8 × blocks 16–256 × s/a × f16/bf16/e4m3/e8m0            (280)
    double: bits 2–8 × s/a × 8×8/16×16 × super bits 4/6/8 (symmetric) × f16/e4m3 (168)
    ggml:   Q4_0 Q4_1 Q5_0 Q5_1 Q8_0, Q2_K..Q6_K, IQ4_NL IQ4_XS, MXFP4 NVFP4     (14)
    the well-known non-uniform points (15): bitsandbytes' NF4/FP4 at 64 with and without its
            double quantization, AF4 at 64 and 256, OCP MXFP4/MXFP6/MXFP8/MXINT8, NVIDIA's
            NVFP4 with its tensor scale (``families.codebook.WELL_KNOWN``), ik_llama.cpp's
            IQ4_KS and IQ4_KSS
    """
    out = [FormatSpec("uniform", b, blk, sym, enc)
           for b in GRID_BITS for blk in GRID_BLOCKS for sym in (True, False) for enc in GRID_SCALES]
    out += [FormatSpec("uniform", b, blk, sym, enc, super_bits=b2, super_symmetric=True, super_block=sb)
            for b in GRID_BITS for sym in (True, False) for blk, sb in GRID_DOUBLE
            for b2 in GRID_SUPER_BITS for enc in GRID_DOUBLE_SCALES]
    out += [parse(n) for n in GGML_TYPES]
    from workbench.families import codebook, iqk
    out += [parse(n) for n in codebook.WELL_KNOWN + tuple(iqk.TYPES)]
    return out


def searches_grid() -> list[FormatSpec]:
    """The scale searches side by side: asymmetric single-level bits 2–8 × blocks 16–256 ×
    f16/e4m3 × rmse/hqq (140); the default grid holds the same formats with the absmax start."""
    return [FormatSpec("uniform", b, blk, False, enc, search=search)
            for b in GRID_BITS for blk in GRID_BLOCKS for enc in GRID_DOUBLE_SCALES for search in ("rmse", "hqq")]


def small_grid() -> list[FormatSpec]:
    """A quick grid for smoke runs and tests (a dozen formats, all families and encodings)."""
    names = ["Q4s32", "Q4a32", "Q4s16_e4m3", "Q4s32_e8m0", "Q3a64_bf16", "Q8s32",
             "Q(4a16)xQ(6s16)_e4m3", "Q(4s8)xQ(6s8)", "Q4s32_rmse", "Q4_0", "Q4_1", "Q8_0"]
    return [parse(n) for n in names]


# every scale encoding the kernels have, fp8 with and without the per-tensor normalizer
ALL_SCALES = (("f16", True), ("bf16", True), ("e4m3", True), ("e4m3", False), ("e5m2", True),
              ("e5m2", False), ("e8m0", True))


def scales_grid() -> list[FormatSpec]:
    """Every scale encoding for the seed's two comparisons (the dashboard's fp8 page), on the
    default grid's shapes: single bits 2–8 × blocks 16–256 × s/a (490) and double 8×8/16×16 ×
    super bits 4/6/8 (symmetric) × s/a (588), each with f16, bf16, e4m3 and e5m2 with and
    without the normalizer, and e8m0. It includes the default grid's uniform formats, which a
    sweep on top of the default one skips (already stored)."""
    out = [FormatSpec("uniform", b, blk, sym, enc, normalizer=norm)
           for b in GRID_BITS for blk in GRID_BLOCKS for sym in (True, False) for enc, norm in ALL_SCALES]
    out += [FormatSpec("uniform", b, blk, sym, enc, super_bits=b2, super_symmetric=True, super_block=sb,
                       normalizer=norm)
            for b in GRID_BITS for sym in (True, False) for blk, sb in GRID_DOUBLE
            for b2 in GRID_SUPER_BITS for enc, norm in ALL_SCALES]
    return out


GRIDS = {"default": default_grid, "small": small_grid, "scales": scales_grid, "searches": searches_grid,
         "ggml": lambda: [parse(n) for n in GGML_TYPES]}


def _plugin(family: str):
    """The family's plug-in module (``workbench.families``), None for uniform and ggml."""
    if family in ("uniform", "ggml"):
        return None
    from workbench.families import plugin
    return plugin(family)


def _plugin_grids() -> None:
    from workbench.families import plugins
    for p in plugins():
        GRIDS.update(p.GRIDS)


def resolve(spec: str | None) -> list[FormatSpec]:
    """A grid name, or a comma-separated list of format names and grid names."""
    if spec is None:
        return default_grid()
    out: list[FormatSpec] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        out += GRIDS[item]() if item in GRIDS else [parse(item)]
    seen, uniq = set(), []
    for f in out:
        if f.name not in seen:
            seen.add(f.name)
            uniq.append(f)
    if not uniq:
        raise FormatError("no formats selected")
    return uniq


def nominal_bpw_table(formats: list[FormatSpec]) -> list[tuple[str, str, float]]:
    return [(f.name, f.family, f.bpw()) for f in formats]


def _check_math() -> None:  # bpw of the llama.cpp table, as llama.cpp's docs give them
    assert [t.bpw for t in GGML_TYPES.values()] == [4.5, 5.0, 5.5, 6.0, 8.5, 2.625, 3.4375, 4.5,
                                                    5.5, 6.5625, 4.5, 4.25, 4.25, 4.5]
    assert math.isclose(parse("Q(4a16)xQ(6s16)").bpw(), 4 + (2 * (2 + 12)) * 8 / 256)


_check_math()
_plugin_grids()
