"""Per-cell QC of one data set, with neutrophils' low RNA content in mind.

Two modes (``qc.thresholds.mode``), per data set (``qc.per_dataset`` overrides any setting):

``mad`` (default): thresholds from the data set's own cells, as scater's ``isOutlier`` and the
single-cell best-practices book do.

* Every cell must reach a lenient absolute floor (``floor_min_counts`` UMIs, ``floor_min_genes``
  genes; 50 / 20 by default): below it a barcode is not a usable cell and is removed. The floor
  keeps low-RNA neutrophils: droplet neutrophils with a median of ~300 UMIs and a log-sd of ~0.7 put
  ~10 % of their cells under 100 UMIs but ~1 % under 50 (measured: a floor of 100 / 50 removed 9-13 %
  of an independent cohort's true neutrophils). What the floor lets through is judged by the
  cluster-level pass below, not kept blindly.
* On the cells above the floor, the median and the MAD (scaled by 1.4826, as R's ``mad``) of
  log1p(total counts), log1p(detected genes) and % mito are computed once per data set. Cells
  above ``median + nmads_counts * MAD`` (counts) or ``median + nmads_genes * MAD`` (genes) are
  removed (5 MADs: permissive, multiplets and outliers only). Cells above the mito bound are
  removed; the bound is ``median + nmads_mito * MAD`` of % mito, kept within
  ``[min_pct_mito_bound, max_pct_mito]``: never below 10 % (normal human cells, Osorio & Cai
  2021; also guards a MAD of ~0) and never above the absolute ceiling (20 %). A cell above the bound is
  removed only when its MT- count is significantly above it given its UMIs (``mito_alpha``, one-sided
  binomial test, :func:`mito_above`): a low-RNA cell's % mito is a noisy proportion.
* Cells below ``median - nmads_low_rna * MAD`` of log1p counts or of log1p genes (3 MADs, scater's
  default) but above the floor are **not** removed: they are kept and flagged ``qc_low_rna``.
  Neutrophils sit there. The analyse stage clusters all cells and keeps a flagged cell only if its
  cluster is neutrophil-like (called neutrophil, or without a clear winner but led by neutrophil) and the cell
  itself likely a neutrophil (:func:`second_pass_keep`; :func:`qc_by_cell_type` tabulates it), as
  published neutrophil atlases do (cluster first at a lenient floor, then keep low-RNA cells whose
  cluster is neutrophil-like). Lower-tail flags are cheap to get wrong (the cluster decides), so they
  use the stricter 3 MADs; removals use the permissive 5.
* Data sets with fewer than ``mad_min_cells`` cells above the floor get no MAD bounds (a median and
  MAD of a handful of cells mean little): floor and absolute limits only, with a log line. A MAD of 0
  switches that metric's bound off rather than cutting at the median.
* ``max_counts`` / ``max_genes`` (off by default) and ``max_pct_mito`` are absolute limits on top.

The bounds are per data set, not per sample: within one data set (one protocol, one lab) samples
differ far more in composition than in capture quality (a blood sample can be mostly neutrophils, a
tumour sample mostly epithelium), and a per-sample median would judge the same cell differently
depending on its neighbours; small samples would also give unstable MADs.

``fixed``: today's rule before MAD bounds. A cell with neutrophil evidence (at least
``qc.neutrophil_min_markers`` of ``qc.neutrophil_markers`` detected and at most
``qc.exclusion_max_markers`` markers of other lineages) is held to the lower
``neutrophil_min_counts`` / ``neutrophil_min_genes`` floor; other cells to ``min_counts`` /
``min_genes`` (``None`` = no special floor). No cell is flagged. Neutrophil evidence is computed and
reported in both modes, but in ``mad`` mode it decides nothing.

A removed cell is counted once, under the first failing reason in :data:`QC_REASONS` order:
low_counts, low_genes, high_counts, high_genes, high_mito, then doublets (scrublet runs on the
cells that passed the thresholds).

Cost (``mad`` mode, see :mod:`atlas.ingest.stage`): the bounds need the whole data set, so the input is
read once and the cells above the floor are written to a temporary per-data-set part file (as the
doublet path does); after the bounds are known the part is copied into the store with a keep mask.
Counts of kept cells are thus written twice and read once more; memory holds one chunk plus ~40
bytes of metrics per cell (the obs table already holds more).

The functions here take arrays and return arrays or DataFrames; none of them sees AnnData.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .settings import QCConfig, QCThresholds

logger = logging.getLogger(__name__)

__all__ = [
    "QC_REASONS",
    "QCBounds",
    "QCGeneSets",
    "QCTally",
    "detect_doublets",
    "doublet_threshold_failed",
    "fixed_bounds",
    "floor_reasons",
    "mad_bounds",
    "mad_reasons",
    "qc_by_cell_type",
    "qc_metrics",
    "qc_reasons",
    "second_pass_keep",
]

#: removal reasons, in the order they are checked (code = position + 1; 0 = kept)
QC_REASONS: tuple[str, ...] = (
    "low_counts",
    "low_genes",
    "high_counts",
    "high_genes",
    "high_mito",
    "doublets",
)
_THRESHOLD_FIELDS = tuple(QCThresholds.model_fields)
_MAD_SCALE = 1.4826  # MAD -> sd for normal data (R's mad(), scater's isOutlier)


@dataclass(frozen=True)
class QCGeneSets:
    """Column indices of the gene groups QC looks at, for one gene axis."""

    mito: np.ndarray
    ribo: np.ndarray
    markers: np.ndarray
    exclusion: np.ndarray

    @classmethod
    def from_genes(cls, genes: Sequence[str], qc: QCConfig) -> QCGeneSets:
        """Find the gene groups in ``genes`` (current human symbols).

        Parameters
        ----------
        genes
            The gene axis.
        qc
            QC settings (marker lists).
        """
        g = pd.Index(genes).astype(str)
        upper = g.str.upper()
        return cls(
            mito=np.flatnonzero(upper.str.startswith("MT-")),
            ribo=np.flatnonzero(upper.str.startswith(("RPL", "RPS"))),
            markers=np.flatnonzero(g.isin(qc.neutrophil_markers)),
            exclusion=np.flatnonzero(g.isin(qc.exclusion_markers)),
        )


def _n_detected(X: sp.csr_matrix, cols: np.ndarray) -> np.ndarray:
    if len(cols) == 0:
        return np.zeros(X.shape[0], dtype=np.int64)
    sub = X[:, cols]
    sub.eliminate_zeros()
    return np.diff(sub.indptr)


def _col_sum(X: sp.csr_matrix, cols: np.ndarray) -> np.ndarray:
    if len(cols) == 0:
        return np.zeros(X.shape[0])
    return np.asarray(X[:, cols].sum(axis=1, dtype=np.float64)).ravel()


def qc_metrics(
    X: sp.csr_matrix, gene_sets: QCGeneSets, *, min_markers: int, exclusion_max: int
) -> pd.DataFrame:
    """Per-cell QC metrics of one chunk.

    Parameters
    ----------
    X
        CSR counts, cells x genes (explicit zeros removed).
    gene_sets
        Gene groups of ``X``'s columns.
    min_markers
        Neutrophil markers a cell must show for neutrophil evidence.
    exclusion_max
        Most other-lineage markers a cell may show and still have neutrophil evidence.

    Returns
    -------
    DataFrame (positional index) with ``total_counts``, ``n_genes``, ``pct_mito``, ``pct_ribo``,
    ``neutrophil_evidence``.
    """
    total = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    n_genes = np.diff(X.indptr).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct_mito = np.where(total > 0, 100 * _col_sum(X, gene_sets.mito) / total, 0.0)
        pct_ribo = np.where(total > 0, 100 * _col_sum(X, gene_sets.ribo) / total, 0.0)
    evidence = (_n_detected(X, gene_sets.markers) >= min_markers) & (
        _n_detected(X, gene_sets.exclusion) <= exclusion_max
    )
    return pd.DataFrame(
        {
            "total_counts": total.astype(np.float32),
            "n_genes": n_genes.astype(np.int32),
            "pct_mito": pct_mito.astype(np.float32),
            "pct_ribo": pct_ribo.astype(np.float32),
            "neutrophil_evidence": evidence,
        }
    )


# ------------------------------------------------------------------------------------ thresholds
def _off(v: float | None, default: float) -> float:
    return default if v is None else float(v)


@dataclass(frozen=True)
class QCBounds:
    """The thresholds applied to one data set, in UMIs, genes and % (``nan`` = not used).

    Attributes
    ----------
    min_counts, min_genes
        Removal floor (``mad``: the lenient floor; ``fixed``: the default floor; neutrophil-evidence
        cells get ``neutrophil_min_*`` on top in fixed mode).
    low_rna_counts, low_rna_genes
        Cells under either (and above the floor) are flagged ``qc_low_rna`` (``mad`` mode only).
    max_counts, max_genes, max_pct_mito
        Removal ceilings (MAD bounds capped by the absolute limits).
    mito_alpha
        ``mad`` mode: level of the binomial test a cell's MT- count must pass to be removed for % mito
        (:func:`mito_above`; ``nan`` = the plain cut-off).
    median_counts, median_genes, median_pct_mito, mad_log_counts, mad_log_genes, mad_pct_mito
        The statistics behind the MAD bounds (scaled MADs; ``nan`` when not computed).
    n_cells_mad
        Cells the statistics were computed on (those above the floor).
    """

    min_counts: float = -np.inf
    min_genes: float = -np.inf
    low_rna_counts: float = np.nan
    low_rna_genes: float = np.nan
    max_counts: float = np.inf
    max_genes: float = np.inf
    max_pct_mito: float = np.inf
    mito_alpha: float = np.nan
    median_counts: float = np.nan
    median_genes: float = np.nan
    median_pct_mito: float = np.nan
    mad_log_counts: float = np.nan
    mad_log_genes: float = np.nan
    mad_pct_mito: float = np.nan
    n_cells_mad: int = 0

    def row(self) -> dict:
        """QC-table columns ``used_*`` (thresholds, ``inf``/``-inf`` shown as ``nan``) and the statistics."""
        out = {}
        for k, v in asdict(self).items():
            v = float(v) if k != "n_cells_mad" else int(v)
            prefix = "" if k.startswith(("median_", "mad_", "n_cells")) else "used_"
            out[prefix + k] = np.nan if isinstance(v, float) and np.isinf(v) else v
        return out


#: Thresholds in UMIs or genes, scaled for a data set that measured a gene panel (:func:`for_gene_panel`).
_PANEL_SCALED = ("floor_min_counts", "floor_min_genes", "min_counts", "min_genes", "neutrophil_min_counts",
                 "neutrophil_min_genes")  # fmt: skip


def for_gene_panel(t: QCThresholds, n_genes: int, most_genes: int) -> tuple[QCThresholds, float]:
    """The thresholds of a data set whose files hold ``n_genes`` genes, ``most_genes`` being the most any data set
    of the ingest holds, and the scale applied (1: none).

    The absolute limits are set for a whole transcriptome. A data set that deposited only its 2,000 most variable
    genes, or measured a targeted panel, counts a fraction of each cell's UMIs and genes: a 300-UMI droplet
    neutrophil keeps ~90 UMIs on 26 genes of such a panel, and the 50-UMI / 20-gene floor removed 127 of one
    independent cohort's 1,170 neutrophils, all in its three 2,000-gene studies (stop 45). Below
    ``panel_share`` of ``most_genes`` the UMI and gene floors are scaled by ``n_genes / most_genes`` (by the gene share:
    a panel keeps a larger share of UMIs than of genes, so this errs lenient, and the cluster-level pass judges
    what it lets through), and the absolute % mito ceiling is off: the % is of the panel's UMIs (one such study's
    median was 11.9 % against 4.6-5.1 % in the whole-transcriptome ones); the data set's own MAD bound still applies.
    """
    share = n_genes / max(most_genes, 1)
    if t.panel_share is None or share >= t.panel_share:
        return t, 1.0
    scaled = {k: (None if getattr(t, k) is None else int(round(getattr(t, k) * share))) for k in _PANEL_SCALED}
    return t.model_copy(update={**scaled, "max_pct_mito": None}), share


def fixed_bounds(t: QCThresholds) -> QCBounds:
    """Bounds known without looking at the data: ``mad`` mode's floor, or ``fixed`` mode's default floor.

    Parameters
    ----------
    t
        The data set's thresholds.
    """
    mad = t.mode == "mad"
    return QCBounds(
        min_counts=_off(t.floor_min_counts if mad else t.min_counts, -np.inf),
        min_genes=_off(t.floor_min_genes if mad else t.min_genes, -np.inf),
        max_counts=_off(t.max_counts, np.inf),
        max_genes=_off(t.max_genes, np.inf),
        max_pct_mito=_off(t.max_pct_mito, np.inf),
        mito_alpha=_off(t.mito_alpha, np.nan) if mad else np.nan,
    )


def _median_mad(x: np.ndarray) -> tuple[float, float]:
    med = float(np.median(x))
    return med, float(_MAD_SCALE * np.median(np.abs(x - med)))


def mad_bounds(metrics: pd.DataFrame, t: QCThresholds, *, dataset_id: str = "") -> QCBounds:
    """Data-driven bounds of one data set (``mad`` mode), from the metrics of its cells above the floor.

    Parameters
    ----------
    metrics
        :func:`qc_metrics` of every cell of the data set that passed the floor (:func:`floor_reasons`).
    t
        The data set's thresholds.
    dataset_id
        For log lines.

    Returns
    -------
    :class:`QCBounds`; only the floor and absolute limits when fewer than ``t.mad_min_cells`` cells
    are given.
    """
    base = fixed_bounds(t.model_copy(update={"mode": "mad"}))
    n = len(metrics)
    if n < t.mad_min_cells:
        logger.warning(
            "data set %s: %d cells above the QC floor < mad_min_cells=%d; no MAD bounds (floor and "
            "absolute limits only)", dataset_id, n, t.mad_min_cells,
        )
        return QCBounds(**{**asdict(base), "n_cells_mad": n})
    lc, sc = _median_mad(np.log1p(metrics["total_counts"].to_numpy(np.float64)))
    lg, sg = _median_mad(np.log1p(metrics["n_genes"].to_numpy(np.float64)))
    mm, sm = _median_mad(metrics["pct_mito"].to_numpy(np.float64))

    def bound(med: float, mad: float, k: float, sign: int) -> float:  # MAD 0: bound off
        return float(np.expm1(med + sign * k * mad)) if mad > 0 else sign * np.inf

    mito = mm + t.nmads_mito * sm
    mito = min(max(mito, t.min_pct_mito_bound), base.max_pct_mito)
    return QCBounds(
        min_counts=base.min_counts,
        min_genes=base.min_genes,
        low_rna_counts=bound(lc, sc, t.nmads_low_rna, -1),
        low_rna_genes=bound(lg, sg, t.nmads_low_rna, -1),
        max_counts=min(bound(lc, sc, t.nmads_counts, 1), base.max_counts),
        max_genes=min(bound(lg, sg, t.nmads_genes, 1), base.max_genes),
        max_pct_mito=mito,
        mito_alpha=base.mito_alpha,
        median_counts=float(np.expm1(lc)),
        median_genes=float(np.expm1(lg)),
        median_pct_mito=mm,
        mad_log_counts=sc,
        mad_log_genes=sg,
        mad_pct_mito=sm,
        n_cells_mad=n,
    )


# ---------------------------------------------------------------------------------------- reasons
def _first_reason(fails: list[np.ndarray], n: int) -> np.ndarray:
    reason = np.zeros(n, dtype=np.int8)
    for code in range(len(fails), 0, -1):  # last assignment wins: the first reason in order
        reason[fails[code - 1]] = code
    return reason


def _floor(evidence: np.ndarray, default: int | None, neutro: int | None) -> np.ndarray:
    d = -np.inf if default is None else default
    n = d if neutro is None else neutro
    return np.where(evidence, n, d)


def qc_reasons(metrics: pd.DataFrame, thresholds: QCThresholds) -> tuple[np.ndarray, np.ndarray]:
    """``fixed`` mode: first failing threshold per cell, and which cells pass only thanks to the neutrophil floor.

    Parameters
    ----------
    metrics
        Output of :func:`qc_metrics`.
    thresholds
        The data set's thresholds.

    Returns
    -------
    reason
        int8 code per cell: 0 = passes, ``k`` = ``QC_REASONS[k - 1]``.
    floor_kept
        Passing cells that would fail the default ``min_counts``/``min_genes``.
    """
    t = thresholds
    total = metrics["total_counts"].to_numpy()
    ngenes = metrics["n_genes"].to_numpy()
    mito = metrics["pct_mito"].to_numpy()
    ev = metrics["neutrophil_evidence"].to_numpy()
    fails = [
        total < _floor(ev, t.min_counts, t.neutrophil_min_counts),
        ngenes < _floor(ev, t.min_genes, t.neutrophil_min_genes),
        total > _off(t.max_counts, np.inf),
        ngenes > _off(t.max_genes, np.inf),
        mito > _off(t.max_pct_mito, np.inf),
    ]
    reason = _first_reason(fails, len(total))
    default_fail = (total < _floor(np.zeros_like(ev), t.min_counts, None)) | (
        ngenes < _floor(np.zeros_like(ev), t.min_genes, None)
    )
    return reason, (reason == 0) & ev & default_fail


def floor_reasons(metrics: pd.DataFrame, thresholds: QCThresholds) -> np.ndarray:
    """``mad`` mode, while streaming: the lenient floor only (code 1 = low_counts, 2 = low_genes, 0 = passes).

    Parameters
    ----------
    metrics
        Output of :func:`qc_metrics`.
    thresholds
        The data set's thresholds.
    """
    b = fixed_bounds(thresholds.model_copy(update={"mode": "mad"}))
    total = metrics["total_counts"].to_numpy()
    return _first_reason([total < b.min_counts, metrics["n_genes"].to_numpy() < b.min_genes], len(total))


def mito_above(total: np.ndarray, pct_mito: np.ndarray, bound: float, alpha: float) -> np.ndarray:
    """Cells whose % mito is above ``bound``, and (``alpha`` not NaN) significantly so given their UMIs.

    A cell's % mito is a proportion of its ``total`` UMIs, so its sampling error grows as the cell gets
    smaller (sd ~1.2 points at 300 UMIs and 5 %): a plain cut-off removes healthy low-RNA cells far more
    often than deep ones. With ``alpha``, a cell is above the bound only when ``P(X >= its MT- count)``
    under ``Binomial(total, bound / 100)`` is below ``alpha``; a damaged cell (30-60 % mito) is far
    beyond either rule, while a deep cell's test is close to the cut-off.
    """
    above = pct_mito > bound
    if np.isnan(alpha) or not np.isfinite(bound) or not above.any():
        return above
    from scipy.stats import binom

    k = np.rint(pct_mito[above] * total[above] / 100.0)
    p = binom.sf(k - 1, total[above], min(bound, 100.0) / 100.0)
    out = above.copy()
    out[above] = p < alpha
    return out


def mad_reasons(metrics: pd.DataFrame, bounds: QCBounds) -> tuple[np.ndarray, np.ndarray]:
    """``mad`` mode: first failing bound per cell, and the low-RNA flag of the cells that pass.

    Parameters
    ----------
    metrics
        Output of :func:`qc_metrics`.
    bounds
        The data set's bounds (:func:`mad_bounds`).

    Returns
    -------
    reason
        int8 code per cell: 0 = passes, ``k`` = ``QC_REASONS[k - 1]``.
    low_rna
        Passing cells under ``low_rna_counts`` or ``low_rna_genes`` (kept, flagged).
    """
    b = bounds
    total = metrics["total_counts"].to_numpy()
    ngenes = metrics["n_genes"].to_numpy()
    fails = [
        total < b.min_counts,
        ngenes < b.min_genes,
        total > b.max_counts,
        ngenes > b.max_genes,
        mito_above(total, metrics["pct_mito"].to_numpy(), b.max_pct_mito, b.mito_alpha),
    ]
    reason = _first_reason(fails, len(total))
    with np.errstate(invalid="ignore"):  # nan bounds compare False: no flag
        low = (total < b.low_rna_counts) | (ngenes < b.low_rna_genes)
    return reason, (reason == 0) & low


# ------------------------------------------------------------------------------------------ tally
class QCTally:
    """Counts of one data set's QC outcome: a row of the QC table."""

    def __init__(self, dataset_id: str, thresholds: QCThresholds, *, enabled: bool = True, source: str = ""):
        self.dataset_id = dataset_id
        self.thresholds = thresholds
        self.enabled = enabled
        self.source = source
        self.bounds = fixed_bounds(thresholds)
        self.cells_in = 0
        self.removed = dict.fromkeys(QC_REASONS, 0)
        self.floor_kept = 0
        self.low_rna = 0
        self.evidence_in = 0
        self.evidence_removed = 0
        self.evidence_low_rna = 0
        self.doublet_samples_not_trusted = 0
        self.panel_scale = 1.0  # floors scaled for a gene panel (for_gene_panel); 1: a whole transcriptome

    def add(
        self, metrics: pd.DataFrame, reason: np.ndarray, floor_kept: np.ndarray | None = None, *, new_cells: bool = True
    ) -> np.ndarray:
        """Count one batch of cells; return the mask of cells kept (all cells when QC is disabled).

        Parameters
        ----------
        metrics, reason, floor_kept
            Output of :func:`qc_metrics` and of :func:`qc_reasons` / :func:`floor_reasons` /
            :func:`mad_reasons` for the same cells (``floor_kept`` None = none).
        new_cells
            False when these cells were already counted in (a second pass over kept cells).
        """
        ev = metrics["neutrophil_evidence"].to_numpy(dtype=bool)
        if new_cells:
            self.cells_in += len(reason)
            self.evidence_in += int(ev.sum())
        if not self.enabled:
            return np.ones(len(reason), dtype=bool)
        for code, name in enumerate(QC_REASONS[:-1], start=1):
            self.removed[name] += int((reason == code).sum())
        keep = reason == 0
        self.evidence_removed += int(ev[~keep].sum())
        if floor_kept is not None:
            self.floor_kept += int(floor_kept.sum())
        return keep

    def add_low_rna(self, low_rna: np.ndarray, evidence: np.ndarray) -> None:
        """Count the kept cells flagged ``qc_low_rna``.

        Parameters
        ----------
        low_rna, evidence
            Flags and neutrophil evidence of kept cells.
        """
        self.low_rna += int(low_rna.sum())
        self.evidence_low_rna += int((low_rna & evidence).sum())

    def add_doublets(
        self,
        predicted: np.ndarray,
        evidence: np.ndarray,
        floor_kept: np.ndarray,
        low_rna: np.ndarray | None = None,
        n_untrusted: int = 0,
    ) -> None:
        """Count doublets removed among the cells that passed the thresholds.

        Parameters
        ----------
        predicted
            Predicted doublets (bool) of the passing cells.
        evidence, floor_kept, low_rna
            Neutrophil evidence, floor-kept and low-RNA flags of the same cells.
        n_untrusted
            Samples whose doublet calls were not trusted (:func:`detect_doublets`).
        """
        if not self.enabled:
            return
        self.doublet_samples_not_trusted += n_untrusted
        self.removed["doublets"] += int(predicted.sum())
        self.evidence_removed += int((evidence & predicted).sum())
        self.floor_kept -= int((floor_kept & predicted).sum())
        if low_rna is not None:
            self.low_rna -= int((low_rna & predicted).sum())
            self.evidence_low_rna -= int((low_rna & evidence & predicted).sum())

    @property
    def cells_out(self) -> int:
        """Cells kept."""
        return self.cells_in - sum(self.removed.values())

    def row(self) -> dict:
        """The QC-table row: counts, the thresholds used (``used_*``, MAD statistics), then the settings."""
        row = {"dataset_id": self.dataset_id, "cells_in": self.cells_in}
        row.update({f"removed_{k}": v for k, v in self.removed.items()})
        row.update(
            {
                "cells_flagged_low_rna": self.low_rna,
                "cells_out": self.cells_out,
                "kept_by_neutrophil_floor": self.floor_kept,
                "doublet_samples_not_trusted": self.doublet_samples_not_trusted,
                "panel_scale": self.panel_scale,
                "qc_enabled": self.enabled,
                "qc_mode": self.thresholds.mode,
            }
        )
        row.update(self.bounds.row())
        row.update({k: getattr(self.thresholds, k) for k in _THRESHOLD_FIELDS if k != "mode"})
        return row

    def neutrophil_row(self) -> dict:
        """Row of the neutrophil-evidence table: evidence cells in, removed, flagged low-RNA, out."""
        return {
            "dataset_id": self.dataset_id,
            "evidence_cells_in": self.evidence_in,
            "evidence_cells_out": self.evidence_in - self.evidence_removed,
            "evidence_cells_removed": self.evidence_removed,
            "evidence_cells_flagged_low_rna": self.evidence_low_rna,
            "kept_by_neutrophil_floor": self.floor_kept,
        }

    def all_removed_message(self) -> str:
        """The error text when QC removed every cell of the data set (counts, thresholds, what to do)."""
        removed = ", ".join(f"{k} {v}" for k, v in self.removed.items() if v)
        b = self.bounds
        used = (
            f"min UMIs {b.min_counts:g}, min genes {b.min_genes:g}, max UMIs {b.max_counts:g}, "
            f"max genes {b.max_genes:g}, max % mito {b.max_pct_mito:g}"
        )
        src = f" ({self.source})" if self.source else ""
        return (
            f"QC removed every cell of data set {self.dataset_id}{src}: {self.cells_in} cells read; removed by "
            f"reason: {removed}; thresholds used ({self.thresholds.mode} mode): {used}. Check that this file "
            "holds raw counts of real cells (not empty barcodes or a filtered gene panel). To keep them anyway, "
            f"loosen the thresholds of this data set only (qc.per_dataset: {{{self.dataset_id}: "
            "{floor_min_counts: ..., floor_min_genes: ..., max_pct_mito: ...}}), or set qc.enabled: false."
        )


