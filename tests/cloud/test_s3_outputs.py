"""Commands whose run, reference or outputs are in object storage (moto's S3 server on 127.0.0.1; see conftest.py).

* ``atlas score s3://.../store.zarr --out s3://.../scores.parquet`` streams row chunks from the bucket and
  gives exactly the local scores (zarr store as ``atlas run`` writes it with ``store_format: zarr``, and h5ad);
* ``atlas query s3://RUN QUERY --out s3://OUT``: the reference is copied to a local cache (reused while its
  fingerprints are unchanged), the results are built locally and uploaded;
* ``atlas report s3://RUN``: report.html and figures/ appear under the run's URL;
* a missing key or bucket exits 2 naming the URL; a failed upload keeps the local results.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest
import yaml

from atlas.cli import main
from atlas.core import storage
from atlas.core.errors import InputDataError

pytestmark = pytest.mark.filterwarnings("ignore:Writing zarr v2 data:UserWarning")

SIGNATURES = ["T3_proxy", "blood_like", "Wu_IFIT1_ISG15"]
TINY_INTEGRATE = {"n_hvgs": 300, "max_epochs": 2, "batch_size": 512, "n_latent": 8, "n_hidden": 32, "n_layers": 1,
                  "early_stopping": False, "metrics": False, "min_cells_per_batch": 5}  # fmt: skip


def _cli(args: list, capsys) -> tuple[int, str]:
    """Exit status and stdout + stderr of ``atlas ARGS`` (in process)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return int(exc.value.code), captured.out + captured.err


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """A fresh $ATLAS_CACHE_DIR per test (never the user's ~/.cache/atlas)."""
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Three small simulated data sets (300 cells) and their ingest config."""
    from atlas.ingest.settings import load_ingest_config
    from atlas.simulate import simulate

    out = tmp_path_factory.mktemp("s3out") / "sim"
    simulate(out, n_cells=300, n_datasets=3, n_genes=2000, seed=0, n_jobs=1)
    return out, load_ingest_config(out / "ingest.yaml")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """The same 450 cells as ``store.zarr`` and ``store.h5ad``, written by ingest's store writer in row chunks
    (as ``atlas run`` writes its store, ``store_format: zarr`` or ``h5ad``)."""
    import numpy as np
    import scipy.sparse as sp

    from atlas.ingest.store import StoreWriter
    from atlas.score import show_signature

    genes = sorted({g for s in SIGNATURES for g in show_signature(s)["genes"]}) + [f"FILL{i:04d}" for i in range(500)]
    rng = np.random.default_rng(0)
    X = rng.poisson(rng.gamma(0.3, 2.0, len(genes)), (450, len(genes))).astype(np.float32)
    folder = tmp_path_factory.mktemp("stores")
    out = {}
    for fmt in ("zarr", "h5ad"):
        w = StoreWriter(folder / f"store.{fmt}", len(genes), fmt=fmt)
        for start in range(0, X.shape[0], 150):
            w.append(sp.csr_matrix(X[start : start + 150]))
        w.finish(obs=pd.DataFrame(index=[f"c{i}" for i in range(X.shape[0])]), var=pd.DataFrame(index=genes))
        out[fmt] = folder / f"store.{fmt}"
    return out


# ------------------------------------------------------------------------------------------ score
@pytest.mark.parametrize("fmt", ["zarr", "h5ad"])
def test_score_a_store_on_s3_equals_local(fmt, stores, s3, tmp_path, capsys):
    local = stores[fmt]
    url = s3.upload(local, f"run/store.{fmt}")
    opts = ["--chunk-size", 100, *sum((["-s", s] for s in SIGNATURES), [])]  # several chunks
    code, out = _cli(["score", url, "--out", s3.url("run/scores.parquet"), *opts], capsys)
    assert code == 0, out
    assert "written to s3://" in out
    assert not any(p.name.endswith(".genestats.parquet") for p in tmp_path.rglob("*"))  # nothing beside the URL
    code, out = _cli(["score", local, "--out", tmp_path / "local.parquet", *opts], capsys)
    assert code == 0, out
    s3.fs.get_file(s3.url("run/scores.parquet"), str(tmp_path / "remote.parquet"))
    remote, here = pd.read_parquet(tmp_path / "remote.parquet"), pd.read_parquet(tmp_path / "local.parquet")
    assert here.shape == (450, len(SIGNATURES)) and here.notna().all().all()
    pd.testing.assert_frame_equal(remote, here, check_exact=True)
    code, out = _cli(["score", url, "--out", s3.url("run/scores.parquet"), *opts], capsys)
    assert code == 2 and "already exists" in out and "--overwrite" in out


def test_score_missing_store_or_bucket_exits_2_naming_the_url(s3, tmp_path, capsys):
    for url, says in ((s3.url("nope/store.zarr"), "does not exist"),
                      ("s3://atlas-no-such-bucket-x/store.h5ad", "the bucket of")):  # fmt: skip
        code, out = _cli(["score", url, "--out", tmp_path / "x.parquet"], capsys)
        assert code == 2 and url in out and says in out, out
        assert "Traceback" not in out and not (tmp_path / "x.parquet").exists()


def test_score_out_to_a_missing_bucket_exits_2_before_scoring(stores, s3, capsys):
    out_url = "s3://atlas-no-such-bucket-x/scores.parquet"
    code, out = _cli(["score", s3.upload(stores["h5ad"], "s.h5ad"), "--out", out_url], capsys)
    assert code == 2 and "s3://atlas-no-such-bucket-x" in out and "does not exist" in out, out
    assert "signature scores" not in out


def test_a_failed_upload_keeps_the_scores_and_says_where(stores, s3, monkeypatch):
    from atlas.score import score_store

    def refuse(local, url, what=""):
        raise InputDataError(f"{what}access to {url} was denied")

    monkeypatch.setattr(storage, "upload", refuse)
    with pytest.raises(InputDataError, match="The results are complete in") as err:
        score_store(stores["zarr"], ["T3_proxy"], out_path=s3.url("out/scores.parquet"), chunk_size=100)
    kept = Path(str(err.value).split("complete in ", 1)[1].split(":", 1)[0])
    assert kept.is_file() and len(pd.read_parquet(kept)) > 0
    kept.unlink()
    kept.parent.rmdir()


# ------------------------------------------------------------------------------------------ query
QC = {"enabled": True, "thresholds": {"mode": "fixed", "min_counts": 123}, "doublets": True}


def _fake_run(root: Path) -> Path:
    """The files of a run directory that the query reads (placeholders), with a zarr store recording its QC."""
    import numpy as np

    for rel in ("reference/model/model.pt", "reference/hvg.txt", "reference/atlas.h5ad", "reference/config.json",
                "reference/versions.json", "atlas.h5ad", "scores.parquet"):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "config.resolved.yaml").write_text(yaml.safe_dump({"name": "r", "store_format": "zarr"}))
    store = ad.AnnData(X=np.zeros((3, 2), dtype=np.float32))
    store.uns["atlas"] = {"stage": "ingest", "config_json": json.dumps({"qc": QC})}
    store.write_zarr(root / "store.zarr")
    return root


def test_reference_is_cached_by_fingerprint_and_qc_read_in_place(s3, tmp_path, _cache):
    from atlas.query.reference import fetch_reference

    url = s3.upload(_fake_run(tmp_path / "run"), "runs/r1")
    calls = []
    real = storage.download
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(storage, "download", lambda u, local, what="": calls.append(u) or real(u, local, what))
        local, qc = fetch_reference(url)
        cache = storage.cache_dir("references", url)
        assert local == cache and cache.is_relative_to(_cache) and qc == QC
        assert sorted(calls) == sorted(f"{url}/{p}" for p in ("reference", "atlas.h5ad", "config.resolved.yaml"))
        assert (cache / "reference" / "model" / "model.pt").read_text() == "reference/model/model.pt"
        assert not (cache / "store.zarr").exists() and not (cache / "scores.parquet").exists()  # never copied
        calls.clear()
        assert fetch_reference(url) == (cache, QC) and calls == []  # unchanged: reused
        s3.fs.pipe_file(f"{url}/reference/hvg.txt", b"A B C")
        s3.fs.rm(f"{url}/atlas.h5ad")
        fetch_reference(url)
        assert calls == [f"{url}/reference"] and (cache / "reference" / "hvg.txt").read_text() == "A B C"
        assert not (cache / "atlas.h5ad").exists()  # gone from the bucket: dropped
        bundle, qc = fetch_reference(f"{url}/reference")  # a bare bundle
        assert qc is None and (bundle / "hvg.txt").read_text() == "A B C" and bundle != cache


@pytest.fixture(scope="module")
def ref_run(sim, tmp_path_factory):
    """A tiny reference run directory (two data sets; the third is the query) and the query's entry."""
    from atlas.integrate import IntegrateSettings

    from helpers.query_fixtures import build_reference_run

    folder, cfg = sim
    ref_cfg = cfg.model_copy(update={"datasets": cfg.datasets[1:]})
    run = build_reference_run(ref_cfg, tmp_path_factory.mktemp("ref") / "run", IntegrateSettings(**TINY_INTEGRATE),
                              signatures=SIGNATURES)  # fmt: skip
    (run / "config.resolved.yaml").write_text(yaml.safe_dump({"name": "ref", "store_format": "h5ad"}))
    return run, cfg.datasets[0]


