"""The reprogramming index: one continuous axis from blood-like to T3-like neutrophils.

The index of a cell is ``(sum_up w_s * score_s - sum_down w_s * score_s - loc) / scale`` over signature
scores of one method (by default the scanpy mean-minus-control scores of ``T3_proxy`` (up) and
``blood_like`` (down)). ``loc`` and ``scale`` are fitted once on the reference neutrophils (their 1st
percentile and the 1st-99th percentile span), so 0 is about the most blood-like and 1 about the
most T3-like reference neutrophil. The fitted axis, weights included, is stored with the atlas
(``uns["reprogramming_axis"]``) and applied unchanged to query data sets, so an index means the same
thing in the atlas and in every query.

Weights: reliability-weighted, so a signature that is mostly noise at this depth barely counts
------------------------------------------------------------------------------------------------
A signature score is a noisy measurement; at low depth, or where the data's programme only partly
overlaps the signature's genes, subtracting a noisy ``down`` score makes the index *worse* than the
``up`` score alone. The weights come from a one-factor model of the standardised scores ``x_s``
(z within the reference neutrophils), fitted on the neutrophils at hand, no labels involved:

1. **Reliability** ``r_s`` of each signature (:func:`signature_reliability`): split-half reliability
   across random halves of its genes (log-normalised expression of the neutrophils; each half-score
   freed of the cells' log library size, which otherwise makes every gene set look coherent),
   Spearman-Brown corrected and averaged over splits. ``r_s`` is the share of the score's variance
   that is signal rather than sampling noise.
2. **Up side**: an ``up`` signature measures the T3 axis by definition, so its loading is
   ``l_s = sqrt(r_s)`` and its noise variance ``1 - r_s``. A programme learned from the data seeded by an
   ``up`` signature (its *anchor*, :mod:`atlas.analyse.refine`) also takes genes that move along the
   neutrophils' main trajectory rather than with the signature's programme, so it counts only with the part of
   its signal its anchor shares: ``rho_s = corr(x_s, x_anchor) / sqrt(r_s r_anchor)`` clipped to [0, 1],
   loading ``l_s = sqrt(r_s) * rho_s`` (``rho_s`` is 1 when the anchor carries no signal to compare with).
   The up composite ``U`` is ``sum l_s / (1 - l_s**2) * x_s`` and its reliability ``r_U`` follows from the
   same model (noise variance ``1 - l_s**2`` per score).
3. **Down side**: a ``down`` signature counts only with the part of its signal that lies on the
   axis: its disattenuated correlation with the up composite, ``rho_s = -corr(x_s, U) /
   sqrt(r_s r_U)`` clipped to [0, 1], gives the loading ``l_s = sqrt(r_s) * rho_s``.
4. Weight of each signature = loading / noise variance, ``l_s / (1 - l_s**2)`` (the factor-score
   weight, an inverse-noise weighting; ~``sqrt(r)`` for a weak, ~``r/(1-r)``-like growth for a strong
   signature), divided by the score's standard deviation so it applies to raw scores.

A ``down`` score that is noise (``r_s`` ~ 0) or unrelated to the up side (``rho_s`` ~ 0) thus gets a
weight of ~0 and the index ranks cells as the up score alone does; a reliable, anti-correlated
``down`` score sharpens it. Without gene-level data (or for a signature outside the registry), the
fit falls back to the plain mean difference (``weighting: "equal"``), as do axes stored by earlier
versions (no ``weights`` field).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import AtlasError
from .expression import log_normalised

__all__ = [
    "ReprogrammingAxis",
    "apply_reprogramming_axis",
    "factor_weights",
    "fit_reprogramming_axis",
    "signature_reliabilities",
    "signature_reliability",
]

#: reliabilities are clipped to this (a perfectly reliable score would get an infinite weight)
MAX_RELIABILITY = 0.95
#: random gene splits averaged per signature
N_SPLITS = 20


@dataclass(frozen=True)
class ReprogrammingAxis:
    """A fitted blood-like -> T3-like axis over signature score columns.

    ``weights`` maps each up/down score column to its (positive) coefficient on the raw score; empty
    means the plain ``mean(up) - mean(down)`` of axes from earlier versions. ``extra`` records how the
    weights were fitted (reliabilities, loadings, the rule). ``programmes`` holds, per up/down column that is
    a programme learned from the data rather than a registry signature, its genes and weights
    (:meth:`atlas.analyse.refine.Programme.to_dict`), so a query computes the same column.
    """

    up: tuple[str, ...] = ("T3_proxy",)
    down: tuple[str, ...] = ("blood_like",)
    loc: float = 0.0
    scale: float = 1.0
    method: str = "scanpy"  # scoring method the scores came from
    weights: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    programmes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON/HDF5-friendly dict (for ``uns``)."""
        return {"up": list(self.up), "down": list(self.down), "loc": self.loc, "scale": self.scale,
                "method": self.method, "weights": {k: float(v) for k, v in self.weights.items()},
                "extra": _plain_dict(self.extra), "programmes": _plain_dict(self.programmes)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> ReprogrammingAxis:
        """Read back what :meth:`to_dict` wrote (also from an AnnData ``uns`` entry, or an older axis)."""
        try:
            return cls(
                up=tuple(str(x) for x in np.atleast_1d(d["up"])),
                down=tuple(str(x) for x in np.atleast_1d(d["down"])),
                loc=float(d["loc"]),
                scale=float(d["scale"]),
                method=str(d.get("method", "scanpy")),
                weights={str(k): float(v) for k, v in dict(d.get("weights") or {}).items()},
                extra=dict(d.get("extra") or {}),
                programmes={str(k): dict(v) for k, v in dict(d.get("programmes") or {}).items()},
            )
        except KeyError as e:
            raise AtlasError(
                f"reprogramming axis is missing the field {e}; rebuild the atlas with this atlas version"
            ) from e

    def coefficients(self) -> dict[str, float]:
        """Signed coefficient of each score column (up positive, down negative)."""
        if not self.weights:  # an axis of an earlier version: mean(up) - mean(down)
            out = {c: 1.0 / len(self.up) for c in self.up}
            out.update({c: -1.0 / len(self.down) for c in self.down})
            return out
        missing = [c for c in (*self.up, *self.down) if c not in self.weights]
        if missing:
            raise AtlasError(f"reprogramming axis has no weight for {missing}; rebuild the atlas")
        return {**{c: self.weights[c] for c in self.up}, **{c: -self.weights[c] for c in self.down}}


def _plain_dict(d: dict) -> dict:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[str(k)] = _plain_dict(v)
        elif isinstance(v, (np.floating, np.integer)):
            out[str(k)] = v.item()
        elif v is not None:
            out[str(k)] = v
    return out


def _check_columns(scores: pd.DataFrame, up: tuple[str, ...], down: tuple[str, ...]) -> None:
    missing = [c for c in (*up, *down) if c not in scores.columns]
    if missing:
        raise AtlasError(
            f"reprogramming index needs the score column(s) {missing}; score these signatures first "
            f"(atlas score --signatures {','.join(missing)}) or change analysis.reprogramming_up/down"
        )
    if not up:
        raise AtlasError("reprogramming index needs at least one 'up' (T3-like) signature")


def _raw_axis(scores: pd.DataFrame, axis: ReprogrammingAxis) -> np.ndarray:
    _check_columns(scores, axis.up, axis.down)
    coef = axis.coefficients()
    cols = list(coef)
    return scores[cols].to_numpy(dtype=np.float64) @ np.array([coef[c] for c in cols])


# --- reliability -------------------------------------------------------------------------------


def _residualise(y: np.ndarray, covariate: np.ndarray | None) -> np.ndarray:
    """``y`` (cells x k) minus its least-squares fit on ``[1, covariate]``."""
    if covariate is None:
        return y - y.mean(axis=0)
    design = np.column_stack([np.ones_like(covariate), covariate])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    return y - design @ beta


def signature_reliability(
    expr: np.ndarray, *, log_depth: np.ndarray | None = None, n_splits: int = N_SPLITS, seed: int = 0,
    weights: np.ndarray | None = None,
) -> float:
    """Split-half reliability of a gene-set score over cells, Spearman-Brown corrected.

    Parameters
    ----------
    expr
        (cells, genes) log-normalised expression of the set's genes in the cells at hand.
    log_depth
        Per-cell log library size, regressed out of each half-score (``None``: not).
    n_splits, seed
        Random halves of the genes averaged over (seeded).
    weights
        Per gene, its weight in the score (a learned programme): a half-score is then the weighted sum of
        its genes' log expression rather than the mean of their z-scores.

    Returns
    -------
    float
        The mean over splits of ``2 r / (1 + r)`` (``r``: Pearson correlation of the two half-scores,
        each the mean of its genes' z-scores), clipped to [0, :data:`MAX_RELIABILITY`]; NaN with
        fewer than 2 genes that vary.
    """
    x = np.asarray(expr, dtype=np.float64)
    sd = x.std(axis=0)
    x = x[:, sd > 0]
    if x.shape[1] < 2 or x.shape[0] < 3:
        return float("nan")
    if weights is None:
        x = (x - x.mean(axis=0)) / x.std(axis=0)
    else:
        x = (x - x.mean(axis=0)) * np.asarray(weights, dtype=np.float64)[sd > 0]
    rng = np.random.default_rng(seed)
    n_genes = x.shape[1]
    halves = []
    for _ in range(n_splits):
        perm = rng.permutation(n_genes)
        a, b = perm[: n_genes // 2], perm[n_genes // 2:]
        halves.append(np.column_stack([x[:, a].mean(axis=1), x[:, b].mean(axis=1)]))
    h = _residualise(np.hstack(halves), log_depth)
    rel = []
    for i in range(n_splits):
        ha, hb = h[:, 2 * i], h[:, 2 * i + 1]
        den = np.sqrt((ha @ ha) * (hb @ hb))
        r = float(ha @ hb / den) if den > 0 else 0.0
        r = max(r, 0.0)
        rel.append(2 * r / (1 + r))
    return float(np.clip(np.mean(rel), 0.0, MAX_RELIABILITY))


def signature_reliabilities(
    counts, gene_sets: dict[str, Sequence[str]], *, seed: int = 0, weights: dict[str, Sequence[float]] | None = None
) -> dict[str, float]:
    """:func:`signature_reliability` of each gene set on raw ``counts`` (an AnnData of the cells at hand).

    Counts are scaled to 10,000 per cell and log1p-transformed; a set's genes absent from
    ``counts.var_names`` are ignored (NaN when fewer than 2 remain). ``weights`` (by set name, one per gene of
    the set) makes that set's score the weighted sum of its genes (a learned programme).
    """
    depth = np.asarray(counts.X.sum(axis=1)).ravel().astype(np.float64)
    ok = depth > 0
    log_depth = np.log(np.where(ok, depth, 1.0))
    out = {}
    for i, (name, genes) in enumerate(gene_sets.items()):
        idx = counts.var_names.get_indexer(list(genes))
        found = idx >= 0
        if found.sum() < 2:
            out[name] = float("nan")
            continue
        expr = log_normalised(counts.X[:, idx[found]], depth).toarray()
        w = None if weights is None or name not in weights else np.asarray(weights[name], dtype=np.float64)[found]
        out[name] = signature_reliability(expr[ok], log_depth=log_depth[ok], seed=seed + i, weights=w)
    return out


# --- fitting -----------------------------------------------------------------------------------


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 and np.std(b) > 0 else 0.0


def _disattenuated(corr: float, r_a: float, r_b: float, *, if_unknown: float) -> float:
    """``corr / sqrt(r_a r_b)`` clipped to [0, 1]; ``if_unknown`` when a reliability is 0."""
    denom = np.sqrt(r_a * r_b)
    return float(np.clip(corr / denom, 0.0, 1.0)) if denom > 0 else if_unknown


def factor_weights(
    z: pd.DataFrame, up: tuple[str, ...], down: tuple[str, ...], reliability: dict[str, float],
    anchors: dict[str, str] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """One-factor weights (loading / noise variance) of standardised scores ``z`` (see the module notes).

    ``anchors`` maps an up column learned from the data to the up signature it was seeded by: its loading is
    then disattenuated by its correlation with that signature. Returns the positive weight of each up/down
    column (on ``z``) and, per column, its reliability, loading and (down side, anchored up side) disattenuated
    correlation with the up composite or its anchor.
    """
    rel = {c: float(np.clip(reliability[c], 0.0, MAX_RELIABILITY)) for c in (*up, *down)}
    given = anchors or {}
    anchors = {c: a for c, a in given.items() if c in up and a in up and a not in given}  # one level only
    info: dict[str, dict[str, float]] = {}
    weights: dict[str, float] = {}
    for c in up:
        load = float(np.sqrt(rel[c]))
        info[c] = {"reliability": rel[c]}
        if c in anchors:
            a = anchors[c]
            rho = _disattenuated(_corr(z[c].to_numpy(), z[a].to_numpy()), rel[c], rel[a], if_unknown=1.0)
            load *= rho
            info[c] |= {"anchor": a, "disattenuated_corr_with_anchor": rho}
        weights[c] = load / (1.0 - load**2)
        info[c]["loading"] = load
    if sum(weights.values()) <= 0:  # no up signature carries signal: fall back to equal weights
        weights = {c: 1.0 for c in up}
    comp = z[list(up)].to_numpy() @ np.array([weights[c] for c in up])
    noise = sum(weights[c] ** 2 * (1.0 - info[c]["loading"] ** 2) for c in up)
    var_u = float(np.var(comp))
    r_u = float(np.clip(1.0 - noise / var_u, 0.0, 1.0)) if var_u > 0 else 0.0
    for c in down:
        rho = _disattenuated(-_corr(z[c].to_numpy(), comp), rel[c], r_u, if_unknown=0.0)
        load = np.sqrt(rel[c]) * rho
        weights[c] = load / (1.0 - load**2)
        info[c] = {"reliability": rel[c], "loading": float(load), "disattenuated_corr_with_up": rho}
    return {c: float(w) for c, w in weights.items()}, info


def fit_reprogramming_axis(
    scores: pd.DataFrame,
    *,
    up: tuple[str, ...] | list[str] = ("T3_proxy",),
    down: tuple[str, ...] | list[str] = ("blood_like",),
    method: str = "scanpy",
    quantiles: tuple[float, float] = (0.01, 0.99),
    reliability: dict[str, float] | None = None,
    anchors: dict[str, str] | None = None,
) -> ReprogrammingAxis:
    """Fit the axis on reference neutrophils' scores (rows = neutrophils only).

    Parameters
    ----------
    scores
        Neutrophils x score columns (must hold ``up`` and ``down``).
    up, down
        T3-like and blood-like score columns.
    method
        Scoring method of the scores (recorded).
    quantiles
        ``loc``/``scale``: the lower quantile and the span of the two quantiles of the raw axis.
    reliability
        Per up/down column, its split-half reliability on these neutrophils
        (:func:`signature_reliabilities`). Given and finite for all of them: reliability weights;
        else the plain ``mean(up) - mean(down)`` (recorded in ``extra["weighting"]``).
    anchors
        Up columns learned from the data -> the up signature each was seeded by (:func:`factor_weights`).
    """
    up, down = tuple(up), tuple(down)
    _check_columns(scores, up, down)
    cols = list(dict.fromkeys((*up, *down)))
    vals = scores[cols].astype(np.float64)
    vals = vals[np.isfinite(vals.to_numpy()).all(axis=1)]
    if len(vals) < 2:
        raise AtlasError("cannot fit the reprogramming index: fewer than 2 neutrophils with finite scores")
    weights: dict[str, float] = {}
    extra: dict[str, Any] = {"weighting": "equal"}
    known = reliability is not None and all(np.isfinite(reliability.get(c, np.nan)) for c in cols)
    if known and not set(up) & set(down):
        sd = vals.std(axis=0, ddof=0).replace(0.0, 1.0)
        z = (vals - vals.mean(axis=0)) / sd
        w, info = factor_weights(z, up, down, reliability, anchors)
        weights = {c: w[c] / float(sd[c]) for c in cols}
        extra = {"weighting": "reliability", "signatures": info}
    elif reliability is not None:
        lacking = [c for c in cols if not np.isfinite(reliability.get(c, np.nan))]
        extra["reason"] = f"no gene-level reliability for {lacking or 'overlapping up/down'}"
    axis = ReprogrammingAxis(up=up, down=down, method=method, weights=weights, extra=extra)
    raw = _raw_axis(vals, axis)
    lo, hi = np.quantile(raw, quantiles)
    scale = float(hi - lo) if hi > lo else float(np.std(raw) or 1.0)
    return ReprogrammingAxis(up=up, down=down, loc=float(lo), scale=scale, method=method, weights=weights,
                             extra=extra)  # fmt: skip


def apply_reprogramming_axis(scores: pd.DataFrame, axis: ReprogrammingAxis | dict) -> np.ndarray:
    """The reprogramming index of every row of ``scores`` on a fitted axis."""
    if isinstance(axis, dict):
        axis = ReprogrammingAxis.from_dict(axis)
    return (_raw_axis(scores, axis) - axis.loc) / axis.scale
