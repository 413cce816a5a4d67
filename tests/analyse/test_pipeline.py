"""The analyse stage through `atlas run` and `atlas analyse`, checked against docs/run_directory.md."""

import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import spearmanr

TABLES = {
    "neutrophil_yield": ["dataset_id", "platform", "n_cells", "n_neutrophils", "neutrophil_fraction"],
    "cell_type_composition": ["cancer_type", "tissue", "cell_type", "n_cells", "fraction"],
    "state_composition": ["cancer_type", "tissue", "neutrophil_state", "n_cells", "fraction"],
    "samples": [
        "dataset_id",
        "cancer_type",
        "patient_id",
        "tissue",
        "sample_id",
        "n_neutrophils",
        "t3_fraction",
    ],
    "patients": ["cancer_type", "patient_id", "tissue", "n_neutrophils", "n_t3", "t3_fraction", "mean_index"],
    "cancer_types": [
        "cancer_type",
        "tissue",
        "n_patients",
        "t3_fraction",
        "t3_fraction_lo",
        "t3_fraction_hi",
        "mean_index",
        "mean_index_lo",
        "mean_index_hi",
        "note",
    ],
    "tissue_comparison": ["cancer_type", "comparison", "n_patients", "median_difference", "p_value"],
    "ranking": ["rank", "cancer_type", "t3_fraction", "t3_fraction_lo", "t3_fraction_hi"],
}


def _atlas(*args, ok=True):
    res = subprocess.run([sys.executable, "-m", "atlas.cli", "-q", *args], capture_output=True, text=True)
    if ok:
        assert res.returncode == 0, res.stderr
    return res


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analyse")
    cfg = {"name": "analyse", "run_dir": str(tmp / "run"), "report": False,
           "simulate": {"n_cells": 3000, "n_datasets": 6, "n_genes": 3000, "seed": 2},
           "integrate": {"n_hvgs": 500, "max_epochs": 8, "batch_size": 512, "metrics": False, "min_cells_per_batch": 5,
                         "early_stopping": False},
           "analyse": {"min_neutrophils_for_subatlas": 50, "subatlas": {"n_hvgs": 300, "max_epochs": 5},
                       "statistics": {"n_boot": 200}}}  # fmt: skip
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = _atlas("run", str(path))
    assert "analyse" in res.stdout
    return tmp / "run"


def test_atlas_interface(run_dir):
    a = ad.read_h5ad(run_dir / "atlas.h5ad")
    for col in [
        "is_neutrophil",
        "neutrophil_confidence",
        "cell_type",
        "neutrophil_state",
        "reprogramming_index",
        "reprogramming_pseudotime",
        "T3_proxy",
        "blood_like",
        "truth_cell_type",
        "truth_state",
        "leiden",
    ]:
        assert col in a.obs, col
    assert {"X_scVI", "X_umap"} <= set(a.obsm)
    neut = a.obs["is_neutrophil"].to_numpy(bool)
    assert 0 < neut.sum() < a.n_obs
    assert a.obs.loc[neut, "reprogramming_index"].notna().all()
    assert (
        a.obs.loc[~neut, "reprogramming_index"].isna().all()
        and a.obs.loc[~neut, "neutrophil_state"].isna().all()
    )
    assert set(a.obs.loc[neut, "neutrophil_state"].astype(str)) <= {
        "immature",
        "mature",
        "interferon",
        "antigen_presenting",
        "T3",
        "unassigned",
    }
    # the index reads T3_proxy's programme refined on these neutrophils; the axis carries it, and a query that
    # scores it on the store (atlas.query.compare) gets the atlas's own index back
    axis = a.uns["reprogramming_axis"]
    assert list(axis["up"]) == ["T3_proxy", "T3_proxy_refined"]
    assert axis["programmes"]["T3_proxy_refined"]["source"] == "T3_proxy"
    from atlas.query.compare import programme_scores_on_store, reprogramming_index

    names = a.obs_names[neut]
    learned = programme_scores_on_store(run_dir / "store.h5ad", names, axis["programmes"])
    np.testing.assert_allclose(learned["T3_proxy_refined"], a.obs.loc[names, "T3_proxy_refined"], rtol=1e-6)
    assert set(learned.columns) == set(axis["programmes"])
    registry_cols = [c for c in [*axis["up"], *axis["down"]] if c not in learned.columns]
    scores = pd.concat([a.obs.loc[names, registry_cols], learned], axis=1)
    np.testing.assert_allclose(reprogramming_index(scores, dict(axis), np.ones(len(names), bool)),
                               a.obs.loc[names, "reprogramming_index"], rtol=1e-6, atol=1e-9)  # fmt: skip
    refined = pd.read_csv(run_dir / "tables" / "refined_signatures.csv").set_index("signature")
    assert refined.loc["T3_proxy", "refined"] and refined.loc["T3_proxy", "n_genes"] >= 5
    assert set(refined.index) == {"T3_proxy", "blood_like", "SchulteSchrepping_immature", "Wu_IFIT1_ISG15",
                                  "Wu_HLA_DR_CD74"}  # fmt: skip
    # neutrophils found by the pipeline are the simulated ones (a loose bound on a small, briefly trained run)
    truth = a.obs["truth_cell_type"].astype(str) == "neutrophil"
    assert (truth & neut).sum() / neut.sum() > 0.9 and (truth & neut).sum() / truth.sum() > 0.9
    t3 = a.obs.loc[neut & truth, "truth_state"].astype(str) == "T3"
    idx = a.obs.loc[neut & truth, "reprogramming_index"]
    assert idx[t3].median() > idx[~t3].quantile(0.9)
    # the pseudotime runs along the simulated trajectory from the immature root (loose on this small run;
    # the demo-sized figure, Spearman 0.8 vs truth, is measured by scripts/bench_analysis.py)
    pt = a.obs.loc[neut & truth, ["reprogramming_pseudotime", "truth_pseudotime", "truth_state"]].dropna()
    rho = spearmanr(pt["reprogramming_pseudotime"], pt["truth_pseudotime"]).statistic
    by_state = pt.groupby(pt["truth_state"].astype(str))["reprogramming_pseudotime"].median()
    assert rho > 0.1
    assert by_state["immature"] < min(by_state["mature"], by_state["T3"])
    sub = ad.read_h5ad(run_dir / "neutrophils.h5ad")
    assert sub.n_obs == neut.sum() and "neutrophil_leiden" in sub.obs and "X_umap" in sub.obsm
    assert sub.n_vars == 300  # its own HVGs


