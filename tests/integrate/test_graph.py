import numpy as np
import pytest

from atlas.integrate import MissingKeyError, compute_graph


def _blobs(toy, seed=0):
    rng = np.random.default_rng(seed)
    labels = toy.obs["truth_cell_type"].cat.codes.to_numpy()
    centres = rng.normal(0, 6, (labels.max() + 1, 10))
    toy.obsm["X_scVI"] = (centres[labels] + rng.normal(0, 1, (toy.n_obs, 10))).astype(np.float32)
    return labels


def test_graph_umap_leiden_are_written_and_seeded(toy):
    from sklearn.metrics import normalized_mutual_info_score

    labels = _blobs(toy)
    other = toy.copy()
    seconds = compute_graph(toy, n_neighbors=10, resolution=0.3, random_state=0)
    assert set(seconds) == {"neighbors", "umap", "leiden"}
    assert toy.obsm["X_umap"].shape == (toy.n_obs, 2) and "connectivities" in toy.obsp
    assert (
        toy.obs["leiden"].dtype == "category"
        and normalized_mutual_info_score(labels, toy.obs["leiden"]) > 0.9
    )
    compute_graph(other, n_neighbors=10, resolution=0.3, random_state=0)
    np.testing.assert_array_equal(toy.obs["leiden"], other.obs["leiden"])
    np.testing.assert_allclose(toy.obsm["X_umap"], other.obsm["X_umap"])


def test_missing_latent_is_a_clear_error(toy):
    with pytest.raises(MissingKeyError, match="use_rep='X_scANVI'"):
        compute_graph(toy, use_rep="X_scANVI")


def test_large_atlas_umap_starts_from_principal_components(toy, monkeypatch, caplog):
    """Scaling guard: above SPECTRAL_INIT_MAX_CELLS the CPU UMAP does not run umap-learn's spectral layout
    (ARPACK with sqrt(n) Lanczos vectors: n^1.5 memory); below it, scanpy's default is kept."""
    import scanpy as sc

    from atlas.integrate import graph

    _blobs(toy)
    seen = []
    real_umap = sc.tl.umap
    monkeypatch.setattr(sc.tl, "umap", lambda adata, **kw: seen.append(kw["init_pos"]) or real_umap(adata, **kw))
    compute_graph(toy, n_neighbors=10, resolution=0.3)
    assert seen == ["spectral"]
    monkeypatch.setattr(graph, "SPECTRAL_INIT_MAX_CELLS", toy.n_obs - 1)
    compute_graph(toy, n_neighbors=10, resolution=0.3)
    init = seen[-1]
    assert isinstance(init, np.ndarray) and init.shape == (toy.n_obs, 2)
    x = toy.obsm["X_scVI"].astype(np.float64)
    pcs = np.linalg.svd(x - x.mean(0), full_matrices=False)[2][:2]
    np.testing.assert_allclose(np.abs(init), np.abs((x - x.mean(0)) @ pcs.T), rtol=1e-4, atol=1e-3)
    assert toy.obsm["X_umap"].shape == (toy.n_obs, 2) and np.isfinite(toy.obsm["X_umap"]).all()
