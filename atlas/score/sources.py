"""Row-chunk access to a cells x genes matrix, wherever it lives.

A :class:`RowSource` yields CSR row chunks ``(start, stop, indptr, indices, data)`` with the
chunk's *absolute* int64 ``indptr`` slice (``indptr[0]`` is the offset of its first stored value),
so kernels index the chunk's arrays with ``indptr[i] - indptr[0]`` in 64-bit arithmetic.

Supported: scipy CSR (views, no copy) and CSC (converted once, logged), numpy arrays, cupyx CSR
on the GPU, backed sparse datasets (``anndata.io.sparse_dataset`` on an h5py/zarr group, or the
group itself; h5py groups are read by :mod:`atlas.score.h5rows`: memory-mapped or read ahead on a
thread), and dense h5py/zarr arrays. Dask arrays are wrapped by ``exec_dask.DaskSource``. A chunk's
arrays are valid until the next chunk is requested (buffers are reused).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..core.errors import AtlasError
from ..core.progress import track

logger = logging.getLogger(__name__)

Chunk = tuple[int, int, np.ndarray, np.ndarray, np.ndarray]
#: At most this many stored values per chunk, whatever ``chunk_size`` says (about 1 GB of float32 + int32).
MAX_CHUNK_NNZ = 1 << 27


def plan_chunks(indptr: np.ndarray, chunk_size: int, max_nnz: int = MAX_CHUNK_NNZ) -> list[tuple[int, int]]:
    """Split rows into ``[start, stop)`` chunks of at most ``chunk_size`` rows and ``max_nnz`` values.

    All offset arithmetic is int64 (values of ``indptr`` may exceed 2^31); a single row holding more
    than ``max_nnz`` values gets a chunk of its own.
    """
    if chunk_size < 1:
        raise AtlasError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    indptr = np.asarray(indptr, dtype=np.int64)
    n = indptr.shape[0] - 1
    out: list[tuple[int, int]] = []
    start = 0
    while start < n:
        stop = min(n, start + chunk_size)
        limit = indptr[start] + np.int64(max_nnz)
        if indptr[stop] > limit:
            stop = max(start + 1, int(np.searchsorted(indptr, limit, side="right")) - 1)
        out.append((start, stop))
        start = stop
    return out


@dataclass
class RowSource:
    """A matrix read in CSR row chunks (see the module docstring)."""

    n_rows: int
    n_cols: int
    dtype: np.dtype
    dense: bool  # scanpy's gene means differ in rounding for dense float32 input
    kind: str
    _obj: Any = None
    _indptr: np.ndarray | None = None
    quiet: bool = False  # no progress bar (a block scored inside a Dask task)

    def tracked_chunks(self, chunk_size: int, description: str) -> Iterator[Chunk]:
        """:meth:`chunks` with a progress bar unless the source is ``quiet``."""
        chunks = self.chunks(chunk_size)
        # the total is the usual chunk count (a chunk cut short by the value limit adds one more)
        return chunks if self.quiet else track(chunks, description, total=-(-self.n_rows // chunk_size))

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        """Yield ``(start, stop, indptr, indices, data)`` row chunks in order."""
        if self.kind == "csr":
            m = self._obj
            for start, stop in plan_chunks(m.indptr, chunk_size):
                lo, hi = int(m.indptr[start]), int(m.indptr[stop])
                yield (
                    start,
                    stop,
                    m.indptr[start : stop + 1].astype(np.int64, copy=False),
                    m.indices[lo:hi],
                    m.data[lo:hi],
                )
        elif self.kind == "group":
            g = self._obj
            ip = self._indptr
            if _is_h5py(g):
                from .h5rows import h5_csr_chunks

                yield from h5_csr_chunks(g, ip, plan_chunks(ip, chunk_size))
                return
            for start, stop in plan_chunks(ip, chunk_size):
                lo, hi = int(ip[start]), int(ip[stop])
                yield (
                    start,
                    stop,
                    ip[start : stop + 1],
                    np.asarray(g["indices"][lo:hi]),
                    np.asarray(g["data"][lo:hi]),
                )
        elif self.kind == "dense":
            x = self._obj
            for start in range(0, self.n_rows, chunk_size):
                stop = min(self.n_rows, start + chunk_size)
                block = sp.csr_matrix(np.ascontiguousarray(np.asarray(x[start:stop])))
                yield start, stop, block.indptr.astype(np.int64), block.indices, block.data
        else:  # device sources are iterated by the GPU executor
            raise AtlasError(
                "the CPU backend was given a matrix on the GPU (cupy); pass backend='gpu' (or 'auto'), "
                "or move it to the host first (.get(); for a dask array x.map_blocks(lambda b: b.get()))"
            )

    def first_values(self, n_values: int = 1_000_000) -> np.ndarray:
        """Up to ``n_values`` stored values from the first rows (for the counts/normalised check)."""
        if self.kind == "device":
            m = self._obj
            return m.data[: min(n_values, int(m.nnz))].get()
        for _start, _stop, _ip, _ind, data in self.chunks(max(1, min(self.n_rows, 5_000))):
            return np.array(data[:n_values])  # a copy: chunk buffers are reused
        return np.zeros(0, dtype=self.dtype)


def _is_h5py(x: Any) -> bool:
    return type(x).__module__.startswith("h5py")


def _is_sparse_group(x: Any) -> bool:
    attrs = getattr(x, "attrs", None)
    if attrs is None or not hasattr(x, "keys"):
        return False
    enc = attrs.get("encoding-type", "")
    return enc in ("csr_matrix", "csc_matrix")


def as_source(x: Any) -> RowSource:
    """Wrap a supported matrix as a :class:`RowSource` (no copy for CSR, numpy and disk data)."""
    from ..core.backend import is_device_array

    if is_device_array(x):
        import cupyx.scipy.sparse as csp

        if not csp.isspmatrix_csr(x):
            if hasattr(x, "ndim") and x.ndim == 2:
                raise AtlasError(
                    "dense cupy matrices are not supported; convert with cupyx.scipy.sparse.csr_matrix"
                )
            raise AtlasError(
                f"unsupported GPU matrix type {type(x).__name__}; use cupyx.scipy.sparse.csr_matrix"
            )
        return RowSource(x.shape[0], x.shape[1], np.dtype(x.dtype), False, "device", x)
    if sp.issparse(x):
        if x.format != "csr":
            logger.warning(
                "converting a %s matrix of shape %s to CSR (one copy) to read it by rows", x.format, x.shape
            )
            x = x.tocsr()
        if not x.has_canonical_format:
            logger.warning("the CSR matrix has unsorted or duplicate indices; canonicalising a copy")
            x = x.copy()
            x.sum_duplicates()
        return RowSource(x.shape[0], x.shape[1], np.dtype(x.dtype), False, "csr", x)
    # backed sparse datasets (anndata) expose their h5py/zarr group
    group = getattr(x, "group", None)
    if group is not None and _is_sparse_group(group):
        x = group
    if _is_sparse_group(x):
        enc = x.attrs.get("encoding-type")
        shape = tuple(int(s) for s in x.attrs["shape"])
        if enc != "csr_matrix":
            raise AtlasError(
                f"the matrix on disk is stored as {enc}; scoring reads cells in row chunks and needs "
                "csr_matrix (rewrite the store with CSR X)"
            )
        ip = np.asarray(x["indptr"][:], dtype=np.int64)
        return RowSource(shape[0], shape[1], np.dtype(x["data"].dtype), False, "group", x, ip)
    if isinstance(x, np.ndarray) or (
        hasattr(x, "shape") and hasattr(x, "dtype") and len(getattr(x, "shape", ())) == 2
    ):
        if isinstance(x, np.matrix):
            x = np.asarray(x)
        if len(x.shape) != 2:
            raise AtlasError(f"expected a 2-D cells x genes matrix, got shape {x.shape}")
        return RowSource(int(x.shape[0]), int(x.shape[1]), np.dtype(x.dtype), True, "dense", x)
    raise AtlasError(
        f"cannot score a matrix of type {type(x).__module__}.{type(x).__name__}; use a numpy array, "
        "a scipy CSR matrix, a backed sparse dataset, a dask array or a cupyx CSR matrix"
    )


def looks_like_counts(values: np.ndarray) -> bool:
    """True when every value is a non-negative integer (raw UMI counts)."""
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        return bool(values.size == 0 or values.min() >= 0)
    if values.size == 0:
        return False
    return bool(np.all(values >= 0) and np.all(values == np.round(values)))