def test_tables_follow_the_documented_columns(run_dir):
    for name, cols in TABLES.items():
        df = pd.read_csv(run_dir / "tables" / f"{name}.csv")
        assert set(cols) <= set(df.columns), (name, set(cols) - set(df.columns))
        assert not any(c.startswith("Unnamed") for c in df.columns), name
    ct = pd.read_csv(run_dir / "tables" / "cancer_types.csv")
    with_ci = ct.dropna(subset=["t3_fraction_lo"])
    assert (with_ci["t3_fraction_lo"] <= with_ci["t3_fraction"]).all()
    assert (with_ci["t3_fraction"] <= with_ci["t3_fraction_hi"]).all()
    blood = ct[ct["tissue"] == "blood"]
    assert (blood["t3_fraction"] < 0.1).all()
    summary = json.loads((run_dir / "analysis.json").read_text())
    assert summary["n_neutrophils"] == int(
        ad.read_h5ad(run_dir / "atlas.h5ad", backed="r").obs["is_neutrophil"].sum()
    )


def test_analyse_command_with_no_neutrophils_says_so(run_dir, tmp_path):
    strict = tmp_path / "strict.yaml"
    # no cluster stands 100 noise SDs above the baseline and no propagated call is that certain
    strict.write_text(
        yaml.safe_dump({"analyse": {"cell_types": {"min_effect": 100.0, "min_confidence": 0.999}}})
    )
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(run_dir), str(copy)], check=True)
    cfg = yaml.safe_load((copy / "config.resolved.yaml").read_text())
    cfg["run_dir"] = str(copy)
    (copy / "config.resolved.yaml").write_text(yaml.safe_dump(cfg))
    res = _atlas("analyse", str(copy), "--config", str(strict))
    assert "no neutrophils found" in res.stdout
    a = ad.read_h5ad(copy / "atlas.h5ad", backed="r")
    assert not a.obs["is_neutrophil"].any() and not (copy / "neutrophils.h5ad").exists()
    assert (copy / "tables" / "neutrophil_yield.csv").exists()


def test_analyse_refuses_a_non_run_directory(tmp_path):
    res = _atlas("analyse", str(tmp_path), ok=False)
    assert res.returncode == 2 and "not an atlas run directory" in res.stderr


def test_evaluation_against_truth(run_dir):
    from atlas.simulate.evaluate import evaluate_run

    ev = evaluate_run(run_dir)
    assert ev["neutrophil_precision"] > 0.9 and ev["index_auroc_t3"] > 0.85
    assert np.isfinite(ev["pseudotime_spearman"])
    assert len(ev["cancer_types"]) == 6
