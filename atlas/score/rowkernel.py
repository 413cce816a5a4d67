"""What every executor shares: the description of a row kernel and the helpers around it.

The executors (:mod:`atlas.score.exec_cpu`, :mod:`atlas.score.exec_gpu`, :mod:`atlas.score.exec_dask`)
import this module and never each other (exec_dask calls the one it is given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import AtlasError


@dataclass
class RowKernel:
    """One row-wise kernel: ``"weighted_sum"`` (fused normalise x weights) or ``"rank"``.

    ``arrays`` holds the kernel's inputs (see :func:`atlas.score.matrix.membership` and
    ``_rank_arrays``) and ``params`` its scalars; executors read them and never change them.
    """

    name: str
    n_out: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def raise_bad(n_bad: int) -> None:
    """Raise when a kernel found non-finite values in the matrix."""
    if n_bad:
        raise AtlasError(
            f"the matrix holds {n_bad} non-finite values (NaN or inf); scores would be undefined. "
            "Replace them (e.g. X.data[~np.isfinite(X.data)] = 0) or drop the affected cells"
        )


def dense_weights(w_indptr, w_cols, w_vals, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """``(slot, table)`` for the CPU ``weighted_sum`` from a genes x ``n_out`` CSR weight matrix.

    ``slot[g]`` is gene ``g``'s row in ``table`` (-1 for genes without weights); ``table`` holds
    those genes' weights densely (duplicates summed). Its width is ``n_out``: padding it to whole
    SIMD registers measured slower (more bytes per hit).
    """
    import scipy.sparse as sp

    w_indptr = np.asarray(w_indptr, dtype=np.int64)
    genes = np.flatnonzero(np.diff(w_indptr))
    slot = np.full(w_indptr.size - 1, -1, np.int32)
    slot[genes] = np.arange(genes.size, dtype=np.int32)
    w = sp.csr_matrix((w_vals, w_cols, w_indptr), shape=(w_indptr.size - 1, n_out))
    return slot, np.ascontiguousarray(w[genes].toarray(), dtype=np.float64)


def order_keys(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values and uint32 keys that sort stored values in *descending* order (ties stay ties).

    Values exactly representable in float32 use their float32 bit pattern; others (float64 data
    with more precision) are keyed by their position among the chunk's distinct values.
    """
    data = np.asarray(data)
    if data.dtype == np.float32:
        v32 = data
    else:
        v32 = data.astype(np.float32)
        if not np.array_equal(v32, data):
            uniq, inv = np.unique(data, return_inverse=True)
            if uniq.size >= 2**32:  # pragma: no cover
                raise AtlasError("a row chunk holds more than 2^32 distinct values; lower chunk_size")
            return data, (np.uint32(uniq.size - 1) - inv.astype(np.uint32)).astype(np.uint32)
    bits = v32.view(np.uint32)
    asc = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    return v32, (~asc).astype(np.uint32)