# -------------------------------------------------------------------------- second (cluster) pass
def _as_bool(x) -> np.ndarray:
    """Bool array; missing values (cells of a store without the column) count as False."""
    return np.asarray(pd.array(np.asarray(x, dtype=object), dtype="boolean").fillna(False), dtype=bool)


def second_pass_keep(
    low_rna: np.ndarray,
    cluster_neutrophil_like: np.ndarray,
    neutrophil_confidence: np.ndarray | None = None,
    min_confidence: float = 0.5,
) -> np.ndarray:
    """Cluster-level second QC pass: keep unflagged cells, and flagged cells of neutrophil-like clusters.

    Low-quality cells also cluster by their low quality: a cluster of 100-UMI cells of several types can
    still be called neutrophil when half of it is. With ``neutrophil_confidence`` (the calibrated per-cell
    posterior, whose prior is the cluster's own estimated composition) a flagged cell is kept only when it
    is also at least ``min_confidence`` likely a neutrophil: in a pure neutrophil cluster that holds for a
    cell with one detected marker, in a mixed one the cell's own markers decide.

    Parameters
    ----------
    low_rna
        Per cell, the store's ``qc_low_rna`` flag (missing values count as not flagged).
    cluster_neutrophil_like
        Per cell, whether its cluster was called neutrophil-like.
    neutrophil_confidence
        Per cell, the calibrated probability that it is a neutrophil (``None``: the cluster call alone).
    min_confidence
        The probability a flagged cell of a neutrophil-like cluster needs to stay.

    Returns
    -------
    Boolean keep mask.
    """
    low, neut = _as_bool(low_rna), _as_bool(cluster_neutrophil_like)
    conf = None if neutrophil_confidence is None else np.asarray(neutrophil_confidence, dtype=np.float64)
    for what, values in (("cluster calls", neut), ("confidences", conf)):
        if values is not None and values.shape != low.shape:
            raise ValueError(
                f"second_pass_keep: {low.shape[0]} low-RNA flags but {values.shape[0]} {what}; give one of each per cell"
            )
    if conf is not None:
        neut = neut & (conf >= min_confidence)  # NaN: not confident
    return ~low | neut


