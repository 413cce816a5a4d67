"""The per-gene statistics sidecar and the fast store readers: same scores cold, warm, stale, any layout."""

from __future__ import annotations

import logging
import os

import h5py
import numpy as np
import pytest

import atlas.score as atlas_score
from atlas.ingest.genestats import GeneStatsCache, sidecar_path, sparse_sum_dtype
from atlas.score import matrix
from atlas.score.exec_cpu import run_fold
from atlas.score.sources import as_source

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture
def store(adata, tmp_path):
    path = tmp_path / "store.h5ad"
    adata.write_h5ad(path)
    return path


def _no_fold(monkeypatch):
    """Make a first pass over the matrix an error (the cache must serve it)."""

    def boom(*a, **k):
        raise AssertionError("the gene-sum pass ran although the cache was valid")

    monkeypatch.setattr(matrix, "src_fold", boom)
    monkeypatch.setattr(matrix, "src_col_counts", boom)


def test_cache_written_then_used_with_identical_scores(store, sets, adata, monkeypatch):
    cold = atlas_score.score_store(store, sets, method="scanpy", backend="cpu", chunk_size=64)
    side = sidecar_path(store)
    assert side.name == "store.genestats.parquet" and side.is_file()
    # bit-identical to the first pass (sums in scanpy's dtype and row order) and to the stored counts
    with h5py.File(store) as f:
        sums, nnz = run_fold(as_source(f["X"]), chunk_size=50, mode=1, target=1e4, dtype=sparse_sum_dtype())
    cached = GeneStatsCache(store).load()
    np.testing.assert_array_equal(cached.sums, sums)
    np.testing.assert_array_equal(cached.nnz, np.bincount(adata.X.indices, minlength=adata.n_vars))
    ref = atlas_score.score_signatures(adata.copy(), sets, method="scanpy", backend="cpu")
    np.testing.assert_array_equal(cold.to_numpy(), ref.to_numpy())
    ref_auc = atlas_score.score_signatures(adata.copy(), sets, method="aucell", backend="cpu")
    _no_fold(monkeypatch)
    for chunk in (17, 1000):  # chunk-size invariance holds with the cache
        warm = atlas_score.score_store(store, sets, method="scanpy", backend="cpu", chunk_size=chunk)
        np.testing.assert_array_equal(warm.to_numpy(), cold.to_numpy())
    auc = atlas_score.score_store(store, sets, method="aucell", backend="cpu")  # nnz from the cache
    np.testing.assert_array_equal(auc.to_numpy(), ref_auc.to_numpy())


def test_stale_cache_ignored_and_rebuilt(store, sets, adata, caplog):
    atlas_score.score_store(store, sets, method="scanpy", backend="cpu")
    side = sidecar_path(store)
    before = side.read_bytes()
    # the store is rewritten with other counts: its fingerprint changes
    b = adata.copy()
    b.X = b.X.copy()
    b.X.data = b.X.data + 1
    b.write_h5ad(store)
    with caplog.at_level(logging.INFO, logger="atlas"):
        got = atlas_score.score_store(store, sets, method="scanpy", backend="cpu")
    assert "stale" in caplog.text
    ref = atlas_score.score_signatures(b.copy(), sets, method="scanpy", backend="cpu")
    np.testing.assert_array_equal(got.to_numpy(), ref.to_numpy())
    assert side.read_bytes() != before and GeneStatsCache(store).load() is not None


