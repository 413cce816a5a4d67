"""Fixtures of the integrate tests: small toy atlases built once per session (copied per test)."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _quiet_lightning():
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.WARNING)


@pytest.fixture
def fast():
    """Settings of a tiny model: a handful of epochs keeps the whole folder well under 90 s."""
    return {
        "max_epochs": 3,
        "batch_size": 512,
        "n_latent": 8,
        "n_hidden": 32,
        "n_layers": 1,
        "early_stopping": False,
    }


@pytest.fixture(scope="session")
def _toy_base():
    from helpers.integrate_fixtures import toy_atlas

    return toy_atlas(1500, 300, n_types=4, n_datasets=3, samples_per_dataset=2, seed=0)


@pytest.fixture
def toy(_toy_base):
    """A fresh copy of a 1,500-cell x 300-gene toy atlas (3 data sets x 2 samples, 4 cell types)."""
    return _toy_base.copy()


@pytest.fixture
def toy_store(toy, tmp_path):
    """The toy atlas written as an .h5ad store, with one 10-cell sample (below min_cells_per_batch)."""
    toy.obs["sample_id"] = toy.obs["sample_id"].astype(str)
    toy.obs.loc[toy.obs_names[:10], "sample_id"] = "tiny_sample"
    path = tmp_path / "store.h5ad"
    toy.write_h5ad(path)
    return path
