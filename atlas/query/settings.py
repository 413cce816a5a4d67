"""Settings of query mapping (``atlas query``): overlap limits, scArches training, label transfer.

Validated like every atlas config (unknown fields are errors). The training defaults keep 10,000
query cells within three minutes on 2 CPU cores (see ``benchmarks/query.md``); on a GPU the default
is 100 epochs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..core.settings import StrictModel

__all__ = ["QuerySettings"]


class QuerySettings(StrictModel):
    """How a query is prepared, mapped onto the reference and labelled."""

    # ---------------------------------------------------------------- genes
    min_overlap: float = Field(
        0.5, ge=0, le=1, description="error when the query measures less than this share of the reference HVGs"
    )
    warn_overlap: float = Field(0.8, ge=0, le=1, description="warning below this share of the reference HVGs")

    # ---------------------------------------------------------------- scArches surgery
    max_epochs: int | None = Field(
        None,
        ge=1,
        description="query training epochs; None = 100 on a GPU, 10 on the CPU (scArches trains only the query's "
        "batch weights)",
    )
    batch_size: int = Field(1024, ge=16, description="cells per mini-batch")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="0 as the scvi-tools scArches tutorials recommend")
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = Field("auto", description="torch device for training")
    seed: int = Field(0, description="seeds scvi-tools (training, data loader)")

    # ---------------------------------------------------------------- label transfer
    label_key: str | None = Field(
        None,
        description="obs column of the reference labels; default cell_type (a run directory); a bare bundle "
        "needs one",
    )
    state_key: str = Field("neutrophil_state", description="obs column of the reference neutrophil states")
    neutrophil_label: str = Field("neutrophil", description="value of label_key that marks neutrophils")
    unknown_label: str = Field("unknown", description="label of cells too uncertain to take a reference label")
    n_neighbors: int = Field(15, ge=1, le=200, description="reference neighbours voting on a query cell's label")
    uncertainty_threshold: float = Field(
        0.5, gt=0, le=1, description="cells with a higher uncertainty are labelled unknown"
    )
    state_method: Literal["evidence", "knn"] = Field(
        "evidence",
        description="how query neutrophils get their state: 'evidence' = the reference's state programmes scored on "
        "the query's own counts and called at the reference's cuts (the analysis's own-evidence rule; needs a run "
        "analysed with state cuts, else knn with a note); 'knn' = the vote of the nearest reference neutrophils in "
        "the latent space",
    )
    state_uncertainty_threshold: float = Field(
        1.0, gt=0, le=1, description="neutrophils with a higher state uncertainty get state unknown (1 = never); with "
        "state_method evidence the uncertainty is 1 - the calibrated probability that the call is right (rule "
        "'uncertain')"
    )
    distance_uncertainty: bool = Field(
        True,
        description="add the distance to the reference to the uncertainty, so cells of a type the reference "
        "lacks are flagged even when their neighbours agree",
    )
    distance_quantile: float = Field(
        0.99, gt=0.5, lt=1, description="reference kNN distance quantile at which the distance term reaches 0.5"
    )
    marker_check: bool = Field(
        True,
        description="annotate the query from its own markers with the reference's cell-type rule and mark unknown "
        "the cells whose own markers call a type the reference lacks (fewer than n_neighbors cells), which the "
        "distance term can miss when scArches places them near known types",
    )
    calibration_cells: int = Field(
        20_000, ge=100, description="reference cells (seeded subsample) that calibrate the distance term"
    )

    # ---------------------------------------------------------------- outputs
    score: bool = Field(True, description="score the reference's signatures and the reprogramming index")
    report: bool = Field(True, description="write report.html (and figures/)")
    save_model: bool = Field(True, description="keep the query model in DIR/model")

    @model_validator(mode="after")
    def _consistent(self) -> QuerySettings:
        if self.warn_overlap < self.min_overlap:
            raise ValueError(f"warn_overlap ({self.warn_overlap}) is below min_overlap ({self.min_overlap})")
        return self
