"""Bad input that used to pass silently: gene names atlas does not know, a transposed csv, non-integer
(ambient-corrected) counts. Each is refused with one paragraph (exit 2, nothing written) or handled
as documented."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from atlas.catalogue import genes as catalogue
from atlas.core.errors import InputDataError
from atlas.ingest.counts import check_counts, round_counts
from atlas.ingest.readers import open_reader
from atlas.ingest.settings import DatasetConfig

CONSTANTS = {"patient_id": "p", "cancer_type": "c", "tissue": "tumour", "platform": "x", "sample_id": "s"}


def _genes(n: int) -> list[str]:
    return list(catalogue.human_genes()["symbol"].drop_duplicates().iloc[3000 : 3000 + n])


def _ingest_cli(tmp_path, ds: dict) -> subprocess.CompletedProcess:
    cfg = tmp_path / "ingest.yaml"
    cfg.write_text(yaml.safe_dump({"datasets": [{"id": "d", "constants": CONSTANTS, **ds}]}))
    cmd = [sys.executable, "-m", "atlas.cli", "ingest", str(cfg), "--out", str(tmp_path / "out.h5ad")]
    return subprocess.run(cmd, capture_output=True, text=True)


# ------------------------------------------------------------------------------------- orientation
def test_cells_x_genes_csv_declared_genes_x_cells_is_read_the_right_way(tmp_path, files, caplog):
    genes, cells = _genes(50), [f"AAAC-{i}" for i in range(40)]
    X = files.counts(len(cells), len(genes), seed=3)
    path = files.write_csv(tmp_path / "t.csv", X, barcodes=cells, genes=genes, orientation="cells_x_genes")
    ds = DatasetConfig(id="t", path=path, orientation="genes_x_cells")
    with caplog.at_level(logging.WARNING), open_reader(ds) as r:
        assert list(r.var.index) == genes and list(r.obs.index) == cells
        got = sp.vstack([x for _, x in r.chunks(15)]).toarray()
    np.testing.assert_array_equal(got, X.toarray())
    assert "declared 'orientation: genes_x_cells' but its gene names are in the header row" in caplog.text
    assert "orientation: cells_x_genes" in caplog.text


def test_orientation_kept_when_neither_axis_holds_genes(tmp_path, files):
    X = files.counts(5, 4)
    path = files.write_csv(tmp_path / "n.csv", X, barcodes=[f"r{i}" for i in range(5)],
                           genes=[f"c{i}" for i in range(4)], orientation="cells_x_genes")
    with open_reader(DatasetConfig(id="n", path=path, orientation="cells_x_genes")) as r:
        assert r.n_obs == 5 and r.n_vars == 4


# ----------------------------------------------------------------------------------- round_counts
def _soupx(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    X = sp.random(30, 20, density=0.4, random_state=seed, format="csr", dtype=np.float32)
    X.data = rng.integers(1, 20, X.nnz).astype(np.float32)
    X.data[::4] -= 0.3  # SoupX-style non-integer corrections
    X.data[1] = 0.2  # rounds to 0
    return X


def test_round_counts_rounds_and_counts():
    X = _soupx()
    before = X.copy()
    Y, n, n_zero = round_counts(X)
    assert (X != before).nnz == 0  # input untouched
    assert n == len(before.data[::4]) + 1 and n_zero == 1
    np.testing.assert_array_equal(Y.toarray(), np.rint(before.toarray()))
    assert Y.nnz == before.nnz - 1
    check_counts(Y, dataset_id="d", source="f")
    assert round_counts(Y)[1] == 0


def test_non_integer_error_mentions_round_counts():
    with pytest.raises(InputDataError, match=r"'d'.*not raw counts.*round_counts: true"):
        check_counts(_soupx(), dataset_id="d", source="f.h5ad")


def test_reader_rounds_when_asked_and_logs(tmp_path, files, caplog):
    X = _soupx(1)
    obs = pd.DataFrame(index=[f"c{i}" for i in range(30)])
    path = files.write_h5ad(tmp_path / "s.h5ad", X, obs=obs, genes=_genes(20))
    with caplog.at_level(logging.INFO), open_reader(DatasetConfig(id="s", path=path, round_counts=True)) as r:
        got = sp.vstack([x for _, x in r.chunks(7)])
    np.testing.assert_array_equal(got.toarray(), np.rint(X.toarray()))
    n = int((X.data != np.rint(X.data)).sum())
    assert f"data set s: round_counts rounded {n} of {X.nnz} non-zero values" in caplog.text
    with open_reader(DatasetConfig(id="s", path=path)) as r:  # default: values as stored
        np.testing.assert_array_equal(sp.vstack([x for _, x in r.chunks(7)]).toarray(), X.toarray())


# ------------------------------------------------------------------------------------------- CLI
def test_cli_unknown_gene_names_exit_2_nothing_written(tmp_path, files):
    names = [f"feature_{i}" for i in range(3000)]
    obs = pd.DataFrame(index=[f"c{i}" for i in range(20)])
    path = files.write_h5ad(tmp_path / "u.h5ad", files.counts(20, 3000), obs=obs, genes=names)
    before = files.file_hashes(tmp_path)["u.h5ad"]
    res = _ingest_cli(tmp_path, {"path": str(path)})
    assert res.returncode == 2, res.stderr
    err = " ".join(res.stderr.split())
    assert "error: data set 'd': only 0% of its 3000 gene ids" in err and "feature_0" in err
    assert "gene_column" in err and "Traceback" not in err
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".atlas-tmp-*"))
    assert files.file_hashes(tmp_path)["u.h5ad"] == before


def test_cli_non_integer_counts_exit_2_mentions_option(tmp_path, files):
    obs = pd.DataFrame(index=[f"c{i}" for i in range(30)])
    path = files.write_h5ad(tmp_path / "s.h5ad", _soupx(2), obs=obs, genes=_genes(20))
    res = _ingest_cli(tmp_path, {"path": str(path)})
    assert res.returncode == 2, res.stderr
    assert "round_counts: true" in " ".join(res.stderr.split())
    assert not list(tmp_path.glob("out*"))


def test_cli_transposed_csv_gives_the_cells_not_an_empty_store(tmp_path, files):
    genes, cells = _genes(50), [f"AAAC-{i}" for i in range(40)]
    path = files.write_csv(tmp_path / "t.csv", files.counts(40, 50, seed=4), barcodes=cells, genes=genes,
                           orientation="cells_x_genes")
    cfg = tmp_path / "ingest.yaml"
    entry = {"id": "d", "path": str(path), "orientation": "genes_x_cells", "constants": CONSTANTS}
    cfg.write_text(yaml.safe_dump({"datasets": [entry], "qc": {"enabled": False}}))
    cmd = [sys.executable, "-m", "atlas.cli", "ingest", str(cfg), "--out", str(tmp_path / "out.h5ad")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "reading it as cells_x_genes" in " ".join(res.stderr.split())
    import anndata as ad

    a = ad.read_h5ad(tmp_path / "out.h5ad", backed="r")
    assert a.shape == (40, 50)
