"""Reprogramming pseudotime of the neutrophils.

Five methods, chosen by ``analysis.pseudotime_method``. Each runs between a start population (the
immature neutrophils, or the most blood-like ones) and an end population (the T3-like ones):

``state_contrast`` (default)
    The end state's evidence minus the start's (:func:`state_contrast_pseudotime`: the reprogramming index,
    standardised, minus ``state_z_immature``), scaled to [0, 1]. It reads no anchor cells, so wrong state calls
    cannot move it; the ``signature`` axis below is still learned from the anchors and its Spearman correlation
    with the contrast recorded (``axis_spearman``) as a cross-check. Over 27 robustness runs (stop 39,
    ``benchmarks/robustness.md``) it followed the truth at least as well as ``signature`` (the axis averaged with
    the contrast) on all 15 of the independent generator (8 better by up to 0.09), whose axes hold 5-9 genes, and
    on 7 of the simulator's 12 (worse by 0.007-0.042 on the other 5, where the axis holds 90-140 genes); its worst
    run is better on both.
``signature``
    Each cell's position on the genes that tell the end cells from the start cells: a t-test of every
    sub-atlas gene (log-normalised counts) between the two populations, within data sets
    (``pseudotime_block_key``) so that study effects are not read as the trajectory, keeps the genes with a
    large standardised effect (Cohen's d of at least ``pseudotime_min_effect``) that pass a
    Benjamini-Hochberg FDR of ``pseudotime_fdr``; a cell's pseudotime is its log expression of those
    genes weighted by their mean difference (a signature score learned from the anchors), scaled to
    [0, 1]. It reads the counts rather than the latent: a 10-20-dimensional scVI latent of low-RNA
    neutrophils holds little of the slow drift along the trajectory (a supervised kNN regression of
    the simulated truth on it reached Spearman 0.59-0.68 on the hard robustness presets), while a
    hundred genes that move along it average their counting noise away. The populations are chosen
    and checked as for ``distance_ratio``; with fewer than :data:`MIN_AXIS_GENES` such genes it falls
    back to the state contrast (:func:`state_contrast_pseudotime`: the end state's evidence minus the
    immature state's) and says so. With ``pseudotime_with_state_contrast`` (default) the axis score is averaged
    with that contrast (:func:`mean_of_standardised`).
``distance_ratio``
    On the neutrophil sub-atlas latent (``obsm["X_scVI"]``, the space the neutrophil graph is built on):
    ``d_start / (d_start + d_end)``, where ``d_X`` is a cell's mean latent distance to its
    ``pseudotime_anchor_neighbors`` nearest cells of population X: the cell's relative position
    between the two populations (0 at the start, 1 at the end, after scaling). The populations are
    the cells annotated with the start and end states (``immature`` and ``pseudotime_end_state``);
    a population of fewer than :data:`MIN_ANCHOR_CELLS` falls back to the most extreme share of
    cells (``pseudotime_start_fraction``/``pseudotime_end_fraction``). The state populations must
    also pass :func:`check_anchors` (not more than :data:`MAX_ANCHOR_SHARE` of the neutrophils; a
    compartment of the latent rather than scattered calls; the start below the end on the
    reprogramming index, the end above the neutrophils' median index): a population that fails is
    replaced by the index extreme on its side (lowest / highest index), and a note says why. With
    weak markers or shallow data state calls can be wrong, and wrong anchors would otherwise
    collapse the pseudotime. Unlike a random walk it keeps
    the order inside dense compartments (mature neutrophils span most of the trajectory), and a
    side-state cell (interferon, antigen-presenting) moves away from both ends at once, so it is not
    placed later for being far from the start, as diffusion pseudotime places it.
``harmonic``
    The probability that a random walk on the neutrophil kNN graph, started at a cell, reaches the
    end before the start: the harmonic function of the graph Laplacian that is 0 on the start cells
    and 1 on the end cells (Zhu, Ghahramani & Lafferty 2003; the absorption probabilities CellRank
    reports as fate probabilities). The start and end are the most extreme shares of cells.
``dpt``
    Scanpy's diffusion pseudotime (Haghverdi et al. 2016) from one root cell.

``harmonic`` and ``dpt`` run on the sub-atlas latent too. All are scaled to [0, 1]; ``harmonic`` gives NaN in graph components that hold no start or no end
cell. ``scripts/bench_pseudotime.py`` compares them (and Palantir) over sub-atlas seeds on
simulated cohorts (``benchmarks/analysis.md``).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..core.errors import AtlasError
from .axis_genes import MIN_AXIS_GENES, scale_to_unit, signature_pseudotime

__all__ = [
    "check_anchors",
    "anchor_enrichment",
    "choose_root",
    "diffusion_pseudotime",
    "distance_ratio_pseudotime",
    "extreme_cells",
    "finite_spearman",
    "harmonic_pseudotime",
    "mean_of_standardised",
    "reprogramming_pseudotime",
    "signature_pseudotime",
    "state_contrast_pseudotime",
]

log = logging.getLogger(__name__)

#: above this many free cells the linear system is solved iteratively (a direct LU fills in)
DIRECT_SOLVE_MAX = 50_000
#: a start or end state with fewer annotated cells is replaced by the most extreme share of cells
MIN_ANCHOR_CELLS = 10
#: a state population holding more of the neutrophils is no anchor (it is the bulk, not an end)
MAX_ANCHOR_SHARE = 0.5
#: an anchor population's cells must have this many times more anchor cells among their latent
#: neighbours than its share of all neutrophils (scattered, noise-driven calls have about 1x)
MIN_ANCHOR_ENRICHMENT = 2.0
#: latent neighbours used for that enrichment
ANCHOR_NEIGHBORS = 15
#: larger start or end populations are subsampled to this many cells (bounds the distance queries)
MAX_ANCHOR_CELLS = 20_000


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


def extreme_cells(
    value: np.ndarray, fraction: float, *, highest: bool, pool: np.ndarray | None = None
) -> np.ndarray:
    """Positions of the ``fraction`` of ``pool`` (default: all cells) with the highest/lowest finite ``value``.

    At least one cell is returned when any value in the pool is finite.
    """
    value = np.asarray(value, dtype=np.float64)
    pool = np.arange(len(value)) if pool is None else np.asarray(pool)
    pool = pool[np.isfinite(value[pool])]
    if pool.size == 0:
        return pool
    n = max(1, int(round(fraction * pool.size)))
    order = np.argsort(-value[pool] if highest else value[pool], kind="stable")
    return np.sort(pool[order[:n]])


def anchor_enrichment(latent: np.ndarray, cells: np.ndarray, *, k: int = ANCHOR_NEIGHBORS) -> float:
    """How clustered ``cells`` are in ``latent``: the mean share of their ``k`` nearest other cells that
    are also in ``cells``, over the share of ``cells`` among all (1 = scattered at random)."""
    from sklearn.neighbors import NearestNeighbors

    z = np.asarray(latent, dtype=np.float64)
    n = z.shape[0]
    cells = np.asarray(cells, dtype=np.int64)
    if cells.size == 0 or cells.size >= n:
        return float("nan")
    k = int(min(k, n - 1))
    _, nb = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z[cells])
    member = np.zeros(n, dtype=bool)
    member[cells] = True
    same = member[nb[:, 1:]].mean()
    return float(same / ((cells.size - 1) / (n - 1))) if cells.size > 1 else 0.0


def check_anchors(
    start: np.ndarray, end: np.ndarray, index: np.ndarray, latent: np.ndarray | None, *, check_start: bool = True,
    check_end: bool = True,
) -> dict[str, list[str]]:
    """Why the start and end populations of a pseudotime are not trustworthy anchors (empty lists: fine).

    Parameters
    ----------
    start, end
        Positions of the start and end cells among the neutrophils.
    index
        The neutrophils' reprogramming index.
    latent
        Their latent coordinates (``None``: no coherence check).
    check_start, check_end
        Which populations to check (one taken from the index itself needs no check).

    Returns
    -------
    dict
        ``{"start": [...], "end": [...]}``: the failed checks of each, in words. A population fails when
        it holds more than :data:`MAX_ANCHOR_SHARE` of the cells; when it is not a compartment of the
        latent (:func:`anchor_enrichment` below :data:`MIN_ANCHOR_ENRICHMENT`); the end when its median
        index is not above all neutrophils' median; both when the start's median index is not below
        the end's.
    """
    index = np.asarray(index, dtype=np.float64)
    n = index.size
    med = {side: float(np.nanmedian(index[cells])) if cells.size else np.nan
           for side, cells in (("start", start), ("end", end))}  # fmt: skip
    out: dict[str, list[str]] = {"start": [], "end": []}
    for side, cells, wanted in (("start", start, check_start), ("end", end, check_end)):
        if not wanted:
            continue
        if cells.size > MAX_ANCHOR_SHARE * n:
            out[side].append(f"{cells.size / n:.0%} of the neutrophils (more than {MAX_ANCHOR_SHARE:.0%})")
        if latent is not None:
            enr = anchor_enrichment(latent, cells)
            if np.isfinite(enr) and enr < MIN_ANCHOR_ENRICHMENT:
                out[side].append(f"scattered in the latent (neighbour enrichment {enr:.1f}x < {MIN_ANCHOR_ENRICHMENT:g}x)")
    if check_end and not med["end"] > float(np.nanmedian(index)):
        out["end"].append("median reprogramming index not above the neutrophils' median")
    if not med["start"] < med["end"]:
        side = "end" if check_end and out["end"] else ("start" if check_start else "end")
        out[side].append(f"start cells' median index ({med['start']:.2f}) not below the end cells' ({med['end']:.2f})")
    return out


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


def _solve_laplacian(lap: sp.csr_matrix, rhs: np.ndarray) -> np.ndarray:
    """Solve ``lap x = rhs`` (symmetric positive definite): direct when small, else Jacobi-preconditioned CG."""
    from scipy.sparse.linalg import LinearOperator, cg, spsolve

    if lap.shape[0] <= DIRECT_SOLVE_MAX:
        return np.asarray(spsolve(lap.tocsc(), rhs), dtype=np.float64)
    inv_diag = 1.0 / lap.diagonal()
    precond = LinearOperator(lap.shape, matvec=lambda v: inv_diag * v)
    x, info = cg(lap, rhs, M=precond, rtol=1e-10, atol=0.0, maxiter=20 * lap.shape[0])
    if info != 0:
        raise AtlasError(
            f"harmonic pseudotime: the graph system did not converge ({lap.shape[0]} cells, code {info}); "
            "set analysis.pseudotime_method: dpt"
        )
    return x


def harmonic_pseudotime(connectivities, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The harmonic function on a weighted graph that is 0 on ``start`` cells and 1 on ``end`` cells.

    Parameters
    ----------
    connectivities
        (n, n) sparse non-negative weights (e.g. ``obsp["connectivities"]`` of ``sc.pp.neighbors``);
        symmetrised here.
    start, end
        Positions of the trajectory's first and last cells (disjoint; a cell in both is dropped from ``end``).

    Returns
    -------
    numpy.ndarray
        Per cell, the probability that a random walk on the graph from the cell hits ``end`` before
        ``start``: 0 on ``start``, 1 on ``end``, in [0, 1] elsewhere; NaN in graph components that
        lack a start or an end cell.
    """
    from scipy.sparse.csgraph import connected_components

    w = sp.csr_matrix(connectivities, dtype=np.float64)
    n = w.shape[0]
    if w.shape != (n, n):
        raise AtlasError(f"harmonic pseudotime needs a square graph, got {w.shape}")
    w = ((w + w.T) * 0.5).tocsr()
    w.setdiag(0.0)
    w.eliminate_zeros()
    start = np.unique(np.asarray(start, dtype=np.int64))
    end = np.setdiff1d(np.asarray(end, dtype=np.int64), start)
    if start.size == 0 or end.size == 0:
        raise AtlasError("harmonic pseudotime needs at least one start and one end cell")
    pt = np.full(n, np.nan)
    _, comp = connected_components(w, directed=False)
    ok = np.isin(comp, np.intersect1d(comp[start], comp[end]))
    pt[start[ok[start]]] = 0.0
    pt[end[ok[end]]] = 1.0
    free = np.flatnonzero(ok & np.isnan(pt))
    if free.size:
        lap = (sp.diags(np.asarray(w.sum(axis=1)).ravel()) - w).tocsr()
        fixed_end = np.flatnonzero(pt == 1.0)
        # L_ff x_f = -L_fb x_b with x_b = 0 on start and 1 on end cells
        rows = lap[free]
        rhs = -np.asarray(rows[:, fixed_end].sum(axis=1)).ravel()
        pt[free] = np.clip(_solve_laplacian(rows[:, free], rhs), 0.0, 1.0)
    if (~ok).any():
        log.info(
            "%d neutrophils in graph components without a start and an end cell: pseudotime NaN",
            int((~ok).sum()),
        )
    return pt


