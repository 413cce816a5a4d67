"""A small negative-binomial toy atlas with known cell types and multiplicative batch effects.

For tests and benchmarks of the integrate stage (the full simulator lives in ``atlas.simulate``).
Cells of ``n_types`` types, ``n_datasets`` data sets x ``samples_per_dataset`` samples; each data
set scales every gene by a log-normal factor (platform / chemistry effect), each sample a little
more, and each data set has its own library size and cell-type mix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

#: Named genes put first, so the gene-group exclusions have something to find.
TOY_NAMED_GENES = (
    "MT-CO1",
    "MT-ND1",
    "MT-ATP6",
    "RPL3",
    "RPL10A",
    "RPS6",
    "RPS27L",
    "RPLP0",
    "RPSA",
    "RPS6KA1",
    "HSPA1A",
    "HSPB1",
    "HSPH1",
    "HSP90AA1",
    "DNAJB1",
    "FOS",
    "JUN",
    "EGR1",
    "IER2",
    "ATF3",
    "DUSP1",
)
PLATFORMS = ("10x_3p", "10x_5p", "BD_Rhapsody", "SmartSeq2")
CANCERS = ("LUAD", "CRC", "PDAC", "HCC", "BRCA", "HNSC")


def toy_atlas(
    n_cells: int = 2000,
    n_genes: int = 500,
    *,
    n_types: int = 4,
    n_datasets: int = 3,
    samples_per_dataset: int = 2,
    batch_strength: float = 0.6,
    seed: int = 0,
):
    """Simulate raw counts with ground truth.

    Parameters
    ----------
    n_cells, n_genes
        Size of the matrix.
    n_types
        Cell types (``obs['truth_cell_type']``).
    n_datasets, samples_per_dataset
        Batch structure (``dataset_id``, ``sample_id``; ``platform`` cycles over four names).
    batch_strength
        Standard deviation of the log gene-wise factor of each data set.
    seed
        Random seed.

    Returns
    -------
    AnnData with CSR float32 counts in ``X`` and the atlas obs schema plus ``truth_*`` columns.
    """
    import anndata as ad

    rng = np.random.default_rng(seed)
    names = list(TOY_NAMED_GENES[: min(len(TOY_NAMED_GENES), n_genes // 4)])
    names += [f"GENE{i}" for i in range(n_genes - len(names))]
    base = rng.normal(-1.0, 1.2, n_genes)  # log mean expression per gene
    type_logfc = np.zeros((n_types, n_genes))
    for t in range(n_types):
        markers = rng.choice(n_genes, size=max(5, n_genes // 10), replace=False)
        type_logfc[t, markers] = rng.normal(1.8, 0.5, markers.size)

    n_samples = n_datasets * samples_per_dataset
    sample_of = rng.integers(0, n_samples, n_cells)
    dataset_of = sample_of // samples_per_dataset
    mix = rng.dirichlet(np.full(n_types, 2.0), size=n_datasets)
    cell_type = np.array([rng.choice(n_types, p=mix[d]) for d in dataset_of])
    ds_effect = rng.normal(0, batch_strength, (n_datasets, n_genes))
    sample_effect = rng.normal(0, batch_strength / 3, (n_samples, n_genes))
    lib_mean = rng.uniform(np.log(800), np.log(3000), n_datasets)
    lib = np.exp(rng.normal(lib_mean[dataset_of], 0.3))

    logmu = base[None, :] + type_logfc[cell_type] + ds_effect[dataset_of] + sample_effect[sample_of]
    mu = np.exp(logmu)
    mu *= (lib / mu.sum(axis=1))[:, None]
    theta = 8.0
    counts = rng.poisson(rng.gamma(theta, mu / theta)).astype(np.float32)

    pseudotime = rng.uniform(0, 1, n_cells)
    obs = pd.DataFrame(
        {
            "dataset_id": [f"ds{d}" for d in dataset_of],
            "sample_id": [
                f"ds{d}_s{s % samples_per_dataset}" for d, s in zip(dataset_of, sample_of, strict=True)
            ],
            "patient_id": [
                f"ds{d}_p{s % samples_per_dataset}" for d, s in zip(dataset_of, sample_of, strict=True)
            ],
            "cancer_type": [CANCERS[d % len(CANCERS)] for d in dataset_of],
            "tissue": "tumour",
            "platform": [PLATFORMS[d % len(PLATFORMS)] for d in dataset_of],
            "species": "human",
            "truth_cell_type": [f"type{t}" for t in cell_type],
            "truth_state": np.where(pseudotime > 0.5, "late", "early"),
            "truth_pseudotime": pseudotime,
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    for col in obs.columns:
        if pd.api.types.is_string_dtype(obs[col].dtype):  # object (pandas 2) or str (pandas 3)
            obs[col] = obs[col].astype("category")
    obs["n_counts"] = counts.sum(axis=1)
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=names))
