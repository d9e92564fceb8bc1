"""`workbench bench --sessions`'s harness, with two sessions: both plots shown, both brushes
registered, nothing requested off the machine, the server's memory sampled."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.ui


def test_sessions_benchmark_runs_real_sessions(small_store):
    from workbench.bench_sessions import measure, table, verdict
    r = measure(small_store, 2, timeout_s=120, settle_s=2)
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
