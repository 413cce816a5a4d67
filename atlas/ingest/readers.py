"""Readers that stream one data set's counts in row (cell) chunks.

Every reader gives the same thing whatever the format: ``obs`` (one row per cell, index = the
barcodes as strings), ``var`` (one row per feature, index = the gene ids as given) and
:meth:`Reader.chunks`, which yields ``(start, X)`` with ``X`` a :class:`scipy.sparse.csr_matrix`
of float32 counts for cells ``start .. start + X.shape[0]``. Files are opened read-only.

Formats
-------
``h5ad``
    counts from ``X``, ``raw`` (``raw/X``) or ``layers/<name>``; CSR is sliced on disk with
    :func:`anndata.io.sparse_dataset`, dense ``X`` by rows; a CSC matrix is read whole (logged).
``zarr``
    an AnnData zarr store (``.zarr`` directory), read like h5ad through zarr.
``10x_h5``
    CellRanger v3 (``matrix`` group) or v2 (one group per genome); only ``Gene Expression``
    features are kept. The CSC genes x cells layout is CSR cells x genes, sliced by ``indptr``.
``10x_mtx``
    a directory with ``matrix.mtx(.gz)``, ``features.tsv(.gz)`` or ``genes.tsv(.gz)`` and
    ``barcodes.tsv(.gz)``; entries sorted by cell are streamed with pandas, otherwise the
    matrix is read whole with :func:`scipy.io.mmread` (logged).
``csv``/``tsv``
    GEO style genes x cells (read whole) or cells x genes (streamed by rows).

Per-cell metadata for formats without it come from ``obs_path`` (first column = cell id).

Every path may be a URL (``s3://``, ``gs://``, any fsspec URL; :mod:`atlas.core.storage`): HDF5 files are
streamed through a block-cached file object, zarr through zarr's fsspec store, text through fsspec.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..core import storage
from ..core.errors import InputDataError
from ..core.storage import Location
from ._reader_base import Reader, _decode, _strip_gz, read_obs_file
from ._text_readers import CsvReader, MtxReader
from .settings import DatasetConfig

logger = logging.getLogger(__name__)

__all__ = [
    "CsvReader",
    "H5adReader",
    "MtxReader",
    "Reader",
    "TenxH5Reader",
    "ZarrReader",
    "detect_format",
    "open_reader",
    "read_obs_file",
]


def detect_format(path: Location) -> str:
    """Guess the format of ``path`` from its suffix (and, for ``.h5``, its content).

    Parameters
    ----------
    path
        File or directory of one data set (local path or URL).

    Returns
    -------
    One of ``h5ad``, ``zarr``, ``10x_h5``, ``10x_mtx``, ``csv``, ``tsv``.
    """
    name = _strip_gz(storage.name(path).lower())
    if name.endswith(".zarr"):
        return "zarr"
    if storage.isdir(path):
        return "10x_mtx"
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith(".mtx"):
        return "10x_mtx"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".txt")):
        return "tsv"
    if name.endswith((".h5", ".hdf5")):
        with contextlib.suppress(OSError):
            f, closers = storage.open_h5(path)
            try:
                if "obs" in f and "var" in f:
                    return "h5ad"
            finally:
                for c in (f, *closers):
                    c.close()
        return "10x_h5"
    raise InputDataError(
        f"cannot tell the format of {path} from its name; set 'format:' in its data set entry "
        "(h5ad, zarr, 10x_h5, 10x_mtx, csv or tsv)"
    )


# ------------------------------------------------------------------------------------------ h5ad
class H5adReader(Reader):
    """AnnData ``.h5ad`` file; counts from ``X``, ``raw`` or ``layers/<name>``."""

    format = "h5ad"

    def _file(self):
        return self._h5(self.path)

    def _open(self) -> None:
        from anndata.io import read_elem

        f = self._file()
        loc = self.ds.counts
        if loc == "X":
            elem, var_key = f.get("X"), "var"
        elif loc == "raw":
            elem, var_key = (f["raw"].get("X") if "raw" in f else None), "raw/var"
        else:
            name = loc.split("/", 1)[1]
            elem, var_key = (f["layers"].get(name) if "layers" in f else None), "var"
        if elem is None:
            layers = sorted(f["layers"].keys()) if "layers" in f else []
            raise InputDataError(
                f"data set '{self.ds.id}': {self.path} has no counts at {loc!r} (has X: {'X' in f}, raw: "
                f"{'raw' in f}, layers: {layers}); set 'counts:' in its entry to where the raw counts are"
            )
        self.where = "X" if loc == "X" else ("raw/X" if loc == "raw" else loc)
        self.obs = read_elem(f["obs"])
        self.var = read_elem(f[var_key])
        self._elem = elem
        enc = elem.attrs.get("encoding-type", "")
        if isinstance(elem, h5py.Dataset) or not hasattr(elem, "keys"):  # an h5py Dataset or a zarr Array
            self._kind = "dense"
        elif enc in ("csr_matrix", "csc_matrix") or "h5sparse_format" in elem.attrs:
            from anndata.io import sparse_dataset

            self._sparse = sparse_dataset(elem)
            self._kind = self._sparse.format
        else:
            raise InputDataError(
                f"data set '{self.ds.id}': {self.where} in {self.path} has encoding {enc!r}; a dense, CSR or "
                "CSC matrix was expected"
            )

    def _chunks(self, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        n = self.n_obs
        if self._kind == "csc":
            logger.info(
                "data set %s: %s in %s is CSC; reading it whole to convert to CSR (memory grows with the data "
                "set; store counts as CSR to stream them)",
                self.ds.id,
                self.where,
                self.path,
            )
            whole = sp.csr_matrix(self._sparse.to_memory())
            for start in range(0, n, chunk_size):
                yield start, whole[start : start + chunk_size]
            return
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            if self._kind == "dense":
                yield start, sp.csr_matrix(np.asarray(self._elem[start:stop], dtype=np.float32))
            else:
                yield start, self._sparse[start:stop]


class ZarrReader(H5adReader):
    """AnnData zarr store (a ``.zarr`` directory, local or in object storage); read like an h5ad file."""

    format = "zarr"

    def _file(self):
        return storage.open_zarr(self.path)


# ---------------------------------------------------------------------------------------- 10x h5
class TenxH5Reader(Reader):
    """CellRanger ``filtered_feature_bc_matrix.h5`` (v3, or v2 with one genome)."""

    format = "10x_h5"

    def _open(self) -> None:
        f = self._h5(self.path)
        if "matrix" in f:
            g = f["matrix"]
            feats = g["features"]
            ids, names = _decode(feats["id"][:]), _decode(feats["name"][:])
            ftype = (
                _decode(feats["feature_type"][:])
                if "feature_type" in feats
                else np.full(len(ids), "Gene Expression")
            )
        else:
            groups = [k for k in f if isinstance(f[k], h5py.Group) and "indptr" in f[k]]
            if len(groups) != 1:
                raise InputDataError(
                    f"data set '{self.ds.id}': {self.path} is not a CellRanger h5 file (no 'matrix' group and "
                    f"{len(groups)} genome groups); for an AnnData file use format: h5ad"
                )
            g = f[groups[0]]
            ids, names = _decode(g["genes"][:]), _decode(g["gene_names"][:])
            ftype = np.full(len(ids), "Gene Expression", dtype=object)
        n_features, n_cells = (int(x) for x in g["shape"][:])
        if n_features != len(ids):
            raise InputDataError(
                f"data set '{self.ds.id}': {self.path} lists {len(ids)} features but its matrix has {n_features}"
            )
        self._g = g
        self._n_features = n_features
        ge = np.flatnonzero(ftype == "Gene Expression")
        self._ge = None if len(ge) == n_features else ge
        if len(ge) < n_features:
            logger.info(
                "data set %s: keeping %d Gene Expression of %d features", self.ds.id, len(ge), n_features
            )
        self.var = pd.DataFrame(
            {"gene_symbols": names[ge], "feature_type": ftype[ge]}, index=pd.Index(ids[ge].astype(str))
        )
        self.obs = pd.DataFrame(index=pd.Index(_decode(g["barcodes"][:]).astype(str)))
        self._indptr = np.asarray(g["indptr"][:], dtype=np.int64)
        if len(self._indptr) != n_cells + 1 or len(self.obs) != n_cells:
            raise InputDataError(
                f"data set '{self.ds.id}': {self.path} has {len(self.obs)} barcodes, {n_cells} cells in its shape "
                f"and {len(self._indptr) - 1} in indptr; the file is inconsistent"
            )

    def _chunks(self, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        data, indices, indptr = self._g["data"], self._g["indices"], self._indptr
        for start in range(0, self.n_obs, chunk_size):
            stop = min(self.n_obs, start + chunk_size)
            lo, hi = int(indptr[start]), int(indptr[stop])
            X = sp.csr_matrix(
                (data[lo:hi].astype(np.float32), indices[lo:hi], indptr[start : stop + 1] - lo),
                shape=(stop - start, self._n_features),
            )
            yield start, (X if self._ge is None else X[:, self._ge])


def open_reader(ds: DatasetConfig) -> Reader:
    """Open the data set described by ``ds`` (metadata read, counts not yet).

    Parameters
    ----------
    ds
        Its configuration entry.

    Returns
    -------
    A :class:`Reader`; use it as a context manager so files are closed.
    """
    path = storage.location(ds.path)
    with storage.translating(path, f"data set '{ds.id}': "):
        storage.require(path, f"data set '{ds.id}': ", "check 'path' in its entry")
        fmt = detect_format(path) if ds.format == "auto" else ds.format
    if fmt == "h5ad":
        return H5adReader(ds)
    if fmt == "zarr":
        return ZarrReader(ds)
    if fmt == "10x_h5":
        return TenxH5Reader(ds)
    if fmt == "10x_mtx":
        return MtxReader(ds)
    return CsvReader(ds, "," if fmt == "csv" else "\t")
