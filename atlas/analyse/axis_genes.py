"""The ``signature`` pseudotime: a cell's score on the genes that tell the trajectory's end from its start.

The start and end populations (chosen and checked in :mod:`atlas.analyse.pseudotime`) are compared gene
by gene on log-normalised counts, within data sets, and the genes with a large, FDR-controlled effect
become a signature learned from the data; each cell's weighted expression of it is its pseudotime.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..core.errors import AtlasError
from .expression import log_normalised as _log_normalised

__all__ = ["MIN_AXIS_GENES", "MIN_BLOCK_CELLS", "axis_genes", "scale_to_unit", "signature_pseudotime"]

#: fewer genes that separate the start from the end cells: no signature (the caller falls back)
MIN_AXIS_GENES = 5
#: a data set takes part in the start-vs-end comparison with this many start and end cells
MIN_BLOCK_CELLS = 3


def scale_to_unit(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to [0, 1] over its finite entries (all 0 when they are equal); NaN stays NaN."""
    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.shape, np.nan)
    finite = np.isfinite(v)
    if finite.any():
        lo, hi = v[finite].min(), v[finite].max()
        out[finite] = (v[finite] - lo) / (hi - lo) if hi > lo else 0.0
    return out


def _mean_var(x: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and sample variance (ddof 1) of ``x``'s ``rows``."""
    sub = x[rows]
    n = sub.shape[0]
    mean = np.asarray(sub.mean(axis=0)).ravel()
    sq = np.asarray(sub.multiply(sub).mean(axis=0)).ravel()
    var = np.maximum(sq - mean**2, 0.0) * (n / max(n - 1, 1))
    return mean, var


def _blocked_difference(
    x: sp.csr_matrix, start: np.ndarray, end: np.ndarray, blocks: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """End-minus-start mean difference per gene within blocks (data sets), combined over the blocks.

    Each block with :data:`MIN_BLOCK_CELLS` start and end cells contributes its own difference,
    weighted by ``n_start * n_end / (n_start + n_end)``; no such block (or ``blocks`` None) is one block
    of all cells. Returns the difference, its squared standard error, the pooled within-block variance
    and the degrees of freedom.
    """
    groups = [(start, end)]
    if blocks is not None:
        blocks = np.asarray(blocks)
        per_block = [(start[blocks[start] == b], end[blocks[end] == b]) for b in np.unique(blocks[np.r_[start, end]])]
        kept = [(s0, e0) for s0, e0 in per_block if s0.size >= MIN_BLOCK_CELLS and e0.size >= MIN_BLOCK_CELLS]
        groups = kept or groups
    diff = se2 = var = 0.0
    total, dof = 0.0, 0
    for s0, e0 in groups:
        m1, v1 = _mean_var(x, e0)
        m0, v0 = _mean_var(x, s0)
        w = s0.size * e0.size / (s0.size + e0.size)
        diff = diff + w * (m1 - m0)
        se2 = se2 + w**2 * (v1 / e0.size + v0 / s0.size)
        var = var + w * (v1 + v0) / 2.0
        total += w
        dof += s0.size + e0.size - 2
    return diff / total, se2 / total**2, var / total, float(max(dof, 1))


def axis_genes(
    x: sp.csr_matrix, start: np.ndarray, end: np.ndarray, *, blocks: np.ndarray | None = None,
    min_effect: float = 0.8, fdr: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """The genes that tell ``end`` cells from ``start`` cells in log expression ``x``, and their weights.

    The two populations are compared within ``blocks`` (each cell's data set; see
    :func:`_blocked_difference`), so a gene that differs between studies because the start cells come
    from some and the end cells from others is not taken for the trajectory. A gene is kept when its
    t-test passes a Benjamini-Hochberg FDR of ``fdr`` and its standardised effect (difference over
    the pooled within-block standard deviation, Cohen's d) is at least ``min_effect``: significance
    alone keeps ever weaker genes as populations grow, an effect size alone keeps noise in small ones.
    The weight is the mean difference (end minus start).

    Returns
    -------
    genes, weights
        Column positions of the kept genes and their weights.
    """
    from scipy.stats import false_discovery_control
    from scipy.stats import t as student_t

    if start.size < 2 or end.size < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    diff, se2, var, dof = _blocked_difference(x, start, end, blocks)
    ok = se2 > 0
    t = np.zeros_like(diff)
    t[ok] = diff[ok] / np.sqrt(se2[ok])
    p = np.ones_like(diff)
    p[ok] = 2.0 * student_t.sf(np.abs(t[ok]), dof)
    q = false_discovery_control(p, method="bh")
    sd = np.sqrt(var)
    effect = np.divide(diff, sd, out=np.zeros_like(diff), where=sd > 0)
    genes = np.flatnonzero(ok & (q <= fdr) & (np.abs(effect) >= min_effect))
    return genes, diff[genes]


def signature_pseudotime(
    counts, start: np.ndarray, end: np.ndarray, *, totals: np.ndarray | None = None,
    blocks: np.ndarray | None = None, min_effect: float = 0.8, fdr: float = 0.05,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cell's score on the genes that separate the ``end`` from the ``start`` cells, scaled to [0, 1].

    Parameters
    ----------
    counts
        (cells, genes) raw counts (dense or sparse), e.g. the sub-atlas's HVGs.
    start, end
        Positions of the start and end populations (a cell in both is dropped from ``end``).
    totals
        Each cell's total counts over all genes (normalises the counts; the row sums when None).
    blocks
        Each cell's data set: start and end cells are compared within data sets (:func:`axis_genes`).
    min_effect, fdr
        Gene selection (:func:`axis_genes`).

    Returns
    -------
    pseudotime, genes, weights
        The scaled score (all NaN when fewer than :data:`MIN_AXIS_GENES` genes pass), and the genes'
        column positions and weights.
    """
    start = np.unique(np.asarray(start, dtype=np.int64))
    end = np.setdiff1d(np.asarray(end, dtype=np.int64), start)
    if start.size == 0 or end.size == 0:
        raise AtlasError("signature pseudotime needs at least one start and one end cell")
    x = _log_normalised(counts, totals)
    genes, weights = axis_genes(x, start, end, blocks=blocks, min_effect=min_effect, fdr=fdr)
    if genes.size < MIN_AXIS_GENES:
        return np.full(x.shape[0], np.nan), genes, weights
    return scale_to_unit(np.asarray(x[:, genes] @ weights).ravel()), genes, weights
