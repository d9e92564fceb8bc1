"""Format families as plug-ins: a family is one module here and one line in ``PLUGINS``.

A plug-in module declares its family's traits, each a plain function of a
``formats.FormatSpec``:

=================  ==========================================================================
``NAME``           the family's name (the store's ``family`` column)
``parse(name)``    the spec of a canonical name of this family, or None if the name is not
                   one (``formats.parse`` asks every plug-in before the built-in grammars)
``name(spec)``     the canonical name (parses back: ``parse(name(spec)) == spec``)
``validate(spec)`` raise ``formats.FormatError`` (one line) for a spec that cannot exist
``unit_bytes(spec, n)``  bytes of a unit (block) of n weights; ``header_bytes(spec)``: per tensor
``uses_normalizer(spec)``  whether the packed tensor starts with an f32 normalizer
``scale_layout(spec)``     the store's block / scale columns (``formats.scale_layout``)
``codec(spec)``    a ``codecs.Codec``: the real bytes and their decoding
``GRIDS``          {grid name: () -> [FormatSpec]}, merged into ``formats.GRIDS``
=================  ==========================================================================

The uniform grid and llama.cpp's types are still built into ``formats``/``codecs`` (issue 12
moves them here); the codebook family is the first plug-in.

Optional traits: ``LABEL`` (the Pareto page's Family filter word) and ``KIND`` (the legend
group of all its formats, instead of '<family> <scale encoding>'), ``unit(spec)`` (weights per unit, default the block), ``nbytes(spec, shape)``
and ``nominal_bpw(spec)`` (layouts with shape-dependent headers), ``plan(spec, shape)`` (the
type written for a shape and why, for types that fall back on rows they cannot encode, as
llama-quantize does; the store then records ``applied_type``).

Adding a family: write ``workbench/families/<name>.py`` with the traits above (its Numba kernels
in ``kernels/<name>.py``, imported inside ``codec``: the dashboard imports every plug-in to parse
names and must not load Numba), add one line to ``PLUGINS`` below, and nothing else: formats, codecs,
the sweep, the store and the views take every family from here. ``iqk`` (ik_llama.cpp's
IQ4_KS / IQ4_KSS) was added that way: families/iqk.py, kernels/iqk.py and its line below.
"""
from __future__ import annotations

import importlib
from types import ModuleType

PLUGINS = {
    "codebook": "workbench.families.codebook",
    "iqk": "workbench.families.iqk",
}


def plugin(family: str) -> ModuleType | None:
    """The plug-in module of ``family`` (None for the built-in families)."""
    target = PLUGINS.get(family)
    return importlib.import_module(target) if target else None


def trait(family: str, name: str, default=None):
    """An optional trait of a family's plug-in (``LABEL``, ``KIND`` …): ``default`` for the
    built-in families and for a plug-in that does not declare it."""
    module = plugin(family)
    return getattr(module, name, default) if module is not None else default


def plugins() -> list[ModuleType]:
    return [importlib.import_module(t) for t in PLUGINS.values()]
