"""The pipeline configuration: one ``atlas run`` with the settings of each stage (each stage's
settings model lives beside its stage; this file only assembles them).

The top-level ``seed`` is every stage's seed unless the stage's section sets its own (see
:func:`apply_seed`); provenance records each stage's effective seed (:func:`stage_seeds`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, Field, field_validator, model_validator

from ..analyse.settings import AnalysisSettings
from ..core.errors import ConfigError
from ..core.settings import StrictModel, read_config, validate
from ..core.storage import PathOrURL, is_url
from ..ingest.settings import IngestConfig, load_ingest_config
from ..integrate.settings import IntegrateSettings
from ..score.settings import ScoreConfig
from ..simulate.settings import SimulateConfig

M = TypeVar("M", bound=BaseModel)

#: The seed field of each stage's section; the top-level ``seed`` is its default. Ingest's is
#: ``qc.doublet_random_state`` (see :func:`seeded_ingest`).
STAGE_SEED_FIELDS = {"simulate": "seed", "integrate": "seed", "score": "random_state", "analyse": "seed"}


class PipelineConfig(StrictModel):
    """A whole ``atlas run``: where it goes and the settings of each stage."""

    name: str = Field(..., min_length=1, description="run name; a run directory holds one named run")
    run_dir: PathOrURL = Field(
        ..., description="where outputs, manifest and provenance go: a local folder or a URL (s3://, gs://, any "
        "fsspec URL; the run then works in a local working copy, see work_dir and docs/cloud.md)")
    work_dir: Path | None = Field(
        None, description="the local working copy of a run_dir URL (default: $ATLAS_WORK_DIR/<name>-<hash>, "
        "else ~/.cache/atlas/runs/<name>-<hash>); a config file may not set it with a local run_dir")
    seed: int = Field(0, description="every stage's seed, unless the stage's own section sets one")
    simulate: SimulateConfig | None = Field(
        None, description="generate input data first (demo); ingest then defaults to the simulator's ingest.yaml"
    )
    ingest: IngestConfig | PathOrURL | None = Field(
        None, description="an ingest section, or the path or URL of an ingest.yaml"
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

    @field_validator("work_dir", mode="before")
    @classmethod
    def _local_work_dir(cls, v):
        if is_url(v):
            raise ValueError(f"work_dir must be a local folder (the working copy of run_dir), not the URL {v}")
        return v

    @property
    def remote(self) -> bool:
        """Whether ``run_dir`` is a URL (object storage): the run then works in a local copy (``work_dir``)."""
        return is_url(self.run_dir)

    @model_validator(mode="after")
    def _has_input(self) -> PipelineConfig:
        if self.simulate is None and self.ingest is None:
            raise ValueError("give 'ingest' (data sets to read) or 'simulate' (generate demo data)")
        if self.analyse is not None and self.integrate is None:
            raise ValueError("'analyse' needs the integrated atlas: set 'integrate' or set 'analyse: null'")
        if self.integrate is not None and _multi_process(self.integrate):
            raise ValueError(
                "integrate: multi-process training (devices > 1, num_nodes > 1 or a ddp strategy) relaunches the "
                "command once per device, so it cannot run inside `atlas run`; run the integrate stage as "
                "`atlas integrate STORE --out REFDIR -c CONFIG` (see docs/multi_process.md), or train on one device")
        return self

    @model_validator(mode="after")
    def _seed_stages(self) -> PipelineConfig:
        return apply_seed(self)


def _multi_process(s: IntegrateSettings) -> bool:
    """Whether ``s`` trains in several processes (Lightning DDP launches one per device)."""
    return s.n_processes > 1 or (s.strategy or "").startswith("ddp")


def _seeded(section: M, field: str, seed: int) -> M:
    """``section`` with ``field = seed``, unless the user set ``field``.

    A copy (a section may be shared, e.g. the demo's module-level settings) in which ``field`` stays
    unset, so a later change of the top-level seed still reaches it.
    """
    if field in section.model_fields_set or getattr(section, field) == seed:
        return section
    out = section.model_copy()
    out.__dict__[field] = seed  # not an assignment: that would mark the field as set by the user
    return out


def seeded_ingest(ingest: IngestConfig, seed: int) -> IngestConfig:
    """``ingest`` with ``seed`` as its QC's doublet seed, unless its ``qc`` sets ``doublet_random_state``."""
    qc = _seeded(ingest.qc, "doublet_random_state", seed)
    if qc is ingest.qc:
        return ingest
    out = ingest.model_copy()
    out.__dict__["qc"] = qc
    return out


def apply_seed(cfg: PipelineConfig) -> PipelineConfig:
    """Make ``cfg.seed`` the seed of every stage whose section does not set its own (in place).

    Run by the config's validator, and again by :func:`load_pipeline_config` once an ``ingest`` given as
    a path is loaded. Sections are replaced, never changed: they may be shared.
    """
    # cfg.__dict__, not assignment: assigning would rerun this validator (validate_assignment)
    for name, field in STAGE_SEED_FIELDS.items():
        section = getattr(cfg, name)
        if section is not None:
            cfg.__dict__[name] = _seeded(section, field, cfg.seed)
    if isinstance(cfg.ingest, IngestConfig):
        cfg.__dict__["ingest"] = seeded_ingest(cfg.ingest, cfg.seed)
    return cfg


def stage_seeds(cfg: PipelineConfig) -> dict[str, int]:
    """The effective seed of each enabled stage, in run order (for ``provenance.json``).

    Ingest's is its QC's doublet seed: the run's seed when ingest reads the simulator's ``ingest.yaml``.
    """
    seeds = {"simulate": cfg.simulate.seed} if cfg.simulate is not None else {}
    ingest = load_ingest_config(cfg.ingest) if isinstance(cfg.ingest, Path | str) else cfg.ingest
    seeds["ingest.qc"] = seeded_ingest(ingest, cfg.seed).qc.doublet_random_state if ingest is not None else cfg.seed
    for name in ("integrate", "score", "analyse"):
        section = getattr(cfg, name)
        if section is not None:
            seeds[name] = getattr(section, STAGE_SEED_FIELDS[name])
    return seeds


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """Load a pipeline YAML (a local file or a URL); an ``ingest`` given as a path or URL is loaded and validated too.

    Relative paths resolve against the YAML's folder: for a YAML read from a URL, to URLs in that folder
    (a relative ``run_dir`` then puts the run in object storage beside the config).
    """
    cfg = validate(PipelineConfig, read_config(path), str(path))
    if cfg.work_dir is not None and not cfg.remote:  # checked here, not in the model: `atlas analyse` reuses a
        raise ConfigError(  # resolved config with run_dir set to the local working copy
            f"invalid configuration in {path}: work_dir is the local working copy of a run_dir URL; with a local "
            "run_dir the run works in run_dir itself: remove work_dir")
    if isinstance(cfg.ingest, Path | str):
        try:
            cfg.ingest = load_ingest_config(cfg.ingest)
        except ConfigError as e:  # say which config pointed there
            raise ConfigError(f"{path}: ingest: {e}; point `ingest` at your data sets' ingest.yaml") from None
    return apply_seed(cfg)  # the loaded ingest section too

