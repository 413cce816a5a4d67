"""Tools: signature scoring (scanpy / AUCell / UCell / mean) and the signature catalogue.

Public functions are loaded on first attribute access, so ``import atlas.score`` does not import
numba, cupy or dask.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "score_signatures": ".adata",
    "score_matrix": ".matrix",
    "score_store": ".stage",
    "list_signatures": ".stage",
    "show_signature": ".stage",
    "export_signatures": ".stage",
    "resolve_gene_sets": ".gene_sets",
    "read_gmt": ".gene_sets",
    "read_gene_set_yaml": ".gene_sets",
    "GeneSet": ".gene_sets",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
