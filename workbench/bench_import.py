"""Benchmark: peak memory and time of `workbench import` on a large file (1e6 rows by default).

The file is made of real measured rows (a small sweep of the default model) repeated under other
tensor names, so every row passes validation and has a new natural key. Each import runs in a
fresh process and its peak resident memory (``ru_maxrss``) is reported side by side with a
process that only loads the same modules, so what the import itself adds is visible.
Target (issue 9): peak ≤ 300 MB for 1e6 rows.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workbench import store as st

ROW_GROUP = 1 << 17


def make_file(path: Path, rows: int, base_store: Path) -> int:
    """Write ``rows`` valid result rows (real ones, renamed tensors) to ``path``."""
    out = base_store.parent / "seed.parquet"
    st.export(base_store, out)
    seed = pq.read_table(out)
    writer = pq.ParquetWriter(path, seed.schema, compression="zstd")
    written, k, group = 0, 0, []
    while written < rows:
        n = min(seed.num_rows, rows - written)
        part = seed.slice(0, n)
        names = pc.binary_join_element_wise(part.column("tensor"), pa.scalar(f".copy{k}"), "")
        group.append(part.set_column(part.schema.get_field_index("tensor"), "tensor", names))
        written += n
        k += 1
        if sum(g.num_rows for g in group) >= ROW_GROUP or written == rows:
            writer.write_table(pa.concat_tables(group), row_group_size=ROW_GROUP)  # as export writes
            group = []
    writer.close()
    return written


def _peak_child(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(peak RSS in MB, seconds, result) of a command run alone in a fresh process."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "dt = time.perf_counter() - t; "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, dt, r.returncode); "
               "sys.stderr.write(r.stderr[-400:])")
    res = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    kb, dt, rc = res.stdout.split()
    res.returncode = int(rc)
    return int(kb) / 1024, float(dt), res


def main(rows: int = 1_000_000, out: Path | None = None) -> int:
    from workbench import sweep
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        sweep.run(formats="small", tensors=r"layer\.0\.", store=base, progress=False)
        big = tmp / "big.parquet"
        n = make_file(big, rows, base)
        size_mb = big.stat().st_size / 2**20
        # the same command on a file that does not exist: its modules, no work
        base_mb, base_s, _ = _peak_child([sys.executable, "-m", "workbench", "import", str(tmp / "none.parquet"),
                                          "--store", str(tmp / "none")])
        store = tmp / "store"
        peak, secs, res = _peak_child([sys.executable, "-m", "workbench", "import", str(big), "--store", str(store)])
        if res.returncode != 0:
            print(f"import failed: {res.stderr.strip()}", file=sys.stderr)
            return 1
        again_peak, again_s, res2 = _peak_child([sys.executable, "-m", "workbench", "import", str(big),
                                                 "--store", str(store)])
        stored = st.query(store, "SELECT count(*) AS n FROM results")["n"].iloc[0]
    lines = ["| rows | file MB | the command's modules only: peak MB | import into empty store: peak MB, s | "
             "same file again (all duplicates): peak MB, s | rows stored |",
             "|---|---|---|---|---|---|",
             f"| {n:,} | {size_mb:.1f} | {base_mb:.0f} | {peak:.0f}, {secs:.1f} | {again_peak:.0f}, {again_s:.1f} "
             f"| {stored:,} |"]
    text = "\n".join(lines)
    print(text)
    print(f"target: peak <= 300 MB: {'met' if max(peak, again_peak) <= 300 else 'NOT met'}")
    if out:
        Path(out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
