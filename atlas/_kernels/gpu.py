"""GPU launchers for the CUDA kernels, and host-to-device streaming of row chunks.

Each launcher takes one CSR chunk already on the device (:class:`DeviceChunk`) and mirrors a CPU
twin in :mod:`atlas._kernels.cpu` with the same arguments and results. :func:`stream_chunks`
moves host chunks to the device through pinned buffers on two CUDA streams, so the copy of chunk
``k+1`` overlaps the kernels of chunk ``k``; the bytes moved are logged.

Only imported when the GPU backend runs (it imports cupy at the top).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import cupy as cp
import numpy as np

from ..core.errors import AtlasError
from . import load_module

logger = logging.getLogger(__name__)

_CTYPE = {
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.int32): "int",
    np.dtype(np.int64): "long long",
}
_MAX_SHARED = 48 * 1024


@dataclass
class DeviceChunk:
    """Rows of a CSR matrix on the device: absolute int64 ``indptr`` and the entry ``base``."""

    indptr: cp.ndarray
    base: int
    indices: cp.ndarray
    data: cp.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0] - 1)


def device_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a value array is given to the kernels in (float16 -> float32, small ints -> int32)."""
    dtype = np.dtype(dtype)
    if dtype in _CTYPE:
        return dtype
    if dtype.kind == "f":
        return np.dtype(np.float32)
    if dtype.kind in "iub" and dtype.itemsize <= 2:
        return np.dtype(np.int32)
    return np.dtype(np.int64) if dtype.kind in "iu" else np.dtype(np.float64)


def name_expressions() -> dict[str, tuple[str, ...]]:
    """Every kernel instantiation the launchers may compile (also used by the nvcc test)."""
    idx = ("int", "long long")
    vals = tuple(_CTYPE.values())
    return {
        "weighted_sum": tuple(f"weighted_sum<{t}, {i}>" for t in vals for i in idx),
        "gene_fold": tuple(f"row_scale<{t}>" for t in vals)
        + tuple(f"gene_fold<{t}, {a}>" for t in vals for a in ("float", "double")),
        "rank_score": tuple(f"rank_scores<{t}, {i}>" for t in vals for i in idx),
    }


def _kernel(module: str, expr: str):
    return load_module(module, (expr,)).get_function(expr)


