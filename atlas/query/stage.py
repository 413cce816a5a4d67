"""``map_query``: a new data set mapped onto the reference, labelled, scored and compared.

Steps: check the reference -> ingest the query (same machinery as the atlas) -> gene overlap ->
prepare (HVGs, zero-fill, batch names) -> scArches surgery -> label transfer and UMAP placement -> the
query's own marker calls (cells of a type the reference lacks become unknown) ->
scores and reprogramming index -> neutrophil states from the query's own evidence at the reference's cuts ->
tables, ``query.h5ad``, ``report.html``. The output folder is
built under a temporary name and renamed at the end, so a failure leaves no partial ``DIR``; inputs
are only read. The reference and ``DIR`` may be URLs (``s3://``, ``gs://``): the reference is read from
a local cache (:func:`atlas.query.reference.fetch_reference`), and a URL ``DIR`` is built in a local
temporary folder and uploaded once complete (a failed upload keeps that folder and says where).

Layout of ``DIR``::

    query.h5ad            cells x reference HVGs (raw counts, zero-filled); obs: the query's metadata,
                          predicted_cell_type, prediction_uncertainty (vote_/distance_/marker_uncertainty),
                          cell_type_rule (transfer, uncertain, novel_type), transferred_cell_type (the vote's
                          winner), marker_cell_type (the query's own call from its markers),
                          predicted_state, state_uncertainty, state_rule (and predicted_state_knn, the
                          reference neighbours' vote), reprogramming_index, one column per score
                          (the refined programmes among them); obsm X_scVI (query latent in the reference space), X_umap (placement)
    store.h5ad            the ingested query (all genes) with store.{qc,genes,neutrophils}.csv and
                          store.removed.h5ad (the cells its QC removed above the floor)
    tables/               gene_overlap.csv, gene_overlap_summary.csv, batch_renames.csv, predictions.csv,
                          marker_check.csv (transferred label x own marker call), cell_type_composition.csv,
                          state_composition.csv, reprogramming_index.csv, score_means.csv
    model/                the query model (scvi-tools; load with adata=query.h5ad)
    report.html, figures/ the query report
    query.json            settings, reference, overlap, timings, notes, versions
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..core import storage
from ..core.atomic import atomic_path
from ..core.errors import InputDataError, RunDirError
from ..integrate.label_transfer import transfer_labels
from .compare import (
    composition,
    index_summary,
    programme_scores_on_store,
    reprogramming_index,
    score_query,
    scoring_kwargs,
)
from .inputs import query_ingest_config
from .prepare import check_overlap, gene_overlap, prepare_query
from .reference import Reference, load_reference
from .settings import QuerySettings

__all__ = ["QueryResult", "map_query"]

log = logging.getLogger(__name__)

#: ``cell_type_rule`` of a query cell: its transferred label stands, it is too uncertain (unknown), or its own
#: markers call a type the reference lacks (unknown; :mod:`atlas.query.markers`)
CELL_TYPE_RULES = ("transfer", "uncertain", "novel_type")


@dataclass
class QueryResult:
    """What :func:`map_query` wrote and found."""

    out_dir: Path | str  # a URL when the results were uploaded
    n_cells: int
    overlap: float
    predictions: dict[str, int]
    unknown_fraction: float
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _settings(settings: QuerySettings | dict | None, overrides: dict) -> QuerySettings:
    from ..core.settings import validate

    base = settings.model_dump() if isinstance(settings, QuerySettings) else dict(settings or {})
    return validate(QuerySettings, {**base, **overrides}, "query settings")


def _plain(obj: Any, drop_none: bool = True) -> Any:
    """Nested dicts/lists of plain values for h5ad ``uns`` (None dropped) and JSON (``drop_none=False``)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v, drop_none) for k, v in obj.items() if v is not None or not drop_none}
    if isinstance(obj, list | tuple):
        return [_plain(v, drop_none) for v in obj if v is not None or not drop_none]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist(), drop_none)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj) and not drop_none:
        return None  # JSON has no NaN
    return obj


def _reference_labels(ref: Reference) -> tuple[pd.Series, np.ndarray]:
    """The reference's cell-type labels (as objects) and which cells have one."""
    labels = ref.atlas.obs[ref.label_key].astype(object)
    return labels, labels.notna().to_numpy()


