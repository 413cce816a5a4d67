"""``analyse``: from the reference bundle, the store and the scores to the annotated atlas and its tables.

Reads ``reference/atlas.h5ad`` (latent, UMAP, clusters), ``scores.parquet`` and the store (only for
signatures the score stage did not compute and for the neutrophils' counts); writes ``atlas.h5ad``,
``neutrophils.h5ad``, ``tables/`` and ``analysis.json`` (see ``docs/run_directory.md``). Never reads
``truth_*`` columns (they are only carried through).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.atomic import atomic_path, write_anndata, write_json
from ..core.errors import InputDataError
from ..core.layout import RunLayout
from ..score.settings import ScoreConfig
from .settings import AnalysisSettings
from .steps import (
    NeutrophilAnalysis,
    analyse_neutrophils,
    cell_type_tables,
    identify_neutrophils,
    init_neutrophil_columns,
    plain,
    timed,
)

__all__ = ["AnalysisResult", "analyse"]

log = logging.getLogger(__name__)


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
    store: Path, existing: pd.DataFrame | None, names: list[str], obs_names: pd.Index, scoring: ScoreConfig
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
    store: Path, markers: dict[str, list[str]], obs_names: pd.Index, scoring: ScoreConfig
) -> pd.DataFrame:
    from ..score import score_store

    opts = scoring.kwargs() | {"method": "scanpy"}  # marker evidence is always the mean-minus-control score
    return score_store(store, {k: list(v) for k, v in markers.items()}, **opts).loc[obs_names]


def analyse(
    rundir: str | Path,
    *,
    store: str | Path,
    refdir: str | Path,
    scores: str | Path | None,
    settings: AnalysisSettings | None = None,
    scoring: ScoreConfig | None = None,
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
    s = settings or AnalysisSettings()
    scoring = scoring or ScoreConfig()
    rundir, store, refdir = Path(rundir), Path(store), Path(refdir)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    atlas, atlas_path, existing = _read_inputs(refdir, scores, s)
    _check_signature_names(s, existing)
    with timed(seconds, "cell_types"):  # cell types and neutrophils, then the second QC pass
        markers = _marker_scores(store, s.cell_type_markers, atlas.obs_names, scoring)
        calls = identify_neutrophils(atlas, markers, store, s, atlas_path)
    notes = list(calls.notes)
    all_scores = _score_atlas(atlas, store, existing, s, scoring)
    is_neut = atlas.obs["is_neutrophil"].to_numpy(bool)
    n_neut = int(is_neut.sum())
    log.info("%d neutrophils among %d cells", n_neut, atlas.n_obs)
    init_neutrophil_columns(atlas, s)
    tables = cell_type_tables(atlas.obs, calls)
    if s.qc_audit:
        with timed(seconds, "qc_audit"):
            _qc_audit(store, refdir, atlas, tables, notes, s, lambda: _evidence(atlas, markers, s, scoring))
    neut = None
    if n_neut == 0:
        notes.append("no neutrophils found: no sub-atlas, states, index, pseudotime or statistics")
        log.warning(notes[-1])
    else:  # sub-atlas -> states -> reprogramming index and pseudotime -> statistics
        neut = analyse_neutrophils(atlas, all_scores, store, s, scoring.method, subatlas_base)
        notes += neut.notes
        tables |= neut.tables
        seconds |= neut.seconds
    _record_rules(atlas, neut, all_scores, s, scoring)
    layout = RunLayout(rundir)
    with timed(seconds, "write"):
        _write_outputs(layout, atlas, neut, tables)
        state_counts = (atlas.obs.loc[is_neut, "neutrophil_state"].astype(str).value_counts().to_dict()
                        if n_neut else {})  # fmt: skip
    seconds["total"] = time.perf_counter() - t0
    summary = {"n_cells": atlas.n_obs, "n_neutrophils": n_neut, "states": state_counts, "notes": notes,
               "settings": s.model_dump(mode="json"), "scoring": scoring.kwargs(), "seconds": seconds}  # fmt: skip
    write_json(layout.analysis_json, summary)
    return AnalysisResult(rundir, atlas.n_obs, n_neut, state_counts, notes, seconds)


def _evidence(atlas, markers: pd.DataFrame, s: AnalysisSettings, scoring: ScoreConfig):
    """The analysis's marker evidence in the atlas's units, for the QC audit's check of its labels."""
    from .qc_audit import MarkerEvidence

    types = {t: g for t, g in s.cell_type_markers.items() if t in markers.columns}
    return MarkerEvidence.of_atlas(types, markers, atlas.obs["cell_type_cluster"], s.cell_types.min_cluster_cells,
                                   scoring.kwargs())  # fmt: skip


