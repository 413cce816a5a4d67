"""Per-gene statistics of a store, cached beside it as ``<stem>.genestats.parquet``.

Scoring with scanpy's method needs every gene's mean over all cells (to bin genes for the control
sets) before any score: one extra pass over the store. The per-gene sums are therefore cached so
that later scoring runs read the store once; :func:`atlas.ingest.stage.ingest` writes them while it
writes the store, and :func:`atlas.score.score_store` writes them after a first pass when they are
missing or stale.

What the sidecar holds, per gene: ``sum`` of the values after the fused normalisation (counts per
``target_sum``, log1p), summed in scanpy's dtype and row order so that gene means - and so the
expression bins - are bit-identical to a fresh pass, and ``nnz``, its number of stored values
(AUCell's expressed genes). Its parquet metadata records the matrix (``X`` or ``layers/<name>``),
the normalisation and the store's fingerprint: file size and modification time (for a ``.zarr``
directory: the files of the matrix), shape, stored values and a hash of ``indptr``. A sidecar
whose record does not match is ignored (and replaced by the next full pass), so a stale cache is
never used; a sidecar that cannot be written (read-only folder) only costs the extra pass.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.layout import beside_store

logger = logging.getLogger(__name__)

__all__ = [
    "GeneStats",
    "GeneStatsAccumulator",
    "GeneStatsCache",
    "sidecar_path",
    "sparse_sum_dtype",
    "store_fingerprint",
]


@functools.cache
def sparse_sum_dtype() -> np.dtype:
    """The dtype ``sc.tl.score_genes`` sums a sparse float32 matrix's gene means in (the cached sums follow it).

    float64 with scanpy >= 1.12 (its one-pass nanmean) or, before, with SciPy >= 1.18 (``sum(dtype=float64)``
    accumulates in float64); float32 with scanpy 1.11 on older SciPy (summed in float32, then cast).
    """
    from importlib.metadata import version

    import scipy.sparse as sp

    major, minor = (int(v) for v in re.match(r"(\d+)\.(\d+)", version("scanpy")).groups())
    if (major, minor) >= (1, 12):
        return np.dtype(np.float64)
    tiny = np.float32(2.0**-24)  # lost when added to 1 in float32, kept in float64
    probe = sp.csr_matrix(np.array([[1.0], [tiny], [tiny]], np.float32)).sum(axis=0, dtype=np.float64)
    return np.dtype(np.float64 if float(probe[0, 0]) > 1.0 else np.float32)

_META_KEY = b"atlas.genestats"
_FORMAT = 1


@dataclass
class GeneStats:
    """Per-gene sums of normalised values (``sums``) and stored-value counts (``nnz``) of a matrix."""

    sums: np.ndarray | None
    nnz: np.ndarray | None
    n_cells: int
    mode: int  # normalisation mode of :mod:`atlas._kernels.cpu` the sums were taken under
    target_sum: float


def sidecar_path(store: str | os.PathLike, matrix: str = "X") -> Path:
    """``<stem>.genestats.parquet`` beside the store (``<stem>.<layer>.genestats.parquet`` for a layer)."""
    layer = "" if matrix == "X" else matrix.removeprefix("layers/").replace("/", "_") + "."
    return beside_store(store, f"{layer}genestats.parquet")


def store_fingerprint(store: str | os.PathLike, matrix: str = "X") -> dict[str, Any]:
    """What identifies the matrix's content without reading it (see the module docstring)."""
    store = Path(store)
    if store.is_dir():
        files = [f for f in (store / matrix).rglob("*") if f.is_file()]
        stats = [f.stat() for f in files]
        fp: dict[str, Any] = {
            "files": len(stats),
            "size": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
        }
    else:
        st = store.stat()
        fp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if store.is_dir():
        import zarr

        _structure(zarr.open_group(str(store), mode="r")[matrix], fp)
    else:
        import h5py

        with h5py.File(store, "r") as f:
            _structure(f[matrix], fp)
    return fp


def _structure(elem: Any, fp: dict[str, Any]) -> None:
    """Add the matrix's shape, stored values and ``indptr`` hash (sparse) or shape (dense) to ``fp``."""
    if hasattr(elem, "keys") and "indptr" in elem:
        indptr = np.ascontiguousarray(elem["indptr"][:], dtype=np.int64)
        fp["shape"] = [int(s) for s in elem.attrs["shape"]]
        fp["nnz"] = int(indptr[-1])
        fp["indptr_blake2b"] = hashlib.blake2b(indptr.tobytes(), digest_size=16).hexdigest()
    else:
        fp["shape"] = [int(s) for s in elem.shape]


