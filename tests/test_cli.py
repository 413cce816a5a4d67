import subprocess
import sys

import pytest
import yaml

from atlas.cli import app

COMMANDS = ["simulate", "ingest", "integrate", "score", "analyse", "report", "query", "run", "demo", "validate", "signatures"]


def _atlas(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "atlas.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    "cmd", [[], *[[c] for c in COMMANDS], ["signatures", "list"], ["signatures", "show"], ["signatures", "export"]]
)
def test_every_command_has_help(cmd):
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_commands_are_registered():
    import typer.main

    names = set(typer.main.get_command(app).commands)
    assert set(COMMANDS) <= names


def test_bad_config_gives_one_paragraph_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"datasets": [{"id": "x", "path": "x.h5ad", "species": "zebrafish"}]}))
    res = _atlas("ingest", str(bad), "--out", str(tmp_path / "s.h5ad"))
    assert res.returncode == 2
    assert "error: invalid configuration" in res.stderr and "zebrafish" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "s.h5ad").exists()
    verbose = _atlas("--verbose", "ingest", str(bad), "--out", str(tmp_path / "s.h5ad"))
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr


def test_bad_store_suffix_and_usage_error(tmp_path):
    res = _atlas("ingest", str(tmp_path / "x.yaml"), "--out", str(tmp_path / "s.csv"))
    assert res.returncode == 2 and ".h5ad or .zarr" in res.stderr
    assert _atlas("run").returncode == 2  # missing argument


def test_version():
    res = _atlas("--version")
    assert res.returncode == 0 and res.stdout.startswith("atlas ")


def test_import_atlas_stays_light():
    code = ("import sys, atlas, atlas.pipeline.config, atlas.cli, atlas.pipeline; "
            "heavy = [m for m in ('torch', 'scvi', 'scanpy', 'cupy', 'rapids_singlecell', 'matplotlib', 'numba') "
            "if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_an_error_is_one_line_in_a_log_and_wrapped_on_a_terminal(tmp_path, monkeypatch):
    import io

    from atlas.cli import _paragraph

    deep = tmp_path / ("a_directory_with_a_long_name_" * 4) / "run"
    deep.mkdir(parents=True)
    res = _atlas("report", str(deep))
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("error:"))
    assert res.returncode == 2 and f"{deep} is not an atlas run directory" in line  # one line, path whole
    terminal = io.StringIO()
    terminal.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", terminal)
    wrapped = _paragraph("error: ", f"{deep} is not an atlas run directory (no run.json)")
    assert len(wrapped.splitlines()) > 1 and all(len(ln) <= 100 or str(deep) in ln for ln in wrapped.splitlines())
    assert str(deep) in wrapped  # long paths are never broken
