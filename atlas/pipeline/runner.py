"""``atlas run``: execute the stages in order, skipping those whose inputs and settings are unchanged."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.errors import ConfigError
from ..core.settings import settings_hash
from ._killpoints import crash_points
from .config import PipelineConfig, stage_seeds
from .rundir import RunDir, fingerprint
from .stages import STAGES, Context

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What happened in a run: which stages ran, which were skipped, and the run directory."""

    run_dir: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def stage_names() -> list[str]:
    """The names of the pipeline's stages, in order."""
    return [s.name for s in STAGES]


def run_pipeline(config: PipelineConfig, *, force: Sequence[str] = (), until: str | None = None) -> RunResult:
    """Run the pipeline described by ``config`` in ``config.run_dir``.

    Parameters
    ----------
    config
        The validated pipeline configuration.
    force
        Stage names to rerun even when current (``"all"`` reruns every stage).
    until
        Stop after this stage.
    """
    names = stage_names()
    for n in [*force, *([until] if until else [])]:
        if n not in names and n != "all":
            raise ConfigError(f"unknown stage {n!r}; the stages are {', '.join(names)}")
    result = RunResult(run_dir=str(config.run_dir))
    seeds = {"pipeline": config.seed, **stage_seeds(config)}
    with RunDir(config.run_dir, config.name) as rundir:
        rundir.write_provenance(config, seeds)
        ctx = Context(config=config, rundir=rundir)
        for stage in STAGES:
            if not stage.enabled(ctx):
                continue
            settings = settings_hash(stage.settings(ctx))
            inputs = {str(p): fingerprint(p) for p in stage.inputs(ctx)}
            missing = [p for p, fp in inputs.items() if fp is None]
            if missing:
                raise ConfigError(f"stage {stage.name}: input(s) not found: {', '.join(missing)}")
            current, why = rundir.is_current(stage.name, settings, inputs)
            if current and stage.name not in force and "all" not in force:
                log.info("stage %-9s skipped (%s)", stage.name, why)
                result.skipped.append(stage.name)
            else:
                reason = "forced" if current else why
                log.info("stage %-9s running (%s): %s", stage.name, reason, stage.description)
                rundir.forget(stage.name)
                started = time.time()
                with crash_points(stage.name):  # test-only SIGKILL points (ATLAS_TEST_KILL_AT)
                    stage.run(ctx)
                rundir.record(stage.name, settings, inputs, stage.outputs(ctx), started)
                result.ran.append(stage.name)
                result.seconds[stage.name] = round(time.time() - started, 2)
                log.info("stage %-9s done in %.1f s", stage.name, result.seconds[stage.name])
            if stage.name == until:
                break
    return result
