"""seurat_v3 HVGs of a store read in row chunks: the genes :func:`~atlas.integrate.hvg.select_hvgs` chooses,
without the matrix in memory.

scanpy's seurat_v3 (``_highly_variable_genes_seurat_v3``) needs, per batch, each gene's mean and
variance (to fit the loess of log variance on log mean, which gives each gene's clip value) and then
the sums of the clipped values and of their squares. Both are sums over cells, so two passes over
the row chunks give them:

1. per batch and gene: sums and sums of squares of the counts (and each gene's stored values, to size
   the HVG matrix read afterwards); the counts check of the whole store rides along;
2. per batch and gene: sums of the clipped values and of their squares.

The arithmetic is scanpy's own, in the same order, so the result is the same to the last bit: the
sums of pass 1 are of whole numbers (exact in float64 whatever the order; squares are taken in the
data's dtype, as scanpy's kernel does), and pass 2 adds each gene's clipped values of a batch in cell
order, as scanpy's sequential kernel does. Gene exclusions, batch handling, loess spans and what is
written into ``var``/``uns`` are shared with :func:`select_hvgs`. Memory: four float64 arrays of
batches x genes, plus one row chunk. The formulas (Stuart et al., Cell 2019) follow scanpy's
implementation (BSD-3-Clause, scverse) step by step, which is what makes the two agree bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from numba import njit

from ._checks import INTEGER_TOLERANCE, counts_matrix, require_obs_keys
from .errors import TooSmallError
from .hvg import _STAT_COLS, fit_with_spans, hvg_batches, hvg_candidates, record_hvgs
from .storeio import CHUNK_ROWS, Store

log = logging.getLogger(__name__)


@dataclass
class StreamedHVGs:
    """What :func:`stream_hvgs` chose."""

    genes: list[str]  # in var order
    positions: np.ndarray  # their var positions
    nnz: int  # stored values of the ranked cells in these genes (the size of the HVG matrix)


def stream_hvgs(
    store: Store,
    adata,
    rows: np.ndarray | None = None,
    *,
    n_top_genes: int = 4000,
    batch_key: str | None = "dataset_id",
    exclude_groups: Sequence[str] = ("mito", "ribo"),
    exclude_genes: Sequence[str] = (),
    key_added: str = "highly_variable",
    chunk_size: int = CHUNK_ROWS,
) -> StreamedHVGs:
    """seurat_v3 HVGs of the store's ``rows``, read in row chunks; the same genes as :func:`select_hvgs`.

    Parameters
    ----------
    store
        The open store.
    adata
        The ranked cells without ``X`` (obs of ``rows``, in that order; var of the store), e.g.
        ``store.frame()`` less dropped batches. Receives the var columns and ``uns['hvg_selection']`` that
        :func:`select_hvgs` writes.
    rows
        Sorted store positions of the cells ranked (``None``: all). The counts check covers every row.
    n_top_genes, batch_key, exclude_groups, exclude_genes, key_added
        As in :func:`select_hvgs`.
    chunk_size
        Rows read at a time.

    Raises
    ------
    MissingKeyError, NotCountsError, TooSmallError, IntegrateInputError
        As :func:`select_hvgs`.
    """
    rows = np.arange(store.n_obs) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.size != adata.n_obs or (rows.size > 1 and np.any(np.diff(rows) <= 0)):
        raise ValueError("rows must be sorted store positions, one per cell of adata")
    require_obs_keys(adata, {"hvg_batch_key": batch_key})
    obs, batch_key = hvg_batches(adata.obs, batch_key)
    batch_info = obs[batch_key].to_numpy() if batch_key else np.zeros(adata.n_obs, dtype=int)
    batches, inverse = np.unique(batch_info, return_inverse=True)  # scanpy's order of batches
    codes = np.full(store.n_obs, -1, dtype=np.int64)
    codes[rows] = inverse
    n_b, n_g = len(batches), store.n_vars

    t = time.perf_counter()
    s, ss, nz = _pass_moments(store, codes, n_b, chunk_size)
    log.info("HVG pass 1 (sums per batch, counts check): %.1f s", time.perf_counter() - t)
    if adata.n_obs < 10:
        raise TooSmallError(f"HVG selection needs at least 10 cells; the data hold {adata.n_obs}")
    excluded, n_top = hvg_candidates(
        adata.var_names, s.sum(axis=0), n_top_genes, exclude_groups, exclude_genes
    )
    cand = np.flatnonzero(excluded == "")
    sizes = np.bincount(inverse, minlength=n_b)

    def fit(span: float):
        return [_fit_batch(s[b, cand], ss[b, cand], int(sizes[b]), span) for b in range(n_b)]

    fits, span = fit_with_spans(fit, batch_key)
    clip = np.full((n_b, n_g), np.inf)
    for b, (_mean, _reg_std, clip_val) in enumerate(fits):
        clip[b, cand] = clip_val
    t = time.perf_counter()
    cs, css = _pass_clipped(store, codes, clip, rows, chunk_size)
    log.info("HVG pass 2 (clipped sums per batch): %.1f s", time.perf_counter() - t)
    del clip

    norm = []
    for b, (mean, reg_std, _clip) in enumerate(fits):
        n_obs = int(sizes[b])
        norm_gene_var = (1 / ((n_obs - 1) * np.square(reg_std))) * (
            (n_obs * np.square(mean)) + css[b, cand] - 2 * cs[b, cand] * mean
        )
        norm.append(norm_gene_var.reshape(1, -1))
    means, variances = _mean_var(s.sum(axis=0)[cand], ss.sum(axis=0)[cand], adata.n_obs)
    stats = _rank(adata.var_names[cand], means, variances, np.concatenate(norm, axis=0), n_top, batch_key)
    chosen = record_hvgs(adata, stats, excluded, span=span, batch_key=batch_key, n_top=n_top,
                         exclude_groups=exclude_groups, key_added=key_added, backend="streamed")  # fmt: skip
    pos = adata.var_names.get_indexer(chosen)
    return StreamedHVGs(chosen, pos, int(nz[pos].sum()))


def _pass_moments(store: Store, codes: np.ndarray, n_b: int, chunk_size: int):
    """Pass 1 over every row: per batch and gene sums and sums of squares, each gene's stored values."""
    s = np.zeros((n_b, store.n_vars))
    ss = np.zeros((n_b, store.n_vars))
    nz = np.zeros(store.n_vars, dtype=np.int64)
    for start, _stop, ip, ind, dat in store.chunks(chunk_size):
        if _moments(np.asarray(ip, dtype=np.int64), ind, dat, codes, start, s, ss, nz, INTEGER_TOLERANCE):
            counts_matrix(SimpleNamespace(X=np.asarray(dat)))  # raises NotCountsError quoting the values
    return s, ss, nz


