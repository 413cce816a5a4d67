"""Small simulated count matrices shared by the scoring tests (built once per session)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp


def make_counts(n_cells: int, n_genes: int, density: float, seed: int) -> sp.csr_matrix:
    """Raw integer counts (float32 CSR) with gene-specific rates, a never-expressed gene and an empty cell."""
    rng = np.random.default_rng(seed)
    rates = rng.lognormal(0, 1.0, n_genes)
    mask = rng.random((n_cells, n_genes)) < density * rates / rates.mean()
    counts = rng.poisson(1.0 + rates, (n_cells, n_genes)) * mask
    counts[:, 7] = 0
    counts[3, :] = 0
    return sp.csr_matrix(counts.astype(np.float32))


def gene_names(n: int) -> pd.Index:
    return pd.Index([f"G{i}" for i in range(n)])


@pytest.fixture(scope="session")
def counts() -> sp.csr_matrix:
    return make_counts(600, 800, 0.08, seed=0)


@pytest.fixture(scope="session")
def sets() -> dict[str, list[str]]:
    rng = np.random.default_rng(1)
    out = {f"S{j}": [f"G{i}" for i in rng.choice(800, k, replace=False)] for j, k in enumerate((6, 25, 60))}
    out["S0"].append("G7")  # a never-expressed gene
    return out


@pytest.fixture
def adata(counts) -> ad.AnnData:
    a = ad.AnnData(counts.copy())
    a.var_names = gene_names(counts.shape[1])
    a.obs_names = [f"c{i}" for i in range(counts.shape[0])]
    return a


def lognorm(a: ad.AnnData) -> ad.AnnData:
    import scanpy as sc

    b = a.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    return b


@pytest.fixture(scope="session")
def normalise():
    """scanpy's normalize_total(1e4) + log1p on a copy."""
    return lognorm
