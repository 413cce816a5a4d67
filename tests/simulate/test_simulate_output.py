"""End-to-end tests of ``atlas.simulate.simulate`` on small simulations (see conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from atlas.core.errors import RunDirError
from atlas.ingest.settings import TISSUES, load_ingest_config
from atlas.simulate import simulate
from atlas.simulate.biology import CELL_TYPES, PLATFORMS, STATES
from atlas.simulate.writers import log_normalise


def load_counts(entry) -> ad.AnnData:
    """Counts (cells x genes, CSR) and obs of one data set, read with the standard readers."""
    if entry.format == "h5ad":
        a = ad.read_h5ad(entry.path)
        if entry.counts != "X":
            a.X = a.layers[entry.counts.split("/", 1)[1]]
        a.X = sp.csr_matrix(a.X)
        return a
    obs = pd.read_csv(entry.obs_path, index_col=0, keep_default_na=False, na_values=[""])
    if entry.format == "10x_mtx":
        a = sc.read_10x_mtx(entry.path)
        assert list(a.obs_names) == list(obs.index)
        a.obs = obs.loc[a.obs_names]
        a.X = sp.csr_matrix(a.X)
        return a
    df = pd.read_csv(entry.path, index_col=0)  # genes x cells
    assert list(df.columns) == list(obs.index)
    return ad.AnnData(X=sp.csr_matrix(df.to_numpy().T), obs=obs, var=pd.DataFrame(index=df.index))


@pytest.fixture(scope="module")
def config(sim):
    return load_ingest_config(sim.ingest_config)


@pytest.fixture(scope="module")
def datasets(config):
    return {e.id: load_counts(e) for e in config.datasets}


def _same_dir(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.name == "simulation.json":
            ja, jb = (json.loads((d / rel).read_text()) for d in (a, b))
            ja.pop("chunk_size"), jb.pop("chunk_size")
            assert ja == jb
        elif rel.suffix == ".h5ad":
            x, y = ad.read_h5ad(a / rel), ad.read_h5ad(b / rel)
            assert (x.X != y.X).nnz == 0
            assert x.layers.keys() == y.layers.keys()
            for k in x.layers:
                assert (x.layers[k] != y.layers[k]).nnz == 0
            pd.testing.assert_frame_equal(x.obs, y.obs)
            assert list(x.var_names) == list(y.var_names)
        else:  # csv, gz and yaml files are byte-identical (gzip without timestamps)
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_same_seed_same_output_for_any_chunk_size_and_threads(sim, sim_rechunked):
    assert sim.cells_per_dataset == sim_rechunked.cells_per_dataset
    _same_dir(sim.out_dir, sim_rechunked.out_dir)


def test_other_seed_other_output(sim, sim_other_seed, config):
    assert sim.genes == sim_other_seed.genes  # the gene universe depends on n_genes only
    other = load_ingest_config(sim_other_seed.ingest_config)
    e0, e1 = config.datasets[0], other.datasets[0]
    a, b = load_counts(e0), load_counts(e1)
    assert a.shape != b.shape or (a.X != b.X).nnz > 0
    assert sim.cells_per_dataset != sim_other_seed.cells_per_dataset


def test_sizes_and_messiness(sim, config, datasets, small):
    sizes = list(sim.cells_per_dataset.values())
    assert sum(sizes) == small["n_cells"] and len(set(sizes)) > 1
    assert {e.format for e in config.datasets} == {"h5ad", "10x_mtx", "csv"}
    assert {e.counts for e in config.datasets if e.format == "h5ad"} == {"X", "layers/counts"}
    assert any(e.constants for e in config.datasets)
    assert len({e.obs_columns["patient_id"] for e in config.datasets}) >= 3
    assert len({e.obs_columns["sample_id"] for e in config.datasets}) >= 3
    ens = [e for e in config.datasets if e.gene_ids == "ensembl"]
    assert ens and all(g.startswith("ENSG") for g in datasets[ens[0].id].var_names)
    outdated = [a for a in datasets.values() if "IL8" in a.var_names]
    assert len(outdated) == 1 and "CXCL8" not in outdated[0].var_names
    for a in datasets.values():
        assert a.obs_names.is_unique and a.var_names.is_unique


def test_mouse_dataset(config, datasets):
    mouse = [e for e in config.datasets if e.species == "mouse"]
    assert len(mouse) == 1
    genes = datasets[mouse[0].id].var_names
    assert {"Cxcr2", "Vegfa", "S100a8", "mt-Co1"} <= set(genes)
    assert "CXCR2" not in genes and len(genes) < len(datasets[config.datasets[0].id].var_names)


def test_counts_are_non_negative_integers(config, datasets):
    for e in config.datasets:
        x = datasets[e.id].X
        assert x.nnz > 0 and x.data.min() > 0
        np.testing.assert_array_equal(x.data, np.round(x.data))
    lognorm = [e for e in config.datasets if e.counts == "layers/counts"]
    a = ad.read_h5ad(lognorm[0].path)
    expected = np.log1p(a.layers["counts"].multiply(1e4 / a.layers["counts"].sum(axis=1)).toarray())
    np.testing.assert_allclose(a.X.toarray(), expected, rtol=1e-4, atol=1e-5)


def test_ingest_yaml_matches_the_data(sim, config, datasets):
    text = sim.ingest_config.read_text()
    assert text.startswith("# Generated by `atlas simulate`") and "seed=0" in text.splitlines()[0]
    for e in config.datasets:
        assert e.path.exists() and (e.obs_path is None or e.obs_path.exists())
        obs = datasets[e.id].obs
        for field, col in e.obs_columns.items():
            assert col in obs.columns, (e.id, field, col)
        assert set(e.obs_columns) | set(e.constants) == {
            "patient_id",
            "sample_id",
            "tissue",
            "platform",
            "cancer_type",
        }
        tissue = (
            obs[e.obs_columns["tissue"]]
            .astype(str)
            .map(lambda v, m=e.value_maps.get("tissue", {}): m.get(v, v))
        )
        assert set(tissue) <= set(TISSUES) and "tumour" in set(tissue)
        platform = e.constants.get("platform") or e.value_maps.get("platform", {}).get(
            obs[e.obs_columns["platform"]].iloc[0], obs[e.obs_columns["platform"]].iloc[0]
        )
        assert platform in PLATFORMS


def test_truth_columns(datasets):
    for a in datasets.values():
        obs = a.obs
        neut = obs["truth_cell_type"].astype(str) == "neutrophil"
        assert set(obs["truth_cell_type"].astype(str)) <= set(CELL_TYPES)
        state = obs["truth_state"].fillna("").astype(str)
        assert set(state[neut]) <= set(STATES) and (state[~neut] == "").all()
        pt = obs["truth_pseudotime"].to_numpy(dtype=float)
        assert np.isnan(pt[~neut.to_numpy()]).all() and not np.isnan(pt[neut.to_numpy()]).any()
        assert ((pt[neut.to_numpy()] >= 0) & (pt[neut.to_numpy()] <= 1)).all()
        t3 = (state == "T3").to_numpy()
        if t3.any():
            assert pt[t3].min() >= 0.65 and pt[neut.to_numpy() & ~t3].max() < 0.65


def test_blood_neutrophils_never_t3(config, datasets):
    n_blood_neut = 0
    for e in config.datasets:
        obs = datasets[e.id].obs
        tissue = (
            obs[e.obs_columns["tissue"]]
            .astype(str)
            .map(lambda v, m=e.value_maps.get("tissue", {}): m.get(v, v))
        )
        blood_neut = (tissue == "blood") & (obs["truth_cell_type"].astype(str) == "neutrophil")
        n_blood_neut += int(blood_neut.sum())
        assert not (obs["truth_state"].astype(str)[blood_neut] == "T3").any()
        assert set(obs["truth_cell_type"].astype(str)[tissue == "blood"]) <= {
            "neutrophil",
            "monocyte",
            "T",
            "B",
            "NK",
        }
    assert n_blood_neut > 0


def test_t3_fraction_ordering(sim):
    ct = pd.read_csv(sim.out_dir / "truth" / "cancer_types.csv", index_col=0)
    patients = pd.read_csv(sim.out_dir / "truth" / "patients.csv")
    assert len(ct) >= 6 and set(patients["cancer_type"]) == set(ct.index)
    rho = ct["mean_t3_fraction"].rank().corr(ct["mean_patient_t3_fraction"].rank())
    assert rho > 0.8
    real = ct["realised_t3_fraction"]
    assert real["PDAC"] > 0.2 and real["PDAC"] > real["melanoma"]
    assert patients.groupby("dataset")["n_cells"].sum().to_dict() == sim.cells_per_dataset


def test_droplet_neutrophils_have_fewer_umis(config, datasets):
    by_kind = {True: [], False: []}
    for e in config.datasets:
        a = datasets[e.id]
        platform = e.constants.get("platform") or str(a.obs[e.obs_columns["platform"]].iloc[0])
        platform = e.value_maps.get("platform", {}).get(platform, platform)
        ok = (a.obs["truth_quality"].astype(str) == "ok").to_numpy()
        neut = (a.obs["truth_cell_type"].astype(str) == "neutrophil").to_numpy()
        umis = np.asarray(a.X.sum(axis=1)).ravel()
        by_kind[PLATFORMS[platform].droplet].append(umis[ok & neut])
        assert np.median(umis[ok & neut]) < np.median(umis[ok & ~neut])
    droplet, other = np.median(np.concatenate(by_kind[True])), np.median(np.concatenate(by_kind[False]))
    assert droplet < 700 < 900 < other


def test_qc_has_work_to_do(config, datasets):
    a = datasets[config.datasets[0].id]
    q = a.obs["truth_quality"].astype(str).to_numpy()
    mt = a.var_names.str.startswith("MT-")
    umis = np.asarray(a.X.sum(axis=1)).ravel()
    pct_mt = 100 * np.asarray(a.X[:, mt].sum(axis=1)).ravel() / umis
    assert np.median(pct_mt[q == "ok"]) < 8 < 20 < np.median(pct_mt[q == "damaged"])
    assert np.median(umis[q == "low_quality"]) < 500


def test_rerun_rules(sim, tmp_path, small):
    again = simulate(sim.out_dir, seed=0, **small)
    assert again.skipped and again.cells_per_dataset == sim.cells_per_dataset
    with pytest.raises(RunDirError, match="different parameters"):
        simulate(sim.out_dir, seed=3, **small)
    (tmp_path / "other.txt").write_text("not a simulation")
    with pytest.raises(RunDirError, match="no simulation.json"):
        simulate(tmp_path, seed=0, **small)


def test_t3_programme_in_expression(config, datasets):
    from atlas.catalogue.signatures import load_registry

    reg = load_registry()
    e = next(
        e for e in config.datasets if e.gene_ids == "symbol" and e.species == "human" and e.format == "h5ad"
    )
    a = datasets[e.id]
    lognorm = log_normalise(a.X)
    state = a.obs["truth_state"].astype(str).to_numpy()
    pt = a.obs["truth_pseudotime"].to_numpy(dtype=float)

    def score(name, cells):
        cols = a.var_names.get_indexer([g for g in reg[name].genes if g in a.var_names])
        return np.asarray(lognorm[cells][:, cols].mean(axis=1)).ravel()

    t3, mature = state == "T3", state == "mature"
    assert t3.sum() >= 5 and mature.sum() >= 5
    assert score("T3_proxy", t3).mean() > 2 * score("T3_proxy", mature).mean()
    assert score("blood_like", mature).mean() - score("blood_like", t3).mean() > 1.0  # log units
    neut = state != ""
    rho = pd.Series(pt[neut]).corr(pd.Series(score("T3_proxy", neut)), method="spearman")
    assert rho > 0.4
