"""Scores of the query and its place beside the reference cancer types.

The reference's signatures are scored on the query store with the reference's settings
(``uns["atlas_scoring"]``: method, control genes, bins, seed, normalisation) and the reprogramming
index applies the reference's fitted axis unchanged (``uns["reprogramming_axis"]``), so an index
means the same in both. Scores are computed on the query's own genes, as the reference's were on its
store. The comparison tables are cell-level summaries per group: each reference cancer type x tissue,
and each query data set x tissue (``source`` tells them apart).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import AtlasError

__all__ = ["composition", "index_summary", "programme_scores_on_store", "reprogramming_index", "score_query",
           "scoring_kwargs"]

log = logging.getLogger(__name__)

SCORING_KEYS = ("method", "ctrl_size", "n_bins", "random_state", "normalize", "max_rank")


def scoring_kwargs(scoring: dict | None) -> dict:
    """:func:`atlas.score.score_store` arguments of the reference's scoring record (method scanpy without one)."""
    if not scoring:
        return {"method": "scanpy"}
    kwargs = {k: (v.item() if hasattr(v, "item") else v) for k, v in scoring.items() if k in SCORING_KEYS}
    if isinstance(kwargs.get("normalize"), str) and kwargs["normalize"] in ("True", "False"):
        kwargs["normalize"] = kwargs["normalize"] == "True"
    return kwargs


def score_query(store: Path, scoring: dict | None, notes: list[str]) -> tuple[pd.DataFrame, dict]:
    """Score the reference's signatures on the query store; return the scores and the settings used.

    A bundle without ``atlas_scoring`` (bare bundle) gets the default signatures and settings.
    Signatures that cannot be resolved (e.g. from a custom file) are left out with a note.
    """
    from ..score import score_store
    from ..score.settings import DEFAULT_SIGNATURES

    if scoring:
        names = [str(x) for x in np.atleast_1d(scoring.get("signatures", []))]
    else:
        names = list(DEFAULT_SIGNATURES)
        notes.append("the reference records no scoring settings: default signatures scored with method scanpy")
        log.info(notes[-1])
    kwargs = scoring_kwargs(scoring)
    try:
        scores = score_store(store, names, **kwargs)
    except AtlasError:
        ok = []
        for n in names:
            try:
                from ..score import resolve_gene_sets

                resolve_gene_sets([n])
                ok.append(n)
            except AtlasError as e:
                notes.append(f"signature {n!r} of the reference cannot be scored here ({e}); left out")
                log.warning(notes[-1])
        scores = score_store(store, ok, **kwargs) if ok else pd.DataFrame(index=[])
    return scores, {**kwargs, "signatures": list(scores.columns)}


def programme_scores_on_store(store: Path, obs_names, programmes: dict | None) -> pd.DataFrame:
    """The reference's learned programmes (``axis["programmes"]``) scored on the store's ``obs_names`` cells."""
    if not programmes:
        return pd.DataFrame(index=pd.Index(obs_names))
    from ..analyse.refine import Programme, programme_scores
    from ..analyse.subatlas import read_store_rows

    progs = [Programme.from_dict(dict(d)) for d in dict(programmes).values()]
    return programme_scores(read_store_rows(store, obs_names), progs)


def reprogramming_index(scores: pd.DataFrame, axis: dict | None, is_neutrophil: np.ndarray) -> np.ndarray:
    """The reference axis applied to the query's neutrophils (NaN for other cells or without an axis)."""
    from ..analyse import apply_reprogramming_axis

    out = np.full(len(scores), np.nan)
    if axis and is_neutrophil.any():
        out[is_neutrophil] = apply_reprogramming_axis(scores.loc[is_neutrophil], dict(axis))
    return out


def _groups(obs: pd.DataFrame, source: str) -> pd.DataFrame:
    g = pd.DataFrame(index=obs.index)
    g["source"] = source
    if source == "query":
        g["group"] = "query: " + obs["dataset_id"].astype(str)
    else:
        g["group"] = obs["cancer_type"].astype(str)
    g["cancer_type"] = obs["cancer_type"].astype(str)
    g["tissue"] = obs["tissue"].astype(str)
    return g


def composition(query_obs: pd.DataFrame, ref_obs: pd.DataFrame | None, query_col: str, ref_col: str | None,
                name: str) -> pd.DataFrame:
    """Shares of ``name`` (cell type or state) per group (query data sets and reference cancer types) x tissue."""
    frames = []
    for obs, col, src in ((query_obs, query_col, "query"), (ref_obs, ref_col, "reference")):
        if obs is None or col is None or col not in obs:
            continue
        vals = obs[col]
        keep = vals.notna().to_numpy()
        g = _groups(obs.loc[keep], src).assign(**{name: vals[keep].astype(str).to_numpy()})
        frames.append(g)
    if not frames:
        return pd.DataFrame(columns=["source", "group", "cancer_type", "tissue", name, "n_cells", "fraction"])
    df = pd.concat(frames, ignore_index=True)
    keys = ["source", "group", "cancer_type", "tissue"]
    out = df.groupby([*keys, name], sort=True, observed=True).size().rename("n_cells").reset_index()
    out["fraction"] = out["n_cells"] / out.groupby(keys, observed=True)["n_cells"].transform("sum")
    return out


def index_summary(query_obs: pd.DataFrame, ref_obs: pd.DataFrame | None, *, t3_label: str = "T3") -> pd.DataFrame:
    """Reprogramming index of neutrophils per group x tissue, with each query group's place in the reference.

    ``reference_percentile``: share of all reference neutrophils with an index at or below the
    group's median.
    """
    rows = []
    ref_index = None
    if ref_obs is not None and "reprogramming_index" in ref_obs:
        ref_index = np.sort(ref_obs["reprogramming_index"].to_numpy(dtype=float))
        ref_index = ref_index[np.isfinite(ref_index)]
    for obs, state_col, src in ((query_obs, "predicted_state", "query"), (ref_obs, "neutrophil_state", "reference")):
        if obs is None or "reprogramming_index" not in obs:
            continue
        idx = obs["reprogramming_index"].to_numpy(dtype=float)
        sub = obs.loc[np.isfinite(idx)]
        if sub.empty:
            continue
        g = _groups(sub, src)
        g["index"] = sub["reprogramming_index"].to_numpy(dtype=float)
        g["is_t3"] = (sub[state_col].astype(str) == t3_label).to_numpy() if state_col in sub else np.nan
        for keys, part in g.groupby(["source", "group", "cancer_type", "tissue"], sort=True, observed=True):
            v = part["index"].to_numpy()
            med = float(np.median(v))
            rows.append({
                **dict(zip(["source", "group", "cancer_type", "tissue"], keys, strict=True)),
                "n_neutrophils": len(v), "mean_index": float(v.mean()), "median_index": med,
                "q25_index": float(np.quantile(v, 0.25)), "q75_index": float(np.quantile(v, 0.75)),
                "t3_fraction": float(np.nanmean(part["is_t3"].astype(float))),
                "reference_percentile": (float(np.searchsorted(ref_index, med, side="right") / len(ref_index))
                                         if ref_index is not None and len(ref_index) else np.nan),
            })  # fmt: skip
    cols = ["source", "group", "cancer_type", "tissue", "n_neutrophils", "mean_index", "median_index", "q25_index",
            "q75_index", "t3_fraction", "reference_percentile"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)
