"""The atlas report: one self-contained HTML file plus PNG/PDF figures for a run directory.

``write_report(rundir)`` reads what the pipeline wrote (``reference/atlas.h5ad``/``atlas.h5ad``,
``neutrophils.h5ad``, ``tables/*.csv``, QC, metrics, provenance; see docs/run_directory.md) and writes
``RUNDIR/report.html`` and ``RUNDIR/figures/``. Building blocks for other reports:
:class:`atlas.report.html.HtmlReport` and the plotting helpers in :mod:`atlas.report.plots`.
"""

from __future__ import annotations

from .html import HtmlReport, fmt_interval, fmt_num

__all__ = ["HtmlReport", "fmt_interval", "fmt_num", "write_report"]


def __getattr__(name: str):  # keep `import atlas.report` light: matplotlib/anndata load on use
    if name == "write_report":
        from .stage import write_report

        return write_report
    raise AttributeError(name)
