"""The built-in demo: simulate a small pan-cancer cohort and run every stage on it.

``configs/demo.yaml`` holds the same settings (a test keeps the two equal).
"""

from __future__ import annotations

from pathlib import Path

from ..analyse.settings import AnalysisSettings
from ..integrate.settings import IntegrateSettings
from ..simulate.settings import SimulateConfig
from .config import PipelineConfig

#: Sized for 2 CPU cores (see README): 8 data sets, 6 cancer types, human and mouse, three formats.
DEMO_SIMULATION = SimulateConfig(n_cells=12_000, n_datasets=8, n_genes=15_000, seed=0, chunk_size=20_000)


#: scVI sized for 2 CPU cores: fewer HVGs, 6,000 gradient steps of 256 cells (max_epochs auto: about 140
#: epochs; batch 1,024 x 40 epochs, 440 steps, left scVI behind Harmony); metrics on a subsample without the
#: slowest scib metrics. On a GPU use the defaults instead (batch 128, a 56,000-step budget).
DEMO_INTEGRATION = IntegrateSettings(
    n_hvgs=2000, batch_size=256, max_epochs="auto", train_steps=6000, early_stopping=False, metrics_max_cells=5000,
    metrics_fast=True,
    metrics_label_key="truth_cell_type",  # simulated data: truth used only to evaluate the integration
)


#: The neutrophil sub-atlas (about 1,300 neutrophils in the demo) sized for 2 CPU cores likewise.
DEMO_ANALYSIS = AnalysisSettings(subatlas={"max_epochs": 60, "batch_size": 256})


def demo_config(run_dir: str | Path = "atlas_demo", *, n_cells: int | None = None) -> PipelineConfig:
    """The demo pipeline configuration, writing into ``run_dir``."""
    sim = DEMO_SIMULATION if n_cells is None else DEMO_SIMULATION.model_copy(update={"n_cells": n_cells})
    return PipelineConfig(name="demo", run_dir=Path(run_dir), seed=0, simulate=sim, ingest=None,
                          integrate=DEMO_INTEGRATION, analyse=DEMO_ANALYSIS)
