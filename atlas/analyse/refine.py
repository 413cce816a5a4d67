"""Signatures refined on the data: each registry signature seeds a gene programme learned from the neutrophils.

A published signature is a proxy: in another cohort, platform or species only part of its genes may move
with the programme it stands for, and the rest add counting noise (the independent cohorts' T3 programme
shares 11 of T3_proxy's 23 genes). As Tirosh et al. 2016 and Puram et al. 2017 refine their programmes,
the analysis learns the programme from the data, seeded by the signature:

1. Among the neutrophils at hand, log-normalised expression (``log1p(count / total * 1e4)``) of every gene
   detected in at least ``min_detection`` of them.
2. Within each data set, an intercept and a slope on the cells' log library size are removed from the genes
   and the score (study effects and depth are not the programme).
3. Each gene's correlation with the current score, **leaving the gene's own contribution out** (a gene in
   the score would otherwise select itself), is tested (one-sided t-test, Benjamini-Hochberg over the
   genes at ``fdr``); genes positively correlated at that FDR form the next score, each weighted by its
   covariance with the rest of the score over the rest's standard deviation (``r * sd``: a gene that moves
   more with the programme counts more).
4. The seed is the signature's mean expression; steps 2-3 run ``max_iterations`` times (fewer when the
   gene set stops changing).

A side state's signature (one the reprogramming index does not read: immature, interferon, antigen-presenting)
is refined *apart from* the other signatures the analysis reads (``refine_signatures.side_states_apart``): their
scores, residualised on the same design, are fitted out of its score before each gene test, so genes that rise
with it only because another state's cells also raise its signature stay out. On the demo cohort the T3 cells
raise a few interferon-signature genes, and the interferon programme refined as it is took 118 genes and scored
T3 cells at half the interferon cells' level (its state macro-F1 cost: 0.918 against 0.958 apart); refined apart
it kept 29. The index's own signatures are refined as they are: T3 and blood-like are the two ends of one axis.

Only positively correlated genes are taken: a programme is genes that rise together, and allowing
anti-correlated genes let a side programme (immature) drift onto the dominant axis of the cohort (T3) on the
hard simulator preset. A refinement that keeps fewer than ``min_genes`` genes, or none of its signature's own
genes (it followed another programme: on a cohort whose 10x data sets hold few neutrophils the antigen-presenting
signature's two detected genes both fell out and the "programme" was 12 unrelated genes that called no cell), or
whose signature has fewer than two candidate genes (:data:`MIN_SEED_GENES`), is not used: the registry signature
stays, and the analysis says so.

The learned programme's score of a cell is its weighted sum of log-normalised expression minus that of
control genes of matched expression, as ``scanpy.tl.score_genes`` scores a gene set (Tirosh et al. 2016): the
candidate genes are ranked by mean expression over the neutrophils into :data:`N_CONTROL_BINS` bins, each bin
holding programme genes gives :data:`CONTROL_SIZE` random other genes of that bin (seeded), and a programme gene's
weight is subtracted, spread evenly, from its bin's control genes. A cell's depth and platform shift every gene of
an expression level alike (more genes detected at 600 UMIs than at 200), and the plain weighted sum carried that
shift: on an independent cohort's SeqWell data sets (~600 UMIs against ~200 on 10x) the undamaged mature
neutrophils scored +0.5 to +0.7 SD on the T3 programme and a quarter of them were called T3; with control genes
that shift shrank to within the 10x data sets' spread and the programme's T3 AUROC rose 0.87-0.94 -> 0.92-0.97
(0.97-0.99 -> 0.999-1.000 on the simulator; ``benchmarks/robustness.md``, stop 27). There is no data-set
centring: differences between cancers are what the analysis measures. Genes, weights, control genes and their
weights are stored with the atlas so a query is scored on the same programme.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .expression import log_normalised

__all__ = [
    "Candidates",
    "Programme",
    "control_genes",
    "log_normalised",
    "prepare_candidates",
    "programme_reliabilities",
    "programme_scores",
    "refine_programme",
    "refined_name",
]

log = logging.getLogger(__name__)

#: suffix of a refined signature's score column
SUFFIX = "_refined"
#: expression bins of the control genes and control genes drawn per bin holding programme genes
#: (``scanpy.tl.score_genes``'s defaults)
N_CONTROL_BINS = 25
CONTROL_SIZE = 50
#: Seed genes a refinement needs among the candidates. With one, leaving each gene out of its own test leaves
#: no signature to test it against, and the genes found are those co-detected with one sparse gene by chance
#: (an independent cohort's antigen-presenting signature, 1 of 3 genes detected in >= 1 % of the neutrophils,
#: took FGF21, LEP, OTOA...: its state's F1 0.09 refined, 0.26 read as it is).
MIN_SEED_GENES = 2


def refined_name(signature: str) -> str:
    """The score column of ``signature``'s refined programme."""
    return f"{signature}{SUFFIX}"


