"""The top-level ``seed`` of a pipeline config is every stage's seed unless the stage sets its own."""

import json

import pytest
import yaml

from atlas.analyse.settings import AnalysisSettings
from atlas.core.settings import settings_hash
from atlas.ingest.settings import IngestConfig
from atlas.integrate.settings import IntegrateSettings
from atlas.pipeline import runner
from atlas.pipeline.config import PipelineConfig, load_pipeline_config, stage_seeds
from atlas.pipeline.demo import DEMO_INTEGRATION
from atlas.pipeline.stages import STAGES, Context, ingest_config
from atlas.score.settings import ScoreConfig
from atlas.simulate.settings import SimulateConfig

INGEST = {"datasets": [{"id": "d1", "path": "d1.h5ad"}]}


def _cfg(tmp_path, **kw):
    return PipelineConfig(**{"name": "s", "run_dir": tmp_path / "run", "simulate": {"n_cells": 300}, **kw})


def _effective(cfg):
    return {"simulate": cfg.simulate.seed, "ingest.qc": cfg.ingest.qc.doublet_random_state,
            "integrate": cfg.integrate.seed, "score": cfg.score.random_state, "analyse": cfg.analyse.seed}


def test_top_level_seed_seeds_every_stage(tmp_path):
    cfg = _cfg(tmp_path, seed=1, ingest=INGEST)
    assert _effective(cfg) == {"simulate": 1, "ingest.qc": 1, "integrate": 1, "score": 1, "analyse": 1}


def test_a_stages_own_seed_wins(tmp_path):
    cfg = _cfg(tmp_path, seed=1, simulate={"seed": 4}, integrate={"seed": 0}, score={"random_state": 7},
               ingest={**INGEST, "qc": {"doublet_random_state": 3}})  # fmt: skip
    assert _effective(cfg) == {"simulate": 4, "ingest.qc": 3, "integrate": 0, "score": 7, "analyse": 1}


def test_shared_sections_are_not_changed(tmp_path):
    cfg = _cfg(tmp_path, seed=2, integrate=DEMO_INTEGRATION)
    assert cfg.integrate.seed == 2 and DEMO_INTEGRATION.seed == 0
    assert cfg.integrate.n_hvgs == DEMO_INTEGRATION.n_hvgs


def test_a_later_change_of_the_seed_reaches_the_stages(tmp_path):
    cfg = _cfg(tmp_path, seed=1, score={"random_state": 7})
    cfg.seed = 5
    assert (cfg.simulate.seed, cfg.integrate.seed, cfg.score.random_state) == (5, 5, 7)


def test_ingest_yaml_loaded_later_is_seeded(tmp_path):
    (tmp_path / "ingest.yaml").write_text(yaml.safe_dump(INGEST))
    (tmp_path / "own.yaml").write_text(yaml.safe_dump({**INGEST, "qc": {"doublet_random_state": 0}}))
    for ingest, expected in (("ingest.yaml", 2), ("own.yaml", 0)):
        p = tmp_path / f"pipeline_{ingest}"
        p.write_text(yaml.safe_dump({"name": "s", "run_dir": "run", "seed": 2, "ingest": ingest}))
        cfg = load_pipeline_config(p)
        assert cfg.ingest.qc.doublet_random_state == expected
        assert stage_seeds(cfg)["ingest.qc"] == expected


def test_ingest_as_a_path_in_python_is_seeded_when_loaded(tmp_path):
    (tmp_path / "ingest.yaml").write_text(yaml.safe_dump(INGEST))
    cfg = PipelineConfig(name="s", run_dir=tmp_path / "run", seed=3, ingest=tmp_path / "ingest.yaml")
    assert stage_seeds(cfg)["ingest.qc"] == 3
    assert ingest_config(Context(config=cfg)).qc.doublet_random_state == 3


def test_simulated_ingest_yaml_gets_the_run_seed(tmp_path):
    cfg = _cfg(tmp_path, seed=6)
    sim = tmp_path / "run" / "data"
    sim.mkdir(parents=True)
    # the simulator spells out every QC default, doublet seed 0 included
    (sim / "ingest.yaml").write_text(yaml.safe_dump({**INGEST, "qc": {"doublet_random_state": 0}}))
    assert ingest_config(Context(config=cfg)).qc.doublet_random_state == 6
    assert stage_seeds(cfg)["ingest.qc"] == 6


def _hashes(cfg):
    ctx = Context(config=cfg)
    ctx.artifacts["ingest_config"] = cfg.ingest
    return {s.name: settings_hash(s.settings(ctx)) for s in STAGES if s.name != "report"}


def test_a_changed_seed_changes_every_stages_settings_hash(tmp_path):
    h0, h1 = _hashes(_cfg(tmp_path, seed=0, ingest=INGEST)), _hashes(_cfg(tmp_path, seed=1, ingest=INGEST))
    assert set(h0) == {"simulate", "ingest", "integrate", "score", "analyse"}
    assert all(h0[k] != h1[k] for k in h0), (h0, h1)


def test_default_seed_keeps_the_settings_hashes(tmp_path):
    cfg = _cfg(tmp_path, ingest=INGEST)
    plain = {"simulate": SimulateConfig(n_cells=300), "ingest": IngestConfig(**INGEST),
             "integrate": IntegrateSettings(), "score": ScoreConfig(), "analyse": AnalysisSettings()}
    for name, section in plain.items():
        assert settings_hash(getattr(cfg, name)) == settings_hash(section), name


@pytest.fixture
def no_stages(monkeypatch):
    monkeypatch.setattr(runner, "STAGES", [])


def test_provenance_records_each_stages_seed(tmp_path, no_stages):
    runner.run_pipeline(_cfg(tmp_path, seed=1, integrate={"seed": 9}))
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["seeds"] == {"pipeline": 1, "simulate": 1, "ingest.qc": 1, "integrate": 9, "score": 1, "analyse": 1}


def test_provenance_leaves_out_skipped_stages(tmp_path, no_stages):
    runner.run_pipeline(_cfg(tmp_path, seed=1, score=None, analyse=None))
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["seeds"] == {"pipeline": 1, "simulate": 1, "ingest.qc": 1, "integrate": 1}
