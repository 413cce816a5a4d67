"""Integrate the store into a reference atlas: HVGs, scVI/scANVI, graph, scib metrics, bundle.

Public API (imported lazily, so ``import atlas.integrate`` loads neither torch, scvi-tools,
scanpy nor JAX):

* :func:`integrate_store` - store -> reference bundle (:class:`IntegrateResult`)
* :class:`IntegrateSettings` - the stage's settings (pydantic)
* :func:`select_hvgs`, :func:`train_scvi`, :func:`compute_graph`, :func:`integration_metrics` - the steps
* :class:`FastDataModule` - the on-device data path for ``model.train(datamodule=...)``
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .settings import IntegrateSettings

_LAZY = {
    "integrate_store": ".stage",
    "IntegrateResult": ".stage",
    "read_store": ".stage",
    "select_hvgs": ".hvg",
    "gene_groups": ".hvg",
    "DISSOCIATION_GENES": ".hvg",
    "GENE_GROUP_PATTERNS": ".hvg",
    "train_scvi": ".model",
    "TrainResult": ".model",
    "validation_elbo": ".model",
    "compute_graph": ".graph",
    "integration_metrics": ".metrics",
    "plot_metrics": ".metrics",
    "FastDataModule": ".datamodule",
    "IntegrateInputError": ".errors",
    "MissingKeyError": ".errors",
    "NotCountsError": ".errors",
    "TooSmallError": ".errors",
}

__all__ = [
    "DISSOCIATION_GENES",
    "GENE_GROUP_PATTERNS",
    "FastDataModule",
    "IntegrateInputError",
    "IntegrateResult",
    "IntegrateSettings",
    "MissingKeyError",
    "NotCountsError",
    "TooSmallError",
    "TrainResult",
    "compute_graph",
    "gene_groups",
    "integrate_store",
    "integration_metrics",
    "plot_metrics",
    "read_store",
    "select_hvgs",
    "train_scvi",
    "validation_elbo",
]

if TYPE_CHECKING:  # pragma: no cover
    from .datamodule import FastDataModule
    from .errors import IntegrateInputError, MissingKeyError, NotCountsError, TooSmallError
    from .graph import compute_graph
    from .hvg import DISSOCIATION_GENES, GENE_GROUP_PATTERNS, gene_groups, select_hvgs
    from .metrics import integration_metrics, plot_metrics
    from .model import TrainResult, train_scvi, validation_elbo
    from .stage import IntegrateResult, integrate_store, read_store


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
