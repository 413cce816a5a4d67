"""Neutrophil states: per-cell and per-cluster assignment from state signature scores.

Rule (all thresholds in :class:`atlas.analyse.AnalysisSettings`):

1. A state's score is the mean of its signatures' scores; each is standardised within neutrophils (z),
   so every threshold is in units of the data's own spread, whatever the depth or scoring method.
2. The z-scores are averaged over the neutrophil kNN graph (``state_smoothing_steps`` lazy random-walk
   steps: half the cell, half its neighbours), which tames the dropout of low-UMI neutrophils.
3. Each state's smoothed z is shrunk towards the neutrophils' mean by how much of its spread is noise, as
   step 4 does within clusters (``e = k z``, ``k`` as in step 4 with the variance over all neutrophils;
   ``state_shrink_evidence``; a reliability not above 0, the clip of split halves that did not correlate,
   estimates nothing and leaves the z as it is, here and in step 4): a score that is mostly counting noise at
   this depth needs more evidence per cell than a reliable one, rather than admitting its noise's upper tail (on an
   independent 30,000-cell cohort of ~300-UMI neutrophils, 368 were called antigen-presenting for 122 true,
   by a programme of reliability 0.21; ``benchmarks/robustness.md``, stop 29). A cell takes its best state
   when that evidence reaches ``state_min_z`` and beats the second best by
   ``state_min_margin`` (rule ``cell``); a cell with no state reaching ``state_min_z`` takes the default
   state (rule ``default``). The default is ``default_state``; with ``"auto"`` it is chosen from the
   data: the state with the highest mean z among the cells that reach no threshold (the baseline
   programme of the neutrophils at hand; mature neutrophils in most tissues).
4. Cluster evidence settles the rest (two programmes close): their z is shrunk towards their
   sub-atlas cluster's mean by how much of the within-cluster spread is noise (Kelley's
   empirical-Bayes estimate), ``e = m_cluster + k (z - m_cluster)`` with
   ``k = max(0, 1 - f (1 - r) / var_within(z))``, ``r`` the state score's split-half reliability on these
   neutrophils, ``f`` the share of per-cell noise variance the graph smoothing leaves and ``var_within``
   the smoothed z's variance within clusters; a reliable score keeps the cell's own value (``k`` ~ 1), a
   score that is mostly dropout noise at this depth follows the cluster (``k`` ~ 0). A cell whose
   shrunk evidence passes step 3's test takes that state (rule ``cluster``); the others stay
   ``unassigned`` (rule ``ambiguous``). Clear cell-level calls are never overridden, so rare states that
   form no cluster of their own keep their cells.
5. ``neutrophil_state_rule`` records which rule made each call (``cell``, ``cluster``, ``default``,
   ``ambiguous``; with ``cells="own"``: ``cell``, ``default`` or ``ambiguous``, step 6).
6. With ``cells="own"`` (the default, ``state_cells``), steps 2-4 calibrate each state's cut and each
   cell's own, unsmoothed z decides: a state's cut is the z (before smoothing) of its n-th highest cell,
   n the cells steps 2-4 gave it (raised past a tie that would admit more than n: a score of one detected gene
   is the same in every cell that lacks it); a cell above one cut takes that state (rule ``cell``), above several the
   one it exceeds most (``ambiguous`` and unassigned when the two excesses are within
   ``state_min_margin``), above none the default state, which has no cut (rule ``default``). Smoothing
   denoises how many cells a state holds, but it halves the evidence of a cell whose neighbours are in
   another state (side states that form no compartment of the latent); with the same scores and counts,
   state macro-F1 rose on all 12 simulator runs and the 4 independent cohorts (``benchmarks/robustness.md``,
   stop 28). A state whose top cells a clearer state takes is not refilled from its next cells: filling
   every state to its count lost 0.006-0.026 on the independent cohorts, where the counts run high, and
   gained 0.03 on the demo, where a refined interferon programme also scores the T3 cells. ``cells="smoothed"``
   keeps steps 2-4's calls.
7. A cluster of the neutrophil sub-atlas takes the majority state of its cells (ignoring
   unassigned), with its share.
8. ``neutrophil_state_confidence`` is each call's probability of being right, from each state's count and its
   score's reliability (:mod:`atlas.analyse.state_posterior`: the true score given the observed one); the mean over
   a state's calls is its expected precision. It reads each cell's own z, whichever rule chose the cells. Without
   reliabilities it is the squashed margin (:func:`state_confidence`), which ranks calls but is no probability.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .celltypes import cluster_order
from .state_posterior import call_confidence, state_probabilities, true_score_cuts

__all__ = [
    "UNASSIGNED",
    "assign_states",
    "calls_at_cuts",
    "cluster_shrinkage",
    "smooth_on_graph",
    "smoothing_noise_factor",
    "state_confidence",
    "state_clusters",
    "state_scores",
]

UNASSIGNED = "unassigned"


def state_scores(scores: pd.DataFrame, state_signatures: dict[str, list[str]]) -> pd.DataFrame:
    """Cells x states: the mean of each state's signature score columns."""
    return pd.DataFrame(
        {state: scores[list(sigs)].mean(axis=1) for state, sigs in state_signatures.items()},
        index=scores.index,
    )


