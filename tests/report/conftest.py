"""Fixtures of the report tests: synthetic run directories (docs/run_directory.md) and their reports.

The run directories come from :func:`helpers.report_fixtures.synthetic_run_dir` (fake cells, tables
computed from them, QC, metrics, provenance); each variant's report is built once per session.
"""

from __future__ import annotations

import shutil

import pytest

from helpers.report_fixtures import synthetic_run_dir


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    """A complete run (4,000 cells, 6 data sets, 5 cancer types, one with a single patient) and its report."""
    from atlas.report import write_report

    run = synthetic_run_dir(tmp_path_factory.mktemp("full") / "run", n_cells=4000)
    return run, write_report(run)


@pytest.fixture
def make_run(tmp_path):
    """Build a variant: ``make_run(**synthetic_run_dir options)`` -> run directory."""
    def make(name="run", **kw):
        return synthetic_run_dir(tmp_path / name, n_cells=kw.pop("n_cells", 1500), **kw)

    return make


@pytest.fixture
def copy_run(full_run, tmp_path):
    """A fresh copy of the full run's directory (without its report) to damage."""
    src, _ = full_run
    dst = tmp_path / "run"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report.html", "figures"))
    return dst