def distance_ratio_pseudotime(
    latent: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    *,
    n_anchor_neighbors: int = 10,
    max_anchor_cells: int = MAX_ANCHOR_CELLS,
    seed: int = 0,
) -> np.ndarray:
    """Each cell's relative position between a start and an end population of a latent space.

    Parameters
    ----------
    latent
        (n, d) coordinates (e.g. the neutrophil sub-atlas' ``X_scVI``).
    start, end
        Positions of the start and end populations' cells (a cell in both is dropped from ``end``).
    n_anchor_neighbors
        A cell's distance to a population is its mean Euclidean distance to that many of the
        population's cells nearest to it (all of them if the population is smaller).
    max_anchor_cells, seed
        A population larger than ``max_anchor_cells`` is subsampled to that many cells (seeded).

    Returns
    -------
    numpy.ndarray
        ``d_start / (d_start + d_end)`` scaled to [0, 1] over the cells; NaN for cells whose latent
        is not finite.
    """
    from sklearn.neighbors import NearestNeighbors

    z = np.asarray(latent, dtype=np.float64)
    if z.ndim != 2:
        raise AtlasError(f"distance-ratio pseudotime needs a (cells, dims) latent, got shape {z.shape}")
    finite = np.flatnonzero(np.isfinite(z).all(axis=1))
    start = np.intersect1d(np.asarray(start, dtype=np.int64), finite)
    end = np.setdiff1d(np.intersect1d(np.asarray(end, dtype=np.int64), finite), start)
    if start.size == 0 or end.size == 0:
        raise AtlasError("distance-ratio pseudotime needs at least one start and one end cell with a finite latent")

    rng = np.random.default_rng(seed)

    def mean_distance(anchors: np.ndarray) -> np.ndarray:
        if anchors.size > max_anchor_cells:
            anchors = np.sort(rng.choice(anchors, max_anchor_cells, replace=False))
        k = int(min(n_anchor_neighbors, anchors.size))
        dist, _ = NearestNeighbors(n_neighbors=k).fit(z[anchors]).kneighbors(z[finite])
        return dist.mean(axis=1)

    d_start, d_end = mean_distance(start), mean_distance(end)
    pt = np.full(z.shape[0], np.nan)
    pt[finite] = d_start / np.maximum(d_start + d_end, np.finfo(np.float64).tiny)
    return scale_to_unit(pt)


