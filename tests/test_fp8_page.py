"""The fp8-vs-fp16 page without a browser: a real sweep of the seed's pairs on one tensor, the
page's choices, captions, tables and plots, and the empty and unreadable stores."""
from __future__ import annotations

import panel as pn
import pytest

from workbench import store as st
from workbench.views.fp8_page import EMPTY_STORE, Fp8Page
from workbench.views.ratios import (OUT_OF_RANGE, double_ratio_table, gain_row_styles, gain_summary,
                                    paired_summary, single_ratio_table)

# The seed's pairs: e4m3 (and bf16) at B/2 against f16 at B, 8×8 e4m3 against 16×16 f16.
FORMATS = ("Q3s16_e4m3,Q3s32,Q4s16_e4m3,Q4s32,Q4a16_e4m3,Q4a32,Q4s32_e4m3,Q4s64,Q4s16_bf16,"
           "Q4a16_bf16,Q4s16_e4m3_nonorm,Q(4s8)xQ(6s8)_e4m3,Q(4s16)xQ(6s16),Q(4a8)xQ(6s8)_e4m3,"
           "Q(4a16)xQ(6s16),Q(4s8)xQ(8s8)_e4m3,Q(4s16)xQ(8s16),Q4_0,Q3s64,Q4a64")
TENSOR = r"layer\.0\.attention\.self\.query"


@pytest.fixture(scope="module")
def fp8_store(tmp_path_factory):
    from workbench.sweep import run
    path = tmp_path_factory.mktemp("fp8-store")
    run(None, FORMATS, TENSOR, path, progress=False)
    return path


def test_defaults_and_both_analyses(fp8_store):
    page = Fp8Page(store=fp8_store)
    summary = st.summary(fp8_store, page.model)
    assert (page.enc_a, page.enc_b, page.metric, page.super_bits) == ("e4m3", "f16", "nmse", "all")
    assert list(page.param.enc_a.objects) == ["f16", "bf16", "e4m3", "e4m3_nonorm"]
    assert list(page.param.enc_a.names) == ["f16", "bf16", "e4m3 (normalizer)", "e4m3 (no normalizer)"]
    assert page.param.metric.objects == ["nmse", "sqnr_db", "bnl", "bnl_seed", "max_abs_err", "cosine"]
    assert list(page.param.super_bits.objects) == ["all", "6", "8"]
    assert not page.message.visible
    pn.panel(page).get_root()

    single = single_ratio_table(summary, "e4m3", "f16")
    double = double_ratio_table(summary, "e4m3", "f16")
    assert len(single) == 4 and len(double) == 3
    for section, table, double_ in ((page.single, single, False), (page.double, double, True)):
        # the headline is at equal bpw; the seed's pairing stays, with its bpw difference
        assert section.summary.object == gain_summary(table, "e4m3", "f16", double_)
        assert section.summary.object.startswith("At equal bpw: ")
        wins = int((table["eq_ratio"] < 1).sum())
        assert f" in {wins} of {len(table)} pairs (median ratio " in section.summary.object
        assert section.paired.object == paired_summary(table, "e4m3", "f16", double_)
        shown = section.table.value
        assert sorted(shown["format_a"]) == sorted(table["format_a"])
        gains = shown["gain"].astype(bool)
        assert gains.tolist() == sorted(gains, reverse=True)           # gains first
        assert shown.loc[gains, "ratio at equal bpw"].is_monotonic_increasing
        assert {"nmse A", "nmse B", "nmse B curve at bpw A", "ratio at equal bpw", "paired ratio",
                "bpw A − B (paired)"} <= set(shown.columns)
        assert section.table.hidden_columns == ["gain"]
        assert section.heatmap.object is not None and section.figures.visible
        heat = section.heatmap.object.get(0)
        assert heat.vdims[0].name == "eq_log2_ratio"
        assert heat.data["format_a"].tolist() == table["format_a"].tolist()
    # double: 8×8 costs more than 16×16, so no pair is a gain by its paired ratio alone, and
    # the 5.75-bpw asymmetric one lies past every f16 double format
    assert (double["bpw_diff"] > 0).all()
    assert (double["gain"] == (double["eq_ratio"] < 1)).all()
    assert OUT_OF_RANGE in set(double["eq_status"])
    # ≥ 4 significant digits in the table: ratios to 4 decimals (all ≥ 0.1 here), errors d.ddde-x
    f = page.single.table.formatters
    assert f["ratio at equal bpw"].format == "0.0000" and f["paired ratio"].format == "0.0000"
    assert f["nmse A"].precision == 3 and f["ratio at equal bpw"].nan_format == OUT_OF_RANGE
    assert (single["ratio"] >= 0.1).all()