def _transfer_cell_types(q, latent: np.ndarray, ref: Reference, s: QuerySettings) -> None:
    """predicted_cell_type with its uncertainties and rule, transferred_cell_type (the vote's winner before the
    threshold), and the placement on the reference UMAP, into ``q``."""
    labels, ok = _reference_labels(ref)
    table, umap = transfer_labels(
        ref.latent()[ok], labels[ok].astype(str).to_numpy(), latent, threshold=s.uncertainty_threshold,
        distance_uncertainty=s.distance_uncertainty, distance_quantile=s.distance_quantile,
        calibration_cells=s.calibration_cells, ref_umap=ref.umap()[ok], k=s.n_neighbors, unknown=s.unknown_label,
        seed=s.seed,
    )  # fmt: skip
    cats = sorted(set(labels[ok].astype(str))) + ([s.unknown_label] if s.unknown_label not in set(labels[ok]) else [])
    q.obs["predicted_cell_type"] = pd.Categorical(table["label"].to_numpy(), categories=cats)
    q.obs["prediction_uncertainty"] = table["uncertainty"].to_numpy()
    q.obs["vote_uncertainty"] = table["vote_uncertainty"].to_numpy()
    q.obs["distance_uncertainty"] = table["distance_uncertainty"].to_numpy()
    q.obs["transferred_cell_type"] = pd.Categorical(table["best_label"].to_numpy(), categories=cats)
    q.obs["cell_type_rule"] = pd.Categorical(np.where(table["label"] == s.unknown_label, "uncertain", "transfer"),
                                             categories=list(CELL_TYPE_RULES))  # fmt: skip
    q.obsm["X_umap"] = umap


def _marker_check(q, latent: np.ndarray, store: Path, run: _Run) -> None:
    """``marker_check``: the query's own cell-type calls (``marker_cell_type``); cells whose own markers call a type
    the reference lacks become unknown (``marker_uncertainty`` 1, rule ``novel_type``). See :mod:`.markers`."""
    ref, s = run.ref, run.s
    if not s.marker_check:
        return
    from .markers import marker_check

    labels, ok = _reference_labels(ref)
    check = marker_check(store, q.obs_names, latent, q.obs["transferred_cell_type"].astype(str).to_numpy(),
                         labels[ok].astype(str).value_counts(), record=ref.cell_type_rule,
                         scoring=scoring_kwargs(ref.scoring), min_reference_cells=s.n_neighbors,
                         notes=run.notes)  # fmt: skip
    if check is None:
        return
    q.obs["marker_cell_type"] = pd.Categorical(check.own)
    q.obs["marker_uncertainty"] = check.novel.astype(np.float64)
    q.obs["prediction_uncertainty"] = np.maximum(q.obs["prediction_uncertainty"].to_numpy(), check.novel)
    pred = q.obs["predicted_cell_type"]
    if s.unknown_label not in pred.cat.categories:
        pred = pred.cat.add_categories([s.unknown_label])
    q.obs["predicted_cell_type"] = pred.where(~check.novel, s.unknown_label)
    q.obs["cell_type_rule"] = q.obs["cell_type_rule"].where(~check.novel, "novel_type")


def _called_neutrophil(q, s: QuerySettings) -> np.ndarray:
    """Query cells whose transferred label is the neutrophil label."""
    return (q.obs["predicted_cell_type"].astype(str) == s.neutrophil_label).to_numpy()


