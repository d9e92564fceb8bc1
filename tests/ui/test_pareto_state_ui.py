"""The Pareto page in a real headless chromium, as an expert reads it: the numbers printed on the
plot (hover and tick texts read from the rendered Bokeh models), labels that do not collide,
the best-at-budget readout, every filter state without a server error, and the view kept in the
URL (a reload and a fresh page find the same view)."""
from __future__ import annotations

import itertools
import re

import pytest
from playwright.sync_api import Page, expect

from workbench import store as st
from workbench.browser import FIGURES_JS
from workbench.views.pareto import (BPW_SIG, FORMAT_FILTERS, best_at_budget, filter_formats, log_ticks, plottable,
                                    readable, tick_labels, with_kind)

pytestmark = pytest.mark.ui
TIMEOUT_MS = 60_000
TOTAL = re.compile(r"\((\d+) formats of")

# Every rendered view, depth first (figures, their renderers and axes).
VIEWS_JS = """const seen = [];
    const visit = v => { if (!v || seen.includes(v)) return; seen.push(v);
        for (const c of (v.child_views ?? [])) visit(c);
        if (v.renderer_views) for (const c of v.renderer_views.values()) visit(c); };
    Object.values(Bokeh.index).forEach(visit);"""
# The axes on screen: type, label, visible range, major ticks and the label texts bokeh draws.
AXES_JS = "() => { " + VIEWS_JS + """
    return seen.filter(v => v.model.type.endsWith("Axis") && v.tick_coords && v.parent.el.isConnected).map(v => {
        const ticks = [...v.tick_coords.major[v.dimension]];
        return {type: v.model.type, label: String(v.model.axis_label), start: v.ranges[0].start,
                end: v.ranges[0].end, ticks, labels: v.compute_labels(ticks).items.map(g => g.text)}; }); }"""
# Page coordinates of a format's point (the format layer: 'format' and 'kind' in its data).
POINT_JS = "name => { " + VIEWS_JS + """
    for (const v of seen) { const d = v.model.data_source?.data;
        if (!d || !("format" in d) || !("kind" in d) || ("tensor" in d) || !v.parent.el.isConnected) continue;
        const i = [...d.format].indexOf(name); if (i < 0) continue;
        const r = v.parent.el.getBoundingClientRect();
        return {x: r.x + v.glyph.sx[i], y: r.y + v.glyph.sy[i]}; }
    return null; }"""
# The llama.cpp labels as drawn: each text's box (canvas pixels) from its anchor, pixel offset,
# alignment and the width the canvas measures for it; and the labelled points' positions.
LABELS_JS = "() => { " + VIEWS_JS + """
    const ctx = document.createElement("canvas").getContext("2d");
    for (const v of seen) { const d = v.model.data_source?.data;
        if (!d || !("label" in d) || !("dx" in d) || !v.parent.el.isConnected) continue;
        const g = v.model.glyph, size = parseFloat(String(g.text_font_size.value ?? g.text_font_size)) * 4 / 3;
        ctx.font = `${size}px ${g.text_font.value ?? g.text_font}`;
        const boxes = [...d.label].map((text, i) => {
            const w = ctx.measureText(text).width, h = size * 1.2;
            const ax = v.glyph.sx[i] + d.dx[i], ay = v.glyph.sy[i] + d.dy[i];
            const x0 = d.align[i] == "left" ? ax : d.align[i] == "right" ? ax - w : ax - w / 2;
            const y0 = d.baseline[i] == "bottom" ? ay - h : d.baseline[i] == "top" ? ay : ay - h / 2;
            return {text, x0, y0, x1: x0 + w, y1: y0 + h, px: v.glyph.sx[i], py: v.glyph.sy[i]}; });
        return boxes; }
    return null; }"""
