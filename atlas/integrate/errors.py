"""Errors of the integrate stage: each names the key, column or count at fault and what to do."""

from __future__ import annotations

from ..core.errors import InputDataError


class IntegrateInputError(InputDataError):
    """The store cannot be integrated as configured."""


class MissingKeyError(IntegrateInputError):
    """An obs column named in the settings is not in the store."""


class NotCountsError(IntegrateInputError):
    """The matrix handed to scVI / seurat_v3 is not raw counts."""


class TooSmallError(IntegrateInputError):
    """Too few cells or genes left for what was asked."""


def missing_key(key: str, setting: str, available, where: str = "the store's obs") -> MissingKeyError:
    """A :class:`MissingKeyError` that names the setting, the key and the columns there are."""
    cols = list(available)
    shown = ", ".join(map(repr, cols[:30])) + (" ..." if len(cols) > 30 else "")
    return MissingKeyError(
        f"{setting}={key!r} is not a column of {where} (columns: {shown}); "
        f"fix the setting or add the column at ingest"
    )
