"""The run directory, manifest and resume logic, on small stand-in stages."""

import json
from pathlib import Path

import pytest

from atlas.core.errors import RunDirError
from atlas.pipeline import rundir as rundir_mod
from atlas.pipeline import runner
from atlas.pipeline.config import PipelineConfig
from atlas.pipeline.rundir import RunDir
from atlas.simulate.settings import SimulateConfig

from helpers.toy_stages import install_toy_stages


class Boom(RuntimeError):
    pass


@pytest.fixture
def toy_stages(monkeypatch):
    """Two stages: 'first' writes a.txt from the config seed; 'second' copies it to b.txt."""
    return install_toy_stages(monkeypatch, crash=Boom)


def _cfg(tmp_path, seed=0, name="toy"):
    return PipelineConfig(name=name, run_dir=tmp_path / "run", simulate=SimulateConfig(seed=seed))


def test_rerun_skips_unchanged_stages(tmp_path, toy_stages):
    r1 = runner.run_pipeline(_cfg(tmp_path))
    r2 = runner.run_pipeline(_cfg(tmp_path))
    assert r1.ran == ["first", "second"] and r2.skipped == ["first", "second"]
    assert toy_stages == {"first": 1, "second": 1, "crash_second": False}
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["seeds"] == {"pipeline": 0, "simulate": 0, "ingest.qc": 0, "integrate": 0, "score": 0, "analyse": 0}
    assert "numpy" in prov["packages"]
    assert (tmp_path / "run" / "config.resolved.yaml").read_text().startswith("name: toy")


def test_changed_settings_rerun_the_stage_and_its_dependants(tmp_path, toy_stages):
    runner.run_pipeline(_cfg(tmp_path, seed=0))
    r = runner.run_pipeline(_cfg(tmp_path, seed=1))
    assert r.ran == ["first", "second"]  # second's input a.txt changed
    assert (tmp_path / "run" / "b.txt").read_text() == "seed=1"


def test_deleted_output_and_force_rerun(tmp_path, toy_stages):
    runner.run_pipeline(_cfg(tmp_path))
    (tmp_path / "run" / "b.txt").unlink()
    assert runner.run_pipeline(_cfg(tmp_path)).ran == ["second"]
    assert runner.run_pipeline(_cfg(tmp_path), force=["first"]).ran == ["first", "second"]


def test_crash_resumes_after_the_last_finished_stage(tmp_path, toy_stages):
    toy_stages["crash_second"] = True
    with pytest.raises(Boom):
        runner.run_pipeline(_cfg(tmp_path))
    assert "second" not in json.loads((tmp_path / "run" / "manifest.json").read_text())
    toy_stages["crash_second"] = False
    r = runner.run_pipeline(_cfg(tmp_path))
    assert r.skipped == ["first"] and r.ran == ["second"]
    assert toy_stages["first"] == 1


def test_run_dir_holding_another_run_or_other_files_is_refused(tmp_path, toy_stages):
    runner.run_pipeline(_cfg(tmp_path, name="toy"))
    with pytest.raises(RunDirError, match="already holds the run 'toy'"):
        runner.run_pipeline(_cfg(tmp_path, name="other"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    cfg = PipelineConfig(name="toy", run_dir=foreign, simulate=SimulateConfig())
    with pytest.raises(RunDirError, match="not empty"):
        runner.run_pipeline(cfg)
    assert (foreign / "thesis.docx").read_text() == "precious"


def test_unknown_stage_name(tmp_path, toy_stages):
    with pytest.raises(Exception, match="unknown stage 'nope'"):
        runner.run_pipeline(_cfg(tmp_path), force=["nope"])


def test_lock_refuses_a_second_concurrent_run(tmp_path):
    with RunDir(tmp_path / "r", "x"):
        with pytest.raises(RunDirError, match="is in use by another atlas run"):
            RunDir(tmp_path / "r", "x").open()


def test_run_killed_before_run_json_or_leaving_temporaries_resumes_clean(tmp_path, toy_stages):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("")  # a run SIGKILLed right after taking the lock
    (run / ".atlas-tmp-0123abcd-a.txt").write_text("half")  # ... or in the middle of an atomic write
    runner.run_pipeline(_cfg(tmp_path))
    (run / "data").mkdir()
    (run / "data" / ".atlas-tmp-89abcdef-x.h5ad").mkdir()
    (run / "data" / "keep.txt").write_text("input")
    assert runner.run_pipeline(_cfg(tmp_path)).skipped == ["first", "second"]
    left = [p.name for p in run.rglob("*") if p.name.startswith(".atlas-tmp-")]
    assert left == [] and (run / "data" / "keep.txt").exists()


def test_fingerprint_sees_rewrites(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("a")
    fp = rundir_mod.fingerprint(f)
    f.write_text("bb")
    assert rundir_mod.fingerprint(f) != fp
    assert rundir_mod.fingerprint(tmp_path / "missing") is None
    assert rundir_mod.fingerprint(tmp_path)["files"] == 1
    assert isinstance(Path(tmp_path), Path)


def test_provenance_holds_each_stages_time_and_peak_memory(tmp_path, toy_stages):
    r1 = runner.run_pipeline(_cfg(tmp_path))
    summary = json.loads((tmp_path / "run" / "provenance.json").read_text())["run_summary"]
    assert list(summary["stages"]) == ["first", "second"]
    for rec in summary["stages"].values():
        assert rec["status"] == "ran" and rec["seconds"] >= 0 and rec["peak_rss_gib"] > 0
    assert summary["peak_rss_gib"] > 0 and summary["total_seconds"] >= 0 and summary["peak_rss_scope"]
    assert r1.summary() == summary and r1.stages["first"].seconds == r1.seconds["first"]
    table = r1.table().splitlines()
    assert table[0].split() == ["stage", "status", "time", "peak", "RSS"]
    assert table[1].split()[:2] == ["first", "ran"] and "GiB" in table[1] and table[-1].startswith("total")

    r2 = runner.run_pipeline(_cfg(tmp_path))  # provenance is rewritten: this run's summary only
    summary = json.loads((tmp_path / "run" / "provenance.json").read_text())["run_summary"]
    assert {k: v["status"] for k, v in summary["stages"].items()} == {"first": "skipped", "second": "skipped"}
    assert summary["stages"]["first"]["peak_rss_gib"] is None and "skipped" in r2.table()


def test_failed_stage_is_in_the_run_summary(tmp_path, toy_stages):
    toy_stages["crash_second"] = True
    with pytest.raises(Boom):
        runner.run_pipeline(_cfg(tmp_path))
    summary = json.loads((tmp_path / "run" / "provenance.json").read_text())["run_summary"]
    assert [summary["stages"][s]["status"] for s in ("first", "second")] == ["ran", "failed"]
    assert summary["stages"]["second"]["peak_rss_gib"] > 0