# The format whose point lies farthest from any other on screen (a tap selects it alone).
LONE_POINT_JS = "() => { " + VIEWS_JS + """
    for (const v of seen) { const d = v.model.data_source?.data;
        if (!d || !("format" in d) || !("kind" in d) || ("tensor" in d) || !v.parent.el.isConnected) continue;
        const {sx, sy} = v.glyph; let best = null, far = -1;
        for (let i = 0; i < sx.length; i++) {
            let near = Infinity;
            for (let j = 0; j < sx.length; j++) if (j != i) near = Math.min(near, Math.hypot(sx[i] - sx[j], sy[i] - sy[j]));
            if (near > far) { far = near; best = d.format[i]; } }
        return best; }
    return null; }"""
# True once the format layer's own (browser) selection is exactly the named format.
SELECTED_IN_PLOT = """name => Bokeh.documents.some(doc => [...doc.all_models].some(m => m.type === "ColumnDataSource"
    && "format" in m.data && "kind" in m.data && !("tensor" in m.data) && m.selected.indices.length === 1
    && m.data.format[m.selected.indices[0]] === name))"""
POINTS_SHOWN = """n => Bokeh.documents.some(doc => [...doc.all_models].some(m => m.type === "ColumnDataSource"
    && "format" in m.data && "kind" in m.data && !("tensor" in m.data) && m.get_length() === n))"""


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory):
    """The default grid (462 formats with llama.cpp's types) over the default model's layer-0
    tensors: as crowded at 4-5 bpw as a full sweep, nmse down to ~1.5e-5."""
    from workbench import sweep
    store = tmp_path_factory.mktemp("pareto-grid") / "store"
    sweep.run(formats="default", tensors=r"layer\.0\.", store=store, progress=False)
    return store


@pytest.fixture(scope="module")
def grid_server(grid_store, store_server):
    with store_server(grid_store) as srv:
        yield srv


def summary_of(store) -> "pd.DataFrame":  # noqa: F821
    return with_kind(st.summary(store, st.models(store)[0]))


def open_pareto(page: Page, url: str) -> int:
    page.goto(url)
    caption = page.get_by_text(re.compile(r"Selected formats:"))
    expect(caption).to_contain_text(TOTAL, timeout=TIMEOUT_MS)
    total = int(TOTAL.search(caption.text_content()).group(1))
    page.wait_for_function(POINTS_SHOWN, arg=total, timeout=TIMEOUT_MS)
    return total


def metric_select(page: Page):
    return page.locator("select").nth(1)


def check_axes(page: Page, data_lo: float, data_hi: float, log_label: str):
    """The log axis labels its data range with ``tick_labels`` of ``log_ticks`` (the Python
    reference), no axis label is in e-notation."""
    axes = page.evaluate(AXES_JS)
    logs = [a for a in axes if a["type"] == "LogAxis" and a["label"].startswith(log_label)]
    assert len(logs) == 1, axes
    log = logs[0]
    major, _ = log_ticks(log["start"], log["end"])
    assert log["ticks"] == pytest.approx(major, rel=1e-9), log
    assert log["labels"] == tick_labels(log["ticks"]), log
    inside = [t for t in log["ticks"] if data_lo <= t <= data_hi]
    assert len(inside) >= 2, (log, data_lo, data_hi)
    for axis in axes:
        assert axis["labels"] and not any(re.search(r"\de[+-]?\d", t) for t in axis["labels"]), axis


def hover_text(page: Page, name: str) -> str:
    point = page.evaluate(POINT_JS, name)
    assert point is not None, name
    page.mouse.move(point["x"] + 40, point["y"] + 40)
    page.mouse.move(point["x"], point["y"])
    tip = page.locator(".bk-tooltip-content").first
    expect(tip).to_contain_text(f"{name}", timeout=TIMEOUT_MS)
    return tip.inner_text()


