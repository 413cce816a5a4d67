"""The cells QC removed at ingest, kept aside so the analysis can say what they were.

A QC table per data set says how many cells each rule removed, not which cell types lost them: a mito or
high-count bound that removes neutrophils looks the same as one that removes damaged tumour cells. Ingest
therefore writes the removed cells' counts, metadata and QC metrics beside the store
(``<stem>.removed.h5ad``, obs ``qc_reason``); the analyse stage maps them into the atlas's latent space and
labels them from their annotated neighbours (:mod:`atlas.analyse.qc_audit`).

Barcodes under the lenient floor (``floor_min_counts`` UMIs or ``floor_min_genes`` genes) are not kept: they
are not usable cells, and an unfiltered 10x matrix holds hundreds of thousands of them. Everything removed
above the floor is (mad mode: upper-tail and mito outliers, doublets; fixed mode: also cells under
``min_counts`` / ``min_genes``), typically a few per cent of the store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..core.layout import beside_store
from .qc import QC_REASONS
from .settings import QCThresholds
from .store import StoreWriter, finalize_obs

__all__ = ["RemovedCells", "above_audit_floor", "removed_store_path"]


def removed_store_path(store: str | Path) -> Path:
    """``<stem>.removed.h5ad`` beside the store (always h5ad: a few per cent of the cells)."""
    return beside_store(store, "removed.h5ad")


def above_audit_floor(metrics: pd.DataFrame, thresholds: QCThresholds) -> np.ndarray:
    """Cells at or above the lenient floor (``floor_min_counts``, ``floor_min_genes``; ``None`` = no floor)."""
    ok = np.ones(len(metrics), dtype=bool)
    if thresholds.floor_min_counts is not None:
        ok &= metrics["total_counts"].to_numpy() >= thresholds.floor_min_counts
    if thresholds.floor_min_genes is not None:
        ok &= metrics["n_genes"].to_numpy() >= thresholds.floor_min_genes
    return ok


class RemovedCells:
    """Collects removed cells (counts on the store's gene axis, obs with ``qc_reason``) into one h5ad.

    Parameters
    ----------
    path
        Where to write (a temporary path from :func:`atlas.core.atomic.atomic_path`).
    n_vars
        Genes of the store.
    """

    def __init__(self, path: str | Path, n_vars: int):
        self.writer = StoreWriter(path, n_vars, fmt="h5ad", chunk_elems=1 << 16)  # a few per cent of the cells
        self.frames: list[pd.DataFrame] = []

    def add(self, X: sp.csr_matrix, obs: pd.DataFrame, reason: np.ndarray) -> None:
        """Append removed cells: their counts (store axis), obs rows and QC reason codes (1-based)."""
        if len(obs) == 0:
            return
        if X.shape[0] != len(obs) or len(reason) != len(obs):
            raise ValueError(f"removed cells: {X.shape[0]} rows of counts, {len(obs)} obs rows, {len(reason)} reasons")
        obs = obs.drop(columns=[c for c in obs.columns if c.startswith("_")])
        obs["qc_reason"] = np.asarray(QC_REASONS, dtype=object)[np.asarray(reason, dtype=np.int64) - 1]
        self.writer.append(X)
        self.frames.append(obs)

    @property
    def n_obs(self) -> int:
        return self.writer.n_obs

    def finish(self, var: pd.DataFrame, categorical: list[str]) -> None:
        """Write obs and var and close the file (an empty store when nothing was removed)."""
        obs = finalize_obs(self.frames, categorical=[*categorical, "qc_reason"]) if self.frames else pd.DataFrame(
            {"qc_reason": pd.Categorical([])}, index=pd.Index([], dtype=str)
        )
        self.writer.finish(obs=obs, var=var, uns={"atlas": {"what": "cells removed by QC at ingest"}})

    def close(self) -> None:
        self.writer.close()