@dataclass(frozen=True)
class Programme:
    """A gene programme learned from the data, seeded by the registry signature ``source``.

    Its score is ``sum(weights * genes) - sum(control_weights * control_genes)`` over log-normalised expression
    (no control genes: the weighted sum alone, as programmes of earlier versions were scored).
    """

    name: str
    source: str
    genes: tuple[str, ...]
    weights: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)
    control_genes: tuple[str, ...] = ()
    control_weights: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON/HDF5-friendly dict (stored with the reprogramming axis)."""
        return {"name": self.name, "source": self.source, "genes": list(self.genes),
                "weights": [float(w) for w in self.weights], "info": dict(self.info),
                "control_genes": list(self.control_genes),
                "control_weights": [float(w) for w in self.control_weights]}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Programme:
        """Read back what :meth:`to_dict` wrote (also from an AnnData ``uns`` entry, or a programme without
        control genes of an earlier version)."""
        return cls(name=str(d["name"]), source=str(d["source"]),
                   genes=tuple(str(g) for g in np.atleast_1d(d["genes"])),
                   weights=tuple(float(w) for w in np.atleast_1d(d["weights"])), info=dict(d.get("info") or {}),
                   control_genes=tuple(str(g) for g in np.atleast_1d(d.get("control_genes", []))),
                   control_weights=tuple(float(w) for w in np.atleast_1d(d.get("control_weights", []))))  # fmt: skip

    def all_genes(self) -> list[str]:
        """The programme's genes, then its control genes."""
        return [*self.genes, *self.control_genes]

    def score(self, x_log: sp.csr_matrix, var_names: pd.Index) -> np.ndarray:
        """Each cell's score (see the class notes) in log-normalised ``x_log`` (absent genes count 0)."""
        idx = pd.Index(var_names).get_indexer(self.all_genes())
        w = np.concatenate([np.asarray(self.weights, dtype=np.float64),
                            -np.asarray(self.control_weights, dtype=np.float64)])  # fmt: skip
        ok = idx >= 0
        if not ok[: len(self.genes)].any():
            return np.zeros(x_log.shape[0])
        return np.asarray(x_log[:, idx[ok]] @ w[ok]).ravel()


