"""Reading an ingested store (``.h5ad`` or ``.zarr``) in CSR row chunks, never all of ``X`` at once.

A 1,000,000-cell x 15,000-gene store holds ~1.6e9 stored values (~13 GB); integrate needs only
the HVG columns of it (~10 %), and the neutrophil sub-atlas only the neutrophils' rows. This
module reads the small parts of a store (obs, var, uns, obsm, varm) whole, and its matrix in row
chunks (:mod:`atlas.score.sources`: memory maps or read-ahead for h5ad, zarr slices), keeping
only the asked rows and columns. Peak memory is the result plus one chunk.

* :func:`read_store_subset` - an AnnData of some rows and genes (what ``ad.read_h5ad(path)[rows][:, genes]``
  gives, without reading the rest);
* :class:`Store` - an open store: :meth:`Store.frame` (everything but ``X``), :meth:`Store.chunks` and
  :meth:`Store.take` (a CSR of some rows and columns), for callers that stream the matrix themselves
  (the streaming HVGs of :mod:`atlas.integrate.hvg_stream`).

``layers``, ``obsp``, ``varp`` and ``raw`` are not read (ingest writes none; a store that has them gets a
warning). Local paths only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numba import njit

from ..core.errors import AtlasError, InputDataError

log = logging.getLogger(__name__)

#: rows per chunk (a chunk also stops at ``atlas.score.sources.MAX_CHUNK_NNZ`` stored values); at ~1,600 stored
#: values a cell, ~64 MB of data + indices, a few times that while zarr decodes it
CHUNK_ROWS = 5_000
_SMALL = ("obs", "var", "uns", "obsm", "varm")
_SKIPPED = ("layers", "obsp", "varp", "raw")


class Store:
    """An ingested store opened for chunked reading (a context manager; :meth:`close` releases the file)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise InputDataError(
                f"store {self.path} does not exist; run `atlas ingest` first or check the path"
            )
        try:
            if self.path.suffix == ".zarr" or self.path.is_dir():
                import zarr

                self._file = None
                self.root = zarr.open_group(str(self.path), mode="r")
            else:
                import h5py

                self._file = h5py.File(self.path, "r")
                self.root = self._file
            self.x = self.root["X"]
            self._source = _row_source(self.x)
        except AtlasError:
            self.close()
            raise
        except Exception as e:  # h5py / zarr errors on a corrupt or foreign file
            self.close()
            raise InputDataError(f"cannot read store {self.path} as AnnData: {e}") from e
        self.n_obs, self.n_vars = self._source.n_rows, self._source.n_cols
        self.dtype = self._source.dtype

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (h5ad); a zarr store holds no open handle."""
        f, self._file = getattr(self, "_file", None), None
        if f is not None:
            f.close()

    def measured(self):
        """Ingest's record of which data set measured which gene (``varm["measured"]``, genes x data sets, indexed
        by the store's genes), read alone; None for a store without one."""
        from anndata.io import read_elem

        if "varm" not in self.root or "measured" not in self.root["varm"]:
            return None
        record = read_elem(self.root["varm"]["measured"])
        record.index = read_elem(self.root["var"]).index
        return record

    def frame(self):
        """The store without ``X``: an AnnData with obs, var, uns, obsm and varm (``X`` is ``None``)."""
        import anndata as ad
        from anndata.io import read_elem

        try:
            parts = {k: read_elem(self.root[k]) for k in _SMALL if k in self.root}
        except Exception as e:  # noqa: BLE001 - a corrupt element: name the store
            raise InputDataError(f"cannot read the obs/var/uns of store {self.path}: {e}") from e
        skipped = [k for k in _SKIPPED if k in self.root and _holds_data(self.root[k])]
        if skipped:
            log.warning("store %s: %s not read (only X, obs, var, uns, obsm, varm are)", self.path, skipped)
        obs, var = parts.pop("obs"), parts.pop("var")
        if obs.shape[0] != self.n_obs or var.shape[0] != self.n_vars:
            raise InputDataError(
                f"store {self.path}: X is {self.n_obs} x {self.n_vars} but obs has {obs.shape[0]} rows and var "
                f"{var.shape[0]}; the store is damaged: ingest it again"
            )
        return ad.AnnData(obs=obs, var=var, **{k: v for k, v in parts.items() if v is not None})

    def chunks(self, chunk_size: int = CHUNK_ROWS, rows: np.ndarray | None = None) -> Iterator[tuple]:
        """CSR row chunks ``(start, stop, indptr, indices, data)`` in store order (``indptr`` absolute, int64).

        With ``rows`` (sorted store positions), only chunks holding some of them are read, each cut
        to the span from its first to its last asked row. A chunk's arrays are valid until the next.
        """
        from ..score.sources import plan_chunks

        src = self._source
        if src.kind != "group":  # a dense matrix on disk: the source converts chunk by chunk
            for chunk in src.chunks(chunk_size):
                if rows is None or _any_between(rows, chunk[0], chunk[1]):
                    yield chunk
            return
        ip = src._indptr
        plan = plan_chunks(ip, chunk_size)
        if rows is not None:
            plan = _restrict(plan, rows)
        if type(self.x).__module__.startswith("h5py"):
            from ..score.h5rows import h5_csr_chunks

            yield from h5_csr_chunks(self.x, ip, plan)
            return
        for start, stop in plan:
            lo, hi = int(ip[start]), int(ip[stop])
            yield start, stop, ip[start : stop + 1], self.x["indices"][lo:hi], self.x["data"][lo:hi]

    def take(
        self,
        rows: np.ndarray | None = None,
        cols: np.ndarray | None = None,
        *,
        chunk_size: int = CHUNK_ROWS,
        nnz: int | None = None,
        dtype: Any = np.float32,
    ) -> sp.csr_matrix:
        """The CSR matrix of store rows ``rows`` and columns ``cols`` (positions, in the order given).

        ``nnz``, when the caller knows how many stored values the result holds (the streaming HVGs
        count them per gene), lets the result be filled in place: peak memory is then the result plus
        one chunk; without it, the kept values of each chunk are gathered and joined at the end.
        """
        rows = np.arange(self.n_obs) if rows is None else np.asarray(rows, dtype=np.int64)
        ordered = rows.size == 0 or bool(np.all(np.diff(rows) > 0))
        urows, inverse = (rows, None) if ordered else np.unique(rows, return_inverse=True)
        colmap = np.full(self.n_vars, -1, dtype=np.int64)
        if cols is None:
            colmap[:] = np.arange(self.n_vars)
            n_cols, monotone = self.n_vars, True
        else:
            cols = np.asarray(cols, dtype=np.int64)
            if np.unique(cols).size != cols.size:
                raise InputDataError(f"store {self.path}: the genes asked for hold duplicates")
            colmap[cols] = np.arange(cols.size)
            n_cols, monotone = cols.size, bool(np.all(np.diff(cols) > 0))
        sink = _Sink(urows.size, nnz, np.dtype(dtype), self.path)
        for start, stop, ip, ind, dat in self.chunks(chunk_size, urows):
            lo, hi = np.searchsorted(urows, [start, stop])
            local = urows[lo:hi] - start
            if local.size:
                sink.add(np.asarray(ip, dtype=np.int64), ind, dat, local, colmap, monotone)
        x = sink.result(n_cols)
        return x if inverse is None else x[inverse]


def read_store_subset(
    path: str | Path,
    genes: Sequence | np.ndarray | None = None,
    rows: Sequence | np.ndarray | None = None,
    chunk_size: int = CHUNK_ROWS,
    *,
    nnz: int | None = None,
):
    """The store's ``rows`` x ``genes`` in memory, read by row chunks (never the whole matrix).

    Parameters
    ----------
    path
        An ingested ``.h5ad`` or ``.zarr`` store (local).
    genes, rows
        var names / obs names, integer positions or boolean masks; ``None`` keeps all. The result
        follows the order given.
    chunk_size
        Rows read at a time.
    nnz
        Stored values of the result, when known (fills it in place: lower peak memory).

    Returns
    -------
    AnnData equal to ``ad.read_h5ad(path)[rows][:, genes]`` (``read_zarr`` for zarr) with ``X`` a canonical
    float32 CSR, obs/var/uns/obsm/varm as stored (layers, obsp, varp and raw are not read).

    Raises
    ------
    InputDataError
        A missing or unreadable store, or names that are not in it.
    """
    with Store(path) as store:
        light = store.frame()
        rpos = positions(rows, light.obs_names, "cells", path)
        gpos = positions(genes, light.var_names, "genes", path)
        x = store.take(rpos, gpos, chunk_size=chunk_size, nnz=nnz)
    out = _subset(light, rpos, gpos)
    out.X = x
    return out


def read_store_frame(path: str | Path):
    """The store without ``X`` (obs, var, uns, obsm, varm): what the checks and the HVG plan need."""
    with Store(path) as store:
        return store.frame()


def positions(which, index: pd.Index, what: str, path: str | Path) -> np.ndarray | None:
    """Integer positions in ``index`` of names, positions or a boolean mask (``None`` stays ``None``)."""
    if which is None:
        return None
    arr = np.asarray(which)
    if arr.dtype == bool:
        if arr.shape != (len(index),):
            raise InputDataError(f"store {path}: a mask of {arr.size} {what} for {len(index)}")
        return np.flatnonzero(arr)
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < -len(index) or arr.max() >= len(index)):
            raise InputDataError(f"store {path}: {what} positions out of range (it holds {len(index)})")
        return np.where(arr < 0, arr + len(index), arr).astype(np.int64)
    if not index.is_unique:
        pos = np.asarray([index.get_loc(n) if n in index else -1 for n in arr], dtype=np.int64)
    else:
        pos = index.get_indexer(pd.Index(arr.astype(str)))
    if (pos < 0).any():
        missing = arr[pos < 0]
        raise InputDataError(
            f"{int(missing.size)} {what} are not in the store {path} (e.g. {', '.join(map(str, missing[:3]))}); "
            f"was it replaced after the run that names them? Run the stages after ingest again"
        )
    return pos.astype(np.int64)


def _subset(light, rpos, gpos):
    """``light[rpos][:, gpos]`` as an actual AnnData (anndata's own subsetting: categories are tidied)."""
    if rpos is None and gpos is None:
        return light
    view = light
    if rpos is not None:
        view = view[rpos]
    if gpos is not None:
        view = view[:, gpos]
    return view.copy()


def _row_source(x: Any):
    """``X`` as a :class:`~atlas.score.sources.RowSource`; a CSC matrix is refused (it cannot be read by rows)."""
    from ..score.sources import as_source

    try:
        return as_source(x)
    except AtlasError as e:
        raise InputDataError(f"the store's X cannot be read by rows: {e}") from e


def _holds_data(elem: Any) -> bool:
    """False for an empty group and for anndata's ``null`` placeholder (how ``raw=None`` may be stored)."""
    if elem.attrs.get("encoding-type", "") == "null":
        return False
    return len(elem) > 0 if hasattr(elem, "keys") else True


def _any_between(rows: np.ndarray, start: int, stop: int) -> bool:
    lo, hi = np.searchsorted(rows, [start, stop])
    return bool(hi > lo)


def _restrict(plan: list[tuple[int, int]], rows: np.ndarray) -> list[tuple[int, int]]:
    """The chunks of ``plan`` holding some of the sorted ``rows``, each cut to its first..last such row."""
    out = []
    for start, stop in plan:
        lo, hi = np.searchsorted(rows, [start, stop])
        if hi > lo:
            out.append((int(rows[lo]), int(rows[hi - 1]) + 1))
    return out


class _Sink:
    """The result's CSR arrays, filled chunk by chunk (in place when the total is known)."""

    def __init__(self, n_rows: int, nnz: int | None, dtype: np.dtype, path: Path):
        self.n_rows, self.nnz, self.dtype, self.path = n_rows, nnz, dtype, path
        self.counts = np.zeros(n_rows, dtype=np.int64)
        self.row = 0
        self.at = 0
        if nnz is not None:
            idx = np.int32 if nnz < 2**31 else np.int64
            self.indices, self.data = np.empty(nnz, dtype=idx), np.empty(nnz, dtype=dtype)
        else:
            self.pieces: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, ip, ind, dat, local, colmap, monotone: bool) -> None:
        counts = self.counts[self.row : self.row + local.size]
        _count_kept(ip, ind, local, colmap, counts)
        total = int(counts.sum())
        if self.nnz is None:
            indices, data, at = np.empty(total, dtype=np.int32), np.empty(total, dtype=self.dtype), 0
        else:
            if self.at + total > self.nnz:
                raise InputDataError(
                    f"store {self.path}: more stored values than counted; was it changed meanwhile?"
                )
            indices, data, at = self.indices, self.data, self.at
        _take_kept(ip, ind, dat, local, colmap, counts, indices, data, at, monotone)
        if self.nnz is None:
            self.pieces.append((indices, data))
        self.at += total
        self.row += local.size

    def result(self, n_cols: int) -> sp.csr_matrix:
        if self.nnz is None:
            idx = np.int32 if self.at < 2**31 else np.int64
            indices = np.empty(self.at, dtype=idx)
            data = np.empty(self.at, dtype=self.dtype)
            at = 0
            while self.pieces:  # join, releasing each piece as soon as it is copied
                i, d = self.pieces.pop(0)
                indices[at : at + i.size], data[at : at + d.size] = i, d
                at += i.size
        else:
            if self.at != self.nnz:
                raise InputDataError(
                    f"store {self.path}: fewer stored values than counted; was it changed meanwhile?"
                )
            indices, data = self.indices, self.data
        indptr = np.zeros(self.n_rows + 1, dtype=indices.dtype)
        np.cumsum(self.counts, out=indptr[1:])
        x = sp.csr_matrix((data, indices, indptr), shape=(self.n_rows, n_cols))
        x.has_sorted_indices = True
        return x


@njit(cache=True, nogil=True)
def _count_kept(ip, ind, local, colmap, counts):  # pragma: no cover - numba
    base = ip[0]
    for k in range(local.shape[0]):
        r = local[k]
        n = 0
        for j in range(ip[r] - base, ip[r + 1] - base):
            if colmap[ind[j]] >= 0:
                n += 1
        counts[k] = n


@njit(cache=True, nogil=True)
def _take_kept(
    ip, ind, dat, local, colmap, counts, out_ind, out_dat, at, monotone
):  # pragma: no cover - numba
    base = ip[0]
    for k in range(local.shape[0]):
        r = local[k]
        first = at
        for j in range(ip[r] - base, ip[r + 1] - base):
            c = colmap[ind[j]]
            if c >= 0:
                out_ind[at] = c
                out_dat[at] = dat[j]
                at += 1
        if not monotone and at - first > 1:  # genes asked in another order than var's: sort the row
            order = np.argsort(out_ind[first:at], kind="mergesort")
            out_ind[first:at] = out_ind[first:at][order]
            out_dat[first:at] = out_dat[first:at][order]
        counts[k] = at - first
