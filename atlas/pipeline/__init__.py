"""The pipeline: stages, the run directory and its manifest, the runner, and the built-in demo."""

from .runner import RunResult, run_pipeline, stage_names

__all__ = ["RunResult", "run_pipeline", "stage_names"]
