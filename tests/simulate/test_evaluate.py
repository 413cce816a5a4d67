"""The robustness metrics of atlas.simulate.evaluate on small hand-made frames."""

import numpy as np
import pandas as pd
import pytest

from atlas.simulate.evaluate import (
    cancer_figures,
    cell_type_figures,
    detection_figures,
    expected_calibration_error,
    input_truth,
    integration_figures,
    reliability_table,
)


def test_reliability_table_bins_and_perfect_calibration_has_zero_ece():
    # 10 cells at 0.05 confidence with 0.0 accuracy would be miscalibrated; build an exact match instead:
    # confidence 0.25 -> 1 of 4 right, 0.75 -> 3 of 4 right, 1.0 -> all right
    conf = np.array([0.25] * 4 + [0.75] * 4 + [1.0] * 2)
    correct = np.array([1, 0, 0, 0, 1, 1, 1, 0, 1, 1], dtype=bool)
    table = reliability_table(conf, correct, n_bins=10)
    assert len(table) == 10 and table["n_cells"].sum() == 10
    assert table.loc[2, "n_cells"] == 4 and table.loc[7, "n_cells"] == 4
    assert table.loc[9, "n_cells"] == 2  # 1.0 falls in the last bin
    assert np.isnan(table.loc[0, "accuracy"])
    assert expected_calibration_error(table) == pytest.approx(0.0)


def test_ece_of_overconfident_calls():
    conf = np.full(10, 0.95)
    correct = np.array([True] * 5 + [False] * 5)
    ece = expected_calibration_error(reliability_table(conf, correct))
    assert ece == pytest.approx(0.45)
    # NaN confidences are left out; an empty table has no ECE
    assert np.isnan(expected_calibration_error(reliability_table(np.array([np.nan]), np.array([True]))))


def _truth_input():
    cells = [f"d1:{i}" for i in range(6)] + [f"d2:{i}" for i in range(4)]
    return pd.DataFrame(
        {
            "dataset_id": ["d1"] * 6 + ["d2"] * 4,
            "droplet": [True] * 6 + [False] * 4,
            "truth_cell_type": ["neutrophil"] * 4 + ["T"] * 2 + ["neutrophil"] * 2 + ["B"] * 2,
            "truth_quality": ["ok", "ok", "ok", "low_quality", "ok", "ok", "ok", "ok", "ok", "ok"],
        },
        index=cells,
    )


def test_detection_counts_qc_losses_against_the_input():
    truth = _truth_input()
    # QC removed d1:3 (low quality) and d1:2; d2:1 is analysed but failed a second QC pass
    obs = truth.drop(index=["d1:2", "d1:3"]).copy()
    obs["passed_qc"] = ~obs.index.isin(["d2:1"])
    called = obs.index.isin(["d1:0", "d1:1", "d1:4", "d2:0", "d2:1"])  # d1:4 is a T cell; d2:1 failed QC
    out = detection_figures(truth, obs, called)
    assert out["n_input_neutrophils"] == 6
    assert out["neutrophils_kept"] == pytest.approx(3 / 6)  # d1:0, d1:1, d2:0
    assert out["neutrophils_kept_droplet"] == pytest.approx(2 / 4)
    assert out["neutrophils_kept_ok"] == pytest.approx(3 / 5)
    assert out["neutrophil_precision"] == pytest.approx(3 / 4)  # d2:1 does not count (failed QC)
    assert out["neutrophil_recall"] == pytest.approx(3 / 6)
    assert out["neutrophil_recall_ok"] == pytest.approx(3 / 5)  # d1:3 (low quality) is not asked for
    # without passed_qc every analysed cell counts as kept
    out = detection_figures(truth, obs.drop(columns="passed_qc"), None)
    assert out["neutrophils_kept"] == pytest.approx(4 / 6) and "neutrophil_precision" not in out


def test_cell_type_accuracy_counts_unknown_as_wrong_and_skips_other_truths():
    truth = np.array(["neutrophil", "T", "B", "mast", "NK", "doublet"])
    pred = np.array(["neutrophil", "unknown", "B", "T", "T", "T"])
    out, table = cell_type_figures(truth, pred, np.array([0.9, 0.4, 0.8, 0.9, 0.6, 0.9]))
    assert out["cell_type_accuracy"] == pytest.approx(2 / 4)
    assert out["cell_type_unknown_share"] == pytest.approx(1 / 4)
    assert table["n_cells"].sum() == 4  # the mast cell and the doublet are not of the nine types
    assert out["cell_type_ece"] == pytest.approx((0.1 + 0.4 + 0.2 + 0.6) / 4)
    out, table = cell_type_figures(truth, pred)
    assert table is None and "cell_type_ece" not in out
    # cells of a type outside the nine (the mast cell) are right only as unknown; without such cells: NaN.
    # A doublet is no type at all: it is not counted there
    assert out["outside_panel_unknown_share"] == 0.0
    pred[3] = "unknown"
    assert cell_type_figures(truth, pred)[0]["outside_panel_unknown_share"] == 1.0
    assert np.isnan(cell_type_figures(truth[truth != "mast"], pred[truth != "mast"])[0]["outside_panel_unknown_share"])


