"""RunLayout: every path of a run directory, named once."""

from pathlib import Path

import pytest
import yaml

from atlas.core.layout import STORE_TABLES, RunLayout
from atlas.ingest.genestats import sidecar_path
from atlas.ingest.stage import side_table_path
from atlas.pipeline.config import PipelineConfig
from atlas.pipeline.rundir import RunDir
from atlas.pipeline.stages import INGEST, REPORT, Context

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_store_and_its_tables(tmp_path, fmt):
    lay = RunLayout(tmp_path, fmt)
    assert lay.store == tmp_path / f"store.{fmt}"
    # the names ingest and the gene-stats cache derive from the store's path
    assert lay.store_tables == [side_table_path(lay.store, n) for n in STORE_TABLES]
    assert lay.store_genestats == sidecar_path(lay.store)


def test_paths(tmp_path):
    lay = RunLayout(str(tmp_path))
    assert lay.root == tmp_path and lay.store_format == "h5ad"
    assert lay.reference_atlas == tmp_path / "reference" / "atlas.h5ad"
    assert lay.reference_metrics.name == "metrics.csv" and lay.reference_versions.parent == lay.reference
    assert lay.table("cancer_types") == tmp_path / "tables" / "cancer_types.csv"
    assert lay.table("ranking", ".parquet").name == "ranking.parquet"
    assert lay.ingest_yaml == tmp_path / "data" / "ingest.yaml"
    assert (lay.report, lay.figures) == (tmp_path / "report.html", tmp_path / "figures")


def test_unknown_store_format():
    with pytest.raises(ValueError, match="store_format='loom'"):
        RunLayout(Path("r"), "loom")


def test_of_reads_the_resolved_config(tmp_path):
    (tmp_path / "store.h5ad").touch()  # the config wins over what lies on disk
    (tmp_path / "config.resolved.yaml").write_text(yaml.safe_dump({"name": "r", "store_format": "zarr"}))
    assert RunLayout.of(tmp_path).store == tmp_path / "store.zarr"


@pytest.mark.parametrize(("present", "fmt"), [((), "h5ad"), (("store.zarr",), "zarr"),
                                               (("store.h5ad", "store.zarr"), "h5ad")])
def test_of_without_config_finds_the_store(tmp_path, present, fmt):
    (tmp_path / "config.resolved.yaml").write_text(":: not yaml [")
    for name in present:
        (tmp_path / name).mkdir()
    assert RunLayout.of(tmp_path).store_format == fmt


def test_stages_use_the_layout(tmp_path):
    cfg = PipelineConfig(name="r", run_dir=tmp_path, store_format="zarr", simulate={"n_cells": 300})
    ctx = Context(config=cfg)
    lay = RunLayout(tmp_path, "zarr")
    assert ctx.layout == lay
    assert INGEST.outputs(ctx) == [lay.store, *lay.store_tables, lay.store_removed]
    assert REPORT.outputs(ctx) == [lay.report, lay.figures]


def test_rundir_bookkeeping_files(tmp_path):
    with RunDir(tmp_path / "run", "r") as rd:
        rd.write_provenance({"name": "r"}, {"pipeline": 0})
        lay = RunLayout(tmp_path / "run")
        assert lay.run_json.exists() and lay.lock.exists() and lay.provenance.exists()
        assert lay.config_resolved.exists()
        rd.record("x", "h", {}, [], 0.0)
        assert lay.manifest.exists()


def test_docs_name_every_run_level_path(tmp_path):
    doc = (REPO / "docs" / "run_directory.md").read_text()
    lay = RunLayout(tmp_path)
    paths = [getattr(lay, p) for p in dir(RunLayout) if isinstance(getattr(RunLayout, p), property)]
    names = [p.name for p in paths if isinstance(p, Path)] + ["store.zarr", *(p.name for p in lay.store_tables)]
    assert [n for n in names if n not in doc] == []
