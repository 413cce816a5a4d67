"""Readers: every format gives the same counts, whole or in small chunks."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atlas.core.errors import InputDataError
from atlas.ingest.readers import detect_format, open_reader
from atlas.ingest.settings import DatasetConfig

GENES = ["CSF3R", "S100A8", "ACTB", "GAPDH", "MT-CO1", "CD14", "RPL3"]
BARCODES = [f"AAAC-{i}" for i in range(23)]


def _read(ds: DatasetConfig, chunk_size: int) -> sp.csr_matrix:
    with open_reader(ds) as r:
        parts = list(r.chunks(chunk_size))
    starts = [s for s, _ in parts]
    assert starts == list(range(0, len(BARCODES), chunk_size))
    for _, X in parts:
        assert isinstance(X, sp.csr_matrix) and X.dtype == np.float32
    return sp.vstack([X for _, X in parts]).tocsr()


def _assert_same(ds: DatasetConfig, X: sp.csr_matrix) -> None:
    whole = _read(ds, 1000)
    chunked = _read(ds, 5)
    np.testing.assert_array_equal(whole.toarray(), X.toarray())
    np.testing.assert_array_equal(chunked.toarray(), X.toarray())


def _obs():
    return pd.DataFrame({"sample": ["s1"] * 12 + ["s2"] * 11}, index=BARCODES)


@pytest.mark.parametrize("where", ["X", "layers/counts", "raw", "dense"])
def test_h5ad_counts_locations(tmp_path, files, where):
    X = files.counts(len(BARCODES), len(GENES), seed=1)
    path = files.write_h5ad(tmp_path / "d.h5ad", X, obs=_obs(), genes=GENES, where=where)
    counts = "X" if where == "dense" else where
    ds = DatasetConfig(id="d", path=path, counts=counts)
    _assert_same(ds, X)
    with open_reader(ds) as r:
        assert list(r.var.index) == GENES
        assert list(r.obs.index) == BARCODES
        assert list(r.obs["sample"][:2]) == ["s1", "s1"]


def test_h5ad_missing_layer_names_file_and_layers(tmp_path, files):
    X = files.counts(len(BARCODES), len(GENES))
    path = files.write_h5ad(tmp_path / "d.h5ad", X, obs=_obs(), genes=GENES, where="layers/counts")
    with pytest.raises(InputDataError, match=r"'d'.*d\.h5ad.*no counts at 'layers/umi'.*\['counts'\]"):
        open_reader(DatasetConfig(id="d", path=path, counts="layers/umi"))


def test_10x_h5_keeps_gene_expression_only(tmp_path, files):
    X = files.counts(len(BARCODES), len(GENES) + 1, seed=2)
    ids = [f"ENSG{i:011d}" for i in range(len(GENES) + 1)]
    types = ["Gene Expression"] * len(GENES) + ["Antibody Capture"]
    path = files.write_10x_h5(
        tmp_path / "f.h5", X, barcodes=BARCODES, ids=ids, names=[*GENES, "CD3_TotalSeqB"], feature_types=types
    )
    ds = DatasetConfig(id="t", path=path)
    assert detect_format(path) == "10x_h5"
    _assert_same(ds, X[:, : len(GENES)])
    with open_reader(ds) as r:
        assert list(r.var["gene_symbols"]) == GENES
        assert r.var.index[0] == ids[0]


@pytest.mark.parametrize("sort_by_cell", [True, False])
def test_mtx_folder_gz(tmp_path, files, caplog, sort_by_cell):
    X = files.counts(len(BARCODES), len(GENES), seed=3, lam=0.5)
    empty = np.ones(len(BARCODES), dtype=np.float32)
    empty[[4, len(BARCODES) - 1]] = 0  # empty cells inside a chunk and at the very end
    X = sp.csr_matrix(sp.diags(empty) @ X)
    X.eliminate_zeros()
    folder = files.write_mtx_dir(
        tmp_path / "m", X, barcodes=BARCODES, ids=GENES, names=GENES, sort_by_cell=sort_by_cell
    )
    ds = DatasetConfig(id="m", path=folder)
    with caplog.at_level(logging.INFO, logger="atlas.ingest"):
        _assert_same(ds, X)
    assert ("not sorted by cell" in caplog.text) is (not sort_by_cell)


@pytest.mark.parametrize(("orientation", "name"), [("genes_x_cells", "c.csv.gz"), ("cells_x_genes", "c.tsv")])
def test_csv_orientations(tmp_path, files, orientation, name):
    X = files.counts(len(BARCODES), len(GENES), seed=4)
    path = files.write_csv(tmp_path / name, X, barcodes=BARCODES, genes=GENES, orientation=orientation)
    ds = DatasetConfig(id="c", path=path, orientation=orientation)
    _assert_same(ds, X)
    with open_reader(ds) as r:
        assert list(r.var.index) == GENES and list(r.obs.index) == BARCODES


def test_obs_path_joined_and_missing_cells_named(tmp_path, files):
    X = files.counts(len(BARCODES), len(GENES))
    path = files.write_csv(tmp_path / "c.csv", X, barcodes=BARCODES, genes=GENES)
    meta = tmp_path / "meta.csv"
    _obs()[::-1].to_csv(meta)  # reversed order: aligned by id
    with open_reader(DatasetConfig(id="c", path=path, obs_path=meta)) as r:
        assert list(r.obs.index) == BARCODES and r.obs["sample"].iloc[0] == "s1"
    _obs().iloc[2:].to_csv(meta)
    with pytest.raises(InputDataError, match=r"'c'.*2 of 23 cells.*c\.csv.*meta\.csv.*AAAC-0"):
        open_reader(DatasetConfig(id="c", path=path, obs_path=meta))


def test_truncated_h5ad_is_input_error(tmp_path, files):
    X = files.counts(200, len(GENES))
    path = files.write_h5ad(
        tmp_path / "big.h5ad", X, obs=pd.DataFrame(index=[f"c{i}" for i in range(200)]), genes=GENES
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputDataError, match=r"'t'.*big\.h5ad.*truncated"):
        with open_reader(DatasetConfig(id="t", path=path)) as r:
            list(r.chunks(50))


def test_non_numeric_csv(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("gene,c1,c2\nACTB,1,2\nGAPDH,3,oops\n")
    with pytest.raises(InputDataError, match=r"'x'.*x\.csv.*non-numeric.*'c2'.*oops"):
        with open_reader(DatasetConfig(id="x", path=path)) as r:
            list(r.chunks(10))


def test_missing_path(tmp_path):
    with pytest.raises(InputDataError, match=r"'x'.*nope\.h5ad does not exist"):
        open_reader(DatasetConfig(id="x", path=tmp_path / "nope.h5ad"))