def _anchor_population(
    obs: pd.DataFrame, state: str, fallback: np.ndarray, fraction: float, *, use_state: bool, fallback_name: str,
    side: str,
) -> tuple[np.ndarray, str, list[str]]:
    """Cells annotated ``state`` (if ``use_state`` and at least MIN_ANCHOR_CELLS), else the top ``fraction``
    of ``fallback``. Returns the positions, a description for the summary table and a note on a fallback."""
    if use_state and "neutrophil_state" in obs:
        cells = np.flatnonzero(obs["neutrophil_state"].astype(str).to_numpy() == state)
        if cells.size >= MIN_ANCHOR_CELLS:
            return cells, f"state {state}", []
    desc = f"top {fraction:.0%} {fallback_name}"
    note = f"fewer than {MIN_ANCHOR_CELLS} neutrophils annotated '{state}': the pseudotime's {side} cells are the {desc}"
    return extreme_cells(fallback, fraction, highest=True), desc, [note] if use_state else []


def _checked_anchors(
    start: np.ndarray, start_desc: str, end: np.ndarray, end_desc: str, index: np.ndarray,
    latent: np.ndarray | None, settings, *, check_start: bool, check_end: bool,
) -> tuple[np.ndarray, str, np.ndarray, str, list[str]]:
    """Replace a start/end population that fails :func:`check_anchors` by the index extreme on its side."""
    failed = check_anchors(start, end, index, latent, check_start=check_start, check_end=check_end)
    notes = []

    def replace(side: str, cells: np.ndarray, desc: str, frac: float, highest: bool) -> tuple[np.ndarray, str]:
        if not failed[side]:
            return cells, desc
        new_desc = f"{'top' if highest else 'lowest'} {frac:.0%} reprogramming_index"
        notes.append(f"pseudotime {side} cells ({desc}) failed the anchor check ({'; '.join(failed[side])}): "
                     f"the {side} cells are the {new_desc} instead")  # fmt: skip
        return extreme_cells(index, frac, highest=highest), new_desc

    start, start_desc = replace("start", start, start_desc, settings.pseudotime_start_fraction, highest=False)
    end, end_desc = replace("end", end, end_desc, settings.pseudotime_end_fraction, highest=True)
    if notes:
        end = np.setdiff1d(end, start)
    return start, start_desc, end, end_desc, notes


