"""Signature scoring on arrays: the pure function under :func:`atlas.score.score_signatures`.

:func:`score_matrix` never sees AnnData: it takes a cells x genes matrix (numpy, scipy CSR, a
backed sparse dataset, a dask array or a cupyx CSR matrix) and gene sets as column indices, and
returns a cells x signatures float64 array.

Fusion: every signature (and its control set) is scored in one pass over the matrix as one
product ``f(X) @ W``, where ``f`` is the optional normalisation (counts per ``target_sum``, log1p)
applied to each stored value as it is read and ``W`` is a sparse genes x columns weight matrix
(``1/|set|`` on set members; for the ``"scanpy"`` method ``-1/|controls|`` on control genes, so one
column gives mean(set) - mean(controls)). The ``"scanpy"`` method needs gene means first (one more
pass, whatever the number of signatures); ``"aucell"`` needs the count of stored values per gene
(decoupler drops genes never stored); ``"ucell"`` and ``"mean"`` are one pass. Given a
``gene_stats`` cache (:class:`atlas.ingest.genestats.GeneStatsCache`, which :func:`atlas.score.score_store`
passes), both first passes are read from it when it is valid, and a fresh first pass is saved to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from ..core.backend import is_dask_array, resolve_backend
from ..core.errors import AtlasError
from .engine import RowKernel, run_col_counts, run_fold, run_rows
from .scanpy_compat import control_sets, finalize_gene_means, fold_dtype
from .sources import as_source, looks_like_counts

logger = logging.getLogger(__name__)

Method = Literal["scanpy", "aucell", "ucell", "mean"]
METHODS: tuple[str, ...] = ("scanpy", "aucell", "ucell", "mean")
DEFAULT_CHUNK_SIZE = 20_000


@dataclass
class ScoreDetails:
    """What a scoring run decided: normalisation, controls, rank parameters."""

    method: str
    backend: str
    normalized: bool
    n_controls: list[int] = field(default_factory=list)
    n_up: int | None = None
    n_genes_ranked: int | None = None
    dropped_unexpressed: list[list[int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python view (for ``adata.uns``)."""
        d = dict(self.__dict__)
        d["dropped_unexpressed"] = [list(map(int, x)) for x in self.dropped_unexpressed]
        return d


def membership(
    gene_sets: Sequence[np.ndarray],
    n_genes: int,
    weights: Sequence[float] | None = None,
    columns: Sequence[int] | None = None,
    n_out: int | None = None,
) -> dict[str, np.ndarray]:
    """Genes x columns weight matrix ``W`` as CSR arrays ``w_indptr`` (int64), ``w_cols``, ``w_vals``."""
    cols = list(range(len(gene_sets))) if columns is None else list(columns)
    n_out = len(gene_sets) if n_out is None else n_out
    rows, cc, vv = [], [], []
    for j, genes in enumerate(gene_sets):
        genes = np.asarray(genes, dtype=np.int64)
        rows.append(genes)
        cc.append(np.full(genes.size, cols[j], np.int64))
        vv.append(np.full(genes.size, 1.0 if weights is None else weights[j]))
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    w = sp.csr_matrix(
        (np.concatenate(vv) if vv else np.zeros(0), (r, np.concatenate(cc) if cc else r)),
        shape=(n_genes, n_out),
    )
    w.sum_duplicates()
    return {"w_indptr": w.indptr.astype(np.int64), "w_cols": w.indices.astype(np.int32), "w_vals": w.data}