@pytest.mark.slow
def test_query_with_reference_and_out_on_s3(ref_run, s3, tmp_path, capsys, _cache):
    """``atlas query s3://RUN QUERY --out s3://OUT`` end to end (tiny reference, one epoch)."""
    from atlas.query.reference import _run_qc, fetch_reference

    run, query = ref_run
    ref_url = s3.upload(run, "runs/ref")
    settings = tmp_path / "query.yaml"
    settings.write_text(yaml.safe_dump({"max_epochs": 1, "batch_size": 512, "calibration_cells": 100, "seed": 0,
                                        "report": False, "save_model": False}))  # fmt: skip
    cols = sum((["--obs-column", f"{k}={v}"] for k, v in query.obs_columns.items()), [])
    consts = sum((["--constant", f"{k}={v}"] for k, v in query.constants.items()), [])
    out_url = s3.url("results/q1")
    code, out = _cli(["query", ref_url, query.path, "--out", out_url, "--config", settings, *cols, *consts], capsys)
    assert code == 0, out
    assert f"written to {out_url}" in out
    keys = {k.split("results/q1/", 1)[1] for k in s3.fs.find(out_url)}
    assert {"query.h5ad", "query.json", "store.h5ad", "tables/predictions.csv"} <= keys
    summary = json.loads(s3.fs.cat_file(f"{out_url}/query.json"))
    assert summary["reference"]["path"] == ref_url and summary["n_cells"] > 0

    # the local cache: the bundle, the annotated atlas and the config; never the store
    cache = storage.cache_dir("references", ref_url)
    assert cache.is_relative_to(_cache) and (cache / "reference" / "model" / "model.pt").is_file()
    assert (cache / "atlas.h5ad").is_file() and not (cache / "store.h5ad").exists()
    # reused while unchanged; a changed part is downloaded again; QC read from the store in the bucket
    calls = []
    real = storage.download
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(storage, "download", lambda url, local, what="": calls.append(url) or real(url, local, what))
        local, qc = fetch_reference(ref_url)
        assert local == cache and calls == [] and qc == _run_qc(run) and qc is not None
        s3.fs.pipe_file(f"{ref_url}/config.resolved.yaml", b"name: ref\nstore_format: h5ad\nseed: 1\n")
        fetch_reference(ref_url)
        assert calls == [f"{ref_url}/config.resolved.yaml"]

    code, out = _cli(["query", ref_url, query.path, "--out", out_url, "--config", settings, *cols, *consts], capsys)
    assert code == 2 and "already exists" in out