def _signature_or_nothing(
    neut_adata, neut_obs: pd.DataFrame, start: np.ndarray, end: np.ndarray, settings, notes: list[str]
) -> tuple[np.ndarray, dict | None]:
    """:func:`signature_pseudotime` on the sub-atlas's counts, and the summary of its genes (None: too few genes)."""
    totals = neut_obs["total_counts"].to_numpy(np.float64) if "total_counts" in neut_obs else None
    if totals is not None and not (np.isfinite(totals) & (totals > 0)).all():
        totals = None  # row sums of the sub-atlas genes instead
    key, blocks = settings.pseudotime_block_key, None
    if key and key in neut_obs:
        blocks = neut_obs[key].astype(str).to_numpy()
    elif key:
        notes.append(f"pseudotime_block_key {key!r} is not an obs column: the pseudotime's start and end cells "
                     "are compared over all neutrophils, not within data sets (set it to a column, e.g. dataset_id)")  # fmt: skip
    pt, genes, weights = signature_pseudotime(neut_adata.X, start, end, totals=totals, blocks=blocks,
                                              min_effect=settings.pseudotime_min_effect, fdr=settings.pseudotime_fdr)  # fmt: skip
    if genes.size < MIN_AXIS_GENES:
        return pt, None
    names = np.asarray(neut_adata.var_names)[genes]
    order = np.argsort(-weights)
    up = [str(names[i]) for i in order[:5] if weights[i] > 0]
    down = [str(names[i]) for i in order[::-1][:5] if weights[i] < 0]
    return pt, {"n_axis_genes": int(genes.size), "axis_genes_up": ", ".join(up), "axis_genes_down": ", ".join(down)}


