"""score_signatures / score_store: AnnData handling, signature handling, errors, chunking, stores, dask."""

from __future__ import annotations

import logging
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import atlas.score as tl
from atlas.core.errors import AtlasError

pytestmark = pytest.mark.filterwarnings("ignore")
METHODS = ["scanpy", "aucell", "ucell", "mean"]


def test_import_atlas_tl_stays_light():
    code = (
        "import sys, atlas, atlas.score; bad = {'numba', 'cupy', 'dask', 'decoupler', 'scanpy'} & "
        "{m.split('.')[0] for m in sys.modules}; print(sorted(bad)); sys.exit(bool(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_obs_columns_uns_and_return(adata, sets):
    df = tl.score_signatures(adata, sets, method="mean", backend="cpu", key_added="neu_")
    assert list(df.columns) == list(sets) and df.index.equals(adata.obs_names)
    for name in sets:
        np.testing.assert_array_equal(adata.obs[f"neu_{name}_score"].to_numpy(), df[name].to_numpy())
    rep = adata.uns["neu_signature_scores"]
    assert rep["method"] == "mean" and rep["normalized"] is True
    assert rep["signatures"]["S0"]["absent"] == []


@pytest.mark.parametrize("method", METHODS)
def test_chunk_size_invariance(adata, sets, method):
    a = tl.score_signatures(adata, sets, method=method, backend="cpu", chunk_size=7)
    b = tl.score_signatures(adata, sets, method=method, backend="cpu", chunk_size=10_000)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


@pytest.mark.parametrize("method", METHODS)
def test_dense_equals_sparse(adata, sets, method):
    dense = adata.copy()
    dense.X = adata.X.toarray()
    a = tl.score_signatures(adata, sets, method=method, backend="cpu")
    b = tl.score_signatures(dense, sets, method=method, backend="cpu")
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-12)


def test_layer_and_raw(adata, sets, normalise):
    b = normalise(adata)
    b.layers["counts"] = adata.X.copy()
    from_layer = tl.score_signatures(b, sets, method="mean", backend="cpu", layer="counts")
    from_x = tl.score_signatures(b, sets, method="mean", backend="cpu")
    np.testing.assert_allclose(from_layer.to_numpy(), from_x.to_numpy(), atol=1e-6)
    with pytest.raises(AtlasError, match="layer 'nope'"):
        tl.score_signatures(b, sets, layer="nope")
    b.raw = adata
    raw = tl.score_signatures(b, sets, method="mean", backend="cpu")  # .raw by default, like scanpy
    assert b.uns["signature_scores"]["layer"] == "raw.X"
    np.testing.assert_allclose(raw.to_numpy(), from_x.to_numpy(), atol=1e-6)


def test_absent_genes_reported_and_errors(adata, caplog):
    sets = {"half": ["G1", "G2", "NO1", "NO2", "NO3"], "ok": ["G3", "G4"]}
    with caplog.at_level(logging.WARNING):
        tl.score_signatures(adata, sets, method="mean", backend="cpu")
    assert "only 2 of 5 genes" in caplog.text
    assert adata.uns["signature_scores"]["signatures"]["half"]["absent"] == ["NO1", "NO2", "NO3"]
    with pytest.raises(AtlasError, match="none of its 2 genes"):
        tl.score_signatures(adata, {"none": ["X1", "X2"]}, backend="cpu")
    with pytest.raises(AtlasError, match="empty"):
        tl.score_signatures(adata, {"empty": []}, backend="cpu")
    with pytest.raises(AtlasError, match="Did you mean: T3_proxy"):
        tl.score_signatures(adata, "T3_prox", backend="cpu")


def test_nan_and_normalisation_decisions(adata, sets, normalise, caplog):
    bad = adata.copy()
    bad.X = bad.X.copy()
    bad.X.data[5] = np.nan
    for method in METHODS:
        with pytest.raises(AtlasError, match="non-finite"):
            tl.score_signatures(bad, sets, method=method, backend="cpu")
    with pytest.raises(AtlasError, match="does not hold raw counts"):
        tl.score_signatures(normalise(adata), sets, method="mean", normalize=True, backend="cpu")
    with caplog.at_level(logging.WARNING):
        tl.score_signatures(adata, sets, method="mean", normalize=False, backend="cpu")
    assert "integer counts but normalize=False" in caplog.text