def control_genes(
    mean_expression: np.ndarray, programme: np.ndarray, weights: np.ndarray, *, seed: int = 0,
    n_bins: int = N_CONTROL_BINS, size: int = CONTROL_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Control genes of matched expression for a weighted programme (the module notes).

    Parameters
    ----------
    mean_expression
        Each candidate gene's mean log-normalised expression over the cells at hand.
    programme, weights
        Positions (into ``mean_expression``) of the programme's genes and their weights.
    seed, n_bins, size
        Random draw; expression bins (equal numbers of genes); control genes drawn per bin.

    Returns
    -------
    Positions of the control genes and each one's (positive) weight: the summed weight of its bin's programme
    genes, divided by the number of controls drawn there.
    """
    n = mean_expression.size
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(mean_expression, kind="stable")] = np.arange(n)
    bins = rank * n_bins // max(n, 1)
    is_programme = np.zeros(n, bool)
    is_programme[programme] = True
    rng = np.random.default_rng(seed)
    picked, picked_w = [], []
    for b in np.unique(bins[programme]):
        pool = np.flatnonzero((bins == b) & ~is_programme)
        if pool.size == 0:
            continue
        draw = np.sort(rng.choice(pool, min(size, pool.size), replace=False))
        picked.append(draw)
        picked_w.append(np.full(draw.size, float(weights[bins[programme] == b].sum()) / draw.size))
    if not picked:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(picked), np.concatenate(picked_w)


def _programme_genes(counts, progs: list[Programme]) -> tuple[sp.csr_matrix, pd.Index]:
    """Log-normalised expression of the programmes' genes and control genes only (cells' totals over all genes),
    and their names."""
    names = pd.Index(counts.var_names)
    idx = names.get_indexer(list(dict.fromkeys(g for p in progs for g in p.all_genes())))
    idx = np.sort(idx[idx >= 0])
    totals = np.asarray(counts.X.sum(axis=1)).ravel()
    return log_normalised(counts.X[:, idx], totals), names[idx]


def programme_scores(counts, programmes: dict[str, Programme] | list[Programme]) -> pd.DataFrame:
    """Cells x programmes: each programme's score on raw ``counts`` (an AnnData; totals over all its genes)."""
    progs = list(programmes.values()) if isinstance(programmes, dict) else list(programmes)
    x, genes = _programme_genes(counts, progs)
    return pd.DataFrame({p.name: p.score(x, genes) for p in progs}, index=counts.obs_names)


# --- the refinement ----------------------------------------------------------------------------


class _Design:
    """Within-block intercept and log-depth slope, the nuisance removed from genes and scores."""

    def __init__(self, blocks: np.ndarray, log_depth: np.ndarray):
        self.groups = [np.flatnonzero(blocks == b) for b in pd.unique(blocks)]
        self.centred = np.zeros_like(log_depth)
        for rows in self.groups:
            self.centred[rows] = log_depth[rows] - log_depth[rows].mean()

    def residual(self, y: np.ndarray) -> np.ndarray:
        out = np.empty_like(y)
        for rows in self.groups:
            yb, lb = y[rows] - y[rows].mean(), self.centred[rows]
            sll = float(lb @ lb)
            out[rows] = yb - (lb * float(lb @ yb) / sll if sll > 0 else 0.0)
        return out

    def residual_variance(self, x: sp.csr_matrix) -> np.ndarray:
        """Per gene: the variance of its residual (least squares on the design, per block)."""
        rss = np.zeros(x.shape[1])
        for rows in self.groups:
            xb, lb = x[rows], self.centred[rows]
            s1 = np.asarray(xb.sum(axis=0)).ravel()
            s2 = np.asarray(xb.multiply(xb).sum(axis=0)).ravel()
            sl, sll = np.asarray(xb.T @ lb).ravel(), float(lb @ lb)
            rss += s2 - s1**2 / rows.size - (sl**2 / sll if sll > 0 else 0.0)
        return np.maximum(rss, 0.0) / x.shape[0]


def _step(
    x: sp.csr_matrix, w: np.ndarray, var: np.ndarray, design: _Design, fdr: float, apart: np.ndarray | None = None
) -> np.ndarray:
    """One refinement step: the weights of the genes positively correlated with the score of ``w`` (less its
    least-squares fit on the columns of ``apart``, already residualised on the design)."""
    from scipy.stats import false_discovery_control
    from scipy.stats import t as student_t

    n = x.shape[0]
    y = design.residual(np.asarray(x @ w).ravel())
    if apart is not None and apart.shape[1]:
        y = y - apart @ np.linalg.lstsq(apart, y, rcond=None)[0]
    cov = np.asarray(x.T @ y).ravel() / n  # y is residual, so this is the residualised genes' covariance
    var_y = float(y @ y) / n
    cov_loo = cov - w * var  # the gene's own contribution to the score removed
    var_loo = np.maximum(var_y - 2 * w * cov + w**2 * var, 0.0)
    den = np.sqrt(var_loo * var)
    r = np.divide(cov_loo, den, out=np.zeros_like(cov), where=den > 0)
    r = np.clip(r, -0.999999, 0.999999)
    t = r * np.sqrt((n - 2) / (1 - r**2))
    q = false_discovery_control(student_t.sf(t, max(n - 2, 1)), method="bh")
    keep = (q <= fdr) & (r > 0)
    out = np.zeros_like(w)
    out[keep] = cov_loo[keep] / np.sqrt(var_loo[keep])
    return out


