"""Settings of the integrate stage: HVGs, scVI/scANVI, data path, graph, metrics.

Validated like every pipeline config (unknown fields are errors). The defaults follow the
published atlases (LuCA: scVI -> scANVI with batch = sample, batches of 25 or fewer cells dropped)
and scvi-tools' advice for atlas-scale data (two hidden layers, 30 latent dimensions, NB likelihood).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..core.settings import StrictModel

GeneGroup = Literal["mito", "ribo", "heat_shock", "dissociation"]

#: Default gradient-step budget of ``max_epochs: auto`` (scvi-tools' default at batch 128, see train_steps).
TRAIN_STEPS = 56_000


class IntegrateSettings(StrictModel):
    """How the store is integrated into a reference atlas (``atlas integrate``)."""

    # ---------------------------------------------------------------- genes
    n_hvgs: int = Field(
        4000, ge=10, description="highly variable genes (seurat_v3 on counts) the model is trained on"
    )
    hvg_batch_key: str | None = Field(
        "dataset_id",
        description="obs column HVGs are ranked within (seurat_v3 batch_key); None = all cells at once",
    )
    exclude_gene_groups: list[GeneGroup] = Field(
        default_factory=lambda: ["mito", "ribo"],
        description="gene groups never chosen as HVGs: mito (MT-), ribo (RPL/RPS), heat_shock (HSPA/HSPB/HSPH/"
        "HSP90/DNAJ), dissociation (van den Brink et al. 2017)",
    )
    exclude_genes: list[str] = Field(default_factory=list, description="further genes never chosen as HVGs")

    # ---------------------------------------------------------------- model
    batch_key: str = Field("sample_id", description="obs column scVI corrects for (LuCA: sample)")
    categorical_covariates: list[str] = Field(
        default_factory=lambda: ["platform"], description="further categorical obs columns scVI conditions on"
    )
    min_cells_per_batch: int = Field(
        25,
        ge=0,
        description="batches (batch_key) with this many cells or fewer are small (LuCA dropped them: <= 25); 0: none"
        " is small",
    )
    small_batches: Literal["pool", "drop"] = Field(
        "pool",
        description="pool: small batches of one data set share one scVI batch (obs integration_batch); a pool"
        " that is still small joins a batch of its data set (the same patient's largest, else the largest), a data"
        " set without one sends it to a pool across data sets, and cells still in a pool of min_cells_per_batch or"
        " fewer are dropped; drop: their cells leave the atlas (LuCA's rule)",
    )
    model: Literal["scvi", "scanvi"] = Field(
        "scvi", description="scvi, or scanvi: scVI then scANVI initialised from it (needs labels_key)"
    )
    labels_key: str | None = Field(None, description="obs column of cell labels for scANVI")
    unlabeled_category: str = Field(
        "unlabeled", description="value of labels_key that marks unlabelled cells"
    )
    n_latent: int = Field(30, ge=2, le=256, description="latent dimensions (scvi-tools atlas tutorial: 30)")
    n_hidden: int = Field(128, ge=8, description="units per hidden layer")
    n_layers: int = Field(2, ge=1, le=8, description="hidden layers of encoder and decoder")
    gene_likelihood: Literal["nb", "zinb", "poisson"] = Field(
        "nb", description="count distribution of the decoder"
    )
    dropout_rate: float = Field(0.1, ge=0, lt=1)
    scarches_architecture: bool = Field(
        False,
        description="the architecture scvi-tools' scArches tutorial recommends for references that queries are mapped"
        " onto: batch fed to the encoder too (encode_covariates), layer norm instead of batch norm; query training then"
        " adapts the query's latent, not only its decoder",
    )
    max_epochs: int | Literal["auto"] | None = Field(
        "auto",
        description="scVI epochs; auto = enough epochs for train_steps gradient steps at this batch_size and cell "
        "count (1 to 400), so a larger batch gets more epochs; None = scvi-tools' own rule "
        "min(400, round(400 x 20,000 / n_cells)), which assumes batch_size 128",
    )
    train_steps: int = Field(
        TRAIN_STEPS,
        ge=1,
        description="gradient steps max_epochs: auto aims at. Default 56,000: scvi-tools' default "
        "max_epochs = min(400, round(400 x 20,000 / n_cells)) at batch 128 on 90% of the cells is a budget "
        "of 400 x 20,000 x 0.9 / 128 = 56,250 steps on any atlas above 20,000 cells; auto keeps that "
        "budget whatever the batch size (on a slow CPU set fewer: an independent 30,000-cell cohort "
        "needed about 7,000 steps for scVI to out-mix Harmony, 1,200 left it unmixed)",
    )
    kl_warmup: float | None = Field(
        0.75,
        gt=0,
        le=1,
        description="share of the planned epochs over which the KL weight rises linearly to 1, so every run ends "
        "on the full ELBO (scvi-tools' default warms up over 400 epochs whatever the training length: a "
        "60-epoch run then ends at KL weight 0.15, a beta-VAE that mixes batches less; scvi-tools issue "
        "#1569); the epochs after it, which hold the plateau_window, train on the ELBO itself. "
        "None = scvi-tools' 400 epochs",
    )
    plateau_window: float = Field(
        0.2,
        gt=0,
        le=0.5,
        description="convergence check: the last share of the epochs trained (at least 2) over which the "
        "validation ELBO must have stopped improving",
    )
    plateau_tolerance: float = Field(
        0.005,
        gt=0,
        description="convergence check: the plateau is reached when the best validation ELBO improved by "
        "less than this share over the plateau_window (else a warning: train longer)",
    )
    scanvi_max_epochs: int | None = Field(
        None, ge=1, description="scANVI epochs; None = scvi-tools' default for a pretrained model (2 to 10)"
    )
    batch_size: int = Field(
        128,
        ge=16,
        description="cells per mini-batch (scvi-tools' default, which its max_epochs heuristic assumes)",
    )
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    train_size: float = Field(0.9, gt=0, le=1, description="share of cells trained on; the rest validate")
    early_stopping: bool = Field(True, description="stop when the validation ELBO stops improving")
    early_stopping_patience: int = Field(20, ge=1, description="epochs without improvement before stopping")

    # ---------------------------------------------------------------- data path and devices
    data_loader: Literal["scvi", "fast"] = Field(
        "fast",
        description="fast: counts put on the device once, mini-batches sliced there; scvi: scvi-tools' loader",
    )
    device_chunk_cells: int | None = Field(
        None,
        ge=1024,
        description="fast loader: stream shuffled chunks of this many cells instead of the whole matrix",
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = Field(
        "auto", description="torch device for training"
    )
    devices: int | list[int] | Literal["auto"] = Field(
        "auto", description="GPUs to train on (Lightning devices)"
    )
    strategy: str | None = Field(
        None,
        description="Lightning strategy; 'ddp' with devices > 1 (one process per device; run it as a command, "
        "`atlas integrate`; it becomes ddp_find_unused_parameters_true, which scVI needs), see docs/multi_process.md",
    )
    num_nodes: int = Field(
        1, ge=1, description="machines of a multi-node DDP job (Lightning num_nodes; devices is per machine)"
    )
    backend: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="HVGs, neighbours, UMAP, Leiden, Harmony: rapids-singlecell on GPU or scanpy on CPU",
    )

    # ---------------------------------------------------------------- graph
    n_neighbors: int = Field(15, ge=2, description="neighbours of the kNN graph on the latent space")
    leiden_resolution: float = Field(1.0, gt=0, description="Leiden resolution")
    umap_min_dist: float = Field(0.5, ge=0, description="UMAP min_dist")
    store_connectivities: bool = Field(False, description="keep obsp connectivities/distances in atlas.h5ad")

    # ---------------------------------------------------------------- metrics
    metrics: bool = Field(True, description="score the integration with scib-metrics")
    metrics_label_key: str | None = Field(
        None, description="obs column of cell labels for bio-conservation metrics; None = batch metrics only"
    )
    metrics_batch_keys: list[str] = Field(
        default_factory=lambda: ["dataset_id", "sample_id"],
        description="batch columns scored; the first gives the main columns, the others suffixed ones",
    )
    metrics_max_cells: int = Field(50_000, ge=100, description="cells subsampled (seeded) for the metrics")
    metrics_baseline_max_cells: int = Field(
        200_000,
        ge=100,
        description="cells the PCA and Harmony baselines are fitted on before the metrics score them on the same "
        "subsample as scVI: all cells up to this many (scVI learned from every cell; Harmony fitted on the scored "
        "subsample alone mixes a smaller problem), above it a seeded subsample holding the scored cells",
    )
    metrics_harmony: bool = Field(True, description="add Harmony on the PCA baseline as a peer")
    metrics_n_jobs: int = Field(-1, description="threads of the neighbour search (-1 = all)")
    metrics_fast: bool = Field(False, description="skip kBET and BRAS, the slowest scib metrics")

    seed: int = Field(0, description="seeds scvi-tools, the data loader, UMAP, Leiden, subsampling")

    @field_validator("categorical_covariates", "metrics_batch_keys", "exclude_gene_groups")
    @classmethod
    def _unique(cls, v: list) -> list:
        dupes = sorted({x for x in v if v.count(x) > 1})
        if dupes:
            raise ValueError(f"listed twice: {dupes}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> IntegrateSettings:
        if self.model == "scanvi" and not self.labels_key:
            raise ValueError("model='scanvi' needs labels_key (the obs column of cell labels)")
        if self.batch_key in self.categorical_covariates:
            raise ValueError(f"batch_key {self.batch_key!r} is also listed in categorical_covariates")
        return self

    @property
    def n_processes(self) -> int:
        """Training processes Lightning runs: devices per machine x machines (``auto`` counts as one device)."""
        d = self.devices
        per_machine = max(1, len(d)) if isinstance(d, list) else (d if isinstance(d, int) and d > 0 else 1)
        return per_machine * self.num_nodes
