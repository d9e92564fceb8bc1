"""The Sweep page without a browser: choosing models (only files in the data folder), formats
and tensors; a real sweep in the background landing in a copy of the small store; cancel
keeping what finished; bad input refused with one line and nothing written."""
from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import panel as pn
import pytest

from workbench import store as st
from workbench.formats import GRIDS
from workbench.sources import TENSOR_KINDS, open_model, tensor_kind
from workbench.views.sweep_page import (EMBEDDED, LIVE_ROWS, PlanError, SweepPage, choose_formats,
                                        choose_tensors, exact_pattern, imatrix_file_options, imatrix_path,
                                        model_options, model_path)

ROOT = Path(__file__).resolve().parents[1]
IMATRIX = ROOT / "data" / "imatrix" / "all-MiniLM-L6-v2.imatrix.gguf"
LAYER1 = r"layer\.1\."      # the small store holds layer 0 only: these pairs are all new


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    """An empty data folder ($WORKBENCH_DATA), so the page lists only what a test puts there."""
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("WORKBENCH_DATA", str(folder))
    return folder


def snapshot(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


def finish(page: SweepPage, timeout: float = 300):
    """Poll as the page's periodic callback would, until the job's thread has ended."""
    deadline = time.monotonic() + timeout
    while page.running and time.monotonic() < deadline:
        page.poll()
        time.sleep(0.05)
    page.wait(timeout=max(0.0, deadline - time.monotonic()))
    assert not page.running


# ------------------------------------------------------------------------------ choices
def test_model_options_list_only_model_files_of_the_data_folder(data):
    (data / "models").mkdir()
    (data / "models" / "tiny.npy").write_bytes(b"x")
    (data / "notes.txt").write_text("not a model")
    (data / "store" / "model=m" / "table=results").mkdir(parents=True)
    (data / "store" / "model=m" / "table=results" / "a.npy").write_bytes(b"x")   # inside the store
    (data / "imatrix").mkdir()
    (data / "imatrix" / "m.imatrix.gguf").write_bytes(b"GGUF")
    (data / "imatrix" / "old.dat").write_bytes(b"x")
    (data / "imatrix" / "README.md").write_text("")
    assert model_options() == {EMBEDDED: "", "models/tiny.npy": "models/tiny.npy"}
    assert model_path("") is None
    assert model_path("models/tiny.npy") == data / "models" / "tiny.npy"
    assert imatrix_file_options() == {"none": "", "m.imatrix.gguf": "m.imatrix.gguf", "old.dat": "old.dat"}
    assert imatrix_path("old.dat") == data / "imatrix" / "old.dat" and imatrix_path("") is None


@pytest.mark.parametrize("choice", ["../secret.npy", "/etc/passwd", "models/../../x.npy",
                                    "store/model=m/table=results/a.npy", "models/missing.npy"])
def test_a_path_outside_the_listed_model_files_is_refused(data, choice):
    (data / "models").mkdir()
    (data / "models" / "tiny.npy").write_bytes(b"x")
    (data / "store" / "model=m" / "table=results").mkdir(parents=True)
    (data / "store" / "model=m" / "table=results" / "a.npy").write_bytes(b"x")
    with pytest.raises(PlanError, match="not a model file in the data folder"):
        model_path(choice)


def test_an_imatrix_outside_the_data_folder_is_refused(data):
    with pytest.raises(PlanError, match="not an importance matrix"):
        imatrix_path(str(IMATRIX))


def test_choose_formats_from_each_grid_and_narrow_by_name():
    for grid, make in GRIDS.items():
        assert [f.name for f in choose_formats(grid)] == [f.name for f in make()]
    q4 = choose_formats("small", "^Q4")
    assert [f.name for f in q4] == [f.name for f in GRIDS["small"]() if f.name.startswith("Q4")]
    assert 0 < len(q4) < len(GRIDS["small"]())
    assert [f.name for f in choose_formats("ggml", r"^Q8_0$")] == ["Q8_0"]


@pytest.mark.parametrize("grid, pattern, message", [
    ("small", "(", "format regex '(':"), ("small", "^nothing$", "no format of the 'small' grid"),
    ("huge", "", "unknown format grid 'huge'")])
def test_choose_formats_refuses_with_one_line(grid, pattern, message):
    with pytest.raises(PlanError) as exc:
        choose_formats(grid, pattern)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_choose_tensors_by_regex_and_kind(minilm):
    names = [t.name for t in minilm.weights()]
    assert choose_tensors(names) == names
    layer0 = choose_tensors(names, r"layer\.0\.")
    assert layer0 == [n for n in names if "layer.0." in n] and len(layer0) == 6
    attention = choose_tensors(names, "", ["attention"])
    assert attention == [n for n in names if tensor_kind(n) == "attention"] and attention
    both = choose_tensors(names, r"layer\.0\.", ["attention"])      # regex AND kind
    assert both == [n for n in layer0 if tensor_kind(n) == "attention"] and 0 < len(both) < len(layer0)
    assert choose_tensors(names, "nothing-matches") == []
    assert set().union(*(choose_tensors(names, "", [k]) for k in TENSOR_KINDS)) == set(names)
    with pytest.raises(PlanError, match=r"^tensor regex '\[': "):
        choose_tensors(names, "[")


def test_exact_pattern_selects_exactly_the_chosen_tensors(minilm):
    names = [t.name for t in minilm.weights()]
    chosen = choose_tensors(names, "", ["attention"])[:5]
    rx = exact_pattern(chosen, names)
    assert [t.name for t in minilm.weights(rx)] == chosen
    assert [t.name for t in minilm.weights(exact_pattern(names[:1], names))] == names[:1]
    assert exact_pattern(names, names) is None        # everything: no filter at all


# ---------------------------------------------------------------------------------- page
def test_page_describes_the_choice_and_refuses_bad_input(store, data):
    page = SweepPage(store=store)      # not rendered: a Select then takes any value, as a forged request could
    assert list(page.model.options) == [EMBEDDED] and page.model.value == ""
    assert page.grid.value == "small" and list(page.grid.options) == list(GRIDS)
    n_small, n_weights = len(GRIDS["small"]()), len(open_model(None).weights())
    assert f"**{n_small} formats** × **{n_weights} tensors**" in page.choice.object
    page.tensor_regex.value = LAYER1
    page.format_regex.value = "_e4m3$"
    e4m3 = len([f for f in GRIDS["small"]() if f.name.endswith("_e4m3")])
    assert f"**{e4m3} formats** × **6 tensors**" in page.choice.object and not page.message.visible

    before = snapshot(store)
    for widget, value, text in ((page.tensor_regex, "(", "tensor regex '('"),
                                (page.format_regex, "[", "format regex '['"),
                                (page.tensor_regex, "no-such-tensor", "no weight tensor of all-MiniLM-L6-v2"),
                                (page.model, "../../etc/passwd", "not a model file in the data folder")):
        good = widget.value
        widget.value = value            # what the browser would send
        assert page.message.visible and page.message.alert_type == "danger"
        assert text in page.message.object
        assert "\n" not in page.message.object
        assert page.run() is None and page.job is None        # nothing started
        widget.value = good
        assert not page.message.visible
    assert snapshot(store) == before
    pn.panel(page).get_root()          # builds the bokeh models without an exception


def test_a_model_file_gone_since_it_was_listed_is_refused_at_run(store, data):
    """Panel's rendered Select only maps the browser's choice to a listed option; the server
    still re-checks the file is one of model_files() when Run is pressed."""
    (data / "m.npy").write_bytes(b"x")
    page = SweepPage(store=store)
    pn.panel(page).get_root()
    page.model.value = "m.npy"          # listed: chosen (the .npy is garbage: refused as such)
    assert "cannot read numpy file" in page.message.object
    (data / "m.npy").unlink()
    before = snapshot(store)
    assert page.run() is None
    assert page.message.alert_type == "danger"
    assert "'m.npy' is not a model file in the data folder" in page.message.object
    assert snapshot(store) == before


def test_a_broken_model_file_is_one_line_and_nothing_is_written(store, data):
    (data / "models").mkdir()
    (data / "models" / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    before = snapshot(store)
    page = SweepPage(store=store)
    assert "models/broken.safetensors" in page.model.options
    page.model.value = "models/broken.safetensors"
    assert page.message.alert_type == "danger" and "broken.safetensors" in page.message.object
    assert "\n" not in page.message.object and page.choice.object == ""
    assert page.run() is None and snapshot(store) == before


def test_a_sweep_lands_in_the_store_with_live_progress(store, data):
    notified = []
    page = SweepPage(store=store, notify=lambda: notified.append(1))
    page.tensor_regex.value = LAYER1
    plan = page.plan()
    job = page.run()
    assert job is not None and page.running
    assert page.run_button.disabled and not page.cancel_button.disabled
    assert all(w.disabled for w in page.inputs)
    assert page.run() is None and page.job is job           # one sweep at a time
    assert page.progress.visible and page.progress.value == -1 and "preparing" in page.status.object
    finish(page)

    rows = st.run_results(store, job.run_id)
    assert len(rows) == plan.pairs == 6 * len(GRIDS["small"]())
    assert set(rows["tensor"]) == set(plan.tensors) and set(rows["format"]) == {f.name for f in plan.formats}
    assert page.progress.value == page.progress.max == plan.pairs
    assert page.status.object == f"{plan.pairs} of {plan.pairs} measured"
    assert page.message.alert_type == "success" and f"{plan.pairs} rows measured" in page.message.object
    assert f"(run {job.run_id[:8]})" in page.message.object
    assert list(page.live.value["format"]) == list(rows["format"][:LIVE_ROWS])
    assert list(page.live.value["nmse"]) == sorted(page.live.value["nmse"])
    assert f"**{plan.pairs} rows** of this run" in page.live_caption.object
    assert notified                                          # other pages reload
    count = len(notified)
    page.wait()                                              # the outcome is shown once
    assert len(notified) == count
    assert not page.run_button.disabled and page.cancel_button.disabled
    assert not any(w.disabled for w in page.inputs)

    again = page.run()                                       # resumable: nothing left to measure
    finish(page)
    assert st.runs(store, [again.run_id]).empty
    assert "nothing to measure" in page.status.object
    assert f"{plan.pairs} pairs were already stored" in page.message.object


def test_cancel_keeps_what_finished(store, data):
    page = SweepPage(store=store)
    page.grid.value = "default"                   # hundreds of tasks: cancel lands mid-run
    page.tensor_regex.value = LAYER1
    plan = page.plan()
    job = page.run()
    deadline = time.monotonic() + 300
    while job.done == 0 and job.thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    page.cancel()
    assert page.cancel_button.disabled and "cancelling" in page.status.object
    finish(page)
    rep = job.report
    kept = st.run_results(store, job.run_id)
    assert 0 < rep.measured == len(kept) < plan.pairs
    assert job.total == plan.pairs and job.done < job.total
    text = f"cancelled after {job.done} of {job.total}; {len(kept)} rows kept"
    assert page.status.object == text and text in page.message.object
    assert page.message.alert_type == "warning"
    assert not kept.duplicated(["tensor", "format"]).any()


def test_a_sweep_with_an_importance_matrix(store, data):
    (data / "imatrix").mkdir()
    shutil.copy(IMATRIX, data / "imatrix" / IMATRIX.name)
    page = SweepPage(store=store)
    assert page.imatrix.options == {"none": "", IMATRIX.name: IMATRIX.name}
    page.imatrix.value = IMATRIX.name
    page.grid.value = "ggml"
    page.format_regex.value = "^Q4_0$"
    page.tensor_regex.value = r"layer\.0\.output\.dense"      # stored already, but not with an imatrix
    job = page.run()
    finish(page)
    rows = st.run_results(store, job.run_id)
    assert len(rows) == 1 and rows["imatrix_file"].tolist() == [IMATRIX.name]
    assert rows["wnmse"].notna().all() and rows["imatrix"].str.len().gt(0).all()


def test_reload_relists_the_data_folder(store, data):
    page = SweepPage(store=store)
    assert list(page.model.options) == [EMBEDDED]
    (data / "m.npy").write_bytes(b"x")
    page.reload()
    assert list(page.model.options) == [EMBEDDED, "m.npy"] and page.model.value == ""
    page.model.value = "m.npy"
    (data / "m.npy").unlink()
    page.reload()
    assert page.model.value == "" and list(page.model.options) == [EMBEDDED]

