"""``analyse``: from the reference bundle, the store and the scores to the annotated atlas and its tables.

Reads ``reference/atlas.h5ad`` (latent, UMAP, clusters), ``scores.parquet`` and the store (only for
signatures the score stage did not compute and for the neutrophils' counts); writes ``atlas.h5ad``,
``neutrophils.h5ad``, ``tables/`` and ``analysis.json`` (see ``docs/run_directory.md``). Never reads
``truth_*`` columns (they are only carried through).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.atomic import atomic_path, write_anndata, write_json
from ..core.errors import InputDataError
from . import statistics as st
from .celltypes import (
    UNKNOWN,
    CellTypeRule,
    annotate_cell_types,
    auto_resolution,
    neutrophil_yield,
    overcluster,
)
from .pseudotime import reprogramming_pseudotime
from .reprogramming import apply_reprogramming_axis, fit_reprogramming_axis
from .settings import AnalysisSettings
from .states import assign_states, state_clusters, state_scores

__all__ = ["AnalysisResult", "ScoringOptions", "analyse"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringOptions:
    """How signatures are scored (the score stage's settings, reused for anything scored here)."""

    method: str = "scanpy"
    ctrl_size: int = 50
    n_bins: int = 25
    random_state: int = 0
    normalize: bool | str = "auto"
    backend: str = "auto"
    chunk_size: int = 50_000
    max_rank: int = 1500

    def kwargs(self) -> dict[str, Any]:
        return {"method": self.method, "ctrl_size": self.ctrl_size, "n_bins": self.n_bins,
                "random_state": self.random_state, "normalize": self.normalize, "backend": self.backend,
                "chunk_size": self.chunk_size, "max_rank": self.max_rank}  # fmt: skip


@dataclass
class AnalysisResult:
    """What :func:`analyse` found and wrote."""

    out_dir: Path
    n_cells: int
    n_neutrophils: int
    states: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _scores_for(
    store: Path, existing: pd.DataFrame | None, names: list[str], obs_names: pd.Index, scoring: ScoringOptions
) -> pd.DataFrame:
    """Score columns ``names`` for ``obs_names``: from ``existing`` where present, else scored on the store."""
    from ..score import score_store

    have = [] if existing is None else [n for n in names if n in existing.columns]
    missing = [n for n in names if n not in have]
    parts = []
    if have:
        parts.append(existing.loc[obs_names, have])
    if missing:
        log.info("scoring %d signature(s) the score stage did not compute: %s", len(missing), missing)
        parts.append(score_store(store, missing, **scoring.kwargs()).loc[obs_names])
    return pd.concat(parts, axis=1)[names] if parts else pd.DataFrame(index=obs_names)


def _marker_scores(
    store: Path, markers: dict[str, list[str]], obs_names: pd.Index, scoring: ScoringOptions
) -> pd.DataFrame:
    from ..score import score_store

    opts = scoring.kwargs() | {"method": "scanpy"}  # marker evidence is always the mean-minus-control score
    return score_store(store, {k: list(v) for k, v in markers.items()}, **opts).loc[obs_names]


def _statistics(neut: pd.DataFrame, s: AnalysisSettings) -> dict[str, pd.DataFrame]:
    stats = st.StatsSettings(
        min_neutrophils_per_patient=s.statistics.min_neutrophils_per_patient, n_boot=s.statistics.n_boot, ci=s.statistics.ci,
        random_state=s.seed,
    )  # fmt: skip
    cells = neut.assign(is_t3=neut["neutrophil_state"].astype(str) == "T3")
    samples = st.per_sample(cells)
    patients = st.per_patient(samples, stats)
    groups = st.per_group(patients, stats)
    sparse = st.sparse_groups(samples, groups, stats)
    if len(sparse):
        log.warning("%s", "; ".join(f"{r.cancer_type} {r.tissue}: {r.note}" for r in sparse.itertuples()))
        groups = pd.concat([groups, sparse], ignore_index=True).sort_values(["cancer_type", "tissue"])
        groups = groups.reset_index(drop=True)
    comparisons = [st.paired_tissue_comparison(patients, "tumour", b) for b in ("blood", "adjacent_normal")]
    return {
        "samples": samples,
        "patients": patients,
        "cancer_types": groups,
        "tissue_comparison": pd.concat(comparisons, ignore_index=True),
        "ranking": st.rank_cancers(groups) if len(groups) else groups,
    }


def _composition(obs: pd.DataFrame, column: str) -> pd.DataFrame:
    g = obs.groupby(["cancer_type", "tissue", column], observed=True, sort=True).size().rename("n_cells")
    out = g.reset_index()
    out["fraction"] = out["n_cells"] / out.groupby(["cancer_type", "tissue"], observed=True)[
        "n_cells"
    ].transform("sum")
    return out


def analyse(
    rundir: str | Path,
    *,
    store: str | Path,
    refdir: str | Path,
    scores: str | Path | None,
    settings: AnalysisSettings | None = None,
    scoring: ScoringOptions | None = None,
    subatlas_base=None,
) -> AnalysisResult:
    """Identify neutrophils, build their sub-atlas, assign states, index, pseudotime, statistics.

    Parameters
    ----------
    rundir
        Where ``atlas.h5ad``, ``neutrophils.h5ad``, ``tables/`` and ``analysis.json`` go.
    store, refdir, scores
        The ingested store, the reference bundle and the score stage's parquet (``None``: score here).
    settings
        :class:`AnalysisSettings` (defaults when ``None``).
    scoring
        How signatures missing from ``scores`` are scored (the score stage's settings).
    subatlas_base
        The atlas's :class:`~atlas.integrate.IntegrateSettings` the sub-atlas starts from.
    """
    import anndata as ad

    from .subatlas import build_subatlas, read_store_rows, subatlas_settings

    s = settings or AnalysisSettings()
    scoring = scoring or ScoringOptions()
    rundir, store, refdir = Path(rundir), Path(store), Path(refdir)
    seconds: dict[str, float] = {}
    notes: list[str] = []
    t0 = time.perf_counter()
    atlas_path = refdir / "atlas.h5ad"
    if not atlas_path.exists():
        raise InputDataError(f"{atlas_path} is missing: run the integrate stage (atlas integrate) first")
    atlas = ad.read_h5ad(atlas_path)
    obs_names = atlas.obs_names
    if s.cluster_key not in atlas.obs:
        raise InputDataError(f"{atlas_path} has no obs column {s.cluster_key!r} (analysis.cluster_key)")
    existing = pd.read_parquet(scores) if scores is not None and Path(scores).exists() else None
    if existing is not None:
        lost = obs_names.difference(existing.index)
        if len(lost):
            raise InputDataError(
                f"{scores} lacks {len(lost)} cells of the atlas (e.g. {lost[0]}); rerun the score stage"
            )

    _check_signature_names(s, existing)

    # --- cell types and neutrophils, then the second QC pass (low-RNA cells only in neutrophil clusters)
    t = time.perf_counter()
    markers = _marker_scores(store, s.cell_type_markers, obs_names, scoring)
    clusters = _cell_type_clusters(atlas, s, atlas_path)
    cells, cluster_table = annotate_cell_types(markers, clusters, _cell_type_rule(s))
    passed, qc_cell_types = _second_qc_pass(atlas, store, cells, cluster_table)
    seconds["cell_types"] = time.perf_counter() - t
    for col in ("cell_type", "cell_type_confidence", "is_neutrophil", "neutrophil_confidence", "cell_type_rule",
                "cell_type_cluster"):  # fmt: skip
        atlas.obs[col] = cells[col]
    atlas.obs["passed_qc"] = passed
    if (~passed).any():
        notes.append(f"second QC pass: {int((~passed).sum())} low-RNA cells outside neutrophil clusters left out")
        log.info(notes[-1])
    score_names = list(dict.fromkeys(
        [*(existing.columns if existing is not None else []), *s.reprogramming_up, *s.reprogramming_down,
         *(x for sigs in s.state_signatures.values() for x in sigs)]
    ))  # fmt: skip
    all_scores = _scores_for(store, existing, score_names, obs_names, scoring)
    for c in all_scores.columns:
        atlas.obs[c] = all_scores[c].to_numpy()
    is_neut = atlas.obs["is_neutrophil"].to_numpy(bool)
    n_neut = int(is_neut.sum())
    log.info("%d neutrophils among %d cells", n_neut, atlas.n_obs)

    default = [s.default_state] if s.default_state not in (None, "auto") else []
    state_cats = [*s.state_signatures, *default, "unassigned"]
    atlas.obs["neutrophil_state"] = pd.Categorical(
        [np.nan] * atlas.n_obs, categories=list(dict.fromkeys(state_cats))
    )
    for col in ("neutrophil_state_confidence", "reprogramming_index", "reprogramming_pseudotime"):
        atlas.obs[col] = np.nan
    tables: dict[str, pd.DataFrame] = {
        "neutrophil_yield": neutrophil_yield(atlas.obs[passed]),
        "cell_type_composition": _composition(atlas.obs[passed], "cell_type"),
        "cell_type_clusters": cluster_table,
        "qc_by_cell_type": qc_cell_types,
    }
    axis = None
    neut_adata = None
    state_fit: dict[str, Any] = {}
    if n_neut == 0:
        notes.append("no neutrophils found: no sub-atlas, states, index, pseudotime or statistics")
        log.warning(notes[-1])
    else:
        neut_names = obs_names[is_neut]
        # --- sub-atlas
        t = time.perf_counter()
        counts = read_store_rows(store, neut_names)  # read once: signature reliabilities and the sub-atlas
        reliability = _signature_reliabilities(counts, [*s.reprogramming_up, *s.reprogramming_down, *(
            x for sigs in s.state_signatures.values() for x in sigs)], s.seed)  # fmt: skip
        if n_neut >= s.min_neutrophils_for_subatlas:
            neut_adata, sub_summary = build_subatlas(counts, subatlas_settings(subatlas_base, s.subatlas))
        else:
            import scanpy as sc

            notes.append(f"{n_neut} neutrophils < min_neutrophils_for_subatlas={s.min_neutrophils_for_subatlas}: "
                         "the whole-atlas latent is used for their graph")  # fmt: skip
            log.warning(notes[-1])
            neut_adata = atlas[is_neut].copy()
            sc.pp.neighbors(neut_adata, use_rep="X_scVI", n_neighbors=min(15, max(2, n_neut - 1)))
            neut_adata.obs["neutrophil_leiden"] = "0"
            sub_summary = {"n_cells": n_neut, "fallback": "whole-atlas latent"}
        seconds["subatlas"] = time.perf_counter() - t
        neut_obs = atlas.obs.loc[neut_names].copy()
        neut_obs["neutrophil_leiden"] = neut_adata.obs["neutrophil_leiden"].astype(str).to_numpy()

        del counts
        # --- states (evidence shrunk to the sub-atlas clusters by each score's reliability here)
        sscore = state_scores(all_scores.loc[neut_names], s.state_signatures)
        conn = neut_adata.obsp.get("connectivities")
        state_rel = {st: float(np.mean([reliability.get(x, np.nan) for x in sigs]))
                     for st, sigs in s.state_signatures.items()}  # fmt: skip
        states = assign_states(sscore, connectivities=conn, smoothing_steps=s.state_smoothing_steps,
                               min_z=s.state_min_z, min_margin=s.state_min_margin, default_state=s.default_state,
                               clusters=neut_obs["neutrophil_leiden"].to_numpy(), reliability=state_rel)  # fmt: skip
        state_fit = {"default_state_used": states.attrs.get("default_state") or "unassigned",
                     "reliability": state_rel, "cluster_weight": states.attrs.get("cluster_weight", {})}  # fmt: skip
        for col in states.columns:
            neut_obs[col] = states[col]
        tables["state_clusters"] = state_clusters(states, neut_obs["neutrophil_leiden"], sscore)

        # --- reprogramming index and pseudotime
        axis = fit_reprogramming_axis(all_scores.loc[neut_names], up=s.reprogramming_up, down=s.reprogramming_down,
                                      method=scoring.method, reliability=reliability)  # fmt: skip
        log.info("reprogramming index weights (%s): %s", axis.extra.get("weighting"), axis.weights)
        neut_obs["reprogramming_index"] = apply_reprogramming_axis(all_scores.loc[neut_names], axis)
        t = time.perf_counter()
        pt, pt_summary, pt_notes = reprogramming_pseudotime(neut_adata, neut_obs, s)
        neut_obs["reprogramming_pseudotime"] = pt
        for note in pt_notes:
            notes.append(note)
            log.warning(note)
        seconds["pseudotime"] = time.perf_counter() - t
        from scipy.stats import spearmanr

        ok = neut_obs[["reprogramming_index", "reprogramming_pseudotime"]].dropna()
        rho = float(spearmanr(ok.iloc[:, 0], ok.iloc[:, 1]).statistic) if len(ok) > 2 else float("nan")
        tables["index_vs_pseudotime"] = pd.DataFrame([{"spearman": rho, "n_cells": len(ok), **pt_summary}])

        for col in (
            "neutrophil_state",
            "neutrophil_state_confidence",
            "reprogramming_index",
            "reprogramming_pseudotime",
        ):
            if col == "neutrophil_state":
                atlas.obs.loc[neut_names, col] = neut_obs[col].astype(str).to_numpy()
            else:
                atlas.obs.loc[neut_names, col] = neut_obs[col].to_numpy()
        tables["state_composition"] = _composition(neut_obs, "neutrophil_state")
        tables.update(_statistics(neut_obs, s))
        # the sub-atlas file: neutrophils with all the atlas's annotations, their own latent and UMAP
        neut_adata.obs = neut_obs
        neut_adata.uns["sub_atlas"] = _plain(sub_summary)
        for key in ("distances",):
            neut_adata.obsp.pop(key, None)

    atlas.uns["reprogramming_axis"] = axis.to_dict() if axis is not None else {}
    atlas.uns["atlas_scoring"] = {**{k: v for k, v in scoring.kwargs().items() if k not in ("backend", "chunk_size")},
                                  "signatures": list(all_scores.columns)}  # fmt: skip
    atlas.uns["state_rule"] = _plain(
        state_fit | s.model_dump(
            include={
                "state_signatures",
                "state_smoothing_steps",
                "state_min_z",
                "state_min_margin",
                "default_state",
            }
        )
    )

    t = time.perf_counter()
    with atomic_path(rundir / "tables") as tmp:
        tmp.mkdir()
        for name, df in tables.items():
            df.to_csv(tmp / f"{name}.csv", index=False)  # inside the atomic directory
    write_anndata(rundir / "atlas.h5ad", _h5ad_safe(atlas))
    neut_path = rundir / "neutrophils.h5ad"
    if neut_adata is not None:
        write_anndata(neut_path, _h5ad_safe(neut_adata))
    elif neut_path.exists():
        neut_path.unlink()
    state_counts = (atlas.obs.loc[is_neut, "neutrophil_state"].astype(str).value_counts().to_dict()
                    if n_neut else {})  # fmt: skip
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    summary = {"n_cells": atlas.n_obs, "n_neutrophils": n_neut, "states": state_counts, "notes": notes,
               "settings": s.model_dump(mode="json"), "scoring": scoring.kwargs(), "seconds": seconds}  # fmt: skip
    write_json(rundir / "analysis.json", summary)
    return AnalysisResult(rundir, atlas.n_obs, n_neut, state_counts, notes, seconds)


def _signature_reliabilities(counts, names: list[str], seed: int) -> dict[str, float]:
    """Split-half reliability of each registry signature in ``names`` on the neutrophils' ``counts`` (NaN for
    signatures outside the registry or with fewer than 2 genes in the store)."""
    from ..catalogue.signatures import load_registry
    from .reprogramming import signature_reliabilities

    reg = load_registry()
    sets = {n: list(reg[n].genes) for n in dict.fromkeys(names) if n in reg}
    out = dict.fromkeys(names, float("nan"))
    if not sets:
        return out
    out.update(signature_reliabilities(counts, sets, seed=seed))
    return out


def _cell_type_rule(s: AnalysisSettings) -> CellTypeRule:
    o = s.cell_types
    return CellTypeRule(min_cluster_cells=o.min_cluster_cells, min_effect=o.min_effect,
                        max_runner_up_ratio=o.max_runner_up_ratio, demote_z=o.demote_z,
                        min_confidence=o.min_confidence, n_folds=o.n_folds, max_train_cells=o.max_train_cells,
                        seed=s.seed)  # fmt: skip


def _cell_type_clusters(atlas, s: AnalysisSettings, atlas_path: Path) -> pd.Series:
    """The clusters cell types are called on: an over-clustering of the scVI graph, or ``cluster_key`` as is."""
    o = s.cell_types
    if o.resolution is None:
        return atlas.obs[s.cluster_key]
    if "X_scVI" not in atlas.obsm:
        raise InputDataError(f"{atlas_path} has no obsm['X_scVI'] to over-cluster; rerun the integrate stage, or "
                             "set analyse.cell_types.resolution: null to call types on analyse.cluster_key")  # fmt: skip
    res = auto_resolution(atlas.n_obs) if o.resolution == "auto" else float(o.resolution)
    labels = overcluster(np.asarray(atlas.obsm["X_scVI"]), res, o.n_neighbors, s.seed)
    log.info("cell types: %d clusters of the scVI graph at Leiden resolution %g", len(set(labels)), res)
    return pd.Series(labels, index=atlas.obs_names)


def _low_rna_flags(atlas, store: Path) -> np.ndarray | None:
    """The ingest stage's ``qc_low_rna`` flag per atlas cell (atlas obs, else the store's obs); None if absent."""
    col = "qc_low_rna"
    if col in atlas.obs:
        return atlas.obs[col].fillna(False).to_numpy(bool)
    from anndata.io import read_elem

    if store.suffix == ".h5ad":
        import h5py

        with h5py.File(store, "r") as f:
            obs = read_elem(f["obs"]) if col in f["obs"] else None
    else:
        import zarr

        g = zarr.open(str(store), mode="r")
        obs = read_elem(g["obs"]) if col in g["obs"] else None
    if obs is None:
        return None
    return obs[col].reindex(atlas.obs_names).fillna(False).to_numpy(bool)


def _second_qc_pass(atlas, store: Path, cells: pd.DataFrame, clusters: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Keep mask of the second QC pass (low-RNA cells only in clusters called neutrophil) and its table.

    Cells that fail are not neutrophils (a propagated neutrophil call becomes unknown, confidence 0).
    """
    from ..ingest.qc import qc_by_cell_type, second_pass_keep

    low = _low_rna_flags(atlas, store)
    call = dict(zip(clusters["cluster"].astype(str), clusters["call"].astype(str), strict=True))
    neut_cluster = cells["cell_type_cluster"].astype(str).map(call).eq("neutrophil").to_numpy()
    keep = np.ones(len(cells), bool) if low is None else second_pass_keep(low, neut_cluster)
    drop = ~keep
    cells.loc[drop, "is_neutrophil"] = False
    relabel = drop & (cells["cell_type"].astype(str) == "neutrophil").to_numpy()
    cells.loc[relabel, "cell_type"] = UNKNOWN
    cells.loc[relabel, "cell_type_confidence"] = 0.0
    obs = pd.DataFrame({"dataset_id": atlas.obs["dataset_id"].to_numpy(), "cell_type": cells["cell_type"].to_numpy(),
                        "qc_low_rna": low if low is not None else False}, index=atlas.obs_names)  # fmt: skip
    return keep, qc_by_cell_type(obs, keep, "cell_type")


def _check_signature_names(s: AnalysisSettings, existing: pd.DataFrame | None) -> None:
    """Fail before any work on a state or index signature that is neither scored nor in the registry."""
    from ..catalogue.signatures import load_registry

    known = set(load_registry()) | set(existing.columns if existing is not None else [])
    wanted = {f"analyse.state_signatures[{state!r}]": sigs for state, sigs in s.state_signatures.items()}
    wanted |= {"analyse.reprogramming_up": s.reprogramming_up, "analyse.reprogramming_down": s.reprogramming_down}
    for where, names in wanted.items():
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputDataError(
                f"{where}: unknown signature(s) {unknown}; use names from `atlas signatures list` or score your "
                "own gene sets first (atlas score --signatures FILE.gmt) so they are columns of scores.parquet"
            )


def _plain(obj: Any) -> Any:
    """Nested dicts/lists of plain values (AnnData's uns writer refuses None and tuples)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def _h5ad_safe(adata):
    """Object obs columns as categories (h5ad stores them compactly and keeps NaN as missing)."""
    for col in adata.obs.columns:
        if adata.obs[col].dtype == object:
            adata.obs[col] = adata.obs[col].astype("category")
    adata.uns = _plain(dict(adata.uns))
    return adata