def test_registry_sets_user_files_and_orthologues(tmp_path):
    genes = ["VEGFA", "CD274", "SPP1", "CCL3", "CXCL8", "S100A12", "CXCR2", "SELL", "TXNIP"]
    rng = np.random.default_rng(0)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(2, (50, len(genes) + 40)).astype(np.float32)))
    a.var_names = genes + [f"G{i}" for i in range(40)]
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("MY_SET\thttp://example\tIL8\tVEGFA\tSPP1\n")
    yml = tmp_path / "sets.yaml"
    yml.write_text("mouse_t3:\n  species: mouse\n  genes: [Vegfa, Cd274, Nope1]\nplain: [SELL, TXNIP]\n")
    df = tl.score_signatures(a, [str(gmt), yml, "blood_like"], method="mean", backend="cpu")
    assert list(df.columns) == ["MY_SET", "mouse_t3", "plain", "blood_like"]
    rep = a.uns["signature_scores"]["signatures"]
    assert rep["MY_SET"]["renamed"] == {"IL8": "CXCL8"}  # outdated symbol updated for a user set
    assert rep["mouse_t3"]["no_orthologue"] == ["Nope1"]
    np.testing.assert_allclose(
        df["mouse_t3"], tl.score_signatures(a, {"x": ["VEGFA", "CD274"]}, method="mean", backend="cpu")["x"]
    )
    bad = tmp_path / "bad.gmt"
    bad.write_text("ONLY_NAME\n")
    with pytest.raises(AtlasError, match="bad.gmt:1"):
        tl.score_signatures(a, str(bad), backend="cpu")


def test_catalogue_helpers(tmp_path):
    cat = tl.list_signatures()
    assert {"T3_proxy", "HALLMARK_HYPOXIA"} <= set(cat["name"]) and (cat["n_genes"] > 0).all()
    info = tl.show_signature("CerezoWallis_mouse_Immunosuppressive_II", species="human")
    assert info["species"] == "mouse" and info["translated_genes"] == ["VEGFA", "CD274"]
    text = tl.export_signatures(["T3_proxy"], format="gmt", path=tmp_path / "t3.gmt")
    assert text.startswith("T3_proxy\t") and (tmp_path / "t3.gmt").read_text() == text
    back = tl.read_gmt(tmp_path / "t3.gmt")
    assert list(back[0].genes) == tl.show_signature("T3_proxy")["genes"] and len(back[0].genes) == 23
    assert "genes:" in tl.export_signatures(["T3_proxy"], format="yaml")


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
@pytest.mark.parametrize("method", ["scanpy", "aucell"])
def test_score_store_out_of_core(adata, sets, tmp_path, fmt, method):
    path = tmp_path / f"store.{fmt}"
    adata.write_h5ad(path) if fmt == "h5ad" else adata.write_zarr(path)
    out = tmp_path / "scores.parquet"
    df = tl.score_store(path, sets, method=method, backend="cpu", chunk_size=64, out_path=out)
    ref = tl.score_signatures(adata.copy(), sets, method=method, backend="cpu")
    np.testing.assert_array_equal(df.to_numpy(), ref.to_numpy())
    back = pd.read_parquet(out)
    assert list(back.index[:2]) == ["c0", "c1"] and list(back.columns) == list(sets)
    assert not list(tmp_path.glob(".atlas-tmp-*"))


def test_backed_anndata(adata, sets, tmp_path):
    path = tmp_path / "b.h5ad"
    adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    df = tl.score_signatures(backed, sets, method="ucell", backend="cpu", chunk_size=50)
    ref = tl.score_signatures(adata.copy(), sets, method="ucell", backend="cpu")
    np.testing.assert_array_equal(df.to_numpy(), ref.to_numpy())
    backed.file.close()


@pytest.mark.parametrize("method", METHODS)
def test_dask_threaded_equals_in_memory(counts, method):
    import dask
    import dask.array as da

    sets = [np.arange(0, 30), np.arange(100, 190), np.array([7, 8, 9, 400])]
    x = da.from_array(counts, chunks=(70, -1), asarray=False)
    with dask.config.set(scheduler="threads"):
        got, _ = tl.score_matrix(x, sets, method=method, backend="cpu")
    ref, _ = tl.score_matrix(counts, sets, method=method, backend="cpu")
    np.testing.assert_array_equal(got, ref)


def test_dask_distributed_client(counts):
    import dask.array as da
    from distributed import Client

    sets = [np.arange(0, 30), np.arange(100, 190)]
    x = da.from_array(counts, chunks=(128, 200), asarray=False)  # column blocks are merged
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None):
        got, _ = tl.score_matrix(x, sets, method="scanpy", backend="cpu")
    ref, _ = tl.score_matrix(counts, sets, method="scanpy", backend="cpu")
    np.testing.assert_array_equal(got, ref)
