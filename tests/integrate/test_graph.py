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
