"""Assemble the atlas report: read the run directory, draw each section, write HTML and figures."""

from __future__ import annotations

import datetime as _dt
import logging
import time
from pathlib import Path

from ..core.layout import RunLayout
from .html import HtmlReport
from .inputs import load_run
from .sections import SECTIONS, summary

log = logging.getLogger(__name__)

__all__ = ["write_report"]


def write_report(rundir: str | Path, *, out: str | Path | None = None) -> Path:
    """Write the atlas report of run directory ``rundir`` and return the HTML's path.

    Writes ``out`` (default ``RUNDIR/report.html``; one self-contained file, figures embedded) and
    each figure as PNG and PDF under ``figures/`` beside it, all atomically. Missing inputs (analysis
    not run, no neutrophils, no metrics...) give a section that says so; a section that fails for
    an unexpected reason is replaced by a note and logged, so the report is always written.

    Raises :class:`atlas.report.inputs.NotARunDirError` (an ``AtlasError``) when ``rundir`` is not an
    atlas run directory.
    """
    t0 = time.perf_counter()
    inputs = load_run(rundir)
    out = Path(out) if out is not None else RunLayout(inputs.rundir).report
    name = (inputs.run_info or {}).get("name") or inputs.rundir.name
    rep = HtmlReport(
        "Pan-cancer neutrophil atlas: which cancers reprogram their neutrophils",
        figures_dir=out.parent / "figures",
        subtitle=f"Run “{name}” · {inputs.rundir.resolve()} · report written "
                 f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}")
    _guarded(summary, rep, inputs, "summary")
    for title, intro, fn in SECTIONS:
        rep.section(title, intro)
        _guarded(fn, rep, inputs, title)
    path = rep.write(out)
    log.info("report written to %s in %.1f s", path, time.perf_counter() - t0)
    return path


def _guarded(fn, rep: HtmlReport, inputs, title: str) -> None:
    try:
        fn(rep, inputs)
    except Exception as e:  # a bug or an unexpected input must not cost the rest of the report
        log.warning("report section %r failed: %s: %s", title, type(e).__name__, e, exc_info=log.isEnabledFor(10))
        rep.note(f"This part could not be drawn ({type(e).__name__}: {e}); the rest of the report is unaffected. "
                 "Rerun with --verbose for the traceback.", "warn")
        import matplotlib.pyplot as plt

        plt.close("all")