def _transfer_states(q, latent: np.ndarray, ref: Reference, s: QuerySettings, notes: list[str]) -> None:
    """predicted_state and state_uncertainty into ``q``: from the reference's neutrophils to the query's."""
    state = np.full(q.n_obs, None, dtype=object)
    state_u = np.full(q.n_obs, np.nan)
    is_neut = _called_neutrophil(q, s)
    if ref.state_key is not None:
        obs = ref.atlas.obs
        labels, ok = _reference_labels(ref)
        ref_neut = ok & (labels.astype(str) == s.neutrophil_label).to_numpy() & obs[ref.state_key].notna().to_numpy()
        if ref_neut.any() and is_neut.any():
            st, _ = transfer_labels(
                ref.latent()[ref_neut], obs[ref.state_key][ref_neut].astype(str).to_numpy(), latent[is_neut],
                threshold=s.state_uncertainty_threshold, distance_uncertainty=False, k=s.n_neighbors,
                unknown=s.unknown_label, seed=s.seed,
            )  # fmt: skip
            state[is_neut], state_u[is_neut] = st["label"].to_numpy(), st["vote_uncertainty"].to_numpy()
        elif not ref_neut.any():
            notes.append(f"the reference has no {s.neutrophil_label} with a {ref.state_key}: no states transferred")
            log.warning(notes[-1])
    q.obs["predicted_state"] = pd.Categorical(state)
    q.obs["state_uncertainty"] = state_u


def _predictions(obs: pd.DataFrame) -> pd.DataFrame:
    g = obs.groupby(["dataset_id", "predicted_cell_type"], observed=True, sort=True)
    out = g.agg(n_cells=("prediction_uncertainty", "size"),
                mean_uncertainty=("prediction_uncertainty", "mean")).reset_index()  # fmt: skip
    out["fraction"] = out["n_cells"] / out.groupby("dataset_id", observed=True)["n_cells"].transform("sum")
    if "scanvi_prediction" in obs:
        agree = obs["scanvi_prediction"].astype(str) == obs["predicted_cell_type"].astype(str)
        out["scanvi_agreement"] = (agree.groupby([obs["dataset_id"], obs["predicted_cell_type"]], observed=True)
                                   .mean().reindex(pd.MultiIndex.from_frame(out[["dataset_id", "predicted_cell_type"]]))
                                   .to_numpy())  # fmt: skip
    return out


def _within(path: storage.Location, folder: storage.Location) -> bool:
    """Whether ``path`` is ``folder`` or inside it (URLs compared as strings)."""
    if storage.is_url(path) or storage.is_url(folder):
        a, b = str(path).rstrip("/"), str(folder).rstrip("/")
        return a == b or a.startswith(b + "/")
    p, f = Path(path).resolve(), Path(folder).resolve()
    return p == f or f in p.parents


def _check_out(out: storage.Location, refdir: storage.Location, overwrite: bool) -> None:
    if storage.is_url(out):
        storage.require_bucket(str(out), "--out: ")
    exists = storage.exists(out)
    if exists and not overwrite:
        raise RunDirError(f"{out} already exists; pass --overwrite (overwrite=True) or choose another --out")
    if _within(refdir, out) or (exists and _within(out, refdir)):
        raise RunDirError(f"--out {out} would overwrite the reference {refdir}; choose a folder outside it")


def _check_inputs(out: storage.Location, cfg) -> None:
    """An existing ``out`` replaced by the output must not be or hold a query input."""
    for ds in cfg.datasets:
        for p in (ds.path, ds.obs_path):
            if p is not None and _within(p, out):
                raise RunDirError(f"--out {out} holds the query input {p}; choose another output folder")


def _local_out(out: storage.Location) -> Path:
    """Where the output folder is built: ``out`` itself, or for a URL a fresh local temporary folder."""
    if not storage.is_url(out):
        return Path(out)
    import tempfile

    return Path(tempfile.mkdtemp(prefix="atlas-query-")) / storage.name(out)


@dataclass
class _Run:
    """What every step reads (the reference, the settings) and adds to (timings, notes)."""

    ref: Reference
    s: QuerySettings
    t0: float
    notes: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _Prepared:
    """The query ready to map (``q``: its cells on the reference's HVGs) and what ingesting and preparing found."""

    ingested: Any  # IngestResult: its qc table has cells_in / cells_out per data set
    q: Any  # AnnData
    genes: pd.DataFrame
    overlap: pd.DataFrame
    renames: pd.DataFrame


def _ingest(cfg, store: Path, seconds: dict[str, float]):
    """The query ingested into ``store`` (QC and gene harmonisation as for the atlas), and read back."""
    import anndata as ad

    from ..ingest.stage import ingest

    t = time.perf_counter()
    ingested = ingest(cfg, store)
    adata = ad.read_h5ad(store)
    seconds["ingest"] = time.perf_counter() - t
    return ingested, adata


