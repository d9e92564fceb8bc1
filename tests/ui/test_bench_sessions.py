"""`workbench bench --sessions`'s harness, with two sessions: both plots shown, both brushes
registered, nothing requested off the machine, the server's memory sampled; and the same
clients on the reference page (``bench_floor``), reported side by side."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def pareto(small_store):
    from workbench.bench_sessions import measure
    return measure(small_store, 2, timeout_s=120, settle_s=2)


def test_sessions_benchmark_runs_real_sessions(pareto):
    from workbench.bench_sessions import table, verdict
    r = pareto
    assert r["page"] == "pareto"
    assert r["plots_shown"] == 2 and r["brushes_registered"] == 2, r["failures"]
    assert r["blocked_requests"] == 0 and r["console_errors"] == 0 and r["server_errors"] == 0
    assert 0 < r["rss_started_mb"] <= r["rss_peak_mb"] and r["rss_idle_mb"] > 0 and r["rss_after_mb"] > 0
    assert 0 < r["plot_p50_s"] <= r["plot_p95_s"] and r["brush_p50_s"] > 0
    assert "| brushes registered | 2 |" in table(r)
    assert "sessions discarded by the server" in table(r)   # (discards take a sweep, ~17 s: test_session_lifetime_ui)
    assert verdict(r)[0].startswith("every brush registers: met")
    # the CPU readings taken when the last plot showed: within the whole run's
    assert 0 < r["plots_wall_s"] <= r["wall_s"] and 0 < r["plots_server_cpu_s"] <= r["server_cpu_s"]
    assert 0 < r["plots_others_cpu_s"] <= r["others_cpu_s"] + 0.05
    assert "until the last plot showed" in table(r)


def test_reference_page_takes_the_same_clients_and_is_reported_beside(pareto, small_store):
    """The reference page (one Bokeh plot of the store's formats under `bokeh serve`) passes the
    clients' own checks (a plot frame titled '... is better', a caption that changes on a real
    box-select), and the table sets its figures beside the Pareto page's with their ratios."""
    from workbench.bench_sessions import measure, reference_verdict, table
    ref = measure(small_store, 2, timeout_s=120, settle_s=2, floor=True)
    assert ref["page"] == "reference" and ref["discarded"] is None
    assert ref["plots_shown"] == 2 and ref["brushes_registered"] == 2, ref["failures"]
    assert ref["blocked_requests"] == 0 and ref["console_errors"] == 0 and ref["server_errors"] == 0
    text = table(pareto, ref).splitlines()
    assert text[0] == "| measure | Pareto page | reference page (one Bokeh plot) | ratio |"
    row = next(ln for ln in text if ln.startswith("| time to plot p50 / p95 (s) |")).split(" | ")
    p50 = pareto["plot_p50_s"] / ref["plot_p50_s"]
    assert row[3].startswith(f"{p50:.2f}×") and row[3].count("×") == 2
    discards = next(ln for ln in text if ln.startswith("| sessions discarded")).split(" | ")
    assert discards[1] == f"{pareto['discarded']} of 3" and discards[2] == "(not logged)"
    assert reference_verdict(ref).startswith("reference page (one Bokeh plot of the same formats")