def _pass_clipped(store: Store, codes: np.ndarray, clip: np.ndarray, rows: np.ndarray, chunk_size: int):
    """Pass 2 over the ranked rows: per batch and gene sums of the clipped counts and of their squares."""
    cs = np.zeros(clip.shape)
    css = np.zeros(clip.shape)
    for start, _stop, ip, ind, dat in store.chunks(chunk_size, rows):
        _clipped(np.asarray(ip, dtype=np.int64), ind, dat, codes, start, clip, cs, css)
    return cs, css


def _fit_batch(s: np.ndarray, ss: np.ndarray, n_obs: int, span: float):
    """scanpy's loess of one batch: its genes' means, regularised standard deviations and clip values."""
    from skmisc.loess import loess

    mean, var = _mean_var(s, ss, n_obs)
    not_const = var > 0
    estimat_var = np.zeros(s.shape[0], dtype=np.float64)
    y = np.log10(var[not_const])
    x = np.log10(mean[not_const])
    model = loess(x, y, span=span, degree=2)
    model.fit()
    estimat_var[not_const] = model.outputs.fitted_values
    reg_std = np.sqrt(10**estimat_var)
    vmax = np.sqrt(n_obs)
    return mean, reg_std, reg_std * vmax + mean


def _mean_var(s: np.ndarray, ss: np.ndarray, n: int):
    """scanpy's ``_get_mean_var`` of a sparse matrix, from its column sums: means, unbiased variances."""
    means, variances = _finish_mean_var(s, ss, n)
    if n != 1:
        variances *= n / (n - 1)
    return means, variances