def _prepare(adata, ingested, run: _Run) -> _Prepared:
    """The gene overlap (checked), then the query on the reference's HVGs with its batches renamed."""
    t = time.perf_counter()
    genes, overlap = gene_overlap(adata, run.ref.hvgs)
    check_overlap(overlap, run.s, run.notes)
    if adata.n_obs == 0:
        qc = ingested.qc[["cells_in", "cells_out"]].to_dict("index")
        raise InputDataError(f"no query cell passed QC ({qc}); check the data and the QC thresholds (an ingest "
                             "YAML with a qc: section)")
    q, renames = prepare_query(adata, run.ref, run.notes)
    run.seconds["prepare"] = time.perf_counter() - t
    return _Prepared(ingested, q, genes, overlap, renames)


def _map(q, run: _Run):
    """scArches surgery: the query's latent in the reference space (and scANVI's predictions) into ``q``."""
    from .mapping import map_to_reference

    t = time.perf_counter()
    mapping = map_to_reference(q, run.ref, run.s)
    run.seconds["mapping"] = time.perf_counter() - t
    q.obsm["X_scVI"] = mapping.latent
    if run.ref.latent_key != "X_scVI":
        q.obsm[run.ref.latent_key] = mapping.latent
    if mapping.scanvi is not None:
        for c in mapping.scanvi.columns:
            q.obs[c] = mapping.scanvi[c].to_numpy()
    return mapping


def _transfer(q, latent: np.ndarray, store: Path, run: _Run) -> None:
    """Labels by kNN in the latent space: cell types with the UMAP placement, checked against the query's own
    markers, then neutrophil states."""
    t = time.perf_counter()
    _transfer_cell_types(q, latent, run.ref, run.s)
    t_check = time.perf_counter()
    _marker_check(q, latent, store, run)
    run.seconds["marker_check"] = time.perf_counter() - t_check
    _transfer_states(q, latent, run.ref, run.s, run.notes)
    run.seconds["transfer"] = time.perf_counter() - t - run.seconds["marker_check"]


def _score(q, store: Path, run: _Run) -> tuple[pd.DataFrame, dict]:
    """The reference's scores (computed on the store, all genes) and the reprogramming index, into ``q.obs``."""
    ref, s = run.ref, run.s
    t = time.perf_counter()
    scoring_used: dict = {}
    scores = pd.DataFrame(index=q.obs_names)
    if s.score:
        scores, scoring_used = score_query(store, ref.scoring, run.notes)
        scores = scores.loc[q.obs_names]
        for c in scores.columns:
            q.obs[c] = scores[c].to_numpy()
    is_neut = _called_neutrophil(q, s)
    if s.score and len(scores.columns) and is_neut.any():
        programmes = {**dict((ref.axis or {}).get("programmes") or {}), **dict((ref.state_rule or {}).get("programmes") or {})}
        learned = programme_scores_on_store(store, q.obs_names[is_neut], programmes)
        for c in learned.columns:  # the reference's learned programmes, on the query's neutrophils
            q.obs[c] = np.nan
            q.obs.loc[learned.index, c] = learned[c].to_numpy()
            scores[c] = q.obs[c].to_numpy()
    q.obs["reprogramming_index"] = (reprogramming_index(scores, ref.axis, is_neut) if s.score and len(scores.columns)
                                    else np.nan)  # fmt: skip
    run.seconds["score"] = time.perf_counter() - t
    return scores, scoring_used


