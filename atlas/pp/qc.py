"""Neutrophil-aware per-cell QC, computed chunk by chunk during ingest.

Neutrophils hold little RNA, so a cell with neutrophil evidence (at least
``qc.neutrophil_min_markers`` of ``qc.neutrophil_markers`` detected and at most
``qc.exclusion_max_markers`` markers of other lineages) is held to the lower
``neutrophil_min_counts`` / ``neutrophil_min_genes`` floor; other cells to ``min_counts`` /
``min_genes``. A ``None`` neutrophil floor means "no special floor": such cells get the default.
``max_counts``, ``max_genes`` and ``max_pct_mito`` apply to every cell.

A removed cell is counted once, under the first failing reason in :data:`QC_REASONS` order:
low_counts, low_genes, high_counts, high_genes, high_mito, then doublets (scrublet runs on the
cells that passed the thresholds).

The functions here take arrays and return arrays or DataFrames; none of them sees AnnData.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..config import QCConfig, QCThresholds

logger = logging.getLogger(__name__)

__all__ = [
    "QC_REASONS",
    "QCGeneSets",
    "QCTally",
    "detect_doublets",
    "qc_metrics",
    "qc_reasons",
]

#: removal reasons, in the order they are checked (code = position + 1; 0 = kept)
QC_REASONS: tuple[str, ...] = (
    "low_counts",
    "low_genes",
    "high_counts",
    "high_genes",
    "high_mito",
    "doublets",
)
_THRESHOLD_FIELDS = tuple(QCThresholds.model_fields)


@dataclass(frozen=True)
class QCGeneSets:
    """Column indices of the gene groups QC looks at, for one gene axis."""

    mito: np.ndarray
    ribo: np.ndarray
    markers: np.ndarray
    exclusion: np.ndarray

    @classmethod
    def from_genes(cls, genes: Sequence[str], qc: QCConfig) -> QCGeneSets:
        """Find the gene groups in ``genes`` (current human symbols).

        Parameters
        ----------
        genes
            The gene axis.
        qc
            QC settings (marker lists).
        """
        g = pd.Index(genes).astype(str)
        upper = g.str.upper()
        return cls(
            mito=np.flatnonzero(upper.str.startswith("MT-")),
            ribo=np.flatnonzero(upper.str.startswith(("RPL", "RPS"))),
            markers=np.flatnonzero(g.isin(qc.neutrophil_markers)),
            exclusion=np.flatnonzero(g.isin(qc.exclusion_markers)),
        )


def _n_detected(X: sp.csr_matrix, cols: np.ndarray) -> np.ndarray:
    if len(cols) == 0:
        return np.zeros(X.shape[0], dtype=np.int64)
    sub = X[:, cols]
    sub.eliminate_zeros()
    return np.diff(sub.indptr)


def _col_sum(X: sp.csr_matrix, cols: np.ndarray) -> np.ndarray:
    if len(cols) == 0:
        return np.zeros(X.shape[0])
    return np.asarray(X[:, cols].sum(axis=1, dtype=np.float64)).ravel()


def qc_metrics(
    X: sp.csr_matrix, gene_sets: QCGeneSets, *, min_markers: int, exclusion_max: int
) -> pd.DataFrame:
    """Per-cell QC metrics of one chunk.

    Parameters
    ----------
    X
        CSR counts, cells x genes (explicit zeros removed).
    gene_sets
        Gene groups of ``X``'s columns.
    min_markers
        Neutrophil markers a cell must show for neutrophil evidence.
    exclusion_max
        Most other-lineage markers a cell may show and still have neutrophil evidence.

    Returns
    -------
    DataFrame (positional index) with ``total_counts``, ``n_genes``, ``pct_mito``, ``pct_ribo``,
    ``neutrophil_evidence``.
    """
    total = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    n_genes = np.diff(X.indptr).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct_mito = np.where(total > 0, 100 * _col_sum(X, gene_sets.mito) / total, 0.0)
        pct_ribo = np.where(total > 0, 100 * _col_sum(X, gene_sets.ribo) / total, 0.0)
    evidence = (_n_detected(X, gene_sets.markers) >= min_markers) & (
        _n_detected(X, gene_sets.exclusion) <= exclusion_max
    )
    return pd.DataFrame(
        {
            "total_counts": total.astype(np.float32),
            "n_genes": n_genes.astype(np.int32),
            "pct_mito": pct_mito.astype(np.float32),
            "pct_ribo": pct_ribo.astype(np.float32),
            "neutrophil_evidence": evidence,
        }
    )


def _floor(evidence: np.ndarray, default: int | None, neutro: int | None) -> np.ndarray:
    d = -np.inf if default is None else default
    n = d if neutro is None else neutro
    return np.where(evidence, n, d)


def qc_reasons(metrics: pd.DataFrame, thresholds: QCThresholds) -> tuple[np.ndarray, np.ndarray]:
    """First failing threshold per cell, and which cells pass only thanks to the neutrophil floor.

    Parameters
    ----------
    metrics
        Output of :func:`qc_metrics`.
    thresholds
        The data set's thresholds.

    Returns
    -------
    reason
        int8 code per cell: 0 = passes, ``k`` = ``QC_REASONS[k - 1]``.
    floor_kept
        Passing cells that would fail the default ``min_counts``/``min_genes``.
    """
    t = thresholds
    total = metrics["total_counts"].to_numpy()
    ngenes = metrics["n_genes"].to_numpy()
    mito = metrics["pct_mito"].to_numpy()
    ev = metrics["neutrophil_evidence"].to_numpy()
    fails = [
        total < _floor(ev, t.min_counts, t.neutrophil_min_counts),
        ngenes < _floor(ev, t.min_genes, t.neutrophil_min_genes),
        total > (np.inf if t.max_counts is None else t.max_counts),
        ngenes > (np.inf if t.max_genes is None else t.max_genes),
        mito > (np.inf if t.max_pct_mito is None else t.max_pct_mito),
    ]
    reason = np.zeros(len(total), dtype=np.int8)
    for code in range(len(fails), 0, -1):  # last assignment wins: the first reason in order
        reason[fails[code - 1]] = code
    default_fail = (total < _floor(np.zeros_like(ev), t.min_counts, None)) | (
        ngenes < _floor(np.zeros_like(ev), t.min_genes, None)
    )
    return reason, (reason == 0) & ev & default_fail


class QCTally:
    """Counts of one data set's QC outcome: a row of the QC table."""

    def __init__(self, dataset_id: str, thresholds: QCThresholds, *, enabled: bool = True):
        self.dataset_id = dataset_id
        self.thresholds = thresholds
        self.enabled = enabled
        self.cells_in = 0
        self.removed = dict.fromkeys(QC_REASONS, 0)
        self.floor_kept = 0
        self.evidence_in = 0
        self.evidence_out = 0

    def add(self, metrics: pd.DataFrame, reason: np.ndarray, floor_kept: np.ndarray) -> np.ndarray:
        """Count one chunk; return the mask of cells kept (all cells when QC is disabled).

        Parameters
        ----------
        metrics, reason, floor_kept
            Output of :func:`qc_metrics` and :func:`qc_reasons` for the chunk.
        """
        self.cells_in += len(reason)
        ev = metrics["neutrophil_evidence"].to_numpy()
        self.evidence_in += int(ev.sum())
        if not self.enabled:
            self.evidence_out += int(ev.sum())
            return np.ones(len(reason), dtype=bool)
        for code, name in enumerate(QC_REASONS[:-1], start=1):
            self.removed[name] += int((reason == code).sum())
        keep = reason == 0
        self.evidence_out += int(ev[keep].sum())
        self.floor_kept += int(floor_kept.sum())
        return keep

    def add_doublets(self, predicted: np.ndarray, evidence: np.ndarray, floor_kept: np.ndarray) -> None:
        """Count doublets removed among the cells that passed the thresholds.

        Parameters
        ----------
        predicted
            Predicted doublets (bool) of the passing cells.
        evidence, floor_kept
            Neutrophil evidence and floor-kept flags of the same cells.
        """
        if not self.enabled:
            return
        self.removed["doublets"] += int(predicted.sum())
        self.evidence_out -= int((evidence & predicted).sum())
        self.floor_kept -= int((floor_kept & predicted).sum())

    @property
    def cells_out(self) -> int:
        """Cells kept."""
        return self.cells_in - sum(self.removed.values())

    def row(self) -> dict:
        """The QC-table row: counts, then the thresholds used."""
        row = {"dataset_id": self.dataset_id, "cells_in": self.cells_in}
        row.update({f"removed_{k}": v for k, v in self.removed.items()})
        row.update(
            {
                "cells_out": self.cells_out,
                "kept_by_neutrophil_floor": self.floor_kept,
                "qc_enabled": self.enabled,
            }
        )
        row.update({k: getattr(self.thresholds, k) for k in _THRESHOLD_FIELDS})
        return row

    def neutrophil_row(self) -> dict:
        """Row of the neutrophil-evidence table: evidence cells in and out."""
        return {
            "dataset_id": self.dataset_id,
            "evidence_cells_in": self.evidence_in,
            "evidence_cells_out": self.evidence_out,
            "evidence_cells_removed": self.evidence_in - self.evidence_out,
            "kept_by_neutrophil_floor": self.floor_kept,
        }