def _rank(names, means, variances, norm_gene_vars: np.ndarray, n_top_genes: int, batch_key: str | None):
    """scanpy's ranking of the normalised variances (median rank over batches, then batches high)."""
    import pandas as pd

    df = pd.DataFrame(index=names)
    df["means"], df["variances"] = means, variances
    ranked_norm_gene_vars = np.argsort(np.argsort(-norm_gene_vars, axis=1), axis=1)
    ranked_norm_gene_vars = ranked_norm_gene_vars.astype(np.float32)
    num_batches_high_var = np.sum((ranked_norm_gene_vars < n_top_genes).astype(int), axis=0)
    ranked_norm_gene_vars[ranked_norm_gene_vars >= n_top_genes] = np.nan
    ma_ranked = np.ma.masked_invalid(ranked_norm_gene_vars)
    median_ranked = np.ma.median(ma_ranked, axis=0).filled(np.nan)
    df["gene_name"] = df.index
    df["highly_variable_nbatches"] = num_batches_high_var
    df["highly_variable_rank"] = median_ranked
    df["variances_norm"] = np.mean(norm_gene_vars, axis=0)
    sort_cols = ["highly_variable_rank", "highly_variable_nbatches"]
    sorted_index = df[sort_cols].sort_values(sort_cols, ascending=[True, False], na_position="last").index
    df["highly_variable"] = False
    df.loc[sorted_index[: int(n_top_genes)], "highly_variable"] = True
    df["variances_norm"] = df["variances_norm"].to_numpy().astype("float64", copy=False)
    return df[_STAT_COLS + (["highly_variable_nbatches"] if batch_key else [])].copy()


# ------------------------------------------------------------------ kernels (scanpy's arithmetic, per chunk)
@njit(cache=True, nogil=True)
def _moments(ip, ind, dat, codes, start, s, ss, nz, tol):  # pragma: no cover - numba
    """Add a chunk's counts to ``s``/``ss`` of their cell's batch (``codes``; -1: not ranked); count the
    values that are not whole non-negative numbers (returned)."""
    base = ip[0]
    bad = 0
    for r in range(ip.shape[0] - 1):
        b = codes[start + r]
        for j in range(ip[r] - base, ip[r + 1] - base):
            value = dat[j]
            v = np.float64(value)
            if not (math.isfinite(v) and v >= 0 and abs(v - math.floor(v + 0.5)) <= tol):
                bad += 1
            if b < 0:
                continue
            g = ind[j]
            s[b, g] += value
            ss[b, g] += value * value  # in the data's dtype, as scanpy's sparse_mean_var_minor_axis
            nz[g] += 1
    return bad


@njit(cache=True, nogil=True)
def _clipped(ip, ind, dat, codes, start, clip, cs, css):  # pragma: no cover - numba
    """scanpy's ``_sum_and_sum_squares_clipped``, accumulated chunk by chunk into each cell's batch."""
    base = ip[0]
    for r in range(ip.shape[0] - 1):
        b = codes[start + r]
        if b < 0:
            continue
        for j in range(ip[r] - base, ip[r + 1] - base):
            idx = ind[j]
            element = min(np.float64(dat[j]), clip[b, idx])
            css[b, idx] += element**2
            cs[b, idx] += element


@njit(cache=True)
def _finish_mean_var(s, ss, major_len):  # pragma: no cover - numba
    """The last loop of scanpy's ``sparse_mean_var_minor_axis``, on column sums."""
    n = s.shape[0]
    means = np.zeros(n)
    variances = np.zeros(n)
    for c in range(n):
        sum_minor = s[c]
        means[c] = sum_minor / major_len
        variances[c] = ss[c] / major_len - (sum_minor / major_len) ** 2
    return means, variances
