"""Settings of the neutrophil analysis (``analyse`` stage of ``atlas run``; ``analyse:`` in the config)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from ..core.settings import StrictModel
from ..integrate.settings import GeneGroup, IntegrateSettings

__all__ = [
    "DEFAULT_MARKERS",
    "DEFAULT_STATE_SIGNATURES",
    "STATES",
    "AnalysisSettings",
    "CellTypeOptions",
    "RefineOptions",
    "StatsOptions",
    "SubatlasSettings",
]

#: Canonical markers per cell type. Neutrophils are called on a panel (FCGR3B/CSF3R/CXCR2 *with*
#: S100A8/A9/A12 and other granulocyte genes), never on FCGR3B/CXCR2 alone: tumour neutrophils lose
#: FCGR3B, CXCR2 and SELL (see the science notes, section 3.2).
DEFAULT_MARKERS: dict[str, list[str]] = {
    "neutrophil": ["CSF3R", "FCGR3B", "CXCR2", "S100A8", "S100A9", "S100A12", "FPR1", "MNDA", "G0S2", "AQP9",
                   "CMTM2", "PROK2", "SOD2", "NAMPT"],
    "monocyte": ["CD14", "LYZ", "CSF1R", "VCAN", "FCN1"],
    "macrophage": ["C1QA", "C1QB", "C1QC", "APOE", "CD68", "CD163", "MRC1"],
    "T": ["CD3E", "CD3D", "CD3G", "CD2", "IL7R", "TRAC"],
    "B": ["MS4A1", "CD79A", "CD79B", "CD19", "BANK1"],
    "NK": ["NKG7", "GNLY", "KLRD1", "PRF1", "GZMB"],
    "tumour_epithelial": ["EPCAM", "KRT8", "KRT18", "KRT19", "KRT7"],
    "fibroblast": ["COL1A1", "COL1A2", "COL3A1", "DCN", "LUM"],
    "endothelial": ["PECAM1", "VWF", "CDH5", "PLVAP", "CLDN5"],
}  # fmt: skip

#: Neutrophil states and the registry signatures that define them (mean of the listed scores).
DEFAULT_STATE_SIGNATURES: dict[str, list[str]] = {
    "T3": ["T3_proxy"],
    "mature": ["blood_like"],
    "immature": ["SchulteSchrepping_immature"],
    "interferon": ["Wu_IFIT1_ISG15"],
    "antigen_presenting": ["Wu_HLA_DR_CD74"],
}
STATES = ("immature", "mature", "interferon", "antigen_presenting", "T3")


class StatsOptions(StrictModel):
    """Patient-level statistics (cells are never counted as independent)."""

    min_neutrophils_per_patient: int = Field(
        5,
        ge=1,
        description="patient-tissue pairs (samples pooled) with fewer neutrophils leave the fractions",
    )
    n_boot: int = Field(2000, ge=100, description="bootstrap resamples of patients (then of their cells); interval: bootstrap")
    ci: float = Field(0.95, gt=0.5, lt=1.0, description="interval coverage")
    interval: Literal["hierarchical", "bootstrap"] = Field(
        "hierarchical",
        description="per-cancer intervals: hierarchical (the T3-like fraction's population mean from a beta-binomial"
        " model of the patients, the index's from Student's t) or bootstrap (two-stage percentile bootstrap of earlier"
        " versions; too narrow with 2-5 patients)",
    )


class RefineOptions(StrictModel):
    """Signatures refined on the data (:mod:`atlas.analyse.refine`): each registry signature the states and the
    index read seeds a programme learned from the neutrophils' co-expression."""

    enabled: bool = Field(
        True, description="learn each state / index signature's programme from the neutrophils (false: the registry"
        " signatures as they are)",
    )
    fdr: float = Field(0.01, gt=0, le=1, description="Benjamini-Hochberg FDR of a gene's correlation with the score")
    min_detection: float = Field(
        0.01, ge=0, lt=1, description="candidate genes: detected in at least this share of the neutrophils"
    )
    max_iterations: int = Field(2, ge=1, le=10, description="refinement steps (fewer when the gene set is stable)")
    min_genes: int = Field(
        5, ge=1, description="a refinement keeping fewer genes is not used (the registry signature stays)"
    )
    side_states_apart: bool = Field(
        True, description="a side state's signature (one the reprogramming index does not read: immature, interferon,"
        " antigen-presenting) is refined on the part of its score the other signatures' scores do not explain, so"
        " its programme does not take another state's genes; the index's signatures are refined as they are",
    )