def test_a_equals_b_reports_no_gain(fp8_store):
    """f16 against f16: the seed's pairing finds B/2 better at +bpw; none of it is a gain, and
    no row is highlighted."""
    page = Fp8Page(store=fp8_store)
    page.enc_a = "f16"
    table = page.single.table.value
    assert len(table) == 3 and (table["paired ratio"] < 1).all()
    assert not table["gain"].any() and (table["ratio at equal bpw"].dropna() >= 1).all()
    assert page.single.summary.object.startswith("At equal bpw: f16 at B/2 beats the f16 curve in 0 of 3 pairs")
    assert page.single.paired.object.endswith("0 of them at equal or lower bpw.")
    styles = page.single.table._get_style_data()["data"]
    assert not any(styles.values())


def test_heatmap_colour_toggle(fp8_store):
    page = Fp8Page(store=fp8_store)
    assert page.single.heatmap.object.get(0).vdims[0].name == "eq_log2_ratio"
    assert "f16 curve at equal bpw" in page.single.heatmap.object.opts.get().kwargs["title"]
    page.colour_by = "paired"
    assert page.single.heatmap.object.get(0).vdims[0].name == "log2_ratio"
    assert page.double.heatmap.object.get(0).vdims[0].name == "log2_ratio"
    assert page.single.heatmap.object.opts.get().kwargs["title"] == "nmse(B/2, e4m3 (normalizer)) / nmse(B, f16)"


def test_encoding_a_changes_everything_and_missing_sides_are_named(fp8_store):
    page = Fp8Page(store=fp8_store)
    page.enc_a = "bf16"
    assert set(page.single.table.value["format_a"]) == {"Q4s16_bf16", "Q4a16_bf16"}
    assert page.single.summary.object.startswith("At equal bpw: bf16 at B/2 beats the f16 curve in ")
    assert "Single quantization: blocks of B/2 with bf16 scales" in page.single.heading.object
    # no bf16 double formats: one line says so and nothing is drawn
    assert page.double.summary.object == "missing: the store has no double formats with bf16 scales"
    assert not page.double.figures.visible and page.double.table.value.empty
    page.enc_a = "e4m3_nonorm"
    assert page.single.table.value["format_a"].tolist() == ["Q4s16_e4m3_nonorm"]
    page.enc_a, page.super_bits = "e4m3", "8"
    assert page.double.table.value["format_a"].tolist() == ["Q(4s8)xQ(8s8)_e4m3"]
    page.metric = "sqnr_db"
    assert {"sqnr_db A", "sqnr_db B"} <= set(page.single.table.value.columns)
    assert (page.single.table.value["paired ratio"] > 0).all()


def test_gain_rows_are_styled_in_the_table(fp8_store):
    page = Fp8Page(store=fp8_store)
    for section in (page.single, page.double):
        shown = section.table.value
        styles = section.table._get_style_data()["data"]     # what Tabulator sends to the browser
        styled_rows = {r for r, cells in styles.items() if cells}
        expected = {i for i, row in shown.iterrows() if gain_row_styles(row)[0]}
        assert styled_rows == expected == set(shown.index[shown["gain"].astype(bool)])
    assert set(page.single.table.value.index[page.single.table.value["gain"]])      # some gains to show


