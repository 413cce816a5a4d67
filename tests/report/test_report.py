"""The atlas report: self-contained, numbers equal to the tables, robust to missing inputs."""

from __future__ import annotations

import base64
import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from atlas.report import write_report
from atlas.report.html import MISSING, fmt_num

from helpers.report_html import frame, parse_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _same(text: str, value) -> bool:
    """A displayed cell equals a table value: the same formatting, and numerically within rounding."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return text in (MISSING, "")
    if isinstance(value, bool | np.bool_):
        return text == fmt_num(value)
    if isinstance(value, int | float | np.integer | np.floating):
        if text != fmt_num(value):
            return False
        shown = float(text.replace(",", ""))
        return math.isclose(shown, float(value), rel_tol=5e-3, abs_tol=1e-12)
    return text == str(value)


def _assert_table_equals_csv(parsed, table_id, csv, max_rows=None):
    df = pd.read_csv(csv)
    shown = frame(parsed, table_id)
    assert list(shown.columns) == list(df.columns), table_id
    if max_rows is not None:
        df = df.head(max_rows)
    assert len(shown) == len(df), table_id
    for i in range(len(df)):
        for c in df.columns:
            assert _same(shown[c].iloc[i], df[c].iloc[i]), (table_id, i, c, shown[c].iloc[i], df[c].iloc[i])


# ------------------------------------------------------------------------------ written, self-contained
def test_report_is_written_with_figures(full_run):
    run, path = full_run
    assert path == run / "report.html" and path.exists()
    parsed = parse_report(path)
    figs = run / "figures"
    pngs = sorted(p.stem for p in figs.glob("*.png"))
    assert len(parsed.imgs) == len(pngs) >= 15
    for stem in pngs:  # every matplotlib figure also as PDF (the integrate stage's metrics.png is a copy)
        if stem != "integration_metrics":
            assert (figs / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    for name in ("umap_dataset_id", "umap_cancer_type", "umap_tissue", "umap_cell_type", "umap_neutrophil_state",
                 "umap_scores", "subatlas_state", "subatlas_reprogramming_index", "subatlas_reprogramming_pseudotime",
                 "composition_cell_type", "composition_neutrophil_state", "distribution_reprogramming_index",
                 "forest_t3_fraction", "tissues_t3_fraction", "neutrophil_yield", "integration_metrics"):
        assert name in pngs, name
    assert not any("could not be drawn" in n for n in parsed.notes), parsed.notes
    assert not list(run.glob(".atlas-tmp-*")) and not list(figs.glob(".atlas-tmp-*"))


def test_report_is_self_contained(full_run):
    from PIL import Image

    _, path = full_run
    text = path.read_text()
    parsed = parse_report(path)
    assert not ({"script", "link", "iframe", "object", "embed"} & parsed.tags)
    for tag, attr, url in parsed.urls:
        assert not re.match(r"^(https?:)?//", url, re.I), (tag, attr, url)
        assert url.startswith(("data:", "#")), (tag, attr, url)
    assert "@import" not in text and "url(" not in text
    assert parsed.imgs
    for src in parsed.imgs:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == PNG_MAGIC
        with Image.open(io.BytesIO(raw)) as im:
            assert im.width > 100 and im.height > 100


def test_every_figure_has_a_caption(full_run):
    _, path = full_run
    parsed = parse_report(path)
    assert len(parsed.captions) == len(parsed.imgs)
    assert all(len(c) > 60 for c in parsed.captions)
    joined = " ".join(parsed.captions)
    assert "unit of the statistics" in joined and "patients" in joined


# ------------------------------------------------------------------------------ numbers equal the tables
@pytest.mark.parametrize("table_id, csv, max_rows", [
    ("ranking", "tables/ranking.csv", None),
    ("cancer_types", "tables/cancer_types.csv", None),
    ("tissue_comparison", "tables/tissue_comparison.csv", None),
    ("patients", "tables/patients.csv", 50),
    ("samples", "tables/samples.csv", 30),
    ("neutrophil_yield", "tables/neutrophil_yield.csv", None),
    ("index_vs_pseudotime", "tables/index_vs_pseudotime.csv", None),
    ("state_clusters", "tables/state_clusters.csv", None),
    ("refined_signatures", "tables/refined_signatures.csv", None),
    ("qc_neutrophils", "store.neutrophils.csv", None),
])
def test_tables_in_report_equal_csvs(full_run, table_id, csv, max_rows):
    run, path = full_run
    _assert_table_equals_csv(parse_report(path), table_id, run / csv, max_rows)


def test_qc_and_metrics_tables_equal_their_csvs(full_run):
    run, path = full_run
    parsed = parse_report(path)
    qc = pd.read_csv(run / "store.qc.csv")
    shown = frame(parsed, "qc")
    assert "dataset_id" in shown and "cells_out" in shown and len(shown) == len(qc)
    for c in shown.columns:
        assert all(_same(t, v) for t, v in zip(shown[c], qc[c], strict=True)), c
    m = pd.read_csv(run / "reference" / "metrics.csv")
    shown = frame(parsed, "metrics")
    for c in shown.columns:
        assert all(_same(t, v) for t, v in zip(shown[c], m[c], strict=True)), c


def test_headline_ranking_and_intervals(full_run):
    run, path = full_run
    parsed = parse_report(path)
    r = pd.read_csv(run / "tables" / "ranking.csv")
    head = frame(parsed, "headline")
    assert head["cancer type"].tolist() == r["cancer_type"].tolist()
    iv = next(c for c in head.columns if c.startswith("95 % interval") and "index" not in c)
    for (_, row), (_, shown) in zip(r.iterrows(), head.iterrows(), strict=True):
        assert _same(shown["T3-like fraction"], row["t3_fraction"])
        assert _same(shown["mean index"], row["mean_index"])
        assert _same(shown["patients"], row["n_patients"])
        if row["n_patients"] == 1 and np.isnan(row["t3_fraction_lo"]):
            assert shown[iv] == MISSING and shown["note"] == "single patient: no interval"
        else:
            lo, hi = shown[iv].split(" – ")
            assert _same(lo, row["t3_fraction_lo"]) and _same(hi, row["t3_fraction_hi"])
    text = path.read_text()
    top = r.iloc[0]
    assert f"{top['cancer_type']} ({fmt_num(top['t3_fraction'])}; 95 % interval" in text
    assert "from a beta-binomial model of the patients" in text  # the run's interval method (analysis.json)
    assert any("melanoma (tumour): single patient: its interval rests on the model's prior" in n for n in parsed.notes)


def test_summary_numbers_equal_tables_and_atlas(full_run):
    import anndata as ad

    run, path = full_run
    stats = parse_report(path).stats
    y = pd.read_csv(run / "tables" / "neutrophil_yield.csv")
    obs = ad.read_h5ad(run / "atlas.h5ad", backed="r").obs
    assert stats["cells"] == fmt_num(len(obs)) == fmt_num(int(y["n_cells"].sum()))
    assert stats["neutrophils"] == fmt_num(int(y["n_neutrophils"].sum())) == fmt_num(int(obs["is_neutrophil"].sum()))
    assert stats["data sets"] == str(obs["dataset_id"].nunique())
    assert stats["cancer types"] == str(obs["cancer_type"].nunique())
    assert stats["T3-like neutrophils"] == fmt_num(int((obs["neutrophil_state"] == "T3").sum()))
    assert stats["patients"] == str(len(pd.read_csv(run / "tables" / "patients.csv")[["cancer_type", "patient_id"]]
                                        .drop_duplicates()))


def test_composition_tables_equal_csvs(full_run):
    run, path = full_run
    parsed = parse_report(path)
    for name, cat in (("cell_type_composition", "cell_type"), ("state_composition", "neutrophil_state")):
        long = pd.read_csv(run / "tables" / f"{name}.csv")
        shown = frame(parsed, name)
        assert set(shown.columns) == {"cancer_type", "tissue", *long[cat].unique()}
        lookup = {(r.cancer_type, r.tissue, r[cat]): r.fraction for _, r in long.iterrows()}
        for _, row in shown.iterrows():
            for c in shown.columns[2:]:
                v = lookup.get((row["cancer_type"], row["tissue"], c), float("nan"))
                assert _same(row[c], v), (name, row["cancer_type"], row["tissue"], c)


def test_integration_section_says_whether_scvi_beats_harmony(full_run):
    run, path = full_run  # the synthetic metrics.csv has scVI behind Harmony on batch correction
    notes = " ".join(parse_report(path).notes)
    assert "Baseline check: scVI mixes batches worse than the Harmony baseline" in notes
    assert "batch correction 0.62 vs Harmony 0.73" in notes and "train_steps" in notes


# ------------------------------------------------------------------------------ missing inputs
def _notes(path) -> str:
    parsed = parse_report(path)
    assert not any("could not be drawn" in n for n in parsed.notes), parsed.notes
    return " ".join(parsed.notes)


def test_no_neutrophils_found(make_run):
    run = make_run(with_neutrophils=False)
    path = write_report(run)
    notes = _notes(path)
    assert "No neutrophils were found" in notes and "no neutrophils found" in notes  # ours + analysis.json's
    assert parse_report(path).stats["neutrophils"] == "0"
    assert (run / "figures" / "umap_dataset_id.png").exists()


def test_analysis_not_run(make_run):
    run = make_run(analysis=False)
    path = write_report(run)
    notes = _notes(path)
    assert "analysis stage has not run" in notes
    parsed = parse_report(path)
    assert parsed.stats["cells"] == fmt_num(1500) or int(parsed.stats["cells"].replace(",", "")) > 1000
    figs = {p.stem for p in (run / "figures").glob("*.png")}
    assert {"umap_dataset_id", "umap_cancer_type", "umap_tissue", "umap_scores", "integration_metrics"} <= figs
    assert "qc" in parsed.tables and "metrics" in parsed.tables


def test_metrics_and_subatlas_missing(make_run):
    run = make_run(metrics=False, subatlas=False)
    notes = _notes(write_report(run))
    assert "No integration metrics" in notes and "No neutrophil sub-atlas" in notes


def test_missing_tables_and_a_damaged_atlas(copy_run):
    (copy_run / "tables" / "ranking.csv").unlink()
    (copy_run / "tables" / "cancer_types.csv").write_text("")
    (copy_run / "tables" / "tissue_comparison.csv").unlink()
    (copy_run / "neutrophils.h5ad").write_bytes(b"not an hdf5 file")
    path = write_report(copy_run)
    notes = _notes(path)
    assert "tables/ranking.csv is missing or empty" in notes
    assert "Could not read neutrophils.h5ad" in notes
    assert "tissue_comparison.csv is missing" in notes


def test_a_pooled_cancer_type_is_drawn_and_flagged(copy_run):
    ct = pd.read_csv(copy_run / "tables" / "cancer_types.csv")
    note = "no patient with >= 5 neutrophils: pooled over 8 cells of 5 patient(s), wide interval (patients, then their cells)"
    pooled = {"cancer_type": "NSCLC", "tissue": "tumour", "n_patients": 0, "n_neutrophils": 8, "t3_fraction": 0.5,
              "t3_fraction_lo": 0.2, "t3_fraction_hi": 0.8, "mean_index": 0.3, "note": note}  # fmt: skip
    pd.concat([ct, pd.DataFrame([pooled])], ignore_index=True).to_csv(copy_run / "tables" / "cancer_types.csv", index=False)
    notes = _notes(write_report(copy_run))
    assert f"NSCLC (tumour): {note}: read it as a pointer, not an estimate." in notes


def test_bare_run_directory(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"name": "empty"}))
    path = write_report(tmp_path)
    notes = _notes(path)
    assert "No atlas was found" in notes and "provenance.json is missing" in notes


def test_custom_out_and_rerun_replaces(full_run, tmp_path):
    run, _ = full_run
    out = tmp_path / "elsewhere" / "r.html"
    assert write_report(run, out=out) == out and out.exists()
    assert (out.parent / "figures" / "umap_cancer_type.png").exists()


def test_not_a_run_dir(tmp_path):
    from atlas.core.errors import AtlasError

    with pytest.raises(AtlasError, match="not an atlas run directory"):
        write_report(tmp_path)
    with pytest.raises(AtlasError, match="not a directory"):
        write_report(tmp_path / "nope")


@pytest.mark.parametrize(
    ("extra", "said"),
    [({"fallback_from": ["signature"]}, "no gene told the trajectory's start from its end on its own here"),
     ({"n_axis_genes": [12], "axis_spearman": [0.734]}, "the score on the 12 genes that tell its start from its end "
      "(state immature -> state T3) orders the neutrophils with Spearman 0.73 to it"),
     ({"n_axis_genes": [0], "axis_spearman": [float("nan")]}, "so it has no cross-check")],
)  # fmt: skip
def test_pseudotime_caption_names_the_state_contrast_and_its_cross_check(extra, said):
    from atlas.report.sections import _pseudotime_caption

    class Inputs:
        def table(self, name):
            return pd.DataFrame({"method": ["state_contrast"], "start_cells": ["state immature"],
                                 "end_cells": ["state T3"], **extra}) if name == "index_vs_pseudotime" else None  # fmt: skip

    caption = _pseudotime_caption(Inputs())
    assert "T3-like end's evidence (the reprogramming index by default) minus the immature state's" in caption
    assert said in caption


def test_index_vs_pseudotime_table_says_when_the_pseudotime_is_built_on_the_index():
    from atlas.report.sections import _built_on_index

    row = {"method": ["state_contrast"], "contrast": ["reprogramming_index - state_z_immature"]}
    assert "agree by construction; axis_spearman" in _built_on_index(pd.DataFrame({**row, "axis_spearman": [0.5]}))
    fallback = _built_on_index(pd.DataFrame({**row, "axis_spearman": [float("nan")]}))
    assert "agree by construction)" in fallback and "axis_spearman" not in fallback
    assert _built_on_index(pd.DataFrame({"method": ["signature"]})) == "" and _built_on_index(None) == ""


def test_state_caption_names_the_rule():
    from types import SimpleNamespace

    from atlas.report.sections import _state_rule_caption

    own = {"cells": "own", "cell_cuts": {"T3": 1.234, "mature": float("nan")}, "default_state_used": "mature"}
    caption = _state_rule_caption(SimpleNamespace(atlas=SimpleNamespace(uns={"state_rule": own})))
    assert "T3 z >= 1.23" in caption and "mature z" not in caption and "default state (mature)" in caption
    assert "shrunk" not in caption  # no evidence weights recorded: nothing said about them
    weights = {**own, "evidence_weight": {"T3": 0.999, "antigen_presenting": 0.28}}
    caption = _state_rule_caption(SimpleNamespace(atlas=SimpleNamespace(uns={"state_rule": weights})))
    assert "shrunk by their reliability first: antigen_presenting kept 0.28" in caption and "T3 kept" not in caption
    smoothed = SimpleNamespace(atlas=SimpleNamespace(uns={"state_rule": {"cells": "smoothed"}}))
    assert "graph-smoothed rule" in _state_rule_caption(smoothed)
    assert _state_rule_caption(SimpleNamespace(atlas=None)) == ""


def test_state_calls_expected_precision_in_the_caption_and_a_warning_when_mostly_noise():
    from types import SimpleNamespace

    from atlas.report.html import HtmlReport
    from atlas.report.sections import _expected_precision_caption, _unreliable_states_note

    rule = {"expected_precision": {"T3": 0.71, "antigen_presenting": 0.02, "mature": 0.35},
            "reliability": {"T3": 0.63, "antigen_presenting": 0.0}, "default_state_used": "mature"}
    inputs = SimpleNamespace(atlas=SimpleNamespace(uns={"state_rule": rule}))
    assert "T3 0.71, antigen_presenting 0.02" in _expected_precision_caption(inputs)
    rep = HtmlReport("t")
    _unreliable_states_note(rep, inputs)
    html = rep.to_html()
    assert "antigen_presenting 0.02 (reliability 0.00)" in html and "T3 0.71" not in html
    assert "mature 0.35" not in html  # the default state is what no other state's evidence reaches: not warned of
    old = SimpleNamespace(atlas=SimpleNamespace(uns={"state_rule": {"cells": "own"}}))  # analysed before stop 40
    rep = HtmlReport("t")
    _unreliable_states_note(rep, old)
    assert _expected_precision_caption(old) == "" and "Expected precision" not in rep.to_html()


def test_samples_whose_doublet_calls_were_not_trusted_are_named():
    from atlas.report.html import HtmlReport
    from atlas.report.sections import _untrusted_doublet_samples_note

    qc = pd.DataFrame({"dataset_id": ["d1", "d2"], "doublet_samples_not_trusted": [0, 2]})
    rep = HtmlReport("t")
    _untrusted_doublet_samples_note(rep, qc)
    assert "in 2 sample(s) scrublet" in rep.to_html() and ": d2 (2)" in rep.to_html()
    for quiet in (qc.assign(doublet_samples_not_trusted=0), qc.drop(columns="doublet_samples_not_trusted")):
        rep = HtmlReport("t")
        _untrusted_doublet_samples_note(rep, quiet)  # none failed, or a store written before the column
        assert "scrublet" not in rep.to_html()


def test_qc_note_compares_what_qc_cost_neutrophils_with_the_other_cells():
    from atlas.report.html import HtmlReport
    from atlas.report.sections import _qc_neutrophil_note

    t = pd.DataFrame({"dataset_id": ["d1", "d1", "d2"], "cell_type": ["neutrophil", "T", "neutrophil"],
                      "cells_in_store": [90, 980, 50], "removed_second_pass": [2, 0, 0],
                      "removed_at_ingest": [8, 20, 0], "removed_high_mito": [8, 15, 0], "removed_doublets": [0, 5, 0]})
    t["cells_input"] = t["cells_in_store"] + t["removed_at_ingest"]
    rep = HtmlReport("t")
    _qc_neutrophil_note(rep, t)
    html = rep.to_html()
    assert "QC removed 10 of 148 cells that are or map to neutrophils (6.8 %; at ingest: high_mito 8;" in html
    assert "left out: 2), and 2.0 % of the other cells" in html and "more than twice the rate" in html
    assert "else unknown (0 of 28;" in html and "mode: fixed" not in html
    rep = HtmlReport("t")
    _qc_neutrophil_note(rep, t, fixed=["d1"])
    assert "d1 used fixed thresholds (qc.thresholds.mode: fixed)" in rep.to_html()
    rep = HtmlReport("t")
    _qc_neutrophil_note(rep, t.assign(removed_high_mito=[1, 15, 0], removed_at_ingest=[1, 20, 0]))
    assert "QC removed 3 of 148 cells that are or map to neutrophils (2.0 %; at ingest: high_mito 1;" in rep.to_html() and "twice" not in rep.to_html()
    rep = HtmlReport("t")
    _qc_neutrophil_note(rep, t.drop(columns=["removed_at_ingest", "cells_input"]))  # no audit: no note
    assert "QC removed" not in rep.to_html()


def test_a_run_from_before_the_interval_setting_says_bootstrap(make_run):
    # runs analysed before `analyse.statistics.interval` existed had bootstrap intervals: the report says so
    import json

    import yaml

    from atlas.report import write_report

    run = make_run()
    for name, load, dump in (("analysis.json", json.loads, json.dumps), ("config.resolved.yaml", yaml.safe_load, yaml.safe_dump)):
        doc = load((run / name).read_text())
        (doc["settings"] if name == "analysis.json" else doc["analyse"])["statistics"].pop("interval")
        (run / name).write_text(dump(doc))
    text = write_report(run).read_text()
    assert "Intervals are bootstrap intervals over patients." in text and "beta-binomial" not in text