@dataclass
class Candidates:
    """The candidate genes of a refinement, prepared once for all the signatures refined on the same cells."""

    genes: pd.Index  # genes detected in >= min_detection of the cells
    x: sp.csr_matrix  # their log-normalised expression (cells x genes)
    design: _Design  # within-block intercept and log-depth slope
    var: np.ndarray  # each gene's residual variance under the design
    min_detection: float
    mean: np.ndarray  # each gene's mean log-normalised expression (the control genes' bins)
    _residual_scores: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, repr=False)

    def mean_weights(self, gene_set) -> np.ndarray:
        """Weights of ``gene_set``'s mean over its candidate genes (all zero when none is a candidate)."""
        idx = self.genes.get_indexer(list(dict.fromkeys(gene_set)))
        idx = idx[idx >= 0]
        w = np.zeros(self.x.shape[1])
        w[idx] = 1.0 / max(idx.size, 1)
        return w

    def residual_score(self, gene_set) -> np.ndarray | None:
        """``gene_set``'s mean log expression residualised on the design (None: no candidate gene), computed
        once per gene set: each side state's refinement fits the same other signatures out."""
        key = tuple(dict.fromkeys(gene_set))
        if key not in self._residual_scores:
            w = self.mean_weights(key)
            self._residual_scores[key] = self.design.residual(np.asarray(self.x @ w).ravel()) if w.any() else None
        return self._residual_scores[key]


def prepare_candidates(counts, blocks: np.ndarray | None = None, *, min_detection: float = 0.01) -> Candidates:
    """The genes of raw ``counts`` (cells x all genes) detected in ``min_detection`` of the cells, log-normalised
    (totals over all genes), with the design of ``blocks`` (one block when None) and log depth."""
    totals = np.asarray(counts.X.sum(axis=1)).ravel().astype(np.float64)
    n = counts.n_obs
    detected = np.asarray((counts.X > 0).sum(axis=0)).ravel() / max(n, 1)
    cand = np.flatnonzero(detected >= min_detection)
    x = log_normalised(counts.X[:, cand], totals)
    blocks = np.zeros(n, dtype=np.int64) if blocks is None else np.asarray(blocks)
    design = _Design(blocks, np.log(np.maximum(totals, 1.0)))
    mean = np.asarray(x.mean(axis=0)).ravel()
    return Candidates(pd.Index(counts.var_names)[cand], x, design, design.residual_variance(x), min_detection, mean)


def _apart_scores(c: Candidates, signatures: dict[str, Any]) -> tuple[np.ndarray | None, list[str]]:
    """:meth:`Candidates.residual_score` of each signature with a candidate gene, as columns, and their names."""
    scores = {str(name): c.residual_score(genes) for name, genes in signatures.items()}
    scores = {name: v for name, v in scores.items() if v is not None}
    return (np.column_stack(list(scores.values())) if scores else None), list(scores)


