"""Label transfer with uncertainty and placement on the reference UMAP, from neighbours in the latent space
(``atlas query``, and the analysis's audit of the cells QC removed, :mod:`atlas.analyse.qc_audit`).

For every query cell the ``k`` nearest reference cells in the shared latent space (Euclidean, exact
search with scikit-learn) are weighted as in scArches' ``weighted_knn_transfer`` (Lotfollahi et al.
2022; the scvi-tools/scArches tutorials): ``w_j = exp(-d_j / (2 / s)^2)``, normalised, with ``s`` the
standard deviation of the cell's ``k`` distances.

* **Label**: the label with the largest summed weight; *vote uncertainty* = 1 - its weight share.
* **Distance uncertainty** (``distance_uncertainty``): a query cell far from every reference cell
  sits in a region the reference does not cover (a cell type absent from it), even when its
  neighbours agree. The mean distance to its ``k`` neighbours is compared with the same statistic of
  reference cells of the winning label (leave-one-out, on a seeded subsample): it is 0 up to their
  median, 0.5 at their ``distance_quantile`` quantile and 1 at twice that excess.
* **Uncertainty** = max(vote, distance); above ``uncertainty_threshold`` the cell is ``unknown``.
* **UMAP placement**: the same weighted average of the neighbours' reference UMAP coordinates (the
  reference UMAP is not refitted; a cell between two populations lands between them).
* **Neutrophil state**: the same vote among reference neutrophils only, for query cells labelled
  neutrophil.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["KnnReference", "knn_weights", "transfer_labels"]

log = logging.getLogger(__name__)

MIN_CALIBRATION = 20  # reference cells of a label below which the distance term uses all labels


def knn_weights(distances: np.ndarray) -> np.ndarray:
    """scArches' neighbour weights: ``exp(-d / (2 / std(d))^2)`` per row, normalised to sum 1."""
    d = np.asarray(distances, dtype=np.float64)
    std = d.std(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        scale = np.where(std > 0, (2.0 / np.maximum(std, 1e-12)) ** 2, np.inf)
    w = np.exp(-d / scale)
    return w / w.sum(axis=1, keepdims=True)


@dataclass
class KnnReference:
    """Reference cells with labels, indexed for neighbour search in the latent space."""

    latent: np.ndarray
    labels: np.ndarray  # str per reference cell
    k: int

    def __post_init__(self):
        from sklearn.neighbors import NearestNeighbors

        self.k = int(min(self.k, len(self.latent)))
        self.classes, self.codes = np.unique(self.labels.astype(str), return_inverse=True)
        self.nn = NearestNeighbors(n_neighbors=self.k).fit(self.latent)

    def neighbours(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d, i = self.nn.kneighbors(np.asarray(x, dtype=np.float32), n_neighbors=self.k)
        return d, i

    def vote(self, d: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Winning class index and its weight share per row."""
        w = knn_weights(d)
        probs = np.zeros((len(d), len(self.classes)))
        np.add.at(probs, (np.repeat(np.arange(len(d)), d.shape[1]), self.codes[i].ravel()), w.ravel())
        best = probs.argmax(axis=1)
        return best, probs[np.arange(len(d)), best]

    def calibration(self, n_cells: int, quantile: float, seed: int) -> dict[str, tuple[float, float]]:
        """Per label (and ``""`` for all): median and ``quantile`` of reference cells' mean kNN distance."""
        rng = np.random.default_rng(seed)
        n = len(self.latent)
        idx = np.sort(rng.choice(n, size=min(n_cells, n), replace=False))
        k = min(self.k + 1, n)
        d, i = self.nn.kneighbors(self.latent[idx], n_neighbors=k)
        self_hit = i == idx[:, None]
        # drop the cell itself (or the farthest neighbour when a duplicate took its place)
        drop = np.where(self_hit.any(axis=1), self_hit.argmax(axis=1), k - 1)
        keep = np.ones_like(d, dtype=bool)
        keep[np.arange(len(idx)), drop] = False
        mean_d = d[keep].reshape(len(idx), k - 1).mean(axis=1) if k > 1 else np.zeros(len(idx))
        out = {"": (float(np.median(mean_d)), float(np.quantile(mean_d, quantile)))}
        labels = self.labels[idx].astype(str)
        for lab in np.unique(labels):
            m = mean_d[labels == lab]
            if len(m) >= MIN_CALIBRATION:
                out[lab] = (float(np.median(m)), float(np.quantile(m, quantile)))
        return out


def distance_term(mean_d: np.ndarray, labels: np.ndarray, calib: dict[str, tuple[float, float]]) -> np.ndarray:
    """0 below the label's median reference distance, 0.5 at its high quantile, 1 at twice that excess."""
    med = np.array([calib.get(lab, calib[""])[0] for lab in labels])
    hi = np.array([calib.get(lab, calib[""])[1] for lab in labels])
    span = np.maximum(hi - med, 1e-9)
    return np.clip(0.5 * (mean_d - med) / span, 0.0, 1.0)


def transfer_labels(
    ref_latent: np.ndarray,
    ref_labels: np.ndarray,
    query_latent: np.ndarray,
    *,
    k: int = 15,
    threshold: float = 0.5,
    unknown: str = "unknown",
    distance_uncertainty: bool = True,
    distance_quantile: float = 0.99,
    calibration_cells: int = 20_000,
    ref_umap: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Labels of query cells from their reference neighbours, with uncertainty.

    Parameters
    ----------
    ref_latent, ref_labels
        Reference cells' latent coordinates and labels (cells with a missing label left out by the caller).
    query_latent
        Query cells in the same latent space.
    k, threshold, unknown, distance_uncertainty, distance_quantile, calibration_cells, seed
        See the module docstring and :class:`~atlas.query.settings.QuerySettings`.
    ref_umap
        Reference UMAP coordinates; when given, the query's placement is returned too.

    Returns
    -------
    ``(table, umap)``: per query cell ``label`` (``unknown`` above the threshold), ``best_label`` (the
    winner regardless), ``vote_uncertainty``, ``distance_uncertainty``, ``uncertainty``,
    ``mean_distance``; and the UMAP placement (or ``None``).
    """
    knn = KnnReference(np.asarray(ref_latent, dtype=np.float32), np.asarray(ref_labels).astype(str), k)
    d, i = knn.neighbours(query_latent)
    best, share = knn.vote(d, i)
    best_label = knn.classes[best]
    u_vote = 1.0 - share
    mean_d = d.mean(axis=1)
    if distance_uncertainty and len(ref_latent) > 1:
        calib = knn.calibration(calibration_cells, distance_quantile, seed)
        u_dist = distance_term(mean_d, best_label, calib)
    else:
        u_dist = np.zeros(len(d))
    u = np.maximum(u_vote, u_dist)
    label = np.where(u > threshold, unknown, best_label)
    table = pd.DataFrame({"label": label, "best_label": best_label, "vote_uncertainty": u_vote,
                          "distance_uncertainty": u_dist, "uncertainty": u, "mean_distance": mean_d})  # fmt: skip
    umap = None
    if ref_umap is not None:
        w = knn_weights(d)
        umap = np.einsum("nk,nkj->nj", w, np.asarray(ref_umap, dtype=np.float64)[i]).astype(np.float32)
    return table, umap
