"""Inputs read from object storage (a real S3 API served by moto on 127.0.0.1; see conftest.py).

Every format ingest reads is put in a bucket and read through its ``s3://`` URL; the result must be
identical to reading the same files from local disk. A missing bucket, missing credentials and a key
that is missing (or deleted while it is read) give exit status 2 and a message naming the URL.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from atlas.cli import main
from atlas.core.errors import ConfigError, InputDataError
from atlas.ingest.readers import open_reader
from atlas.ingest.settings import DatasetConfig

GENES = ["CSF3R", "S100A8", "ACTB", "GAPDH", "MT-CO1", "CXCL8", "FCGR3B", "CD14", "RPL3", "LYZ"]


def _cli(args: list[str], capsys) -> tuple[int, str]:
    """Exit status and stdout + stderr of ``atlas ARGS`` (in process)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return int(exc.value.code), captured.out + captured.err


def _to_urls(cfg: dict, folder: Path, prefix: str) -> dict:
    """``cfg`` (an ingest.yaml whose paths are relative to ``folder``) with every path under the URL ``prefix``."""
    out = yaml.safe_load(yaml.safe_dump(cfg))
    for d in out["datasets"]:
        for key in ("path", "obs_path"):
            if d.get(key):
                d[key] = f"{prefix}/{Path(d[key]).as_posix()}"
    return out


def _same_store(a_path: Path, b_path: Path) -> None:
    a, b = ad.read_h5ad(a_path), ad.read_h5ad(b_path)
    assert a.shape == b.shape and a.n_obs > 0
    assert (sp.csr_matrix(a.X) != sp.csr_matrix(b.X)).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)