def state_contrast_pseudotime(
    neut_obs: pd.DataFrame, end_state: str, immature: bool, *, index_is_end_axis: bool = False
) -> tuple[np.ndarray, str]:
    """The ``signature`` method's fallback: the end state's evidence minus the start's, scaled to [0, 1].

    With shallow data and weak anchors, no gene passes the start-vs-end test on its own, but the state
    evidence (``state_z_*``, each state's signatures or their refined programmes, standardised within the
    neutrophils) still orders the cells: ``<end evidence> - state_z_immature`` (without an immature start,
    the end evidence alone). The end evidence is the reprogramming index (standardised) when
    ``index_is_end_axis`` (the index is built on the end state's signatures: T3 by default) or when
    ``state_z_<end>`` is absent, else ``state_z_<end>``. On the independent cohorts it ordered the neutrophils
    closer to the true pseudotime than the latent distance ratio or either evidence alone, and the index
    (reliability-weighted, unsmoothed) closer than ``state_z_T3`` on all three seeds (Spearman +0.02 to
    +0.04; ``benchmarks/robustness.md``). Returns it and its description.
    """
    use_index = (index_is_end_axis and "reprogramming_index" in neut_obs) or f"state_z_{end_state}" not in neut_obs
    end_name = "reprogramming_index" if use_index else f"state_z_{end_state}"
    end = neut_obs[end_name]
    end = (end - end.mean()) / (end.std() or 1.0)
    value, what = end.to_numpy(np.float64), end_name
    if immature:
        value = value - neut_obs["state_z_immature"].to_numpy(np.float64)
        what = f"{end_name} - state_z_immature"
    return scale_to_unit(value), what


