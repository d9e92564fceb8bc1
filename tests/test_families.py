"""The family registry (``workbench.families``): every registered plug-in declares the traits
formats, codecs, the sweep, the store and the views rely on, and nothing outside it is needed."""
from __future__ import annotations

import subprocess
import sys

import pytest

from workbench import families
from workbench.formats import GRIDS, SPEC_COLUMNS, default_grid, parse, scale_layout, spec_columns

REQUIRED = ("NAME", "parse", "name", "validate", "unit_bytes", "header_bytes", "uses_normalizer",
            "scale_layout", "codec", "GRIDS")


@pytest.mark.parametrize("family", list(families.PLUGINS))
def test_every_plugin_declares_the_traits(family):
    p = families.plugin(family)
    missing = [t for t in REQUIRED if not hasattr(p, t)]
    assert not missing, f"{family} lacks {missing}"
    assert p.NAME == family
    assert p.parse("not-a-format-name") is None
    for grid in p.GRIDS.values():
        for s in grid():
            assert s.family == family and parse(s.name) == s and p.name(s) == s.name
            lay = scale_layout(s)
            assert lay["block"] and lay["scale_dtype"], s.name
            assert tuple(spec_columns(s)) == SPEC_COLUMNS
            assert s.bpw() > 0 and s.nbytes((4, 512)) > 0


def test_one_name_space_and_the_default_grid_from_defaults():
    owners = {}
    for f in families.PLUGINS:
        for g in families.plugin(f).GRIDS:
            assert g not in owners, f"grid {g!r} of {f} is also {owners[g]}'s"
            owners[g] = f
    assert set(GRIDS) == set(owners) | {"default", "small"}
    want = [s for f in families.PLUGINS for s in getattr(families.plugin(f), "DEFAULTS", list)()]
    assert default_grid() == want and len(want) == 477
    # a name belongs to exactly one family
    for f in families.PLUGINS:
        for s in families.plugin(f).GRIDS[next(iter(families.plugin(f).GRIDS))]()[:20]:
            others = [g for g in families.PLUGINS if g != f and families.plugin(g).parse(s.name) is not None]
            assert not others, (s.name, others)


def test_traits_and_dispatch_without_numba():
    """Parsing every name of every grid, the legend groups, the filter words and the metric
    registry: what the dashboard does on every session; none of it may load Numba."""
    code = ("import sys; from workbench import families; from workbench.formats import GRIDS, parse, scale_layout; "
            "names = [s.name for g in GRIDS.values() for s in g()]; [scale_layout(parse(n)) for n in names]; "
            "from workbench.views.pareto import kind_of, METRICS; from workbench.views.pareto_page import family_label; "
            "from workbench.metrics import REGISTRY; "
            "[(kind_of(f, 'f16', d), family_label(f)) for f in families.PLUGINS for d in (False, True)]; "
            "print(len(names), 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    n, loaded = out.stdout.split()
    assert int(n) > 2000 and loaded == "False"


def test_legend_groups_and_labels_come_from_the_plugins():
    from workbench.views.pareto import LLAMA_CPP, kind_of
    from workbench.views.pareto_page import family_label
    assert kind_of("ggml", "f16", False) == LLAMA_CPP == "llama.cpp"
    assert kind_of("uniform", "e4m3", True) == "double e4m3" and kind_of("uniform", "f16", False) == "single f16"
    assert kind_of("codebook", "f32", True) == "codebook dq" and kind_of("codebook", "f32", False) == "codebook f32"
    assert kind_of("iqk", None, False) == "ik_llama.cpp"
    assert [family_label(f) for f in ("uniform", "ggml", "codebook", "iqk")] == \
        ["uniform grid", "llama.cpp", "codebook", "ik_llama.cpp"]
    assert families.with_trait("LLAMA_CPP") == {"ggml"}


def test_one_metric_registry():
    from workbench import metrics, truth
    from workbench.views import compare, pareto, ratios, tensors
    reg = metrics.REGISTRY
    assert set(metrics.METRICS) | set(metrics.WEIGHTED_METRICS) == set(metrics.metrics_of("weight", "weighted"))
    for view_metrics in (pareto.METRICS, pareto.MODEL_METRICS):
        assert all(view_metrics[n] is reg[n] for n in view_metrics)
    assert pareto.PLOTTED["cosine"] is reg["cosine_distance"]
    assert all(compare.COMPARE_METRICS[n] == reg[n].label for n in compare.COMPARE_METRICS)
    assert all(reg[n].lower_is_better for n in ratios.LOWER_IS_BETTER + tensors.LOWER_IS_BETTER)
    assert not any(reg[n].lower_is_better for n in ratios.HIGHER_IS_BETTER)
    assert truth.HIGHER_IS_BETTER == {"rank_agreement", "top1_agreement", "top1", "cosine_min"}
    with pytest.raises(ValueError):
        metrics.metrics_of("nope")