def qc_by_cell_type(
    obs: pd.DataFrame,
    keep: np.ndarray,
    cell_type_col: str = "cell_type",
    *,
    low_rna_col: str = "qc_low_rna",
    dataset_col: str = "dataset_id",
) -> pd.DataFrame:
    """Second-pass outcome per data set and annotated cell type.

    Parameters
    ----------
    obs
        Cells of the store (``dataset_col``, ``cell_type_col``; ``low_rna_col`` if present, else no
        cell counts as flagged).
    keep
        The second pass's keep mask (:func:`second_pass_keep`), one per row of ``obs``.
    cell_type_col, low_rna_col, dataset_col
        Column names.

    Returns
    -------
    DataFrame with ``dataset_id``, ``cell_type``, ``cells_in_store``, ``flagged_low_rna``,
    ``removed_second_pass``, ``kept`` (one row per observed pair).
    """
    for c in (dataset_col, cell_type_col):
        if c not in obs:
            raise ValueError(f"qc_by_cell_type: obs has no column {c!r}; annotate cells first or pass its name")
    keep = np.asarray(keep, dtype=bool)
    if len(keep) != len(obs):
        raise ValueError(f"qc_by_cell_type: keep has {len(keep)} values for {len(obs)} cells")
    low = _as_bool(obs[low_rna_col]) if low_rna_col in obs else np.zeros(len(obs), bool)
    df = pd.DataFrame(
        {
            "dataset_id": obs[dataset_col].astype(str).to_numpy(),
            "cell_type": obs[cell_type_col].astype(str).to_numpy(),
            "cells_in_store": 1,
            "flagged_low_rna": low.astype(int),
            "removed_second_pass": (~keep).astype(int),
            "kept": keep.astype(int),
        }
    )
    return df.groupby(["dataset_id", "cell_type"], sort=True).sum().reset_index()


