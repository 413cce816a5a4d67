"""GPU branches (skipped without a CUDA GPU): torch gather on the device, rapids-singlecell steps."""

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.gpu


def _cuda():
    import torch

    from atlas.core.backend import torch_cuda_status

    ok, why = torch_cuda_status()
    if not ok:
        pytest.skip(f"torch sees no CUDA device: {why}")
    return torch.device("cuda")


def test_device_gather_and_streaming_match_the_host_batches(toy):
    import scvi
    import torch

    from atlas.integrate import FastDataModule
    from atlas.integrate.datamodule import csr_rows_to_dense

    dev = _cuda()
    X = toy.X.tocsr()
    t = [torch.from_numpy(a).to(dev) for a in (X.indptr.astype(np.int64), X.indices, X.data)]
    rows = np.random.default_rng(0).choice(toy.n_obs, 300, replace=False)
    got = csr_rows_to_dense(*t, torch.from_numpy(rows).to(dev), toy.n_vars).cpu().numpy()
    np.testing.assert_array_equal(got, X[rows].toarray())

    scvi.settings.seed = 0
    scvi.model.SCVI.setup_anndata(toy, batch_key="sample_id")
    model = scvi.model.SCVI(toy, n_latent=4)
    epochs = []
    for kw in (
        {"gather": "scipy"},
        {"gather": "torch", "device": dev},
        {"gather": "torch", "device": dev, "chunk_cells": 1024},
    ):
        dm = FastDataModule(model.adata_manager, batch_size=128, seed=1, **kw)
        dm.setup()
        epochs.append([b["X"].cpu().numpy() for b in dm.train_dataloader()])
        if "device" in kw:
            assert all(t.device.type == "cuda" for t in next(iter(dm.train_dataloader())).values())
    for other in epochs[1:]:
        assert len(other) == len(epochs[0])
        for a, b in zip(epochs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_fast_path_on_cuda_reaches_the_default_elbo(toy, fast):
    from atlas.integrate import train_scvi, validation_elbo

    _cuda()
    kw = {**fast, "max_epochs": 15, "batch_size": 128, "n_hidden": 64, "seed": 0, "accelerator": "gpu"}
    elbo = {
        dl: validation_elbo(train_scvi(toy.copy(), data_loader=dl, **kw).model) for dl in ("scvi", "fast")
    }
    assert abs(elbo["fast"] - elbo["scvi"]) / abs(elbo["scvi"]) < 0.01, elbo


def test_rapids_graph_agrees_with_scanpy(toy):
    pytest.importorskip("rapids_singlecell")
    from sklearn.metrics import normalized_mutual_info_score

    from atlas.integrate import compute_graph

    rng = np.random.default_rng(0)
    labels = pd.factorize(toy.obs["truth_cell_type"].astype(str))[0]  # str dtype under pandas 3
    toy.obsm["X_scVI"] = (
        rng.normal(0, 6, (labels.max() + 1, 10))[labels] + rng.normal(0, 1, (toy.n_obs, 10))
    ).astype(np.float32)
    gpu = toy.copy()
    compute_graph(toy, resolution=0.3, backend="cpu")
    compute_graph(gpu, resolution=0.3, backend="gpu")
    assert gpu.obsm["X_umap"].shape == (toy.n_obs, 2)
    assert normalized_mutual_info_score(toy.obs["leiden"], gpu.obs["leiden"]) > 0.9


def test_rapids_harmony_agrees_with_harmonypy(toy):
    pytest.importorskip("rapids_singlecell")
    from atlas.integrate.metrics import baseline_embeddings

    cpu, gpu = toy.copy(), toy.copy()
    baseline_embeddings(cpu, harmony_keys=["dataset_id"], backend="cpu")
    baseline_embeddings(gpu, harmony_keys=["dataset_id"], backend="gpu")
    np.testing.assert_allclose(
        np.abs(np.corrcoef(cpu.obsm["X_harmony"][:, 0], gpu.obsm["X_harmony"][:, 0])[0, 1]), 1, atol=0.05
    )
