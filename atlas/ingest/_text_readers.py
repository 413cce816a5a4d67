"""Readers of text formats: 10x mtx folders (streamed when sorted by cell) and csv/tsv tables.

Paths may be URLs: pandas streams them through fsspec (compression from the name), folders are listed
with :func:`atlas.core.storage.glob`.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..core import storage
from ..core.errors import InputDataError
from ..core.storage import Location
from ._reader_base import Reader, _open_text
from .settings import DatasetConfig

logger = logging.getLogger(__name__)

__all__ = ["CsvReader", "MtxReader"]

#: an axis holds genes when at least this share of its names are known gene symbols or Ensembl ids
_GENE_AXIS_SHARE = 0.5
#: ... and the declared gene axis is taken to be wrong when below this share
_NOT_GENE_AXIS_SHARE = 0.2
_MTX_ENTRIES_PER_READ = 5_000_000
# Entries held per yielded chunk: the text reader keeps (cell, gene, value) triples until a chunk is
# complete, so a chunk is also capped by entries (~8M x 16 bytes) rather than by cells alone.
_MTX_ENTRIES_PER_CHUNK = 8_000_000


# --------------------------------------------------------------------------------------- 10x mtx
def _find_one(
    folder: Location, patterns: list[str], what: str, ds_id: str, required: bool = True
) -> Location | None:
    for pattern in patterns:
        hits = storage.glob(folder, pattern)
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InputDataError(
                f"data set '{ds_id}': {folder} holds several {what} files ({[storage.name(h) for h in hits]}); "
                "keep one data set per folder"
            )
    if required:
        raise InputDataError(
            f"data set '{ds_id}': {folder} has no {what} file ({' or '.join(patterns)}); a 10x mtx folder "
            "needs matrix.mtx(.gz), features.tsv(.gz) (or genes.tsv) and barcodes.tsv(.gz)"
        )
    return None


class MtxReader(Reader):
    """10x mtx folder (or a path to its ``matrix.mtx(.gz)``)."""

    format = "10x_mtx"

    def _open(self) -> None:
        is_dir = storage.isdir(self.path)
        folder = self.path if is_dir else storage.parent(self.path)
        self._mtx = (
            self.path
            if not is_dir
            else _find_one(
                folder, ["matrix.mtx.gz", "matrix.mtx", "*matrix.mtx.gz", "*matrix.mtx"], "matrix", self.ds.id
            )
        )
        feat = _find_one(
            folder,
            [
                "features.tsv.gz",
                "features.tsv",
                "genes.tsv.gz",
                "genes.tsv",
                "*features.tsv.gz",
                "*features.tsv",
                "*genes.tsv.gz",
                "*genes.tsv",
            ],
            "features",
            self.ds.id,
        )
        bc = _find_one(
            folder,
            ["barcodes.tsv.gz", "barcodes.tsv", "*barcodes.tsv.gz", "*barcodes.tsv"],
            "barcodes",
            self.ds.id,
        )
        fdf = pd.read_csv(feat, sep="\t", header=None, dtype=str)
        ids = fdf[0].to_numpy(dtype=object)
        names = fdf[1].to_numpy(dtype=object) if fdf.shape[1] > 1 else ids
        ftype = (
            fdf[2].to_numpy(dtype=object)
            if fdf.shape[1] > 2
            else np.full(len(ids), "Gene Expression", dtype=object)
        )
        barcodes = pd.read_csv(bc, sep="\t", header=None, dtype=str)[0].to_numpy(dtype=object)
        with _open_text(self._mtx) as fh:
            header = fh.readline()
            if not header.startswith("%%MatrixMarket") or "coordinate" not in header:
                raise InputDataError(
                    f"data set '{self.ds.id}': {self._mtx} is not a MatrixMarket coordinate file (header {header!r})"
                )
            if "pattern" in header or "complex" in header:
                raise InputDataError(
                    f"data set '{self.ds.id}': {self._mtx} has no count values (header {header!r})"
                )
            n_skip = 1
            line = fh.readline()
            while line.startswith("%"):
                n_skip += 1
                line = fh.readline()
            n_rows, n_cols, nnz = (int(x) for x in line.split())
        self._skip, self._nnz = n_skip + 1, nnz
        if (n_rows, n_cols) == (len(ids), len(barcodes)):
            self._cell_col = 1  # genes x cells (10x)
        elif (n_rows, n_cols) == (len(barcodes), len(ids)):
            self._cell_col = 0
        else:
            raise InputDataError(
                f"data set '{self.ds.id}': {self._mtx} is {n_rows} x {n_cols} but {storage.name(feat)} lists "
                f"{len(ids)} features and {storage.name(bc)} {len(barcodes)} barcodes; the files do not belong together"
            )
        self.path = self._mtx
        self._n_features = len(ids)
        ge = np.flatnonzero(ftype == "Gene Expression")
        self._ge = None if len(ge) == len(ids) else ge
        self.var = pd.DataFrame(
            {"gene_symbols": names[ge], "feature_type": ftype[ge]}, index=pd.Index(ids[ge].astype(str))
        )
        self.obs = pd.DataFrame(index=pd.Index(barcodes.astype(str)))

    def _entries(self, usecols=None) -> Iterator[pd.DataFrame]:
        return pd.read_csv(
            self._mtx,
            sep=r"\s+",
            header=None,
            skiprows=self._skip,
            chunksize=_MTX_ENTRIES_PER_READ,
            usecols=usecols,
            # compact dtypes: int32 positions (10x matrices have < 2^31 rows and columns) and
            # float64 values (the counts check must see non-integers exactly as written)
            dtype={0: np.int32, 1: np.int32, 2: np.float64} if usecols is None else np.int64,
        )

    def _sorted_by_cell(self) -> bool:
        last = -1
        for df in self._entries(usecols=[self._cell_col]):
            c = df.iloc[:, 0].to_numpy()
            if len(c) and (c[0] < last or np.any(np.diff(c) < 0)):
                return False
            if len(c):
                last = c[-1]
        return True

    def _build(
        self, cells: np.ndarray, genes: np.ndarray, vals: np.ndarray, start: int, stop: int
    ) -> sp.csr_matrix:
        X = sp.csr_matrix(
            (vals.astype(np.float32), (cells - start, genes)), shape=(stop - start, self._n_features)
        )
        return X if self._ge is None else X[:, self._ge]

    def _chunks(self, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        n = self.n_obs
        if not self._sorted_by_cell():
            from scipy.io import mmread

            logger.info(
                "data set %s: entries of %s are not sorted by cell; reading the matrix whole with scipy.io.mmread "
                "(memory grows with the data set)",
                self.ds.id,
                self._mtx,
            )
            with storage.open_input(self._mtx, "rb") as fh:  # decompressed when .gz
                coo = mmread(fh).tocoo()
            cells, genes = (coo.col, coo.row) if self._cell_col == 1 else (coo.row, coo.col)
            whole = sp.csr_matrix((coo.data.astype(np.float32), (cells, genes)), shape=(n, self._n_features))
            whole = whole if self._ge is None else whole[:, self._ge]
            for start in range(0, n, chunk_size):
                yield start, whole[start : start + chunk_size]
            return
        gene_col = 1 - self._cell_col
        per_cell = max(1.0, self._nnz / max(n, 1))
        chunk_size = int(min(chunk_size, max(256, _MTX_ENTRIES_PER_CHUNK // per_cell)))
        # pending entries of the current chunk, kept as three compact arrays (0-based cell, gene; value)
        pend: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

        def flush(stop: int) -> sp.csr_matrix:
            if pend:
                cells, genes, vals = (np.concatenate(parts) for parts in zip(*pend, strict=True))
            else:
                cells, genes, vals = np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0)
            pend.clear()
            return self._build(cells, genes, vals, start, stop)

        start = 0
        for df in self._entries():
            cells = df.iloc[:, self._cell_col].to_numpy(np.int32) - 1
            genes = df.iloc[:, gene_col].to_numpy(np.int32) - 1
            vals = df.iloc[:, 2].to_numpy(np.float64)
            del df
            while len(cells):
                stop = min(n, start + chunk_size)
                cut = int(np.searchsorted(cells, stop, side="left"))
                pend.append((cells[:cut], genes[:cut], vals[:cut]))
                if cut == len(cells):
                    break
                yield start, flush(stop)
                start = stop
                cells, genes, vals = cells[cut:], genes[cut:], vals[cut:]
        while start < n:
            stop = min(n, start + chunk_size)
            yield start, flush(stop)
            start = stop


# ------------------------------------------------------------------------------------------- csv
def gene_share(names: pd.Index) -> float:
    """Share of ``names`` that are known human or mouse gene symbols or Ensembl ids (the larger)."""
    from .genes import recognised_share

    names = [str(n) for n in names]
    return max(recognised_share(names, "human"), recognised_share(names, "mouse"))


def _gene_axis(rows: pd.Index, cols: pd.Index, declared: str) -> str:
    """The orientation whose gene axis holds gene names: ``declared`` unless the other axis clearly does."""
    genes, other = (rows, cols) if declared == "genes_x_cells" else (cols, rows)
    if len(genes) == 0 or len(other) == 0 or gene_share(genes) >= _NOT_GENE_AXIS_SHARE:
        return declared
    if gene_share(other) >= _GENE_AXIS_SHARE:
        return "cells_x_genes" if declared == "genes_x_cells" else "genes_x_cells"
    return declared


class CsvReader(Reader):
    """Dense text matrix: genes x cells (GEO style, read whole) or cells x genes (streamed).

    The orientation is checked against the names: when the declared gene axis holds few gene
    symbols/Ensembl ids and the other axis mostly does, the table is read the other way (logged).
    """

    format = "csv"

    def __init__(self, ds: DatasetConfig, sep: str):
        self._sep_char = sep
        self.format = "csv" if sep == "," else "tsv"
        super().__init__(ds)

    def _read(self, **kw) -> pd.DataFrame:
        return pd.read_csv(self.path, sep=self._sep_char, index_col=0, **kw)

    def _open(self) -> None:
        with _open_text(self.path) as fh:  # not pandas: it would rename repeated names ('c1' -> 'c1.1')
            header = next(csv.reader(fh, delimiter=self._sep_char), None)
        if not header:
            raise InputDataError(f"data set '{self.ds.id}': {self.path} is empty; a count table was expected")
        header = header[1:]
        first = pd.read_csv(self.path, sep=self._sep_char, usecols=[0], dtype=str).iloc[:, 0]
        first = pd.Index(first.astype(str))
        self._orientation = _gene_axis(first, pd.Index(header), self.ds.orientation)
        if self._orientation != self.ds.orientation:
            where = "first column" if self._orientation == "genes_x_cells" else "header row"
            logger.warning(
                "data set %s: %s is declared 'orientation: %s' but its gene names are in the %s; reading it as "
                "%s (set 'orientation: %s' in its entry to say so)",
                self.ds.id,
                self.path,
                self.ds.orientation,
                where,
                self._orientation,
                self._orientation,
            )
        if self._orientation == "genes_x_cells":
            self.var, self.obs = pd.DataFrame(index=first), pd.DataFrame(index=pd.Index(header))
        else:
            self.var, self.obs = pd.DataFrame(index=pd.Index(header)), pd.DataFrame(index=first)

    def _numeric(self, df: pd.DataFrame) -> np.ndarray:
        bad = [c for c, t in df.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
        if bad:
            col = bad[0]
            example = df[col][pd.to_numeric(df[col], errors="coerce").isna() & df[col].notna()]
            raise InputDataError(
                f"data set '{self.ds.id}': {self.path} has non-numeric values in column {col!r} "
                f"(e.g. {example.iloc[0] if len(example) else 'empty'!r}); a count table needs numbers only, "
                f"with ids in the first column and first row (orientation: {self._orientation})"
            )
        return df.to_numpy(dtype=np.float32, na_value=np.nan)

    def _chunks(self, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        if self._orientation == "genes_x_cells":
            whole = sp.csr_matrix(self._numeric(self._read()).T)
            for start in range(0, self.n_obs, chunk_size):
                yield start, whole[start : start + chunk_size]
            return
        start = 0
        for df in self._read(chunksize=chunk_size):
            X = sp.csr_matrix(self._numeric(df))
            yield start, X
            start += X.shape[0]