def test_reload_picks_up_a_new_model(fp8_store, tmp_path):
    import shutil
    store = tmp_path / "store"
    shutil.copytree(fp8_store, store)
    page = Fp8Page(store=store)
    other = st.results(store).assign(model="other-model")
    other = other[other["format"].isin(["Q4s16_e8m0", "Q4s32", "Q4s16_e4m3"])]
    st.write(store, "results", other)
    page.reload()
    assert list(page.param.model.objects) == ["all-MiniLM-L6-v2", "other-model"]
    page.model = "other-model"
    assert list(page.param.enc_a.objects) == ["f16", "e4m3"] and page.enc_a == "e4m3"
    assert page.single.table.value["format_a"].tolist() == ["Q4s16_e4m3"]
    assert page.double.summary.object == "missing: the store has no double formats with e4m3 (normalizer) scales"


def test_empty_and_unreadable_stores(tmp_path):
    page = Fp8Page(store=tmp_path / "nothing")
    assert page.message.visible and EMPTY_STORE in page.message.object
    assert not page.single.layout.visible and page.controls[0].disabled
    pn.panel(page).get_root()
    bad = tmp_path / "bad" / "model=x" / "table=results"
    bad.mkdir(parents=True)
    (bad / "garbage.parquet").write_bytes(b"not parquet")
    page = Fp8Page(store=tmp_path / "bad")
    assert page.message.alert_type == "danger" and "cannot be read: model=x/table=results/garbage.parquet" \
        in page.message.object
    assert "\n" not in page.message.object


def test_a_store_without_pairable_formats(tmp_path):
    from workbench.sweep import run
    run(None, "Q4_0,Q4s32_rmse", TENSOR, tmp_path, progress=False)
    page = Fp8Page(store=tmp_path)
    assert page.enc_a is None and page.message.visible and page.message.alert_type == "warning"
    assert "no uniform or codebook formats with absmax scales" in page.message.object
    pn.panel(page).get_root()


CODEBOOK_FORMATS = "NF4b64_e4m3,NF4b64,NF4b32,NF4b32_e4m3,AF4b64_e4m3,AF4b64,E2M1b32_e4m3,E2M1b32,NF4b64_dq"


@pytest.fixture(scope="module")
def codebook_store(tmp_path_factory):
    from workbench.sweep import run
    path = tmp_path_factory.mktemp("cb")
    run(None, CODEBOOK_FORMATS, TENSOR, path, progress=False)
    return path


def test_codebook_section_pairs_the_same_code_and_block(codebook_store):
    from workbench.views.ratios import codebook_ratio_table
    page = Fp8Page(store=codebook_store)
    assert page.enc_a == "e4m3" and page.enc_b == "f16"          # codebook encodings alone fill the choices
    single, double, codebook = page.tables()
    assert single.empty and double.empty
    assert sorted(zip(codebook["format_a"], codebook["format_b"])) == [
        ("AF4b64_e4m3", "AF4b64"), ("E2M1b32_e4m3", "E2M1b32"), ("NF4b32_e4m3", "NF4b32"), ("NF4b64_e4m3", "NF4b64")]
    row = codebook.set_index("format_a").loc["NF4b64_e4m3"]
    assert row["code"] == "NF4" and row["block"] == 64 and row["bpw_diff"] < -0.12    # 8 bits vs 16 per 64
    df = st.summary(codebook_store, page.model)
    nf4 = df.set_index("format")
    assert row["ratio"] == pytest.approx(nf4.loc["NF4b64_e4m3", "nmse"] / nf4.loc["NF4b64", "nmse"])
    assert page.codebook.layout.visible and "codebook" in page.codebook.summary.object
    assert "NF4b64_dq" not in set(codebook["format_a"]) | set(codebook["format_b"])   # dq: no scale encoding
    same = codebook_ratio_table(df, "f16", "f16")                 # A = B: nothing is a gain
    assert len(same) == 4 and (same["eq_ratio"] >= 1).all() and not same["gain"].any()
    pn.panel(page).get_root()


def test_codebook_section_says_what_is_missing(fp8_store):
    page = Fp8Page(store=fp8_store)
    *_, codebook = page.tables()
    assert codebook.empty and "no codebook formats" in page.codebook.summary.object