# ---------------------------------------------------------------------------------- simulated data
@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Three simulated data sets: h5ad (counts in X), h5ad (layers/counts, Ensembl IDs), 10x mtx + obs csv."""
    from atlas.simulate import simulate

    out = tmp_path_factory.mktemp("cloud") / "sim"
    simulate(out, n_cells=300, n_datasets=3, n_genes=2000, seed=0, n_jobs=1)
    cfg = yaml.safe_load((out / "ingest.yaml").read_text())
    assert {d["format"] for d in cfg["datasets"]} == {"h5ad", "10x_mtx"}
    return out, cfg


def test_cli_ingest_from_s3_equals_local(sim, s3, tmp_path, capsys):
    folder, cfg = sim
    prefix = s3.upload(folder / "datasets", "sim/datasets").rsplit("/datasets", 1)[0]
    (tmp_path / "s3.yaml").write_text(yaml.safe_dump(_to_urls(cfg, folder, prefix)))
    code, err = _cli(["ingest", tmp_path / "s3.yaml", "--out", tmp_path / "s3.h5ad"], capsys)
    assert code == 0, err
    code, err = _cli(["ingest", folder / "ingest.yaml", "--out", tmp_path / "local.h5ad"], capsys)
    assert code == 0, err
    _same_store(tmp_path / "s3.h5ad", tmp_path / "local.h5ad")


def test_pipeline_run_with_s3_inputs_and_rerun_skips(sim, s3, tmp_path, capsys):
    folder, cfg = sim
    prefix = s3.upload(folder / "datasets", "p/datasets").rsplit("/datasets", 1)[0]
    ingest = _to_urls(cfg, folder, prefix)
    ingest["datasets"] = ingest["datasets"][2:]  # the 10x mtx folder (a key prefix) and its obs csv
    config = {"name": "cloud", "run_dir": "run", "ingest": ingest}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    code, err = _cli(["run", tmp_path / "run.yaml", "--until", "ingest"], capsys)
    assert code == 0, err
    manifest = (tmp_path / "run" / "manifest.json").read_text()
    assert f"{prefix}/datasets/ds03_NSCLC_mtx" in manifest and '"etag"' in manifest
    code, out = _cli(["run", tmp_path / "run.yaml", "--until", "ingest"], capsys)
    assert code == 0 and "skipped (unchanged): ingest" in out, out  # the objects' ETags are unchanged
    store = ad.read_h5ad(tmp_path / "run" / "store.h5ad")
    assert set(store.obs["dataset_id"]) == {"ds03_NSCLC"}


# ------------------------------------------------------------------------------- every format
def _counts(n_cells: int, n_genes: int, seed: int) -> sp.csr_matrix:
    X = np.random.default_rng(seed).poisson(2.0, (n_cells, n_genes)).astype(np.float32)
    return sp.csr_matrix(X)


def _write_10x_h5(path: Path, X: sp.csr_matrix, barcodes: list[str]) -> None:
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["barcodes"] = np.array(barcodes, dtype="S")
        g["data"], g["indices"], g["indptr"] = X.data.astype(np.int32), X.indices, X.indptr
        g["shape"] = np.array([X.shape[1], X.shape[0]], dtype=np.int32)
        fe = g.create_group("features")
        fe["id"] = np.array(GENES, dtype="S")
        fe["name"] = np.array(GENES, dtype="S")
        fe["feature_type"] = np.array(["Gene Expression"] * len(GENES), dtype="S")


def _write_mtx(folder: Path, X: sp.csr_matrix, barcodes: list[str]) -> None:
    """An mtx folder whose entries are NOT sorted by cell (read whole with scipy.io.mmread)."""
    folder.mkdir()
    coo = X.tocoo()
    order = np.random.default_rng(1).permutation(coo.nnz)
    lines = ["%%MatrixMarket matrix coordinate integer general", f"{X.shape[1]} {X.shape[0]} {coo.nnz}"]
    lines += [f"{coo.col[i] + 1} {coo.row[i] + 1} {int(coo.data[i])}" for i in order]
    with gzip.open(folder / "matrix.mtx.gz", "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    with gzip.open(folder / "features.tsv.gz", "wt") as fh:
        fh.write("".join(f"{g}\t{g}\tGene Expression\n" for g in GENES))
    (folder / "barcodes.tsv").write_text("".join(f"{b}\n" for b in barcodes))


@pytest.fixture(scope="module")
def formats(tmp_path_factory, make_bucket) -> tuple[Path, dict[str, dict], str]:
    """One small data set per format (entries with paths relative to the folder), also uploaded to a bucket."""
    d = tmp_path_factory.mktemp("formats")
    X = _counts(40, len(GENES), seed=7)
    bc = [f"C{i}" for i in range(X.shape[0])]
    obs = pd.DataFrame({"sample": ["s1", "s2"] * 20}, index=bc)
    adata = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=GENES))
    adata.write_h5ad(d / "a.h5ad")
    adata.write_zarr(d / "a.zarr")
    ad.AnnData(X.toarray(), obs=obs, var=pd.DataFrame(index=GENES)).write_zarr(d / "dense.zarr")
    _write_10x_h5(d / "b.h5", X, bc)
    _write_mtx(d / "c_mtx", X, bc)
    dense = pd.DataFrame(X.toarray().astype(int), index=bc, columns=GENES)
    with gzip.open(d / "d.csv.gz", "wt") as fh:
        dense.to_csv(fh)  # cells x genes: streamed in chunks
    dense.T.to_csv(d / "e.tsv", sep="\t")  # genes x cells (GEO style)
    obs.to_csv(d / "obs.csv")
    entries = {
        "h5ad": {"path": "a.h5ad"},
        "zarr": {"path": "a.zarr"},
        "zarr_dense": {"path": "dense.zarr"},
        "10x_h5": {"path": "b.h5", "obs_path": "obs.csv"},
        "10x_mtx": {"path": "c_mtx"},
        "csv_gz": {"path": "d.csv.gz", "orientation": "cells_x_genes"},
        "tsv": {"path": "e.tsv"},
    }
    return d, entries, make_bucket().upload(d, "in")


def _read_all(entry: dict) -> tuple[str, pd.DataFrame, pd.DataFrame, sp.csr_matrix]:
    with open_reader(DatasetConfig(id="x", **entry)) as r:
        X = sp.vstack([x for _, x in r.chunks(16)]).tocsr()
        return r.format, r.obs, r.var, X


@pytest.mark.parametrize("kind", ["h5ad", "zarr", "zarr_dense", "10x_h5", "10x_mtx", "csv_gz", "tsv"])
def test_every_format_reads_the_same_from_s3(formats, kind):
    folder, entries, prefix = formats
    local = {k: str(folder / v) if k.endswith("path") else v for k, v in entries[kind].items()}
    remote = {k: f"{prefix}/{v}" if k.endswith("path") else v for k, v in entries[kind].items()}
    fmt_l, obs_l, var_l, X_l = _read_all(local)
    fmt_r, obs_r, var_r, X_r = _read_all(remote)
    assert fmt_r == fmt_l and X_r.shape == (40, len(GENES))
    assert (X_r != X_l).nnz == 0
    pd.testing.assert_frame_equal(obs_r, obs_l)
    pd.testing.assert_frame_equal(var_r, var_l)


# ----------------------------------------------------------------------------------------- errors
def _one_dataset_yaml(tmp_path: Path, url: str, **extra) -> Path:
    entry = {"id": "ds", "path": url, "constants": {"sample_id": "s", "patient_id": "p", "cancer_type": "CRC",
                                                    "tissue": "tumour", "platform": "10x"}, **extra}
    path = tmp_path / "ingest.yaml"
    path.write_text(yaml.safe_dump({"datasets": [entry]}))
    return path


def test_missing_bucket_key_and_credentials_exit_2_naming_the_url(formats, s3, s3_env, tmp_path, capsys):
    folder, _, _ = formats
    good = s3.upload(folder / "a.h5ad", "a.h5ad")
    out = tmp_path / "store.h5ad"
    cases = {
        "s3://atlas-no-such-bucket-x/a.h5ad": "the bucket of",
        s3.url("missing/a.h5ad"): "does not exist",
    }
    for url, words in cases.items():
        code, err = _cli(["ingest", _one_dataset_yaml(tmp_path, url), "--out", out], capsys)
        assert code == 2, err
        assert url in " ".join(err.split()) and words in err, err
    s3_env.delenv("AWS_ACCESS_KEY_ID")
    s3_env.delenv("AWS_SECRET_ACCESS_KEY")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    code, err = _cli(["ingest", _one_dataset_yaml(tmp_path, good), "--out", out], capsys)
    flat = " ".join(err.split())
    assert code == 2, err
    assert good in flat and "credentials" in flat and "AWS_ACCESS_KEY_ID" in flat, err
    assert not out.exists()


@pytest.mark.parametrize("name", ["e.tsv", "big.h5ad"])
def test_key_deleted_while_reading(formats, s3, monkeypatch, tmp_path, name):
    from atlas.core import storage

    folder, _, _ = formats
    if name == "big.h5ad":  # counts beyond the cached blocks: read after the deletion
        X = _counts(400, len(GENES), seed=3)
        ad.AnnData(X, var=pd.DataFrame(index=GENES)).write_h5ad(tmp_path / name, compression=None)
        monkeypatch.setattr(storage, "H5_BLOCK_SIZE", 1024)
    url = s3.upload((folder if name == "e.tsv" else tmp_path) / name, f"gone/{name}")
    ds = DatasetConfig(id="gone", path=url)
    with open_reader(ds) as reader:  # metadata read, counts not yet
        s3.fs.rm(url)
        with pytest.raises(InputDataError, match="does not exist") as exc:
            list(reader.chunks(16))
    assert url in str(exc.value)


def test_unknown_scheme_and_missing_package_are_config_errors():
    with pytest.raises(ConfigError, match="unknown storage scheme"):
        open_reader(DatasetConfig(id="x", path="nosuchscheme://b/a.h5ad"))


def test_urls_survive_config_loading(tmp_path):
    from atlas.ingest.settings import load_ingest_config

    path = _one_dataset_yaml(tmp_path, "s3://bucket/dir/a.h5ad", obs_path="gs://other/obs.csv")
    ds = load_ingest_config(path).datasets[0]
    assert ds.path == "s3://bucket/dir/a.h5ad" and ds.obs_path == "gs://other/obs.csv"
    assert ds.model_dump(mode="json")["path"] == "s3://bucket/dir/a.h5ad"


def test_query_input_from_s3(formats, s3):
    from atlas.query.inputs import query_ingest_config

    folder, _, _ = formats
    url = s3.upload(folder / "a.h5ad", "q/GSE1_tumour.h5ad")
    notes: list[str] = []
    cfg = query_ingest_config(url, notes=notes, species="human")
    ds = cfg.datasets[0]
    assert ds.path == url and ds.id == "GSE1_tumour" and notes
    with pytest.raises(InputDataError, match="does not exist"):
        query_ingest_config(s3.url("q/missing.h5ad"))


def test_cloud_backends_are_an_optional_extra():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert "s3fs" not in core and "gcsfs" not in core and "fsspec" in core
    extras = project["optional-dependencies"]
    assert {"s3fs", "gcsfs"} <= {d.split(">")[0].split("[")[0] for d in extras["cloud"]}
    assert any(d.startswith("moto[server]") for d in extras["test"])


@pytest.mark.slow
def test_cli_query_reads_the_query_from_s3(sim, s3, tmp_path, capsys):
    """``atlas query REFDIR s3://.../query.h5ad --out DIR``: the same result as the local file (the only CLI check)."""
    from atlas.ingest.settings import load_ingest_config
    from atlas.integrate import IntegrateSettings

    from helpers.query_fixtures import build_reference_run

    folder, cfg = sim
    full = load_ingest_config(folder / "ingest.yaml")
    ref_cfg = full.model_copy(update={"datasets": [d for d in full.datasets if d.id != "ds01_PDAC"]})
    tiny = {"n_hvgs": 300, "max_epochs": 2, "batch_size": 512, "n_latent": 8, "n_hidden": 32, "n_layers": 1,
            "early_stopping": False, "metrics": False, "min_cells_per_batch": 5}  # fmt: skip
    ref = build_reference_run(ref_cfg, tmp_path / "ref", IntegrateSettings(**tiny),
                              signatures=["T3_proxy", "blood_like", "Wu_IFIT1_ISG15"])
    entry = next(d for d in cfg["datasets"] if d["id"] == "ds01_PDAC")
    url = s3.upload(folder / entry["path"], "query/ds01_PDAC.h5ad")
    settings = tmp_path / "query.yaml"
    settings.write_text(yaml.safe_dump({"max_epochs": 2, "batch_size": 512, "calibration_cells": 200, "seed": 0}))
    common = ["--config", settings, *sum((["--obs-column", f"{k}={v}"] for k, v in entry["obs_columns"].items()), [])]
    code, out = _cli(["query", ref, url, "--out", tmp_path / "q_s3", *common], capsys)
    assert code == 0, out
    code, out = _cli(["query", ref, folder / entry["path"], "--out", tmp_path / "q_local", *common], capsys)
    assert code == 0, out
    a, b = ad.read_h5ad(tmp_path / "q_s3" / "query.h5ad"), ad.read_h5ad(tmp_path / "q_local" / "query.h5ad")
    assert a.n_obs > 0 and list(a.obs_names) == list(b.obs_names)
    assert (sp.csr_matrix(a.X) != sp.csr_matrix(b.X)).nnz == 0
