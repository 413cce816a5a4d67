"""integrate_store: the reference bundle, its atomic write, and refusals of bad stores."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from atlas.core.errors import InputDataError, RunDirError
from atlas.integrate import IntegrateSettings, MissingKeyError, NotCountsError, TooSmallError, integrate_store


def _settings(fast, **kw):
    return IntegrateSettings(**{"n_hvgs": 150, "metrics": False, **fast, **kw})


def _stub_metrics(monkeypatch, seen):
    """scib-metrics itself is tested in test_metrics.py; here only its wiring into the bundle."""
    import pandas as pd

    import atlas.integrate.metrics as metrics

    def stub(adata, **kw):
        seen.update(kw, n_obs=adata.n_obs, counts=adata.X.nnz)
        rows = ["X_pca", "X_harmony", *kw["embeddings"]]
        return pd.DataFrame(
            {
                "method": rows,
                "Batch correction": 0.5,
                "Bio conservation": 0.5,
                "Total": 0.5,
                "iLISI": 0.1,
                "n_cells": adata.n_obs,
            },
            index=pd.Index(rows, name="embedding"),
        )

    monkeypatch.setattr(metrics, "integration_metrics", stub)


def test_bundle_layout_and_reload(toy_store, tmp_path, fast, monkeypatch):
    import anndata as ad
    import scvi

    from atlas.integrate.stage import _versions

    seen = {}
    _stub_metrics(monkeypatch, seen)
    s = _settings(
        fast,
        metrics=True,
        metrics_label_key="truth_cell_type",
        metrics_max_cells=800,
        metrics_fast=True,
        metrics_batch_keys=["dataset_id"],
        small_batches="drop",  # LuCA's rule (pooling: test_small_samples_...)
    )
    ref = tmp_path / "ref"
    res = integrate_store(toy_store, ref, s)
    files = {p.name for p in ref.iterdir()}
    assert files == {
        "model",
        "atlas.h5ad",
        "hvg.txt",
        "registry.json",
        "metrics.csv",
        "metrics.png",
        "checks.json",
        "elbo_curve.csv",
        "config.json",
        "summary.json",
        "versions.json",
        "signatures.yaml",
    }
    assert res.dropped_batches == {"tiny_sample": 10} and res.n_cells == res.n_cells_in - 10 == 1490

    atlas = ad.read_h5ad(ref / "atlas.h5ad")
    assert atlas.shape == (1490, 150) and atlas.X.nnz == 0  # minified: no counts
    assert {"truth_cell_type", "truth_state", "truth_pseudotime", "leiden", "dataset_id"} <= set(atlas.obs)
    assert {"X_scVI", "X_umap"} <= set(atlas.obsm) and "connectivities" not in atlas.obsp
    hvgs = (ref / "hvg.txt").read_text().split()
    assert hvgs == list(atlas.var_names) and len(hvgs) == 150
    model = scvi.model.SCVI.load(str(ref / "model"), adata=atlas)
    assert list(model.adata.var_names) == hvgs
    np.testing.assert_allclose(model.get_latent_representation(), atlas.obsm["X_scVI"], atol=1e-5)

    config = json.loads((ref / "config.json").read_text())
    assert IntegrateSettings(**config["settings"]) == s and config["resolved"]["batch_key"] == "sample_id"
    summary = json.loads((ref / "summary.json").read_text())
    assert summary["dropped_batches"] == {"tiny_sample": 10} and summary["epochs"] == {"scvi": 3}
    registry = json.loads((ref / "registry.json").read_text())
    assert registry["model_class"] == "SCVI" and registry["setup_args"]["batch_key"] == "sample_id"
    versions = json.loads((ref / "versions.json").read_text())
    assert versions == _versions() and "scvi-tools" in versions and "scib-metrics" in versions
    metrics = (ref / "metrics.csv").read_text()
    assert "Batch correction" in metrics and "X_scVI" in metrics and (ref / "metrics.png").stat().st_size > 0
    assert seen["label_key"] == "truth_cell_type" and seen["max_cells"] == 800 and seen["counts"] > 0
    assert seen["skip"] == ("kbet_per_label", "bras") and seen["harmony_keys"] == ["sample_id", "platform"]
    assert (ref / "signatures.yaml").stat().st_size > 0
    checks = json.loads((ref / "checks.json").read_text())
    assert checks["baselines"]["passed"] is True and checks["convergence"]["scvi"]["epochs"] == 3
    assert summary["convergence"]["scvi"]["steps"] == checks["convergence"]["scvi"]["steps"] > 0
    curve = pd.read_csv(ref / "elbo_curve.csv")
    assert (
        list(curve["model"].unique()) == ["scvi"]
        and len(curve) == 3
        and curve["elbo_validation"].notna().all()
    )

    with pytest.raises(RunDirError, match="already exists"):
        integrate_store(toy_store, ref, s)


def test_no_label_key_writes_a_complete_bundle_with_batch_metrics(toy_store, tmp_path, fast):
    """Issue 13: without metrics_label_key BRAS got the batch as labels and crashed after training."""
    import anndata as ad
    import scvi

    s = _settings(fast, max_epochs=1, metrics=True, metrics_max_cells=600, metrics_batch_keys=["dataset_id"])
    res = integrate_store(toy_store, tmp_path / "ref", s)
    ref = tmp_path / "ref"
    model = scvi.model.SCVI.load(str(ref / "model"), adata=ad.read_h5ad(ref / "atlas.h5ad"))
    assert model.get_latent_representation().shape == (1500, 8)  # tiny_sample joined a batch of its data set
    metrics = pd.read_csv(ref / "metrics.csv")
    assert {"iLISI", "PCR comparison", "Batch correction"} <= set(metrics) and "BRAS" not in metrics
    assert "Bio conservation" not in metrics and res.metrics is not None
    assert json.loads((ref / "checks.json").read_text())["baselines"]["checked"] is True


def test_a_failing_optional_step_is_a_warning_and_the_bundle_stays(
    toy_store, tmp_path, fast, monkeypatch, caplog
):
    import anndata as ad
    import scvi

    import atlas.integrate.metrics as metrics

    def broken(adata, **kw):
        raise ValueError("No objects to concatenate")

    monkeypatch.setattr(metrics, "integration_metrics", broken)
    ref = tmp_path / "ref"
    with caplog.at_level(logging.WARNING, logger="atlas.integrate.stage"):
        res = integrate_store(
            toy_store, ref, _settings(fast, metrics=True, metrics_label_key="truth_cell_type")
        )
    assert "integration metrics (scib-metrics) failed (ValueError: No objects to concatenate)" in caplog.text
    assert res.metrics is None and any("failed" in w for w in res.warnings)
    assert {"model", "atlas.h5ad", "hvg.txt", "summary.json", "checks.json"} <= {
        p.name for p in ref.iterdir()
    }
    assert not (ref / "metrics.csv").exists()
    assert any("failed" in n for n in json.loads((ref / "summary.json").read_text())["notes"])
    scvi.model.SCVI.load(str(ref / "model"), adata=ad.read_h5ad(ref / "atlas.h5ad"))


def test_scvi_behind_harmony_is_a_recorded_warning(toy_store, tmp_path, fast, monkeypatch, caplog):
    import atlas.integrate.metrics as metrics

    def behind(adata, **kw):
        rows = ["X_pca", "X_harmony", "X_scVI"]
        return pd.DataFrame(
            {"method": rows, "Batch correction": [0.3, 0.7, 0.42], "iLISI": [0.0, 0.53, 0.02], "n_cells": 10},
            index=pd.Index(rows, name="embedding"),
        )

    monkeypatch.setattr(metrics, "integration_metrics", behind)
    with caplog.at_level(logging.WARNING, logger="atlas.integrate.stage"):
        res = integrate_store(toy_store, tmp_path / "ref", _settings(fast, metrics=True))
    assert "batch correction 0.42 vs Harmony 0.70" in caplog.text
    checks = json.loads((tmp_path / "ref" / "checks.json").read_text())
    assert checks["baselines"]["passed"] is False and checks["warnings"] == res.warnings
    assert checks["baselines"]["embeddings"]["X_scVI"]["ilisi"] == 0.02


def test_scanvi_bundle_loads_as_scanvi(toy, tmp_path, fast):
    import anndata as ad
    import scvi

    toy.obs["labels"] = toy.obs["truth_cell_type"].astype(str)
    toy.obs.loc[toy.obs_names[::2], "labels"] = "unlabeled"
    toy.write_h5ad(tmp_path / "store.h5ad")
    s = _settings(fast, model="scanvi", labels_key="labels", scanvi_max_epochs=1, data_loader="scvi")
    res = integrate_store(tmp_path / "store.h5ad", tmp_path / "ref", s)
    assert res.latent_key == "X_scANVI" and res.epochs == {"scvi": 3, "scanvi": 1}
    atlas = ad.read_h5ad(tmp_path / "ref" / "atlas.h5ad")
    model = scvi.model.SCANVI.load(str(tmp_path / "ref" / "model"), adata=atlas)
    assert model.predict().shape == (toy.n_obs,)


def test_a_failure_leaves_no_bundle_and_no_temporary_files(toy_store, tmp_path, fast, monkeypatch):
    import atlas.integrate.stage as bundle

    def broken(tmp, *args):
        tmp.mkdir()
        (tmp / "half_written").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(bundle, "_write_bundle", broken)
    with pytest.raises(OSError, match="disk full"):
        integrate_store(toy_store, tmp_path / "ref", _settings(fast))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.h5ad"]


def test_bad_stores_fail_before_training(toy, tmp_path, fast, caplog):
    path = tmp_path / "store.h5ad"
    with pytest.raises(InputDataError, match="does not exist"):
        integrate_store(path, tmp_path / "ref", _settings(fast))
    toy.write_h5ad(path)
    for kw, err, msg in [
        ({"batch_key": "donor"}, MissingKeyError, "batch_key='donor'"),
        (
            {"metrics": True, "metrics_label_key": "cell_type"},
            MissingKeyError,
            "metrics_label_key='cell_type'",
        ),
        ({"model": "scanvi", "labels_key": "author_label"}, MissingKeyError, "labels_key='author_label'"),
        ({"min_cells_per_batch": 5000}, TooSmallError, "cells are left after dropping 6 batches"),
    ]:
        with pytest.raises(err, match=msg):
            integrate_store(path, tmp_path / "ref", _settings(fast, **kw))
    toy.X = toy.X.astype(np.float32) / 3
    toy.write_h5ad(path)
    with pytest.raises(NotCountsError, match="does not hold raw counts"):
        integrate_store(path, tmp_path / "ref", _settings(fast))
    assert not (tmp_path / "ref").exists()


def test_single_valued_batch_key_is_noted_in_the_summary(toy, tmp_path, fast, caplog):
    toy.obs["sample_id"] = "one_sample"
    toy.write_h5ad(tmp_path / "store.h5ad")
    with caplog.at_level(logging.WARNING, logger="atlas.integrate.model"):
        res = integrate_store(tmp_path / "store.h5ad", tmp_path / "ref", _settings(fast))
    summary = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert any("has a single value" in n for n in summary["notes"]) and res.notes == summary["notes"]
    assert json.loads((tmp_path / "ref" / "config.json").read_text())["resolved"]["batch_key"] is None


def test_small_samples_of_a_data_set_are_pooled_not_dropped_and_queries_still_map(toy, tmp_path, fast):
    """Small samples (<= min_cells_per_batch) share one scVI batch per data set; the atlas keeps their cells and
    own sample ids, the model reloads on it, and a query (which has no integration_batch column) maps onto it."""
    import anndata as ad
    import scvi

    from atlas.integrate._checks import INTEGRATION_BATCH
    from atlas.query.prepare import prepare_query
    from atlas.query.reference import load_reference

    toy.obs["sample_id"] = toy.obs["sample_id"].astype(str)
    ds = toy.obs["dataset_id"].astype(str).iloc[0]
    toy.obs["dataset_id"] = toy.obs["dataset_id"].astype(str)
    toy.obs.loc[toy.obs_names[:40], "dataset_id"] = ds
    toy.obs.loc[toy.obs_names[:40], "sample_id"] = ["small_a"] * 20 + ["small_b"] * 20
    toy.obs.loc[toy.obs_names[40:50], "sample_id"] = "lonely"  # alone in its own data set: pooled across data sets
    toy.obs.loc[toy.obs_names[40:50], "dataset_id"] = "ds_lonely"
    other = sorted(set(toy.obs["dataset_id"]) - {ds, "ds_lonely"})[0]
    joiner = toy.obs_names[toy.obs["dataset_id"] == other][:12]
    toy.obs.loc[joiner, "sample_id"] = "joiner"  # alone and small in a data set with regular batches: joins one
    toy.write_h5ad(tmp_path / "store.h5ad")
    ref = tmp_path / "ref"
    res = integrate_store(tmp_path / "store.h5ad", ref, _settings(fast, max_epochs=1))
    # "small sample_ids" (the cross-data-set pool) has only lonely's 10 cells: dropped, named by its sample
    assert res.dropped_batches == {"lonely": 10} and res.n_cells == res.n_cells_in - 10
    atlas = ad.read_h5ad(ref / "atlas.h5ad")
    pooled = atlas.obs[INTEGRATION_BATCH].astype(str)
    assert (pooled.loc[toy.obs_names[:40]] == f"{ds}: small sample_ids").all()
    joined = pooled.loc[joiner].unique()
    assert len(joined) == 1 and joined[0] in set(toy.obs["sample_id"]) - {"joiner", "lonely", "small_a", "small_b"}
    assert list(atlas.obs.loc[toy.obs_names[:40], "sample_id"].astype(str)) == ["small_a"] * 20 + ["small_b"] * 20
    big = atlas.obs_names.difference(toy.obs_names[:50].union(joiner))
    assert (pooled.loc[big] == atlas.obs.loc[big, "sample_id"].astype(str)).all()
    summary = json.loads((ref / "summary.json").read_text())
    assert any("pooled per data set" in n for n in summary["notes"])
    registry = json.loads((ref / "registry.json").read_text())
    assert registry["setup_args"]["batch_key"] == INTEGRATION_BATCH
    config = json.loads((ref / "config.json").read_text())
    assert config["settings"]["batch_key"] == "sample_id" and config["resolved"]["batch_key"] == INTEGRATION_BATCH
    model = scvi.model.SCVI.load(str(ref / "model"), adata=atlas)
    np.testing.assert_allclose(model.get_latent_representation(), atlas.obsm["X_scVI"], atol=1e-5)

    reference = load_reference(ref, label_key="dataset_id")
    assert reference.batch_source == "sample_id" and reference.batch_key == INTEGRATION_BATCH
    query = toy[toy.obs_names[50:250]].copy()
    query.obs["sample_id"] = "new_sample"
    q, renames = prepare_query(query, reference, notes := [])
    assert (q.obs[INTEGRATION_BATCH].astype(str) == "new_sample").all() and renames.empty
    assert scvi.model.SCVI.load_query_data(q, str(reference.model_dir)).adata.n_obs == 200
