"""simulate -> ingest through the CLI and through `atlas run`, checked against the interface later stages rely on."""

import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import sparse

from atlas.ingest.settings import SCHEMA_FIELDS, TISSUES

N_CELLS, N_DATASETS, N_GENES = 3000, 7, 2500


def _atlas(*args):
    res = subprocess.run([sys.executable, "-m", "atlas.cli", "-q", *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    _atlas("simulate", "--out", str(out), "--n-cells", str(N_CELLS), "--n-datasets", str(N_DATASETS),
           "--n-genes", str(N_GENES), "--seed", "3")
    return out


@pytest.fixture(scope="module")
def store(simulated):
    path = simulated.parent / "store.h5ad"
    _atlas("ingest", str(simulated / "ingest.yaml"), "--out", str(path))
    return path


def test_store_interface(store):
    a = ad.read_h5ad(store)
    assert sparse.issparse(a.X) and a.X.format == "csr"
    x = a.X.data
    assert np.all(x >= 0) and np.all(x == np.round(x))
    assert a.obs_names.is_unique and a.var_names.is_unique
    for col in [*SCHEMA_FIELDS, "truth_cell_type", "truth_state", "truth_pseudotime"]:
        assert col in a.obs, col
    assert set(a.obs["tissue"].unique()) <= set(TISSUES)
    assert set(a.obs["species"].unique()) == {"human", "mouse"}
    assert a.obs["dataset_id"].nunique() == N_DATASETS
    assert a.obs["cancer_type"].nunique() >= 6
    # genes: current human symbols only (no Ensembl ids, no mouse symbols, outdated ones renamed)
    names = a.var_names
    assert not names.str.startswith("ENS").any()
    assert "CXCL8" in names and "IL8" not in names
    from atlas.catalogue.genes import human_genes, mouse_genes

    mouse_only = set(mouse_genes()["symbol"]) - set(human_genes()["symbol"])
    assert not mouse_only & set(names), "mouse symbols left in the store"
    assert len(set(names) - set(human_genes()["symbol"])) < 0.01 * len(names)
    # truth is carried, never invented: neutrophil states only on neutrophils
    neu = a.obs["truth_cell_type"].astype(str) == "neutrophil"
    state = a.obs["truth_state"].astype(object).fillna("")  # csv metadata reads "" back as missing
    assert (state[~neu] == "").all() and (state[neu] != "").all()
    assert a.obs.loc[neu, "truth_pseudotime"].notna().all()
    assert a.obs.loc[~neu, "truth_pseudotime"].isna().all()


def test_truth_and_counts_carried_unchanged_for_an_h5ad_dataset(simulated, store):
    cfg = yaml.safe_load((simulated / "ingest.yaml").read_text())
    d = next(d for d in cfg["datasets"] if d["path"].endswith(".h5ad") and d.get("counts", "X") == "X"
             and d.get("species", "human") == "human" and d.get("gene_ids", "auto") != "ensembl")
    src = ad.read_h5ad(simulated / d["path"])
    a = ad.read_h5ad(store)
    sub = a[a.obs["dataset_id"] == d["id"]]
    kept = [n.split(":", 1)[1] for n in sub.obs_names]
    src = src[kept]
    assert (sub.obs["truth_state"].astype(str).values == src.obs["truth_state"].astype(str).values).all()
    genes = [g for g in src.var_names if g in a.var_names][:200]
    np.testing.assert_array_equal(sub[:, genes].X.toarray(), src[:, genes].X.toarray())


def test_qc_table_accounts_for_every_cell(simulated, store):
    import pandas as pd

    qc = pd.read_csv(store.with_name("store.qc.csv"), index_col=0)
    a = ad.read_h5ad(store, backed="r")
    assert qc["cells_out"].sum() == a.n_obs
    assert (qc["cells_in"] >= qc["cells_out"]).all()
    assert qc["cells_in"].sum() >= N_CELLS * 0.9  # droplet data sets under-capture, but files hold the cells


def test_ingest_refuses_existing_store(simulated, store):
    res = subprocess.run([sys.executable, "-m", "atlas.cli", "ingest", str(simulated / "ingest.yaml"),
                          "--out", str(store)], capture_output=True, text=True)
    assert res.returncode == 2 and "--overwrite" in res.stderr


def test_atlas_run_resumes_and_skips(tmp_path):
    cfg = {"name": "e2e", "run_dir": str(tmp_path / "run"),
           "simulate": {"n_cells": 1200, "n_datasets": 6, "n_genes": 2000, "seed": 1},
           "integrate": {"n_hvgs": 300, "max_epochs": 2, "batch_size": 512, "metrics": False,
                         "min_cells_per_batch": 5}}
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    first = _atlas("run", str(cfg_path))
    assert "ran: simulate" in first.stdout and "integrate" in first.stdout
    second = _atlas("run", str(cfg_path))
    assert "skipped (unchanged): simulate, ingest, integrate, score, analyse, report" in second.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert set(manifest) == {"simulate", "ingest", "integrate", "score", "analyse", "report"}
    assert (tmp_path / "run" / "report.html").exists() and (tmp_path / "run" / "atlas.h5ad").exists()
    uns = ad.read_h5ad(tmp_path / "run" / "atlas.h5ad", backed="r").uns
    ct = uns["cell_type_rule"]  # what a query needs to annotate itself with the analysis's markers and rule
    assert "neutrophil" in ct["cell_type_markers"] and float(ct["cell_types"]["max_runner_up_ratio"]) == 0.5
    rule = uns["state_rule"]
    assert rule["cells"] == "own" and "T3" in rule["cell_cuts"]  # the state rule the report's caption names
    assert set(rule["evidence_weight"]) == set(rule["cell_cuts"]) and rule["state_shrink_evidence"]
    # what a query needs to call its own cells with the same rule: units, cuts and the programmes read
    assert set(rule["z_loc"]) == set(rule["z_scale"]) == set(rule["cell_cuts"]) == set(rule["signatures_read"])
    assert all(float(v) > 0 for v in rule["z_scale"].values())
    read = {c for cols in rule["signatures_read"].values() for c in cols}
    assert set(rule.get("programmes", {})) <= read and all(c.endswith("_refined") for c in rule.get("programmes", {}))
    report = (tmp_path / "run" / "report.html").read_text()
    assert "chosen by each cell&#x27;s own unsmoothed evidence" in report
    assert 'data-table="metadata"' in report  # the simulator's platforms are read as atlas's labels (10x_3p -> 10x 3')
    ref = ad.read_h5ad(tmp_path / "run" / "reference" / "atlas.h5ad")
    assert {"X_scVI", "X_umap"} <= set(ref.obsm) and "leiden" in ref.obs and "truth_state" in ref.obs
    scores = pd.read_parquet(tmp_path / "run" / "scores.parquet")
    assert "T3_proxy" in scores.columns and scores.notna().all().all()
    assert ad.read_h5ad(tmp_path / "run" / "store.h5ad", backed="r").n_obs > 500
    # changed score settings rerun score and what follows it, nothing before it (--until: the report's
    # rerun is the same code as the first run's, left out to keep the suite fast)
    cfg["score"] = {"method": "ucell", "signatures": ["T3_proxy", "blood_like"]}
    cfg_path.write_text(yaml.safe_dump(cfg))
    third = _atlas("run", str(cfg_path), "--until", "analyse")
    assert "skipped (unchanged): simulate, ingest, integrate" in third.stdout
    ran = third.stdout.split("ran: ", 1)[1].splitlines()[0]
    assert [part.split(" (")[0] for part in ran.split(", ")] == ["score", "analyse"]
    assert list(pd.read_parquet(tmp_path / "run" / "scores.parquet").columns) == ["T3_proxy", "blood_like"]


def test_score_cli_separates_t3_neutrophils(store, tmp_path):
    out = tmp_path / "scores.parquet"
    _atlas("score", str(store), "--out", str(out), "-s", "T3_proxy", "-s", "blood_like", "--chunk-size", "500")
    scores = pd.read_parquet(out)
    obs = ad.read_h5ad(store, backed="r").obs.loc[scores.index]
    state = obs["truth_state"].astype(object).fillna("")
    t3, mature = scores[state == "T3"], scores[state == "mature"]
    assert t3["T3_proxy"].mean() > mature["T3_proxy"].mean() + 0.5
    assert t3["blood_like"].mean() < mature["blood_like"].mean()
    res = subprocess.run([sys.executable, "-m", "atlas.cli", "score", str(store), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--overwrite" in res.stderr
