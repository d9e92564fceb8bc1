"""Format families as plug-ins: a family is one module here and one line in ``PLUGINS``.

Every family is one: ``uniform`` (the hyper-grid), ``ggml`` (llama.cpp's types), ``codebook``
and ``iqk`` (ik_llama.cpp's IQ4_KS/KSS). A plug-in module declares its family's traits, each a
plain function of a ``formats.FormatSpec``:

=================  ==========================================================================
``NAME``           the family's name (the store's ``family`` column)
``parse(name)``    the spec of a canonical name of this family, or None if the name is not
                   one (``formats.parse`` asks every plug-in, in registry order)
``name(spec)``     the canonical name (parses back: ``parse(name(spec)) == spec``)
``validate(spec)`` raise ``formats.FormatError`` (one line) for a spec that cannot exist
``unit_bytes(spec, n)``  bytes of a unit (block) of n weights; ``header_bytes(spec)``: per tensor
``uses_normalizer(spec)``  whether the packed tensor starts with an f32 normalizer
``scale_layout(spec)``     the store's block / scale columns (``formats.scale_layout``)
``codec(spec)``    a ``codecs.Codec``: the real bytes and their decoding
``GRIDS``          {grid name: () -> [FormatSpec]}, merged into ``formats.GRIDS``
=================  ==========================================================================

Optional traits: ``DEFAULTS()`` (the family's formats in the default grid), ``LABEL`` (the
Pareto page's Family filter word), ``KIND`` (the legend group of all its formats) or
``kind(double, scale_encoding)`` (a group per format; default '<family> <scale encoding>'),
``LLAMA_CPP`` (llama.cpp's own types: labelled on the plots, compared with the nearest uniform
format, run natively by ``workbench eval``), ``unit(spec)`` (weights per unit, default the
block × blocks per super-block), ``nbytes(spec, shape)`` and ``nominal_bpw(spec)`` (layouts
with shape-dependent headers), ``plan(spec, shape)`` (the type written for a shape and why, for
types that fall back on rows they cannot encode, as llama-quantize does; the store then records
``applied_type``), ``compile_group(spec)`` (the kernel cache's warm-up group; default the
family).

Shared pieces a plug-in reuses: ``kernels.encodings`` (the scale encodings, ``param_bytes``,
``packed_bytes``), ``kernels.scales`` (their Numba rounding), ``kernels.bitpack`` (LSB- and
MSB-first bit packing of codes, little-endian multi-byte fields), ``codecs`` (``Codec``,
``as_kernel_input``, ``threaded_rows``, ``NonFiniteError``).

Adding a family: write ``workbench/families/<name>.py`` with the traits above (its Numba kernels
in ``kernels/<name>.py``, imported inside ``codec``: the dashboard imports every plug-in to parse
names and must not load Numba), add one line to ``PLUGINS`` below, and nothing else: formats, codecs,
the sweep, the store and the views take every family from here. ``iqk`` (ik_llama.cpp's
IQ4_KS / IQ4_KSS) was added that way: families/iqk.py, kernels/iqk.py and its line below;
docs/families.md walks through it.
"""
from __future__ import annotations

import functools
import importlib
from types import ModuleType

PLUGINS = {
    "uniform": "workbench.families.uniform",
    "ggml": "workbench.families.ggml",
    "codebook": "workbench.families.codebook",
    "iqk": "workbench.families.iqk",
    "ternary": "workbench.families.ternary",
}


@functools.cache
def plugin(family: str) -> ModuleType:
    """The plug-in module of ``family`` (KeyError for a family not in ``PLUGINS``); looked up
    once per family: every ``FormatSpec`` property asks for it."""
    return importlib.import_module(PLUGINS[family])


def trait(family: str, name: str, default=None):
    """An optional trait of a family's plug-in (``LABEL``, ``KIND`` …): ``default`` for a
    family that does not declare it (or is not registered: a store from a newer release)."""
    if family not in PLUGINS:
        return default
    return getattr(plugin(family), name, default)


@functools.cache
def with_trait(name: str) -> frozenset[str]:
    """The families whose plug-in declares the trait ``name`` true (``with_trait("LLAMA_CPP")``)."""
    return frozenset(f for f in PLUGINS if getattr(plugin(f), name, False))


def plugins() -> list[ModuleType]:
    return [importlib.import_module(t) for t in PLUGINS.values()]