def test_hover_ticks_and_table_print_readable_numbers(page: Page, grid_server, grid_store, watch_for):
    watch = watch_for(grid_server)
    df = summary_of(grid_store)
    open_pareto(page, grid_server["url"] + "?page=pareto")
    check_axes(page, df["nmse"].min(), df["nmse"].max(), "NMSE")

    # the smallest nmse (~1.5e-5) and four formats within 3% of each other near 4.5 bpw
    smallest = df.loc[df["nmse"].idxmin()]
    text = hover_text(page, smallest["format"])
    assert readable(smallest["nmse"]) in text and "0.0000\n" not in text + "\n"
    near = df[(df["bpw"] > 4.4) & (df["bpw"] <= 4.5)].nsmallest(4, "nmse")
    shown = set()
    for _, row in near.iterrows():
        text = hover_text(page, row["format"])
        block = text[text.index(f"format:\t{row['format']}"):]
        assert f"nmse:\t{readable(row['nmse'])}" in block and f"bpw:\t{readable(row['bpw'], BPW_SIG)}" in block
        shown.add(readable(row["nmse"]))
    assert len(shown) == 4, shown

    # the table: box-select everything, each nmse cell to 4 significant digits
    caption = page.get_by_text(re.compile(r"Selected formats:"))
    frame = next(f for f in page.evaluate(FIGURES_JS) if "is better" in f["title"])   # the data frame
    page.mouse.move(frame["x"] + 0.995 * frame["w"], frame["y"] + 0.005 * frame["h"])
    page.mouse.down()
    page.mouse.move(frame["x"] + 0.005 * frame["w"], frame["y"] + 0.995 * frame["h"], steps=8)
    page.mouse.up()
    expect(caption).to_contain_text(re.compile(r"Selected formats: \d+ of"), timeout=TIMEOUT_MS)
    row = page.locator(".tabulator-row").first
    name = row.locator('.tabulator-cell[tabulator-field="format"]').text_content()
    cell = row.locator('.tabulator-cell[tabulator-field="nmse"]').text_content().strip()
    assert cell == readable(df.set_index("format").loc[name, "nmse"])

    # cosine: 1 − cosine on a log axis, its ticks over the data
    metric_select(page).select_option("cosine")
    page.wait_for_function("""() => Bokeh.documents.some(doc => [...doc.all_models].some(m =>
        m.type === "LogAxis" && String(m.axis_label).startsWith("1 − cosine")))""", timeout=TIMEOUT_MS)
    distance = 1 - df["cosine"]
    check_axes(page, distance.min(), distance.max(), "1 − cosine")
    text = hover_text(page, smallest["format"])
    assert readable(1 - smallest["cosine"]) in text
    watch.check()


def test_llama_cpp_labels_do_not_collide_as_drawn(page: Page, grid_server, grid_store, watch_for):
    watch = watch_for(grid_server)
    df = summary_of(grid_store)
    open_pareto(page, grid_server["url"] + "?page=pareto")
    for metric in ("nmse", "max_abs_err"):
        metric_select(page).select_option(metric)
        page.wait_for_function("m => Bokeh.documents.some(doc => [...doc.all_models].some(x => "
                               "x.type === 'ColumnDataSource' && m in x.data && 'kind' in x.data))",
                               arg=metric, timeout=TIMEOUT_MS)
        boxes = page.wait_for_function(LABELS_JS, timeout=TIMEOUT_MS).json_value()
        assert len(boxes) >= 8, boxes      # 14 types, some sharing a point
        for a, b in itertools.combinations(boxes, 2):
            assert not (a["x0"] < b["x1"] and b["x0"] < a["x1"] and a["y0"] < b["y1"] and b["y0"] < a["y1"]), (a, b)
        points = {(round(b["px"], 3), round(b["py"], 3)) for b in boxes}
        ggml = plottable(df[df["family"] == "ggml"], metric)
        for box in boxes:         # no label over a labelled point (its marker: 9 px)
            for px, py in points:
                assert not (box["x0"] < px + 4.5 and px - 4.5 < box["x1"] and box["y0"] < py + 4.5
                            and py - 4.5 < box["y1"]), (box, px, py)
        # a type with another format's bytes is drawn once with both names ("MXFP4 = E2M1b32_e8m0")
        named = sorted(n.split(" = ")[0] for b in boxes for n in b["text"].split("/"))
        note = page.locator(".labels-note p").first
        left = re.findall(r"[A-Z0-9_]+\*?", note.inner_text().split(":")[0]) if note.count() and note.is_visible() else []
        assert sorted(named + [n for n in left if n in set(ggml["label"])]) == sorted(ggml["label"])
    watch.check()