def smooth_on_graph(values: np.ndarray, connectivities: sp.spmatrix | None, steps: int) -> np.ndarray:
    """``steps`` lazy random-walk steps of ``values`` (cells x k) over a kNN graph."""
    if connectivities is None or steps <= 0:
        return values
    w = sp.csr_matrix(connectivities, dtype=np.float64)
    deg = np.asarray(w.sum(axis=1)).ravel()
    deg[deg == 0] = 1.0
    w = sp.diags(1.0 / deg) @ w
    out = values
    for _ in range(steps):
        out = 0.5 * out + 0.5 * (w @ out)
    return out


def smoothing_noise_factor(connectivities: sp.spmatrix | None, steps: int, n: int) -> np.ndarray:
    """Per cell, the share of independent per-cell noise variance left after :func:`smooth_on_graph`
    (the row sums of the squared smoothing operator; 1 without smoothing)."""
    if connectivities is None or steps <= 0:
        return np.ones(n)
    w = sp.csr_matrix(connectivities, dtype=np.float64)
    deg = np.asarray(w.sum(axis=1)).ravel()
    deg[deg == 0] = 1.0
    step = 0.5 * sp.identity(n, format="csr") + 0.5 * (sp.diags(1.0 / deg) @ w)
    op = sp.identity(n, format="csr")
    for _ in range(steps):
        op = step @ op
    return np.asarray(op.multiply(op).sum(axis=1)).ravel()