def _evidence_states(q, scores: pd.DataFrame, run: _Run) -> None:
    """``state_method: evidence``: each query neutrophil's state from its own evidence, read as the analysis read
    the reference's (each state's score standardised with the reference neutrophils' mean and SD, called at the
    reference's cuts, :func:`atlas.analyse.states.calls_at_cuts`). The latent's vote stays in
    ``predicted_state_knn``. Without the reference's cuts or the query's scores the vote stands, with a note."""
    ref, s = run.ref, run.s
    if s.state_method != "evidence" or ref.state_key is None:
        return
    rule = dict(ref.state_rule or {})
    reads = {st: list(v) for st, v in dict(rule.get("signatures_read") or {}).items()}
    missing = [k for k in ("cell_cuts", "z_loc", "z_scale", "signatures_read") if k not in rule]
    absent = sorted({c for v in reads.values() for c in v} - set(scores.columns))
    why = ("scoring is off (score: false)" if not s.score else
           f"the reference records no {', '.join(missing)} (analysed by an older atlas: rerun its analyse stage)"
           if missing else f"the query has no scores {absent}" if absent else None)  # fmt: skip
    if why:
        run.notes.append(f"state_method 'evidence': {why}; states are the nearest reference neutrophils' vote instead")
        log.warning(run.notes[-1])
        return
    from ..analyse.states import UNASSIGNED, calls_at_cuts, state_scores

    is_neut = _called_neutrophil(q, s)
    q.obs["predicted_state_knn"] = q.obs["predicted_state"]
    x = state_scores(scores.loc[is_neut], reads)  # each state's score as the analysis built it
    states = list(x.columns)
    z = (x - pd.Series(rule["z_loc"], dtype=float)[states]) / pd.Series(rule["z_scale"], dtype=float)[states]
    cut = _per_state(rule["cell_cuts"], states)
    default = rule.get("default_state_used")
    default = None if default in (None, UNASSIGNED) else str(default)
    z_own = np.nan_to_num(z.to_numpy(np.float64))
    label, how, margin = calls_at_cuts(z_own, cut, states, default, float(rule.get("state_min_margin", 0.25)))
    state = np.full(q.n_obs, None, dtype=object)
    state[is_neut] = label
    u = np.full(q.n_obs, np.nan)
    u[is_neut] = 1.0 - _state_confidence(rule, z_own, label, states, default, margin, run.notes)
    rule_col = np.full(q.n_obs, None, dtype=object)
    rule_col[is_neut] = how
    _uncertain_states_unknown(state, rule_col, u, s.state_uncertainty_threshold, s.unknown_label)
    q.obs["predicted_state"] = pd.Categorical(state)
    q.obs["state_uncertainty"] = u
    q.obs["state_rule"] = pd.Categorical(rule_col)


def _per_state(values: dict, states: list[str]) -> np.ndarray:
    """A recorded per-state dict as an array in ``states`` order (NaN where a state is missing)."""
    return np.array([float(values.get(st, np.nan)) for st in states])


def _uncertain_states_unknown(state: np.ndarray, rule: np.ndarray, uncertainty: np.ndarray, threshold: float,
                              unknown: str) -> None:
    """In place: calls whose uncertainty is above ``threshold`` become ``unknown``, rule ``uncertain`` (none at the
    default threshold of 1; cells without a call, NaN uncertainty, are left as they are)."""
    with np.errstate(invalid="ignore"):
        uncertain = uncertainty > threshold
    state[uncertain], rule[uncertain] = unknown, "uncertain"


def _state_confidence(rule: dict, z_own: np.ndarray, label: np.ndarray, states: list[str], default: str | None,
                      margin: np.ndarray, notes: list[str]) -> np.ndarray:
    """Each query call's probability of being right, from the reference's true-score cuts and reliabilities
    (:mod:`atlas.analyse.state_posterior`, as the analysis scored its own calls); a reference analysed before they
    were recorded gives the squashed margin instead, with a note."""
    from ..analyse.state_posterior import call_confidence, state_probabilities
    from ..analyse.states import state_confidence

    cuts, rel = rule.get("true_score_cuts"), rule.get("reliability")
    if not cuts or not rel:
        notes.append("the reference records no true_score_cuts (analysed by an older atlas): state_uncertainty is "
                     "1 - the squashed margin, which ranks calls but is no probability; rerun its analyse stage")
        log.warning(notes[-1])
        return state_confidence(margin)
    return call_confidence(label, states, default,
                           state_probabilities(z_own, _per_state(rel, states), _per_state(cuts, states)))