class GeneStatsCache:
    """The sidecar of one store's matrix: cached statistics in, fresh ones out.

    Parameters
    ----------
    store
        The store's path.
    matrix
        ``"X"`` or ``"layers/<name>"``.
    """

    def __init__(self, store: str | os.PathLike, matrix: str = "X"):
        self.store = Path(store)
        self.matrix = matrix
        self.path = sidecar_path(store, matrix)
        self._fingerprint: dict[str, Any] | None = None
        self._loaded: GeneStats | None = None
        self._read = False

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The store's fingerprint, taken once (see :func:`store_fingerprint`)."""
        if self._fingerprint is None:
            self._fingerprint = store_fingerprint(self.store, self.matrix)
        return self._fingerprint

    def load(self) -> GeneStats | None:
        """The cached statistics when the sidecar exists and matches the store, else None."""
        if not self._read:
            self._read = True
            self._loaded = self._load(self.fingerprint)  # taken now, before any pass over the store
        return self._loaded

    def sums(self, mode: int, target_sum: float, dtype: np.dtype) -> np.ndarray | None:
        """Cached per-gene sums taken under this normalisation and dtype, or None."""
        st = self.load()
        if st is None or st.sums is None or st.mode != mode or st.target_sum != float(target_sum):
            return None
        return st.sums if st.sums.dtype == np.dtype(dtype) else None

    def nnz(self) -> np.ndarray | None:
        """Cached stored values per gene, or None."""
        st = self.load()
        return None if st is None else st.nnz

    def save(self, stats: GeneStats) -> Path | None:
        """Write the sidecar atomically; a failure is logged, never raised (it is only a cache).

        The store's fingerprint is the one taken when the cache was first consulted (before the
        pass that computed ``stats``), so a store changed during that pass leaves a stale sidecar.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..core.atomic import atomic_path

        cols: dict[str, Any] = {}
        if stats.sums is not None:
            cols["sum"] = pa.array(stats.sums)
        if stats.nnz is not None:
            cols["nnz"] = pa.array(np.asarray(stats.nnz, dtype=np.int64))
        meta = {
            "format": _FORMAT,
            "matrix": self.matrix,
            "n_cells": int(stats.n_cells),
            "mode": int(stats.mode),
            "target_sum": float(stats.target_sum),
            "store": self.fingerprint,
        }
        table = pa.table(cols).replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
        try:
            with atomic_path(self.path) as tmp:
                pq.write_table(table, tmp)
        except OSError as err:
            logger.warning(
                "could not write the gene statistics cache %s (%s); continuing without", self.path, err
            )
            return None
        self._loaded, self._read = stats, True
        logger.info("wrote per-gene statistics to %s", self.path)
        return self.path

    def _load(self, fingerprint: dict[str, Any]) -> GeneStats | None:
        import pyarrow.parquet as pq

        if not self.path.exists():
            return None
        try:
            table = pq.read_table(self.path)
            meta = json.loads((table.schema.metadata or {})[_META_KEY])
        except Exception as err:  # unreadable or foreign file: never trusted
            logger.warning("ignoring the gene statistics cache %s: %s", self.path, err)
            return None
        if meta.get("format") != _FORMAT or meta.get("matrix") != self.matrix:
            return None
        if meta.get("store") != fingerprint:
            logger.info("the gene statistics cache %s is stale (the store changed); ignoring it", self.path)
            return None
        names = table.column_names
        return GeneStats(
            sums=table.column("sum").to_numpy() if "sum" in names else None,
            nnz=table.column("nnz").to_numpy() if "nnz" in names else None,
            n_cells=int(meta["n_cells"]),
            mode=int(meta["mode"]),
            target_sum=float(meta["target_sum"]),
        )


class GeneStatsAccumulator:
    """Gene statistics of raw-count rows appended in order (what ingest writes beside the store).

    Sums are taken under the normalisation scoring applies to float32 counts by default (counts
    per ``target_sum``, log1p, scanpy's float32 rounding) in :func:`sparse_sum_dtype`, so ``score_store``
    finds them.

    Parameters
    ----------
    n_genes
        Columns of the rows to come.
    target_sum
        Counts per cell after normalisation.
    """

    def __init__(self, n_genes: int, target_sum: float = 1e4):
        from .._kernels.cpu import NORM_F32

        self.mode = NORM_F32
        self.target_sum = float(target_sum)
        self.sums = np.zeros(n_genes, sparse_sum_dtype())
        self.nnz = np.zeros(n_genes, np.int64)
        self.n_cells = 0

    def add(self, X) -> None:
        """Fold float32 CSR rows (the next rows of the store) into the statistics."""
        from .._kernels.cpu import fold_csr

        fold_csr(
            X.indptr.astype(np.int64), X.indices, X.data, self.mode, self.target_sum, self.sums, self.nnz
        )
        self.n_cells += X.shape[0]

    def result(self) -> GeneStats:
        """The statistics of every row added so far."""
        return GeneStats(self.sums, self.nnz, self.n_cells, self.mode, self.target_sum)
