"""Reading CSR row chunks of an ``.h5ad`` matrix fast, bypassing h5py where the layout allows.

A scoring pass reads every stored value once, so reading must not cost more than the kernels.
When ``data`` and ``indices`` are stored plainly (no filters such as compression, native byte
order, every chunk allocated; a file opened with HDF5's default driver and no user block), their
values are runs of raw bytes at known file offsets (:func:`extents`: one run for a contiguous
dataset; for a chunked one, what ``anndata`` and ``atlas ingest`` write, one run per group of
HDF5 chunks that follow each other in the file). Then:

* row chunks are cut so that none crosses the end of a run, and each is handed to the kernels as
  read-only memory maps of the file (no copy; pages come from the page cache), unmapped once the
  chunk is done so memory stays bounded, with the next chunk announced by ``MADV_WILLNEED`` so
  the OS reads ahead from disk meanwhile;
* the few rows whose values straddle two runs are read with ``os.preadv`` into a small buffer and
  yielded as chunks of their own.

Otherwise chunks are read with h5py's ``read_direct`` into two reusable buffers, the next chunk on
a background thread while the current one is scored (the numba kernels release the GIL). Each
yielded chunk is valid until the next one is requested.
"""

from __future__ import annotations

import logging
import mmap
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_MAX_EXTENTS = 1 << 20  # beyond this many HDF5 chunks h5py reads them (the table would be too big)


def extents(dset: Any) -> np.ndarray | None:
    """Runs ``[first element, end element, byte offset]`` of a 1-D dataset stored plainly in its file.

    ``None`` when the values cannot be read as raw bytes: filters (compression), a non-native
    byte order, unallocated chunks, or too many chunks. Adjacent chunks are merged.
    """
    dt = dset.dtype
    if dset.ndim != 1 or not dt.isnative or dt.kind not in "iuf":
        return None
    dsid = dset.id
    n = dset.shape[0]
    if dset.chunks is None:
        off = dsid.get_offset()
        if off is None:
            return None if n else np.zeros((0, 3), np.int64)
        return np.array([[0, n, off]], dtype=np.int64)
    if dsid.get_create_plist().get_nfilters() or dsid.get_num_chunks() > _MAX_EXTENTS:
        return None
    step = dset.chunks[0]
    rows = []
    dsid.chunk_iter(lambda info: rows.append((info.chunk_offset[0], info.byte_offset, info.size)))
    if not rows:
        return None if n else np.zeros((0, 3), np.int64)
    t = np.array(sorted(rows), dtype=np.int64)
    start, off, size = t[:, 0], t[:, 1], t[:, 2]
    stop = np.minimum(start + step, n)
    if len(t) * step < n or np.any(size < (stop - start) * dt.itemsize) or np.any(start[1:] != stop[:-1]):
        return None  # unallocated chunks (fill values) or an unexpected layout
    # merge chunks that follow each other in the file
    new = np.ones(len(t), dtype=bool)
    new[1:] = off[1:] != off[:-1] + (stop[:-1] - start[:-1]) * dt.itemsize
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(t)) - 1
    return np.stack([start[first], stop[last], off[first]], axis=1)