def _tables(prep: _Prepared, scores: pd.DataFrame, ref: Reference) -> dict[str, pd.DataFrame]:
    """The tables of ``tables/``: gene overlap, batch renames, predictions, compositions, index, score means."""
    q_obs, ref_obs = prep.q.obs, ref.atlas.obs
    tables = {
        "gene_overlap": prep.genes,
        "gene_overlap_summary": prep.overlap,
        "batch_renames": prep.renames,
        "predictions": _predictions(q_obs),
        "cell_type_composition": composition(q_obs, ref_obs, "predicted_cell_type", ref.label_key, "cell_type"),
    }
    if "marker_cell_type" in q_obs:
        tables["marker_check"] = (q_obs.groupby(["transferred_cell_type", "marker_cell_type", "cell_type_rule"],
                                                observed=True).size().rename("n_cells").reset_index())  # fmt: skip
    if ref.state_key is not None:
        tables["state_composition"] = composition(q_obs, ref_obs, "predicted_state", ref.state_key, "neutrophil_state")
        tables["reprogramming_index"] = index_summary(q_obs, ref_obs)
    if len(scores.columns):
        tables["score_means"] = (q_obs.groupby("predicted_cell_type", observed=True)[list(scores.columns)]
                                 .mean().reset_index())  # fmt: skip
    return tables


