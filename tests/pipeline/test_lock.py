"""Two `atlas run` (or `atlas demo`) on one run directory: the second is refused while the first runs."""

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml

from atlas.core.errors import RunDirError
from atlas.pipeline.rundir import RunDir

# A real run_pipeline whose only stage blocks: it holds the run directory's lock until killed.
HOLDER = textwrap.dedent("""
    import sys, time
    from atlas.pipeline.config import load_pipeline_config
    from atlas.pipeline import runner, stages

    def block(ctx):
        print("holding", flush=True)
        time.sleep(120)

    runner.STAGES = [stages.Stage("block", "blocks", lambda c: True, lambda c: {}, lambda c: [], lambda c: [], block)]
    runner.run_pipeline(load_pipeline_config(sys.argv[1]))
""")


def _atlas(*args):
    return subprocess.run([sys.executable, "-m", "atlas.cli", "-q", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def holder(tmp_path):
    """A subprocess running the pipeline in tmp_path/run (named 'demo', as `atlas demo` names its run)."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"name": "demo", "run_dir": str(tmp_path / "run"), "simulate": {"n_cells": 200},
                                   "integrate": None, "analyse": None}))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(cfg)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        yield proc, cfg
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_second_run_and_demo_are_refused_while_the_first_holds_the_lock(holder, tmp_path):
    proc, cfg = holder
    run_dir = tmp_path / "run"
    for args in (["run", str(cfg)], ["demo", "--run-dir", str(run_dir)]):
        res = _atlas(*args)
        assert res.returncode == 2, res.stderr
        msg = " ".join(res.stderr.split())
        assert f"run directory {run_dir} is in use by another atlas run" in msg
        assert f"(pid {proc.pid} on host {socket.gethostname()} since" in msg
        assert f"remove {run_dir / '.lock'} if that process is gone" in msg
    assert proc.poll() is None  # the first run is untouched
    # SIGKILL the holder: the OS drops the flock, so no stale lock blocks the next run.
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with RunDir(run_dir, "demo"):
        pass


def test_lock_is_released_on_close_and_refused_in_process(tmp_path):
    with RunDir(tmp_path / "r", "x"):
        with pytest.raises(RunDirError, match=f"pid {os.getpid()} on host"):
            RunDir(tmp_path / "r", "x").open()
    RunDir(tmp_path / "r", "x").open().close()


def test_unreadable_lock_details_still_give_a_clear_refusal(tmp_path):
    held = RunDir(tmp_path / "r", "x").open()
    try:
        (tmp_path / "r" / ".lock").write_text("")  # the holder has not written its details yet
        with pytest.raises(RunDirError, match="in use by another atlas run .pid unknown"):
            RunDir(tmp_path / "r", "x").open()
    finally:
        held.close()
