"""A tiny simulated reference run and query, built once per session.

Six simulated data sets (2,400 cells): ds03-ds06 (NSCLC 10x mtx, CRC csv, BRCA outdated symbols,
melanoma Smart-seq2) make the reference, with its B cells removed; ds02 (HCC, Ensembl IDs, counts in
layers/counts) is the query, ds01 (a mouse PDAC model) the mouse query. scVI is sized down to
seconds (few HVGs, 3 epochs, big batches); the reference is annotated from the ground truth.
"""

from __future__ import annotations

import logging
import shutil

import pytest

from atlas.ingest.settings import load_ingest_config
from atlas.integrate import IntegrateSettings

TINY_INTEGRATE = {"n_hvgs": 400, "max_epochs": 3, "batch_size": 512, "n_latent": 8, "n_hidden": 32, "n_layers": 1,
                  "early_stopping": False, "metrics": False, "min_cells_per_batch": 5}  # fmt: skip
TINY_QUERY = {"max_epochs": 2, "batch_size": 512, "calibration_cells": 500}
SIGNATURES = ["T3_proxy", "blood_like", "Wu_IFIT1_ISG15"]


@pytest.fixture(autouse=True)
def _quiet_lightning():
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.WARNING)


@pytest.fixture
def tiny():
    """Query settings sized for tests."""
    return dict(TINY_QUERY)


@pytest.fixture
def tiny_integrate():
    """Integrate settings sized for tests."""
    return dict(TINY_INTEGRATE)


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    from atlas.simulate import simulate

    return simulate(tmp_path_factory.mktemp("qsim") / "sim", n_cells=2400, n_datasets=6, n_genes=2000, seed=3,
                    n_jobs=1)  # fmt: skip


@pytest.fixture(scope="session")
def ingest_cfg(sim):
    return load_ingest_config(sim.ingest_config)


def _subset(cfg, ids):
    return cfg.model_copy(update={"datasets": [d for d in cfg.datasets if d.id in ids]})


@pytest.fixture(scope="session")
def query_cfg(ingest_cfg):
    """The held-out human data set (Ensembl IDs) as an ingest config."""
    return _subset(ingest_cfg, {"ds02_HCC"})


@pytest.fixture(scope="session")
def mouse_cfg(ingest_cfg):
    """The held-out mouse data set (mouse symbols) as an ingest config."""
    return _subset(ingest_cfg, {"ds01_PDAC_mouse_KPC"})


@pytest.fixture(scope="session")
def ref_run(tmp_path_factory, ingest_cfg):
    """A reference run directory (ds03-ds06, no B cells), annotated from the ground truth."""
    from helpers.query_fixtures import build_reference_run

    cfg = _subset(ingest_cfg, {"ds03_NSCLC", "ds04_CRC", "ds05_BRCA", "ds06_melanoma"})
    return build_reference_run(cfg, tmp_path_factory.mktemp("qref") / "run", IntegrateSettings(**TINY_INTEGRATE),
                               drop_cell_types=("B",), signatures=SIGNATURES)  # fmt: skip


@pytest.fixture(scope="session")
def mapped(tmp_path_factory, ref_run, query_cfg):
    """The query mapped onto the reference run with the Python API."""
    from atlas.query import map_query

    out = tmp_path_factory.mktemp("qout") / "query"
    result = map_query(ref_run, query_cfg, out, **TINY_QUERY)
    return result


@pytest.fixture
def run_copy(ref_run, tmp_path):
    """A copy of the reference run to damage (only the files the query reads)."""
    dst = tmp_path / "run"
    dst.mkdir()
    shutil.copytree(ref_run / "reference", dst / "reference")
    shutil.copy(ref_run / "atlas.h5ad", dst / "atlas.h5ad")
    return dst
