"""Writers of tiny input files in every supported format (hand-made, no simulator)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp


def counts(n_cells: int, n_genes: int, seed: int = 0, lam: float = 2.0) -> sp.csr_matrix:
    """Integer Poisson counts as float32 CSR."""
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(rng.poisson(lam, (n_cells, n_genes)).astype(np.float32))


def write_h5ad(path: Path, X, *, obs: pd.DataFrame, genes: list[str], where: str = "X") -> Path:
    """An h5ad with counts in ``X``, ``layers/counts`` or ``raw`` (other slots hold log values)."""
    X = sp.csr_matrix(X, dtype=np.float32)
    logged = X.copy()
    logged.data = np.log1p(logged.data) + 0.01
    var = pd.DataFrame(index=genes)
    if where == "X":
        a = ad.AnnData(X, obs=obs, var=var)
    elif where == "layers/counts":
        a = ad.AnnData(logged, obs=obs, var=var, layers={"counts": X})
    elif where == "raw":
        a = ad.AnnData(X, obs=obs, var=var)
        a.raw = a
        a = ad.AnnData(logged, obs=obs, var=var, raw=a.raw)
    elif where == "dense":
        a = ad.AnnData(X.toarray(), obs=obs, var=var)
    else:
        raise ValueError(where)
    a.write_h5ad(path)
    return path


def write_10x_h5(path: Path, X, *, barcodes, ids, names, feature_types=None) -> Path:
    """CellRanger v3 ``filtered_feature_bc_matrix.h5`` layout (CSC genes x cells)."""
    X = sp.csr_matrix(X)  # cells x genes CSR == genes x cells CSC
    feature_types = feature_types or ["Gene Expression"] * len(ids)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        g.create_dataset("data", data=X.data.astype(np.int32))
        g.create_dataset("indices", data=X.indices.astype(np.int64))
        g.create_dataset("indptr", data=X.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([X.shape[1], X.shape[0]], dtype=np.int32))
        fe = g.create_group("features")
        fe.create_dataset("id", data=np.array(ids, dtype="S"))
        fe.create_dataset("name", data=np.array(names, dtype="S"))
        fe.create_dataset("feature_type", data=np.array(feature_types, dtype="S"))
        fe.create_dataset("genome", data=np.array(["GRCh38"] * len(ids), dtype="S"))
    return path


def write_mtx_dir(
    folder: Path, X, *, barcodes, ids, names, sort_by_cell: bool = True, gz: bool = True
) -> Path:
    """A 10x mtx folder: matrix.mtx (genes x cells), features.tsv, barcodes.tsv (gzipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    coo = sp.coo_matrix(X)
    cells, genes, vals = coo.row, coo.col, coo.data
    order = np.lexsort((genes, cells)) if sort_by_cell else np.random.default_rng(1).permutation(len(vals))
    lines = [
        "%%MatrixMarket matrix coordinate integer general",
        "%metadata_json: {}",
        f"{X.shape[1]} {X.shape[0]} {len(vals)}",
    ]
    lines += [f"{genes[i] + 1} {cells[i] + 1} {int(vals[i])}" for i in order]
    op = (lambda p: gzip.open(str(p) + ".gz", "wt")) if gz else (lambda p: open(p, "w"))
    with op(folder / "matrix.mtx") as fh:
        fh.write("\n".join(lines) + "\n")
    with op(folder / "features.tsv") as fh:
        fh.write("".join(f"{i}\t{n}\tGene Expression\n" for i, n in zip(ids, names, strict=True)))
    with op(folder / "barcodes.tsv") as fh:
        fh.write("".join(f"{b}\n" for b in barcodes))
    return folder


def write_csv(path: Path, X, *, barcodes, genes, orientation: str = "genes_x_cells") -> Path:
    """A dense count table, GEO style (genes x cells) or cells x genes."""
    df = pd.DataFrame(np.asarray(sp.csr_matrix(X).toarray(), dtype=np.int64), index=barcodes, columns=genes)
    (df.T if orientation == "genes_x_cells" else df).to_csv(path, sep="," if ".csv" in path.name else "\t")
    return path


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (to prove inputs are unchanged)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def files():
    """The writers, as one namespace."""

    class _Files:
        pass

    ns = _Files()
    for fn in (counts, write_h5ad, write_10x_h5, write_mtx_dir, write_csv, file_hashes):
        setattr(ns, fn.__name__, staticmethod(fn))
    return ns