def test_doublet_figures_count_what_qc_removed_and_what_was_called_neutrophil():
    truth = _truth_input()
    assert not {k for k in detection_figures(truth, truth, None) if "doublet" in k}  # a cohort without doublets
    truth.loc[["d1:4", "d2:1", "d2:2"], "truth_cell_type"] = "doublet"
    truth["truth_doublet"] = ""
    truth.loc[["d1:4", "d2:1", "d2:2"], "truth_doublet"] = ["T+neutrophil", "neutrophil+tumour_epithelial", "B+T"]
    obs = truth.drop(index=["d2:2"]).copy()  # QC removed one doublet ...
    obs["passed_qc"] = ~obs.index.isin(["d2:1"])  # ... and a second pass another
    called = obs.index.isin(["d1:0", "d1:1", "d1:4", "d2:1"])
    out = detection_figures(truth, obs, called)
    assert out["doublets_removed"] == pytest.approx(2 / 3)
    assert out["neutrophil_calls_doublet_share"] == pytest.approx(1 / 3)  # d1:4 of d1:0, d1:1, d1:4
    assert out["neutrophil_doublets_called_neutrophil"] == 1.0  # d1:4, the one left with a neutrophil in it
    assert out["neutrophil_precision"] == pytest.approx(2 / 3)  # a doublet is no neutrophil


def test_integration_figures_read_the_first_batch_key():
    m = pd.DataFrame(
        {
            "embedding": ["X_pca", "X_harmony", "X_scVI"] * 2,
            "method": ["Unintegrated (PCA)", "Harmony", "scVI"] * 2,
            "iLISI": [0.02, 0.5, 0.6, 0.1, 0.2, 0.3],
            "Batch correction": [0.3, 0.7, 0.8, 0.0, 0.0, 0.0],
            "batch_key": ["dataset_id"] * 3 + ["sample_id"] * 3,
        }
    )
    out = integration_figures(m)
    assert out["ilisi_scvi"] == 0.6 and out["ilisi_harmony"] == 0.5 and out["ilisi_pca"] == 0.02
    assert out["batch_correction_scvi"] == 0.8 and out["batch_correction_harmony"] == 0.7
    # display names only, no Harmony row
    out = integration_figures(m.drop(columns=["embedding", "batch_key"]).iloc[[0, 2]])
    assert out["ilisi_scvi"] == 0.6 and np.isnan(out["ilisi_harmony"])
    assert np.isnan(integration_figures(pd.DataFrame())["ilisi_scvi"])


def test_cancer_figures_interval_and_missing_cancers():
    truth = pd.DataFrame({"cancer_type": list("ABCDEF"), "mean_t3_fraction": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    est = pd.DataFrame(
        {
            "cancer_type": list("ABCDE"),
            "t3_fraction": [0.12, 0.18, 0.35, 0.41, 0.6],
            "t3_fraction_lo": [0.05, 0.1, 0.31, 0.3, 0.45],
            "t3_fraction_hi": [0.2, 0.3, 0.4, 0.5, 0.7],
        }
    )
    out, table = cancer_figures(est, truth)
    assert out["cancer_spearman"] == pytest.approx(1.0)
    assert out["n_cancers"] == 6 and out["n_cancers_reported"] == 5
    assert out["n_cancers_in_interval"] == 4  # C's interval misses 0.3, F has none
    assert out["n_cancers_in_interval_single_patient"] == 0
    assert not table.set_index("cancer_type").loc["F", "truth_in_interval"]
    notes = ["single patient: wide interval from the model's prior on how patients differ", "",
             "single patient: wide interval from the model's prior on how patients differ",
             "no patient with >= 5 neutrophils: pooled over 3 cells of 1 patient(s), a wide interval from the model's "
             "prior", "no patient with >= 5 neutrophils: pooled over 9 cells of 11 patient(s), wide interval"]
    out, _ = cancer_figures(est.assign(note=notes), truth)  # A and D covered from one patient; C missed; E of 11
    assert out["n_cancers_in_interval"] == 4 and out["n_cancers_in_interval_single_patient"] == 2
    out, _ = cancer_figures(est[["cancer_type", "t3_fraction"]].assign(t3_fraction=[5, 4, 3, 2, 1]), truth)
    assert out["cancer_spearman"] == pytest.approx(-1.0) and np.isnan(out["n_cancers_in_interval"])


def test_input_truth_reads_h5ad_and_metadata_csv(tmp_path):
    import anndata as ad
    import scipy.sparse as sp
    import yaml

    ds = tmp_path / "datasets"
    ds.mkdir()
    obs = pd.DataFrame({"truth_cell_type": ["neutrophil", "T"], "patient": ["p1", "p1"]}, index=["a", "b"])
    ad.AnnData(sp.csr_matrix(np.ones((2, 3), np.float32)), obs=obs).write_h5ad(ds / "d1.h5ad")
    pd.DataFrame({"barcode": ["c"], "truth_cell_type": ["B"], "Patient": ["p2"]}).to_csv(
        ds / "d2_metadata.csv", index=False
    )
    (ds / "d2.csv").write_text("gene,c\nG1,1\n")
    (tmp_path / "truth").mkdir()
    pd.DataFrame({"dataset": ["d1", "d2"], "platform": ["10x_3p", "Smart-seq2"]}).to_csv(
        tmp_path / "truth" / "patients.csv", index=False
    )
    cfg = {"datasets": [{"id": "d1", "path": "datasets/d1.h5ad"},
                        {"id": "d2", "path": "datasets/d2.csv", "obs_path": "datasets/d2_metadata.csv"}]}  # fmt: skip
    (tmp_path / "ingest.yaml").write_text(yaml.safe_dump(cfg))
    out = input_truth(tmp_path)
    assert list(out.index) == ["d1:a", "d1:b", "d2:c"]
    assert list(out["truth_cell_type"]) == ["neutrophil", "T", "B"]
    assert list(out["droplet"]) == [True, True, False]
    assert "patient" not in out.columns