def finite_spearman(a, b) -> float:
    """Spearman correlation over the cells where both are finite (NaN with fewer than 3)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok]).statistic) if ok.sum() > 2 else float("nan")


def mean_of_standardised(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The mean of two estimates of one ordering, each standardised over the cells where both are finite, scaled
    to [0, 1] (NaN where either is NaN): the signature axis and the state contrast carry different noise (genes
    learned from the anchor cells vs the refined programmes and the index), so their mean is steadier than either
    (``benchmarks/robustness.md``, stop 25)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    total = np.full(a.shape, np.nan)  # the sum: the mean up to a factor the scaling removes
    if ok.any():
        total[ok] = sum((v[ok] - v[ok].mean()) / (v[ok].std() or 1.0) for v in (a, b))
    return scale_to_unit(total)


def index_reads_state(settings, state: str) -> bool:
    """Whether the reprogramming index's up side is built on ``state``'s signatures (or their refined
    programmes): the index is then that state's axis."""
    sigs = set(settings.state_signatures.get(state, []))
    return bool(sigs) and sigs <= set(settings.reprogramming_up)


def reprogramming_pseudotime(
    neut_adata, neut_obs: pd.DataFrame, settings
) -> tuple[np.ndarray, dict, list[str]]:
    """The pseudotime of every neutrophil as ``settings`` (:class:`AnalysisSettings`) asks.

    ``neut_adata`` holds the neutrophils' latent (``obsm["X_scVI"]``) and graph; ``neut_obs`` (same
    rows) their ``reprogramming_index``, ``tissue``, ``neutrophil_state`` and ``state_z_*`` columns.
    Returns the pseudotime, a one-row summary (method, start and end cells) and notes for the report.
    """
    n = len(neut_obs)
    notes: list[str] = []
    method = settings.pseudotime_method
    index = neut_obs["reprogramming_index"].to_numpy(dtype=np.float64)
    summary: dict = {"method": method, "root_cell": ""}
    if n <= 3:
        return np.full(n, np.nan), summary, ["3 or fewer neutrophils: no pseudotime"]
    immature = settings.pseudotime_root == "immature" and "state_z_immature" in neut_obs
    if settings.pseudotime_root == "immature" and not immature:
        notes.append("no 'immature' state configured: pseudotime starts at the most blood-like neutrophils")
    if method == "dpt":
        if immature:
            root = choose_root(-neut_obs["state_z_immature"].to_numpy(), None)
        else:
            root = choose_root(index, neut_obs["tissue"], settings.pseudotime_root_tissue)
        summary.update(root_cell=str(neut_obs.index[root]), n_start_cells=1, n_end_cells=0)
        return diffusion_pseudotime(neut_adata, root), summary, notes

    by_state = method in ("state_contrast", "distance_ratio", "signature")  # harmonic: shares of cells (a whole state saturates the walk)
    if immature:
        start, start_desc, fell_back = _anchor_population(
            neut_obs, "immature", neut_obs["state_z_immature"].to_numpy(), settings.pseudotime_start_fraction,
            use_state=by_state, fallback_name="state_z_immature", side="start",
        )
        notes += fell_back
    else:
        tissue = neut_obs["tissue"].astype(str).to_numpy()
        pool = np.flatnonzero(tissue == settings.pseudotime_root_tissue)
        start_desc = f"lowest {settings.pseudotime_start_fraction:.0%} reprogramming_index"
        if pool.size == 0:
            pool = None
            notes.append(f"no {settings.pseudotime_root_tissue} neutrophils: the pseudotime's start cells are the most "
                         "blood-like of all neutrophils")  # fmt: skip
        else:
            start_desc += f" ({settings.pseudotime_root_tissue})"
        start = extreme_cells(index, settings.pseudotime_start_fraction, highest=False, pool=pool)
    end, end_desc, fell_back = _anchor_population(
        neut_obs, settings.pseudotime_end_state, index, settings.pseudotime_end_fraction,
        use_state=by_state, fallback_name="reprogramming_index", side="end",
    )
    notes += fell_back
    end = np.setdiff1d(end, start)
    latent = np.asarray(neut_adata.obsm["X_scVI"]) if "X_scVI" in neut_adata.obsm else None
    start, start_desc, end, end_desc, check_notes = _checked_anchors(
        start, start_desc, end, end_desc, index, latent, settings, check_start=immature,
        check_end=end_desc.startswith("state"),
    )
    notes += check_notes
    summary["anchor_check"] = "; ".join(check_notes) if check_notes else "passed"
    if start.size == 0 or end.size == 0:
        return np.full(n, np.nan), summary, [*notes, "no finite reprogramming index: no pseudotime"]
    summary.update(n_start_cells=int(start.size), n_end_cells=int(end.size), start_cells=start_desc,
                   end_cells=end_desc)  # fmt: skip
    if method in ("state_contrast", "signature"):
        pt, signature = _signature_or_nothing(neut_adata, neut_obs, start, end, settings, notes)
        if method == "signature" and signature is not None and not settings.pseudotime_with_state_contrast:
            summary.update(signature)
            return pt, summary, notes
        end_state = settings.pseudotime_end_state
        contrast, what = state_contrast_pseudotime(neut_obs, end_state, immature,
                                                   index_is_end_axis=index_reads_state(settings, end_state))
        if method == "state_contrast":
            summary.update(signature or {"n_axis_genes": 0}, contrast=what, axis_spearman=finite_spearman(contrast, pt))
            return contrast, summary, notes
        if signature is not None:
            summary.update(signature, combined_with=what)
            return mean_of_standardised(pt, contrast), summary, notes
        notes.append(f"fewer than {MIN_AXIS_GENES} genes separate the pseudotime's start from its end cells (Cohen's d >= "
                     f"{settings.pseudotime_min_effect:g}, FDR {settings.pseudotime_fdr:g}): the pseudotime is {what} "
                     "instead, scaled to [0, 1]")  # fmt: skip
        summary.update(method="state_contrast", contrast=what, fallback_from="signature")
        return contrast, summary, notes
    if method == "distance_ratio":
        pt = distance_ratio_pseudotime(neut_adata.obsm["X_scVI"], start, end, seed=settings.seed,
                                       n_anchor_neighbors=settings.pseudotime_anchor_neighbors)  # fmt: skip
        return pt, summary, notes

    import scanpy as sc

    from ..core.jit import cache_graph_kernels

    cache_graph_kernels()
    sc.pp.neighbors(neut_adata, use_rep="X_scVI", n_neighbors=min(settings.pseudotime_n_neighbors, n - 1),
                    random_state=settings.seed, key_added="pseudotime")  # fmt: skip
    pt = harmonic_pseudotime(neut_adata.obsp.pop("pseudotime_connectivities"), start, end)
    neut_adata.obsp.pop("pseudotime_distances", None)
    neut_adata.uns.pop("pseudotime", None)
    return pt, summary, notes
