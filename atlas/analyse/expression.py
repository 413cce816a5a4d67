"""Log-normalised expression, the one transform the analysis's gene-level steps share."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["log_normalised"]


def log_normalised(counts, totals: np.ndarray | None = None) -> sp.csr_matrix:
    """``log1p(count / total * 1e4)`` per cell (``totals``: each cell's total over all genes; row sums if None)."""
    x = sp.csr_matrix(counts, dtype=np.float64)
    if totals is None:
        totals = np.asarray(x.sum(axis=1)).ravel()
    totals = np.asarray(totals, dtype=np.float64)
    scale = np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)
    x = sp.csr_matrix(sp.diags(scale) @ x)
    x.data = np.log1p(x.data)
    return x