class CellTypeOptions(StrictModel):
    """Cell-type rule: marker evidence per cluster of an over-clustering, calibrated per-cell confidence.

    All thresholds are in units measured on the cells at hand (a type's per-cell noise, a cluster's
    own spread, a cross-validated probability), not in raw score units tuned to one cohort.
    """

    resolution: float | Literal["auto"] | None = Field(
        "auto",
        description="Leiden resolution of the over-clustering of the scVI graph the calls are made on; auto: "
        "CellTypist's majority-voting schedule (5 below 5k cells ... 30 above 200k); null: use cluster_key as is",
    )
    n_neighbors: int = Field(
        15, ge=2, le=200, description="neighbours of the kNN graph on X_scVI that is over-clustered"
    )
    min_cluster_cells: int = Field(
        10, ge=1, description="smaller clusters get no call of their own (their cells are propagated)"
    )
    min_effect: float = Field(
        0.5,
        ge=0,
        description="a cluster's winning type must stand this many per-cell noise units (the type's median "
        "within-cluster SD) above the type's baseline (the lower quartile of cluster means)",
    )
    max_runner_up_ratio: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="the runner-up's enrichment may reach at most this fraction of the winner's; above it the "
        "cluster is a mixture and unknown (a half neutrophil, half monocyte cluster has a ratio near 1), unless "
        "its cells do not split between the two types and the runner-up's enrichment is below every clean "
        "cluster of its type (one type expressing shared markers: the winner is kept)",
    )
    refine_cells: bool = Field(
        False,
        description="let a cell leave its cluster's call on its own evidence (a demote_z outlier, or a calibrated "
        "posterior above 0.5 for another type). Off: cells take their cluster's call (CellTypist's majority "
        "voting) unless neighbourhood_check moves them; on every simulated difficulty per-cell moves broke more calls than they fixed, as low-RNA "
        "cells' scores rest on one or two detected marker transcripts",
    )
    demote_z: float = Field(
        4.0,
        gt=0,
        description="with refine_cells: a cell leaves its cluster's call for another called type when its own "
        "evidence for it is an outlier of at least this robust z in the cluster's own spread of that evidence",
    )
    min_confidence: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="cells of unknown clusters take the propagated type when its calibrated probability is at "
        "least this (else unknown); a low-RNA cell of a neutrophil-like cluster passes the second QC pass only when its "
        "calibrated neutrophil probability is at least this",
    )
    neighbourhood_check: bool = Field(
        True,
        description="the latent neighbourhood's second opinion: where a cell's calibrated probability makes a "
        "type other than its cluster's call likely (>= min_confidence), the mean probability of that type over "
        "the cell and its neighbours in the kNN graph on X_scVI must reach min_confidence too; then a cell of an "
        "unknown cluster takes that type (else stays unknown) and a cell of a called cluster moves to it (rule "
        "demoted). A monocyte expressing the neutrophil genes it shares can look like a neutrophil on its own, "
        "its neighbours mostly do not. Off: unknown clusters' cells follow their own probability, called "
        "clusters' cells keep the call (unless refine_cells)",
    )
    confident_neutrophils: bool = Field(
        True,
        description="a cell called neutrophil needs its own calibrated neutrophil probability (its cluster's "
        "composition as the prior) to reach min_confidence, else it is unknown (rule contested): its markers make "
        "another type at least as likely. Only neutrophils, the set the analysis studies; other types keep their "
        "cluster's call. Off: every cell of a neutrophil cluster is a neutrophil",
    )
    n_folds: int = Field(5, ge=2, le=20, description="cross-validation folds of the confidence model")
    max_train_cells: int = Field(
        50_000, ge=100, description="seed cells the confidence model trains on per fold (a random subset)"
    )

    @field_validator("resolution")
    @classmethod
    def _positive_resolution(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, (int, float)) and not v > 0:
            raise ValueError(f"resolution must be > 0, 'auto' or null (got {v})")
        return v


