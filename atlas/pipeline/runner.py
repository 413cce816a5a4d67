"""``atlas run``: execute the stages in order, skipping those whose inputs and settings are unchanged.

Each stage's wall time and peak memory (:mod:`atlas.core.memory`) are kept in :class:`RunResult`,
printed as a table at the end of ``atlas run`` and written to ``provenance.json`` (``run_summary``)
after every stage, so a run that fails or is killed still shows where its time went.

A ``run_dir`` URL (object storage) runs in a local working copy mirrored to it (:mod:`atlas.pipeline.remote`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import ConfigError
from ..core.memory import PeakMemory, peak_rss_bytes
from ..core.progress import format_duration
from ..core.settings import settings_hash
from ._killpoints import crash_points
from .config import PipelineConfig, stage_seeds
from .remote import RemoteRun, mirrored, work_dir_of
from .rundir import RunDir, fingerprint
from .stages import STAGES, Context

log = logging.getLogger(__name__)


@dataclass
class StageTiming:
    """One stage of a run: ``status`` (``ran``, ``skipped`` or ``failed``), wall seconds and peak memory.

    ``peak_rss_gib`` is this process's peak resident memory during the stage (None when skipped);
    ``peak_gpu_gib`` PyTorch's peak GPU allocation, None when the stage did not use CUDA.
    """

    status: str
    seconds: float
    peak_rss_gib: float | None = None
    peak_gpu_gib: float | None = None


@dataclass
class RunResult:
    """What happened in a run: which stages ran or were skipped, their times and peak memory, the run directory.

    ``peak_rss_per_stage`` is False where the peak could not be reset between stages (not Linux): each
    stage's figure is then the process's peak so far. ``local_dir`` is where the run's files are on this
    machine: ``run_dir`` itself, or the working copy of a ``run_dir`` URL.
    """

    run_dir: str
    local_dir: str = ""
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    stages: dict[str, StageTiming] = field(default_factory=dict)
    total_seconds: float = 0.0
    peak_rss_gib: float = 0.0
    peak_rss_per_stage: bool = True

    def summary(self) -> dict[str, Any]:
        """The per-stage times and peak memory as stored in ``provenance.json`` (``run_summary``)."""
        return {
            "stages": {name: asdict(t) for name, t in self.stages.items()},
            "total_seconds": round(self.total_seconds, 2),
            "peak_rss_gib": round(self.peak_rss_gib, 3),
            "peak_rss_scope": "per stage" if self.peak_rss_per_stage else "process peak so far (no per-stage reset)",
        }

    def table(self) -> str:
        """A compact table of the stages' status, time and peak memory (what ``atlas run`` prints)."""
        gpu = any(t.peak_gpu_gib is not None for t in self.stages.values())
        rows = [["stage", "status", "time", "peak RSS", *(["peak GPU"] if gpu else [])]]
        for name, t in self.stages.items():
            ran = t.status != "skipped"
            rows.append([name, t.status, format_duration(t.seconds) if ran else "-", _gib(t.peak_rss_gib),
                         *([_gib(t.peak_gpu_gib)] if gpu else [])])  # fmt: skip
        rows.append(["total", "", format_duration(self.total_seconds), _gib(self.peak_rss_gib), *([""] if gpu else [])])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        if not self.peak_rss_per_stage:
            lines.append("(peak RSS is the process's peak so far: it could not be reset between stages here)")
        return "\n".join(lines)


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} GiB"


def stage_names() -> list[str]:
    """The names of the pipeline's stages, in order."""
    return [s.name for s in STAGES]