def cluster_shrinkage(
    z: np.ndarray, clusters: np.ndarray, reliability: np.ndarray, noise_factor: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Kelley shrinkage of ``z`` (cells x states) towards cluster means (see the module notes).

    Parameters
    ----------
    z
        (Smoothed) z-scores to shrink; the unsmoothed z-scores have unit variance over the cells.
    clusters
        Cluster label per cell.
    reliability
        Per state, the split-half reliability of its score. NaN or not above 0 (a reliability clipped to 0: split
        halves that did not correlate, a signature of two or three sparse genes) estimates nothing: no shrinkage
        for that state.
    noise_factor
        Per cell, the share of the unsmoothed noise variance left in ``z``
        (:func:`smoothing_noise_factor`; ``None``: 1, unsmoothed).

    Returns
    -------
    evidence, k
        The shrunk evidence and the per-state factor ``k`` kept of each cell's own deviation.
    """
    codes, _ = pd.factorize(np.asarray(clusters))
    n_cl = codes.max() + 1
    counts = np.bincount(codes, minlength=n_cl).astype(np.float64)
    sums = np.stack([np.bincount(codes, weights=z[:, j], minlength=n_cl) for j in range(z.shape[1])], axis=1)
    m = (sums / counts[:, None])[codes]
    var_w = ((z - m) ** 2).mean(axis=0)
    factor = float(np.mean(noise_factor)) if noise_factor is not None else 1.0
    rel = np.asarray(reliability, dtype=np.float64)
    noise = np.where(rel > 0, 1.0 - rel, np.nan) * factor  # NaN > 0 is False: not estimated either way
    k = np.ones(z.shape[1])
    ok = np.isfinite(noise) & (var_w > 0)
    k[ok] = np.clip(1.0 - noise[ok] / var_w[ok], 0.0, 1.0)
    return m + k * (z - m), k


def _call(z: np.ndarray, states: list[str], min_z: float, min_margin: float):
    """Best state where it reaches ``min_z`` and beats the second by ``min_margin`` (rule ``cell``);
    ``default`` where no state reaches ``min_z``; else ``ambiguous``. Also the top two values."""
    order = np.argsort(-z, axis=1)
    rows = np.arange(len(z))
    top = z[rows, order[:, 0]]
    second = z[rows, order[:, 1]] if len(states) > 1 else np.full(len(z), -np.inf)
    label = np.full(len(z), UNASSIGNED, dtype=object)
    rule = np.full(len(z), "ambiguous", dtype=object)
    with np.errstate(invalid="ignore"):  # -inf - -inf: no state has evidence (such a cell is below min_z)
        clear = (top >= min_z) & (top - second >= min_margin)
    label[clear] = np.asarray(states, dtype=object)[order[clear, 0]]
    rule[clear] = "cell"
    rule[top < min_z] = "default"
    return label, rule, top, second


def assign_states(
    state_score: pd.DataFrame,
    *,
    connectivities: sp.spmatrix | None = None,
    smoothing_steps: int = 1,
    min_z: float = 0.5,
    min_margin: float = 0.25,
    default_state: str | None = "mature",
    clusters: pd.Series | np.ndarray | None = None,
    reliability: dict[str, float] | None = None,
    cells: str = "own",
    shrink: bool = True,
) -> pd.DataFrame:
    """Assign a state to each neutrophil (rule in the module notes).

    Parameters
    ----------
    state_score
        Neutrophils x states (:func:`state_scores`).
    connectivities, smoothing_steps
        The neutrophil kNN graph and the random-walk steps of smoothing over it.
    min_z, min_margin
        The best state's evidence must reach ``min_z`` and beat the second best by ``min_margin``.
    default_state
        State of cells with no evidence reaching ``min_z``: a name, ``"auto"`` (chosen from the data)
        or ``None`` (unassigned).
    clusters, reliability
        Cluster label per neutrophil and split-half reliability per state: cluster shrinkage; the reliability also
        makes the confidence a calibrated probability (step 8 of the module notes).
    cells
        ``"own"``: the smoothed rule sets how many cells each state holds, each cell's own evidence which
        (step 6 of the module notes); ``"smoothed"``: the smoothed rule's calls.
    shrink
        Step 3 reads each state's smoothed z shrunk towards the neutrophils' mean by its ``reliability`` (step 3 of
        the module notes); False: the smoothed z as it is.

    Returns
    -------
    pandas.DataFrame
        ``neutrophil_state``, ``neutrophil_state_confidence``, ``neutrophil_state_rule`` and
        ``state_z_<state>`` (the smoothed z); ``attrs["default_state"]``, ``attrs["evidence_weight"]`` (per state,
        the share of its smoothed z step 3 keeps) and ``attrs["cluster_weight"]`` (per state, ``1 - k``) record the
        data-dependent parts of the rule, ``attrs["z_loc"]`` / ``attrs["z_scale"]`` (per state) the mean and standard
        deviation that standardised its score; with ``cells="own"`` also
        ``attrs["cell_cuts"]`` (per state, the cut on its unsmoothed z; NaN: no cell, or the default state); with
        ``reliability``, ``attrs["true_score_cuts"]`` (per state, the cut on the true-score scale its confidence reads;
        NaN: no cell, no reliability, or the default state; -inf: it holds every cell) and ``attrs["expected_precision"]`` (per called state, the
        mean confidence of its calls).
    """
    if cells not in ("own", "smoothed"):
        raise ValueError(f"cells={cells!r}: use 'own' or 'smoothed'")
    states = list(state_score.columns)
    x = state_score.to_numpy(dtype=np.float64)
    mu, sd = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    sd[~(sd > 0)] = 1.0
    z_raw = np.nan_to_num((x - mu) / sd)
    z = smooth_on_graph(z_raw, connectivities, smoothing_steps)
    evidence, kept, k = z, np.ones(len(states)), np.ones(len(states))
    if reliability is not None:
        rel = np.array([reliability.get(st, np.nan) for st in states], dtype=np.float64)
        noise = smoothing_noise_factor(connectivities, smoothing_steps, len(z))
        if shrink:  # step 3: one "cluster" of all neutrophils
            everyone = np.zeros(len(z), dtype=np.int64)
            evidence, kept = cluster_shrinkage(z, everyone, rel, noise)
    label, rule, top, second = _call(evidence, states, min_z, min_margin)
    if clusters is not None and reliability is not None:
        # cluster evidence settles the cells whose own evidence is ambiguous (two programmes close)
        shrunk, k = cluster_shrinkage(z, np.asarray(clusters), rel, noise)
        amb = rule == "ambiguous"
        c_label, c_rule, _, _ = _call(shrunk[amb], states, min_z, min_margin)
        settled = c_rule == "cell"
        label[np.flatnonzero(amb)[settled]] = c_label[settled]
        rule[np.flatnonzero(amb)[settled]] = "cluster"
    low = rule == "default"
    if default_state == "auto":
        default_state = states[int(np.argmax(z[low].mean(axis=0)))] if low.any() else None
    cuts = None
    if cells == "own":
        label, rule, margin, cuts = _own_evidence_calls(z_raw, label, states, default_state, min_margin)
    else:
        _label_default(label, rule, default_state)
        margin = top - second
    if reliability is not None:  # calibrated: each call's probability from its score's reliability
        counts = [0 if st == default_state else int(np.sum(label == st)) for st in states]
        tau = true_score_cuts(z_raw, rel, counts)
        conf = call_confidence(label, states, default_state, state_probabilities(z_raw, rel, tau))
    else:
        conf, tau = state_confidence(margin), None
    cats = list(dict.fromkeys([*states, *([default_state] if default_state else []), UNASSIGNED]))
    out = pd.DataFrame(
        {"neutrophil_state": pd.Categorical(label, categories=cats), "neutrophil_state_confidence": conf,
         "neutrophil_state_rule": pd.Categorical(rule, categories=["cell", "cluster", "default", "ambiguous"])},
        index=state_score.index,
    )  # fmt: skip
    for j, st in enumerate(states):
        out[f"state_z_{st}"] = z[:, j]
    out.attrs["default_state"] = default_state
    out.attrs["z_loc"] = {st: float(mu[j]) for j, st in enumerate(states)}  # the z's centre and scale: a query's
    out.attrs["z_scale"] = {st: float(sd[j]) for j, st in enumerate(states)}  # cells are read in these units
    out.attrs["evidence_weight"] = {st: float(kept[j]) for j, st in enumerate(states)}
    out.attrs["cluster_weight"] = {st: float(1.0 - k[j]) for j, st in enumerate(states)}
    if tau is not None:
        out.attrs["true_score_cuts"] = {st: float(t) if t < np.inf else float("nan") for st, t in zip(states, tau, strict=True)}
        out.attrs["expected_precision"] = {st: float(conf[label == st].mean()) for st in states if np.any(label == st)}
    if cuts is not None:
        out.attrs["cell_cuts"] = {st: float(c) if np.isfinite(c) else float("nan") for st, c in zip(states, cuts, strict=True)}
    return out


def state_confidence(margin: np.ndarray) -> np.ndarray:
    """How far a cell's evidence is from another call, squashed to 0-1 (0 = a tie, ~1 = clear): it ranks the calls
    but is no probability (:mod:`atlas.analyse.state_posterior` is; this serves calls made without reliabilities)."""
    return 1.0 - np.exp(-np.maximum(margin, 0.0))


def _label_default(label: np.ndarray, rule: np.ndarray, default_state: str | None) -> None:
    """Cells of rule ``default`` take ``default_state``; without one they stay unassigned, rule ``ambiguous``."""
    low = rule == "default"
    label[low] = default_state if default_state is not None else UNASSIGNED
    if default_state is None:
        rule[low] = "ambiguous"


def _cut_at(z: np.ndarray, count: int) -> float:
    """The z of the ``count``-th highest cell, raised to the next higher value when cells tied with it would
    admit more than ``count`` (a score of one or two detected genes is the same in every cell that lacks them);
    inf when no cut admits any cell without exceeding ``count``."""
    cut = np.sort(z)[len(z) - count]
    if np.sum(z >= cut) > count:
        higher = z[z > cut]
        cut = float(higher.min()) if higher.size else np.inf
    return float(cut)


def _own_evidence_calls(
    z_own: np.ndarray, smoothed_label: np.ndarray, states: list[str], default_state: str | None, min_margin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 6 of the module notes: each state's cut is the ``z_own`` of its n-th highest cell, n the cells
    ``smoothed_label`` gives it (the default state has none; a cut never admits more than n, :func:`_cut_at`).
    Returns labels, rules, margins (how far each cell's evidence is from another call) and the cuts (inf: no
    cell)."""
    cut = np.full(len(states), np.inf)
    for j, st in enumerate(states):
        count = int(np.sum(smoothed_label == st))
        if st != default_state and count:
            cut[j] = _cut_at(z_own[:, j], count)
    label, rule, margin = calls_at_cuts(z_own, cut, states, default_state, min_margin)
    return label, rule, margin, cut


def calls_at_cuts(
    z_own: np.ndarray, cut: np.ndarray, states: list[str], default_state: str | None, min_margin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """States of cells from their own z (cells x ``states``) at fixed per-state cuts (inf or NaN: the state takes
    no cell): above one cut that state (rule ``cell``), above several the one exceeded most (``ambiguous`` within
    ``min_margin``), above none ``default_state`` (``default``). Returns labels, rules and margins. The analysis
    sets the cuts on the atlas's neutrophils (step 6 of the module notes); a query reuses them on its own cells."""
    cut = np.where(np.isnan(cut), np.inf, cut)
    excess = np.where(np.isfinite(cut), z_own - cut, -np.inf)
    # above a cut or not at all: a cell above one cut is clear whatever its other excesses
    label, rule, top, second = _call(np.where(excess >= 0, excess, -np.inf), states, 0.0, min_margin)
    _label_default(label, rule, default_state)
    # a called cell: its excess over its cut, less any other state's it also exceeds (a tie: that lead); the
    # rest: how far below the nearest cut
    with np.errstate(invalid="ignore"):
        margin = np.where(top >= 0, np.minimum(top, top - second), -excess.max(axis=1))
    return label, rule, margin


def state_clusters(states: pd.DataFrame, clusters: pd.Series, state_score: pd.DataFrame) -> pd.DataFrame:
    """Per cluster: size, majority state (unassigned ignored), its share and the mean state scores."""
    df = pd.DataFrame(
        {"cluster": clusters.astype(str).to_numpy(), "state": states["neutrophil_state"].astype(str)}
    )
    rows = []
    groups = dict(list(df.groupby("cluster", sort=False)))
    for cl in cluster_order(groups):
        grp = groups[cl]
        counts = grp.loc[grp["state"] != UNASSIGNED, "state"].value_counts()
        state = counts.index[0] if len(counts) else UNASSIGNED
        share = float(counts.iloc[0] / len(grp)) if len(counts) else 0.0
        row = {"neutrophil_leiden": cl, "n_cells": len(grp), "state": state, "state_fraction": share}
        row.update({f"mean_{c}": float(state_score.loc[grp.index, c].mean()) for c in state_score.columns})
        rows.append(row)
    return pd.DataFrame(rows)
