"""Streaming writers for the simulated data sets: h5ad, 10x mtx directory, GEO-style csv.

Each writer takes count chunks (cells x genes CSR, integer values) in order and never holds a whole
data set, except the csv writer, which is only used for small data sets (csv is dense text).
Every file is written under a temporary name and renamed when complete (``atlas.core.atomic``).
Compressed files carry no timestamp, so the same counts give the same bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..core.atomic import atomic_path

GZIP_LEVEL = 1  # fast; level 4 is ~2x slower for ~15% smaller files
INDPTR64_AT = 2**31 - 1  # entries from which an h5ad's CSR offsets are switched to 64 bits


@contextlib.contextmanager
def _gzip_out(path: Path):
    """A gzip stream without a timestamp or file name in its header (reproducible bytes)."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL,
                                                mtime=0) as gz:  # fmt: skip
        yield gz


@numba.njit(cache=True)
def _put_int(buf, pos, v):
    if v == 0:
        buf[pos] = 48
        return pos + 1
    n = 0
    x = v
    while x > 0:
        n += 1
        x //= 10
    end = pos + n
    x = v
    for i in range(end - 1, pos - 1, -1):
        buf[i] = 48 + x % 10
        x //= 10
    return end


@numba.njit(cache=True)
def format_mtx_lines(indptr, indices, data, first_cell):
    """ASCII ``gene cell value`` lines (1-based) of a cells x genes CSR chunk (genes are mtx rows)."""
    buf = np.empty(indices.size * 32 + 1, dtype=np.uint8)
    pos = 0
    for c in range(indptr.size - 1):
        for j in range(indptr[c], indptr[c + 1]):
            pos = _put_int(buf, pos, indices[j] + 1)
            buf[pos] = 32
            pos = _put_int(buf, pos + 1, first_cell + c + 1)
            buf[pos] = 32
            pos = _put_int(buf, pos + 1, int(data[j]))
            buf[pos] = 10
            pos += 1
    return buf[:pos]


@numba.njit(cache=True)
def format_dense_rows(block):
    """ASCII ``,v1,v2,...\\n`` for each row of an integer matrix; returns bytes and row offsets."""
    nr, nc = block.shape
    buf = np.empty(nr * (nc * 8 + 1) + 1, dtype=np.uint8)
    offsets = np.zeros(nr + 1, dtype=np.int64)
    pos = 0
    for r in range(nr):
        for c in range(nc):
            buf[pos] = 44
            pos = _put_int(buf, pos + 1, int(block[r, c]))
        buf[pos] = 10
        pos += 1
        offsets[r + 1] = pos
    return buf[:pos], offsets


def log_normalise(counts: sp.csr_matrix, target_sum: float = 1e4) -> sp.csr_matrix:
    """``log1p(counts / total * target_sum)`` per cell, as float32 CSR (scanpy's normalise + log1p)."""
    totals = np.asarray(counts.sum(axis=1)).ravel().astype(np.float64)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    out = counts.astype(np.float32, copy=True)
    out.data = np.log1p(out.data * np.repeat(scale, np.diff(out.indptr))).astype(np.float32)
    return out


class H5adWriter:
    """Write an AnnData file chunk by chunk (counts in ``X`` or in ``layers['counts']`` with log ``X``)."""

    def __init__(self, target: Path, obs: pd.DataFrame, var: pd.DataFrame, counts: str = "X"):
        self.target, self.obs, self.var, self.counts = Path(target), obs, var, counts

    def __enter__(self) -> H5adWriter:
        import anndata as ad

        self._atomic = atomic_path(self.target)
        self._tmp = self._atomic.__enter__()
        ad.AnnData(obs=self.obs, var=self.var).write_h5ad(self._tmp)
        import h5py

        self._file = h5py.File(self._tmp, "a")
        self._started = False
        return self

    def append(self, start: int, chunk: sp.csr_matrix) -> None:
        """Add the next chunk of cells (``start`` is its first cell; chunks come in order)."""
        from anndata.io import sparse_dataset, write_elem

        counts = chunk.astype(np.float32)
        elems = {"X": counts} if self.counts == "X" else {"layers/counts": counts, "X": log_normalise(chunk)}
        for key, mat in elems.items():
            if not self._started:
                parent, _, name = key.rpartition("/")  # anndata >= 0.13 refuses "/" in a key
                write_elem(self._file[parent] if parent else self._file, name, mat)
            else:
                group = self._file[key]
                if group["indptr"].dtype != np.int64 and group["indices"].shape[0] + mat.nnz >= INDPTR64_AT:
                    # Past 2^31 entries the offsets need 64 bits (anndata refuses to append otherwise).
                    indptr = group["indptr"][...].astype(np.int64)
                    del group["indptr"]
                    group.create_dataset("indptr", data=indptr, maxshape=(None,), chunks=True)
                sparse_dataset(self._file[key]).append(mat)
        self._started = True

    def __exit__(self, *exc) -> None:
        self._file.close()
        self._atomic.__exit__(*exc)


