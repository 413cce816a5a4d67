"""Neutrophil states: per-cell and per-cluster assignment from state signature scores.

Rule (all thresholds in :class:`atlas.analysis.AnalysisSettings`):

1. A state's score is the mean of its signatures' scores; each is standardised within neutrophils (z).
2. The z-scores are averaged over the neutrophil kNN graph (``state_smoothing_steps`` lazy random-walk
   steps: half the cell, half its neighbours), which tames the dropout of low-UMI neutrophils.
3. A cell takes its best state when that z reaches ``state_min_z`` and beats the second best by
   ``state_min_margin``; a cell with no state reaching ``state_min_z`` takes ``default_state``
   (mature, blood-like, by default); anything else (two states close) is ``unassigned``.
4. A cluster of the neutrophil sub-atlas takes the majority state of its cells (ignoring
   unassigned), with its share.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .celltypes import cluster_order

__all__ = ["UNASSIGNED", "assign_states", "smooth_on_graph", "state_clusters", "state_scores"]

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


def assign_states(
    state_score: pd.DataFrame,
    *,
    connectivities: sp.spmatrix | None = None,
    smoothing_steps: int = 1,
    min_z: float = 0.5,
    min_margin: float = 0.25,
    default_state: str | None = "mature",
) -> pd.DataFrame:
    """Per neutrophil: ``neutrophil_state``, ``neutrophil_state_confidence`` and ``state_z_<state>``."""
    states = list(state_score.columns)
    x = state_score.to_numpy(dtype=np.float64)
    mu, sd = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    sd[~(sd > 0)] = 1.0
    z = smooth_on_graph(np.nan_to_num((x - mu) / sd), connectivities, smoothing_steps)
    order = np.argsort(-z, axis=1)
    best = order[:, 0]
    top = z[np.arange(len(z)), best]
    second = z[np.arange(len(z)), order[:, 1]] if len(states) > 1 else np.full(len(z), -np.inf)
    label = np.full(len(z), UNASSIGNED, dtype=object)
    clear = (top >= min_z) & (top - second >= min_margin)
    label[clear] = np.asarray(states, dtype=object)[best[clear]]
    if default_state is not None:
        label[top < min_z] = default_state
    # confidence: the margin of the winner, squashed to 0-1 (0 = tie, ~1 = one clear programme)
    conf = 1.0 - np.exp(-np.maximum(top - second, 0.0))
    cats = list(dict.fromkeys([*states, *([default_state] if default_state else []), UNASSIGNED]))
    out = pd.DataFrame(
        {"neutrophil_state": pd.Categorical(label, categories=cats), "neutrophil_state_confidence": conf},
        index=state_score.index,
    )
    for j, s in enumerate(states):
        out[f"state_z_{s}"] = z[:, j]
    return out


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
