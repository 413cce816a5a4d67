"""What QC removed at ingest, by cell type: the removed cells labelled from their neighbours in the atlas.

Ingest keeps the cells QC removed above the lenient floor beside the store (:mod:`atlas.ingest.removed`). Here
they go through the atlas model's encoder (:func:`atlas.integrate.encode.encode_cells`; no training) and take
the cell type of their ``k`` nearest annotated atlas cells, with scArches' weighted vote and its uncertainty
(:func:`atlas.integrate.label_transfer.transfer_labels`: a cell whose neighbours disagree, or that lies far from
every atlas cell, is ``unknown``). A damaged cell has little left to place it by: a T cell with 60 % mito keeps a
few hundred UMIs and lands among the low-RNA neutrophils, whose neighbours then vote neutrophil with confidence
(on an independent cohort the vote labelled 126 removed cells neutrophil, 57 of them neutrophils). So, as
``atlas query`` does, each cell's own markers are scored (the analysis's marker evidence, in the units measured on
the atlas's clusters, :func:`atlas.analyse.celltypes.enrichment_units`), and a label whose type the cell's own
evidence ranks below another type becomes ``unknown`` (uncertainty 1; there 53 labelled neutrophil, 44 of them
neutrophils; more cohorts in benchmarks/robustness.md, stop 42). The labels say what QC removed (a mito bound that costs neutrophils, a doublet rule that removes
tumour cells); they never bring a cell back.

Tables: ``qc_removed_cells`` (one row per removed cell: data set, sample, reason, QC metrics, label,
uncertainty, ``marker_cell_type``: the type its own markers favour) and per (data set, cell type) the removed cells by reason, added to ``qc_by_cell_type``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["MarkerEvidence", "QCAudit", "audit_removed_cells", "markers_disagree", "with_removed_cells"]

log = logging.getLogger(__name__)

CELL_COLUMNS = ("dataset_id", "sample_id", "qc_reason", "total_counts", "n_genes", "pct_mito")


@dataclass
class MarkerEvidence:
    """The analysis's marker evidence, in the units measured on the atlas's cells (:func:`enrichment_units`)."""

    markers: dict[str, list[str]]  # cell type -> marker genes (analyse.cell_type_markers)
    base: np.ndarray  # per type, in the order of ``markers``
    noise: np.ndarray
    scoring: dict = field(default_factory=dict)  # score_store arguments (the method is always scanpy's)

    @classmethod
    def of_atlas(cls, markers: dict[str, list[str]], scores: pd.DataFrame, clusters: pd.Series,
                 min_cluster_cells: int, scoring: dict) -> MarkerEvidence:  # fmt: skip
        """Units from the atlas's marker ``scores`` (cells x types) and its over-clustering ``clusters``."""
        from .celltypes import enrichment_units

        codes = pd.Categorical(clusters.astype(str)).codes.astype(np.int64)
        base, noise = enrichment_units(scores[list(markers)], codes, min_cluster_cells)
        return cls({k: list(v) for k, v in markers.items()}, base, noise, scoring)

    def of(self, store: Path) -> pd.DataFrame:
        """Cells x types: each cell's own enrichment (score minus the atlas's baseline, over its noise).

        The scores are scanpy's (marker mean minus the mean of control genes of similar expression); the controls
        are binned on ``store``'s own cells, the only ones read (the typing this gives: benchmarks/robustness.md,
        stop 42).
        """
        from ..score import score_store

        scores = score_store(store, self.markers, **(self.scoring | {"method": "scanpy"}), gene_stats_cache=False)
        x = np.nan_to_num(scores[list(self.markers)].to_numpy(np.float64), nan=0.0)
        return pd.DataFrame((x - self.base) / self.noise, index=scores.index, columns=list(self.markers))


def markers_disagree(label: np.ndarray, evidence: pd.DataFrame) -> np.ndarray:
    """Cells whose own evidence for some other type exceeds their evidence for ``label`` (a label without markers,
    such as unknown, never disagrees)."""
    e = evidence.to_numpy(np.float64)
    col = {t: j for j, t in enumerate(evidence.columns)}
    j = np.array([col.get(str(t), -1) for t in label])
    rows = np.flatnonzero(j >= 0)
    own = e[rows, j[rows]]
    other = e[rows].copy()
    other[np.arange(len(rows)), j[rows]] = -np.inf
    out = np.zeros(len(label), dtype=bool)
    out[rows] = other.max(axis=1) > own
    return out