class MtxWriter:
    """Write a 10x mtx directory (matrix.mtx.gz genes x cells, features.tsv.gz, barcodes.tsv.gz).

    The mtx size line needs the number of entries, known only at the end: the entries go to a
    gzip body file first, and the final file is a gzip member holding the header followed by the
    body's gzip member (a valid multi-member gzip file).
    """

    def __init__(self, target: Path, features: pd.DataFrame, barcodes: list[str]):
        self.target, self.features, self.barcodes = Path(target), features, barcodes

    def __enter__(self) -> MtxWriter:
        self._atomic = atomic_path(self.target)
        self._dir = self._atomic.__enter__()
        self._dir.mkdir()
        self._body_path = self._dir / ".body.mtx.gz"
        self._body_cm = _gzip_out(self._body_path)
        self._body = self._body_cm.__enter__()
        self._nnz = 0
        return self

    def append(self, start: int, chunk: sp.csr_matrix) -> None:
        """Add the next chunk of cells (``start`` is its first cell; chunks come in order)."""
        self._body.write(format_mtx_lines(chunk.indptr, chunk.indices, chunk.data, start).tobytes())
        self._nnz += chunk.nnz

    def __exit__(self, *exc) -> None:
        self._body_cm.__exit__(*exc)
        try:
            if exc[0] is None:
                header = (
                    "%%MatrixMarket matrix coordinate integer general\n"
                    '%metadata_json: {"software_version": "atlas simulate", "format_version": 2}\n'
                    f"{len(self.features)} {len(self.barcodes)} {self._nnz}\n"
                )
                mtx = self._dir / "matrix.mtx.gz"
                with _gzip_out(mtx) as gz:
                    gz.write(header.encode())
                with open(mtx, "ab") as out, open(self._body_path, "rb") as body:
                    shutil.copyfileobj(body, out, 1 << 22)
                self._body_path.unlink()
                with _gzip_out(self._dir / "features.tsv.gz") as gz:
                    gz.write(self.features.to_csv(sep="\t", header=False, index=False).encode())
                with _gzip_out(self._dir / "barcodes.tsv.gz") as gz:
                    gz.write(("\n".join(self.barcodes) + "\n").encode())
        finally:
            self._atomic.__exit__(*exc)


class CsvWriter:
    """Write a GEO-style ``.csv.gz``: genes in rows, cells in columns, first column the gene name.

    Holds the data set as a sparse matrix (csv data sets are small) and writes dense rows in blocks.
    """

    def __init__(self, target: Path, genes: list[str], barcodes: list[str]):
        self.target, self.genes, self.barcodes = Path(target), genes, barcodes
        self._chunks: list[sp.csr_matrix] = []

    def __enter__(self) -> CsvWriter:
        return self

    def append(self, start: int, chunk: sp.csr_matrix) -> None:
        """Add the next chunk of cells."""
        self._chunks.append(chunk)

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            return
        by_gene = sp.vstack(self._chunks, format="csr").T.tocsr()  # genes x cells
        with atomic_path(self.target) as tmp, _gzip_out(tmp) as gz:
            gz.write(("," + ",".join(self.barcodes) + "\n").encode())
            step = max(1, 2_000_000 // max(1, len(self.barcodes)))
            for lo in range(0, len(self.genes), step):
                hi = min(lo + step, len(self.genes))
                text, offsets = format_dense_rows(by_gene[lo:hi].toarray())
                raw = text.tobytes()
                for r in range(hi - lo):
                    gz.write(self.genes[lo + r].encode())
                    gz.write(raw[offsets[r] : offsets[r + 1]])
