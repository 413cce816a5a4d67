"""CPU executor: the scoring passes with the numba kernels, row chunk by row chunk, on host data.

Peer of :mod:`atlas.score.exec_gpu` (same functions, same signatures); :mod:`atlas.score.exec_dask`
runs either on each block. Non-finite values found by a kernel raise
:class:`~atlas.core.errors.AtlasError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from .rowkernel import RowKernel, dense_weights, order_keys, raise_bad
from .sources import RowSource

NAME = "cpu"
_ROW_BLOCK = 64
_SERIAL_BELOW = 4 * _ROW_BLOCK  # chunks of fewer rows run in one thread


def run_rows(src: RowSource, kern: RowKernel, chunk_size: int) -> np.ndarray:
    """``(n_rows, n_out)`` results of ``kern`` over all row chunks.

    Column-major, so each signature's scores are contiguous (a table column without a copy).
    """
    out = np.empty((src.n_rows, kern.n_out), order="F")
    prep = _prepare(kern)
    n_bad = 0
    for start, stop, indptr, indices, data in src.tracked_chunks(chunk_size, f"scoring ({kern.name})"):
        res, bad = _rows(kern, prep, indptr, indices, data)
        out[start:stop] = res
        n_bad += bad
    raise_bad(n_bad)
    return out


def run_fold(
    src: RowSource, chunk_size: int, mode: int, target: float, dtype, acc: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-gene sums over all cells, each gene summed in row order in ``dtype`` (continuing from a
    copy of ``acc`` when given), and the stored values per gene.

    Non-finite values are reported by the scoring pass that always follows.
    """
    sums = np.zeros(src.n_cols, dtype=dtype) if acc is None else np.array(acc, dtype=dtype)
    nnz = np.zeros(src.n_cols, np.int64)
    for _start, _stop, indptr, indices, data in src.tracked_chunks(chunk_size, "gene means"):
        fold_chunk(indptr, indices, data, mode, target, sums, nnz)
    return sums, nnz


def run_col_counts(src: RowSource, chunk_size: int) -> np.ndarray:
    """Stored values per gene over all cells (decoupler's test for an empty gene)."""
    from numba import get_num_threads

    from .._kernels import cpu

    counts = np.zeros(src.n_cols, np.int64)
    for _start, _stop, _indptr, indices, _data in src.chunks(chunk_size):
        counts += cpu.col_counts(indices, src.n_cols, max(1, get_num_threads()))
    return counts


def rows_chunk(kern: RowKernel, indptr, indices, data) -> tuple[np.ndarray, int]:
    """Run ``kern`` on one host CSR chunk (absolute int64 ``indptr``); returns ``(out, n_bad)``."""
    return _rows(kern, _prepare(kern), indptr, indices, data)


def fold_chunk(indptr, indices, data, mode: int, target: float, acc: np.ndarray, nnz: np.ndarray) -> None:
    """Fold one host CSR chunk into ``acc`` and ``nnz`` in place."""
    from .._kernels import cpu

    with _serial_if_few(indptr.shape[0] - 1):
        cpu.fold_csr(indptr, indices, data, mode, target, acc, nnz)


def _prepare(kern: RowKernel) -> tuple[np.ndarray, np.ndarray] | None:
    """What the CPU twin needs beyond ``kern`` (built once per pass): the dense weight table."""
    if kern.name != "weighted_sum":
        return None
    a = kern.arrays
    return dense_weights(a["w_indptr"], a["w_cols"], a["w_vals"], kern.n_out)


def _rows(kern: RowKernel, prep, indptr, indices, data) -> tuple[np.ndarray, int]:
    from .._kernels import cpu

    base = np.int64(indptr[0])
    a, p = kern.arrays, kern.params
    with _serial_if_few(indptr.shape[0] - 1):
        if kern.name == "weighted_sum":
            slot, table = prep
            return cpu.weighted_sum(
                indptr, base, indices, data, slot, table, p["mode"], p["target"], _ROW_BLOCK
            )
        vals, dkey = order_keys(data)
        max_nnz = int(np.diff(indptr).max()) if indptr.shape[0] > 1 else 0
        return cpu.rank_scores(
            indptr, base, indices, vals, dkey, a["tb"], a["tb_inv"], a["memb_indptr"], a["memb_cols"],
            kern.n_out, p["mode"], p["cap"], p["nvar"], max_nnz, _ROW_BLOCK,
        )  # fmt: skip


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
