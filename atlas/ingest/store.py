"""The on-disk AnnData store that ingest writes (``.h5ad`` or ``.zarr``), chunk by chunk.

:class:`StoreWriter` creates the store's ``X`` as an empty CSR matrix (float32 data, int32
indices, int64 indptr, so more than 2^31 non-zeros fit) and grows it with
:meth:`anndata.abc.CSRDataset.append`; obs, var, varm and uns are written at the end with
:func:`anndata.io.write_elem`. Only the chunk being appended is ever in memory.

:class:`PartFile` is a temporary per-data-set CSR file used when a second pass over a data set's
cells is needed (doublet detection per sample).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

__all__ = ["PartFile", "StoreWriter", "finalize_obs", "store_format"]

_CHUNK_ELEMS = 1 << 20  # on-disk chunk of data/indices/indptr (elements)


def store_format(path: str | Path) -> str:
    """``'zarr'`` for a ``.zarr`` path, else ``'h5ad'``.

    Parameters
    ----------
    path
        The store's path.
    """
    return "zarr" if Path(path).suffix.lower() == ".zarr" else "h5ad"


def _create_csr(group, key: str, n_cols: int, chunk_elems: int = _CHUNK_ELEMS):
    """Write an empty, growable CSR matrix at ``group[key]`` and return its backed dataset."""
    from anndata.io import sparse_dataset, write_elem

    empty = sp.csr_matrix(
        (np.empty(0, np.float32), np.empty(0, np.int32), np.zeros(1, np.int32)), shape=(0, n_cols)
    )
    kwargs = {"indptr_dtype": "int64", "chunks": (chunk_elems,)}
    write_elem(group, key, empty, dataset_kwargs=kwargs)
    return sparse_dataset(group[key])


class StoreWriter:
    """Write an AnnData store incrementally: ``X`` by row chunks, annotations at the end.

    Parameters
    ----------
    path
        Where to write (normally a temporary path from :func:`atlas.core.atomic.atomic_path`).
    n_vars
        Number of genes (columns of ``X``).
    fmt
        ``h5ad`` or ``zarr``.
    gene_stats
        Also fold the appended rows into per-gene statistics (:attr:`gene_stats`, written beside
        the store by ingest so scoring reads the store once; see :mod:`atlas.ingest.genestats`).
    chunk_elems
        Chunk length of ``X``'s arrays (smaller for a store of few cells: a chunk is allocated whole).
    """

    def __init__(
        self, path: str | Path, n_vars: int, *, fmt: str = "h5ad", gene_stats: bool = False,
        chunk_elems: int = _CHUNK_ELEMS,
    ):  # fmt: skip
        from .genestats import GeneStatsAccumulator

        self.path = Path(path)
        self.fmt = fmt
        self.n_vars = n_vars
        self.n_obs = 0
        self.nnz = 0
        self._stats = GeneStatsAccumulator(n_vars) if gene_stats else None
        if fmt == "zarr":
            import anndata as ad
            import zarr

            self._root = zarr.open_group(str(self.path), mode="w", zarr_format=ad.settings.zarr_write_format)
        else:
            self._root = h5py.File(self.path, "w")
        self._root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        self._X = _create_csr(self._root, "X", n_vars, chunk_elems)

    def append(self, X: sp.csr_matrix) -> None:
        """Append rows (CSR, ``n_vars`` columns) to ``X``.

        Parameters
        ----------
        X
            The rows to append.
        """
        if X.shape[1] != self.n_vars:
            raise ValueError(f"chunk has {X.shape[1]} columns, the store {self.n_vars}")
        if X.shape[0] == 0:
            return
        X = sp.csr_matrix(X, dtype=np.float32)
        self._X.append(X)
        if self._stats is not None:
            self._stats.add(X)
        self.n_obs += X.shape[0]
        self.nnz += X.nnz

    @property
    def gene_stats(self):
        """Per-gene statistics of the rows appended so far (:class:`atlas.ingest.genestats.GeneStats`), or None."""
        return None if self._stats is None else self._stats.result()

    def finish(
        self, *, obs: pd.DataFrame, var: pd.DataFrame, varm: dict | None = None, uns: dict | None = None
    ) -> None:
        """Write obs, var, varm, uns and the empty slots AnnData expects; close the store.

        Parameters
        ----------
        obs
            One row per appended cell, in order.
        var
            One row per column of ``X``.
        varm
            Per-gene matrices or DataFrames.
        uns
            Unstructured annotation.
        """
        from anndata.io import write_elem

        if len(obs) != self.n_obs or len(var) != self.n_vars:
            raise ValueError(f"obs/var ({len(obs)}, {len(var)}) do not match X ({self.n_obs}, {self.n_vars})")
        write_elem(self._root, "obs", obs)
        write_elem(self._root, "var", var)
        write_elem(self._root, "varm", varm or {})
        write_elem(self._root, "uns", uns or {})
        for key in ("obsm", "layers", "obsp", "varp"):
            write_elem(self._root, key, {})
        self.close()
        if self.fmt == "zarr":
            import zarr

            zarr.consolidate_metadata(str(self.path))

    def close(self) -> None:
        """Close the underlying file (h5ad)."""
        if self.fmt != "zarr" and self._root is not None:
            self._root.close()
        self._root = None


class PartFile:
    """A temporary CSR matrix on disk (HDF5) grown by row chunks and read back by rows.

    Parameters
    ----------
    path
        File to create.
    n_vars
        Number of columns.
    """

    def __init__(self, path: str | Path, n_vars: int):
        self.path = Path(path)
        self.n_vars = n_vars
        self._f = h5py.File(self.path, "w")
        self._X = _create_csr(self._f, "X", n_vars)
        self.n_obs = 0

    def append(self, X: sp.csr_matrix) -> None:
        """Append rows.

        Parameters
        ----------
        X
            CSR rows with ``n_vars`` columns.
        """
        if X.shape[0]:
            self._X.append(sp.csr_matrix(X, dtype=np.float32))
            self.n_obs += X.shape[0]

    def __getitem__(self, idx: np.ndarray) -> sp.csr_matrix:
        """Read the given rows (sorted integer positions).

        Parameters
        ----------
        idx
            Row positions.
        """
        from anndata.io import sparse_dataset

        return sp.csr_matrix(sparse_dataset(self._f["X"])[np.asarray(idx)])

    def chunks(self, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        """Yield ``(start, rows)`` in order, ``chunk_size`` rows at a time.

        Parameters
        ----------
        chunk_size
            Rows per chunk.
        """
        from anndata.io import sparse_dataset

        ds = sparse_dataset(self._f["X"])
        for start in range(0, self.n_obs, chunk_size):
            yield start, sp.csr_matrix(ds[start : start + chunk_size])

    def close(self) -> None:
        """Close and delete the file."""
        self._f.close()
        self.path.unlink(missing_ok=True)


def _fix_carried(s: pd.Series) -> pd.Series:
    """Give a concatenated column a dtype AnnData can write (missing values kept as missing)."""
    if s.dtype != object:
        return s
    present = s.dropna()
    if len(present) and present.map(lambda v: isinstance(v, bool | np.bool_)).all():
        return s.astype("boolean")
    return s.where(s.isna(), s.astype(str)).astype("category")


def finalize_obs(frames: list[pd.DataFrame], categorical: list[str]) -> pd.DataFrame:
    """Concatenate per-data-set obs frames into the store's obs.

    Parameters
    ----------
    frames
        obs of each data set (kept cells), in store order.
    categorical
        Columns stored as categorical strings (categories sorted).

    Returns
    -------
    One DataFrame; carried columns missing from some data sets are filled with missing values.
    """
    obs = pd.concat(frames, axis=0, join="outer", sort=False)
    for c in obs.columns:
        if c in categorical:
            obs[c] = pd.Categorical(obs[c].astype(str), categories=sorted(set(obs[c].astype(str))))
        else:
            obs[c] = _fix_carried(obs[c])
    return obs