def decide_normalization(values: np.ndarray, dtype: np.dtype, normalize: bool | str, method: str) -> int:
    """Normalisation mode for the fused pass (see :mod:`atlas._kernels.cpu`), with the decision logged."""
    from .._kernels.cpu import NORM_F32, NORM_F64, NORM_NONE

    if normalize not in (True, False, "auto"):
        raise AtlasError(f"normalize={normalize!r}: use True, False or 'auto'")
    counts = looks_like_counts(values)
    if method in ("aucell", "ucell"):
        logger.info(
            "%s ranks each cell's values; per-cell normalisation does not change ranks, so the "
            "matrix is ranked as stored",
            method,
        )
        if normalize is True and not counts:
            raise AtlasError(
                "normalize=True but the matrix does not hold raw counts (non-integer or negative values)"
            )
        return NORM_NONE
    if normalize is True and not counts:
        raise AtlasError(
            "normalize=True but the matrix does not hold raw counts (it has non-integer or negative values; "
            "it looks normalised already). Pass normalize=False (or 'auto') to score it as it is, or give "
            "the raw counts (e.g. layer='counts')"
        )
    if normalize is False and counts and values.size:
        logger.warning(
            "the matrix holds integer counts but normalize=False: scoring raw counts as asked "
            "(normalize='auto' would normalise them to log1p counts per 10k first)"
        )
    if normalize is False or (normalize == "auto" and not counts):
        if normalize == "auto":
            logger.info("normalize='auto': values are not integer counts; scoring the matrix as it is")
            if values.size and np.nanmax(values) > 50:
                logger.warning(
                    "values reach %.3g: the matrix may be normalised but not log-transformed",
                    float(np.nanmax(values)),
                )
        return NORM_NONE
    logger.info("normalising counts on the fly: counts per 10k, log1p (no normalised matrix is stored)")
    return NORM_F64 if np.dtype(dtype) == np.float64 else NORM_F32