def test_query_missing_reference_or_bucket_exits_2_naming_the_url(s3, tmp_path, capsys):
    query = tmp_path / "q.h5ad"  # never reached: the reference is checked first
    s3.fs.pipe_file(s3.url("notaref/readme.txt"), b"x")
    for url, says in ((s3.url("runs/missing"), "does not exist"),
                      ("s3://atlas-no-such-bucket-x/run", "the bucket of"),
                      (s3.url("notaref"), "neither a run directory")):  # fmt: skip
        code, out = _cli(["query", url, query, "--out", tmp_path / "q"], capsys)
        assert code == 2 and url in out and says in out, out
        assert "Traceback" not in out and not (tmp_path / "q").exists()
    code, out = _cli(["query", s3.url("notaref"), query, "--out", "s3://atlas-no-such-bucket-x/q"], capsys)
    assert code == 2 and "the bucket s3://atlas-no-such-bucket-x does not exist" in out, out
    ref = s3.url("notaref")
    for out_url in (ref, s3.url()):  # the reference itself, a prefix holding it
        code, out = _cli(["query", ref, query, "--out", out_url, "--overwrite"], capsys)
        assert code == 2 and "would overwrite the reference" in out, out


# ----------------------------------------------------------------------------------------- report
def test_report_on_a_run_in_s3(s3, tmp_path, capsys, _cache):
    from helpers.report_fixtures import synthetic_run_dir

    run = synthetic_run_dir(tmp_path / "run", n_cells=400)
    url = s3.upload(run, "runs/demo")
    code, out = _cli(["--quiet", "report", url], capsys)
    assert code == 0, out
    assert f"report written to {url}/report.html" in out
    html = s3.fs.cat_file(f"{url}/report.html").decode()
    assert "<html" in html.lower() and url in html
    from helpers.report_html import frame, parse_report

    (tmp_path / "got.html").write_text(html)
    prov = frame(parse_report(tmp_path / "got.html"), "provenance")
    assert url in prov.to_string() and "local copy" in prov.to_string()  # the run's URL, not the cache path
    figures = s3.fs.find(f"{url}/figures")
    assert any(f.endswith(".png") for f in figures) and any(f.endswith(".pdf") for f in figures)
    cache = storage.cache_dir("runs", url)
    assert (cache / "atlas.h5ad").is_file() and (cache / "tables").is_dir()
    assert not (cache / "report.html").exists()  # written in a temporary folder, uploaded, removed
    code, out = _cli(["--quiet", "report", s3.url("runs/none")], capsys)
    assert code == 2 and s3.url("runs/none") in out and "does not exist" in out
    s3.fs.pipe_file(s3.url("runs/other/x.txt"), b"x")
    code, out = _cli(["--quiet", "report", s3.url("runs/other")], capsys)
    assert code == 2 and "not an atlas run directory" in out
