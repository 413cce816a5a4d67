"""`atlas report RUNDIR`: exit 0 and the report on a run directory; exit 2 and one paragraph otherwise."""

from __future__ import annotations

import subprocess
import sys

from helpers.report_fixtures import synthetic_run_dir


def _atlas(*args):
    return subprocess.run([sys.executable, "-m", "atlas.cli", *args], capture_output=True, text=True)


def test_report_command(tmp_path):
    run = synthetic_run_dir(tmp_path / "run", n_cells=400)
    res = _atlas("--quiet", "report", str(run))
    assert res.returncode == 0, res.stderr
    assert "report written to" in res.stdout and (run / "report.html").exists()
    out = tmp_path / "other" / "report.html"
    assert _atlas("--quiet", "report", str(run), "--out", str(out)).returncode == 0 and out.exists()


def test_report_on_a_non_run_dir_exits_2(tmp_path):
    res = _atlas("report", str(tmp_path))
    assert res.returncode == 2
    assert "error:" in res.stderr and "not an atlas run directory" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "report.html").exists()
    assert _atlas("report", str(tmp_path / "missing")).returncode == 2


def test_report_help():
    res = _atlas("report", "--help")
    assert res.returncode == 0 and "self-contained HTML" in res.stdout