def detect_doublets(
    X,
    samples: np.ndarray,
    *,
    min_cells: int = 100,
    random_state: int = 0,
    dataset_id: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Scrublet (:func:`scanpy.pp.scrublet`) per sample on raw counts.

    Parameters
    ----------
    X
        Counts, cells x genes: a CSR matrix, or anything whose ``X[rows]`` (sorted integer rows)
        gives CSR rows, such as :class:`atlas.io.store.PartFile` (then only one sample is in memory).
    samples
        Sample label per cell; each sample is scored separately.
    min_cells
        Samples with fewer cells are skipped (score NaN, not a doublet), with a log line.
    random_state
        Seed passed to scrublet.
    dataset_id
        For log lines.

    Returns
    -------
    score
        Doublet score per cell (NaN where skipped).
    predicted
        Predicted doublet per cell.
    """
    import anndata as ad
    import scanpy as sc

    samples = np.asarray(samples).astype(str)
    score = np.full(len(samples), np.nan, dtype=np.float32)
    predicted = np.zeros(len(samples), dtype=bool)
    for s in pd.unique(samples):
        idx = np.flatnonzero(samples == s)
        if len(idx) < min_cells:
            logger.info(
                "data set %s, sample %s: %d cells < doublet_min_cells=%d; doublet detection skipped",
                dataset_id,
                s,
                len(idx),
                min_cells,
            )
            continue
        a = ad.AnnData(sp.csr_matrix(X[idx], dtype=np.float32))
        sc.pp.scrublet(a, random_state=random_state, verbose=False)
        score[idx] = a.obs["doublet_score"].to_numpy()
        predicted[idx] = a.obs["predicted_doublet"].to_numpy().astype(bool)
        logger.info(
            "data set %s, sample %s: %d of %d cells predicted doublets",
            dataset_id,
            s,
            int(predicted[idx].sum()),
            len(idx),
        )
    return score, predicted


def scrublet_available() -> bool:
    """Whether scanpy's scrublet can pick its threshold (needs scikit-image)."""
    import importlib.util

    return importlib.util.find_spec("skimage") is not None
