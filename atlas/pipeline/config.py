"""The pipeline configuration: one ``atlas run`` with the settings of each stage (each stage's
settings model lives beside its stage; this file only assembles them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ..analyse.settings import AnalysisSettings
from ..core.settings import StrictModel, read_yaml, resolve_paths, validate
from ..ingest.settings import IngestConfig, load_ingest_config
from ..integrate.settings import IntegrateSettings
from ..score.settings import ScoreConfig
from ..simulate.settings import SimulateConfig


class PipelineConfig(StrictModel):
    """A whole ``atlas run``: where it goes and the settings of each stage."""

    name: str = Field(..., min_length=1, description="run name; a run directory holds one named run")
    run_dir: Path = Field(..., description="where outputs, manifest and provenance go")
    seed: int = 0
    simulate: SimulateConfig | None = Field(
        None, description="generate input data first (demo); ingest then defaults to the simulator's ingest.yaml"
    )
    ingest: IngestConfig | Path | None = Field(
        None, description="an ingest section, or the path of an ingest.yaml"
    )
    store_format: Literal["h5ad", "zarr"] = "h5ad"
    integrate: IntegrateSettings | None = Field(
        default_factory=IntegrateSettings, description="scVI integration and the reference bundle; null skips it"
    )
    score: ScoreConfig | None = Field(default_factory=ScoreConfig, description="signature scoring; null skips it")
    analyse: AnalysisSettings | None = Field(
        default_factory=AnalysisSettings,
        description="neutrophils, their sub-atlas, states, reprogramming index, pseudotime, statistics; null skips it",
    )
    report: bool = Field(True, description="write report.html (and figures/) at the end of the run")

    @model_validator(mode="after")
    def _has_input(self) -> PipelineConfig:
        if self.simulate is None and self.ingest is None:
            raise ValueError("give 'ingest' (data sets to read) or 'simulate' (generate demo data)")
        if self.analyse is not None and self.integrate is None:
            raise ValueError("'analyse' needs the integrated atlas: set 'integrate' or set 'analyse: null'")
        return self


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """Load a pipeline YAML; an ``ingest`` given as a path is loaded and validated too."""
    path = Path(path)
    data = resolve_paths(read_yaml(path), path.resolve().parent)
    cfg = validate(PipelineConfig, data, str(path))
    if isinstance(cfg.ingest, Path):
        cfg.ingest = load_ingest_config(cfg.ingest)
    return cfg

