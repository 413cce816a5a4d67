"""The steps of the ``analyse`` stage (:func:`atlas.analyse.stage.analyse` runs them in this order).

1. :func:`identify_neutrophils`: cell types on an over-clustering, then the second QC pass;
2. :func:`neutrophil_subatlas`: the neutrophils' own scVI, graph and clusters (and signature reliabilities, and
   the signatures refined on them, :func:`refine_signatures`);
3. :func:`assign_neutrophil_states`: states from the state scores, shrunk to the sub-atlas clusters;
4. :func:`reprogramming_index` and :func:`neutrophil_pseudotime`: the index and the trajectory along the sub-atlas;
5. :func:`neutrophil_tables`: compositions and patient-level statistics.

:func:`analyse_neutrophils` runs steps 2 to 5. Steps take and return values; the ones that annotate
the atlas write their columns into ``atlas.obs`` (or the neutrophils' obs) in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import InputDataError
from . import statistics as st
from .celltypes import (
    NO_TYPE_ENRICHED,
    UNKNOWN,
    CellTypeRule,
    annotate_cell_types,
    auto_resolution,
    fill_unmeasured,
    knn_graph,
    neutrophil_yield,
    overcluster,
)
from .pseudotime import finite_spearman, reprogramming_pseudotime
from .reprogramming import ReprogrammingAxis, apply_reprogramming_axis, fit_reprogramming_axis
from .settings import AnalysisSettings, CellTypeOptions
from .states import assign_states, state_clusters, state_scores

__all__ = [
    "CellTypeCalls",
    "NeutrophilAnalysis",
    "Refinement",
    "SubAtlas",
    "analyse_neutrophils",
    "assign_neutrophil_states",
    "cell_type_rule",
    "cell_type_tables",
    "identify_neutrophils",
    "init_neutrophil_columns",
    "neutrophil_subatlas",
    "neutrophil_pseudotime",
    "neutrophil_tables",
    "overcluster_latent",
    "plain",
    "refine_signatures",
    "reprogramming_index",
    "timed",
]

log = logging.getLogger(__name__)

#: Per-neutrophil columns of the atlas (NaN outside neutrophils).
NEUTROPHIL_COLUMNS = ("neutrophil_state", "neutrophil_state_confidence", "reprogramming_index",
                      "reprogramming_pseudotime")  # fmt: skip
_CELL_TYPE_COLUMNS = ("cell_type", "cell_type_confidence", "is_neutrophil", "neutrophil_confidence", "cell_type_rule",
                      "cell_type_cluster")  # fmt: skip


@contextmanager
def timed(seconds: dict[str, float], key: str) -> Iterator[None]:
    """Record the wall time of the ``with`` block as ``seconds[key]``."""
    t = time.perf_counter()
    yield
    seconds[key] = time.perf_counter() - t


def _note(notes: list[str], text: str, level: int = logging.WARNING) -> None:
    notes.append(text)
    log.log(level, text)


# ------------------------------------------------------------------------------ 1. cell types and neutrophils
@dataclass
class CellTypeCalls:
    """What :func:`identify_neutrophils` found (its per-cell columns are in ``atlas.obs``)."""

    passed: np.ndarray  # keep mask of the second QC pass
    clusters: pd.DataFrame  # the call per cluster of the over-clustering
    qc_by_cell_type: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def identify_neutrophils(
    atlas, markers: pd.DataFrame, store: Path, s: AnalysisSettings, atlas_path: Path
) -> CellTypeCalls:
    """Cell types from the marker scores on the clusters, then the second QC pass (low-RNA cells only in
    neutrophil-like clusters, and only when likely neutrophils themselves); writes the cell-type columns and
    ``passed_qc`` into ``atlas.obs``."""
    clusters, graph = _cell_type_clusters(atlas, s, atlas_path)
    gaps = unmeasured_markers(store, s.cell_type_markers, atlas.obs)
    notes: list[str] = []
    if gaps.to_numpy().any():
        markers = fill_unmeasured(markers, clusters, gaps)
        _note(notes, _unmeasured_note(gaps, atlas.obs["dataset_id"]))
    cells, cluster_table = annotate_cell_types(markers, clusters, cell_type_rule(s.cell_types, s.seed), graph,
                                               gaps.any(axis=1).to_numpy())  # fmt: skip
    passed, qc_cell_types = _second_qc_pass(atlas, store, cells, cluster_table, s.cell_types.min_confidence)
    for col in _CELL_TYPE_COLUMNS:
        atlas.obs[col] = cells[col]
    atlas.obs["passed_qc"] = passed
    _note_clusters_outside_panel(cluster_table, notes)
    if (~passed).any():
        in_neut = int(cluster_table.loc[cluster_table["neutrophil_like"], "left_out_second_pass"].sum())
        _note(notes, f"second QC pass: {int((~passed).sum())} low-RNA cells left out, {in_neut} of them in "
              f"neutrophil-like clusters (neutrophil confidence below {s.cell_types.min_confidence:g})",
              logging.INFO)  # fmt: skip
    return CellTypeCalls(passed, cluster_table, qc_cell_types, notes)


def unmeasured_markers(store: Path, markers: dict[str, list[str]], obs: pd.DataFrame) -> pd.DataFrame:
    """Cells x types: True where the cell's data set measured fewer than half of the type's markers that the store
    holds (ingest's record ``varm["measured"]``; all False without one)."""
    from ..integrate.storeio import Store

    out = pd.DataFrame(False, index=obs.index, columns=list(markers))
    with Store(store) as st:
        record = st.measured()
    if record is None:
        return out
    ds = obs["dataset_id"].astype(str)
    for t, genes in markers.items():
        held = [g for g in genes if g in record.index]
        if not held:
            continue
        share = record.loc[held].mean(axis=0)  # per data set, the share of the type's markers it measured
        short = set(share.index[share < 0.5].astype(str))
        out[t] = ds.isin(short).to_numpy()
    return out


def _unmeasured_note(gaps: pd.DataFrame, dataset_id: pd.Series) -> str:
    """Which data sets lacked which types' markers (their cells took their cluster's level on those types)."""
    ds = dataset_id.astype(str)
    pairs = {d: [t for t in gaps.columns if gaps.loc[(ds == d).to_numpy(), t].any()] for d in ds.unique()}
    text = "; ".join(f"{d}: {', '.join(ts)}" for d, ts in sorted(pairs.items()) if ts)
    return (f"data sets whose files lack most of a cell type's markers ({text}): their cells' scores for those types "
            "are their cluster's mean, not evidence (a gene panel or an HVG-only deposit; raw counts with every "
            "gene are better)")


def _note_clusters_outside_panel(cluster_table: pd.DataFrame, notes: list[str]) -> None:
    """Say which clusters no marker type is enriched in (their cells stay unknown)."""
    empty = cluster_table[cluster_table["rule"] == NO_TYPE_ENRICHED]
    if len(empty):
        names = ", ".join(map(str, empty["cluster"].head(10))) + (", ..." if len(empty) > 10 else "")
        _note(notes, f"{int(empty['n_cells'].sum())} cells in {len(empty)} clusters ({names}) show no marker type "
              "enriched and stay unknown: a cell type outside analyse.cell_type_markers (mast, dendritic or plasma "
              "cells?) or low-quality cells; add the type's markers to call it (tables/cell_type_clusters.csv)")  # fmt: skip


def cell_type_tables(obs: pd.DataFrame, calls: CellTypeCalls) -> dict[str, pd.DataFrame]:
    """The cell-level tables (cells that passed QC): neutrophil yield, cell-type composition, clusters, QC."""
    return {
        "neutrophil_yield": neutrophil_yield(obs[calls.passed]),
        "cell_type_composition": _composition(obs[calls.passed], "cell_type"),
        "cell_type_clusters": calls.clusters,
        "qc_by_cell_type": calls.qc_by_cell_type,
    }


def init_neutrophil_columns(atlas, s: AnalysisSettings) -> None:
    """The per-neutrophil columns of ``atlas.obs``, empty (NaN) until the neutrophils are analysed."""
    default = [s.default_state] if s.default_state not in (None, "auto") else []
    state_cats = [*s.state_signatures, *default, "unassigned"]
    atlas.obs["neutrophil_state"] = pd.Categorical(
        [np.nan] * atlas.n_obs, categories=list(dict.fromkeys(state_cats))
    )
    for col in NEUTROPHIL_COLUMNS[1:]:
        atlas.obs[col] = np.nan


def cell_type_rule(o: CellTypeOptions, seed: int) -> CellTypeRule:
    """The :class:`~atlas.analyse.celltypes.CellTypeRule` of ``analyse.cell_types`` (the query reuses it)."""
    return CellTypeRule(min_cluster_cells=o.min_cluster_cells, min_effect=o.min_effect,
                        max_runner_up_ratio=o.max_runner_up_ratio, demote_z=o.demote_z, refine_cells=o.refine_cells,
                        min_confidence=o.min_confidence, neighbourhood_check=o.neighbourhood_check,
                        confident_neutrophils=o.confident_neutrophils, n_folds=o.n_folds,
                        max_train_cells=o.max_train_cells, seed=seed)  # fmt: skip


def overcluster_latent(latent: np.ndarray, o: CellTypeOptions, seed: int) -> tuple[np.ndarray, Any]:
    """The over-clustering cell types are called on: Leiden on the latent's kNN graph at ``o.resolution``
    (``auto`` or ``None``: :func:`~atlas.analyse.celltypes.auto_resolution` of the number of cells). Returns
    the labels and the graph (for the neighbourhood check of propagated calls)."""
    res = auto_resolution(len(latent)) if o.resolution in ("auto", None) else float(o.resolution)
    graph = knn_graph(np.asarray(latent), o.n_neighbors, seed)
    labels = overcluster(graph, res, seed)
    log.info("cell types: %d clusters of the latent's graph at Leiden resolution %g", len(set(labels)), res)
    return labels, graph


def _cell_type_clusters(atlas, s: AnalysisSettings, atlas_path: Path) -> tuple[pd.Series, Any]:
    """The clusters cell types are called on (an over-clustering of the scVI graph, or ``cluster_key`` as is)
    and the latent's kNN graph for the neighbourhood check (``None`` without a latent, or with ``cluster_key``
    and the check off: no graph is built for it then)."""
    o = s.cell_types
    latent = atlas.obsm["X_scVI"] if "X_scVI" in atlas.obsm else None
    if o.resolution is None:
        check = o.neighbourhood_check and latent is not None
        return atlas.obs[s.cluster_key], knn_graph(np.asarray(latent), o.n_neighbors, s.seed) if check else None
    if latent is None:
        raise InputDataError(f"{atlas_path} has no obsm['X_scVI'] to over-cluster; rerun the integrate stage, or "
                             "set analyse.cell_types.resolution: null to call types on analyse.cluster_key")  # fmt: skip
    labels, graph = overcluster_latent(latent, o, s.seed)
    return pd.Series(labels, index=atlas.obs_names), graph


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


def _second_qc_pass(
    atlas, store: Path, cells: pd.DataFrame, clusters: pd.DataFrame, min_confidence: float = 0.5
) -> tuple[np.ndarray, pd.DataFrame]:
    """Keep mask of the second QC pass and its table: low-RNA cells stay only in neutrophil-like clusters, and
    only when their calibrated neutrophil probability is at least ``min_confidence``.

    A cluster is neutrophil-like when it was called neutrophil, or called ``unknown`` with neutrophil as its
    leading type (no clear winner, as where monocytes share neutrophil markers): there its normal-RNA cells already
    take the neutrophil call their own calibrated probability gives them, and its low-RNA cells are judged alike
    (an independent cohort's 39 undamaged neutrophils of such a cluster were left out when only called clusters
    counted). Low-quality clusters led by another type keep none of their low-RNA cells.

    Cells that fail are not neutrophils (a propagated neutrophil call becomes unknown, confidence 0); ``clusters``
    gains ``neutrophil_like`` and ``left_out_second_pass``, the cells of each cluster that fail. The table types a
    cell by its call before this pass, so a low-RNA cell called neutrophil and left out counts under neutrophil.
    """
    from ..ingest.qc import qc_by_cell_type, second_pass_keep

    low = _low_rna_flags(atlas, store)
    call = clusters["call"].astype(str)
    led = clusters["winner"].astype(str) == "neutrophil"
    clusters["neutrophil_like"] = ((call == "neutrophil") | ((call == UNKNOWN) & led)).to_numpy(bool)
    like = dict(zip(clusters["cluster"].astype(str), clusters["neutrophil_like"], strict=True))
    neut_cluster = cells["cell_type_cluster"].astype(str).map(like).fillna(False).to_numpy(bool)
    keep = np.ones(len(cells), bool) if low is None else second_pass_keep(
        low, neut_cluster, cells["neutrophil_confidence"].to_numpy(), min_confidence
    )
    drop = ~keep
    left_out = cells.loc[drop, "cell_type_cluster"].astype(str).value_counts()
    clusters["left_out_second_pass"] = clusters["cluster"].astype(str).map(left_out).fillna(0).astype(int).to_numpy()
    called = cells["cell_type"].to_numpy().copy()  # the table types a left-out cell by its call before this pass
    cells.loc[drop, "is_neutrophil"] = False
    relabel = drop & (cells["cell_type"].astype(str) == "neutrophil").to_numpy()
    cells.loc[relabel, "cell_type"] = UNKNOWN
    cells.loc[relabel, "cell_type_confidence"] = 0.0
    obs = pd.DataFrame({"dataset_id": atlas.obs["dataset_id"].to_numpy(), "cell_type": called,
                        "qc_low_rna": low if low is not None else False}, index=atlas.obs_names)  # fmt: skip
    return keep, qc_by_cell_type(obs, keep, "cell_type")


# ------------------------------------------------------------------------------ 2. the neutrophil sub-atlas
@dataclass
class SubAtlas:
    """The neutrophils' own atlas (or, with too few neutrophils, their part of the whole atlas)."""

    adata: Any  # neutrophils (x their HVGs): obsm X_scVI, obs neutrophil_leiden, obsp connectivities
    summary: dict[str, Any]
    reliability: dict[str, float]  # split-half reliability of each state and index signature on the neutrophils
    notes: list[str] = field(default_factory=list)
    refined: Refinement | None = None  # the state and index signatures refined on these neutrophils


@dataclass
class Refinement:
    """What :func:`refine_signatures` learned: programmes by source signature, their scores and reliabilities."""

    programmes: dict[str, Any] = field(default_factory=dict)  # source signature -> refine.Programme
    scores: pd.DataFrame | None = None  # neutrophils x programme columns
    reliability: dict[str, float] = field(default_factory=dict)  # programme column -> split-half reliability
    table: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per signature: refined or not, and why

    def as_dicts(self, columns) -> dict[str, dict]:
        """The programmes whose score column is among ``columns``, as plain dicts by column (what a query scores)."""
        wanted = set(columns)
        return {p.name: p.to_dict() for p in self.programmes.values() if p.name in wanted}


def neutrophil_subatlas(atlas, store: Path, s: AnalysisSettings, subatlas_base=None) -> SubAtlas:
    """Read the neutrophils' counts once: the signature reliabilities, then their own scVI, graph and clusters
    (``analyse.subatlas``); below ``min_neutrophils_for_subatlas`` the whole-atlas latent gives the graph."""
    from .subatlas import build_subatlas, read_store_rows, subatlas_settings

    is_neut = atlas.obs["is_neutrophil"].to_numpy(bool)
    n_neut = int(is_neut.sum())
    counts = read_store_rows(store, atlas.obs_names[is_neut])
    names = s.signatures_read()
    reliability = _signature_reliabilities(counts, names, s.seed)
    notes: list[str] = []
    refined = refine_signatures(counts, atlas.obs.loc[counts.obs_names, "dataset_id"].astype(str).to_numpy(),
                                names, s, notes)  # fmt: skip
    reliability |= refined.reliability
    _note_gene_panels(counts, notes)
    if n_neut >= s.min_neutrophils_for_subatlas:
        adata, summary = build_subatlas(counts, subatlas_settings(subatlas_base, s.subatlas))
    else:
        import scanpy as sc

        from ..core.jit import cache_graph_kernels

        cache_graph_kernels()
        _note(notes, f"{n_neut} neutrophils < min_neutrophils_for_subatlas={s.min_neutrophils_for_subatlas}: "
                     "the whole-atlas latent is used for their graph")  # fmt: skip
        adata = atlas[is_neut].copy()
        sc.pp.neighbors(adata, use_rep="X_scVI", n_neighbors=min(15, max(2, n_neut - 1)))
        adata.obs["neutrophil_leiden"] = "0"
        summary = {"n_cells": n_neut, "fallback": "whole-atlas latent"}
    return SubAtlas(adata, summary, reliability, notes, refined)


def _note_gene_panels(counts, notes: list[str]) -> None:
    """Name the data sets of these neutrophils that ingest treated as gene panels (its QC table's ``panel_scale``,
    ``qc.thresholds.panel_share``): the genes they lack read as zero in their state and index scores."""
    qc = counts.uns.get("atlas", {}).get("qc")
    if qc is None or "panel_scale" not in qc or "measured" not in counts.varm or "dataset_id" not in counts.obs:
        return
    record = pd.DataFrame(counts.varm["measured"])
    n = record[[c for c in record.columns if c in set(counts.obs["dataset_id"].astype(str))]].sum(axis=0)
    panels = n[n.index.isin(qc.index[qc["panel_scale"] < 1])]
    if len(panels):
        sets = ", ".join(f"{d} ({int(k):,} genes)" for d, k in panels.items())
        _note(notes, f"data sets holding under half the genes of the one with the most ({n.max():,}): {sets}; the genes "
              "they lack read as zero in their neutrophils' state and index scores (up to 1.5 SD off on an independent "
              "cohort), so their states and T3 fractions compare less well with the others'; their raw counts with "
              "every gene are better")  # fmt: skip


def refine_signatures(
    counts, blocks: np.ndarray, names: list[str], s: AnalysisSettings, notes: list[str]
) -> Refinement:
    """Each registry signature in ``names`` refined on the neutrophils' ``counts`` (:mod:`atlas.analyse.refine`,
    ``analyse.refine_signatures``); a signature not refined is noted and read as it is."""
    from ..catalogue.signatures import load_registry
    from .refine import (
        prepare_candidates,
        programme_reliabilities,
        programme_scores,
        refine_programme,
        refined_name,
    )

    o = s.refine_signatures
    rows: list[dict[str, Any]] = []
    if not o.enabled:
        return Refinement()
    reg = load_registry()
    candidates = prepare_candidates(counts, blocks, min_detection=o.min_detection)  # shared by the signatures
    programmes: dict[str, Any] = {}
    index_signatures = {*s.reprogramming_up, *s.reprogramming_down}  # refined as they are: one axis's two ends
    for name in names:
        if name not in reg:
            rows.append({"signature": name, "refined": False, "reason": "not a registry signature"})
            continue
        apart = None
        if o.side_states_apart and name not in index_signatures:
            apart = {m: reg[m].genes for m in names if m != name and m in reg}
        prog, info = refine_programme(counts, reg[name].genes, fdr=o.fdr, max_iterations=o.max_iterations,
                                      min_genes=o.min_genes, name=refined_name(name), source=name,
                                      candidates=candidates, random_state=s.seed, apart_from=apart)  # fmt: skip
        row = {"signature": name, "refined": prog is not None, "programme": refined_name(name) if prog else "",
               **{k: (", ".join(v) if isinstance(v, list) else v) for k, v in info.items()}}  # fmt: skip
        rows.append(row)
        if prog is None:
            _note(notes, f"signature {name} not refined on the neutrophils ({info.get('reason')}): read as it is",
                  logging.INFO)  # fmt: skip
            continue
        programmes[name] = prog
        log.info("signature %s refined on the neutrophils: %d genes (%d of its %d detected), %d iteration(s), "
                 "correlation with the signature %.2f", name, info["n_genes"], info["n_seed_genes_kept"],
                 info["n_seed_genes"], info["iterations"], info["corr_with_signature"])  # fmt: skip
    if not programmes:
        return Refinement(table=pd.DataFrame(rows))
    by_column = {p.name: p for p in programmes.values()}
    return Refinement(programmes, programme_scores(counts, list(by_column.values())),
                      programme_reliabilities(counts, by_column, seed=s.seed), pd.DataFrame(rows))  # fmt: skip


def _reading(s: AnalysisSettings, programmes: dict[str, Any]) -> AnalysisSettings:
    """``s`` with each refined signature read through its programme: the states and the index's down side read
    the programme instead of the signature, the index's up side reads both (the reliability weights balance
    them, the programme's disattenuated by its correlation with the signature), so the index never loses a
    signature that already matches the data: on the simulator, whose T3 programme T3_proxy matches, the programme
    alone (which also takes the genes drifting along the trajectory) once ranked T3 cells a little below
    T3_proxy."""
    if not programmes:
        return s
    swap = {src: p.name for src, p in programmes.items()}

    def read(names: list[str]) -> list[str]:
        return [swap.get(x, x) for x in names]

    up = list(dict.fromkeys(y for x in s.reprogramming_up for y in (x, swap.get(x, x))))
    return s.model_copy(update={"reprogramming_up": up,
                                "reprogramming_down": read(s.reprogramming_down),
                                "state_signatures": {k: read(v) for k, v in s.state_signatures.items()}})  # fmt: skip


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


# ------------------------------------------------------------------------------ 3. states
def assign_neutrophil_states(
    neut_obs: pd.DataFrame, scores: pd.DataFrame, sub: SubAtlas, s: AnalysisSettings
) -> tuple[dict[str, Any], pd.DataFrame]:
    """States of the neutrophils (evidence shrunk to the sub-atlas clusters by each score's reliability);
    writes the state columns into ``neut_obs``. Returns the fitted rule's facts and the per-cluster table."""
    sscore = state_scores(scores, s.state_signatures)
    state_rel = {state: float(np.mean([sub.reliability.get(x, np.nan) for x in sigs]))
                 for state, sigs in s.state_signatures.items()}  # fmt: skip
    states = assign_states(sscore, connectivities=sub.adata.obsp.get("connectivities"),
                           smoothing_steps=s.state_smoothing_steps, min_z=s.state_min_z,
                           min_margin=s.state_min_margin, default_state=s.default_state,
                           clusters=neut_obs["neutrophil_leiden"].to_numpy(), reliability=state_rel,
                           cells=s.state_cells, shrink=s.state_shrink_evidence)  # fmt: skip
    state_fit = {"default_state_used": states.attrs.get("default_state") or "unassigned",
                 "reliability": state_rel, "evidence_weight": states.attrs.get("evidence_weight", {}),
                 "cluster_weight": states.attrs.get("cluster_weight", {}), "cells": s.state_cells}  # fmt: skip
    for key in ("true_score_cuts", "expected_precision"):  # the calibrated confidence (a query reads the cuts)
        if key in states.attrs:
            state_fit[key] = states.attrs[key]
    if "cell_cuts" in states.attrs:
        state_fit["cell_cuts"] = states.attrs["cell_cuts"]
        state_fit["z_loc"], state_fit["z_scale"] = states.attrs["z_loc"], states.attrs["z_scale"]
    for col in states.columns:
        neut_obs[col] = states[col]
    return state_fit, state_clusters(states, neut_obs["neutrophil_leiden"], sscore)


# ------------------------------------------------------------------------------ 4. index and pseudotime
def reprogramming_index(
    neut_obs: pd.DataFrame, scores: pd.DataFrame, reliability: dict[str, float], s: AnalysisSettings, method: str,
    programmes: dict[str, Any] | None = None,
) -> ReprogrammingAxis:
    """Fit the reprogramming axis on the neutrophils (``method``: how the scores were computed) and write
    ``reprogramming_index`` into ``neut_obs``. ``programmes`` (source signature -> refined programme): an up
    programme counts by the part of its signal its source signature shares (the axis's anchors)."""
    anchors = {p.name: src for src, p in (programmes or {}).items()}
    axis = fit_reprogramming_axis(scores, up=s.reprogramming_up, down=s.reprogramming_down, method=method,
                                  reliability=reliability, anchors=anchors)  # fmt: skip
    log.info("reprogramming index weights (%s): %s", axis.extra.get("weighting"), axis.weights)
    neut_obs["reprogramming_index"] = apply_reprogramming_axis(scores, axis)
    return axis


def neutrophil_pseudotime(neut_obs: pd.DataFrame, sub: SubAtlas, s: AnalysisSettings) -> tuple[dict[str, Any], list[str]]:
    """Write ``reprogramming_pseudotime`` into ``neut_obs``; returns the method's summary and its notes."""
    pt, summary, pt_notes = reprogramming_pseudotime(sub.adata, neut_obs, s)
    neut_obs["reprogramming_pseudotime"] = pt
    notes: list[str] = []
    for note in pt_notes:
        _note(notes, note)
    return summary, notes


def _index_vs_pseudotime(neut_obs: pd.DataFrame, pt_summary: dict[str, Any]) -> pd.DataFrame:
    index, pt = neut_obs["reprogramming_index"], neut_obs["reprogramming_pseudotime"]
    rho = finite_spearman(index, pt)
    return pd.DataFrame([{"spearman": rho, "n_cells": int((index.notna() & pt.notna()).sum()), **pt_summary}])


# ------------------------------------------------------------------------------ 5. tables and statistics
def neutrophil_tables(neut_obs: pd.DataFrame, s: AnalysisSettings) -> dict[str, pd.DataFrame]:
    """State composition and the patient-level statistics (cells are never counted as independent)."""
    return {"state_composition": _composition(neut_obs, "neutrophil_state"), **_statistics(neut_obs, s)}


def stats_settings(s: AnalysisSettings) -> st.StatsSettings:
    """The patient statistics' settings of an analysis (``analyse.statistics`` and its seed)."""
    o = s.statistics
    return st.StatsSettings(min_neutrophils_per_patient=o.min_neutrophils_per_patient, n_boot=o.n_boot, ci=o.ci,
                            random_state=s.seed, interval=o.interval)  # fmt: skip


def _statistics(neut: pd.DataFrame, s: AnalysisSettings) -> dict[str, pd.DataFrame]:
    stats = stats_settings(s)
    cells = neut.assign(is_t3=neut["neutrophil_state"].astype(str) == "T3")
    samples = st.per_sample(cells)
    patients = st.per_patient(samples, stats)
    groups = _with_t3_call_confidence(st.cancer_type_groups(samples, patients, stats), cells)
    comparisons = [st.paired_tissue_comparison(patients, "tumour", b) for b in ("blood", "adjacent_normal")]
    return {
        "samples": samples,
        "patients": patients,
        "cancer_types": groups,
        "tissue_comparison": pd.concat(comparisons, ignore_index=True),
        "ranking": st.rank_cancers(groups) if len(groups) else groups,
    }


def _with_t3_call_confidence(groups: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """``groups`` with ``t3_call_confidence``: per cancer type and tissue, the mean calibrated confidence of its T3
    calls (their expected precision; NaN without a T3 call or a confidence)."""
    if not len(groups) or "neutrophil_state_confidence" not in cells:
        return groups
    keys = ["cancer_type", "tissue"]
    conf = (cells[cells["is_t3"]].groupby(keys, observed=True)["neutrophil_state_confidence"].mean()
            .rename("t3_call_confidence").reset_index())  # fmt: skip
    return groups.merge(conf.astype({k: groups[k].dtype for k in keys}), on=keys, how="left")


def _composition(obs: pd.DataFrame, column: str) -> pd.DataFrame:
    g = obs.groupby(["cancer_type", "tissue", column], observed=True, sort=True).size().rename("n_cells")
    out = g.reset_index()
    out["fraction"] = out["n_cells"] / out.groupby(["cancer_type", "tissue"], observed=True)[
        "n_cells"
    ].transform("sum")
    return out


# ------------------------------------------------------------------------------ steps 2 to 5
@dataclass
class NeutrophilAnalysis:
    """What :func:`analyse_neutrophils` found (its per-neutrophil columns are in ``atlas.obs``)."""

    adata: Any  # the sub-atlas file's content: neutrophils with all the atlas's annotations
    axis: ReprogrammingAxis
    state_fit: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    notes: list[str]
    seconds: dict[str, float]


def analyse_neutrophils(
    atlas, scores: pd.DataFrame, store: Path, s: AnalysisSettings, method: str, subatlas_base=None
) -> NeutrophilAnalysis:
    """Sub-atlas -> states -> reprogramming index and pseudotime -> statistics, on the atlas's neutrophils.

    ``scores``: the atlas's signature scores (all cells); ``method``: how they were computed.
    """
    seconds: dict[str, float] = {}
    with timed(seconds, "subatlas"):
        sub = neutrophil_subatlas(atlas, store, s, subatlas_base)
    names = atlas.obs_names[atlas.obs["is_neutrophil"].to_numpy(bool)]
    neut_obs = atlas.obs.loc[names].copy()
    neut_obs["neutrophil_leiden"] = sub.adata.obs["neutrophil_leiden"].astype(str).to_numpy()
    neut_scores = scores.loc[names]
    refined = sub.refined or Refinement()
    if refined.scores is not None:  # the programmes' scores: beside the signatures', and into the atlas
        neut_scores = neut_scores.join(refined.scores.loc[names])
        for col in refined.scores.columns:
            neut_obs[col] = neut_scores[col].to_numpy()
            atlas.obs[col] = np.nan
            atlas.obs.loc[names, col] = neut_obs[col].to_numpy()
    read = _reading(s, refined.programmes)
    state_fit, state_table = assign_neutrophil_states(neut_obs, neut_scores, sub, read)
    state_fit["signatures_read"] = read.state_signatures
    # every programme a state reads, so a query can score its own cells and call them with the same cuts
    state_fit["programmes"] = refined.as_dicts(c for cols in read.state_signatures.values() for c in cols)
    axis = reprogramming_index(neut_obs, neut_scores, sub.reliability, read, method, refined.programmes)
    axis = replace(axis, programmes=refined.as_dicts([*axis.up, *axis.down]))
    with timed(seconds, "pseudotime"):
        pt_summary, pt_notes = neutrophil_pseudotime(neut_obs, sub, s)
    tables = {"state_clusters": state_table, "index_vs_pseudotime": _index_vs_pseudotime(neut_obs, pt_summary)}
    if len(refined.table):
        tables["refined_signatures"] = refined.table
    for col in NEUTROPHIL_COLUMNS:
        values = neut_obs[col].astype(str) if col == "neutrophil_state" else neut_obs[col]
        atlas.obs.loc[names, col] = values.to_numpy()
    tables |= neutrophil_tables(neut_obs, s)
    sub.adata.obs = neut_obs  # the sub-atlas file: its own latent and UMAP, all the atlas's annotations
    sub.adata.uns["sub_atlas"] = plain(sub.summary)
    sub.adata.obsp.pop("distances", None)
    return NeutrophilAnalysis(sub.adata, axis, state_fit, tables, [*sub.notes, *pt_notes], seconds)


def plain(obj: Any) -> Any:
    """Nested dicts/lists of plain values (AnnData's uns writer refuses None and tuples)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj
