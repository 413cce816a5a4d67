"""Shared reader machinery: the :class:`Reader` base class and the cell-metadata file reader."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..core import storage
from ..core.errors import AtlasError, InputDataError
from ..core.storage import Location
from .counts import round_counts
from .settings import DatasetConfig

logger = logging.getLogger(__name__)

__all__ = ["Reader", "read_obs_file"]


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def _sep(path: Location) -> str:
    return "," if _strip_gz(storage.name(path).lower()).endswith(".csv") else "\t"


def read_obs_file(path: Location, barcodes: pd.Index, *, dataset_id: str, matrix_path: Location) -> pd.DataFrame:
    """Read per-cell metadata (first column = cell id) and align it to ``barcodes``.

    Parameters
    ----------
    path
        csv/tsv(.gz) file (path or URL); the separator follows the suffix (``.csv`` comma, else tab).
    barcodes
        Cell ids of the count matrix, in matrix order.
    dataset_id
        Data set id, for messages.
    matrix_path
        The count file, for messages.

    Returns
    -------
    The metadata, one row per barcode in matrix order.
    """
    what = f"data set '{dataset_id}': obs_path "
    storage.require(path, what, "check the path")
    try:
        with storage.translating(path, what):  # pandas streams URLs through fsspec itself
            df = pd.read_csv(path, sep=_sep(path), index_col=0)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise InputDataError(
            f"data set '{dataset_id}': cannot read the cell metadata file {path}: {e}"
        ) from None
    df.index = df.index.astype(str)
    dup = df.index[df.index.duplicated()]
    if len(dup):
        raise InputDataError(
            f"data set '{dataset_id}': {len(dup)} cell id(s) appear twice in the first column of {path} "
            f"(e.g. {list(dup[:5])}); each cell must have one row"
        )
    missing = barcodes.difference(df.index)
    if len(missing):
        raise InputDataError(
            f"data set '{dataset_id}': {len(missing)} of {len(barcodes)} cells of {matrix_path} have no row in "
            f"the cell metadata file {path} (e.g. {list(missing[:5])}; its first ids are "
            f"{list(df.index[:3])}); the first column of {storage.name(path)} must hold the matrix's cell barcodes"
        )
    return df.reindex(barcodes)


class Reader:
    """Base class: one data set opened for reading (use as a context manager).

    Subclasses set ``obs``, ``var``, ``n_obs``, ``n_vars`` when opened and implement
    :meth:`_chunks`.
    """

    format = "?"

    def __init__(self, ds: DatasetConfig):
        self.ds = ds
        self.path: Location = storage.location(ds.path)
        self.obs: pd.DataFrame
        self.var: pd.DataFrame
        self.where = "the matrix"  # where in the file the counts are, for messages
        self._files: list = []
        storage.require(self.path, f"data set '{ds.id}': ", "check 'path' in its entry")
        if ds.counts != "X" and self.format != "h5ad":
            raise InputDataError(
                f"data set '{ds.id}': counts={ds.counts!r} only applies to h5ad files, but {self.path} is "
                f"{self.format}; remove 'counts:' from its entry"
            )
        try:
            with self._reading("its metadata"):
                self._open()
            self.obs.index = pd.Index(self.obs.index.astype(str), name=None)
            self.var.index = pd.Index(self.var.index.astype(str), name=None)
            if ds.obs_path is not None:
                extra = read_obs_file(
                    storage.location(ds.obs_path), self.obs.index, dataset_id=ds.id, matrix_path=self.path
                )
                keep = self.obs.drop(columns=[c for c in extra.columns if c in self.obs.columns])
                self.obs = pd.concat([keep, extra], axis=1)
        except BaseException:
            self.close()
            raise

    # -- subclass API -------------------------------------------------------------------------
    def _open(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _chunks(self, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:  # pragma: no cover
        raise NotImplementedError

    # -- public -------------------------------------------------------------------------------
    @property
    def n_obs(self) -> int:
        """Number of cells."""
        return len(self.obs)

    @property
    def n_vars(self) -> int:
        """Number of features (after dropping non gene-expression features)."""
        return len(self.var)

    def chunks(self, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        """Yield ``(start, X)``: CSR float32 counts of at most ``chunk_size`` consecutive cells.

        With ``round_counts: true`` in the data set's entry non-integer values are rounded (and the
        number changed is logged once the matrix has been read).

        Parameters
        ----------
        chunk_size
            Cells per chunk.
        """
        it = self._chunks(chunk_size)
        rounded = [0, 0, 0]  # values changed, of which became 0, non-zero values read
        while True:
            with self._reading("the count matrix"):
                try:
                    start, X = next(it)
                except StopIteration:
                    self._log_rounded(*rounded)
                    return
                X = _as_csr32(X)
            if self.ds.round_counts:
                rounded[2] += X.nnz
                X, n, n_zero = round_counts(X)
                rounded[0] += n
                rounded[1] += n_zero
            if X.shape[1] != self.n_vars:
                raise InputDataError(
                    f"data set '{self.ds.id}': {self.path} has {X.shape[1]} matrix columns but {self.n_vars} "
                    "features; the file is inconsistent"
                )
            yield start, X

    def _log_rounded(self, n: int, n_zero: int, n_values: int) -> None:
        if self.ds.round_counts:
            logger.info(
                "data set %s: round_counts rounded %d of %d non-zero values (%.2g%%) to whole numbers, %d of them to 0",
                self.ds.id,
                n,
                n_values,
                100 * n / max(n_values, 1),
                n_zero,
            )

    def close(self) -> None:
        """Close open files."""
        for f in self._files:
            with contextlib.suppress(Exception):
                f.close()
        self._files = []

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _reading(self, what: str):
        """Turn low-level read errors into an :class:`InputDataError` naming data set and file."""
        try:
            with storage.translating(self.path, f"data set '{self.ds.id}' (reading {what}): ", any_oserror=False):
                yield
        except AtlasError:
            raise
        except (OSError, KeyError, ValueError, TypeError, IndexError, EOFError, pd.errors.ParserError) as e:
            raise InputDataError(
                f"data set '{self.ds.id}': cannot read {what} from {self.path} as {self.format} "
                f"({type(e).__name__}: {e}). Check that the file is complete (not truncated or still "
                "downloading) and of the format given; set 'format:' in its entry if the guess is wrong"
            ) from None

    def _h5(self, path: Location) -> h5py.File:
        f, closers = storage.open_h5(path)  # a URL: a block-cached fsspec file object under h5py
        self._files.extend([f, *closers])
        return f


def _as_csr32(X) -> sp.csr_matrix:
    if not sp.issparse(X):
        X = sp.csr_matrix(np.asarray(X, dtype=np.float32))
    X = sp.csr_matrix(X)
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    return X


def _decode(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "S" or a.dtype.kind == "O":
        return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in a], dtype=object)
    return a.astype(str).astype(object)


def _open_text(path: Location):
    """A text handle on a local or remote file, ``.gz`` decompressed."""
    return storage.open_input(path, "rt")
