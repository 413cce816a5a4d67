"""Settings of the ingest stage: the obs schema, the data sets to read and how, and neutrophil-aware QC.

An ``ingest.yaml`` (``datasets: [...]``, ``qc: ...``) validates into :class:`IngestConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..core.settings import StrictModel, read_config, validate
from ..core.storage import PathOrURL

#: The obs schema every data set is mapped onto at ingest.
SCHEMA_FIELDS: tuple[str, ...] = (
    "dataset_id",
    "sample_id",
    "patient_id",
    "cancer_type",
    "tissue",
    "platform",
    "species",
)
SPECIES = ("human", "mouse")
TISSUES = ("tumour", "adjacent_normal", "blood")


# --------------------------------------------------------------------------------------------- QC
class QCThresholds(StrictModel):
    """Per-cell QC thresholds of one data set; ``None`` switches a threshold off.

    ``mode: mad`` (default) derives the bounds from the data set's own distributions (see
    :mod:`atlas.ingest.qc`); ``mode: fixed`` applies ``min_counts``/``min_genes`` with the neutrophil
    floor, as atlas did before. ``max_counts``, ``max_genes`` and ``max_pct_mito`` apply in both modes.
    """

    mode: Literal["mad", "fixed"] = Field(
        "mad",
        description="mad = bounds from median absolute deviations of the data set's cells (lenient floor, "
        "upper-tail and mito outliers removed, lower-tail cells flagged qc_low_rna and kept); "
        "fixed = min_counts/min_genes (with the neutrophil floor) remove cells",
    )
    floor_min_counts: int | None = Field(
        50, ge=0, description="mad mode: lenient UMI floor every cell must reach (below = not a cell; removed)"
    )
    floor_min_genes: int | None = Field(
        20, ge=0, description="mad mode: lenient detected-gene floor every cell must reach (removed below)"
    )
    nmads_counts: float = Field(
        5.0, gt=0, description="mad mode: cells above median + nmads_counts x MAD of log1p(total counts) are removed"
    )
    nmads_genes: float = Field(
        5.0, gt=0, description="mad mode: cells above median + nmads_genes x MAD of log1p(detected genes) are removed"
    )
    nmads_low_rna: float = Field(
        3.0, gt=0, description="mad mode: cells below median - nmads_low_rna x MAD of log1p(total counts) or of "
        "log1p(detected genes) (and above the floor) are kept but flagged qc_low_rna for the cluster-level pass",
    )
    nmads_mito: float = Field(
        3.0, gt=0, description="mad mode: cells above median + nmads_mito x MAD of % mito are removed (bound kept "
        "within [min_pct_mito_bound, max_pct_mito])",
    )
    min_pct_mito_bound: float = Field(
        10.0, ge=0, le=100, description="mad mode: the mito MAD bound is never below this % (healthy human cells "
        "stay under ~10 %, Osorio & Cai 2021); guards data sets whose mito MAD is ~0",
    )
    mito_alpha: float | None = Field(
        0.01, gt=0, lt=1, description="mad mode: a cell above the mito bound is removed only when its MT- count is "
        "significantly above the bound at this level (one-sided binomial test given its UMIs): the % mito of a "
        "300-UMI cell has a sampling sd of ~1.2 points, so a plain cut-off removes healthy low-RNA cells "
        "(neutrophils) several times as often as deep ones; None = the plain cut-off",
    )
    mad_min_cells: int = Field(
        50, ge=3, description="mad mode: data sets with fewer cells above the floor get no MAD bounds (floor and "
        "absolute limits only)",
    )
    min_counts: int | None = Field(
        500, ge=0, description="fixed mode: minimum UMIs for a cell without neutrophil evidence"
    )
    min_genes: int | None = Field(
        200, ge=0, description="fixed mode: minimum detected genes for a cell without neutrophil evidence"
    )
    max_counts: int | None = Field(None, ge=0, description="absolute maximum UMIs (both modes; None = off)")
    max_genes: int | None = Field(None, ge=0, description="absolute maximum detected genes (both modes; None = off)")
    max_pct_mito: float | None = Field(
        20.0, ge=0, le=100, description="absolute ceiling of % UMIs from MT- genes (both modes; None = off)"
    )
    neutrophil_min_counts: int | None = Field(
        150, ge=0, description="fixed mode: UMI floor for cells with neutrophil marker evidence (low-RNA cells); "
        "None = no special floor, min_counts applies"
    )
    neutrophil_min_genes: int | None = Field(
        100, ge=0, description="fixed mode: gene floor for cells with neutrophil marker evidence (Xue et al. 2022 "
        "used 100); None = no special floor, min_genes applies"
    )
    panel_share: float | None = Field(
        0.5, gt=0, le=1, description="the absolute limits assume a whole transcriptome: a data set whose files hold "
        "fewer than this share of the genes of the data set with the most (a targeted panel, a deposit of its most "
        "variable genes) has its UMI and gene floors (floor_min_*, min_*, neutrophil_min_*) scaled by its share and "
        "no absolute % mito ceiling (its % mito is of the panel's UMIs; the MAD bound still applies); None = never",
    )


class QCThresholdsOverride(StrictModel):
    """Per-data-set overrides: only the fields given replace the defaults (meanings as in QCThresholds)."""

    mode: Literal["mad", "fixed"] | None = None
    floor_min_counts: int | None = Field(None, ge=0)
    floor_min_genes: int | None = Field(None, ge=0)
    nmads_counts: float | None = Field(None, gt=0)
    nmads_genes: float | None = Field(None, gt=0)
    nmads_low_rna: float | None = Field(None, gt=0)
    nmads_mito: float | None = Field(None, gt=0)
    min_pct_mito_bound: float | None = Field(None, ge=0, le=100)
    mito_alpha: float | None = Field(None, gt=0, lt=1)
    mad_min_cells: int | None = Field(None, ge=3)
    min_counts: int | None = Field(None, ge=0)
    min_genes: int | None = Field(None, ge=0)
    max_counts: int | None = Field(None, ge=0)
    max_genes: int | None = Field(None, ge=0)
    max_pct_mito: float | None = Field(None, ge=0, le=100)
    neutrophil_min_counts: int | None = Field(None, ge=0)
    neutrophil_min_genes: int | None = Field(None, ge=0)
    panel_share: float | None = Field(None, gt=0, le=1)


# Neutrophil identity genes (LuCA / Xue subsetting markers and the JITC 2022 signature), leaving out
# broadly induced genes (SOD2, NAMPT, G0S2) that endothelial and stromal cells also express.
DEFAULT_NEUTROPHIL_MARKERS = [
    "CSF3R", "FCGR3B", "CXCR2", "CXCR1", "S100A8", "S100A9", "S100A12", "FPR1", "FPR2",
    "MNDA", "AQP9", "MME", "PROK2", "CMTM2", "MGAM", "ALPL", "LILRB2",
]


class QCConfig(StrictModel):
    """Neutrophil-aware QC applied per data set during ingest (rules: :mod:`atlas.ingest.qc`)."""

    enabled: bool = Field(True, description="false = keep every cell (metrics are still computed and reported)")
    thresholds: QCThresholds = QCThresholds()
    per_dataset: dict[str, QCThresholdsOverride] = Field(
        default_factory=dict, description="data set id -> thresholds that replace the defaults"
    )
    neutrophil_markers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NEUTROPHIL_MARKERS),
        description="neutrophil identity genes behind obs['neutrophil_evidence'] (reported in both modes; "
        "decides the floor only in fixed mode)",
    )
    neutrophil_min_markers: int = Field(
        3, ge=1, description="detected neutrophil markers for neutrophil evidence (fixed mode: the lower floor)"
    )
    exclusion_markers: list[str] = Field(
        default_factory=lambda: ["CD14", "CSF1R", "C1QA", "EPCAM", "KRT18", "CD3E", "MS4A1", "CD79A", "NKG7",
                                 "VWF", "CDH5", "COL1A1", "DCN"],
        description="markers of other lineages; a cell with several of these gets no neutrophil floor",
    )
    exclusion_max_markers: int = Field(
        1, ge=0, description="most exclusion markers a cell may show and still have neutrophil evidence"
    )
    doublets: bool = Field(False, description="run scanpy's scrublet per sample and drop predicted doublets")
    doublet_min_cells: int = Field(100, ge=10, description="samples smaller than this skip doublet detection")
    doublet_random_state: int = Field(0, description="seed of scrublet's simulated doublets")
    doublet_max_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="a sample where scrublet's automatic threshold calls more than this share doublets is not "
        "trusted (the threshold failed on a score histogram that is not bimodal): none of its cells is removed, "
        "with a warning; the default is above the ~16 % doublets of a 10x lane at its highest loading",
    )

    def thresholds_for(self, dataset_id: str) -> QCThresholds:
        """The thresholds of one data set: defaults updated by its overrides."""
        base = self.thresholds.model_dump()
        override = self.per_dataset.get(dataset_id)
        if override is not None:
            base.update(override.model_dump(exclude_unset=True))
        return QCThresholds(**base)


# ----------------------------------------------------------------------------------------- ingest
class DatasetConfig(StrictModel):
    """One input data set and how to map it onto the atlas schema."""

    id: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="data set id, becomes obs['dataset_id']")
    path: PathOrURL = Field(
        ..., description="h5ad file, AnnData zarr store, 10x h5 file, 10x mtx directory, or csv/tsv(.gz) file; "
        "a local path or a URL (s3://, gs://, any fsspec URL; see atlas.core.storage)"
    )
    format: Literal["auto", "h5ad", "zarr", "10x_h5", "10x_mtx", "csv", "tsv"] = "auto"
    species: str = Field("human", description="human or mouse (mouse genes are mapped to human orthologues)")
    counts: str = Field(
        "X", description="where raw counts are: 'X', 'raw' (adata.raw.X) or 'layers/<name>' (h5ad only)"
    )
    obs_path: PathOrURL | None = Field(
        None, description="csv/tsv of per-cell metadata (for mtx/csv inputs); first column = cell id; path or URL"
    )
    obs_columns: dict[str, str] = Field(
        default_factory=dict, description="schema field -> column of this data set's obs holding it"
    )
    constants: dict[str, str] = Field(
        default_factory=dict, description="schema field -> one value for every cell of this data set"
    )
    value_maps: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="schema field -> {value in data set: value in atlas}"
    )
    gene_ids: Literal["auto", "symbol", "ensembl"] = "auto"
    gene_column: str | None = Field(None, description="var column with gene ids (default: var_names)")
    orientation: Literal["cells_x_genes", "genes_x_cells"] = Field(
        "genes_x_cells", description="csv/tsv only: GEO-style genes in rows (default) or cells in rows"
    )
    duplicate_genes: Literal["error", "sum"] = Field(
        "error", description="what to do when the input itself lists a gene id twice"
    )
    round_counts: bool = Field(
        False,
        description="round non-integer counts (ambient-corrected, e.g. SoupX) to whole numbers; the number of "
        "values changed is logged. Default: non-integers are refused",
    )

    @field_validator("species")
    @classmethod
    def _known_species(cls, v: str) -> str:
        if v.lower() not in SPECIES:
            raise ValueError(f"unknown species {v!r}; atlas reads {', '.join(SPECIES)} data")
        return v.lower()

    @field_validator("obs_columns", "constants", "value_maps")
    @classmethod
    def _schema_keys(cls, v: dict) -> dict:
        unknown = sorted(set(v) - set(SCHEMA_FIELDS))
        if unknown:
            raise ValueError(f"unknown schema field(s) {unknown}; the schema fields are {list(SCHEMA_FIELDS)}")
        return v

    @field_validator("counts")
    @classmethod
    def _counts_location(cls, v: str) -> str:
        if v in ("X", "raw") or (v.startswith("layers/") and len(v) > len("layers/")):
            return v
        raise ValueError(f"counts={v!r}: use 'X', 'raw' or 'layers/<name>'")


class IngestConfig(StrictModel):
    """The data sets to ingest and how (the file ``atlas simulate`` writes as ``ingest.yaml``)."""

    datasets: list[DatasetConfig] = Field(..., min_length=1)
    qc: QCConfig = QCConfig()
    join: Literal["outer", "inner"] = Field(
        "outer", description="genes of the store: union (zero-filled, with var['n_datasets']) or intersection"
    )
    keep_obs: list[str] = Field(
        default_factory=lambda: ["truth_*"],
        description="obs columns carried through unchanged (glob patterns); the pipeline never reads truth_*",
    )
    chunk_size: int = Field(20_000, ge=100, description="cells read per chunk (bounds memory)")
    shared_ids: list[Literal["sample_id", "patient_id"]] = Field(
        default_factory=list,
        description="id fields whose values name one sample or patient whichever data set uses them (a patient "
        "profiled in two data sets); otherwise a value several data sets use is stored as '<data set>:<value>' in "
        "each, so that two studies' 'P01' are two patients and their 'P01_T' two scVI batches",
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> IngestConfig:
        ids = [d.id for d in self.datasets]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"data set ids must be unique; repeated: {dupes}")
        unknown = sorted(set(self.qc.per_dataset) - set(ids))
        if unknown:
            raise ValueError(f"qc.per_dataset names unknown data set(s) {unknown}; known: {ids}")
        return self



def load_ingest_config(path: str | Path) -> IngestConfig:
    """Load an ingest YAML (``datasets: [...]``, ``qc: ...``), a local file or a URL; relative paths are resolved
    against its folder."""
    return validate(IngestConfig, read_config(path), str(path))


