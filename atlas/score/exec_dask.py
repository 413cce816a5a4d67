"""Scoring dask arrays: row blocks scored where they live (``map_blocks``), the path beyond one machine.

A dask array of scipy CSR (or numpy) row blocks is scored block by block with the same kernels as
the in-memory path (numba on the workers; cupy blocks use the CUDA kernels). Passes:

* row kernels (scores): ``map_blocks`` over row blocks, embarrassingly parallel;
* stored values per gene (AUCell): per-block counts summed;
* gene sums (scanpy method): a chain of tasks, block ``k`` folded into the running sums after block
  ``k-1``, because scanpy sums each gene in row order (the blocks are still read in parallel by
  the workers; only the 1-D running sums travel).

Works with any scheduler (threaded, ``distributed.Client``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..core.errors import AtlasError
from .engine import RowKernel, _raise_bad, _threads, cpu_rows, fold_chunk

logger = logging.getLogger(__name__)


def _block_csr(block: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if sp.issparse(block):
        m = block.tocsr()
    elif type(block).__module__.startswith("cupy"):
        m = block
    else:
        m = sp.csr_matrix(np.asarray(block))
    if sp.issparse(m) and not m.has_canonical_format:
        m = m.copy()
        m.sum_duplicates()
    return m.indptr.astype(np.int64), m.indices, m.data


def _rows_block(block: Any, kern: RowKernel) -> np.ndarray:
    if type(block).__module__.startswith("cupy"):
        from .exec_gpu import run_rows
        from .sources import as_source

        out = np.empty((block.shape[0], kern.n_out))
        run_rows(as_source(block), kern, max(1, block.shape[0]), out)
        return out
    indptr, indices, data = _block_csr(block)
    out, bad = cpu_rows(kern, indptr, indices, data)
    _raise_bad(int(bad))
    return out


def _fold_block(acc: np.ndarray, block: Any, mode: int, target: float) -> np.ndarray:
    acc = acc.copy()
    indptr, indices, data = _block_csr(block)
    _raise_bad(fold_chunk(indptr, indices, data, mode, target, acc))
    return acc


def _counts_block(block: Any, n_cols: int) -> np.ndarray:
    from .._kernels import cpu

    _, indices, _ = _block_csr(block)
    return cpu.col_counts(indices, n_cols, _threads())[None, :]


class DaskSource:
    """A dask array seen by :func:`atlas.score.score_matrix`: runs every pass with dask."""

    dense = False

    def __init__(self, x: Any) -> None:
        if x.ndim != 2:
            raise AtlasError(f"expected a 2-D cells x genes dask array, got {x.ndim}-D")
        if len(x.chunks[1]) > 1:
            logger.info("rechunking the dask array to whole rows (%d column blocks -> 1)", len(x.chunks[1]))
            x = x.rechunk({1: -1})
        self.x = x
        self.n_rows, self.n_cols = (int(s) for s in x.shape)
        self.dtype = np.dtype(x.dtype)
        meta = getattr(x, "_meta", None)
        self.dense = not sp.issparse(meta) and not type(meta).__module__.startswith("cupyx")

    def first_values(self, n_values: int = 1_000_000) -> np.ndarray:
        """Stored values of the first row block (for the counts/normalised check)."""
        block = self.x.blocks[0].compute()
        if type(block).__module__.startswith("cupy"):
            block = block.get()
        _, _, data = _block_csr(block)
        return np.asarray(data[:n_values])

    def run_rows(self, kern: RowKernel) -> np.ndarray:
        """Row kernel over all blocks (``map_blocks``)."""
        out = self.x.map_blocks(
            _rows_block,
            kern,
            dtype=np.float64,
            chunks=(self.x.chunks[0], (kern.n_out,)),
            meta=np.empty((0, 0)),
        )
        return np.asarray(out.compute())

    def run_col_counts(self) -> np.ndarray:
        """Stored values per gene, summed over blocks."""
        parts = self.x.map_blocks(
            _counts_block,
            self.n_cols,
            dtype=np.int64,
            chunks=((1,) * len(self.x.chunks[0]), (self.n_cols,)),
            meta=np.empty((0, 0), np.int64),
        )
        return np.asarray(parts.sum(axis=0).compute()).ravel()

    def run_fold(self, mode: int, target: float, dtype: np.dtype) -> np.ndarray:
        """Gene sums folded block after block (scanpy's row order)."""
        import dask

        acc = dask.delayed(np.zeros)(self.n_cols, dtype=dtype)
        for block in self.x.to_delayed().ravel():
            acc = dask.delayed(_fold_block)(acc, block, mode, target)
        return np.asarray(acc.compute())
