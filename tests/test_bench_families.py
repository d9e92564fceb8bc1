"""`workbench bench --families` groups every format of the families it compares exactly once
(the timing itself is a benchmark, never a test)."""
from workbench.bench_families import groups
from workbench.formats import GRIDS, default_grid


def test_groups_partition_the_grids():
    names = [s.name for _, specs in groups() for s in specs]
    assert len(names) == len(set(names))
    want = ({s.name for s in default_grid() if s.family == "uniform"} | {s.name for s in GRIDS["ggml"]()}
            | {s.name for s in GRIDS["codebooks"]()} | {s.name for s in GRIDS["iqk"]()}
            | {s.name for s in GRIDS["codebook-norms"]()} | {s.name for s in GRIDS["searches"]()}
            | {s.name for s in GRIDS["ternary"]()})          # a family bench_families does not name
    assert set(names) == want
    assert all(specs for _, specs in groups())
