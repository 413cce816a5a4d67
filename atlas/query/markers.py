"""Cell types the reference lacks, found from the query's own marker evidence.

A label can only be transferred if the reference has it. Query cells of a type the reference holds
no cells of take the label of whatever reference cells lie nearest; the distance term of the
transfer (:mod:`atlas.integrate.label_transfer`) flags those that land far from every reference cell, but
scArches can place a new population close to known ones (with the B cells removed from a
reference of an independently generated cohort, half of the query's B cells sat inside the 99th
percentile of the reference's own neighbour distances and took six different labels).

So the query annotates itself as the analysis annotated the reference (:mod:`atlas.analyse.celltypes`):
the reference's cell-type markers scored on the query's own counts, an over-clustering of the
query's latent, the analysis's cluster-level rule with the reference's settings
(``uns["cell_type_rule"]``), with its per-cell refinement on (``refine_cells``: a cell whose own
evidence for another called type is an outlier of its cluster's spread, or whose calibrated posterior
prefers another type, moves there). The refinement is on whatever the reference chose because
scArches also places single cells of a new type inside clusters of known types: on three independent
cohorts it raised the B cells marked unknown from 0.953 / 0.883 / 0.994 to 1.000 / 0.975 / 0.994 and
marked no more known cells (17 -> 11, 39 -> 39, 5 -> 5); on the simulator nothing changed but one cell
(``benchmarks/query.md``, 2026-12-06). A query cell is a **novel type** when

* its own call (its cluster's, or the refinement's, or for a cell of an ``unknown`` cluster its
  calibrated posterior's) is a type the reference has fewer cells of than one neighbourhood of the
  transfer (``n_neighbors``: too few to ever win a vote), and
* its own evidence for that type exceeds its evidence for the label transferred to it.

A cell whose own call is ``unknown`` (the rule finds no type of the marker panel for it: its cluster has no type
enriched, as a type outside the panel such as mast or dendritic cells, or is mixed and the cell's own evidence
is not clear) is a novel type as well when the transfer gave it a panel type: the reference's labels are the
panel's types, and the query's own markers do not back any of them (in 12 query runs of panel types only, 8
such cells, 6 of them already unknown by the transfer; ``benchmarks/query.md``, stop 34).

Such cells get ``predicted_cell_type`` unknown and ``marker_uncertainty`` 1 (0 otherwise; the
prediction uncertainty is the largest of the vote, distance and marker terms). The check adds no
threshold of its own: the calls are the analysis's rule, with its units measured on the query's cells.
Every cell's own call is kept in ``marker_cell_type``, and ``tables/marker_check.csv`` crosses it
with the transferred label, so disagreements between the two are visible to the user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import AtlasError

__all__ = ["MarkerCheck", "absent_types", "marker_check", "novel_cells"]

log = logging.getLogger(__name__)


@dataclass
class MarkerCheck:
    """The query's own cell-type calls and the cells the reference cannot label."""

    own: np.ndarray  # the query's own call per cell (str; ``unknown`` where the rule made none)
    novel: np.ndarray  # bool per cell: a type the reference lacks, by the cell's own evidence
    absent: list[str]  # marker types the reference lacks
    enrichment: pd.DataFrame  # cells x marker types: the cell's evidence (marker_z of the analysis)


def absent_types(types, ref_label_counts: pd.Series, min_cells: int) -> list[str]:
    """Marker types with fewer than ``min_cells`` reference cells."""
    counts = ref_label_counts.astype(int)
    return [t for t in types if int(counts.get(t, 0)) < min_cells]


def novel_cells(own: np.ndarray, enrichment: pd.DataFrame, transferred: np.ndarray, absent: list[str]) -> np.ndarray:
    """Cells the reference cannot label, by their own markers: an own call of an absent type with more evidence
    for it than for the transferred label (a transferred label without markers counts as no evidence), or an own
    call of ``unknown`` (no type of the panel, ``enrichment``'s columns) where the transfer gave a panel type."""
    from ..analyse.celltypes import UNKNOWN

    e = enrichment.to_numpy(np.float64)
    col = {t: j for j, t in enumerate(enrichment.columns)}
    rows = np.arange(len(own))
    own_j = np.array([col.get(t, -1) for t in own])
    lab_j = np.array([col.get(t, -1) for t in transferred])
    own_e = np.where(own_j >= 0, e[rows, np.maximum(own_j, 0)], -np.inf)
    lab_e = np.where(lab_j >= 0, e[rows, np.maximum(lab_j, 0)], -np.inf)
    return (np.isin(own, absent) & (own_e > lab_e)) | ((own == UNKNOWN) & (lab_j >= 0))


def _settings(record: dict | None):
    """Markers and cell-type options of the reference's record (the analysis's defaults without one)."""
    from ..analyse.settings import DEFAULT_MARKERS, CellTypeOptions

    record = dict(record or {})
    markers = record.get("cell_type_markers") or DEFAULT_MARKERS
    markers = {str(k): [str(g) for g in np.atleast_1d(v)] for k, v in dict(markers).items()}
    opts = {k: (v.item() if hasattr(v, "item") else v) for k, v in dict(record.get("cell_types") or {}).items()}
    seed = record.get("seed", 0)
    return markers, CellTypeOptions(**opts), int(seed.item() if hasattr(seed, "item") else seed)