def test_touched_store_and_foreign_sidecar_not_trusted(store, sets, monkeypatch):
    atlas_score.score_store(store, sets, method="scanpy", backend="cpu")
    st = os.stat(store)
    os.utime(store, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, newer mtime
    assert GeneStatsCache(store).load() is None
    sidecar_path(store).write_bytes(b"not parquet")
    assert GeneStatsCache(store).load() is None
    atlas_score.score_store(store, sets, method="scanpy", backend="cpu")  # rebuilt
    _no_fold(monkeypatch)
    atlas_score.score_store(store, sets, method="scanpy", backend="cpu")


def test_other_normalisation_recomputes(store, sets, adata):
    atlas_score.score_store(store, sets, method="scanpy", backend="cpu")
    got = atlas_score.score_store(store, sets, method="scanpy", backend="cpu", target_sum=1e6)
    ref = atlas_score.score_signatures(adata.copy(), sets, method="scanpy", backend="cpu", target_sum=1e6)
    np.testing.assert_array_equal(got.to_numpy(), ref.to_numpy())


def test_cache_off_and_unwritable(store, sets, monkeypatch, caplog):
    atlas_score.score_store(store, sets, method="scanpy", backend="cpu", gene_stats_cache=False)
    assert not sidecar_path(store).exists()

    def refuse(*a, **k):
        raise PermissionError("read-only folder")

    monkeypatch.setattr("atlas.core.atomic.atomic_path", refuse)
    with caplog.at_level(logging.WARNING, logger="atlas"):
        df = atlas_score.score_store(store, sets, method="scanpy", backend="cpu")
    assert "could not write the gene statistics cache" in caplog.text and len(df) == 600


def test_layer_sidecar_name(tmp_path):
    assert sidecar_path(tmp_path / "a.h5ad", "layers/counts").name == "a.counts.genestats.parquet"
    assert sidecar_path(tmp_path / "a.zarr").name == "a.genestats.parquet"


def _write_csr(path, x, append=False, **ds_kw):
    """A minimal h5ad holding only the CSR ``X`` (and names), its datasets laid out by ``ds_kw``.

    ``append`` grows ``data`` and ``indices`` alternately, as anndata's append does, so their
    HDF5 chunks interleave in the file.
    """
    import pandas as pd
    from anndata.io import write_elem

    with h5py.File(path, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        g = f.create_group("X")
        g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": x.shape})
        if append:
            for name in ("data", "indices"):
                g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=getattr(x, name).dtype, **ds_kw)
            for lo in range(0, x.nnz, 300):
                for name in ("data", "indices"):
                    d, part = g[name], getattr(x, name)[lo : lo + 300]
                    d.resize((lo + part.size,))
                    d[lo:] = part
        else:
            g.create_dataset("data", data=x.data, **ds_kw)
            g.create_dataset("indices", data=x.indices, **ds_kw)
        g.create_dataset("indptr", data=x.indptr.astype(np.int64))
        write_elem(f, "obs", pd.DataFrame(index=[f"c{i}" for i in range(x.shape[0])]))
        write_elem(f, "var", pd.DataFrame(index=[f"G{i}" for i in range(x.shape[1])]))


@pytest.mark.parametrize(
    ("layout", "n_extents"),
    [
        ({}, 1),
        ({"chunks": (97,)}, None),
        ({"append": True, "chunks": (128,)}, None),
        ({"chunks": (50,), "compression": "gzip"}, 0),
    ],
    ids=["contiguous", "chunked", "interleaved", "compressed-h5py"],
)
def test_store_layouts_read_alike(counts, sets, adata, tmp_path, layout, n_extents):
    """Mapped runs, rows copied across run ends, and h5py reads all give the in-memory scores."""
    from atlas.score.h5rows import _Array, _cut, extents
    from atlas.score.sources import plan_chunks

    path = tmp_path / "s.h5ad"
    _write_csr(path, counts, **layout)
    with h5py.File(path) as f:
        ext = extents(f["X/data"])
        if n_extents is None:  # chunked: runs that cover every value exactly once
            assert len(ext) > 1 and ext[0, 0] == 0 and ext[-1, 1] == counts.nnz
            assert np.array_equal(ext[1:, 0], ext[:-1, 1])
            arrays = [_Array(f["X"][k], str(path), 0) for k in ("indices", "data")]
            ip = counts.indptr.astype(np.int64)
            pieces = _cut(plan_chunks(ip, 41), ip, arrays)
            assert [p[0] for p in pieces[1:]] == [p[1] for p in pieces[:-1]] and pieces[-1][1] == 600
            copied = [p for p in pieces if not p[4]]
            assert copied and all(b - a == 1 for a, b, *_ in copied)  # rows straddling a run's end
        else:
            assert (0 if ext is None else len(ext)) == n_extents
    got = atlas_score.score_store(path, sets, method="scanpy", backend="cpu", chunk_size=41, gene_stats_cache=False)
    ref = atlas_score.score_signatures(adata.copy(), sets, method="scanpy", backend="cpu")
    np.testing.assert_array_equal(got.to_numpy(), ref.to_numpy())
