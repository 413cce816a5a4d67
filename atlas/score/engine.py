"""Executors: run one kernel over every row chunk of a matrix on the CPU, the GPU or Dask.

A kernel call is described by a :class:`RowKernel` (row-wise kernels with per-row outputs) or by
the fold/column-count passes; each executor runs the numba twin or the CUDA kernel on the chunks
it reads. Non-finite values found by any kernel raise :class:`~atlas.core.errors.AtlasError`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import AtlasError
from ..core.progress import track
from .sources import RowSource

logger = logging.getLogger(__name__)
_ROW_BLOCK = 64
_SERIAL_BELOW = 4 * _ROW_BLOCK  # chunks of fewer rows run in one thread


@dataclass
class RowKernel:
    """One row-wise kernel: ``"weighted_sum"`` (fused normalise x weights) or ``"rank"``."""

    name: str
    n_out: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def _raise_bad(n_bad: int) -> None:
    if n_bad:
        raise AtlasError(
            f"the matrix holds {n_bad} non-finite values (NaN or inf); scores would be undefined. "
            "Replace them (e.g. X.data[~np.isfinite(X.data)] = 0) or drop the affected cells"
        )


@contextlib.contextmanager
def _serial_if_few(n_rows: int) -> Iterator[None]:
    """Run the kernels of a chunk of a few rows in the calling thread only.

    Waking the thread pool for a handful of rows (e.g. a row copied across the end of a stored
    run, see :mod:`atlas.score.h5rows`) costs more than the rows, most of all on a busy machine.
    """
    if n_rows >= _SERIAL_BELOW:
        yield
        return
    from numba import get_num_threads, set_num_threads

    n = get_num_threads()
    set_num_threads(1)
    try:
        yield
    finally:
        set_num_threads(n)


def cpu_rows(kern: RowKernel, indptr, indices, data) -> tuple[np.ndarray, int]:
    """Run ``kern`` on one host CSR chunk with the numba twin; returns ``(out, n_bad)``."""
    with _serial_if_few(indptr.shape[0] - 1):
        return _cpu_rows(kern, indptr, indices, data)


def _cpu_rows(kern: RowKernel, indptr, indices, data) -> tuple[np.ndarray, int]:
    from .._kernels import cpu

    base = np.int64(indptr[0])
    a, p = kern.arrays, kern.params
    if kern.name == "weighted_sum":
        if "table" not in a:  # built once per kernel, reused for every chunk
            a["slot"], a["table"] = dense_weights(a["w_indptr"], a["w_cols"], a["w_vals"], kern.n_out)
        return cpu.weighted_sum(
            indptr, base, indices, data, a["slot"], a["table"], p["mode"], p["target"], _ROW_BLOCK
        )
    vals, dkey = order_keys(data)
    max_nnz = int(np.diff(indptr).max()) if indptr.shape[0] > 1 else 0
    return cpu.rank_scores(
        indptr,
        base,
        indices,
        vals,
        dkey,
        a["tb"],
        a["tb_inv"],
        a["memb_indptr"],
        a["memb_cols"],
        kern.n_out,
        p["mode"],
        p["cap"],
        p["nvar"],
        max_nnz,
        _ROW_BLOCK,
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


def cpu_fold(
    src: RowSource, chunk_size: int, mode: int, target: float, acc: np.ndarray, nnz: np.ndarray
) -> None:
    """Per-gene sums in row order into ``acc`` and stored values per gene into ``nnz``, on the CPU."""
    for _start, _stop, indptr, indices, data in track(src.chunks(chunk_size), "gene means"):
        fold_chunk(indptr, indices, data, mode, target, acc, nnz)


def fold_chunk(
    indptr, indices, data, mode: int, target: float, acc: np.ndarray, nnz: np.ndarray | None = None
) -> int:
    """Fold one host CSR chunk into ``acc`` (and ``nnz``) with the numba twin; returns 0.

    Non-finite values are reported by the scoring pass that always follows.
    """
    from .._kernels import cpu

    with _serial_if_few(indptr.shape[0] - 1):
        cpu.fold_csr(
            indptr, indices, data, mode, target, acc, np.zeros(acc.shape[0], np.int64) if nnz is None else nnz
        )
    return 0


def cpu_col_counts(src: RowSource, chunk_size: int) -> np.ndarray:
    """Stored values per gene over all cells, on the CPU."""
    from .._kernels import cpu

    counts = np.zeros(src.n_cols, np.int64)
    for _start, _stop, _indptr, indices, _data in src.chunks(chunk_size):
        counts += cpu.col_counts(indices, src.n_cols, _threads())
    return counts


def run_rows(src: RowSource, kern: RowKernel, *, backend: str, chunk_size: int) -> np.ndarray:
    """``(n_rows, n_out)`` results of ``kern`` over all row chunks on the chosen backend.

    Column-major, so each signature's scores are contiguous (a table column without a copy).
    """
    out = np.empty((src.n_rows, kern.n_out), order="F")
    if backend == "gpu":
        from . import exec_gpu

        exec_gpu.run_rows(src, kern, chunk_size, out)
        return out
    n_bad = 0
    for start, stop, indptr, indices, data in track(src.chunks(chunk_size), f"scoring ({kern.name})"):
        res, bad = cpu_rows(kern, indptr, indices, data)
        out[start:stop] = res
        n_bad += bad
    _raise_bad(n_bad)
    return out


def run_fold(
    src: RowSource, *, backend: str, chunk_size: int, mode: int, target: float, dtype
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-gene sums over all cells (each gene summed in row order in ``dtype``) and stored values
    per gene (``None`` on the GPU, which does not count them)."""
    if backend == "gpu":
        from . import exec_gpu

        return exec_gpu.run_fold(src, chunk_size, mode, target, np.dtype(dtype)), None
    acc = np.zeros(src.n_cols, dtype=dtype)
    nnz = np.zeros(src.n_cols, np.int64)
    cpu_fold(src, chunk_size, mode, target, acc, nnz)
    return acc, nnz


def run_col_counts(src: RowSource, *, backend: str, chunk_size: int) -> np.ndarray:
    """Stored values per gene (decoupler's test for an empty gene)."""
    if backend == "gpu":
        from . import exec_gpu

        return exec_gpu.run_col_counts(src, chunk_size)
    return cpu_col_counts(src, chunk_size)


def _threads() -> int:
    from numba import get_num_threads

    return max(1, get_num_threads())
