"""The stages of ``atlas run``, in order. Later stages (integrate, score, ...) are appended here.

A stage declares its settings (hashed), its input paths (fingerprinted) and its outputs; the
runner skips it when all three are unchanged since its last successful run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.layout import RunLayout
from ..ingest.settings import IngestConfig, load_ingest_config
from ..score.settings import ScoreConfig
from .config import PipelineConfig, seeded_ingest
from .rundir import RunDir


@dataclass
class Context:
    """What stages share during one run: the config, the run directory and resolved artifacts."""

    config: PipelineConfig
    rundir: RunDir | None = None  # None: a command working on an existing run directory outside `atlas run`
    artifacts: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.rundir.path if self.rundir is not None else Path(self.config.run_dir)

    @property
    def layout(self) -> RunLayout:
        """Where each file of the run directory is."""
        return RunLayout(self.path, self.config.store_format)


@dataclass(frozen=True)
class Stage:
    """One pipeline stage."""

    name: str
    description: str
    enabled: Callable[[Context], bool]
    settings: Callable[[Context], Any]
    inputs: Callable[[Context], list[Path]]
    outputs: Callable[[Context], list[Path]]
    run: Callable[[Context], None]


# --------------------------------------------------------------------------------------- simulate
def _sim_dir(ctx: Context) -> Path:
    return ctx.layout.data


def _run_simulate(ctx: Context) -> None:
    from ..simulate import simulate

    s = ctx.config.simulate
    simulate(_sim_dir(ctx), n_cells=s.n_cells, n_datasets=s.n_datasets, n_genes=s.n_genes, seed=s.seed,
             chunk_size=s.chunk_size, overwrite=True, difficulty=s.difficulty)


SIMULATE = Stage(
    name="simulate",
    description="generate ground-truth tumour data sets and their ingest.yaml",
    enabled=lambda ctx: ctx.config.simulate is not None,
    settings=lambda ctx: ctx.config.simulate,
    inputs=lambda ctx: [],
    outputs=lambda ctx: [_sim_dir(ctx)],
    run=_run_simulate,
)


# ----------------------------------------------------------------------------------------- ingest
def ingest_config(ctx: Context) -> IngestConfig:
    """The ingest settings: the config's own, or the simulator's ingest.yaml in a demo run."""
    if "ingest_config" not in ctx.artifacts:
        cfg = ctx.config.ingest
        if cfg is None:
            yaml_path = ctx.layout.ingest_yaml
            if not yaml_path.exists():
                raise ConfigError(f"{yaml_path} is missing: the simulate stage must run before ingest")
            cfg = load_ingest_config(yaml_path)
            cfg.qc.doublet_random_state = ctx.config.seed  # the simulator writes QC defaults, not a choice of seed
        elif isinstance(cfg, Path | str):  # a path or URL of an ingest.yaml
            cfg = seeded_ingest(load_ingest_config(cfg), ctx.config.seed)
        ctx.artifacts["ingest_config"] = cfg
    return ctx.artifacts["ingest_config"]


def store_path(ctx: Context) -> Path:
    """Where the ingested store lives in the run directory."""
    return ctx.layout.store


def _store_sidecars(ctx: Context) -> list[Path]:
    return ctx.layout.store_tables


def _ingest_inputs(ctx: Context) -> list[Path]:
    paths = []
    for d in ingest_config(ctx).datasets:
        paths.append(d.path)
        if d.obs_path is not None:
            paths.append(d.obs_path)
    return paths


def _run_ingest(ctx: Context) -> None:
    from ..ingest.stage import ingest

    ingest(ingest_config(ctx), store_path(ctx), overwrite=True)


INGEST = Stage(
    name="ingest",
    description="read, harmonise genes and metadata, QC, and concatenate data sets into one store",
    enabled=lambda ctx: True,
    # chunk_size changes memory use, not results
    settings=lambda ctx: ingest_config(ctx).model_dump(mode="json", exclude={"chunk_size"}),
    inputs=_ingest_inputs,
    outputs=lambda ctx: [store_path(ctx), *_store_sidecars(ctx), ctx.layout.store_removed],
    run=_run_ingest,
)

# -------------------------------------------------------------------------------------- integrate
def refdir_path(ctx: Context) -> Path:
    """Where the reference bundle (model, HVGs, minified atlas, metrics) goes."""
    return ctx.layout.reference


def _run_integrate(ctx: Context) -> None:
    from ..integrate import integrate_store

    integrate_store(store_path(ctx), refdir_path(ctx), ctx.config.integrate, overwrite=True)


INTEGRATE = Stage(
    name="integrate",
    description="HVGs, scVI on all data sets, neighbours/UMAP/Leiden, scib-metrics, reference bundle",
    enabled=lambda ctx: ctx.config.integrate is not None,
    settings=lambda ctx: ctx.config.integrate,
    inputs=lambda ctx: [store_path(ctx)],
    outputs=lambda ctx: [refdir_path(ctx)],
    run=_run_integrate,
)


# ------------------------------------------------------------------------------------------ score
def scores_path(ctx: Context) -> Path:
    """Where the signature scores of every cell go."""
    return ctx.layout.scores


def _run_score(ctx: Context) -> None:
    from ..score import score_store

    s = ctx.config.score
    score_store(store_path(ctx), s.signature_arg(), out_path=scores_path(ctx), **s.kwargs())


SCORE = Stage(
    name="score",
    description="score every signature on every cell in one pass over the store",
    enabled=lambda ctx: ctx.config.score is not None,
    # chunk_size and backend change speed, not numbers (CPU and GPU agree within 1e-5)
    settings=lambda ctx: ctx.config.score.model_dump(mode="json", exclude={"chunk_size", "backend"}),
    inputs=lambda ctx: [store_path(ctx)] + ([ctx.config.score.signatures]
                                            if isinstance(ctx.config.score.signatures, Path) else []),
    outputs=lambda ctx: [scores_path(ctx)],
    run=_run_score,
)


# ---------------------------------------------------------------------------------------- analyse
def _analysis_outputs(ctx: Context) -> list[Path]:
    out = [ctx.layout.atlas, ctx.layout.tables, ctx.layout.analysis_json]
    neut = ctx.layout.neutrophils
    return out + ([neut] if neut.exists() else [])


def scoring_options(ctx: Context) -> ScoreConfig:
    """How the analysis scores what the score stage did not: the score stage's settings (defaults with
    the run's seed when the score stage is off)."""
    return ctx.config.score or ScoreConfig(random_state=ctx.config.seed)


