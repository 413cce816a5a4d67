"""`atlas run` SIGKILLed inside a stage resumes and ends with the same outputs as an uninterrupted run.

Kills land deterministically through the test-only ``ATLAS_TEST_KILL_AT`` points
(atlas/pipeline/_killpoints.py). The store, scores and reference bundle are compared with tolerance 0;
the analyse stage's own calls are compared as far as that stage is reproducible (see _same_analysis).
"""

import json
import os
import signal
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import sparse

from atlas.simulate import simulate

TINY = {"n_cells": 1500, "n_datasets": 4, "n_genes": 2000, "seed": 1}
INTEGRATE = {"n_hvgs": 300, "max_epochs": 2, "batch_size": 512, "metrics": False, "min_cells_per_batch": 5}
ANALYSE = {"subatlas": {"max_epochs": 2, "batch_size": 256}}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    simulate(out, **TINY)
    return out


def _config(tmp_path, sim, name, **extra):
    cfg = {"name": "tiny", "run_dir": str(tmp_path / name), "ingest": str(sim / "ingest.yaml"),
           "integrate": INTEGRATE, "analyse": ANALYSE, "report": False, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, tmp_path / name


def _run(cfg, *args, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != "ATLAS_TEST_KILL_AT"}
    if kill_at:
        env["ATLAS_TEST_KILL_AT"] = kill_at
    res = subprocess.run([sys.executable, "-m", "atlas.cli", "-q", "run", str(cfg), *args], capture_output=True,
                         text=True, env=env, timeout=900)
    if kill_at:
        assert res.returncode == -signal.SIGKILL, f"no kill at {kill_at}: rc={res.returncode}\n{res.stderr}"
        assert f"ATLAS_TEST_KILL_AT: killing this process (SIGKILL) at {kill_at}" in res.stderr
    else:
        assert res.returncode == 0, res.stderr
    return res


def _manifest(run):
    f = run / "manifest.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _temporaries(run):
    return sorted(p.name for p in run.rglob(".atlas-tmp-*"))


def _same_anndata(a_path, b_path, *, obsm=True):
    a, b = ad.read_h5ad(a_path), ad.read_h5ad(b_path)
    pd.testing.assert_frame_equal(a.obs, b.obs, check_exact=True)
    pd.testing.assert_frame_equal(a.var, b.var, check_exact=True)
    if a.X is not None or b.X is not None:
        xa, xb = (sparse.csr_matrix(m) for m in (a.X, b.X))
        assert xa.shape == xb.shape and (xa != xb).nnz == 0, f"{a_path.name}: X differs"
    if obsm:
        assert set(a.obsm) == set(b.obsm)
        for k in a.obsm:
            np.testing.assert_array_equal(np.asarray(a.obsm[k]), np.asarray(b.obsm[k]), err_msg=k)


def _same_tables(a_dir, b_dir):
    names = sorted(p.name for p in a_dir.glob("*.csv"))
    assert names == sorted(p.name for p in b_dir.glob("*.csv"))
    for n in names:
        assert (a_dir / n).read_bytes() == (b_dir / n).read_bytes(), n


def _same_store(a, b):
    _same_anndata(a / "store.h5ad", b / "store.h5ad")
    for side in ("qc", "genes", "neutrophils"):
        assert (a / f"store.{side}.csv").read_bytes() == (b / f"store.{side}.csv").read_bytes(), side


def test_killed_during_ingest_resumes_to_the_same_store(tmp_path, sim):
    base_cfg, base = _config(tmp_path, sim, "base")
    _run(base_cfg, "--until", "ingest")
    cfg, run = _config(tmp_path, sim, "killed")
    # 1. the store is complete under its temporary name, not yet renamed
    _run(cfg, "--until", "ingest", kill_at="ingest:rename:store.h5ad")
    assert not (run / "store.h5ad").exists() and any(n.endswith("store.h5ad") for n in _temporaries(run))
    assert "ingest" not in _manifest(run)
    # 2. the store is in place, its side tables are not: the stage must not count as done
    _run(cfg, "--until", "ingest", kill_at="ingest:rename:store.qc.csv")
    assert (run / "store.h5ad").exists() and not (run / "store.qc.csv").exists()
    assert "ingest" not in _manifest(run)
    # 3. everything written, the manifest not yet updated
    _run(cfg, "--until", "ingest", kill_at="ingest:end")
    assert "ingest" not in _manifest(run)
    res = _run(cfg, "--until", "ingest")
    assert "ran: ingest" in res.stdout
    assert _temporaries(run) == []
    _same_store(base, run)
    assert "skipped (unchanged): ingest" in _run(cfg, "--until", "ingest").stdout


def _same_analysis(a_dir, b_dir):
    """The analyse stage's outputs: exact where analyse is reproducible, near-equal where it is not.

    Known issue (reported, atlas/analyse): analyse on bit-identical inputs is not bit-reproducible from
    run to run, with or without an interruption (2 of ~115 neutrophil states and 4 of ~1,400 cell types
    flipped on this data). Columns it takes from the store and the reference bundle must match exactly.
    """
    a, b = ad.read_h5ad(a_dir / "atlas.h5ad"), ad.read_h5ad(b_dir / "atlas.h5ad")
    assert a.obs_names.equals(b.obs_names) and list(a.obs) == list(b.obs)
    upstream = [c for c in ad.read_h5ad(a_dir / "reference" / "atlas.h5ad", backed="r").obs if c in a.obs]
    pd.testing.assert_frame_equal(a.obs[upstream], b.obs[upstream], check_exact=True)
    for col, min_agreement in (("cell_type", 0.99), ("neutrophil_state", 0.95)):
        same = (a.obs[col].astype(str) == b.obs[col].astype(str)).mean()
        assert same >= min_agreement, f"{col}: only {same:.1%} of cells agree"
    assert sorted(p.name for p in (a_dir / "tables").iterdir()) == sorted(p.name for p in (b_dir / "tables").iterdir())


@pytest.mark.slow
def test_killed_during_ingest_integrate_and_analyse_resumes_to_the_same_outputs(tmp_path, sim):
    base_cfg, base = _config(tmp_path, sim, "base")
    _run(base_cfg)
    cfg, run = _config(tmp_path, sim, "killed")
    _run(cfg, kill_at="ingest:rename:store.qc.csv")
    assert set(_manifest(run)) == set()
    _run(cfg, kill_at="integrate:rename:reference")  # the bundle is complete under its temporary name
    assert set(_manifest(run)) == {"ingest"} and not (run / "reference").exists()
    _run(cfg, kill_at="analyse:rename:atlas.h5ad")  # tables/ in place, atlas.h5ad not
    assert set(_manifest(run)) == {"ingest", "integrate", "score"} and (run / "tables").exists()
    res = _run(cfg)
    assert "ran: analyse" in res.stdout and "skipped (unchanged): ingest, integrate, score" in res.stdout
    assert _temporaries(run) == []
    # tolerance 0: scVI on CPU with the same seed is bit-reproducible here (latent, UMAP, Leiden included)
    _same_store(base, run)
    pd.testing.assert_frame_equal(pd.read_parquet(base / "scores.parquet"), pd.read_parquet(run / "scores.parquet"),
                                  check_exact=True)
    _same_anndata(base / "reference" / "atlas.h5ad", run / "reference" / "atlas.h5ad")
    _same_analysis(base, run)
