"""The audit of the cells QC removed: the saved encoder without training, and labels from the atlas's neighbours.

Uses the query tests' session reference run (its store, model and truth-annotated atlas).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from atlas.analyse.qc_audit import MarkerEvidence, audit_removed_cells, markers_disagree, with_removed_cells
from atlas.integrate.encode import encode_cells


@pytest.fixture(scope="module")
def reference(ref_run):
    store = ad.read_h5ad(ref_run / "store.h5ad")
    bundle = ad.read_h5ad(ref_run / "reference" / "atlas.h5ad")
    atlas = ad.read_h5ad(ref_run / "atlas.h5ad")
    atlas.obsm["X_scVI"] = pd.DataFrame(np.asarray(bundle.obsm["X_scVI"]), index=bundle.obs_names).loc[
        atlas.obs_names].to_numpy()  # fmt: skip
    return store, atlas


def test_atlas_cells_through_the_saved_encoder_land_where_the_atlas_put_them(ref_run, reference):
    store, atlas = reference
    cells = store[:200].copy()
    enc = encode_cells(ref_run / "reference" / "model", cells)
    assert enc.encoded.all() and enc.latent.shape == (200, atlas.obsm["X_scVI"].shape[1])
    np.testing.assert_allclose(enc.latent, atlas[cells.obs_names].obsm["X_scVI"], atol=1e-4)
    # a batch the model never saw changes nothing: this encoder does not read the batch
    cells.obs["sample_id"] = pd.Categorical(["a sample nobody trained on"] * cells.n_obs)
    np.testing.assert_allclose(encode_cells(ref_run / "reference" / "model", cells).latent, enc.latent, atol=1e-5)


def test_removed_cells_take_the_labels_of_their_atlas_neighbours(ref_run, reference, tmp_path):
    store, atlas = reference
    removed = store[::8].copy()
    removed.obs["qc_reason"] = pd.Categorical(np.where(np.arange(removed.n_obs) % 2, "high_mito", "doublets"))
    removed.write_h5ad(tmp_path / "store.removed.h5ad")
    audit = audit_removed_cells(tmp_path / "store.removed.h5ad", ref_run / "reference", atlas, chunk_cells=120)
    cells = audit.cells.set_index("cell")
    own = atlas.obs.loc[cells.index, "cell_type"].astype(str)
    assert (cells["cell_type"] == own).mean() > 0.9 and cells["uncertainty"].between(0, 1).all()
    assert set(cells["qc_reason"]) == {"high_mito", "doublets"}
    in_store = pd.DataFrame({"dataset_id": ["ds03_NSCLC"], "cell_type": ["neutrophil"], "cells_in_store": [7]})
    table = with_removed_cells(in_store, audit.cells)
    assert table["removed_at_ingest"].sum() == removed.n_obs
    assert (table["removed_high_mito"] + table["removed_doublets"] == table["removed_at_ingest"]).all()
    neut = table.set_index(["dataset_id", "cell_type"]).loc[("ds03_NSCLC", "neutrophil")]
    assert neut["cells_input"] == 7 + neut["removed_at_ingest"]
    assert audit_removed_cells(tmp_path / "absent.h5ad", ref_run / "reference", atlas) is None


def test_markers_disagree_when_another_type_has_more_own_evidence():
    ev = pd.DataFrame({"neutrophil": [3.0, 0.5, 1.0, 2.0], "T": [1.0, 2.5, 1.0, 0.0]})
    got = markers_disagree(np.array(["neutrophil", "neutrophil", "neutrophil", "unknown"]), ev)
    assert got.tolist() == [False, True, False, False]  # a tie keeps the label; unknown has no markers


def test_own_markers_overrule_the_neighbours_label(ref_run, reference, tmp_path):
    from atlas.analyse.settings import AnalysisSettings
    from atlas.score import score_store

    store, atlas = reference
    markers = {t: list(g) for t, g in AnalysisSettings().cell_type_markers.items()}
    scores = score_store(ref_run / "store.h5ad", markers, method="scanpy").loc[atlas.obs_names]
    evidence = MarkerEvidence.of_atlas(markers, scores, atlas.obs["cell_type"], 10, {})
    removed = store[::8].copy()
    removed.obs["qc_reason"] = "high_mito"
    removed.write_h5ad(tmp_path / "store.removed.h5ad")
    audit = audit_removed_cells(tmp_path / "store.removed.h5ad", ref_run / "reference", atlas, evidence=evidence)
    cells = audit.cells.set_index("cell")
    own = evidence.of(tmp_path / "store.removed.h5ad").loc[cells.index]
    vote = audit_removed_cells(tmp_path / "store.removed.h5ad", ref_run / "reference", atlas).cells.set_index("cell")
    off = markers_disagree(vote["cell_type"].to_numpy(), own)
    assert (cells.loc[off, "cell_type"] == "unknown").all() and (cells.loc[off, "uncertainty"] == 1).all()
    assert (cells.loc[~off, "cell_type"] == vote.loc[~off, "cell_type"]).all()
    assert (cells["cell_type"] == atlas.obs.loc[cells.index, "cell_type"].astype(str)).mean() > 0.8
    assert (cells["marker_cell_type"] == own.idxmax(axis=1)).all()


def test_an_encoder_that_reads_the_batch_leaves_out_cells_of_batches_it_never_saw(ref_run, reference, tmp_path,
                                                                                 tiny_integrate):  # fmt: skip
    from atlas.integrate import IntegrateSettings, integrate_store

    store, _ = reference
    integrate_store(ref_run / "store.h5ad", tmp_path / "bundle", IntegrateSettings(**tiny_integrate,
                                                                                   scarches_architecture=True))  # fmt: skip
    bundle = ad.read_h5ad(tmp_path / "bundle" / "atlas.h5ad")
    cells = store[:120].copy()
    cells.obs["sample_id"] = cells.obs["sample_id"].astype(str)
    cells.obs.iloc[:40, cells.obs.columns.get_loc("sample_id")] = "a sample nobody trained on"
    enc = encode_cells(tmp_path / "bundle" / "model", cells)
    assert not enc.encoded[:40].any() and enc.encoded[40:].all() and len(enc.latent) == 80
    assert "left out" in enc.notes[0]
    latent = pd.DataFrame(np.asarray(bundle.obsm["X_scVI"]), index=bundle.obs_names).loc[cells.obs_names[40:]]
    np.testing.assert_allclose(enc.latent, latent.to_numpy(), atol=1e-4)  # the others as the atlas placed them


def test_a_removed_cell_joins_the_pool_of_its_own_data_sets_batch():
    # sample names repeat across data sets; small samples were pooled per data set for training
    from atlas.analyse.qc_audit import _training_batches, _with_training_batch
    from atlas.integrate.encode import _model_obs

    atlas = ad.AnnData(obs=pd.DataFrame({"dataset_id": ["A", "A", "B", "B"], "sample_id": ["S1", "S2", "S1", "S3"],
                                         "integration_batch": ["A: small", "A: small", "B: small", "B3"]},
                                        index=[f"c{i}" for i in range(4)]))  # fmt: skip
    config = {"settings": {"batch_key": "sample_id"}}
    pools = _training_batches(atlas, config)
    removed = pd.DataFrame({"dataset_id": ["B", "A", "B"], "sample_id": ["S1", "S1", "S9"]}, index=["r0", "r1", "r2"])
    registry = {"setup_args": {"batch_key": "integration_batch"},
                "field_registries": {"batch": {"state_registry": {"categorical_mapping": ["A: small", "B3", "B: small"]}}}}
    obs, seen = _model_obs(_with_training_batch(removed, pools, config), registry)
    assert obs["integration_batch"].astype(str).tolist()[:2] == ["B: small", "A: small"]
    assert seen.tolist() == [True, True, False]  # S9 of B: no atlas cell, so no training batch
