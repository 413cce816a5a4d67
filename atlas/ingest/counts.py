"""Checks that a matrix holds raw counts: finite, non-negative whole numbers.

Run on every chunk as it is read, so a normalised or log-transformed matrix is refused with
evidence before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..core.errors import InputDataError

__all__ = ["check_counts", "describe_non_integer", "round_counts"]

#: values within this distance of a whole number count as whole (float round-trips of counts)
INTEGER_TOLERANCE = 1e-4


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def describe_non_integer(X: sp.csr_matrix) -> str:
    """Evidence that ``X`` is not raw counts: share of non-integers, examples, max, row sums.

    Parameters
    ----------
    X
        A chunk that holds non-integer values.

    Returns
    -------
    One sentence of evidence, with a guess at the transformation when the row sums tell.
    """
    data = X.data
    frac = np.abs(data - np.rint(data)) > INTEGER_TOLERANCE
    examples = ", ".join(_fmt(v) for v in data[frac][:3])
    parts = [
        f"{frac.mean():.0%} of the non-zero values are not whole numbers (e.g. {examples})",
        f"max {_fmt(float(data.max()))}",
    ]
    rows = X[: min(X.shape[0], 2000)]
    rows = rows[np.diff(rows.indptr) > 0]
    if rows.shape[0] >= 2:
        sums = np.asarray(rows.sum(axis=1)).ravel()
        parts.append(f"row sums {_fmt(sums.min())}-{_fmt(sums.max())}")
        if np.ptp(sums) <= 0.01 * np.median(sums):
            parts.append("the rows all sum to the same total (normalised data)")
        elif data.max() < 50:
            ex = rows.copy()
            ex.data = np.expm1(ex.data.astype(np.float64))
            esums = np.asarray(ex.sum(axis=1)).ravel()
            if np.ptp(esums) <= 0.01 * np.median(esums):
                parts.append(
                    f"row sums after expm1 are all ~{_fmt(float(np.median(esums)))}, which is what log1p of "
                    "normalize_total gives (log-normalised data)"
                )
            elif data.max() < 20:
                parts.append("the small maximum suggests log-transformed values")
    return "; ".join(parts)


def round_counts(X: sp.csr_matrix) -> tuple[sp.csr_matrix, int, int]:
    """Round non-integer values to whole numbers (the ``round_counts: true`` option).

    For ambient-corrected counts (SoupX writes non-integers). NaN, infinite and negative values are
    left for :func:`check_counts` to refuse.

    Parameters
    ----------
    X
        One chunk (not modified; a copy is returned when it holds non-integers).

    Returns
    -------
    The chunk (values rounded, entries rounded to 0 removed), how many values changed and how many
    of those became 0.
    """
    data = X.data
    frac = np.isfinite(data) & (data >= 0) & (data != np.rint(data))
    n = int(frac.sum())
    if not n:
        return X, 0, 0
    X = X.copy()
    data = X.data
    data[frac] = np.rint(data[frac])
    n_zero = int((data[frac] == 0).sum())
    if n_zero:
        X.eliminate_zeros()
    return X, n, n_zero


def check_counts(
    X: sp.csr_matrix,
    *,
    dataset_id: str,
    source: str | Path,
    where: str = "the matrix",
    first_cell: int = 0,
    suggest_counts_key: bool = True,
) -> None:
    """Raise :class:`InputDataError` unless ``X`` holds finite, non-negative whole numbers.

    Parameters
    ----------
    X
        One chunk of counts (cells x genes).
    dataset_id
        Data set id, for the message.
    source
        File the chunk was read from, for the message.
    where
        Location in the file (``X``, ``raw/X``, ``layers/counts``), for the message.
    first_cell
        Row of the file where the chunk starts, for the message.
    suggest_counts_key
        Whether to suggest ``counts: layers/counts`` / ``counts: raw`` (h5ad inputs).
    """
    data = X.data
    if data.size == 0:
        return
    # fast path (one reduction and one comparison): finite, non-negative, whole numbers
    if np.isfinite(data.sum(dtype=np.float64)) and data.min() >= 0 and np.array_equal(np.rint(data), data):
        return
    cells = f"cells {first_cell}-{first_cell + X.shape[0] - 1}"
    head = f"data set '{dataset_id}': the counts read from {where} in {source} ({cells})"
    bad = ~np.isfinite(data)
    if bad.any():
        n_nan = int(np.isnan(data).sum())
        raise InputDataError(
            f"{head} contain {n_nan} NaN and {int(bad.sum()) - n_nan} infinite values; raw counts are finite "
            "numbers. Replace missing values by 0 or point the entry at the raw count matrix"
        )
    neg = data < 0
    if neg.any():
        raise InputDataError(
            f"{head} contain {int(neg.sum())} negative values (min {_fmt(float(data.min()))}), so the matrix is "
            "scaled or centred, not counts. " + _what_to_do(suggest_counts_key)
        )
    if np.any(np.abs(data - np.rint(data)) > INTEGER_TOLERANCE):
        raise InputDataError(
            f"{head} look normalised or log-transformed, not raw counts: {describe_non_integer(X)}. "
            + _what_to_do(suggest_counts_key)
            + ". If they are ambient-corrected counts (e.g. SoupX's), set 'round_counts: true' in the data "
            "set's entry to round them to whole numbers"
        )


def _what_to_do(suggest_counts_key: bool) -> str:
    if suggest_counts_key:
        return (
            "If the file also holds raw counts, say where in the data set's config entry "
            "(counts: layers/counts, or counts: raw for adata.raw); otherwise obtain the raw count matrix"
        )
    return "Give atlas the raw (UMI) count matrix of this data set"