def _grid(n: int, per_block: int) -> int:
    dev = cp.cuda.Device()
    n_sm = dev.attributes["MultiProcessorCount"]
    return int(max(1, min((n + per_block - 1) // per_block, n_sm * 32)))


def weighted_sum(ch: DeviceChunk, w_indptr, w_cols, w_vals, n_out: int, mode: int, target: float):
    """Device twin of :func:`atlas._kernels.cpu.weighted_sum`; returns ``(out, bad)`` on the device."""
    if n_out * 8 > _MAX_SHARED:
        raise AtlasError(f"{n_out} score columns exceed what one GPU pass holds (at most {_MAX_SHARED // 8})")
    warps = max(1, min(8, _MAX_SHARED // (8 * max(n_out, 1))))
    out = cp.zeros((ch.n_rows, n_out), dtype=cp.float64)
    bad = cp.zeros(1, dtype=cp.uint64)
    if ch.n_rows == 0:
        return out, bad
    expr = f"weighted_sum<{_CTYPE[ch.data.dtype]}, {_CTYPE[ch.indices.dtype]}>"
    kern = _kernel("weighted_sum", expr)
    kern(
        (_grid(ch.n_rows, warps),),
        (32 * warps,),
        (
            ch.indptr,
            np.int64(ch.base),
            ch.indices,
            ch.data,
            np.int64(ch.n_rows),
            w_indptr,
            w_cols,
            w_vals,
            np.int32(n_out),
            np.int32(mode),
            np.float64(target),
            out,
            bad,
        ),
        shared_mem=warps * n_out * 8,
    )
    return out, bad


def gene_fold(ch: DeviceChunk, mode: int, target: float, acc, n_cols: int):
    """Device twin of :func:`atlas._kernels.cpu.gene_fold`: adds into ``acc`` in place; returns bad."""
    bad = cp.zeros(1, dtype=cp.uint64)
    n = ch.n_rows
    if n == 0 or ch.data.shape[0] == 0:
        return bad
    t = _CTYPE[ch.data.dtype]
    scale = cp.empty(n, dtype=cp.float64)
    _kernel("gene_fold", f"row_scale<{t}>")(
        (_grid(n, 8),),
        (256,),
        (ch.indptr, np.int64(ch.base), ch.data, np.int64(n), np.int32(mode), np.float64(target), scale),
    )
    nnz = int(ch.data.shape[0])
    pos = cp.arange(nnz, dtype=cp.int64)
    row_of = (cp.searchsorted(ch.indptr - ch.base, pos, side="right") - 1).astype(cp.int32)
    # sort by (gene, position): row order is kept within each gene whatever the sort's stability
    perm = cp.argsort(ch.indices.astype(cp.int64) * nnz + pos)
    seg = cp.zeros(n_cols + 1, dtype=cp.int64)
    seg[1:] = cp.cumsum(cp.bincount(ch.indices, minlength=n_cols))
    a = "float" if acc.dtype == cp.float32 else "double"
    _kernel("gene_fold", f"gene_fold<{t}, {a}>")(
        (_grid(n_cols, 128),),
        (128,),
        (
            seg,
            perm.astype(cp.int64, copy=False),
            row_of,
            ch.data,
            scale,
            np.int32(mode),
            np.int64(n_cols),
            acc,
            bad,
        ),
    )
    return bad


def rank_scores(
    ch: DeviceChunk,
    tb,
    memb_indptr,
    memb_cols,
    n_out: int,
    mode: int,
    cap: int,
    nvar: int,
    cand_gene,
    cand_tb,
):
    """Device twin of :func:`atlas._kernels.cpu.rank_scores`; returns ``(out, bad)`` on the device."""
    if n_out * 8 > _MAX_SHARED:
        raise AtlasError(f"{n_out} signatures exceed what one GPU pass holds (at most {_MAX_SHARED // 8})")
    out = cp.zeros((ch.n_rows, n_out), dtype=cp.float64)
    bad = cp.zeros(1, dtype=cp.uint64)
    if ch.n_rows == 0:
        return out, bad
    expr = f"rank_scores<{_CTYPE[ch.data.dtype]}, {_CTYPE[ch.indices.dtype]}>"
    _kernel("rank_score", expr)(
        (_grid(ch.n_rows, 1),),
        (128,),
        (
            ch.indptr,
            np.int64(ch.base),
            ch.indices,
            ch.data,
            np.int64(ch.n_rows),
            tb,
            memb_indptr,
            memb_cols,
            np.int32(n_out),
            np.int32(mode),
            np.int64(cap),
            np.int64(nvar),
            cand_gene,
            cand_tb,
            np.int64(cand_gene.shape[0]),
            out,
            bad,
        ),
        shared_mem=n_out * 8,
    )
    return out, bad


def _pinned(shape: int, dtype) -> np.ndarray:
    import cupyx

    return cupyx.empty_pinned((max(int(shape), 1),), dtype=dtype)


class _Slot:
    """Pinned host staging + a CUDA stream for one of the two pipeline slots."""

    def __init__(self) -> None:
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.bufs: dict[str, np.ndarray] = {}
        self.pending = None

    def stage(self, name: str, arr: np.ndarray) -> cp.ndarray:
        """Copy ``arr`` into this slot's pinned buffer and start an async upload on its stream."""
        buf = self.bufs.get(name)
        if buf is None or buf.shape[0] < arr.shape[0] or buf.dtype != arr.dtype:
            buf = self.bufs[name] = _pinned(max(arr.shape[0], 1), arr.dtype)
        view = buf[: arr.shape[0]]
        np.copyto(view, arr)
        dev = cp.empty(arr.shape[0], dtype=arr.dtype)
        dev.set(view, stream=self.stream)
        return dev


def stream_chunks(
    chunks: Iterable[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]],
    work: Callable[[DeviceChunk], cp.ndarray | None],
) -> Iterator[tuple[int, int, np.ndarray | None]]:
    """Upload host CSR chunks on two alternating streams and run ``work`` on each.

    ``chunks`` yields ``(start, stop, indptr, indices, data)`` with the chunk's absolute int64
    ``indptr``. ``work`` launches kernels (on the current stream) and returns a device array of
    per-row results or ``None``. Yields ``(start, stop, host_result)`` in order; while the kernels of
    one chunk run on one stream, the next chunk is copied on the other.
    """
    from collections import deque

    slots = [_Slot(), _Slot()]
    order: deque[_Slot] = deque()
    moved = 0

    def finish(slot: _Slot):
        slot.stream.synchronize()
        start, stop, res = slot.pending
        slot.pending = None
        return start, stop, (None if res is None else res.get())

    for k, (start, stop, indptr, indices, data) in enumerate(chunks):
        slot = slots[k % 2]
        if slot.pending is not None:  # the chunk from two steps back: free its buffers first
            yield finish(order.popleft())
        data = data.astype(device_dtype(data.dtype), copy=False)
        with slot.stream:
            d_indptr = slot.stage("indptr", np.ascontiguousarray(indptr, dtype=np.int64))
            d_indices = slot.stage("indices", np.ascontiguousarray(indices))
            d_data = slot.stage("data", np.ascontiguousarray(data))
            moved += indptr.nbytes + indices.nbytes + data.nbytes
            res = work(DeviceChunk(d_indptr, int(indptr[0]), d_indices, d_data))
        slot.pending = (start, stop, res)
        order.append(slot)
    while order:
        yield finish(order.popleft())
    logger.info("moved %.1f MB host -> device in row chunks", moved / 1e6)
