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
from dataclasses import dataclass, replace

from workbench.families import PLUGINS, plugin as _plugin  # noqa: E402  (the registry)

FAMILIES = tuple(PLUGINS)
SEARCHES = ("absmax", "rmse", "hqq")      # kernels.uniform's ABSMAX, RMSE, HQQ, in this order
ENCODING_ALIASES = {"fp8": "e4m3"}
DEFAULT_SCALE = "f16"
OPTION_ORDER = ("rmse", "hqq", "naive", "nonorm")


# llama.cpp's types: the one table (structs, sizes, fallbacks, imatrix use, scale granularity),
# and the family plug-ins' public helpers, re-exported where users found them
from workbench.kernels.ggml_types import F16, GGML_TYPES, GgmlType  # noqa: E402,F401
from workbench.families.ggml import ggml_plan  # noqa: E402,F401
from workbench.families.uniform import (ALL_SCALES, GRID_BITS, GRID_BLOCKS, GRID_DOUBLE,  # noqa: E402,F401
                                        GRID_DOUBLE_SCALES, GRID_SCALES, GRID_SUPER_BITS,
                                        scales_grid, searches_grid)


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
    def plugin(self):
        """The family's plug-in module (``workbench.families``)."""
        return _plugin(self.family)

    @property
    def name(self) -> str:
        return self.plugin.name(self)

    def __str__(self) -> str:
        return self.name

    # ------------------------------------------------------------------ layout
    @property
    def uses_normalizer(self) -> bool:
        return self.plugin.uses_normalizer(self)

    @property
    def unit(self) -> int:
        """Weights per self-contained unit: a block, or a super-block for double formats
        (a plug-in's ``unit`` trait where it differs)."""
        p = self.plugin
        return p.unit(self) if hasattr(p, "unit") else self.block * (self.super_block or 1)

    def _unit_bytes(self, n: int) -> int:
        """Bytes of a unit holding n weights (n < unit only for a row's short last unit)."""
        return self.plugin.unit_bytes(self, n)

    @property
    def unit_bytes(self) -> int:
        return self._unit_bytes(self.unit)

    @property
    def header_bytes(self) -> int:
        """Per-tensor bytes (the fp8 normalizers, a fitted code's levels …)."""
        return self.plugin.header_bytes(self)

    def row_tail(self, cols: int) -> int:
        """Length of a row's short last unit (0 when the unit divides the row, and for a type
        that falls back to another on such rows: llama.cpp's, ik_llama's)."""
        if self.has_fallback:
            return 0
        return cols % self.unit

    @property
    def has_fallback(self) -> bool:
        """Whether rows the unit does not divide are written in another type (``plan``)."""
        return hasattr(self.plugin, "plan")

    def plan(self, shape: tuple[int, int]) -> tuple[str | None, str | None]:
        """What encodes a (rows, cols) tensor: (this format's name, None) when it fits; for a
        llama.cpp type whose block does not divide the rows, llama-quantize's fallback type and
        the reason ((None, reason) when llama-quantize refuses it). See :func:`ggml_plan`."""
        p = self.plugin
        return p.plan(self, shape) if hasattr(p, "plan") else (self.name, None)

    def applies_to(self, shape: tuple[int, int]) -> str | None:
        """None if the tensor can be measured (natively or by llama.cpp's fallback), else why not."""
        applied, note = self.plan(shape)
        return note if applied is None else None

    def nbytes(self, shape: tuple[int, int]) -> int:
        """Closed-form packed size of a (rows, cols) tensor (of the fallback type if one is used)."""
        p = self.plugin
        if hasattr(p, "nbytes"):
            return p.nbytes(self, shape)
        rows, cols = shape
        tail = self.row_tail(cols)
        per_row = (cols // self.unit) * self.unit_bytes + (self._unit_bytes(tail) if tail else 0)
        return self.header_bytes + rows * per_row

    def bpw(self, shape: tuple[int, int] | None = None) -> float:
        """Bits per weight; nominal (whole units, no per-tensor header) without a shape."""
        if shape is None:
            p = self.plugin
            return p.nominal_bpw(self) if hasattr(p, "nominal_bpw") else self.unit_bytes * 8 / self.unit
        return self.nbytes(shape) * 8 / (shape[0] * shape[1])

    def with_(self, **kw) -> "FormatSpec":
        return replace(self, **kw)


def scale_layout(spec: FormatSpec) -> dict:
    """How a format's scales are laid out, as users name it (the store's columns since schema 4;
    each family's ``scale_layout`` trait):

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
    out = dict(spec.plugin.scale_layout(spec))
    out["scale_encoding"] = out["super_scale_dtype"] or out["scale_dtype"]
    return out


# The store's format columns, in the order the results schema holds them: each is what the name
# implies (``spec_columns``), so the store checks and migrates them against the name.
SPEC_COLUMNS = ("format", "family", "bits", "block", "symmetric", "scale_dtype", "super_bits",
                "super_block", "super_symmetric", "super_block_weights", "super_scale_dtype",
                "search", "normalizer", "naive")


def spec_columns(spec: FormatSpec) -> dict:
    """The store's format columns of a spec (``SPEC_COLUMNS``; ``scale_layout`` for the block
    and scale columns)."""
    lay = scale_layout(spec)
    cols = {"format": spec.name, "family": spec.family, "bits": spec.bits, "block": lay["block"],
            "symmetric": spec.symmetric, "scale_dtype": lay["scale_dtype"], "super_bits": spec.super_bits,
            "super_block": spec.super_block, "super_symmetric": spec.super_symmetric,
            "super_block_weights": lay["super_block_weights"], "super_scale_dtype": lay["super_scale_dtype"],
            "search": spec.search, "normalizer": spec.uses_normalizer, "naive": spec.naive}
    assert tuple(cols) == SPEC_COLUMNS
    return cols


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
    spec.plugin.validate(spec)


def parse(name: str) -> FormatSpec:
    """Parse a format name (canonical or with aliases) into its spec: every family's ``parse``
    in registry order; the first that knows the name answers."""
    name = name.strip()
    from workbench.families import plugins
    for p in plugins():
        if (spec := p.parse(name)) is not None:
            return spec
    raise FormatError(f"not a format name: {name!r} (e.g. Q4s32, Q4s16_e4m3, Q(4a16)xQ(6s16)_e4m3, Q4_0, "
                      f"NF4b64_f32)")


# ------------------------------------------------------------------------------- grids
def default_grid() -> list[FormatSpec]:
    """The default sweep: every family's ``DEFAULTS``, in registry order.

    uniform: single bits 2–8 × blocks 16–256 × s/a × f16/bf16/e4m3/e8m0 (280); double bits
            2–8 × s/a × 8×8/16×16 × super bits 4/6/8 (symmetric) × f16/e4m3 (168)
    ggml:   Q4_0 Q4_1 Q5_0 Q5_1 Q8_0, Q2_K..Q6_K, IQ4_NL IQ4_XS, MXFP4 NVFP4     (14)
    codebook: the well-known non-uniform points (13): bitsandbytes' NF4/FP4 at 64 with and
            without its double quantization, AF4 at 64 and 256, OCP MXFP4/MXFP6/MXFP8/MXINT8,
            NVIDIA's NVFP4 with its tensor scale (``families.codebook.WELL_KNOWN``)
    iqk:    ik_llama.cpp's IQ4_KS and IQ4_KSS (2)
    """
    from workbench.families import plugins
    return [s for p in plugins() if hasattr(p, "DEFAULTS") for s in p.DEFAULTS()]


def small_grid() -> list[FormatSpec]:
    """A quick grid for smoke runs and tests (a dozen formats, all families and encodings)."""
    names = ["Q4s32", "Q4a32", "Q4s16_e4m3", "Q4s32_e8m0", "Q3a64_bf16", "Q8s32",
             "Q(4a16)xQ(6s16)_e4m3", "Q(4s8)xQ(6s8)", "Q4s32_rmse", "Q4_0", "Q4_1", "Q8_0"]
    return [parse(n) for n in names]


GRIDS = {"default": default_grid, "small": small_grid}


def _plugin_grids() -> None:
    """Every family's ``GRIDS`` join ``GRIDS`` (one name space: a clash is a bug)."""
    from workbench.families import plugins
    for p in plugins():
        clash = set(p.GRIDS) & set(GRIDS)
        assert not clash, f"{p.NAME}: grid names {clash} already taken"
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
