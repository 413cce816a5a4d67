"""Map a new data set onto the reference atlas: scArches surgery, label transfer with uncertainty,
placement on the reference UMAP, the reference's scores and reprogramming index, and a report.

``map_query(refdir, query, out)`` is the Python API of ``atlas query REFDIR QUERY --out DIR``; the
steps are in :mod:`~atlas.query.reference`, :mod:`~atlas.query.inputs`, :mod:`~atlas.query.prepare`,
:mod:`~atlas.query.mapping`, :mod:`~atlas.query.transfer`, :mod:`~atlas.query.compare` and
:mod:`~atlas.query.report`. Names are imported on first use, so ``import atlas.query`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "map_query": ".stage",
    "QueryResult": ".stage",
    "QuerySettings": ".settings",
    "Reference": ".reference",
    "load_reference": ".reference",
    "transfer_labels": ".transfer",
}

__all__ = ["QueryResult", "QuerySettings", "Reference", "load_reference", "map_query", "transfer_labels"]

if TYPE_CHECKING:  # pragma: no cover
    from .reference import Reference, load_reference
    from .settings import QuerySettings
    from .stage import QueryResult, map_query
    from .transfer import transfer_labels


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
