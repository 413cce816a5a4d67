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

Layout: :func:`score_matrix` checks its inputs, chooses the executor once
(:func:`atlas.score.executors.plan`), prepares a :class:`ScorePass` and dispatches to one plain
function per method (:data:`METHOD_FUNCTIONS`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from ..core.errors import AtlasError
from .executors import Executor, plan
from .rowkernel import RowKernel
from .scanpy_compat import control_sets, finalize_gene_means, fold_dtype
from .sources import looks_like_counts

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
        ``"auto"``, ``"cpu"`` or ``"gpu"`` (see :func:`atlas.score.executors.resolve_backend`; the
        backend that ran is ``details.backend``).
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
            raise AtlasError(f"signature {_label(names, j)!r} has no genes in the matrix")
    run = plan(X, backend)
    if chunk_size < 1:
        raise AtlasError(f"chunk_size must be >= 1, got {chunk_size}")
    n_genes = run.src.n_cols
    for j, g in enumerate(sets):
        if g.size and (g[0] < 0 or g[-1] >= n_genes):
            raise AtlasError(f"signature {_label(names, j)!r}: gene index out of range 0..{n_genes - 1}")
    mode = decide_normalization(run.src.first_values(), run.src.dtype, normalize, method)
    p = ScorePass(
        src=run.src,
        executor=run.executor,
        chunk_size=chunk_size,
        sets=sets,
        mode=mode,
        target_sum=float(target_sum),
        names=list(names) if names else None,
        gene_stats=gene_stats,
        details=ScoreDetails(method=method, backend=run.backend, normalized=mode != 0),
    )
    params = MethodParams(ctrl_size, n_bins, random_state, max_rank, n_up, n_missing)
    return METHOD_FUNCTIONS[method](p, params), p.details


@dataclass
class ScorePass:
    """What every method shares: the matrix (source + executor), the gene sets and the normalisation."""

    src: Any
    executor: Executor
    chunk_size: int
    sets: list[np.ndarray]
    mode: int
    target_sum: float
    names: list[str] | None
    gene_stats: Any
    details: ScoreDetails

    @property
    def n_genes(self) -> int:
        return self.src.n_cols

    def rows(self, name: str, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> np.ndarray:
        """Run one row kernel with one output column per signature over every cell."""
        kern = RowKernel(name, len(self.sets), arrays, params)
        return self.executor.run_rows(self.src, kern, self.chunk_size)


@dataclass(frozen=True)
class MethodParams:
    """The method-specific parameters of :func:`score_matrix` (each method reads its own)."""

    ctrl_size: int
    n_bins: int
    random_state: int | np.random.RandomState | None
    max_rank: int
    n_up: int | None
    n_missing: Sequence[int] | None


def score_mean(p: ScorePass, o: MethodParams) -> np.ndarray:
    """Mean of each signature's genes."""
    w = membership(p.sets, p.n_genes, [1.0 / g.size for g in p.sets])
    return p.rows("weighted_sum", w, {"mode": p.mode, "target": p.target_sum})


def score_scanpy(p: ScorePass, o: MethodParams) -> np.ndarray:
    """``sc.tl.score_genes``: mean of the set minus mean of its control genes."""
    ctrls = control_sets(
        gene_means(p),
        p.sets,
        ctrl_size=o.ctrl_size,
        n_bins=o.n_bins,
        random_state=o.random_state,
        names=p.names,
    )
    p.details.n_controls = [int(c.size) for c in ctrls]
    # set genes and control genes are disjoint: one signed column per signature
    S = len(p.sets)
    weights = [1.0 / g.size for g in p.sets] + [-1.0 / c.size for c in ctrls]
    w = membership([*p.sets, *ctrls], p.n_genes, weights, columns=[*range(S), *range(S)], n_out=S)
    return p.rows("weighted_sum", w, {"mode": p.mode, "target": p.target_sum})


def score_ucell(p: ScorePass, o: MethodParams) -> np.ndarray:
    """pyUCell's U statistic over each cell's top ``max_rank`` genes."""
    if o.max_rank < 1:
        raise AtlasError(f"max_rank must be >= 1, got {o.max_rank}")
    tb = np.arange(p.n_genes, dtype=np.int64)
    out = p.rows(
        "rank",
        _rank_arrays(p.sets, p.n_genes, tb, tb),
        {"mode": 1, "cap": int(o.max_rank), "nvar": p.n_genes},
    )
    miss = np.zeros(len(p.sets)) if o.n_missing is None else np.asarray(o.n_missing, dtype=np.float64)
    return ucell_finalize(out, np.array([g.size for g in p.sets]) + miss, o.max_rank)


def score_aucell(p: ScorePass, o: MethodParams) -> np.ndarray:
    """decoupler's AUCell over the genes stored in at least one cell."""
    counts = None if p.gene_stats is None else p.gene_stats.nnz()
    if counts is None:
        counts = src_col_counts(p)
    universe = np.flatnonzero(counts > 0)
    nvar = int(universe.size)
    p.details.n_genes_ranked = nvar
    kept = [np.intersect1d(g, universe) for g in p.sets]
    p.details.dropped_unexpressed = [np.setdiff1d(g, universe) for g in p.sets]
    for j, g in enumerate(kept):
        if g.size == 0:
            raise AtlasError(f"signature {_label(p.names, j)!r}: none of its genes is expressed in any cell")
    n_up = aucell_n_up(nvar, o.n_up)
    p.details.n_up = n_up
    tb, tb_inv = aucell_tie_order(p.n_genes, universe, o.random_state)
    out = p.rows("rank", _rank_arrays(kept, p.n_genes, tb, tb_inv), {"mode": 0, "cap": n_up, "nvar": nvar})
    return aucell_finalize(out, np.array([g.size for g in kept]), n_up)


#: One plain function per method; :func:`score_matrix` prepares a :class:`ScorePass` and dispatches.
METHOD_FUNCTIONS: dict[str, Callable[[ScorePass, MethodParams], np.ndarray]] = {
    "scanpy": score_scanpy,
    "aucell": score_aucell,
    "ucell": score_ucell,
    "mean": score_mean,
}


def gene_means(p: ScorePass) -> np.ndarray:
    """Gene means as scanpy computes them: from the cache when valid, else one pass (then cached)."""
    dtype = fold_dtype(p.src.dtype, p.mode, dense=p.src.dense)
    sums = None if p.gene_stats is None else p.gene_stats.sums(p.mode, p.target_sum, dtype)
    if sums is None:
        sums, nnz = src_fold(p, dtype)
        if p.gene_stats is not None:
            from ..ingest.genestats import GeneStats

            p.gene_stats.save(GeneStats(sums, nnz, p.src.n_rows, p.mode, p.target_sum))
    else:
        logger.info("gene means from the cache %s (one pass over the matrix)", p.gene_stats.path)
    return finalize_gene_means(sums, p.src.n_rows, dense=p.src.dense)


def src_fold(p: ScorePass, dtype) -> tuple[np.ndarray, np.ndarray | None]:
    """The gene-sum pass: ``(sums, stored values per gene or None)``."""
    return p.executor.run_fold(p.src, p.chunk_size, p.mode, p.target_sum, np.dtype(dtype))


def src_col_counts(p: ScorePass) -> np.ndarray:
    """The stored-values-per-gene pass."""
    return p.executor.run_col_counts(p.src, p.chunk_size)


def _label(names: Sequence[str] | None, j: int) -> str | int:
    return names[j] if names else j


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
