"""The query finds a reference run's store and its QC settings, whatever the store's format."""

import json

import anndata as ad
import numpy as np
import pytest
import yaml

from atlas.core.layout import RunLayout
from atlas.query.reference import _run_qc

pytestmark = pytest.mark.filterwarnings("ignore:Writing zarr v2 data:UserWarning")

QC = {"enabled": True, "thresholds": {"mode": "fixed", "min_counts": 123}, "doublets": True}


def _run_dir(tmp_path, store_format: str, *, resolved: bool = True):
    """A minimal run directory: a store recording its ingest config, and the resolved pipeline config."""
    layout = RunLayout(tmp_path / "run", store_format)
    layout.root.mkdir()
    store = ad.AnnData(X=np.zeros((3, 2), dtype=np.float32))
    store.uns["atlas"] = {"stage": "ingest", "config_json": json.dumps({"qc": QC, "join": "outer"})}
    getattr(store, f"write_{store_format}")(layout.store)
    if resolved:
        cfg = {"name": "r", "run_dir": str(layout.root), "seed": 0, "store_format": store_format}
        layout.config_resolved.write_text(yaml.safe_dump(cfg))
    return layout.root


@pytest.mark.parametrize("store_format", ["h5ad", "zarr"])
def test_reference_qc_from_the_runs_store(tmp_path, store_format):
    assert _run_qc(_run_dir(tmp_path, store_format)) == QC


def test_reference_qc_from_a_zarr_store_without_resolved_config(tmp_path):
    assert _run_qc(_run_dir(tmp_path, "zarr", resolved=False)) == QC


def test_reference_qc_falls_back_to_the_resolved_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = {"name": "r", "run_dir": str(run), "store_format": "zarr", "ingest": {"datasets": [], "qc": QC}}
    (run / "config.resolved.yaml").write_text(yaml.safe_dump(cfg))
    assert _run_qc(run) == QC


def test_reference_qc_none_without_store_or_config(tmp_path):
    assert _run_qc(tmp_path) is None