def detect_doublets(
    X,
    samples: np.ndarray,
    *,
    min_cells: int = 100,
    random_state: int = 0,
    dataset_id: str = "",
    max_share: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Scrublet (:func:`scanpy.pp.scrublet`) per sample on raw counts.

    Scrublet's automatic threshold (the minimum between the two modes of the simulated doublets' scores)
    fails where that histogram is not bimodal, and can then call most of a sample doublets (scrublet issues
    #3, #39; on a 300-cell sample of ``scripts/independent_cohort.py`` 92 %): a sample where it calls more
    than ``max_share`` keeps every cell, with a warning.

    Parameters
    ----------
    X
        Counts, cells x genes: a CSR matrix, or anything whose ``X[rows]`` (sorted integer rows)
        gives CSR rows, such as :class:`atlas.ingest.store.PartFile` (then only one sample is in memory).
    samples
        Sample label per cell; each sample is scored separately.
    min_cells
        Samples with fewer cells are skipped (score NaN, not a doublet), with a log line.
    random_state
        Seed passed to scrublet.
    dataset_id
        For log lines.
    max_share
        The largest share of a sample that may be called doublets (``qc.doublet_max_share``).

    Returns
    -------
    score
        Doublet score per cell (NaN where skipped).
    predicted
        Predicted doublet per cell (False in samples not trusted).
    untrusted
        Samples whose calls exceeded ``max_share`` and were dropped.
    """
    import anndata as ad
    import scanpy as sc

    samples = np.asarray(samples).astype(str)
    score = np.full(len(samples), np.nan, dtype=np.float32)
    predicted = np.zeros(len(samples), dtype=bool)
    untrusted: list[str] = []
    for s in pd.unique(samples):
        idx = np.flatnonzero(samples == s)
        if len(idx) < min_cells:
            logger.info(
                "data set %s, sample %s: %d cells < doublet_min_cells=%d; doublet detection skipped",
                dataset_id,
                s,
                len(idx),
                min_cells,
            )
            continue
        a = ad.AnnData(sp.csr_matrix(X[idx], dtype=np.float32))
        sc.pp.scrublet(a, random_state=random_state, verbose=False)
        score[idx] = a.obs["doublet_score"].to_numpy()
        called = a.obs["predicted_doublet"].to_numpy().astype(bool)
        if doublet_threshold_failed(called, max_share):
            untrusted.append(str(s))
            logger.warning(
                "data set %s, sample %s: scrublet's automatic threshold called %d of %d cells (%.0f %%) doublets, "
                "more than qc.doublet_max_share=%.2f; the threshold failed (doublet scores not bimodal), so no "
                "cell of this sample is removed as a doublet (scores kept in obs['doublet_score'])",
                dataset_id, s, int(called.sum()), len(idx), 100 * called.mean(), max_share,
            )  # fmt: skip
            continue
        predicted[idx] = called
        logger.info(
            "data set %s, sample %s: %d of %d cells predicted doublets",
            dataset_id,
            s,
            int(called.sum()),
            len(idx),
        )
    return score, predicted, untrusted


def doublet_threshold_failed(called: np.ndarray, max_share: float) -> bool:
    """Whether scrublet's calls on one sample exceed ``max_share`` of it (its threshold failed; not trusted)."""
    return bool(np.mean(called) > max_share)


def scrublet_available() -> bool:
    """Whether scanpy's scrublet can pick its threshold (needs scikit-image)."""
    import importlib.util

    return importlib.util.find_spec("skimage") is not None