@dataclass
class QCAudit:
    """The removed cells' labels (``cells``) and what could not be done (``notes``)."""

    cells: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _resolved(refdir: Path) -> dict:
    try:
        return json.loads((refdir / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def _pooled_key(obs: pd.DataFrame, source: str) -> pd.Series:
    """A cell's own batch within its data set (batch names may repeat across data sets; pools never span two)."""
    return obs["dataset_id"].astype(str) + "\x1f" + obs[source].astype(str)


def _training_batches(atlas, config: dict) -> dict[str, str] | None:
    """Where small batches were pooled for training: each cell's own batch (in its data set) -> the batch it was
    trained in (from the atlas's cells); ``None`` when none was pooled."""
    from ..integrate._checks import INTEGRATION_BATCH

    source = config.get("settings", {}).get("batch_key")
    if INTEGRATION_BATCH not in atlas.obs or not source or source not in atlas.obs or "dataset_id" not in atlas.obs:
        return None
    pairs = pd.DataFrame({"own": _pooled_key(atlas.obs, source), "pool": atlas.obs[INTEGRATION_BATCH].astype(str)})
    pairs = pairs.drop_duplicates("own")
    return dict(zip(pairs["own"], pairs["pool"], strict=True))


def _with_training_batch(obs: pd.DataFrame, pools: dict[str, str] | None, config: dict) -> pd.DataFrame:
    """The removed cells' obs with the pooled batch column the model reads: the pool of their own batch in their data
    set (a batch the atlas has no cell of keeps a value the model lacks: not seen)."""
    from ..integrate._checks import INTEGRATION_BATCH

    source = config.get("settings", {}).get("batch_key")
    if pools is None or source not in obs or "dataset_id" not in obs:
        return obs
    own = _pooled_key(obs, source)
    return obs.assign(**{INTEGRATION_BATCH: own.map(pools).fillna(own).to_numpy()})


def audit_removed_cells(
    removed_path: str | Path, refdir: str | Path, atlas, *, label_key: str = "cell_type", k: int = 15,
    threshold: float = 0.5, seed: int = 0, chunk_cells: int = 50_000, evidence: MarkerEvidence | None = None,
) -> QCAudit | None:  # fmt: skip
    """Label the cells QC removed at ingest from their nearest annotated atlas cells.

    Parameters
    ----------
    removed_path
        The store's ``<stem>.removed.h5ad``.
    refdir
        The integrate bundle (``model/``, ``config.json``).
    atlas
        The annotated atlas (obs ``label_key``, obsm the model's latent).
    label_key, k, threshold, seed
        Labels to transfer; neighbours, uncertainty above which a cell is ``unknown``, and the seed of the
        distance calibration (as ``atlas query``'s defaults).
    chunk_cells
        Removed cells encoded at a time (memory: one chunk's counts; fixed-mode QC can remove many).
    evidence
        The analysis's marker evidence: a cell whose own markers favour another type than its neighbours' label
        becomes ``unknown`` (``None``: the vote alone).

    Returns
    -------
    :class:`QCAudit`, or ``None`` without a removed-cells file (a store written before it existed).
    """
    import anndata as ad

    from ..integrate.encode import SavedEncoder
    from ..integrate.label_transfer import transfer_labels

    removed_path, refdir = Path(removed_path), Path(refdir)
    if not removed_path.exists():
        return None
    removed = ad.read_h5ad(removed_path, backed="r")  # counts read a chunk at a time
    cells = pd.DataFrame({c: removed.obs[c].to_numpy() for c in CELL_COLUMNS if c in removed.obs},
                         index=removed.obs_names)  # fmt: skip
    cells["cell_type"] = pd.Series(pd.NA, index=cells.index, dtype=object)
    cells["uncertainty"] = np.nan
    if removed.n_obs == 0:
        return QCAudit(cells=cells.rename_axis("cell").reset_index())
    config = _resolved(refdir)
    latent_key = config.get("resolved", {}).get("latent_key", "X_scVI")
    obs = _with_training_batch(removed.obs, _training_batches(atlas, config), config)
    encoder = SavedEncoder(refdir / "model")
    latents, encoded, notes = [], [], []
    for start in range(0, removed.n_obs, chunk_cells):
        stop = min(start + chunk_cells, removed.n_obs)
        enc = encoder.encode(ad.AnnData(X=removed.X[start:stop], obs=obs.iloc[start:stop], var=removed.var))
        latents.append(enc.latent)
        encoded.append(enc.encoded)
        notes += [n for n in enc.notes if n not in notes]
    removed.file.close()
    labelled = atlas.obs[label_key].notna().to_numpy()
    table, _ = transfer_labels(np.asarray(atlas.obsm[latent_key])[labelled],
                               atlas.obs[label_key].astype(str).to_numpy()[labelled], np.concatenate(latents), k=k,
                               threshold=threshold, seed=seed)  # fmt: skip
    rows = np.flatnonzero(np.concatenate(encoded))
    label, uncertainty = table["label"].to_numpy().astype(object), table["uncertainty"].to_numpy()
    if evidence is not None:
        label, uncertainty = _check_markers(cells, rows, label, uncertainty, evidence, removed_path, notes)
    cells.iloc[rows, cells.columns.get_loc("cell_type")] = label
    cells.iloc[rows, cells.columns.get_loc("uncertainty")] = uncertainty
    cells["cell_type"] = cells["cell_type"].fillna("not mapped")
    log.info("QC audit: %d cells removed at ingest mapped onto the atlas (%s)", len(rows),
             ", ".join(f"{t} {n}" for t, n in cells["cell_type"].value_counts().head(6).items()))  # fmt: skip
    return QCAudit(cells=cells.rename_axis("cell").reset_index(), notes=notes)


def _check_markers(cells: pd.DataFrame, rows: np.ndarray, label: np.ndarray, uncertainty: np.ndarray,
                   evidence: MarkerEvidence, store: Path, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A neighbour label the cell's own markers contradict becomes unknown (uncertainty 1); ``cells`` gains
    ``marker_cell_type``, the type its own evidence favours."""
    from ..core.errors import AtlasError

    try:
        own = evidence.of(store).loc[cells.index]
    except (AtlasError, KeyError) as e:
        notes.append(f"QC audit: the removed cells' own markers could not be scored ({e}); their labels are the "
                     "neighbours' vote alone")  # fmt: skip
        log.warning(notes[-1])
        return label, uncertainty
    cells["marker_cell_type"] = own.idxmax(axis=1).to_numpy()
    off = markers_disagree(label, own.iloc[rows])
    label, uncertainty = label.copy(), uncertainty.copy()
    label[off], uncertainty[off] = "unknown", 1.0
    return label, uncertainty


def with_removed_cells(qc_by_type: pd.DataFrame, removed: pd.DataFrame) -> pd.DataFrame:
    """``qc_by_cell_type`` with the cells removed at ingest: ``removed_at_ingest``, one column per reason
    (``removed_<reason>``) and ``cells_input`` (in the store + removed at ingest), per (data set, cell type)."""
    keys = ["dataset_id", "cell_type"]
    if len(removed) == 0:
        out = qc_by_type.copy()
        out["removed_at_ingest"] = 0
    else:
        by_reason = removed.assign(n=1).pivot_table(index=keys, columns="qc_reason", values="n", aggfunc="sum",
                                                    fill_value=0, observed=True)  # fmt: skip
        by_reason.columns = [f"removed_{c}" for c in by_reason.columns]
        by_reason.insert(0, "removed_at_ingest", by_reason.sum(axis=1))
        base = qc_by_type.astype({k: str for k in keys})
        out = base.merge(by_reason.reset_index().astype({k: str for k in keys}), on=keys, how="outer")
    num = [c for c in out.columns if c not in keys]
    out[num] = out[num].fillna(0).astype(int)
    out["cells_input"] = out.get("cells_in_store", 0) + out["removed_at_ingest"]
    return out.sort_values(keys).reset_index(drop=True)