#: Sub-atlas settings with a default of their own; every other field left unset takes the atlas's integrate value.
SUBATLAS_OWN_DEFAULTS = (
    "n_hvgs", "batch_key", "hvg_batch_key", "categorical_covariates", "min_cells_per_batch", "model", "labels_key",
    "n_neighbors",
)  # fmt: skip
_INHERITED = "; unset: the atlas's integrate value"


class SubatlasSettings(StrictModel):
    """The neutrophil-only scVI (``analyse.subatlas``): the integrate settings it changes (same names and meaning).

    Fields with a default of their own differ from the whole atlas because neutrophils of one sample are
    few: the batch is the data set and no batch is dropped for size. Every other field, left unset, takes
    the atlas's integrate value. Only the fields set here are serialised (the settings hash of a config
    without ``subatlas`` does not change).
    """

    # ---------------------------------------------------------------- own defaults
    n_hvgs: int = Field(2000, ge=10, description="highly variable genes of the neutrophils the model is trained on")
    batch_key: str = Field("dataset_id", description="obs column scVI corrects for (the data set: few neutrophils"
                           " per sample)")  # fmt: skip
    hvg_batch_key: str | None = Field(None, description="obs column HVGs are ranked within; None = all neutrophils")
    categorical_covariates: list[str] = Field(
        default_factory=list, description="further categorical obs columns scVI conditions on"
    )
    min_cells_per_batch: int = Field(
        0, ge=0, le=0, description="0 only: the sub-atlas keeps every neutrophil (no batch is dropped or pooled)"
    )
    model: Literal["scvi", "scanvi"] = Field("scvi", description="scvi, or scanvi (needs labels_key)")
    labels_key: str | None = Field(None, description="obs column of cell labels for scANVI")
    n_neighbors: int = Field(15, ge=2, description="neighbours of the neutrophil kNN graph on the sub-atlas latent")

    # ---------------------------------------------------------------- unset: the atlas's integrate value
    exclude_gene_groups: list[GeneGroup] | None = Field(None, description="gene groups never HVGs" + _INHERITED)
    exclude_genes: list[str] | None = Field(None, description="further genes never HVGs" + _INHERITED)
    unlabeled_category: str | None = Field(None, description="labels_key value of unlabelled cells" + _INHERITED)
    n_latent: int | None = Field(None, ge=2, le=256, description="latent dimensions" + _INHERITED)
    n_hidden: int | None = Field(None, ge=8, description="units per hidden layer" + _INHERITED)
    n_layers: int | None = Field(None, ge=1, le=8, description="hidden layers" + _INHERITED)
    gene_likelihood: Literal["nb", "zinb", "poisson"] | None = Field(
        None, description="count distribution of the decoder" + _INHERITED
    )
    dropout_rate: float | None = Field(None, ge=0, lt=1, description="dropout rate" + _INHERITED)
    scarches_architecture: bool | None = Field(None, description="scArches reference architecture" + _INHERITED)
    max_epochs: int | Literal["auto"] | None = Field(
        None, description="scVI epochs (auto, a number, or null = scvi-tools' rule)" + _INHERITED
    )
    train_steps: int | None = Field(None, ge=1, description="gradient steps max_epochs: auto aims at" + _INHERITED)
    kl_warmup: float | None = Field(
        None, gt=0, le=1, description="share of the epochs the KL weight warms up over (null = scvi-tools' 400 "
        "epochs)" + _INHERITED
    )
    plateau_window: float | None = Field(None, gt=0, le=0.5, description="convergence check window" + _INHERITED)
    plateau_tolerance: float | None = Field(None, gt=0, description="convergence check tolerance" + _INHERITED)
    scanvi_max_epochs: int | None = Field(
        None, ge=1, description="scANVI epochs (null = scvi-tools' default)" + _INHERITED
    )
    batch_size: int | None = Field(None, ge=16, description="cells per mini-batch" + _INHERITED)
    learning_rate: float | None = Field(None, gt=0, description="Adam learning rate" + _INHERITED)
    train_size: float | None = Field(None, gt=0, le=1, description="share of cells trained on" + _INHERITED)
    early_stopping: bool | None = Field(None, description="stop when the validation ELBO stops improving" + _INHERITED)
    early_stopping_patience: int | None = Field(
        None, ge=1, description="epochs without improvement before stopping" + _INHERITED
    )
    data_loader: Literal["scvi", "fast"] | None = Field(None, description="training data path" + _INHERITED)
    device_chunk_cells: int | None = Field(
        None, ge=1024, description="fast loader: stream chunks of this many cells (null = whole matrix)" + _INHERITED
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] | None = Field(
        None, description="torch device for training" + _INHERITED
    )
    devices: int | list[int] | Literal["auto"] | None = Field(None, description="GPUs to train on" + _INHERITED)
    strategy: str | None = Field(None, description="Lightning strategy" + _INHERITED)
    num_nodes: int | None = Field(None, ge=1, description="machines of a multi-node DDP job" + _INHERITED)
    backend: Literal["auto", "cpu", "gpu"] | None = Field(
        None, description="HVGs, neighbours, UMAP, Leiden on GPU or CPU" + _INHERITED
    )
    leiden_resolution: float | None = Field(
        None, gt=0, description="Leiden resolution of neutrophil_leiden" + _INHERITED
    )
    umap_min_dist: float | None = Field(None, ge=0, description="UMAP min_dist" + _INHERITED)
    seed: int | None = Field(None, description="seeds scVI, UMAP and Leiden" + _INHERITED)

    def integrate_overrides(self) -> dict[str, Any]:
        """What the sub-atlas changes in the atlas's integrate settings: its own defaults, then every field set."""
        keep = {*SUBATLAS_OWN_DEFAULTS, *self.model_fields_set}
        return {k: getattr(self, k) for k in type(self).model_fields if k in keep}

    @model_serializer(mode="wrap")
    def _only_set_fields(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}

    @model_validator(mode="after")
    def _valid_integrate_settings(self) -> SubatlasSettings:
        try:  # cross-field rules (scanvi needs labels_key, ...) on the default atlas plus these overrides
            IntegrateSettings.model_validate({**IntegrateSettings().model_dump(), **self.integrate_overrides()})
        except ValidationError as e:
            raise ValueError("; ".join(_error_text(err) for err in e.errors())) from None
        return self


