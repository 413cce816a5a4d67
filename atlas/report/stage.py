"""Assemble the atlas report: read the run directory, draw each section, write HTML and figures.

The run directory and the report may be URLs (``s3://``, ``gs://``; :mod:`atlas.core.storage`): the
outputs the report reads are copied into a local cache (:func:`fetch_run`, reused while their remote
fingerprints are unchanged), the report is written locally, then uploaded beside the run's outputs.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from pathlib import Path

from ..core import storage
from ..core.layout import RunLayout
from .html import HtmlReport
from .inputs import NotARunDirError, load_run
from .sections import SECTIONS, summary

log = logging.getLogger(__name__)

__all__ = ["fetch_run", "write_report"]


def write_report(rundir: str | Path, *, out: str | Path | None = None) -> Path | str:
    """Write the atlas report of run directory ``rundir`` and return the HTML's path (or URL).

    Writes ``out`` (default ``RUNDIR/report.html``; one self-contained file, figures embedded) and
    each figure as PNG and PDF under ``figures/`` beside it, all atomically. Missing inputs (analysis
    not run, no neutrophils, no metrics...) give a section that says so; a section that fails for
    an unexpected reason is replaced by a note and logged, so the report is always written.

    ``rundir`` and ``out`` may be URLs: a remote run is read from a local copy of its outputs
    (:func:`fetch_run`); a remote ``out`` (default ``RUNDIR/report.html`` for a remote run) is written
    locally, then uploaded with its ``figures/`` (figures first). A failed upload keeps the local
    report and says where it is.

    Raises :class:`atlas.report.inputs.NotARunDirError` (an ``AtlasError``) when ``rundir`` is not an
    atlas run directory.
    """
    src = storage.location(rundir)
    target = storage.location(out) if out is not None else storage.join(src, RunLayout(Path()).report.name)
    if not storage.is_url(src) and not storage.is_url(target):
        return _write(Path(src), Path(target), Path(src).resolve())
    if storage.is_url(target):
        storage.require_bucket(str(target), "report: ")
    local_run = fetch_run(str(src)) if storage.is_url(src) else Path(src)
    if not storage.is_url(target):
        return _write(local_run, Path(target), src)
    return _write_remote(local_run, str(target), src)


def _write_remote(local_run: Path, target: str, source: storage.Location) -> str:
    """The report written to a local temporary folder, then uploaded to ``target`` (figures first)."""
    import shutil
    import tempfile

    from ..core.errors import AtlasError

    tmp = Path(tempfile.mkdtemp(prefix="atlas-report-"))
    html = _write(local_run, tmp / storage.name(target), source)
    try:
        if (html.parent / "figures").is_dir():
            storage.upload(html.parent / "figures", str(storage.join(storage.parent(target), "figures")), "report: ")
        storage.upload(html, target, "report: ")
    except AtlasError as err:
        raise type(err)(f"{err}. The report is complete in {tmp}: copy report.html and figures/ to "
                        f"{storage.parent(target)} yourself or rerun") from None
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("report uploaded to %s", target)
    return target


def fetch_run(url: str) -> Path:
    """A local copy of what the report reads of the run directory at ``url``; returns its path.

    The copy lives in :func:`atlas.core.storage.cache_dir` ``("runs", url)``; each file (the ``tables/``
    folder as one) is downloaded again only when its remote fingerprint changed, and dropped when it
    is gone from ``url``. The store, the model and other outputs the report never reads are not copied.
    """
    storage.require(url, "run directory ", "give the URL of the run directory of `atlas run` or `atlas demo`")
    cache = storage.cache_dir("runs", url)
    layout = RunLayout(cache)
    if not storage.isfile(storage.join(url, layout.run_json.name)):
        raise NotARunDirError(f"{url} is not an atlas run directory (no {layout.run_json.name}); give the URL of the "
                              "run directory of `atlas run` or `atlas demo`")
    wanted = [layout.run_json, layout.config_resolved, layout.provenance, layout.reference_versions,
              layout.analysis_json, layout.atlas, layout.neutrophils, layout.scores, layout.tables,
              layout.store_table("qc"), layout.store_table("neutrophils"), layout.reference_metrics,
              layout.reference_metrics_png]  # what report.inputs.load_run reads
    what = f"run directory {url}: "
    for local in wanted:
        storage.cached_download(str(storage.join(url, local.relative_to(cache).as_posix())), local, what)
    if not layout.atlas.exists():  # the bundle's atlas stands in for an analysis not run
        ref_atlas = layout.reference_atlas
        storage.cached_download(str(storage.join(url, ref_atlas.relative_to(cache).as_posix())), ref_atlas, what)
    log.info("run directory %s: local copy of the report's inputs in %s", url, cache)
    return cache


def _write(rundir: Path, out: Path, source: storage.Location) -> Path:
    """The report of the local run directory ``rundir`` written to ``out``; ``source`` is shown as its location."""
    t0 = time.perf_counter()
    inputs = load_run(rundir)
    inputs.location = str(source)
    name = (inputs.run_info or {}).get("name") or storage.name(source)
    rep = HtmlReport(
        "Pan-cancer neutrophil atlas: which cancers reprogram their neutrophils",
        figures_dir=out.parent / "figures",
        subtitle=f"Run “{name}” · {source} · report written "
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
