"""Dask executor: row blocks scored where they live (``map_blocks``), the path beyond one machine.

A dask array of scipy CSR or numpy row blocks (host) or of cupyx CSR blocks (device) is scored block
by block by the executor it is given (:mod:`atlas.score.exec_cpu` or :mod:`atlas.score.exec_gpu`,
chosen once by :func:`atlas.score.executors.resolve_backend`), with the same signatures as they
have. Passes:

* row kernels (scores): ``map_blocks`` over row blocks, embarrassingly parallel;
* stored values per gene (AUCell): per-block counts summed;
* gene sums (scanpy method): a chain of tasks, block ``k`` folded into the running sums after block
  ``k-1``, because scanpy sums each gene in row order (the blocks are still read in parallel by
  the workers; only the 1-D running sums travel).

Works with any scheduler (threaded, ``distributed.Client``). On process workers the block functions,
the kernel and the executor module (by reference) are pickled, and each worker loads the numba kernels
from numba's cache; results equal in-process scoring bit for bit (tests/score/test_dask_cluster.py,
docs/multi_process.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..core.backend import is_device_array
from ..core.errors import AtlasError
from .rowkernel import RowKernel
from .sources import RowSource, as_source

logger = logging.getLogger(__name__)


def blocks_on_device(x: Any) -> bool:
    """Whether a dask array's blocks are cupy arrays (read from its meta; no block is computed)."""
    return is_device_array(getattr(x, "_meta", None))


def _block_source(block: Any) -> RowSource:
    """One block as a quiet :class:`RowSource` (host CSR canonicalised silently, as scipy sums it)."""
    if sp.issparse(block):
        block = block.tocsr()
        if not block.has_canonical_format:
            block = block.copy()
            block.sum_duplicates()
    src = as_source(block)
    src.quiet = True
    return src


def _first_values(block: Any, n_values: int) -> np.ndarray:
    if is_device_array(block):
        block = block.get()
    m = block.tocsr() if sp.issparse(block) else sp.csr_matrix(np.asarray(block))
    if not m.has_canonical_format:
        m = m.copy()
        m.sum_duplicates()
    return np.asarray(m.data[:n_values])


def _rows_block(block: Any, run_rows: Callable, kern: RowKernel, chunk_size: int) -> np.ndarray:
    return run_rows(_block_source(block), kern, chunk_size)


def _fold_block(
    acc: np.ndarray, block: Any, run_fold: Callable, chunk_size: int, mode: int, target: float, dtype
) -> np.ndarray:
    return run_fold(_block_source(block), chunk_size, mode, target, dtype, acc)[0]


def _counts_block(block: Any, run_col_counts: Callable, chunk_size: int) -> np.ndarray:
    return run_col_counts(_block_source(block), chunk_size)[None, :]


class DaskSource:
    """A dask array seen by :func:`atlas.score.score_matrix` (the passes are run by :class:`DaskExecutor`)."""

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
        return _first_values(self.x.blocks[0].compute(), n_values)


class DaskExecutor:
    """Runs every pass with dask; each block is run by ``blocks`` (:mod:`~atlas.score.exec_cpu` or
    :mod:`~atlas.score.exec_gpu`), with the same signatures as theirs."""

    def __init__(self, blocks: Any) -> None:
        self.blocks = blocks
        self.NAME = blocks.NAME

    def run_rows(self, src: DaskSource, kern: RowKernel, chunk_size: int) -> np.ndarray:
        """Row kernel over all blocks (``map_blocks``)."""
        out = src.x.map_blocks(
            _rows_block,
            self.blocks.run_rows,
            kern,
            chunk_size,
            dtype=np.float64,
            chunks=(src.x.chunks[0], (kern.n_out,)),
            meta=np.empty((0, 0)),
        )
        return np.asarray(out.compute())

    def run_fold(
        self, src: DaskSource, chunk_size: int, mode: int, target: float, dtype, acc: np.ndarray | None = None
    ) -> tuple[np.ndarray, None]:
        """Gene sums folded block after block (scanpy's row order); stored values are not counted."""
        import dask

        dtype = np.dtype(dtype)
        run = dask.delayed(np.zeros)(src.n_cols, dtype=dtype) if acc is None else np.array(acc, dtype=dtype)
        for block in src.x.to_delayed().ravel():
            run = dask.delayed(_fold_block)(run, block, self.blocks.run_fold, chunk_size, mode, target, dtype)
        return np.asarray(dask.compute(run)[0]), None

    def run_col_counts(self, src: DaskSource, chunk_size: int) -> np.ndarray:
        """Stored values per gene, summed over blocks."""
        parts = src.x.map_blocks(
            _counts_block,
            self.blocks.run_col_counts,
            chunk_size,
            dtype=np.int64,
            chunks=((1,) * len(src.x.chunks[0]), (src.n_cols,)),
            meta=np.empty((0, 0), np.int64),
        )
        return np.asarray(parts.sum(axis=0).compute()).ravel()