def _write_tables(tmp: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Each table as ``tables/NAME.csv``."""
    (tmp / "tables").mkdir()
    for name, df in tables.items():
        df.to_csv(tmp / "tables" / f"{name}.csv", index=False)


def _summary(refdir: Path, cfg, prep: _Prepared, mapping, scoring_used: dict, run: _Run) -> dict[str, Any]:
    """``query.json`` (and, less overlap and renames, ``uns['query']``); it shares the run's timings and notes."""
    from ..core.provenance import package_versions

    ref, s, q = run.ref, run.s, prep.q
    return {
        "reference": {"path": str(refdir), "kind": ref.kind, "model_class": ref.model_class, "n_cells": ref.atlas.n_obs,
                      "n_hvgs": len(ref.hvgs), "latent_key": ref.latent_key, "label_key": ref.label_key,
                      "state_key": ref.state_key, "versions": ref.versions},
        "datasets": [d.id for d in cfg.datasets],
        "n_cells_in": int(prep.ingested.qc["cells_in"].sum()), "n_cells": q.n_obs,
        "overlap": prep.overlap.drop(columns="missing").to_dict("records"),
        "batch_renames": prep.renames.to_dict("records"),
        "mapping": {"epochs": mapping.epochs, "history": mapping.history, "seconds": mapping.seconds},
        "predictions": q.obs["predicted_cell_type"].astype(str).value_counts().to_dict(),
        "unknown_fraction": float((q.obs["predicted_cell_type"].astype(str) == s.unknown_label).mean()),
        "settings": s.model_dump(mode="json"), "scoring": scoring_used,
        "seconds": run.seconds, "notes": run.notes, "atlas_version": __version__,
        "packages": package_versions(),
    }  # fmt: skip


def _write_query(tmp: Path, q, mapping, summary: dict, scoring_used: dict, run: _Run) -> None:
    """``query.h5ad`` (the summary, axis and scoring in ``uns``) and, with ``save_model``, the query model."""
    q.uns["query"] = _plain({k: v for k, v in summary.items() if k not in ("overlap", "batch_renames")})
    if run.ref.axis:
        q.uns["reprogramming_axis"] = _plain(run.ref.axis)
    if scoring_used:
        q.uns["atlas_scoring"] = _plain(scoring_used)
    # scvi-tools' registration slots: SCVI.load(DIR/model, adata=query.h5ad) registers the data again
    q.obs = q.obs.drop(columns=[c for c in q.obs.columns if str(c).startswith("_scvi")])
    for slot in (q.obsm, q.uns):
        for key in [k for k in slot.keys() if str(k).startswith("_scvi")]:
            del slot[key]
    if run.s.save_model:
        mapping.model.save(str(tmp / "model"), save_anndata=False)
    q.write_h5ad(tmp / "query.h5ad", compression="gzip")


def _finish(tmp: Path, prep: _Prepared, tables: dict[str, pd.DataFrame], summary: dict, run: _Run) -> None:
    """The report (unless ``report: false``), then ``query.json`` with the final timings."""
    seconds = run.seconds
    seconds["total"] = time.perf_counter() - run.t0
    if run.s.report:
        from .report import write_query_report

        t = time.perf_counter()
        tables["qc"] = prep.ingested.qc.reset_index()
        write_query_report(tmp, ref=run.ref, q=prep.q, tables=tables, summary=summary)
        seconds["report"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - run.t0
    (tmp / "query.json").write_text(json.dumps(_plain(summary, drop_none=False), indent=2, sort_keys=True,
                                              default=str) + "\n")


def map_query(
    refdir: str | Path,
    query: Any,
    out: str | Path,
    *,
    settings: QuerySettings | dict | None = None,
    overwrite: bool = False,
    dataset_id: str | None = None,
    species: str | None = None,
    format: str | None = None,
    counts: str | None = None,
    obs_path: str | Path | None = None,
    obs_columns: dict[str, str] | None = None,
    constants: dict[str, str] | None = None,
    value_maps: dict[str, dict[str, str]] | None = None,
    gene_ids: str | None = None,
    **overrides: Any,
) -> QueryResult:
    """Map a query onto a reference atlas: labels with uncertainty, UMAP placement, scores, comparison.

    Parameters
    ----------
    refdir
        A run directory of ``atlas run`` (annotated atlas) or a reference bundle of ``atlas integrate``
        (then give ``label_key``); a path or a URL.
    query
        An ingest YAML (one or more data sets), an :class:`~atlas.ingest.settings.IngestConfig`, or one data file or
        10x directory in any format ingest reads.
    out
        Output folder (see the module docstring); written atomically. A URL: built locally, then uploaded.
    settings
        :class:`QuerySettings` (or a dict of its fields).
    overwrite
        Replace an existing ``out``.
    dataset_id, species, format, counts, obs_path, obs_columns, constants, value_maps, gene_ids
        For a single data file: its :class:`~atlas.ingest.settings.DatasetConfig` entry (as in an ingest YAML).
    **overrides
        :class:`QuerySettings` fields replacing those of ``settings`` (``max_epochs=20``,
        ``label_key="cell_type"``, ``uncertainty_threshold=0.4``, ...).

    Returns
    -------
    :class:`QueryResult`.

    Raises
    ------
    InputDataError
        A damaged or incompatible reference, unreadable or normalised query data, too little gene overlap.
    RunDirError
        ``out`` exists and ``overwrite`` is false.
    """
    t0 = time.perf_counter()
    s = _settings(settings, overrides)
    refdir, out = storage.location(refdir), storage.location(out)
    _check_out(out, refdir, overwrite)
    ref = load_reference(refdir, label_key=s.label_key, state_key=s.state_key)
    run = _Run(ref, s, t0, notes=list(ref.notes))
    dataset = {"id": dataset_id, "species": species, "format": format, "counts": counts, "obs_path": obs_path,
               "obs_columns": obs_columns, "constants": constants, "value_maps": value_maps, "gene_ids": gene_ids}
    cfg = query_ingest_config(query, reference_qc=ref.qc, notes=run.notes, **dataset)
    _check_inputs(out, cfg)
    run.seconds["reference"] = time.perf_counter() - t0

    local = _local_out(out)
    with atomic_path(local, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        store = tmp / "store.h5ad"
        ingested, adata = _ingest(cfg, store, run.seconds)
        prep = _prepare(adata, ingested, run)
        mapping = _map(prep.q, run)
        _transfer(prep.q, mapping.latent, store, run)
        scores, scoring_used = _score(prep.q, store, run)
        _evidence_states(prep.q, scores, run)
        tables = _tables(prep, scores, ref)
        _write_tables(tmp, tables)
        summary = _summary(refdir, cfg, prep, mapping, scoring_used, run)
        _write_query(tmp, prep.q, mapping, summary, scoring_used, run)
        _finish(tmp, prep, tables, summary, run)

    if storage.is_url(out):
        storage.publish(local, str(out), "query results: ")
        local.parent.rmdir()
    n_cells, pred_counts = prep.q.n_obs, summary["predictions"]
    log.info("query mapped: %d cells, %s; written to %s in %.0f s", n_cells, pred_counts, out, run.seconds["total"])
    return QueryResult(out_dir=out, n_cells=n_cells, overlap=float(prep.overlap.iloc[-1]["fraction"]),
                       predictions=pred_counts, unknown_fraction=summary["unknown_fraction"], seconds=run.seconds,
                       notes=run.notes)  # fmt: skip