def _error_text(err: Any) -> str:
    """One pydantic error as ``field: message`` (no "Value error, " prefix: the outer error adds its own)."""
    msg = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
    return f"{'.'.join(map(str, err['loc']))}: {msg}" if err["loc"] else msg


class AnalysisSettings(StrictModel):
    """Neutrophil identification, sub-atlas, states, reprogramming index, pseudotime and statistics."""

    cell_type_markers: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_MARKERS.items()},
        description="markers per cell type (scored per cell, then voted per cluster); must include 'neutrophil'",
    )
    cluster_key: str = Field(
        "leiden",
        description="clusters of the integrated graph (used as they are when cell_types.resolution is null)",
    )
    cell_types: CellTypeOptions = Field(default_factory=lambda: CellTypeOptions())
    state_signatures: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_STATE_SIGNATURES.items()},
        description="state -> registry signatures whose mean score defines it",
    )
    state_smoothing_steps: int = Field(
        1, ge=0, le=5, description="steps of averaging state scores over the neutrophil kNN graph (0 = off)"
    )
    state_min_z: float = Field(0.5, description="best state's z (within neutrophils) must reach this")
    state_shrink_evidence: bool = Field(
        True,
        description="the smoothed rule reads each state's smoothed z shrunk towards the neutrophils' mean by the share of"
        " its spread that is noise (Kelley, from the state score's split-half reliability), so a state whose score is"
        " mostly counting noise needs more evidence per cell; false: the smoothed z as it is",
    )
    state_cells: Literal["own", "smoothed"] = Field(
        "own",
        description="own: the smoothed rule (state_min_z, state_min_margin, cluster evidence) sets how many neutrophils"
        " each state's cut admits and each cell's own unsmoothed evidence decides (a cell above several cuts takes the"
        " state it exceeds most); smoothed: the smoothed rule's calls",
    )
    state_min_margin: float = Field(
        0.25, ge=0, description="and beat the second best by this, else unassigned"
    )
    default_state: str | None = Field(
        "mature",
        description="state of a neutrophil with no programme above state_min_z: a state name (mature, the blood-like"
        " baseline of Ng et al., by default), 'auto' = the state with the highest mean z among those neutrophils"
        " (chosen from the data; unstable when one programme is lifted in many cells, e.g. MHC-II from monocyte"
        " contamination: on the confounded/hard simulator presets it picked antigen_presenting), or null"
        " (unassigned)",
    )
    refine_signatures: RefineOptions = Field(
        default_factory=lambda: RefineOptions(),
        description="learn the state and index signatures' programmes from the neutrophils (seeded by the registry"
        " signature; genes correlated with it within data sets)",
    )
    reprogramming_up: list[str] = Field(default_factory=lambda: ["T3_proxy"], description="T3-like side")
    reprogramming_down: list[str] = Field(
        default_factory=lambda: ["blood_like"], description="blood-like side"
    )
    pseudotime_method: Literal["state_contrast", "signature", "distance_ratio", "harmonic", "dpt"] = Field(
        "state_contrast",
        description="state_contrast: the end state's evidence minus the immature state's (the reprogramming index,"
        " standardised, minus state_z_immature; state_z_<end state> when the index is not built on that state's"
        " signatures), scaled to [0, 1], with the signature axis below as a recorded cross-check (axis_spearman);"
        " signature: each cell's score on the genes that tell the T3-like end cells from the start cells"
        " (t-test within pseudotime_block_key, Cohen's d >= pseudotime_min_effect, BH FDR <= pseudotime_fdr;"
        " weights the mean differences), averaged with the state contrast (pseudotime_with_state_contrast); the"
        " state contrast alone when fewer than 5 genes pass; distance_ratio: relative"
        " position in the sub-atlas latent between the start cells and the T3-like cells, d_start / (d_start +"
        " d_end); harmonic: probability that a random walk on the neutrophil graph reaches"
        " the end before the start; dpt: scanpy's diffusion pseudotime from one start cell",
    )
    pseudotime_root: Literal["immature", "blood_like"] = Field(
        "immature",
        description="start of the trajectory: the most immature neutrophils (start of the immature -> mature -> T3"
        " trajectory of Ng et al. 2024), or the most blood-like ones (lowest index) of pseudotime_root_tissue",
    )
    pseudotime_root_tissue: str = Field(
        "blood",
        description="blood_like start: chosen among this tissue's neutrophils (any tissue when absent)",
    )
    pseudotime_end_state: str = Field(
        "T3", description="state_contrast, signature, distance_ratio: the state whose neutrophils are the end of the"
        " trajectory"
    )
    pseudotime_with_state_contrast: bool = Field(
        True,
        description="signature: the pseudotime is the mean of the axis genes' score and the state contrast (the"
        " standardised index - state_z_immature), each standardised, scaled to [0, 1]; false: the axis score alone",
    )
    pseudotime_min_effect: float = Field(
        0.8,
        gt=0,
        description="signature (and state_contrast's cross-check axis): smallest standardised effect (Cohen's d, end vs start cells' log expression) of a"
        " gene on the pseudotime's axis (0.8: a 'large' effect)",
    )
    pseudotime_fdr: float = Field(
        0.05, gt=0, le=1, description="signature, state_contrast's cross-check: Benjamini-Hochberg FDR of the axis genes' t-tests"
    )
    pseudotime_block_key: str | None = Field(
        "dataset_id",
        description="signature, state_contrast's cross-check: obs column the start and end cells are compared within (data sets with 3 of each;"
        " all cells together when none has); null: all cells together",
    )
    pseudotime_anchor_neighbors: int = Field(
        10,
        ge=1,
        le=1000,
        description="distance_ratio: a cell's distance to the start (end) cells is its mean distance to this many"
        " of them nearest to it",
    )
    pseudotime_start_fraction: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="share of neutrophils that start the trajectory: harmonic always; state_contrast (its cross-check), signature and distance_ratio"
        " when fewer than 10 are annotated immature, or with pseudotime_root blood_like",
    )
    pseudotime_end_fraction: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="share of neutrophils with the highest reprogramming index that end the trajectory: harmonic"
        " always; state_contrast (its cross-check), signature and distance_ratio when fewer than 10 are annotated pseudotime_end_state",
    )
    pseudotime_n_neighbors: int = Field(
        30, ge=2, le=200, description="harmonic: neighbours of the graph on the sub-atlas latent it runs on"
    )
    subatlas: SubatlasSettings = Field(
        default_factory=lambda: SubatlasSettings(),
        description="the neutrophil-only scVI: integrate settings it changes (e.g. n_hvgs, max_epochs); unknown "
        "fields are errors",
    )
    min_neutrophils_for_subatlas: int = Field(
        200, ge=20, description="fewer neutrophils: no sub-atlas (the whole-atlas latent is used instead)"
    )
    statistics: StatsOptions = Field(default_factory=StatsOptions)
    qc_audit: bool = Field(
        True,
        description="label the cells QC removed at ingest (store.removed.h5ad) from their nearest annotated atlas "
        "cells, so tables/qc_by_cell_type.csv says which cell types each QC rule removed (it never brings a cell back)",
    )
    seed: int = 0

    def signatures_read(self) -> list[str]:
        """The signatures the states and the index read (each once, in that order: up, down, states)."""
        return list(dict.fromkeys([*self.reprogramming_up, *self.reprogramming_down,
                                   *(x for sigs in self.state_signatures.values() for x in sigs)]))  # fmt: skip

    @field_validator("cell_type_markers")
    @classmethod
    def _has_neutrophil(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        if "neutrophil" not in v:
            raise ValueError("cell_type_markers must include 'neutrophil'")
        empty = [k for k, genes in v.items() if not genes]
        if empty:
            raise ValueError(f"cell types with no markers: {empty}")
        return v

    @field_validator("state_signatures")
    @classmethod
    def _states_known(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        if not v:
            raise ValueError("state_signatures is empty")
        empty = [k for k, sigs in v.items() if not sigs]
        if empty:
            raise ValueError(f"states with no signatures: {empty}")
        return v

    @model_validator(mode="after")
    def _end_state_known(self) -> AnalysisSettings:
        if (
            self.pseudotime_method in ("state_contrast", "signature", "distance_ratio")
            and self.pseudotime_end_state not in self.state_signatures
        ):
            raise ValueError(
                f"pseudotime_end_state {self.pseudotime_end_state!r} is not a state of state_signatures "
                f"({sorted(self.state_signatures)}); name one of them, or use pseudotime_method harmonic"
            )
        return self
