"""Batch-aware highly variable genes on raw counts (seurat_v3), with technical gene groups left out.

Excluded genes are removed *before* ranking, as Xue et al. did (500 HVGs after removing
mitochondrial, heat-shock, ribosomal and dissociation genes), so ``n_top_genes`` HVGs remain.
The CPU branch runs scanpy, the GPU branch rapids-singlecell; both implement the same seurat_v3
arithmetic and the same tie-breaking, so they choose the same genes up to exact ties in the
normalised variance. :mod:`atlas.integrate.hvg_stream` computes the same seurat_v3 selection from a
store read in row chunks (what ``integrate_store`` uses), sharing the exclusions and ranking rules here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence

import numpy as np

from ._checks import counts_matrix, require_obs_keys
from .errors import IntegrateInputError, TooSmallError

log = logging.getLogger(__name__)

#: Genes reported as induced by enzymatic dissociation (van den Brink SC et al., "Single-cell
#: sequencing reveals dissociation-induced gene expression in tissue subpopulations", Nat Methods
#: 14:935-936, 2017; human orthologues of the best-supported genes of their list of 140). Heat-shock
#: genes of that list are also covered by the ``heat_shock`` group.
DISSOCIATION_GENES: tuple[str, ...] = (
    "FOS",
    "FOSB",
    "JUN",
    "JUNB",
    "JUND",
    "EGR1",
    "EGR2",
    "EGR3",
    "IER2",
    "IER3",
    "IER5",
    "ATF3",
    "DUSP1",
    "DUSP6",
    "NR4A1",
    "NR4A2",
    "ZFP36",
    "ZFP36L1",
    "ZFP36L2",
    "KLF2",
    "KLF4",
    "KLF6",
    "SOCS3",
    "CEBPB",
    "CEBPD",
    "MYC",
    "BTG1",
    "BTG2",
    "PPP1R15A",
    "GADD45A",
    "GADD45B",
    "GADD45G",
    "CCNL1",
    "CCN1",
    "CCN2",
    "CYR61",
    "CTGF",
    "NFKBIA",
    "IRF1",
    "SGK1",
    "RHOB",
    "DDIT3",
    "DDIT4",
    "TXNIP",
    "MAFF",
    "ERRFI1",
    "TRIB1",
    "MCL1",
    "SRF",
    "HSPA1A",
    "HSPA1B",
    "HSPA8",
    "HSPB1",
    "HSPE1",
    "HSPH1",
    "DNAJB1",
    "DNAJA1",
    "HSP90AA1",
    "HSP90AB1",
    "UBC",
    "SAT1",
    "TNFAIP3",
    "NFKBIZ",
    "MT1X",
    "MT2A",
)

#: Regular expressions (on upper-case human symbols) of each excludable gene group.
GENE_GROUP_PATTERNS: dict[str, str] = {
    # mitochondrially encoded genes (MT-CO1, MT-ND1, ...)
    "mito": r"^MT-",
    # cytosolic ribosomal proteins (RPL*/RPS*, RPLP0-2, RPSA); kinases RPS6KA*/RPS6KB* are kept
    "ribo": r"^(RP[LS](?!\d+K)\d+[A-Z]{0,2}\d*|RPLP[0-2]|RPSA)$",
    # heat-shock proteins and their DNAJ co-chaperones
    "heat_shock": r"^(HSPA\d|HSPB\d|HSPH\d|HSP90|HSPD1$|HSPE1$|DNAJ)",
}


def gene_groups(var_names: Iterable[str], groups: Sequence[str]) -> np.ndarray:
    """The group each gene falls in (``""`` for none) among ``groups``.

    Parameters
    ----------
    var_names
        Human gene symbols.
    groups
        Any of ``"mito"``, ``"ribo"``, ``"heat_shock"``, ``"dissociation"``; earlier groups win.

    Returns
    -------
    Array of group names, one per gene.
    """
    names = np.asarray([str(g).upper() for g in var_names], dtype=object)
    out = np.full(names.shape, "", dtype=object)
    for group in groups:
        if group == "dissociation":
            hit = np.isin(names, np.asarray(DISSOCIATION_GENES, dtype=object))
        elif group in GENE_GROUP_PATTERNS:
            rx = re.compile(GENE_GROUP_PATTERNS[group])
            hit = np.fromiter((rx.match(n) is not None for n in names), dtype=bool, count=names.size)
        else:
            raise ValueError(f"unknown gene group {group!r}; use mito, ribo, heat_shock or dissociation")
        out[hit & (out == "")] = group
    return out


def select_hvgs(
    adata,
    *,
    n_top_genes: int = 4000,
    batch_key: str | None = "dataset_id",
    exclude_groups: Sequence[str] = ("mito", "ribo"),
    exclude_genes: Sequence[str] = (),
    layer: str | None = None,
    backend: str = "cpu",
    key_added: str = "highly_variable",
) -> list[str]:
    """Choose highly variable genes on raw counts with seurat_v3, ranked within batches.

    Parameters
    ----------
    adata
        Cells x genes with raw counts in ``X`` (or ``layer``) and human symbols as ``var_names``.
    n_top_genes
        HVGs to choose. Reduced, with a warning, when fewer genes are left after exclusions.
    batch_key
        obs column HVGs are ranked within (seurat_v3 ``batch_key``); ``None`` ranks all cells together.
    exclude_groups
        Gene groups never chosen (see :data:`GENE_GROUP_PATTERNS` and :data:`DISSOCIATION_GENES`).
    exclude_genes
        Further genes never chosen.
    layer
        Layer holding the counts (default ``X``).
    backend
        ``"cpu"`` (scanpy) or ``"gpu"`` (rapids-singlecell; the counts are copied to the GPU).
    key_added
        var column that marks the chosen genes.

    Returns
    -------
    The chosen genes in ``var`` order (the order the model uses). Also writes ``var[key_added]``,
    ``var['hvg_excluded']`` (group of an excluded gene), ``var['highly_variable_rank']``,
    ``var['variances_norm']``, ``var['means']``, ``var['variances']`` (and
    ``var['highly_variable_nbatches']`` with a batch key) and ``uns['hvg_selection']`` (parameters used,
    including the loess span: 0.3, widened to 0.5 or 1.0 when the fit fails on a sparse batch).

    Raises
    ------
    MissingKeyError
        ``batch_key`` is not an obs column.
    NotCountsError
        The matrix is not raw counts.
    TooSmallError
        Fewer than 10 candidate genes or 10 cells.
    """
    import anndata as ad
    import pandas as pd

    require_obs_keys(adata, {"hvg_batch_key": batch_key})
    X = counts_matrix(adata, layer)
    if adata.n_obs < 10:
        raise TooSmallError(f"HVG selection needs at least 10 cells; the data hold {adata.n_obs}")

    totals = np.asarray(X.sum(axis=0)).ravel()
    excluded, n_top = hvg_candidates(adata.var_names, totals, n_top_genes, exclude_groups, exclude_genes)
    candidates = excluded == ""
    obs, batch_key = hvg_batches(adata.obs, batch_key)
    sub = ad.AnnData(
        X=X[:, np.flatnonzero(candidates)], obs=obs, var=pd.DataFrame(index=adata.var_names[candidates])
    )
    run = _seurat_v3_gpu if backend == "gpu" else _seurat_v3_cpu
    stats, span = fit_with_spans(lambda span: run(sub, n_top, batch_key, span), batch_key)
    return record_hvgs(adata, stats, excluded, span=span, batch_key=batch_key, n_top=n_top,
                       exclude_groups=exclude_groups, key_added=key_added, backend=backend)  # fmt: skip


def hvg_candidates(
    var_names,
    totals: np.ndarray,
    n_top_genes: int,
    exclude_groups: Sequence[str],
    exclude_genes: Sequence[str],
) -> tuple[np.ndarray, int]:
    """The exclusion of each gene (``""`` for a candidate; a group, ``"listed"`` or ``"no_counts"``) and the
    number of HVGs to choose (``n_top_genes``, reduced with a warning when fewer candidates are left).

    ``totals`` are the genes' summed counts over the cells ranked (genes without counts are excluded).
    """
    import pandas as pd

    var_names = pd.Index(var_names)
    excluded = gene_groups(var_names, exclude_groups)
    extra = set(exclude_genes) & set(var_names)
    excluded[np.isin(var_names.to_numpy(), list(extra)) & (excluded == "")] = "listed"
    excluded[(np.asarray(totals) == 0) & (excluded == "")] = "no_counts"
    candidates = excluded == ""
    n_cand = int(candidates.sum())
    counts = pd.Series(excluded[~candidates]).value_counts().to_dict()
    log.info("HVG candidates: %d of %d genes (excluded: %s)", n_cand, len(var_names), counts or "none")
    if n_cand < 10:
        raise TooSmallError(
            f"only {n_cand} genes are left for HVG selection after exclusions {counts}; "
            f"the store needs at least 10 genes with counts"
        )
    n_top = int(n_top_genes)
    if n_cand < n_top:
        log.warning("n_hvgs=%d but only %d candidate genes: using all %d", n_top, n_cand, n_cand)
        n_top = n_cand
    return excluded, n_top


def hvg_batches(obs, batch_key: str | None):
    """The obs frame seurat_v3 ranks within (``batch_key`` as categorical strings) and the batch key used
    (``None`` when it has one value). Batches of fewer than 3 cells are an error."""
    import pandas as pd

    out = obs[[batch_key]].copy() if batch_key else pd.DataFrame(index=obs.index)
    if batch_key:
        out[batch_key] = out[batch_key].astype(str).astype("category")
        sizes = out[batch_key].value_counts()
        if len(sizes) == 1:
            log.info("hvg_batch_key %r has one value: HVGs ranked over all cells", batch_key)
            batch_key = None
        elif (sizes < 3).any():
            raise TooSmallError(
                f"hvg_batch_key {batch_key!r}: batch(es) {sorted(sizes[sizes < 3].index.tolist())} have fewer "
                f"than 3 cells, too few to rank genes; drop them or set hvg_batch_key to a coarser column"
            )
    return out, batch_key


def fit_with_spans(fit, batch_key: str | None):
    """``fit(span)`` with each of :data:`LOESS_SPANS` in turn until the loess succeeds: ``(stats, span)``."""
    errors = []
    for span in LOESS_SPANS:  # loess fails on batches with few distinct means; a wider span is the usual fix
        try:
            return fit(span), span
        except ValueError as e:
            errors.append(f"span {span}: {e}")
            log.warning(
                "seurat_v3 loess failed with span=%s (%s)%s",
                span,
                e,
                "; retrying with a wider span" if span != LOESS_SPANS[-1] else "",
            )
    raise IntegrateInputError(
        f"seurat_v3 HVG selection failed ({'; '.join(errors)}); a batch of hvg_batch_key={batch_key!r} may hold "
        f"too few cells or expressed genes: use a coarser hvg_batch_key or drop the batch"
    )


def record_hvgs(
    adata,
    stats,
    excluded: np.ndarray,
    *,
    span: float,
    batch_key: str | None,
    n_top: int,
    exclude_groups: Sequence[str],
    key_added: str,
    backend: str,
) -> list[str]:
    """Write the seurat_v3 ``stats`` (candidate genes) into ``adata.var`` and ``uns['hvg_selection']``;
    return the chosen genes in var order (see :func:`select_hvgs`)."""
    import pandas as pd

    adata.uns["hvg_selection"] = {
        "flavor": "seurat_v3",
        "batch_key": batch_key or "",
        "span": span,
        "n_top_genes": n_top,
        "excluded_groups": list(exclude_groups),
    }
    var = adata.var
    var[key_added] = False
    var.loc[stats.index, key_added] = stats["highly_variable"].to_numpy(bool)
    for col in ("highly_variable_rank", "variances_norm", "means", "variances", "highly_variable_nbatches"):
        if col in stats:
            var[col] = np.nan
            var.loc[stats.index, col] = stats[col].to_numpy(np.float64)
    var["hvg_excluded"] = pd.Categorical(excluded)
    chosen = var.index[var[key_added].to_numpy()].tolist()
    log.info("chose %d HVGs (seurat_v3, batch_key=%s, backend=%s)", len(chosen), batch_key, backend)
    return chosen


#: loess spans tried in turn (scanpy's default first)
LOESS_SPANS = (0.3, 0.5, 1.0)
_STAT_COLS = ["highly_variable", "highly_variable_rank", "variances_norm", "means", "variances"]


def _seurat_v3_cpu(sub, n_top: int, batch_key: str | None, span: float):
    import scanpy as sc

    sc.pp.highly_variable_genes(
        sub, flavor="seurat_v3", n_top_genes=n_top, batch_key=batch_key, span=span, check_values=False
    )
    cols = _STAT_COLS + (["highly_variable_nbatches"] if batch_key else [])
    return sub.var[cols].copy()


def _seurat_v3_gpu(sub, n_top: int, batch_key: str | None, span: float):  # pragma: no cover - needs a GPU
    import cupy as cp
    import rapids_singlecell as rsc

    host_X = sub.X
    nbytes = host_X.data.nbytes + host_X.indices.nbytes + host_X.indptr.nbytes
    log.info("copying the counts to the GPU for HVG selection (%.2f GB)", nbytes / 1e9)
    rsc.get.anndata_to_GPU(sub)
    try:
        rsc.pp.highly_variable_genes(
            sub, flavor="seurat_v3", n_top_genes=n_top, batch_key=batch_key, span=span, check_values=False
        )
    finally:
        sub.X = host_X  # drop the device copy; the caller may retry with another span
        cp.get_default_memory_pool().free_all_blocks()
    cols = _STAT_COLS + (["highly_variable_nbatches"] if batch_key else [])
    return sub.var[cols].copy()