def _run_analyse(ctx: Context) -> None:
    from ..analyse.stage import analyse

    scores = scores_path(ctx) if ctx.config.score is not None else None
    analyse(ctx.path, store=store_path(ctx), refdir=refdir_path(ctx), scores=scores, settings=ctx.config.analyse,
            scoring=scoring_options(ctx), subatlas_base=ctx.config.integrate)  # fmt: skip


ANALYSE = Stage(
    name="analyse",
    description="neutrophils, their sub-atlas, states, reprogramming index and pseudotime, patient statistics",
    enabled=lambda ctx: ctx.config.analyse is not None and ctx.config.integrate is not None,
    settings=lambda ctx: {
        "analyse": ctx.config.analyse.model_dump(mode="json"),
        "scoring": {k: v for k, v in vars(scoring_options(ctx)).items() if k not in ("backend", "chunk_size")},
        "subatlas_base": ctx.config.integrate.model_dump(mode="json") if ctx.config.integrate else None,
    },
    inputs=lambda ctx: [store_path(ctx), refdir_path(ctx)]
    + ([scores_path(ctx)] if ctx.config.score is not None else []),
    outputs=_analysis_outputs,
    run=_run_analyse,
)


# ----------------------------------------------------------------------------------------- report
def _run_report(ctx: Context) -> None:
    from ..report import write_report

    write_report(ctx.path)


REPORT = Stage(
    name="report",
    description="report.html with figures and tables (self-contained, opens offline)",
    enabled=lambda ctx: ctx.config.report,
    settings=lambda ctx: {"report": True},
    inputs=lambda ctx: [p for p in (ctx.layout.tables, ctx.layout.atlas, ctx.layout.reference_metrics,
                                    ctx.layout.store_table("qc")) if p.exists()],  # fmt: skip
    outputs=lambda ctx: [ctx.layout.report, ctx.layout.figures],
    run=_run_report,
)

STAGES: list[Stage] = [SIMULATE, INGEST, INTEGRATE, SCORE, ANALYSE, REPORT]