def test_budget_readout_names_the_best_runner_up_and_nearest_llama_cpp(page: Page, grid_server, grid_store,
                                                                        watch_for):
    watch = watch_for(grid_server)
    df = summary_of(grid_store)
    open_pareto(page, grid_server["url"] + "?page=pareto")
    readout = page.locator(".budget-readout p").first
    budget = page.locator(".bpw-budget input")
    for value, metric in ((4.5, "nmse"), (5.25, "nmse"), (3.0, "sqnr_db")):
        metric_select(page).select_option(metric)
        budget.fill(str(value))
        budget.press("Enter")
        r = best_at_budget(df, metric, value)
        expect(readout).to_contain_text(f"Best at ≤ {value:g} bpw by {metric}: {r['best']['label']}",
                                        timeout=TIMEOUT_MS)
        text = readout.inner_text()
        assert f"{r['best']['label']} ({readable(r['best']['bpw'], BPW_SIG)} bpw, {metric} " \
               f"{readable(r['best'][metric])})" in text
        assert f"Runner-up: {r['runner_up']['label']} ({readable(r['runner_up']['bpw'], BPW_SIG)} bpw" in text
        assert r["best"]["bpw"] <= value and r["runner_up"]["bpw"] <= value
        ggml = r["llama_cpp"]
        assert f"{ggml['label']} ({readable(ggml['bpw'], BPW_SIG)} bpw" in text
        assert abs(ggml["bpw"] - value) == min(abs(df.loc[df["family"] == "ggml", "bpw"] - value))
    watch.check()


# ---------------------------------------------------------------------- no server errors
def button_groups(page: Page):
    """The sidebar's button groups: the tensor kinds, then the format filters in FORMAT_FILTERS order."""
    groups = page.locator(".bk-btn-group")
    expect(groups).to_have_count(1 + len(FORMAT_FILTERS), timeout=TIMEOUT_MS)
    return [groups.nth(i) for i in range(1 + len(FORMAT_FILTERS))]


def expected_total(df, page: Page, groups) -> int:
    """The formats the caption must count for the buttons now pressed (the Python filter)."""
    names = {"llama.cpp": "ggml", "uniform grid": "uniform"}
    chosen = {}
    for name, group in zip(FORMAT_FILTERS, groups[1:]):
        pressed = [b.text_content() for b in group.locator("button.bk-active").all()]
        chosen[name] = [names.get(t, int(t) if t.isdigit() else t) for t in pressed]
    return len(plottable(filter_formats(df, **chosen), "nmse"))


def server_errors(server) -> list[str]:
    return [line for line in server["log"] if "ERROR" in line or "Traceback" in line or "TypeError" in line]


