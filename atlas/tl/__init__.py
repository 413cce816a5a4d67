"""Tools: signature scoring (scanpy / AUCell / UCell / mean) and the signature catalogue.

Public functions are loaded on first attribute access, so ``import atlas.tl`` does not import
numba, cupy or dask.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "score_signatures": "._score",
    "score_matrix": "._score_math",
    "score_store": "._store",
    "list_signatures": "._store",
    "show_signature": "._store",
    "export_signatures": "._store",
    "resolve_gene_sets": "._gene_sets",
    "read_gmt": "._gene_sets",
    "read_gene_set_yaml": "._gene_sets",
    "GeneSet": "._gene_sets",
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