def score_matrix(
    X: Any,
    gene_sets: Sequence[np.ndarray],
    *,
    method: Method = "scanpy",
    normalize: bool | str = "auto",
    backend: str = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    ctrl_size: int = 50,
    n_bins: int = 25,
    random_state: int | np.random.RandomState | None = 0,
    max_rank: int = 1500,
    n_up: int | None = None,
    n_missing: Sequence[int] | None = None,
    target_sum: float = 1e4,
    names: Sequence[str] | None = None,
    gene_stats: Any = None,
) -> tuple[np.ndarray, ScoreDetails]:
    """Score gene sets on a cells x genes matrix; returns ``(scores, details)``.

    Parameters
    ----------
    X
        Cells x genes: numpy array, scipy CSR/CSC, backed sparse dataset (or its h5py/zarr group),
        dense h5py/zarr array, dask array of row blocks, or cupyx CSR on the GPU.
    gene_sets
        Per signature, the column indices of its genes present in ``X`` (non-empty).
    method
        ``"scanpy"`` (= ``sc.tl.score_genes``), ``"aucell"`` (= decoupler), ``"ucell"`` (= pyUCell) or
        ``"mean"``.
    normalize
        ``"auto"`` normalises integer counts (counts per ``target_sum``, log1p) on the fly and uses
        other data as they are; ``True``/``False`` force it. Ignored by the rank methods.
    backend
        ``"auto"``, ``"cpu"`` or ``"gpu"`` (see :mod:`atlas.core.backend`).
    chunk_size
        Cells per row chunk (bounds memory).
    ctrl_size, n_bins, random_state
        scanpy's control-gene parameters; ``random_state`` also seeds AUCell's tie-breaking gene order
        (decoupler uses 0).
    max_rank
        UCell's rank cap.
    n_up
        AUCell's rank cap (default: 5% of the expressed genes, as decoupler).
    n_missing
        UCell only: per signature, absent genes counted at ``max_rank`` (pyUCell's
        ``missing_genes="impute"``); default none.
    target_sum
        Counts per cell after normalisation.
    names
        Signature names (error messages only).
    gene_stats
        Optional :class:`atlas.ingest.genestats.GeneStatsCache` of ``X``: per-gene sums and stored-value
        counts read from it replace the first pass of ``"scanpy"`` and ``"aucell"``; a first pass that
        runs is saved to it.

    Returns
    -------
    scores
        ``(n_cells, n_signatures)`` float64.
    details
        :class:`ScoreDetails`.
    """
    if method not in METHODS:
        raise AtlasError(f"method={method!r} is not one of {', '.join(METHODS)}")
    sets = [np.unique(np.asarray(g, dtype=np.int64)) for g in gene_sets]
    for j, g in enumerate(sets):
        if g.size == 0:
            raise AtlasError(f"signature {names[j] if names else j!r} has no genes in the matrix")
    if is_dask_array(X):
        from .exec_dask import DaskSource

        src = DaskSource(X)
        be = resolve_backend(backend)
    else:
        src = as_source(X)
        be = resolve_backend(backend, X)
    if chunk_size < 1:
        raise AtlasError(f"chunk_size must be >= 1, got {chunk_size}")
    n_genes = src.n_cols
    for j, g in enumerate(sets):
        if g.size and (g[0] < 0 or g[-1] >= n_genes):
            raise AtlasError(
                f"signature {names[j] if names else j!r}: gene index out of range 0..{n_genes - 1}"
            )
    mode = decide_normalization(src.first_values(), src.dtype, normalize, method)
    details = ScoreDetails(method=method, backend=be, normalized=mode != 0)
    kw = {"backend": be, "chunk_size": chunk_size}
    S = len(sets)

    if method == "mean":
        kern = RowKernel(
            "weighted_sum",
            S,
            membership(sets, n_genes, [1.0 / g.size for g in sets]),
            {"mode": mode, "target": float(target_sum)},
        )
        return src_rows(src, kern, kw), details

    if method == "scanpy":
        dtype = fold_dtype(src.dtype, mode)
        sums = None if gene_stats is None else gene_stats.sums(mode, float(target_sum), dtype)
        if sums is None:
            sums, nnz = src_fold(src, kw, mode, target_sum, dtype)
            if gene_stats is not None:
                from ..ingest.genestats import GeneStats

                gene_stats.save(GeneStats(sums, nnz, src.n_rows, mode, float(target_sum)))
        else:
            logger.info("gene means from the cache %s (one pass over the matrix)", gene_stats.path)
        means = finalize_gene_means(sums, src.n_rows, dense=src.dense)
        ctrls = control_sets(
            means,
            sets,
            ctrl_size=ctrl_size,
            n_bins=n_bins,
            random_state=random_state,
            names=list(names) if names else None,
        )
        details.n_controls = [int(c.size) for c in ctrls]
        # set genes and control genes are disjoint: one signed column per signature
        weights = [1.0 / g.size for g in sets] + [-1.0 / c.size for c in ctrls]
        w = membership([*sets, *ctrls], n_genes, weights, columns=[*range(S), *range(S)], n_out=S)
        kern = RowKernel("weighted_sum", S, w, {"mode": mode, "target": float(target_sum)})
        return src_rows(src, kern, kw), details

    if method == "ucell":
        if max_rank < 1:
            raise AtlasError(f"max_rank must be >= 1, got {max_rank}")
        tb = np.arange(n_genes, dtype=np.int64)
        arrays = _rank_arrays(sets, n_genes, tb, tb)
        kern = RowKernel("rank", S, arrays, {"mode": 1, "cap": int(max_rank), "nvar": n_genes})
        out = src_rows(src, kern, kw)
        miss = np.zeros(S) if n_missing is None else np.asarray(n_missing, dtype=np.float64)
        return ucell_finalize(out, np.array([g.size for g in sets]) + miss, max_rank), details

    # aucell
    counts = None if gene_stats is None else gene_stats.nnz()
    if counts is None:
        counts = src_col_counts(src, kw)
    universe = np.flatnonzero(counts > 0)
    nvar = int(universe.size)
    details.n_genes_ranked = nvar
    kept = [np.intersect1d(g, universe) for g in sets]
    details.dropped_unexpressed = [np.setdiff1d(g, universe) for g in sets]
    for j, g in enumerate(kept):
        if g.size == 0:
            raise AtlasError(
                f"signature {names[j] if names else j!r}: none of its genes is expressed in any cell"
            )
    n_up = aucell_n_up(nvar, n_up)
    details.n_up = n_up
    tb, tb_inv = aucell_tie_order(n_genes, universe, random_state)
    arrays = _rank_arrays(kept, n_genes, tb, tb_inv)
    kern = RowKernel("rank", S, arrays, {"mode": 0, "cap": n_up, "nvar": nvar})
    out = src_rows(src, kern, kw)
    return aucell_finalize(out, np.array([g.size for g in kept]), n_up), details