def test_every_filter_state_logs_no_error_and_shows_one_line(page: Page, server, watch):
    df = summary_of(server["store"])
    open_pareto(page, server["url"] + "?page=pareto")
    caption = page.get_by_text(re.compile(r"Selected formats:"))
    empty = page.get_by_text(re.compile(r"no formats pass the format filters|no tensor matches|tensor regex"))
    groups = button_groups(page)

    def drawn():
        expect(empty).to_be_hidden(timeout=TIMEOUT_MS)
        expect(caption).to_contain_text(f"({expected_total(df, page, groups)} formats of", timeout=TIMEOUT_MS)
        expect(page.locator(".bk-events").first).to_be_visible()
        assert not server_errors(server), server_errors(server)

    def nothing(why: str):
        line = page.get_by_text(re.compile(why))
        expect(line).to_be_visible(timeout=TIMEOUT_MS)
        assert "\n" not in line.inner_text().strip()             # one line
        expect(caption).to_be_hidden()                            # nothing stale beside it
        expect(page.locator(".budget-readout")).to_be_hidden()
        assert not server_errors(server), server_errors(server)

    drawn()
    for group in groups[1:]:                       # each button off and on, then all of a group off
        buttons = group.locator("button").all()
        for button in buttons:
            button.click()
            if len(buttons) > 1:
                drawn()
            else:
                nothing("no formats pass the format filters")
            button.click()
            drawn()
        for button in buttons:
            button.click()
        nothing(r"no formats pass the format filters \(nothing chosen in")
        metric_select(page).select_option("bnl")    # a metric change draws nothing either
        nothing("no formats pass the format filters")
        metric_select(page).select_option("nmse")
        for button in buttons:
            button.click()
        drawn()
    kinds = groups[0].locator("button").all()      # the tensor kinds: all off, then back
    for button in kinds:
        button.click()
    nothing("no tensor matches the tensor filter")
    for button in kinds:
        button.click()
    drawn()

    regex = page.get_by_placeholder(re.compile(r"e\.g\. layer"))
    for text, why in (("layer(", r"tensor regex 'layer\('"), ("no-such-tensor", "no tensor matches")):
        regex.fill(text)
        regex.press("Enter")
        nothing(why)
        metric_select(page).select_option("sqnr_db")   # not the previous tensors' figures
        nothing(why)
        metric_select(page).select_option("nmse")
        regex.fill("")                                   # undone
        regex.press("Enter")
        drawn()
    for metric in [o for o in metric_select(page).locator("option").all_text_contents()] + ["nmse"]:
        metric_select(page).select_option(metric)
        expect(caption).to_contain_text(f"({expected_total(df, page, groups)} formats of", timeout=TIMEOUT_MS)
    watch.check()


# --------------------------------------------------------------------------- the URL
def view_of(page: Page) -> dict:
    """What a reader sees of the view: the widgets' values and the page's own texts."""
    detail = page.get_by_text(re.compile(r"on each tensor \(\d+ of \d+ tensors"))
    expect(detail).to_be_visible(timeout=TIMEOUT_MS)
    groups = button_groups(page)
    return {"metric": metric_select(page).input_value(),
            "budget": page.locator(".bpw-budget input").input_value(),
            "regex": page.get_by_placeholder(re.compile(r"e\.g\. layer")).input_value(),
            "pressed": [[b.text_content() for b in g.locator("button.bk-active").all()] for g in groups],
            "every point": page.locator(".every-point input[type=checkbox]").is_checked(),
            "caption": page.get_by_text(re.compile(r"Selected formats:")).text_content(),
            "readout": page.locator(".budget-readout p").first.inner_text(),
            "detail": detail.text_content()}


