"""``atlas ingest``: read every data set, harmonise, QC and write one AnnData store.

Two passes over the configuration:

1. **plan** - open each data set's metadata only (no counts): map its genes onto human symbols
   (:func:`atlas.ingest.genes.harmonize_genes`) and its cell metadata onto the schema
   (:func:`atlas.ingest.metadata.map_obs`). Every configuration problem that metadata can
   reveal is reported here, before any counts are read. The store's gene axis follows
   (``join: outer`` = union, ``inner`` = intersection; genes in order of first appearance, data
   sets in config order).
2. **stream** - for each data set, chunk by chunk (``chunk_size`` cells): check raw counts, map
   genes (column relabelling, equal to ``X @ M``; duplicates summed), compute QC metrics on the
   data set's genes, drop failing cells and append the rest to the store's CSR ``X``. With
   ``outer`` the chunk is relabelled straight onto the store's axis (metrics are the same, the
   store only adds zero columns); with ``inner`` it is mapped to the data set's genes for QC and
   then cut to the store's. QC (:mod:`atlas.ingest.qc`): in ``fixed`` mode every threshold is known
   up front, so failing cells are dropped while streaming and counts are written once. In ``mad``
   mode (the default) the bounds need the whole data set: cells under the lenient floor are dropped
   while streaming, the rest go to a temporary part file (next to ``out``) with their metrics; the
   MAD bounds are then computed from those metrics, outliers removed, lower-tail cells flagged
   ``obs['qc_low_rna']``, and the part copied into the store with a keep mask (counts of kept cells
   written twice). With ``qc.doublets`` the cells that passed go through the same part file:
   scrublet runs per sample reading only that sample's rows, and the copy also leaves out the
   predicted doublets.

Cells QC removes above the lenient floor are written beside the store (``<stem>.removed.h5ad``, obs
``qc_reason``; :mod:`atlas.ingest.removed`), so the analysis can say which cell types each rule removed.

A data set without cells, or one whose cells QC all removes, is an :class:`InputDataError` naming
it, with the counts per reason and the thresholds.

While rows are appended, per-gene sums of their normalised values are folded in and written
beside the store (``<stem>.genestats.parquet``, :mod:`atlas.ingest.genestats`), so that scoring the
store with scanpy's method reads it once.

Memory holds one chunk at a time plus the obs table; no data set is ever densified or held whole
(except the formats that cannot be streamed, see :mod:`atlas.ingest.readers`). The store is written
under a temporary name and renamed at the end (:func:`atlas.core.atomic.atomic_path`); inputs are
opened read-only.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..catalogue.vocabularies import VOCABULARIES
from ..core.atomic import TMP_PREFIX, atomic_path, write_table
from ..core.errors import AtlasError, InputDataError, RunDirError
from ..core.layout import beside_store
from ..core.progress import track
from .counts import check_counts
from .genes import GeneMapping, common_gene_axis, gene_report_table, harmonize_genes
from .genestats import GeneStatsCache
from .metadata import map_obs
from .qc import (
    QC_REASONS,
    QCGeneSets,
    QCTally,
    detect_doublets,
    floor_reasons,
    for_gene_panel,
    mad_bounds,
    mad_reasons,
    qc_metrics,
    qc_reasons,
    scrublet_available,
)
from .readers import open_reader
from .removed import RemovedCells, above_audit_floor, removed_store_path
from .settings import SCHEMA_FIELDS, DatasetConfig, IngestConfig
from .store import PartFile, StoreWriter, finalize_obs, store_format
from .values import ID_FIELDS, unify_spellings, unique_ids

logger = logging.getLogger(__name__)

__all__ = ["IngestResult", "ingest", "side_table_path"]


@dataclass
class IngestResult:
    """What :func:`ingest` wrote.

    Attributes
    ----------
    store
        Path of the AnnData store.
    n_cells, n_genes
        Its shape.
    qc
        QC table, one row per data set (index ``dataset_id``): cells in, removed per reason, flagged
        low-RNA (``cells_flagged_low_rna``, kept), out; the thresholds used (``used_*``, in UMIs, genes
        and %), the MAD statistics behind them, then the settings.
    genes
        Gene report, one row per data set (index ``dataset_id``).
    neutrophils
        Cells with neutrophil marker evidence in, removed, flagged low-RNA and out, one row per data set.
    elapsed_s
        Wall time in seconds.
    """

    store: Path
    n_cells: int
    n_genes: int
    qc: pd.DataFrame
    genes: pd.DataFrame
    neutrophils: pd.DataFrame
    elapsed_s: float


@dataclass
class _Plan:
    ds: DatasetConfig
    source: str
    n_obs: int
    mapping: GeneMapping
    obs: pd.DataFrame
    harmonised: pd.DataFrame  # metadata values as given and as stored (values.HARMONISED_COLUMNS)


def side_table_path(store: str | Path, name: str) -> Path:
    """``<store without suffix>.<name>.csv``, e.g. ``atlas.qc.csv`` beside ``atlas.h5ad``.

    Parameters
    ----------
    store
        The store's path.
    name
        Table name (``qc``, ``genes``, ``neutrophils``).
    """
    return beside_store(store, f"{name}.csv")


def _plan(ds: DatasetConfig, config: IngestConfig) -> _Plan:
    with open_reader(ds) as reader:
        source = str(reader.path)
        mapping = harmonize_genes(
            reader.var,
            dataset_id=ds.id,
            species=ds.species,
            gene_ids=ds.gene_ids,
            gene_column=ds.gene_column,
            duplicate_genes=ds.duplicate_genes,
            source=source,
        )
        n_obs = reader.n_obs
        if n_obs == 0:
            raise InputDataError(
                f"data set {ds.id} ({source}) has no cells; remove it from the config or fix the file"
            )
        harmonised: list[pd.DataFrame] = []
        obs = map_obs(reader.obs, ds, keep_obs=config.keep_obs, source=source, harmonised=harmonised)
    logger.info(
        "data set %s: %d cells, %d genes -> %d symbols (%s)",
        ds.id,
        n_obs,
        mapping.report["n_in"],
        len(mapping.genes),
        source,
    )
    return _Plan(ds=ds, source=source, n_obs=n_obs, mapping=mapping, obs=obs, harmonised=harmonised[0])


def _axes(mapping: GeneMapping, store_genes: list[str], join: str) -> tuple[GeneMapping, GeneMapping | None]:
    """(input -> QC axis, QC axis -> store or None).

    With ``outer`` the store holds every gene of the data set, so counts go straight onto the store's
    axis and QC metrics computed there equal those on the data set's own genes. With ``inner`` QC
    needs the data set's own genes first; the columns are then cut down to the store's.
    """
    if join == "outer":
        return mapping.onto(store_genes), None
    return mapping, GeneMapping.between(mapping.genes, store_genes, mapping.dataset_id)


def _mad_mode(config: IngestConfig, dataset_id: str) -> bool:
    return config.qc.enabled and config.qc.thresholds_for(dataset_id).mode == "mad"


def _stream_reasons(m: pd.DataFrame, tally: QCTally, mad: bool) -> tuple[np.ndarray, np.ndarray]:
    """Reason codes decidable while streaming: the floor only (mad), every threshold (fixed)."""
    if mad:
        return floor_reasons(m, tally.thresholds), np.zeros(len(m), dtype=bool)
    return qc_reasons(m, tally.thresholds)


def _stream_dataset(
    plan: _Plan,
    config: IngestConfig,
    sink,
    mapping: GeneMapping,
    to_store: GeneMapping | None,
    removed: RemovedCells | None = None,
    most_genes: int = 0,
) -> tuple[list, QCTally]:
    """Read, check, map and QC one data set into ``sink``; return its kept QC metrics and tally.

    Cells removed above the lenient floor (fixed mode's thresholds) go to ``removed``. ``most_genes``: the most genes
    any data set of the ingest holds (a data set with far fewer is a gene panel: :func:`for_gene_panel`).
    """
    ds, qc = plan.ds, config.qc
    n_genes = len(plan.mapping.genes)  # the data set's own genes (``mapping`` may be onto the store's axis)
    thresholds, panel = for_gene_panel(qc.thresholds_for(ds.id), n_genes, most_genes)
    if panel < 1 and qc.enabled:
        logger.warning("data set %s holds %d genes, %.0f%% of the %d of the data set with the most (a gene panel, or "
                       "a deposit of its most variable genes?): its QC floors are scaled by that share and it has no "
                       "absolute %% mito ceiling; the genes it lacks read as zero in its cells' scores: its raw "
                       "counts with every gene are better", ds.id, n_genes, 100 * panel, most_genes)  # fmt: skip
    tally = QCTally(ds.id, thresholds, enabled=qc.enabled, source=plan.source)
    tally.panel_scale = panel
    mad = _mad_mode(config, ds.id)
    sets = QCGeneSets.from_genes(mapping.genes, qc)
    n_markers = len(np.intersect1d(mapping.colmap[mapping.colmap >= 0], sets.markers))
    if n_markers < qc.neutrophil_min_markers:
        logger.warning(
            "data set %s: only %d of the neutrophil markers are measured; no cell can get the "
            "neutrophil QC floor",
            ds.id,
            n_markers,
        )
    metrics_kept = []
    n_read = 0
    with open_reader(ds) as reader:
        n_chunks = -(-reader.n_obs // config.chunk_size)
        suggest = reader.format == "h5ad"
        for start, X in track(reader.chunks(config.chunk_size), f"ingest {ds.id}", total=n_chunks):
            check_counts(
                X,
                dataset_id=ds.id,
                source=reader.path,
                where=reader.where,
                first_cell=start,
                suggest_counts_key=suggest,
            )
            Xd = mapping.apply(X)
            del X
            m = qc_metrics(
                Xd, sets, min_markers=qc.neutrophil_min_markers, exclusion_max=qc.exclusion_max_markers
            )
            reason, floor_kept = _stream_reasons(m, tally, mad)
            keep = tally.add(m, reason, floor_kept)
            m["qc_floor"] = "lenient" if mad else np.where(m["neutrophil_evidence"], "neutrophil", "default")
            m["qc_low_rna"] = False
            m["_floor_kept"] = floor_kept
            m.index = np.arange(start, start + len(m))
            metrics_kept.append(m[keep])
            Xk = Xd if keep.all() else Xd[keep]
            sink.append(Xk if to_store is None else to_store.apply(Xk))
            out = ~keep & above_audit_floor(m, tally.thresholds) if removed is not None else None
            if out is not None and out.any():
                Xo = Xd[out]
                removed.add(Xo if to_store is None else to_store.apply(Xo), _dataset_obs(plan, [m[out]]), reason[out])
            n_read += Xd.shape[0]
    if n_read != plan.n_obs:
        raise InputDataError(
            f"data set '{ds.id}': {plan.source} gave {n_read} cells of counts but lists {plan.n_obs} cells; "
            "the file is inconsistent or truncated"
        )
    _check_cells_left(tally)
    return metrics_kept, tally


def _check_cells_left(tally: QCTally) -> None:
    if tally.enabled and tally.cells_in and tally.cells_out == 0:
        raise InputDataError(tally.all_removed_message())


def _dataset_obs(plan: _Plan, metrics_kept: list[pd.DataFrame]) -> pd.DataFrame:
    m = pd.concat(metrics_kept) if metrics_kept else pd.DataFrame(columns=["_floor_kept"])
    obs = plan.obs.iloc[m.index.to_numpy(dtype=np.int64)].copy()
    for c in m.columns:
        obs[c] = m[c].to_numpy()
    return obs


class _Rows:
    """Rows ``positions`` of a part file, indexed from 0 (what :func:`detect_doublets` reads)."""

    def __init__(self, part: PartFile, positions: np.ndarray):
        self.part, self.positions = part, positions

    def __getitem__(self, idx: np.ndarray):
        return self.part[self.positions[np.asarray(idx)]]


def _mad_pass(plan: _Plan, obs: pd.DataFrame, tally: QCTally) -> np.ndarray:
    """MAD bounds of the data set's cells above the floor; remove outliers, flag low-RNA cells; keep mask."""
    tally.bounds = mad_bounds(obs, tally.thresholds, dataset_id=plan.ds.id)
    reason, low_rna = mad_reasons(obs, tally.bounds)
    keep = tally.add(obs, reason, new_cells=False)
    obs["_qc_reason"] = np.where(keep, 0, reason)
    obs["qc_low_rna"] = low_rna & keep
    tally.add_low_rna(low_rna[keep], obs["neutrophil_evidence"].to_numpy(dtype=bool)[keep])
    _check_cells_left(tally)
    return keep


def _doublets(config: IngestConfig, part: PartFile, obs: pd.DataFrame, keep: np.ndarray, tally: QCTally) -> np.ndarray:
    """Scrublet per sample on the part file's cells that passed QC; the keep mask without doublets."""
    idx = np.flatnonzero(keep)
    score, pred, untrusted = detect_doublets(
        _Rows(part, idx),
        obs["sample_id"].astype(str).to_numpy()[idx],
        min_cells=config.qc.doublet_min_cells,
        random_state=config.qc.doublet_random_state,
        dataset_id=tally.dataset_id,
        max_share=config.qc.doublet_max_share,
    )
    tally.add_doublets(
        pred,
        obs["neutrophil_evidence"].to_numpy(dtype=bool)[idx],
        obs["_floor_kept"].to_numpy(dtype=bool)[idx],
        obs["qc_low_rna"].to_numpy(dtype=bool)[idx],
        n_untrusted=len(untrusted),
    )
    obs["doublet_score"] = np.float32(np.nan)
    obs["predicted_doublet"] = False
    obs.iloc[idx, obs.columns.get_loc("doublet_score")] = score
    obs.iloc[idx, obs.columns.get_loc("predicted_doublet")] = pred
    if config.qc.enabled:
        keep = keep.copy()
        keep[idx[pred]] = False
        obs.iloc[idx[pred], obs.columns.get_loc("_qc_reason")] = QC_REASONS.index("doublets") + 1
    _check_cells_left(tally)
    return keep


def _second_pass(
    plan: _Plan, config: IngestConfig, part: PartFile, obs: pd.DataFrame, tally: QCTally, writer,
    removed: RemovedCells | None = None,
) -> pd.DataFrame:
    """MAD bounds and/or doublets on a data set's part file, then copy its kept cells to the store (and the
    cells these remove to ``removed``)."""
    keep = np.ones(len(obs), dtype=bool)
    obs["_qc_reason"] = np.int8(0)
    if _mad_mode(config, plan.ds.id):
        keep = _mad_pass(plan, obs, tally)
    if config.qc.doublets:
        keep = _doublets(config, part, obs, keep, tally)
    reasons = obs["_qc_reason"].to_numpy()
    for start, X in part.chunks(config.chunk_size):
        k = keep[start : start + X.shape[0]]
        writer.append(X if k.all() else X[k])
        if removed is not None and not k.all():
            rows = np.flatnonzero(~k)
            removed.add(X[rows], obs.iloc[start + rows], reasons[start + rows])
    return obs[keep]


def _uns_table(df: pd.DataFrame) -> pd.DataFrame:
    """A copy AnnData can write: object columns of None/numbers become float (None -> NaN)."""
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            num = pd.to_numeric(df[c], errors="coerce")
            df[c] = num if num.notna().sum() == df[c].notna().sum() else df[c].astype(str)
    return df


def _uns(config: IngestConfig, plans: list[_Plan], genes_df, qc_df, neut_df, measured) -> dict:
    cfg = config.model_dump(mode="json")
    cfg_dict = {**cfg, "datasets": {d["id"]: d for d in cfg["datasets"]}}

    return {
        "atlas": {
            "stage": "ingest",
            "version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": cfg_dict,
            "config_json": json.dumps(cfg, sort_keys=True),
            "datasets": [p.ds.id for p in plans],
            "sources": {p.ds.id: p.source for p in plans},
            "join": config.join,
            "measured_datasets": list(measured.columns),
            "gene_report": _uns_table(genes_df),
            "qc": _uns_table(qc_df),
            "neutrophil_qc": _uns_table(neut_df),
        }
    }


def ingest(config: IngestConfig, out: str | Path, *, overwrite: bool = False) -> IngestResult:
    """Ingest the configured data sets into one AnnData store of raw counts.

    Parameters
    ----------
    config
        The ingest configuration (data sets, QC, join, chunk size).
    out
        Store to write: ``.zarr`` for zarr, anything else (normally ``.h5ad``) for h5ad. The QC table
        and gene report are written beside it as ``<stem>.qc.csv``, ``<stem>.genes.csv`` and
        ``<stem>.neutrophils.csv``, the metadata values as given and as stored as ``<stem>.metadata.csv``; the cells
        QC removed above the lenient floor as ``<stem>.removed.h5ad``.
    overwrite
        Replace an existing store; otherwise an existing ``out`` is an error.

    Returns
    -------
    An :class:`IngestResult`.
    """
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not overwrite:
        raise RunDirError(
            f"{out} already exists; pass --overwrite (overwrite=True) to replace it or choose another path"
        )
    if config.qc.doublets and not scrublet_available():
        raise AtlasError(
            "qc.doublets needs scikit-image (scanpy's scrublet picks its threshold with it); "
            "run: pip install scikit-image, or set qc.doublets: false"
        )
    plans = [_plan(ds, config) for ds in track(config.datasets, "reading metadata")]
    for field in VOCABULARIES:
        unify_spellings([p.obs for p in plans], field, [p.harmonised for p in plans])
    for field in ID_FIELDS:
        if field not in config.shared_ids:
            unique_ids([p.obs for p in plans], field, [p.ds.id for p in plans], [p.harmonised for p in plans])
    genes, measured = common_gene_axis([p.mapping for p in plans], config.join)
    most_genes = max(len(p.mapping.genes) for p in plans)
    store_genes = pd.Index(genes)
    logger.info("store gene axis (%s join): %d genes from %d data sets", config.join, len(genes), len(plans))
    tallies, obs_frames = [], []
    parts_dir = out.parent / f"{TMP_PREFIX}parts-{uuid.uuid4().hex[:8]}"
    with atomic_path(out) as tmp, atomic_path(removed_store_path(out)) as removed_tmp:
        writer = StoreWriter(tmp, len(genes), fmt=store_format(out), gene_stats=True)
        removed = RemovedCells(removed_tmp, len(genes))
        try:
            for plan in plans:
                mapping, to_store = _axes(plan.mapping, genes, config.join)
                part = None
                if config.qc.doublets or _mad_mode(config, plan.ds.id):
                    parts_dir.mkdir(parents=True, exist_ok=True)
                    part = PartFile(parts_dir / f"{plan.ds.id}.h5", len(genes))
                try:
                    metrics, tally = _stream_dataset(plan, config, part or writer, mapping, to_store, removed,
                                                     most_genes)
                    obs = _dataset_obs(plan, metrics)
                    if part is not None:
                        obs = _second_pass(plan, config, part, obs, tally, writer, removed)
                finally:
                    if part is not None:
                        part.close()
                obs_frames.append(obs.drop(columns=[c for c in obs.columns if c.startswith("_")]))
                tallies.append(tally)
                logger.info("data set %s: %d of %d cells kept", plan.ds.id, tally.cells_out, tally.cells_in)
            qc_df = pd.DataFrame([t.row() for t in tallies]).set_index("dataset_id")
            neut_df = pd.DataFrame([t.neutrophil_row() for t in tallies]).set_index("dataset_id")
            genes_df = gene_report_table([p.mapping for p in plans])
            obs = finalize_obs(obs_frames, categorical=[*SCHEMA_FIELDS, "qc_floor"])
            obs["qc_low_rna"] = obs["qc_low_rna"].astype(bool)
            del obs_frames
            var = pd.DataFrame(
                {"n_datasets": measured.sum(axis=1).astype(np.int32).to_numpy()}, index=store_genes
            )
            writer.finish(
                obs=obs,
                var=var,
                varm={"measured": measured},
                uns=_uns(config, plans, genes_df, qc_df, neut_df, measured),
            )
            removed.finish(var=var, categorical=[*SCHEMA_FIELDS, "qc_floor"])
        finally:
            writer.close()
            removed.close()
            shutil.rmtree(parts_dir, ignore_errors=True)
    GeneStatsCache(out).save(writer.gene_stats)  # per-gene sums for scoring (a cache; never fatal)
    write_table(side_table_path(out, "qc"), qc_df)
    write_table(side_table_path(out, "genes"), genes_df)
    write_table(side_table_path(out, "neutrophils"), neut_df)
    write_table(side_table_path(out, "metadata"), pd.concat([p.harmonised for p in plans]).set_index("dataset_id"))
    elapsed = time.perf_counter() - t0
    logger.info("ingest: %d cells x %d genes written to %s in %.1f s (%d removed cells above the floor kept aside "
                "in %s)", len(obs), len(genes), out, elapsed, removed.n_obs, removed_store_path(out))  # fmt: skip
    return IngestResult(
        store=out,
        n_cells=len(obs),
        n_genes=len(genes),
        qc=qc_df,
        genes=genes_df,
        neutrophils=neut_df,
        elapsed_s=elapsed,
    )