def refine_programme(
    counts, seed_genes, blocks: np.ndarray | None = None, *, fdr: float = 0.01, min_detection: float = 0.01,
    max_iterations: int = 2, min_genes: int = 5, name: str = "", source: str = "",
    candidates: Candidates | None = None, random_state: int = 0, apart_from: dict[str, Any] | None = None,
) -> tuple[Programme | None, dict[str, Any]]:
    """Learn the programme seeded by ``seed_genes`` on the cells of ``counts`` (see the module notes).

    Parameters
    ----------
    counts
        AnnData of raw counts, the cells to learn on (the neutrophils) x all genes.
    seed_genes
        The registry signature's genes (those absent from ``counts`` are ignored).
    blocks
        Each cell's data set (one block when None).
    fdr, min_detection, max_iterations, min_genes
        Gene test, candidate genes, refinement steps, smallest programme used.
    name, source
        The programme's score column and the signature it refines.
    candidates
        :func:`prepare_candidates` of the same ``counts`` and ``blocks`` (then ``min_detection`` is its own):
        several signatures refined on the same cells share it.
    random_state
        Seed of the control genes' draw (:func:`control_genes`).
    apart_from
        Other signatures (name -> genes) whose scores (mean log expression of their detected genes, residualised
        on the design) are fitted out of the score before each gene test: the programme is learned from what
        they do not explain (a partial covariance; the genes' variances are not corrected, a conservative test).

    Returns
    -------
    programme, info
        The programme (None when the refinement kept fewer than ``min_genes`` genes or none of the signature's
        own genes, or the signature has too few detected genes) and what happened (seed genes used and kept,
        iterations, genes).
    """
    c = candidates or prepare_candidates(counts, blocks, min_detection=min_detection)
    genes, x, design, var = c.genes, c.x, c.design, c.var
    n = x.shape[0]
    w = c.mean_weights(seed_genes)
    seed = np.flatnonzero(w)
    info: dict[str, Any] = {"n_cells": int(n), "n_candidate_genes": int(genes.size), "n_seed_genes": int(seed.size),
                            "fdr": fdr, "min_detection": c.min_detection}  # fmt: skip
    if seed.size < MIN_SEED_GENES or n < 10:
        info["reason"] = (f"{seed.size} of its genes detected in >= {c.min_detection:.0%} of {n} cells (a programme "
                          f"is learned from >= {MIN_SEED_GENES} that can be checked against each other)")  # fmt: skip
        return None, info
    seed_score = np.asarray(x @ w).ravel()
    apart, apart_names = _apart_scores(c, apart_from or {})
    if apart_names:
        info["refined_apart_from"] = apart_names
    iterations = 0
    for _ in range(max_iterations):
        new = _step(x, w, var, design, fdr, apart)
        if int((new > 0).sum()) < min_genes:
            break
        iterations += 1
        same = np.array_equal(new > 0, w > 0)
        w = new
        if same:
            break
    info["iterations"] = iterations
    if iterations == 0:
        info["reason"] = f"fewer than {min_genes} genes correlated with the signature at FDR {fdr}"
        return None, info
    kept = np.flatnonzero(w > 0)
    order = kept[np.argsort(-w[kept], kind="stable")]
    n_seed_kept = int(np.isin(seed, kept).sum())
    info.update(n_genes=int(kept.size), n_seed_genes_kept=n_seed_kept, top_genes=[str(g) for g in genes[order[:10]]])
    if n_seed_kept == 0:  # drifted: the genes that rose together are another programme's, not the signature's
        info["reason"] = "the refinement kept none of the signature's own genes (it followed another programme)"
        return None, info
    ctrl, ctrl_w = control_genes(c.mean, order, w[order], seed=random_state)
    net = w.copy()
    net[ctrl] -= ctrl_w  # control genes are never programme genes: the score as Programme.score computes it
    score = np.asarray(x @ net).ravel()
    corr = float(np.corrcoef(score, seed_score)[0, 1]) if np.std(score) > 0 and np.std(seed_score) > 0 else 0.0
    info.update(n_control_genes=int(ctrl.size), corr_with_signature=corr)
    prog = Programme(name=name or refined_name(source), source=source,
                     genes=tuple(str(g) for g in genes[order]), weights=tuple(float(v) for v in w[order]), info=info,
                     control_genes=tuple(str(g) for g in genes[ctrl]),
                     control_weights=tuple(float(v) for v in ctrl_w))  # fmt: skip
    return prog, info


def programme_reliabilities(counts, programmes: dict[str, Programme], *, seed: int = 0) -> dict[str, float]:
    """Split-half reliability of each programme's weighted score on raw ``counts`` (cells at hand x all genes)."""
    from .reprogramming import signature_reliabilities

    return signature_reliabilities(counts, {n: p.genes for n, p in programmes.items()}, seed=seed,
                                   weights={n: p.weights for n, p in programmes.items()})  # fmt: skip
