"""Names of :mod:`atlas.integrate`, imported on first use (read by lazy_loader.attach_stub and type checkers)."""

from .datamodule import FastDataModule
from .errors import (
    IntegrateInputError,
    MissingKeyError,
    NotCountsError,
    TooSmallError,
)
from .graph import compute_graph
from .hvg import (
    DISSOCIATION_GENES,
    GENE_GROUP_PATTERNS,
    gene_groups,
    select_hvgs,
)
from .label_transfer import transfer_labels
from .metrics import integration_metrics, plot_metrics
from .model import TrainResult, train_scvi, validation_elbo
from .settings import IntegrateSettings
from .stage import (
    IntegrateResult,
    integrate_store,
    read_store,
)