class _Array:
    """One dataset's reader: raw-byte extents when available, else h5py."""

    def __init__(self, dset: Any, path: str, fd: int | None):
        self.dset = dset
        self.dtype = np.dtype(dset.dtype)
        self.ext = extents(dset) if fd is not None else None
        self.fd = fd
        self.path = path

    def window(self, lo: int, hi: int) -> np.ndarray:
        """A read-only memory map of elements ``[lo, hi)``, which must lie in one extent."""
        if hi <= lo:
            return np.empty(0, self.dtype)
        size = self.dtype.itemsize
        k = int(np.searchsorted(self.ext[:, 1], lo, side="right"))
        e0, e1, off = (int(v) for v in self.ext[k])
        if hi > e1:  # pragma: no cover - the chunk plan never asks for this
            raise ValueError(f"elements {lo}:{hi} cross the end of a stored run at {e1}")
        start = off + (lo - e0) * size
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        mm = mmap.mmap(self.fd, start - aligned + (hi - lo) * size, access=mmap.ACCESS_READ, offset=aligned)
        return np.frombuffer(mm, self.dtype, hi - lo, start - aligned)

    def read_into(self, buf: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Elements ``[lo, hi)`` copied into ``buf`` (from the extents, or through h5py)."""
        out = buf[: hi - lo]
        if hi <= lo:
            return out
        if self.ext is None:
            self.dset.read_direct(out, np.s_[lo:hi], np.s_[0 : hi - lo])
            return out
        size = self.dtype.itemsize
        k = int(np.searchsorted(self.ext[:, 1], lo, side="right"))
        view = memoryview(out.view(np.uint8))
        pos = lo
        while pos < hi:
            e0, e1, off = (int(v) for v in self.ext[k])
            end = min(hi, e1)
            want = (end - pos) * size
            got = os.preadv(self.fd, [view[(pos - lo) * size : (end - lo) * size]], off + (pos - e0) * size)
            if got != want:
                raise OSError(f"short read from {self.path} ({got} of {want} bytes)")
            pos = end
            k += 1
        return out


def _advise(arr: np.ndarray) -> None:
    """Ask the OS to read a mapped window ahead (a no-op for other arrays)."""
    mm = getattr(arr.base, "obj", None)
    if isinstance(mm, mmap.mmap) and hasattr(mmap, "MADV_WILLNEED"):
        mm.madvise(mmap.MADV_WILLNEED)


def h5_csr_chunks(group: Any, indptr: np.ndarray, plan: list[tuple[int, int]]) -> Iterator[tuple]:
    """Yield ``(start, stop, indptr, indices, data)`` row chunks covering ``plan``'s ``(start, stop)``.

    ``group`` is the h5py group of a CSR matrix and ``indptr`` its full int64 row pointer. Planned
    chunks may be cut further (see the module docstring).
    """
    f = group.file
    path = f.filename
    fd = None
    if f.driver in ("sec2", "stdio") and f.userblock_size == 0:  # byte offsets are file offsets
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            fd = None
    try:
        arrays = [_Array(group["indices"], path, fd), _Array(group["data"], path, fd)]
        if all(a.ext is not None for a in arrays):
            yield from _mapped(arrays, indptr, _cut(plan, indptr, arrays))
        else:
            spans = [(start, stop, int(indptr[start]), int(indptr[stop])) for start, stop in plan]
            yield from _buffered(arrays, indptr, spans)
    finally:
        if fd is not None:
            os.close(fd)


def _cut(plan: list[tuple[int, int]], indptr: np.ndarray, arrays: list[_Array]) -> list[tuple]:
    """``(start, stop, lo, hi, mapped)`` pieces of the plan: none crosses the end of a stored run.

    A row straddling a run's end becomes a piece of its own with ``mapped=False`` (copied).
    """
    ends = np.unique(np.concatenate([a.ext[:-1, 1] for a in arrays]))
    out = []
    for start, stop in plan:
        lo, hi = int(indptr[start]), int(indptr[stop])
        inner = ends[(ends > lo) & (ends < hi)]
        cuts = {start, stop}
        copied = set()
        for e in inner:
            r = int(np.searchsorted(indptr, e, side="right")) - 1  # the row holding element e
            cuts.add(r)
            if indptr[r] < e:  # e falls inside row r: copy that row
                copied.add(r)
                cuts.add(r + 1)
        bounds = sorted(c for c in cuts if start <= c <= stop)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            out.append((a, b, int(indptr[a]), int(indptr[b]), a not in copied))
    return out


def _mapped(arrays: list[_Array], indptr: np.ndarray, pieces: list[tuple]) -> Iterator[tuple]:
    def views(piece: tuple) -> list[np.ndarray]:
        _, _, lo, hi, mapped = piece
        if mapped:
            return [a.window(lo, hi) for a in arrays]
        return [a.read_into(np.empty(hi - lo, a.dtype), lo, hi) for a in arrays]

    nxt = None
    for k, piece in enumerate(pieces):
        cur = nxt or views(piece)
        nxt = None
        if k + 1 < len(pieces):
            nxt = views(pieces[k + 1])
            for w in nxt:
                _advise(w)
        start, stop = piece[0], piece[1]
        yield start, stop, indptr[start : stop + 1], cur[0], cur[1]
        del cur


def _buffered(arrays: list[_Array], indptr: np.ndarray, spans: list[tuple]) -> Iterator[tuple]:
    longest = max((hi - lo for _, _, lo, hi in spans), default=0)
    free: queue.Queue = queue.Queue()
    for _ in range(2):
        free.put([np.empty(max(longest, 1), a.dtype) for a in arrays])
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop_flag = threading.Event()

    def reader() -> None:
        try:
            for start, stop, lo, hi in spans:
                bufs = free.get()
                if stop_flag.is_set():
                    return
                ready.put(
                    (start, stop, [a.read_into(b, lo, hi) for a, b in zip(arrays, bufs, strict=True)], bufs)
                )
            ready.put(None)
        except BaseException as err:  # handed to the consumer
            ready.put(err)

    th = threading.Thread(target=reader, name="atlas-h5-reader", daemon=True)
    th.start()
    held = None
    try:
        while True:
            item = ready.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            if held is not None:
                free.put(held)
            start, stop, (indices, data), held = item
            yield start, stop, indptr[start : stop + 1], indices, data
    finally:
        stop_flag.set()
        free.put([np.empty(1, a.dtype) for a in arrays])  # unblock the reader if it waits
        while th.is_alive():
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        th.join()
