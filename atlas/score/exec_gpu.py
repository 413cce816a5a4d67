"""GPU executor: the scoring passes with the CUDA kernels (cupy), row chunk by row chunk.

Peer of :mod:`atlas.score.exec_cpu` (same functions, same signatures, same results up to float64
rounding of the gene sums). Data already on the device (cupyx CSR) are processed in place in row
chunks. Host data (in memory or on disk) are streamed to the device in row chunks through pinned
buffers on two CUDA streams (:func:`atlas._kernels.gpu.stream_chunks`), so data larger than GPU
memory work and copies overlap compute. Imported only when the GPU backend runs.
"""

from __future__ import annotations

import logging

import numpy as np

from ..core.backend import get_cupy
from .rowkernel import RowKernel, raise_bad
from .sources import RowSource, plan_chunks

logger = logging.getLogger(__name__)
NAME = "gpu"


def _device_chunks(src: RowSource, chunk_size: int):
    from .._kernels.gpu import DeviceChunk, device_dtype

    cp = get_cupy()
    m = src._obj
    indptr = m.indptr.astype(cp.int64)
    host_ip = indptr.get()
    data = m.data if m.data.dtype == device_dtype(m.data.dtype) else m.data.astype(device_dtype(m.data.dtype))
    for start, stop in plan_chunks(host_ip, chunk_size):
        lo, hi = int(host_ip[start]), int(host_ip[stop])
        yield start, stop, DeviceChunk(indptr[start : stop + 1], lo, m.indices[lo:hi], data[lo:hi])


def _each_chunk(src: RowSource, chunk_size: int, work):
    """Yield ``(start, stop, host_result)`` for every chunk, streaming host data when needed."""
    from .._kernels.gpu import stream_chunks

    if src.kind == "device":
        for start, stop, ch in _device_chunks(src, chunk_size):
            res = work(ch)
            yield start, stop, (None if res is None else res.get())
    else:
        yield from stream_chunks(src.chunks(chunk_size), work)


def _device_arrays(kern: RowKernel) -> dict:
    cp = get_cupy()
    return {k: cp.asarray(v) for k, v in kern.arrays.items()}


def run_rows(src: RowSource, kern: RowKernel, chunk_size: int) -> np.ndarray:
    """``(n_rows, n_out)`` results of ``kern`` over all rows on the GPU (same results as the CPU twin)."""
    from .._kernels import gpu

    cp = get_cupy()
    out = np.empty((src.n_rows, kern.n_out), order="F")
    a = _device_arrays(kern)
    p = kern.params
    bads = []
    if kern.name == "rank":
        hit = cp.asarray(kern.arrays["cand_gene"])
        cand_tb = cp.asarray(kern.arrays["cand_tb"])

    def work(ch):
        if kern.name == "weighted_sum":
            res, bad = gpu.weighted_sum(
                ch,
                a["w_indptr"],
                a["w_cols"].astype(cp.int32),
                a["w_vals"],
                kern.n_out,
                p["mode"],
                p["target"],
            )
        else:
            res, bad = gpu.rank_scores(
                ch,
                a["tb"],
                a["memb_indptr"],
                a["memb_cols"].astype(cp.int32),
                kern.n_out,
                p["mode"],
                p["cap"],
                p["nvar"],
                hit,
                cand_tb,
            )
        bads.append(bad)
        return res

    for start, stop, res in _each_chunk(src, chunk_size, work):
        out[start:stop] = res
    raise_bad(int(sum(int(b.get()[0]) for b in bads)))
    return out


def run_fold(
    src: RowSource, chunk_size: int, mode: int, target: float, dtype, acc: np.ndarray | None = None
) -> tuple[np.ndarray, None]:
    """Per-gene sums in row order on the GPU (continuing from ``acc`` when given) and ``None``: the
    GPU does not count stored values. Chunks are folded strictly in order across streams."""
    from .._kernels import gpu

    cp = get_cupy()
    dtype = np.dtype(dtype)
    acc = cp.zeros(src.n_cols, dtype=dtype) if acc is None else cp.array(acc, dtype=dtype)
    bads = []
    state = {"event": None}

    def work(ch):
        stream = cp.cuda.get_current_stream()
        if state["event"] is not None:  # chunk k+1 folds only after chunk k (copies still overlap)
            stream.wait_event(state["event"])
        bads.append(gpu.gene_fold(ch, mode, target, acc, src.n_cols))
        state["event"] = stream.record()
        return None

    for _ in _each_chunk(src, chunk_size, work):
        pass
    cp.cuda.Device().synchronize()
    raise_bad(int(sum(int(b.get()[0]) for b in bads)))
    return acc.get(), None


def run_col_counts(src: RowSource, chunk_size: int) -> np.ndarray:
    """Stored values per gene over all cells, on the GPU."""
    cp = get_cupy()
    parts = []

    def work(ch):
        parts.append(cp.bincount(ch.indices, minlength=src.n_cols))
        return None

    for _ in _each_chunk(src, chunk_size, work):
        pass
    cp.cuda.Device().synchronize()
    total = np.zeros(src.n_cols, np.int64)
    for p in parts:
        total += p.get()
    return total