def src_rows(src, kern, kw):
    """Row pass on any source (dask sources run their own executor)."""
    if hasattr(src, "run_rows"):
        return src.run_rows(kern)
    return run_rows(src, kern, **kw)


def src_fold(src, kw, mode, target, dtype):
    """Gene-sum pass on any source: ``(sums, stored values per gene or None)``."""
    if hasattr(src, "run_fold"):
        return src.run_fold(mode, float(target), np.dtype(dtype)), None
    return run_fold(src, mode=mode, target=float(target), dtype=dtype, **kw)


def src_col_counts(src, kw):
    """Stored-values-per-gene pass on any source."""
    if hasattr(src, "run_col_counts"):
        return src.run_col_counts()
    return run_col_counts(src, **kw)


def _rank_arrays(sets, n_genes, tb, tb_inv) -> dict[str, np.ndarray]:
    w = membership(sets, n_genes)
    hit = np.flatnonzero(np.diff(w["w_indptr"]) > 0)
    order = np.argsort(tb[hit], kind="stable")
    return {
        "tb": tb.astype(np.int64),
        "tb_inv": tb_inv.astype(np.int64),
        "memb_indptr": w["w_indptr"],
        "memb_cols": w["w_cols"],
        "cand_gene": hit[order].astype(np.int64),
        "cand_tb": tb[hit][order].astype(np.int64),
    }


def aucell_n_up(nvar: int, n_up: int | float | None) -> int:
    """decoupler's ``n_up``: ``ceil(0.05 * nvar)`` clipped to ``[2, nvar]`` unless given."""
    n = int(np.clip(np.ceil(0.05 * nvar), 2, nvar)) if n_up is None else int(np.ceil(n_up))
    if not nvar >= n > 1:
        raise AtlasError(f"AUCell needs 1 < n_up <= number of expressed genes ({nvar}); got n_up={n}")
    return n


def aucell_tie_order(n_genes: int, universe: np.ndarray, random_state) -> tuple[np.ndarray, np.ndarray]:
    """Tie-break position of every expressed gene: decoupler's column shuffle (``default_rng(seed)``)."""
    nvar = universe.size
    seed = 0 if random_state is None else random_state
    if isinstance(seed, np.random.RandomState):
        seed = int(seed.randint(0, 2**31 - 1))
    idx = np.random.default_rng(seed=seed).choice(np.arange(nvar), nvar, replace=False)
    tb_inv = universe[idx]  # position p holds gene tb_inv[p]
    tb = np.full(n_genes, np.iinfo(np.int32).max, np.int64)
    tb[tb_inv] = np.arange(nvar)
    return tb, tb_inv


def aucell_finalize(num: np.ndarray, sizes: np.ndarray, n_up: int) -> np.ndarray:
    """AUC / max AUC, with decoupler's max AUC ``sum(n_up - x for x in 1..min(L, n_up - 1))``."""
    k = np.minimum(sizes, n_up - 1).astype(np.int64)
    max_auc = (k * n_up - k * (k + 1) // 2).astype(np.float64)
    return num / max_auc


def ucell_finalize(delta: np.ndarray, sizes: np.ndarray, max_rank: int) -> np.ndarray:
    """pyUCell's U statistic from rank-sum offsets, in its float32 arithmetic (bit for bit)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    rank_sum = (sizes * max_rank + delta).astype(np.float32)
    out = np.zeros(delta.shape, dtype=np.float32)
    for j, L in enumerate(sizes):
        s_min = L * (L + 1) / 2.0
        s_max = L * max_rank
        if s_max == s_min:
            continue
        score = np.float32(1.0) - (rank_sum[:, j] - np.float32(s_min)) / np.float32(s_max - s_min)
        score[score < 0] = 0.0
        out[:, j] = score
    return out.astype(np.float64)
