"""``atlas run`` with its run directory in object storage (a real S3 API served by moto; see conftest.py).

The run works in a local working copy mirrored to ``s3://.../run`` (atlas/pipeline/remote.py): the bucket
must end up with the manifest and every stage's outputs, a fresh working copy must resume the run (every
stage skipped, its outputs downloaded), a recorded output deleted from the bucket makes its stage rerun,
and a missing bucket, missing credentials or another run's lock stop the run before any work (exit 2).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from atlas.cli import main
from atlas.core.errors import ConfigError, RunDirError
from atlas.pipeline import runner
from atlas.pipeline.config import PipelineConfig, load_pipeline_config
from atlas.simulate.settings import SimulateConfig

from helpers.toy_stages import install_toy_stages


def _cli(args: list, capsys) -> tuple[int, str]:
    """Exit status and stdout + stderr of ``atlas ARGS`` (in process)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return int(exc.value.code), captured.out + captured.err


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Two small simulated data sets (h5ad) and their ingest.yaml (paths relative to its folder)."""
    from atlas.simulate import simulate

    out = tmp_path_factory.mktemp("rundir") / "sim"
    simulate(out, n_cells=300, n_datasets=2, n_genes=2000, seed=0, n_jobs=1)
    return out


def _keys(s3, prefix: str) -> set[str]:
    root = f"{s3.name}/{prefix}/"
    return {k[len(root):] for k in s3.fs.find(root)}


# ------------------------------------------------------------------------- the whole loop, from S3
def test_run_on_s3_resumes_from_a_fresh_working_copy_and_reruns_a_deleted_output(sim, s3, s3_env, tmp_path, capsys):
    # the config, its ingest.yaml and the data sets in the bucket; relative paths resolve beside the config
    s3.upload(sim / "datasets", "cfg/datasets")
    s3.upload(sim / "ingest.yaml", "cfg/ingest.yaml")
    config = {"name": "cloud", "run_dir": "../run", "ingest": "ingest.yaml", "store_format": "zarr",
              "integrate": None, "analyse": None, "report": False,
              "score": {"signatures": ["T3_proxy", "blood_like"]}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    cfg_url = s3.upload(tmp_path / "run.yaml", "cfg/run.yaml")
    cfg = load_pipeline_config(cfg_url)
    assert cfg.run_dir == s3.url("run") and cfg.ingest.datasets[0].path.startswith(s3.url("cfg/datasets/"))
    code, out = _cli(["validate", cfg_url], capsys)
    assert code == 0 and "valid PipelineConfig" in out, out

    s3_env.setenv("ATLAS_WORK_DIR", str(tmp_path / "work1"))
    code, out = _cli(["run", cfg_url], capsys)
    assert code == 0, out
    assert f"run directory: {s3.url('run')}" in out and "working copy:" in out
    keys = _keys(s3, "run")
    assert {"manifest.json", "provenance.json", "run.json", "config.resolved.yaml", "scores.parquet",
            "store.qc.csv"} <= keys
    assert any(k.startswith("store.zarr/") for k in keys) and ".lock" not in keys
    manifest = json.loads(s3.fs.cat(s3.url("run/manifest.json")))
    assert list(manifest) == ["ingest", "score"]
    assert set(manifest["score"]["outputs"]) == {"scores.parquet"}  # keys relative to the run directory
    assert set(manifest["score"]["remote"]) == {"scores.parquet"}
    prov = json.loads(s3.fs.cat(s3.url("run/provenance.json")))
    assert set(prov["run_summary"]["stages"]) == {"ingest", "score"}
    scores = pd.read_parquet(tmp_path / "work1" / next((tmp_path / "work1").iterdir()).name / "scores.parquet")

    # a fresh machine: a new working copy resumes, every stage skipped, the outputs downloaded
    s3_env.setenv("ATLAS_WORK_DIR", str(tmp_path / "work2"))
    code, out = _cli(["run", cfg_url], capsys)
    assert code == 0 and "skipped (unchanged): ingest, score" in out and "ran:" not in out, out
    work2 = next((tmp_path / "work2").iterdir())
    pd.testing.assert_frame_equal(pd.read_parquet(work2 / "scores.parquet"), scores)
    assert (work2 / "store.zarr").is_dir()

    # a recorded output deleted from the bucket: its stage reruns (warned), the others stay skipped
    s3.fs.rm(s3.url("run/scores.parquet"))
    code, out = _cli(["run", cfg_url], capsys)
    assert code == 0 and "ran: score" in out and "skipped (unchanged): ingest" in out, out
    assert f"stage score reruns: its output {s3.url('run/scores.parquet')} is missing" in _flat(out)
    assert "scores.parquet" in _keys(s3, "run")


# ------------------------------------------------------------------------------ errors up front
def _local_config(tmp_path: Path, sim: Path, run_dir: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"name": "cloud", "run_dir": run_dir, "ingest": str(sim / "ingest.yaml"),
                                    "work_dir": str(tmp_path / "work"), "integrate": None, "analyse": None}))
    return path


def test_missing_bucket_and_credentials_exit_2_before_any_work(sim, s3, s3_env, tmp_path, capsys):
    url = "s3://atlas-no-such-bucket-rundir/run"
    code, err = _cli(["run", _local_config(tmp_path, sim, url)], capsys)
    assert code == 2 and url in _flat(err) and "the bucket of" in err, err
    assert not (tmp_path / "work").exists()

    s3_env.delenv("AWS_ACCESS_KEY_ID")
    s3_env.delenv("AWS_SECRET_ACCESS_KEY")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    url = s3.url("run")
    code, err = _cli(["run", _local_config(tmp_path, sim, url)], capsys)
    assert code == 2 and url in _flat(err) and "credentials" in err and "AWS_ACCESS_KEY_ID" in _flat(err), err
    assert not (tmp_path / "work").exists()


# ------------------------------------------------------------------- the mirror, on stand-in stages
@pytest.fixture
def toy_stages(monkeypatch):
    """'first' writes a.txt and the folder d/; 'second' copies a.txt to b.txt (crashes on request)."""
    return install_toy_stages(monkeypatch, folder=True)


def _cfg(s3, tmp_path, work: str = "w", name: str = "toy", seed: int = 0) -> PipelineConfig:
    return PipelineConfig(name=name, run_dir=s3.url("run"), work_dir=tmp_path / work,
                          simulate=SimulateConfig(seed=seed))


def test_lock_of_another_live_run_is_refused_unless_forced(s3, tmp_path, toy_stages):
    other = {"name": "toy", "host": "elsewhere", "pid": 1, "since": time.time() - 60, "token": "x"}
    s3.fs.pipe(s3.url("run/.lock"), json.dumps(other).encode())
    with pytest.raises(RunDirError, match="in use by another atlas run .pid 1 on host elsewhere") as exc:
        runner.run_pipeline(_cfg(s3, tmp_path))
    assert "--force-lock" in str(exc.value) and toy_stages["first"] == 0
    assert runner.run_pipeline(_cfg(s3, tmp_path), force_lock=True).ran == ["first", "second"]
    assert not s3.fs.exists(s3.url("run/.lock"))  # removed at the end
    # a lock older than ATLAS_REMOTE_LOCK_HOURS, or left by a dead process of this host, is stale
    for stale in ({**other, "since": time.time() - 13 * 3600}, {**other, "host": socket.gethostname(), "pid": 999_999_999}):
        s3.fs.pipe(s3.url("run/.lock"), json.dumps(stale).encode())
        assert runner.run_pipeline(_cfg(s3, tmp_path)).skipped == ["first", "second"]


def test_prefix_holding_another_run_or_other_objects_is_refused(s3, tmp_path, toy_stages):
    runner.run_pipeline(_cfg(s3, tmp_path))
    with pytest.raises(RunDirError, match="already holds the run 'toy'"):
        runner.run_pipeline(_cfg(s3, tmp_path, work="w2", name="other"))
    s3.fs.pipe(s3.url("foreign/thesis.docx"), b"precious")
    cfg = PipelineConfig(name="toy", run_dir=s3.url("foreign"), work_dir=tmp_path / "w3", simulate=SimulateConfig())
    with pytest.raises(RunDirError, match="not empty and holds no atlas run"):
        runner.run_pipeline(cfg)
    assert s3.fs.cat(s3.url("foreign/thesis.docx")) == b"precious"


def test_failed_stage_keeps_the_finished_ones_and_a_lost_upload_is_redone_without_rerunning(s3, tmp_path,
                                                                                          toy_stages, monkeypatch):
    toy_stages["crash_second"] = True
    with pytest.raises(RuntimeError, match="crash"):
        runner.run_pipeline(_cfg(s3, tmp_path))
    assert list(json.loads(s3.fs.cat(s3.url("run/manifest.json")))) == ["first"]
    prov = json.loads(s3.fs.cat(s3.url("run/provenance.json")))
    assert prov["run_summary"]["stages"]["second"]["status"] == "failed"
    assert not s3.fs.exists(s3.url("run/.lock"))
    toy_stages["crash_second"] = False

    # the upload of 'second' fails after the stage finished: the working copy keeps its record
    from atlas.core import storage
    from atlas.core.errors import InputDataError

    real = storage.upload

    def failing(local, url, what=""):
        if url.endswith("b.txt"):
            raise InputDataError(f"cannot reach {url}")
        return real(local, url, what)

    monkeypatch.setattr(storage, "upload", failing)
    with pytest.raises(InputDataError):
        runner.run_pipeline(_cfg(s3, tmp_path))
    monkeypatch.setattr(storage, "upload", real)
    r = runner.run_pipeline(_cfg(s3, tmp_path))
    assert r.skipped == ["first", "second"] and toy_stages["second"] == 2  # uploaded, not rerun
    assert s3.fs.cat(s3.url("run/b.txt")) == b"seed=0"
    assert list(json.loads(s3.fs.cat(s3.url("run/manifest.json")))) == ["first", "second"]


def test_rerun_of_a_changed_stage_replaces_its_prefix_and_withdraws_it_first(s3, tmp_path, toy_stages, monkeypatch):
    runner.run_pipeline(_cfg(s3, tmp_path))
    s3.fs.pipe(s3.url("run/d/stale.txt"), b"left by hand")
    seen = []
    real = runner.RemoteRun.commit

    def spy(self, rundir, stage):
        if stage == "first":  # what the remote manifest holds while the stage's objects are replaced
            seen.append(list(self._read_json("manifest.json")))
        return real(self, rundir, stage)

    monkeypatch.setattr(runner.RemoteRun, "commit", spy)
    from atlas.core import storage

    real_upload = storage.upload

    def watching_upload(local, url, what=""):
        if url.endswith("/d"):
            seen.append(list(json.loads(s3.fs.cat(s3.url("run/manifest.json")))))
        return real_upload(local, url, what)

    monkeypatch.setattr(storage, "upload", watching_upload)
    r = runner.run_pipeline(_cfg(s3, tmp_path, work="fresh", seed=1))
    assert r.ran == ["first", "second"]
    assert seen == [["first", "second"], ["second"]]  # 'first' withdrawn before its objects were replaced
    assert _keys(s3, "run/d") == {"x.txt"}  # the prefix replaced: no stale object left
    assert s3.fs.cat(s3.url("run/b.txt")) == b"seed=1"


def test_work_dir_defaults_and_rules(tmp_path, monkeypatch):
    from atlas.pipeline.remote import work_dir_of

    monkeypatch.setenv("ATLAS_WORK_DIR", str(tmp_path / "wd"))
    a = PipelineConfig(name="my run", run_dir="s3://b/run", simulate=SimulateConfig())
    b = PipelineConfig(name="my run", run_dir="s3://b/run2", simulate=SimulateConfig())
    assert work_dir_of(a).parent == tmp_path / "wd" and work_dir_of(a).name.startswith("my_run-")
    assert work_dir_of(a) != work_dir_of(b)
    monkeypatch.delenv("ATLAS_WORK_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert work_dir_of(a).parent == tmp_path / "cache" / "atlas" / "runs"
    (tmp_path / "local.yaml").write_text(yaml.safe_dump({"name": "x", "run_dir": "r", "work_dir": "w",
                                                         "simulate": {}}))
    with pytest.raises(ConfigError, match="work_dir is the local working copy of a run_dir URL"):
        load_pipeline_config(tmp_path / "local.yaml")
    with pytest.raises(ValueError, match="work_dir must be a local folder"):
        PipelineConfig(name="x", run_dir="s3://b/r", work_dir="s3://b/w", simulate=SimulateConfig())


def test_relative_paths_of_a_url_config_resolve_beside_it():
    from atlas.core.settings import resolve_paths

    data = {"run_dir": "../runs/a", "ingest": "in/ingest.yaml", "work_dir": "/tmp/w",
            "datasets": [{"path": "x.h5ad", "obs_path": "gs://o/obs.csv"}]}
    out = resolve_paths(data, "s3://bkt/cfg/sub")
    assert out["run_dir"] == "s3://bkt/cfg/runs/a" and out["ingest"] == "s3://bkt/cfg/sub/in/ingest.yaml"
    assert out["work_dir"] == "/tmp/w" and out["datasets"][0] == {"path": "s3://bkt/cfg/sub/x.h5ad",
                                                                  "obs_path": "gs://o/obs.csv"}


def test_missing_config_url_exits_2(s3, capsys):
    url = s3.url("cfg/missing.yaml")
    code, err = _cli(["run", url], capsys)
    assert code == 2 and url in _flat(err) and "does not exist" in err, err


@pytest.mark.slow
def test_whole_pipeline_on_s3_with_report_and_resume(s3, s3_env, tmp_path, capsys):
    """integrate + score + analyse + report with the run directory in the bucket; a fresh copy skips every stage."""
    from atlas.simulate import simulate

    simulate(tmp_path / "sim", n_cells=1500, n_datasets=4, n_genes=2000, seed=1, n_jobs=1)
    s3.upload(tmp_path / "sim" / "datasets", "in/datasets")
    s3.upload(tmp_path / "sim" / "ingest.yaml", "in/ingest.yaml")
    config = {"name": "e2e", "run_dir": s3.url("run"), "ingest": s3.url("in/ingest.yaml"), "store_format": "zarr",
              "integrate": {"n_hvgs": 300, "max_epochs": 2, "batch_size": 512, "metrics": False,
                            "min_cells_per_batch": 5},
              "analyse": {"subatlas": {"max_epochs": 2, "batch_size": 256}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    s3_env.setenv("ATLAS_WORK_DIR", str(tmp_path / "work1"))
    code, out = _cli(["run", tmp_path / "run.yaml"], capsys)
    assert code == 0, out
    keys = _keys(s3, "run")
    assert {"manifest.json", "provenance.json", "scores.parquet", "atlas.h5ad", "analysis.json", "report.html",
            "reference/atlas.h5ad"} <= keys, sorted(keys)
    assert any(k.startswith("tables/") for k in keys) and any(k.startswith("figures/") for k in keys)
    manifest = json.loads(s3.fs.cat(s3.url("run/manifest.json")))
    assert set(manifest) == {"ingest", "integrate", "score", "analyse", "report"}
    assert "report: " in out

    s3_env.setenv("ATLAS_WORK_DIR", str(tmp_path / "work2"))
    code, out = _cli(["run", tmp_path / "run.yaml"], capsys)
    assert code == 0 and "skipped (unchanged): ingest, integrate, score, analyse, report" in out, out
    work2 = next((tmp_path / "work2").iterdir())
    assert (work2 / "report.html").read_bytes() == s3.fs.cat(s3.url("run/report.html"))
