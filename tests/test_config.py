from pathlib import Path

import pytest
import yaml

from atlas.core.errors import ConfigError
from atlas.ingest.settings import load_ingest_config
from atlas.pipeline.config import PipelineConfig, load_pipeline_config
from atlas.pipeline.demo import demo_config

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path, data, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def _ingest(**ds):
    d = {"id": "d1", "path": "d1.h5ad", **ds}
    return {"datasets": [d]}


def test_unknown_field_is_reported_with_its_path(tmp_path):
    p = _write(tmp_path, _ingest(obs_colums={"patient_id": "donor"}))
    with pytest.raises(ConfigError) as e:
        load_ingest_config(p)
    assert "datasets[0].obs_colums: unknown field" in str(e.value)
    assert str(p) in str(e.value)


def test_invalid_value_is_reported_with_its_path(tmp_path):
    data = {"name": "x", "run_dir": "r", "simulate": {"n_cells": -5}}
    with pytest.raises(ConfigError, match=r"simulate\.n_cells"):
        load_pipeline_config(_write(tmp_path, data))


def test_unknown_species_and_schema_field(tmp_path):
    with pytest.raises(ConfigError, match="unknown species 'zebrafish'"):
        load_ingest_config(_write(tmp_path, _ingest(species="zebrafish")))
    with pytest.raises(ConfigError, match="unknown schema field"):
        load_ingest_config(_write(tmp_path, _ingest(constants={"tumour_type": "PDAC"})))


def test_repeated_ids_and_unknown_per_dataset_qc(tmp_path):
    data = {"datasets": [{"id": "a", "path": "a.h5ad"}, {"id": "a", "path": "b.h5ad"}]}
    with pytest.raises(ConfigError, match="repeated"):
        load_ingest_config(_write(tmp_path, data))
    data = {**_ingest(), "qc": {"per_dataset": {"nope": {"min_genes": 50}}}}
    with pytest.raises(ConfigError, match="unknown data set"):
        load_ingest_config(_write(tmp_path, data))


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    sub = tmp_path / "cfgs"
    sub.mkdir()
    cfg = load_ingest_config(_write(sub, _ingest(obs_path="../meta.csv")))
    assert cfg.datasets[0].path == sub / "d1.h5ad"
    assert cfg.datasets[0].obs_path == tmp_path / "meta.csv"


def test_per_dataset_qc_overrides_only_given_fields(tmp_path):
    data = {**_ingest(), "qc": {"thresholds": {"min_genes": 300}, "per_dataset": {"d1": {"max_pct_mito": 30}}}}
    t = load_ingest_config(_write(tmp_path, data)).qc.thresholds_for("d1")
    assert (t.min_genes, t.max_pct_mito, t.neutrophil_min_genes) == (300, 30, 100)


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_ingest_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_ingest_config(tmp_path / "missing.yaml")


def test_pipeline_needs_input(tmp_path):
    with pytest.raises(ConfigError, match="give 'ingest'"):
        load_pipeline_config(_write(tmp_path, {"name": "x", "run_dir": "r"}))


@pytest.mark.parametrize("integrate", [{"devices": 2, "strategy": "ddp"}, {"num_nodes": 2}, {"strategy": "ddp"}])
def test_pipeline_refuses_multi_process_training(tmp_path, integrate):
    # DDP relaunches the command per device: inside `atlas run` the second process would rerun the pipeline
    cfg = {"name": "x", "run_dir": "r", "ingest": _ingest(), "integrate": integrate}
    with pytest.raises(ConfigError, match="atlas integrate STORE"):
        load_pipeline_config(_write(tmp_path, cfg))


def test_demo_yaml_equals_builtin_demo():
    from_file = load_pipeline_config(REPO / "configs" / "demo.yaml")
    builtin = demo_config(REPO / "atlas_demo")
    assert from_file.model_dump() == builtin.model_dump()


def test_example_config_validates():
    cfg = load_pipeline_config(REPO / "configs" / "pan_cancer_example.yaml")
    assert isinstance(cfg, PipelineConfig)
    assert {d.species for d in cfg.ingest.datasets} == {"human", "mouse"}
    assert {d.id for d in cfg.ingest.datasets} >= {"ng_2024_kpc_mouse", "xue_2022_liver"}


def test_large_atlas_config_validates_with_a_users_ingest(tmp_path):
    """configs/large_atlas_cpu.yaml (what scripts/bench_scale.py runs) is valid once `ingest` points at data."""
    cfg = yaml.safe_load((REPO / "configs" / "large_atlas_cpu.yaml").read_text())
    cfg["ingest"] = str(_write(tmp_path, _ingest(), "ingest.yaml"))
    cfg["run_dir"] = str(tmp_path / "run")
    loaded = load_pipeline_config(_write(tmp_path, cfg))
    assert loaded.store_format == "zarr"
    assert loaded.integrate.max_epochs == "auto" and loaded.integrate.train_steps == 1500
    assert loaded.analyse.subatlas.train_steps == 1000


def test_errors_inside_an_ingest_section_name_the_users_keys_not_pydantics_union_branches(tmp_path):
    data = {"name": "x", "run_dir": "r", "ingest": {"datasets": [{"path": "a.h5ad", "cancer_typ": "BRCA"}]}}
    with pytest.raises(ConfigError) as e:
        load_pipeline_config(_write(tmp_path, data))
    lines = str(e.value).splitlines()[1:]
    assert lines == ["  ingest.datasets[0].id: Field required", "  ingest.datasets[0].cancer_typ: unknown field"]
    data["ingest"] = 5  # neither a section nor a path: every form it could take is named
    with pytest.raises(ConfigError) as e:
        load_pipeline_config(_write(tmp_path, data))
    msg = str(e.value)
    assert "ingest: Input should be a valid dictionary" in msg and "ingest: Input is not a valid path" in msg
    assert "function-" not in msg and "lax-or-strict" not in msg