def test_the_view_round_trips_through_the_url(page: Page, server, watch, browser):
    total = open_pareto(page, server["url"] + "?page=pareto")
    caption = page.get_by_text(re.compile(r"Selected formats:"))
    metric_select(page).select_option("cosine")
    budget = page.locator(".bpw-budget input")
    budget.fill("5.25")
    budget.press("Enter")
    expect(page.locator(".budget-readout p").first).to_contain_text("Best at ≤ 5.25 bpw by 1 − cosine",
                                                                    timeout=TIMEOUT_MS)
    regex = page.get_by_placeholder(re.compile(r"e\.g\. layer"))
    regex.fill(r"attention\.(self|output)")
    regex.press("Enter")
    groups = button_groups(page)
    groups[4].get_by_role("button", name="3", exact=True).click()          # bits: no 3-bit formats
    expect(caption).not_to_contain_text(f"({total} formats of", timeout=TIMEOUT_MS)
    page.locator(".every-point input[type=checkbox]").check()
    page.wait_for_function("""() => Bokeh.documents.some(doc => [...doc.all_models].some(m =>
        m.type === "ColumnDataSource" && "tensor" in m.data && "format" in m.data && m.get_length() > 0))""",
                           timeout=TIMEOUT_MS)
    # a format drilled into (by name: the URL keeps it) -- a tap on its point
    name = page.evaluate(LONE_POINT_JS)
    point = page.evaluate(POINT_JS, name)
    page.mouse.click(point["x"], point["y"])      # the tap tool is active beside the box select
    expect(caption).to_contain_text(re.compile(r"Selected formats: 1 of"), timeout=TIMEOUT_MS)
    for key in ("metric=cosine", "budget=5.25", "tensor_regex=", "bits=", "show_tensors=(true|True)",
                f"focus={re.escape(name)}", "selection="):
        expect(page).to_have_url(re.compile(key), timeout=TIMEOUT_MS)
    before = view_of(page)
    assert before["metric"] == "cosine" and before["budget"].startswith("5.25") and "3" not in before["pressed"][4]
    assert before["every point"] and "attention" in before["regex"]
    url = page.url

    page.reload()
    expect(caption).to_contain_text("Selected formats: 1 of", timeout=TIMEOUT_MS)
    assert view_of(page) == before
    page.wait_for_function(SELECTED_IN_PLOT, arg=name, timeout=TIMEOUT_MS)   # drawn selected, too
    watch.check()

    context = browser.new_context(viewport={"width": 1400, "height": 1000})   # a fresh browser
    try:
        fresh = context.new_page()
        fresh_watch = type(watch)(fresh, server)
        fresh.goto(url)
        expect(fresh.get_by_text(re.compile(r"Selected formats:"))).to_contain_text("Selected formats: 1 of",
                                                                                     timeout=TIMEOUT_MS)
        assert view_of(fresh) == before
        fresh.wait_for_function(SELECTED_IN_PLOT, arg=name, timeout=TIMEOUT_MS)
        fresh_watch.check()
    finally:
        context.close()


def test_tap_opens_that_point_and_native_switch_round_trips(page: Page, grid_server, grid_store, watch_for):
    """A tap on Q8_0's point, where Q8s32 and others sit a few pixels away, opens Q8_0 itself;
    'native tensors only' moves the k-quants to their own bpw (only the tensors every llama.cpp
    type encodes natively), and the switch is kept in the URL."""
    watch = watch_for(grid_server)
    open_pareto(page, grid_server["url"] + "?page=pareto")
    point = page.evaluate(POINT_JS, "Q8_0")
    page.mouse.click(point["x"], point["y"])
    expect(page.get_by_text(re.compile(r"Q8_0: nmse on each tensor"))).to_be_visible(timeout=TIMEOUT_MS)
    expect(page).to_have_url(re.compile(r"focus=Q8_0"), timeout=TIMEOUT_MS)

    summ = summary_of(grid_store).set_index("format")
    assert summ.loc["Q4_K", "fallback_tensors"] > 0           # 384-wide rows: Q4_K falls back to Q5_0
    box = page.locator(".native-only input[type=checkbox]")
    box.check()
    expect(page).to_have_url(re.compile(r"native_only=(true|True)"), timeout=TIMEOUT_MS)
    native = [t for t in st.tensor_names(grid_store, st.models(grid_store)[0]) if t.endswith("output.dense.weight")
              and "attention" not in t]
    want = with_kind(st.summary(grid_store, st.models(grid_store)[0], tensors=native)).set_index("format")
    assert want.loc["Q4_K", "fallback_tensors"] == 0 and want.loc["Q4_K", "bpw"] == 4.5
    tip = hover_text(page, "Q4_K")
    assert "4.5" in tip and "5.34" not in tip, tip
    page.reload()
    expect(page.locator(".native-only input[type=checkbox]")).to_be_checked(timeout=TIMEOUT_MS)
    watch.check()
