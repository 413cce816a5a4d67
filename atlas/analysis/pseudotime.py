"""Diffusion pseudotime (Haghverdi et al. 2016, scanpy's ``tl.dpt``) from a chosen root cell."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

__all__ = ["choose_root", "diffusion_pseudotime"]

log = logging.getLogger(__name__)


def choose_root(index: np.ndarray, tissue: pd.Series | None, root_tissue: str = "blood") -> int:
    """The root cell: about the lowest ``index`` (its 1st percentile) among ``root_tissue`` cells (all if none)."""
    index = np.asarray(index, dtype=np.float64)
    pool = np.arange(len(index))
    if tissue is not None:
        mask = (tissue.astype(str) == root_tissue).to_numpy() & np.isfinite(index)
        if mask.any():
            pool = np.flatnonzero(mask)
        else:
            log.info("no %s neutrophils: pseudotime root chosen among all neutrophils", root_tissue)
    finite = pool[np.isfinite(index[pool])]
    if finite.size == 0:
        return 0
    # the 1st percentile rather than the minimum: one outlier cell should not set the root
    target = np.quantile(index[finite], 0.01)
    return int(finite[np.argmin(np.abs(index[finite] - target))])


def diffusion_pseudotime(adata, root: int, *, n_dcs: int = 10) -> np.ndarray:
    """Diffusion pseudotime in [0, 1] on ``adata``'s neighbour graph (``sc.pp.neighbors`` first).

    Cells in components not connected to the root get NaN.
    """
    import scanpy as sc

    n_comps = int(min(15, adata.n_obs - 2))
    sc.tl.diffmap(adata, n_comps=n_comps)
    adata.uns["iroot"] = int(root)
    sc.tl.dpt(adata, n_dcs=min(n_dcs, n_comps))
    pt = adata.obs.pop("dpt_pseudotime").to_numpy(dtype=np.float64)
    pt[~np.isfinite(pt)] = np.nan
    if np.nanmax(pt) > 0:
        pt = pt / np.nanmax(pt)
    return pt