def _qc_audit(store: Path, refdir: Path, atlas, tables: dict[str, pd.DataFrame], notes: list[str],
              s: AnalysisSettings, evidence: Callable[[], Any]) -> None:  # fmt: skip
    """The cells QC removed at ingest, labelled from the atlas and checked against their own markers
    (``evidence()``), into ``tables`` (an optional step: a failure is a note, never the end of the analysis)."""
    from ..ingest.removed import removed_store_path
    from .qc_audit import audit_removed_cells, with_removed_cells

    path = removed_store_path(store)
    try:
        audit = audit_removed_cells(path, refdir, atlas, seed=s.seed, evidence=evidence()) if path.exists() else None
    except Exception as e:  # an optional table: say why it is missing and go on
        notes.append(f"the cells QC removed at ingest were not labelled ({type(e).__name__}: {e}); "
                     "tables/qc_by_cell_type.csv covers the cells in the store only")  # fmt: skip
        log.warning(notes[-1])
        return
    if audit is None:
        notes.append(f"no {path.name} beside the store (ingest writes it since December 2026): "
                     "tables/qc_by_cell_type.csv covers the cells in the store only; rerun ingest to audit QC")  # fmt: skip
        log.info(notes[-1])
        return
    notes.extend(audit.notes)
    tables["qc_by_cell_type"] = with_removed_cells(tables["qc_by_cell_type"], audit.cells)
    tables["qc_removed_cells"] = audit.cells


def _read_inputs(refdir: Path, scores: str | Path | None, s: AnalysisSettings) -> tuple[Any, Path, pd.DataFrame | None]:
    """The reference bundle's atlas, its path and the score stage's scores (None without), checked."""
    import anndata as ad

    atlas_path = refdir / "atlas.h5ad"
    if not atlas_path.exists():
        raise InputDataError(f"{atlas_path} is missing: run the integrate stage (atlas integrate) first")
    atlas = ad.read_h5ad(atlas_path)
    if s.cluster_key not in atlas.obs:
        raise InputDataError(f"{atlas_path} has no obs column {s.cluster_key!r} (analysis.cluster_key)")
    existing = pd.read_parquet(scores) if scores is not None and Path(scores).exists() else None
    if existing is not None:
        lost = atlas.obs_names.difference(existing.index)
        if len(lost):
            raise InputDataError(
                f"{scores} lacks {len(lost)} cells of the atlas (e.g. {lost[0]}); rerun the score stage"
            )
    return atlas, atlas_path, existing


def _score_atlas(
    atlas, store: Path, existing: pd.DataFrame | None, s: AnalysisSettings, scoring: ScoreConfig
) -> pd.DataFrame:
    """The score stage's scores plus the state and index signatures (scored here if missing), into ``atlas.obs``."""
    score_names = list(dict.fromkeys([*(existing.columns if existing is not None else []), *s.signatures_read()]))
    all_scores = _scores_for(store, existing, score_names, atlas.obs_names, scoring)
    for c in all_scores.columns:
        atlas.obs[c] = all_scores[c].to_numpy()
    return all_scores


def _record_rules(
    atlas, neut: NeutrophilAnalysis | None, all_scores: pd.DataFrame, s: AnalysisSettings, scoring: ScoreConfig
) -> None:
    """The reprogramming axis, the scoring, the cell-type rule and the state rule, into ``atlas.uns`` (a query reads
    them to score, annotate and call its own cells as the reference's were)."""
    atlas.uns["reprogramming_axis"] = neut.axis.to_dict() if neut is not None else {}
    atlas.uns["atlas_scoring"] = {**{k: v for k, v in scoring.kwargs().items() if k not in ("backend", "chunk_size")},
                                  "signatures": list(all_scores.columns)}  # fmt: skip
    state_rule = s.model_dump(include={"state_signatures", "state_smoothing_steps", "state_min_z", "state_min_margin",
                                       "state_shrink_evidence", "default_state"})  # fmt: skip
    atlas.uns["cell_type_rule"] = plain(s.model_dump(mode="json", include={"cell_type_markers", "cell_types", "seed"}))
    atlas.uns["state_rule"] = plain((neut.state_fit if neut is not None else {}) | state_rule)


def _write_outputs(layout: RunLayout, atlas, neut: NeutrophilAnalysis | None, tables: dict[str, pd.DataFrame]) -> None:
    """``tables/`` (one atomic directory), ``atlas.h5ad`` and ``neutrophils.h5ad`` (removed without neutrophils)."""
    with atomic_path(layout.tables) as tmp:
        tmp.mkdir()
        for name, df in tables.items():
            df.to_csv(tmp / f"{name}.csv", index=False)  # inside the atomic directory
    write_anndata(layout.atlas, _h5ad_safe(atlas))
    neut_path = layout.neutrophils
    if neut is not None:
        write_anndata(neut_path, _h5ad_safe(neut.adata))
    elif neut_path.exists():
        neut_path.unlink()


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


def _h5ad_safe(adata):
    """Object obs columns as categories (h5ad stores them compactly and keeps NaN as missing)."""
    for col in adata.obs.columns:
        if pd.api.types.is_string_dtype(adata.obs[col].dtype):  # object (pandas 2) or str (pandas 3)
            adata.obs[col] = adata.obs[col].astype("category")
    adata.uns = plain(dict(adata.uns))
    return adata
