"""scripts/independent_cohort.py: the second generator writes data atlas reads and truth the evaluation reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import independent_cohort  # noqa: E402

from atlas.ingest.settings import load_ingest_config  # noqa: E402
from atlas.ingest.stage import ingest  # noqa: E402
from atlas.simulate.evaluate import input_truth  # noqa: E402


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("independent")
    return independent_cohort.generate(out, n_cells=600, n_datasets=8, seed=3).parent


@pytest.fixture(scope="module")
def store(cohort, tmp_path_factory):
    path = tmp_path_factory.mktemp("independent_store") / "store.h5ad"
    ingest(load_ingest_config(cohort / "ingest.yaml"), path, overwrite=True)
    return path


def test_every_data_set_is_read_by_atlas_ingest(cohort, store):
    cfg = load_ingest_config(cohort / "ingest.yaml")
    formats = {d.format for d in cfg.datasets}
    assert {"h5ad", "10x_mtx", "csv"} <= formats
    assert {d.species for d in cfg.datasets} == {"human", "mouse"}
    import anndata as ad

    obs = ad.read_h5ad(store, backed="r").obs
    assert set(obs["dataset_id"]) == {d.id for d in cfg.datasets}
    # the data sets' own spellings were mapped onto atlas's vocabulary by the config
    assert set(obs["tissue"].astype(str)) <= {"tumour", "adjacent_normal", "blood"}
    assert set(obs["cancer_type"].astype(str)) <= set(independent_cohort.CANCERS)
    assert "truth_cell_type" in obs  # kept for evaluation only (keep_obs)


def test_truth_tables_in_the_evaluation_layout(cohort):
    truth = input_truth(cohort)
    assert set(truth["truth_cell_type"]) == set(independent_cohort.CELL_TYPES)
    neut = truth[truth["truth_cell_type"] == "neutrophil"]
    assert set(neut["truth_state"]) <= {"immature", "mature", "interferon", "antigen_presenting", "T3"}
    assert (neut["truth_state"] == "T3").any() and neut["truth_pseudotime"].notna().all()
    assert truth["droplet"].any() and not truth["droplet"].all()
    ct = pd.read_csv(cohort / "truth" / "cancer_types.csv")
    assert sorted(ct["median_t3_fraction"]) == sorted(independent_cohort.CANCER_MEANS)
    # the truth a mean over patients estimates: the logit-normal's mean, pulled towards 0.5 (0.04 -> 0.047)
    mean = ct.set_index("median_t3_fraction")["mean_t3_fraction"]
    assert mean[0.04] == pytest.approx(0.0467, abs=5e-4) and mean[0.5] == pytest.approx(0.5)
    assert (np.sign(mean - mean.index) == np.sign(0.5 - mean.index)).all()


def test_neutrophils_are_low_rna_and_damaged_cells_mito_high(cohort):
    import anndata as ad

    a = ad.read_h5ad(cohort / "datasets" / "study01_PDAC.h5ad")
    n = np.asarray(a.X.sum(axis=1)).ravel()
    types = a.obs["truth_cell_type"].astype(str).to_numpy()
    assert np.median(n[types == "neutrophil"]) < 0.5 * np.median(n[types != "neutrophil"])
    mt = np.asarray(a[:, a.var_names.str.startswith("MT-")].X.sum(axis=1)).ravel() / np.maximum(n, 1)
    damaged = a.obs["truth_quality"].astype(str).to_numpy() == "damaged"
    assert damaged.any() and np.median(mt[damaged]) > 3 * np.median(mt[~damaged])


def test_extra_types_add_cell_types_outside_the_marker_panel(tmp_path):
    from atlas.analyse.settings import DEFAULT_MARKERS

    out = independent_cohort.generate(tmp_path / "x", n_cells=1500, n_datasets=6, seed=1, extra_types=True).parent
    truth = input_truth(out)
    extra = set(truth["truth_cell_type"]) - set(independent_cohort.CELL_TYPES)
    assert extra == set(independent_cohort.EXTRA_MARKERS) and not extra & set(DEFAULT_MARKERS)
    import anndata as ad

    a = ad.read_h5ad(out / "datasets" / "study01_PDAC.h5ad")
    types = a.obs["truth_cell_type"].astype(str).to_numpy()
    cpa3 = np.asarray(a[:, "CPA3"].X.todense()).ravel()
    assert cpa3[types == "mast"].mean() > 5 * cpa3[types != "mast"].mean()  # the mast cells' own marker


def test_droplet_neutrophil_capture_makes_droplet_neutrophils_rare(tmp_path):
    out = independent_cohort.generate(tmp_path / "x", n_cells=3000, n_datasets=8, seed=0,
                                      droplet_neutrophil_capture=0.1).parent  # fmt: skip
    truth = input_truth(out)
    neut = truth["truth_cell_type"] == "neutrophil"
    share = neut.groupby(truth["droplet"]).mean()
    assert share[True] < 0.03 < 0.08 < share[False]  # 10x: ~1-2 % neutrophils; plate/microwell: the tissue's share


def test_doublets_sum_two_cells_of_different_types():
    rng = np.random.default_rng(0)
    types = np.array(["neutrophil"] * 50 + ["T"] * 30 + ["tumour_epithelial"] * 20)
    x = sp.csr_matrix(rng.poisson(3.0, (100, 40)).astype(np.float32))
    y, pair = independent_cohort._add_doublets(np.random.default_rng(1), x, types, 0.2)
    dbl = np.flatnonzero(pair != "")
    assert 8 <= len(dbl) <= 35 and (y[pair == ""] != x[pair == ""]).nnz == 0
    for i in dbl:  # the cell's own counts plus one cell of another type's
        extra = (y[i] - x[i]).toarray().ravel()
        j = [k for k in range(100) if types[k] != types[i] and np.array_equal(x[k].toarray().ravel(), extra)]
        assert j and pair[i] == "+".join(sorted((types[i], types[j[0]])))


def test_a_doublet_cohort_is_the_plain_cohort_plus_its_doublets(tmp_path):
    plain = input_truth(independent_cohort.generate(tmp_path / "a", n_cells=300, n_datasets=3, seed=1).parent)
    dbl = input_truth(independent_cohort.generate(tmp_path / "b", n_cells=300, n_datasets=3, seed=1,
                                                  doublet_rate=0.1).parent)  # fmt: skip
    is_dbl = dbl["truth_cell_type"] == "doublet"
    assert is_dbl[dbl["droplet"]].mean() > is_dbl[~dbl["droplet"]].mean() > 0
    assert (dbl.loc[is_dbl, "truth_doublet"].str.count("\\+") == 1).all()
    keep = ~is_dbl.to_numpy()
    pd.testing.assert_frame_equal(plain.loc[keep, ["truth_cell_type", "truth_state"]],
                                  dbl.loc[keep, ["truth_cell_type", "truth_state"]])  # fmt: skip


def test_sorted_studies_are_mostly_neutrophils_and_the_others_unchanged(tmp_path):
    plain = input_truth(independent_cohort.generate(tmp_path / "a", n_cells=1200, n_datasets=8, seed=1).parent)
    out = independent_cohort.generate(tmp_path / "b", n_cells=1200, n_datasets=8, seed=1, sorted_share=0.375).parent
    mixed = input_truth(out)
    sorted_ds = json.loads((out / "truth" / "generator.json").read_text())["sorted_datasets"]
    assert len(sorted_ds) == 3
    neut_share = (mixed["truth_cell_type"] == "neutrophil").groupby(mixed["dataset_id"]).mean()
    assert (neut_share[sorted_ds] > 0.8).all() and (neut_share.drop(sorted_ds) < 0.4).all()
    rest = ~mixed["dataset_id"].isin(sorted_ds)
    pd.testing.assert_frame_equal(plain.loc[~plain["dataset_id"].isin(sorted_ds), ["truth_cell_type", "truth_state"]],
                                  mixed.loc[rest, ["truth_cell_type", "truth_state"]])  # fmt: skip


def test_same_seed_same_cohort(tmp_path):
    a = independent_cohort.generate(tmp_path / "a", n_cells=300, n_datasets=3, seed=1).parent
    b = independent_cohort.generate(tmp_path / "b", n_cells=300, n_datasets=3, seed=1).parent
    pa, pb = (pd.read_csv(p / "truth" / "patients.csv") for p in (a, b))
    pd.testing.assert_frame_equal(pa, pb)


def test_oracle_figures_say_the_states_are_in_the_counts(store):
    figs = independent_cohort.oracle_figures(store, seed=3, n_datasets=8)
    assert set(figs) == {"oracle_t3_auroc", "oracle_pseudotime_spearman", "oracle_immature_auroc",
                         "oracle_interferon_auroc", "oracle_antigen_presenting_auroc", "oracle_state_macro_f1"}  # fmt: skip
    assert figs["oracle_t3_auroc"] > 0.8 and figs["oracle_pseudotime_spearman"] > 0.3
    assert 0.3 < figs["oracle_state_macro_f1"] <= 1.0


def test_oracle_state_f1_calls_from_the_best_thresholds():
    state = np.array(["mature"] * 6 + ["T3"] * 2 + ["interferon"] * 2)
    side = {"T3": np.array([0, 0, 0, 0, 0, 1, 5, 5, 0, 0.0]), "interferon": np.array([0, 0, 0, 0, 0, 0, 0, 0, 3, 4.0])}
    # T3: the best cut calls only the two true T3 cells; interferon is separated exactly: every state right
    assert independent_cohort._oracle_state_f1(state, side) == pytest.approx(1.0)
    side["T3"] = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0])  # no T3 signal: T3 is never called, its F1 is 0
    assert independent_cohort._oracle_state_f1(state, side) < 0.8


def test_hvg_only_studies_hold_their_variable_genes_and_the_plain_counts(tmp_path):
    import anndata as ad

    stores = {}
    for name, share in (("plain", 0.0), ("hvg", 0.375)):
        cfg = independent_cohort.generate(tmp_path / name, n_cells=1200, n_datasets=8, seed=1, hvg_only_share=share)
        ingest(load_ingest_config(cfg), tmp_path / f"{name}.h5ad", overwrite=True)
        stores[name] = ad.read_h5ad(tmp_path / f"{name}.h5ad")
    hvg_ds = json.loads((tmp_path / "hvg" / "truth" / "generator.json").read_text())["hvg_only_datasets"]
    assert len(hvg_ds) == 3
    measured = stores["hvg"].varm["measured"]
    qc = stores["hvg"].uns["atlas"]["qc"]
    for ds in stores["hvg"].obs["dataset_id"].unique():
        n = int(measured[ds].sum())
        assert n <= independent_cohort.HVG_DEPOSIT if ds in hvg_ds else n > 10_000, (ds, n)
        # ingest scaled the panels' QC floors (50 UMIs / 20 genes for a whole transcriptome)
        assert qc.loc[ds, "used_min_genes"] == (round(20 * n / 15_000) if ds in hvg_ds else 20), ds
        assert (qc.loc[ds, "panel_scale"] < 1) == (ds in hvg_ds), ds
    # the same cells with the same counts: the deposit only leaves genes out
    plain, hvg = stores["plain"], stores["hvg"]
    cells = plain.obs_names.intersection(hvg.obs_names)
    assert len(cells) > 0.9 * min(plain.n_obs, hvg.n_obs)
    for ds in hvg_ds:
        mine = cells[hvg.obs.loc[cells, "dataset_id"].to_numpy() == ds]
        genes = hvg.var_names[measured[ds].to_numpy()].intersection(plain.var_names)
        a, b = plain[mine, genes].X, hvg[mine, genes].X
        assert (abs(a - b)).sum() == 0