def _measured(markers: dict[str, list[str]], store: Path, notes: list[str]) -> dict[str, list[str]]:
    """The marker types with a gene in the query store, looked up as scoring looks them up (as given, then under
    current or previous symbols: :func:`atlas.score.gene_sets.match_genes`); the others cannot be called (noted)."""
    import h5py
    from anndata.io import read_elem

    from ..score.gene_sets import match_genes, resolve_gene_sets

    with h5py.File(store, "r") as f:
        var_names = read_elem(f["var"]).index.astype(str)
    out = {}
    for rs in resolve_gene_sets(markers):
        try:
            match_genes(rs, var_names)
        except AtlasError:
            continue
        out[rs.name] = markers[rs.name]
    if len(out) < len(markers):
        notes.append("marker check: the query measures no marker of " + ", ".join(sorted(set(markers) - set(out)))
                     + "; those types cannot be found in it")  # fmt: skip
        log.warning(notes[-1])
    return out


def marker_check(
    store: Path,
    obs_names: pd.Index,
    latent: np.ndarray,
    transferred: np.ndarray,
    ref_label_counts: pd.Series,
    *,
    record: dict | None,
    scoring: dict,
    min_reference_cells: int,
    notes: list[str],
) -> MarkerCheck | None:
    """The query's own cell-type calls and its novel-type cells (see the module docstring).

    Parameters
    ----------
    store, obs_names, latent
        The query store (all genes), its cells in the order of ``latent`` (the query's latent).
    transferred
        The label the transfer gave each cell before its uncertainty threshold (``best_label``).
    ref_label_counts
        Reference cells per label.
    record
        The reference's ``uns["cell_type_rule"]`` (``None``: the analysis's default markers and rule).
    scoring
        :func:`atlas.score.score_store` arguments (the reference's; the method is always scanpy's, as the
        analysis scores markers).
    min_reference_cells
        A marker type with fewer reference cells is absent from the reference.
    notes
        The run's notes (appended to).

    Returns
    -------
    :class:`MarkerCheck`, or ``None`` (with a note) when the reference's labels are not the marker types or the
    query's markers cannot be scored.
    """
    from ..analyse.celltypes import UNKNOWN, annotate_cell_types
    from ..analyse.steps import cell_type_rule, overcluster_latent
    from ..score import score_store

    markers, opts, seed = _settings(record)
    if not set(markers) & set(ref_label_counts.index.astype(str)):
        notes.append("marker check skipped: the reference's labels are not the analysis's marker types "
                     f"({', '.join(sorted(markers))})")  # fmt: skip
        log.info(notes[-1])
        return None
    if record is None:
        notes.append("the reference records no cell-type rule (analysed by an older atlas): the marker check uses "
                     "the default markers and rule")  # fmt: skip
        log.info(notes[-1])
    markers = _measured(markers, store, notes)
    if len(markers) < 2:
        notes.append("marker check skipped: the query measures the markers of fewer than two cell types")
        log.warning(notes[-1])
        return None
    try:
        scores = score_store(store, markers, **(scoring | {"method": "scanpy"})).loc[obs_names]
    except AtlasError as e:
        notes.append(f"marker check skipped: the query's markers cannot be scored ({e})")
        log.warning(notes[-1])
        return None
    labels, graph = overcluster_latent(latent, opts, seed)
    clusters = pd.Series(labels, index=obs_names)
    # refine: a novel cell inside a known type's cluster; no neutrophil gate: an unsure neutrophil is no novel type
    rule = replace(cell_type_rule(opts, seed), refine_cells=True, confident_neutrophils=False)
    cells, _ = annotate_cell_types(scores, clusters, rule, graph)
    own = cells["cell_type"].astype(str).to_numpy()
    enrichment = cells[[f"marker_z_{t}" for t in markers]].set_axis(list(markers), axis=1)
    absent = absent_types(markers, ref_label_counts, min_reference_cells)
    novel = novel_cells(own, enrichment, np.asarray(transferred).astype(str), absent)
    no_type = novel & (own == UNKNOWN)
    if (novel & ~no_type).any():
        found = pd.Series(own[novel & ~no_type]).value_counts()
        notes.append("labelled unknown: " + ", ".join(f"{n:,} cells whose own markers call {t}" for t, n in found.items())
                     + f", a type the reference has fewer than {min_reference_cells} cells of (marker_cell_type)")  # fmt: skip
        log.warning(notes[-1])
    if no_type.any():
        notes.append(f"labelled unknown: {int(no_type.sum()):,} cells whose own markers call no type of the panel (a "
                     "cell type outside it?), which the transfer gave a panel type (marker_cell_type unknown)")  # fmt: skip
        log.warning(notes[-1])
    return MarkerCheck(own=own, novel=novel, absent=absent, enrichment=enrichment)
