"""Cell types and neutrophils: per-cell marker evidence combined with a vote of the cell's cluster.

Each cell type's markers are scored per cell (scanpy's mean-minus-control score), standardised over
all cells (z), and turned into per-cell probabilities with a softmax. A cluster of the integrated
graph gets the mean probabilities of its cells (a soft vote). The confidence of a type for a cell
is ``w * cluster vote + (1 - w) * own probability``; the cell takes the type with the highest
confidence. A neutrophil needs neutrophil as its type *and* a confidence of at least
``min_neutrophil_confidence``: a monocyte or an epithelial doublet inside a neutrophil cluster
keeps its own evidence and is left out, and a neutrophil with few UMIs in a neutrophil cluster is
carried by its cluster.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["SOFTMAX_BETA", "annotate_cell_types", "cluster_order", "neutrophil_yield"]

SOFTMAX_BETA = 2.0  # sharpness of the per-cell softmax over marker z-scores


def cluster_order(labels) -> list:
    """Cluster labels in reading order: numeric labels (Leiden's "0", "1", ..., "10") by number, then the rest."""
    def key(x):
        t = str(x)
        return (0, int(t), "") if t.isdigit() else (1, 0, t)

    return sorted(labels, key=key)


def _standardise(scores: pd.DataFrame) -> pd.DataFrame:
    x = scores.to_numpy(dtype=np.float64)
    mu = np.nanmean(x, axis=0)
    sd = np.nanstd(x, axis=0)
    sd[~(sd > 0)] = 1.0
    z = np.nan_to_num((x - mu) / sd, nan=0.0)
    return pd.DataFrame(z, index=scores.index, columns=scores.columns)


def _softmax(z: np.ndarray, beta: float) -> np.ndarray:
    e = np.exp(beta * (z - z.max(axis=1, keepdims=True)))
    return e / e.sum(axis=1, keepdims=True)


def annotate_cell_types(
    marker_scores: pd.DataFrame,
    clusters: pd.Series,
    *,
    cluster_weight: float = 0.5,
    min_neutrophil_confidence: float = 0.5,
    min_type_margin: float = 0.0,
    beta: float = SOFTMAX_BETA,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Assign a cell type and a neutrophil call to every cell.

    Parameters
    ----------
    marker_scores
        Cells x cell types: marker scores (column names are the cell types; one must be ``neutrophil``).
    clusters
        Cluster of each cell (same index), e.g. Leiden on the scVI graph.
    cluster_weight
        Weight of the cluster's soft vote in the confidence (0 = markers only, 1 = cluster only).
    min_neutrophil_confidence
        ``is_neutrophil`` needs at least this confidence for neutrophil.
    min_type_margin
        A cell whose best type's z beats the second by less than this is ``unknown``.
    beta
        Sharpness of the per-cell softmax over marker z-scores.

    Returns
    -------
    ``(cells, clusters)``: per cell ``cell_type``, ``cell_type_confidence``, ``is_neutrophil``,
    ``neutrophil_confidence`` and one ``marker_z_<type>`` column per type; per cluster its size,
    voted type and vote share.
    """
    types = list(marker_scores.columns)
    z = _standardise(marker_scores)
    prob = _softmax(z.to_numpy(), beta)
    codes, uniques = pd.factorize(clusters.astype(str).to_numpy(), sort=True)
    n_clusters = len(uniques)
    sums = np.zeros((n_clusters, len(types)))
    np.add.at(sums, codes, prob)
    sizes = np.bincount(codes, minlength=n_clusters)
    vote = sums / np.maximum(sizes, 1)[:, None]
    conf = cluster_weight * vote[codes] + (1 - cluster_weight) * prob
    best = conf.argmax(axis=1)
    cell_type = np.asarray(types, dtype=object)[best]
    zz = np.sort(z.to_numpy(), axis=1)
    if min_type_margin > 0 and len(types) > 1:
        cell_type[(zz[:, -1] - zz[:, -2]) < min_type_margin] = "unknown"
    neut = types.index("neutrophil")
    neut_conf = conf[:, neut]
    is_neut = (best == neut) & (neut_conf >= min_neutrophil_confidence) & (cell_type != "unknown")
    cells = pd.DataFrame(
        {
            "cell_type": pd.Categorical(cell_type, categories=[*types, "unknown"]),
            "cell_type_confidence": conf.max(axis=1),
            "is_neutrophil": is_neut,
            "neutrophil_confidence": neut_conf,
        },
        index=marker_scores.index,
    )
    for j, t in enumerate(types):
        cells[f"marker_z_{t}"] = z.iloc[:, j].to_numpy()
    table = pd.DataFrame(
        {
            "cluster": uniques,
            "n_cells": sizes,
            "cell_type": np.asarray(types)[vote.argmax(axis=1)],
            "vote_share": vote.max(axis=1),
            "neutrophil_vote": vote[:, neut],
        }
    )
    table = table.set_index("cluster").loc[cluster_order(uniques)].reset_index()
    return cells, table


def neutrophil_yield(obs: pd.DataFrame) -> pd.DataFrame:
    """Neutrophils found per data set and platform (platforms differ a lot in neutrophil capture)."""
    g = obs.groupby(["dataset_id", "platform"], observed=True, sort=True)
    out = g.agg(n_cells=("is_neutrophil", "size"), n_neutrophils=("is_neutrophil", "sum")).reset_index()
    out["neutrophil_fraction"] = out["n_neutrophils"] / out["n_cells"]
    return out