def run_pipeline(config: PipelineConfig, *, force: Sequence[str] = (), until: str | None = None,
                 force_lock: bool = False) -> RunResult:
    """Run the pipeline described by ``config`` in ``config.run_dir`` (a local folder or a URL).

    Parameters
    ----------
    config
        The validated pipeline configuration.
    force
        Stage names to rerun even when current (``"all"`` reruns every stage).
    until
        Stop after this stage.
    force_lock
        For a ``run_dir`` URL: take its ``.lock`` object even if another run seems to hold it.
    """
    names = stage_names()
    for n in [*force, *([until] if until else [])]:
        if n not in names and n != "all":
            raise ConfigError(f"unknown stage {n!r}; the stages are {', '.join(names)}")
    remote = RemoteRun(config.run_dir, config.name, force_lock=force_lock) if config.remote else None
    local = work_dir_of(config) if remote else config.run_dir
    result = RunResult(run_dir=str(config.run_dir), local_dir=str(local))
    seeds = {"pipeline": config.seed, **stage_seeds(config)}
    if remote:
        remote.check()  # bucket, credentials, another run there: before any work
        log.info("run directory %s: working copy %s", config.run_dir, local)
    run_started = time.perf_counter()
    with RunDir(local, config.name) as rundir, mirrored(remote, rundir):
        rundir.write_provenance(config, seeds)
        ctx = Context(config=config, rundir=rundir)
        for stage in STAGES:
            if not stage.enabled(ctx):
                continue
            settings = settings_hash(rundir.portable(stage.settings(ctx)))
            inputs = {rundir.key(p): fingerprint(p) for p in stage.inputs(ctx)}
            missing = [p for p, fp in inputs.items() if fp is None]
            if missing:
                raise ConfigError(f"stage {stage.name}: input(s) not found: {', '.join(missing)}")
            current, why = rundir.is_current(stage.name, settings, inputs)
            if current and stage.name not in force and "all" not in force:
                log.info("stage %-9s skipped (%s)", stage.name, why)
                result.skipped.append(stage.name)
                result.stages[stage.name] = StageTiming("skipped", 0.0)
                if remote:
                    remote.commit(rundir, stage.name)  # a stage only the working copy records: upload it
            else:
                reason = "forced" if current else why
                log.info("stage %-9s running (%s): %s", stage.name, reason, stage.description)
                rundir.forget(stage.name)
                started = _run_stage(stage, ctx, rundir, result, run_started)
                rundir.record(stage.name, settings, inputs, stage.outputs(ctx), started)
                if remote:
                    remote.commit(rundir, stage.name)
                result.ran.append(stage.name)
                t = result.stages[stage.name]
                result.seconds[stage.name] = t.seconds
                log.info("stage %-9s done in %s, peak RSS %s", stage.name, format_duration(t.seconds),
                         _gib(t.peak_rss_gib))
            _finish(result, rundir, run_started)
            if stage.name == until:
                break
    return result


def _run_stage(stage, ctx: Context, rundir: RunDir, result: RunResult, run_started: float) -> float:
    """Run one stage, its wall time and peak memory into ``result.stages`` (also when it fails); returns its start."""
    started, t0 = time.time(), time.perf_counter()
    memory = PeakMemory()
    status = "failed"
    try:
        with memory, crash_points(stage.name):  # test-only SIGKILL points (ATLAS_TEST_KILL_AT)
            stage.run(ctx)
        status = "ran"
    finally:
        gpu = None if memory.gpu_gib is None else round(memory.gpu_gib, 3)
        result.stages[stage.name] = StageTiming(status, round(time.perf_counter() - t0, 2), round(memory.rss_gib, 3), gpu)
        result.peak_rss_per_stage &= memory.per_step
        if status == "failed":
            _finish(result, rundir, run_started)
            log.info("stage %s failed after %s; the run so far:\n%s", stage.name,
                      format_duration(result.stages[stage.name].seconds), result.table())
    return started


def _finish(result: RunResult, rundir: RunDir, run_started: float) -> None:
    """Bring the run's totals up to date and write the summary into provenance.json."""
    result.total_seconds = time.perf_counter() - run_started
    stage_peaks = [t.peak_rss_gib for t in result.stages.values() if t.peak_rss_gib is not None]
    result.peak_rss_gib = max([*stage_peaks, 0.0 if result.peak_rss_per_stage else peak_rss_bytes() / 1024**3])
    rundir.record_run_summary(result.summary())
