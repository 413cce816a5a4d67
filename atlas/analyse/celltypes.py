"""Cell types and neutrophils: cluster-level marker evidence on an over-clustering, calibrated confidences.

1. **Evidence.** Each type's markers are scored per cell (scanpy's mean-minus-control score). A
   cell's *enrichment* for a type is its score above the type's baseline (the lower quartile of the means of
   clusters whose highest score is another type's: what clusters without that type show, even in an atlas
   that is nearly all one type, such as sorted neutrophils) in units of the type's per-cell noise
   (the median within-cluster standard deviation). Both are measured on the cells at hand, so the
   units follow the depth and marker contrast of the cohort. A cell whose data set did not measure most of a
   type's markers takes its cluster's mean score on that type (:func:`fill_unmeasured`), not a zero's.
2. **Cluster call.** Clusters of an over-clustering of the integrated graph (Leiden at a high
   resolution, as CellTypist's majority voting) average out per-cell noise. A cluster's mean
   enrichment per type gives a winner and a runner-up; the winner is called when the cluster
   stands clearly above the baseline (``min_effect``) and the runner-up reaches at most
   ``max_runner_up_ratio`` of the winner's enrichment (a half-neutrophil half-monocyte cluster has
   two equal enrichments and is ``unknown``; a pure cluster of weak cells has one). A cluster above that
   ratio whose cells do not split between the two types (each cell prefers the winner), whose runner-up
   enrichment is below every clean cluster of the runner-up's type, and whose winner is not diluted keeps
   its winner: one type expressing shared markers (monocytes with S100A8/9, MNDA), not a mixture
   (:func:`_shared_not_mixed`). Small clusters are ``unknown``. Cells take their cluster's call.
3. **Per-cell refinement (off by default, ``refine_cells``).** Cells take their cluster's call, as
   in CellTypist's majority voting. With ``refine_cells`` a cell of a called cluster moves to another
   called type when its own evidence for it (over the cluster's call) is an outlier of the cluster's
   own spread of that difference (robust z >= ``demote_z``), or when its calibrated posterior (4.)
   makes another type more likely than not. Off because on every simulated difficulty these moves
   broke more correct calls than they fixed: a low-RNA cell's score rests on the one or two marker
   transcripts detected, a heavy-tailed noise that a robust z and a marker model both read as evidence.
4. **Calibrated confidence.** Cells with a call are seeds. A multinomial logistic regression on
   each cell's enrichments learns the seed labels and predicts every cell out of fold (a cell's own
   fold never trains the model that scores it); each cluster's composition, estimated by EM
   (Saerens et al. 2002), is that cluster's prior, and the model is refitted ``N_REFITS`` times on
   its own posteriors so a cluster's contaminants stop teaching it their markers. The posterior of a
   cell's call is ``cell_type_confidence``; that of neutrophil is ``neutrophil_confidence``. Cells of
   ``unknown`` clusters take their most likely type when its posterior is at least
   ``min_confidence`` (else ``unknown``, confidence 0: that call is never right), except in a cluster where
   no type is enriched: the posteriors know only the panel's types and give a cell type outside the panel
   (mast cells, dendritic cells) to whichever is nearest with a confidence near 1, so such a cluster's cells
   stay ``unknown`` (the report names the clusters).
5. **The neighbourhood's second opinion** (``neighbourhood_check``, given the latent's kNN graph: the graph the
   over-clustering is cut from). Wherever a cell's own posterior leaves its cluster's call, the mean posterior
   over the cell and its neighbours must agree (reach ``min_confidence`` for the same type), as a kNN label
   transfer would. A cell of an ``unknown`` cluster is propagated only then: the marker model learns from the
   called clusters only, so a cell unlike any of them (a monocyte expressing the neutrophil genes it shares, in
   a cluster of such monocytes) can get a confident posterior for the wrong type, which its neighbours, cells
   of its own kind, mostly do not give. A cell of a called cluster moves to the other type (rule ``demoted``)
   only then: a few monocytes at the edge of a neutrophil cluster have both, a low-RNA neutrophil whose one
   detected marker misleads its own posterior has not (``benchmarks/robustness.md``, stop 37).
6. **Neutrophil calls need the cell's own confidence** (``confident_neutrophils``): a cell called neutrophil
   whose calibrated neutrophil posterior (its cluster's composition as the prior) is below ``min_confidence`` is
   ``unknown`` (rule ``contested``): its own markers make another type at least as likely, and its neighbourhood
   did not confirm that type, so neither call is safe. Only neutrophils: they are the set the analysis goes on
   to study (states, index, per-cancer fractions), where a contaminant's profile counts; propagated and demoted
   calls already need that confidence, and the second QC pass asks it of low-RNA cells. On 15 runs of
   independent cohorts it took 56 false and 1 true neutrophil out of the neutrophils; on 7 simulator runs 11 true
   ones (5 of ~850 on ``weak_markers`` seeds 1 and 2, where a neutrophil's own markers are weakest) and 2 false
   (``benchmarks/robustness.md``, stop 38). Other types keep their cluster's call: for them such conflicts
   were the cluster's right call as often as not (all 57 on two simulator presets).
7. ``is_neutrophil`` = called neutrophil. (The analyse stage then runs the second QC pass,
   :func:`atlas.ingest.qc.second_pass_keep`: low-RNA cells stay only in clusters called neutrophil, and
   only when their ``neutrophil_confidence`` reaches ``min_confidence``.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "CONTESTED",
    "NO_TYPE_ENRICHED",
    "UNKNOWN",
    "CellTypeRule",
    "annotate_cell_types",
    "auto_resolution",
    "calibrated_posteriors",
    "cluster_calls",
    "cluster_order",
    "enrichment_units",
    "fill_unmeasured",
    "marker_enrichment",
    "neutrophil_yield",
    "knn_graph",
    "neighbourhood_posteriors",
    "overcluster",
    "marker_probabilities",
    "cluster_posteriors",
]

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
#: the rule of a cluster none of whose types' markers is enriched (a cell type outside the marker panel)
NO_TYPE_ENRICHED = "unknown: no type enriched"
#: ``cell_type_rule`` of a cell its cluster called neutrophil whose own neutrophil posterior is too low (6. above)
CONTESTED = "contested"
N_REFITS = 3  # refits of the marker model on its own posteriors (see calibrated_posteriors)
BASELINE_QUANTILE = 0.25  # a type's baseline: this quantile of the cluster means (clusters without it)
EXACT_KNN_MAX_CELLS = 50_000  # above: approximate neighbours for the over-clustering
#: the low end of a type's clean clusters' enrichments, in the shared-markers test (:func:`_shared_not_mixed`)
CLEAN_LOW_QUANTILE = 0.1


@dataclass(frozen=True)
class CellTypeRule:
    """Settings of the cell-type rule (see the module docstring; ``analyse.cell_types`` in the config)."""

    min_cluster_cells: int = 10
    min_effect: float = 0.5
    max_runner_up_ratio: float = 0.5
    demote_z: float = 4.0
    refine_cells: bool = False
    min_confidence: float = 0.5
    neighbourhood_check: bool = True  # with a graph given to annotate_cell_types (5. of the module docstring)
    confident_neutrophils: bool = True  # a neutrophil call needs neutrophil posterior >= min_confidence (6.)
    n_folds: int = 5
    max_train_cells: int = 50_000
    seed: int = 0


def cluster_order(labels) -> list:
    """Cluster labels in reading order: numeric labels (Leiden's "0", "1", ..., "10") by number, then the rest."""

    def key(x):
        t = str(x)
        return (0, int(t), "") if t.isdigit() else (1, 0, t)

    return sorted(labels, key=key)


def _cluster_sums(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Column sums of ``x`` per group (one bincount per column: fast at a million cells)."""
    return np.stack(
        [np.bincount(codes, weights=x[:, j], minlength=n_groups) for j in range(x.shape[1])], axis=1
    )


def _group_stats(
    x: np.ndarray, codes: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: sizes, means and standard deviations of the columns of ``x``."""
    sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
    s1 = _cluster_sums(x, codes, n_groups)
    s2 = _cluster_sums(x * x, codes, n_groups)
    n = np.maximum(sizes, 1)[:, None]
    mean = s1 / n
    sd = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    return sizes, mean, sd


def enrichment_units(scores: pd.DataFrame, codes: np.ndarray, min_cluster_cells: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per type: the baseline and the per-cell noise :func:`marker_enrichment` measures on these cells.

    The baseline is the :data:`BASELINE_QUANTILE` of the means of the clusters without the type: those whose
    highest mean score is another type's (the naive cluster call). Over all clusters instead, a type in most
    clusters (an atlas of sorted neutrophils) would take its baseline from its own clusters and never stand out.
    With fewer than two such clusters the type's baseline is taken over all clusters. The noise is the median
    within-cluster standard deviation. Only clusters of at least ``min_cluster_cells`` cells count (all clusters if
    fewer than two are).
    """
    x = np.nan_to_num(scores.to_numpy(dtype=np.float64), nan=0.0)
    sizes, mean, sd = _group_stats(x, codes, int(codes.max()) + 1 if len(codes) else 0)
    big = sizes >= min_cluster_cells
    if big.sum() < 2:
        big = sizes > 0
    means = mean[big]
    top = means.argmax(axis=1)
    base = np.array([
        np.quantile(col[top != j] if (top != j).sum() >= 2 else col, BASELINE_QUANTILE) for j, col in enumerate(means.T)
    ])
    noise = np.median(sd[big], axis=0)
    fallback = x.std(axis=0)
    return base, np.where(noise > 0, noise, np.where(fallback > 0, fallback, 1.0))


def fill_unmeasured(scores: pd.DataFrame, clusters: pd.Series, unmeasured: pd.DataFrame) -> pd.DataFrame:
    """Marker scores with each unmeasured (cell, type) score replaced by the mean score of that type over its
    cluster's measured cells (over all measured cells where its cluster has none).

    A data set whose files lack most of a type's markers (a deposit of its most variable genes, a targeted panel)
    scores its cells low on that type whatever they are: read as evidence, its T cells lack T markers and its
    monocytes monocyte markers, and clusters that pool them with other data sets' cells look mixed (on an
    independent cohort with three 2,000-gene studies, 654 of 721 monocytes were ``unknown``; stop 45). Filled with
    the cluster's own level, such a cell is neutral on that type: its cluster's measured cells and its own
    other markers decide.

    Parameters
    ----------
    scores
        Cells x types marker scores.
    clusters
        Each cell's cluster (same index).
    unmeasured
        Cells x types, True where the cell's data set did not measure the type's markers (same shape).
    """
    if not unmeasured.to_numpy().any():
        return scores
    out = scores.copy()
    codes = pd.factorize(clusters.astype(str).to_numpy())[0]
    for t in scores.columns:
        gap = unmeasured[t].to_numpy(bool)
        if not gap.any() or gap.all():
            continue
        x = scores[t].to_numpy(np.float64)
        ok = ~gap
        sums = np.bincount(codes[ok], weights=x[ok], minlength=codes.max() + 1)
        n = np.bincount(codes[ok], minlength=codes.max() + 1)
        fill = np.where(n > 0, sums / np.maximum(n, 1), x[ok].mean())
        x = x.copy()
        x[gap] = fill[codes[gap]]
        out[t] = x
    return out


def marker_enrichment(scores: pd.DataFrame, codes: np.ndarray, min_cluster_cells: int = 10) -> pd.DataFrame:
    """Per-cell enrichment per type: (score - type baseline) / type per-cell noise (:func:`enrichment_units`).

    Parameters
    ----------
    scores
        Cells x cell types: marker scores.
    codes
        Integer cluster code of each cell.
    min_cluster_cells
        Clusters at least this large define the baseline and the noise (all clusters if none is).

    Returns
    -------
    Cells x types, same index and columns as ``scores``.
    """
    base, noise = enrichment_units(scores, codes, min_cluster_cells)
    x = np.nan_to_num(scores.to_numpy(dtype=np.float64), nan=0.0)
    return pd.DataFrame((x - base) / noise, index=scores.index, columns=scores.columns)


def cluster_calls(enrich: pd.DataFrame, codes: np.ndarray, uniques, rule: CellTypeRule) -> pd.DataFrame:
    """The call of every cluster from its cells' mean enrichment (one row per cluster, in code order).

    Columns: ``cluster``, ``n_cells``, ``winner``, ``winner_effect``, ``runner_up``,
    ``runner_up_effect``, ``runner_up_ratio``, ``neutrophil_effect`` (when a type), ``call`` (the
    winner or ``unknown``) and ``rule`` (why).
    """
    types = np.asarray(enrich.columns, dtype=object)
    sizes, mean, _ = _group_stats(enrich.to_numpy(), codes, len(uniques))
    order = np.argsort(-mean, axis=1, kind="stable")
    win = mean[np.arange(len(mean)), order[:, 0]]
    run = mean[np.arange(len(mean)), order[:, 1]] if len(types) > 1 else np.zeros(len(mean))
    ratio = np.where(win > 0, np.maximum(run, 0.0) / np.where(win > 0, win, 1.0), np.inf)
    rule_col = np.full(len(mean), "markers", dtype=object)
    close = ratio > rule.max_runner_up_ratio
    clean = ~close & (win >= rule.min_effect) & (sizes >= rule.min_cluster_cells)
    share = _runner_up_cell_share(enrich.to_numpy(), codes, order, len(uniques))
    shared = close & _shared_not_mixed(win, run, ratio, share, order, clean)
    rule_col[close & ~shared] = "unknown: mixed (runner-up too close)"
    rule_col[shared] = "markers (runner-up's markers shared by every cell, not a mixture)"
    rule_col[win < rule.min_effect] = NO_TYPE_ENRICHED
    rule_col[sizes < rule.min_cluster_cells] = "unknown: too few cells"
    call = np.where(np.char.startswith(rule_col.astype(str), "markers"), types[order[:, 0]], UNKNOWN)
    table = pd.DataFrame(
        {
            "cluster": np.asarray(uniques),
            "n_cells": sizes.astype(int),
            "winner": types[order[:, 0]],
            "winner_effect": win,
            "runner_up": types[order[:, 1]] if len(types) > 1 else "",
            "runner_up_effect": run,
            "runner_up_ratio": ratio,
            "runner_up_cell_share": share,
        }
    )
    if "neutrophil" in list(types):
        table["neutrophil_effect"] = mean[:, list(types).index("neutrophil")]
    table["call"] = call
    table["rule"] = rule_col
    return table


def _runner_up_cell_share(e: np.ndarray, codes: np.ndarray, order: np.ndarray, n_clusters: int) -> np.ndarray:
    """Per cluster, the share of its cells whose own enrichment for the cluster's runner-up type beats the winner's."""
    if e.shape[1] < 2 or not len(codes):
        return np.zeros(n_clusters)
    rows = np.arange(len(codes))
    prefers = e[rows, order[codes, 1]] > e[rows, order[codes, 0]]
    sizes = np.bincount(codes, minlength=n_clusters)
    return np.bincount(codes, weights=prefers.astype(np.float64), minlength=n_clusters) / np.maximum(sizes, 1)


def _shared_not_mixed(
    win: np.ndarray, run: np.ndarray, ratio: np.ndarray, share: np.ndarray, order: np.ndarray, clean: np.ndarray
) -> np.ndarray:
    """Clusters whose close runner-up comes from markers its cells share, not from a mixture of two types.

    A mixture with a share ``f`` of runner-up cells has a runner-up ratio of about ``f / (1 - f)``, so about
    ``ratio / (1 + ratio)`` of its cells prefer the runner-up on their own evidence; cells of one type that
    express some of another type's markers (monocytes and neutrophils share S100A8/9, MNDA, CSF3R) do not
    split. Such a cluster keeps its winner when (a) fewer than half that expected share of its cells prefer
    the runner-up, (b) the runner-up's enrichment is below the clean clusters (called, no close runner-up) of
    the runner-up's type, so it is no cluster of that type, and (c) the winner's enrichment is not below the
    clean clusters of its own type (doublets of two types dilute both). "Below the clean clusters" is below the
    lower :data:`CLEAN_LOW_QUANTILE` of their enrichments (the lowest of two or three), not below their minimum:
    one clean cluster that is itself a dilute mixture (low-count cells of several types around neutrophils,
    enrichment 5.8 where the type's other 18 clusters reach 11.7-14.9) would otherwise make every monocyte
    cluster sharing neutrophil genes (runner-up 5.9-6.3) look mixed and leave the monocytes unknown (one
    independent cohort: cell-type accuracy 0.886 -> 0.983; no other call changed on 18 runs;
    ``benchmarks/robustness.md``, stop 34). Without a clean cluster of the runner-up's type nothing says what a
    cluster of it looks like: the cluster stays mixed.
    """
    if order.shape[1] < 2:
        return np.zeros(len(win), dtype=bool)
    win_type, run_type = order[:, 0], order[:, 1]
    # per type, the low end of its clean clusters' winner enrichments (NaN: none; comparisons with NaN are False)
    lowest = np.array([np.quantile(win[clean & (win_type == t)], CLEAN_LOW_QUANTILE)
                       if (clean & (win_type == t)).any() else np.nan for t in range(order.shape[1])])  # fmt: skip
    not_split = share < 0.5 * ratio / (1.0 + ratio)
    below_runner_type = run < lowest[run_type]
    diluted = win < lowest[win_type]
    return not_split & below_runner_type & ~diluted


def _demote(enrich: np.ndarray, codes: np.ndarray, call_idx: np.ndarray, demote_z: float) -> np.ndarray:
    """Type index per cell: its cluster's call, or another called type its own evidence clearly favours.

    ``call_idx`` is the called type per cluster (-1 = unknown). For each cell of a called cluster
    (type A) and each other called type B, the difference ``e_B - e_A`` is compared with the
    cluster's own distribution of it (median, 1.4826 MAD); a positive difference that is an
    outlier of at least ``demote_z`` moves the cell to B (the largest such B).
    """
    label = call_idx[codes].copy()
    called_types = np.unique(call_idx[call_idx >= 0])
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(call_idx) + 1))
    for c in np.flatnonzero(call_idx >= 0):
        rows = order[bounds[c] : bounds[c + 1]]
        a = call_idx[c]
        best_z = np.zeros(len(rows))
        for b in called_types:
            if b == a:
                continue
            diff = enrich[rows, b] - enrich[rows, a]
            med = np.median(diff)
            mad = 1.4826 * np.median(np.abs(diff - med))
            scale = mad if mad > 0 else diff.std()
            if not scale > 0:
                continue
            z = (diff - med) / scale
            move = (diff > 0) & (z >= demote_z) & (z > best_z)
            label[rows[move]] = b
            best_z[move] = z[move]
    return label


def knn_graph(latent: np.ndarray, n_neighbors: int = 15, seed: int = 0):
    """The symmetrised binary kNN graph of ``latent`` (sparse, no self loops): the graph the over-clustering
    is cut from, and the neighbourhoods :func:`annotate_cell_types` asks before a cell leaves its cluster's call.

    Exact kNN with scikit-learn's tree search up to ``EXACT_KNN_MAX_CELLS`` cells (no numba
    compilation), scanpy's approximate neighbours above.
    """
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(latent, dtype=np.float32)
    n = len(x)
    k = int(min(n_neighbors, max(1, n - 1)))
    if n > EXACT_KNN_MAX_CELLS:  # approximate neighbours (pynndescent): O(n log n) in any dimension
        from ..core.jit import cache_graph_kernels

        cache_graph_kernels()
        a = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(n).astype(str)))
        a.obsm["X"] = x
        sc.pp.neighbors(a, n_neighbors=k + 1, use_rep="X", random_state=seed)
        adj = a.obsp["distances"].tocsr()
    else:
        _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
        adj = sp.csr_matrix(
            (np.ones(n * (k + 1)), (np.repeat(np.arange(n), k + 1), idx.ravel())), shape=(n, n)
        )
        adj.setdiag(0)
        adj.eliminate_zeros()
    return ((adj + adj.T) > 0).astype(np.float64).tocsr()


def overcluster(graph, resolution: float, seed: int = 0) -> np.ndarray:
    """Leiden clusters (igraph) at ``resolution`` on ``graph`` (:func:`knn_graph` of the latent): the
    over-clustering calls are made on."""
    import anndata as ad
    import scanpy as sc

    a = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(graph.shape[0]).astype(str)))
    sc.tl.leiden(a, resolution=resolution, random_state=seed, adjacency=graph, flavor="igraph", n_iterations=2,
                 directed=False)  # fmt: skip
    return a.obs["leiden"].astype(str).to_numpy()


def neighbourhood_posteriors(post: np.ndarray, graph, rows: np.ndarray | None = None) -> np.ndarray:
    """The posteriors of the cells ``rows`` (all when ``None``) averaged over each cell and its neighbours in
    ``graph`` (binary, symmetric; same row order as ``post``)."""
    import scipy.sparse as sp

    rows = np.arange(len(post)) if rows is None else np.asarray(rows)
    near = sp.csr_matrix(graph, dtype=np.float64)[rows]
    total = np.asarray(near @ post) + post[rows]
    return total / (np.asarray(near.sum(axis=1)) + 1.0)


def auto_resolution(n_cells: int) -> float:
    """CellTypist's over-clustering resolution for ``n_cells`` (5 below 5k cells ... 30 above 200k)."""
    for limit, res in ((5_000, 5.0), (20_000, 10.0), (40_000, 15.0), (100_000, 20.0), (200_000, 25.0)):
        if n_cells < limit:
            return res
    return 30.0


def marker_probabilities(enrich: np.ndarray, targets: np.ndarray, rule: CellTypeRule) -> np.ndarray:
    """Out-of-fold probability of every type given a cell's own markers only (cells x types).

    A multinomial logistic regression on the enrichments learns the seed cells' (soft) labels; each
    cell is predicted by the model of the fold it was left out of, so the probabilities are
    calibrated on cells the model did not see.

    Parameters
    ----------
    enrich
        Cells x types enrichment.
    targets
        Cells x types label weights of the seed cells (one-hot or posteriors); all-zero rows are not seeds.
    rule
        ``n_folds``, ``max_train_cells``, ``seed``.
    """
    from sklearn.linear_model import LogisticRegression

    n, n_types = targets.shape
    rng = np.random.default_rng(rule.seed)
    folds = rng.integers(0, rule.n_folds, size=n)
    seeds = targets.sum(axis=1) > 0
    prob = np.zeros((n, n_types))
    classes = np.flatnonzero(targets[seeds].sum(axis=0) > 0)
    if len(classes) < 2:
        prob[:, classes] = 1.0
        return prob
    for f in range(rule.n_folds):
        test = folds == f
        train = np.flatnonzero(seeds & ~test)
        if len(train) > rule.max_train_cells:
            train = np.sort(rng.choice(train, rule.max_train_cells, replace=False))
        rows, cols = np.nonzero(targets[train] > 1e-3)  # one weighted row per (cell, plausible type)
        if not test.any() or len(np.unique(cols)) < 2:
            continue
        model = LogisticRegression(C=1.0, max_iter=500)
        model.fit(enrich[train[rows]], cols, sample_weight=targets[train[rows], cols])
        prob[np.ix_(test, model.classes_)] = model.predict_proba(enrich[test])
    return prob


def cluster_posteriors(
    prob: np.ndarray, prior: np.ndarray, codes: np.ndarray, start: np.ndarray | None = None, n_iter: int = 200
) -> np.ndarray:
    """Per-cell type posteriors with each cluster's own composition as the prior (EM, Saerens et al. 2002).

    ``prob`` are probabilities under the global ``prior`` (the training labels' type shares); a
    cluster's composition (starting at ``start``, clusters x types, else ``prior``) is estimated by
    EM (posteriors averaged over its cells, re-weighted until stable), so a cell of a pure cluster
    needs strong evidence to be anything else and a cell of a mixed cluster is judged by its markers.
    """
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    safe = np.where(prior > 0, prior, 1.0)
    lik = np.where(prior > 0, prob / safe, 0.0)
    sizes = np.maximum(np.bincount(codes, minlength=n_clusters), 1)[:, None]
    comp = np.tile(prior, (n_clusters, 1)) if start is None else start.copy()
    post = prob
    for _ in range(n_iter):
        w = lik * comp[codes]
        total = w.sum(axis=1, keepdims=True)
        post = np.divide(w, total, out=np.tile(prior, (len(w), 1)), where=total > 0)
        new = _cluster_sums(post, codes, n_clusters) / sizes
        done = np.abs(new - comp).max() < 1e-6
        comp = new
        if done:
            break
    return post


def calibrated_posteriors(enrich: np.ndarray, seed_label: np.ndarray, codes: np.ndarray, n_types: int,
                          rule: CellTypeRule) -> np.ndarray:  # fmt: skip
    """Type posteriors per cell: out-of-fold marker model, cluster priors, refitted on its own posteriors.

    The first model learns the seed labels (cluster calls), which are wrong for a cluster's
    contaminants; it is refitted ``N_REFITS`` times on the seeds' posteriors (soft labels), so the
    contaminants stop teaching it that their markers mean the cluster's type.
    """
    seeds = seed_label >= 0
    targets = np.zeros((len(seed_label), n_types))
    targets[np.flatnonzero(seeds), seed_label[seeds]] = 1.0
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    start = _cluster_sums(targets, codes, n_clusters)
    post = targets
    for _ in range(1 + N_REFITS):
        prob = marker_probabilities(enrich, targets, rule)
        prior = targets[seeds].sum(axis=0) / max(targets[seeds].sum(), 1e-12)
        counts = start.sum(axis=1, keepdims=True)
        init = np.where(counts > 0, 0.5 * start / np.maximum(counts, 1e-12) + 0.5 * prior, prior)
        post = cluster_posteriors(prob, prior, codes, init)
        targets = np.where(seeds[:, None], post, 0.0)
    return post


def annotate_cell_types(
    marker_scores: pd.DataFrame,
    clusters: pd.Series,
    rule: CellTypeRule | None = None,
    graph=None,
    incomplete: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Assign a cell type, a calibrated confidence and a neutrophil call to every cell.

    Parameters
    ----------
    marker_scores
        Cells x cell types: marker scores (column names are the cell types; one must be ``neutrophil``).
    clusters
        Cluster of each cell (same index): an over-clustering of the integrated graph.
    rule
        :class:`CellTypeRule` (defaults when ``None``).
    graph
        The cells' kNN graph in the latent (:func:`knn_graph`, same row order): a cell leaves its cluster's
        call (propagated out of an ``unknown`` cluster, or moved out of a called one) only where its
        neighbourhood agrees (5. of the module docstring). ``None`` (or ``rule.neighbourhood_check`` off): no
        neighbourhood check.
    incomplete
        Cells whose own evidence lacks a type (their data set did not measure its markers: :func:`fill_unmeasured`
        gave them their cluster's level): they keep their cluster's call, never moved or propagated on their own
        posterior, which cannot weigh the type they lack (on an independent cohort with three 2,000-gene studies,
        15 cells of a mixed cluster went to neutrophil, the one type whose markers those studies kept). None: all
        complete.

    Returns
    -------
    ``(cells, clusters)``: per cell ``cell_type``, ``cell_type_confidence``, ``is_neutrophil``,
    ``neutrophil_confidence``, ``cell_type_rule`` (cluster, demoted, propagated, contested, unknown),
    ``cell_type_cluster`` and one ``marker_z_<type>`` (enrichment) column per type; per cluster
    the evidence and call of :func:`cluster_calls` plus ``n_demoted``, ``n_propagated``,
    ``n_not_propagated_neighbours`` (cells whose own posterior would have propagated them but whose
    neighbourhood disagreed), ``n_contested`` (neutrophil calls its cells' own posteriors did not back: 6. of the
    module docstring) and ``mean_confidence``.
    """
    rule = rule or CellTypeRule()
    types = list(marker_scores.columns)
    if "neutrophil" not in types:
        raise ValueError(f"marker scores have no 'neutrophil' column (types: {types})")
    codes, uniques = pd.factorize(clusters.astype(str).to_numpy(), sort=True)
    enrich = marker_enrichment(marker_scores, codes, rule.min_cluster_cells)
    table = cluster_calls(enrich, codes, uniques, rule)
    call_idx = np.array([types.index(c) if c != UNKNOWN else -1 for c in table["call"]])
    e = enrich.to_numpy()
    label = _demote(e, codes, call_idx, rule.demote_z) if rule.refine_cells else call_idx[codes].copy()
    post = calibrated_posteriors(e, label, codes, len(types), rule)
    how = np.where(label < 0, UNKNOWN, np.where(label == call_idx[codes], "cluster", "demoted")).astype(
        object
    )
    best = post.argmax(axis=1)
    sure = post.max(axis=1) >= rule.min_confidence
    own = np.ones(len(label), dtype=bool) if incomplete is None else ~np.asarray(incomplete, dtype=bool)
    if rule.refine_cells:  # a called cell whose calibrated posterior makes another type more likely moves there
        moved = (label >= 0) & (best != label) & (post[np.arange(len(label)), best] >= 0.5) & own
        label[moved] = best[moved]
        how[moved] = "demoted"
    agree = np.ones(len(label), dtype=bool)  # the latent neighbourhood's posterior agrees with the cell's own
    # a second opinion wherever a cell's own posterior leaves its cluster's call
    if graph is not None and rule.neighbourhood_check:
        leaves = sure & (best != label)
        rows = np.flatnonzero(leaves)
        near = neighbourhood_posteriors(post, graph, rows)[np.arange(rows.size), best[rows]]
        agree[rows] = near >= rule.min_confidence
        moved = (label >= 0) & leaves & agree & own
        label[moved] = best[moved]
        how[moved] = "demoted"
    # An unknown cell takes its most likely type only when the posteriors know its cluster's winning type: they
    # are calibrated on called clusters, so a type no cluster was called (monocytes sharing neutrophil genes,
    # every one of their clusters mixed) has no posterior, and its cells would go to whatever type is nearest
    # (on an independent cohort 745 such cells went to neutrophil or endothelial, 13 of them rightly). Nor when
    # no type is enriched in its cluster: that is no panel type at all (on a cohort with mast, dendritic and
    # plasma cells, 301 of the 304 cells such clusters held went to B at a median posterior of 0.998, 3 rightly;
    # no such cluster in 14 runs of panel types only; benchmarks/robustness.md, stop 34).
    winner = np.array([types.index(w) if w in types else -1 for w in table["winner"]])
    can_propagate = np.isin(winner, call_idx[call_idx >= 0]) & (table["rule"].to_numpy() != NO_TYPE_ENRICHED)
    take = (label < 0) & sure & can_propagate[codes] & own
    held = take & ~agree
    take &= agree
    label[take] = best[take]
    how[take] = "propagated"
    neut = types.index("neutrophil")
    contested = (label == neut) & (post[:, neut] < rule.min_confidence) & rule.confident_neutrophils
    label[contested] = -1
    how[contested] = CONTESTED
    names = np.asarray([*types, UNKNOWN], dtype=object)
    conf = np.where(label >= 0, post[np.arange(len(label)), np.maximum(label, 0)], 0.0)
    cells = pd.DataFrame(
        {
            "cell_type": pd.Categorical(names[label], categories=[*types, UNKNOWN]),
            "cell_type_confidence": conf,
            "is_neutrophil": label == neut,
            "neutrophil_confidence": post[:, neut],
            "cell_type_rule": pd.Categorical(how, categories=["cluster", "demoted", "propagated", CONTESTED, UNKNOWN]),
            "cell_type_cluster": np.asarray(uniques)[codes],
        },
        index=marker_scores.index,
    )
    for j, t in enumerate(types):
        cells[f"marker_z_{t}"] = e[:, j]
    table["n_demoted"] = np.bincount(codes[how == "demoted"], minlength=len(uniques))
    table["n_propagated"] = np.bincount(codes[how == "propagated"], minlength=len(uniques))
    table["n_not_propagated_neighbours"] = np.bincount(codes[held], minlength=len(uniques))
    table["n_contested"] = np.bincount(codes[contested], minlength=len(uniques))
    table["mean_confidence"] = np.bincount(codes, weights=conf, minlength=len(uniques)) / np.maximum(
        table["n_cells"].to_numpy(), 1
    )
    table = table.set_index("cluster").loc[cluster_order(uniques)].reset_index().round(4)
    return cells, table


def neutrophil_yield(obs: pd.DataFrame) -> pd.DataFrame:
    """Neutrophils found per data set and platform (platforms differ a lot in neutrophil capture)."""
    g = obs.groupby(["dataset_id", "platform"], observed=True, sort=True)
    out = g.agg(n_cells=("is_neutrophil", "size"), n_neutrophils=("is_neutrophil", "sum")).reset_index()
    out["neutrophil_fraction"] = out["n_neutrophils"] / out["n_cells"]
    return out
