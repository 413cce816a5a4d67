"""Ground-truth simulator: a messy multi-study tumour scRNA-seq atlas with known neutrophil reprogramming.

``simulate(out_dir, n_cells=..., n_datasets=..., n_genes=..., seed=..., difficulty=...)`` writes data
sets in several formats, an ``ingest.yaml`` that reads them, and the ground truth (``truth_*`` obs
columns and ``truth/*``). See :mod:`atlas.simulate.stage` for the output layout,
:mod:`atlas.simulate.biology` for the simulated biology and :mod:`atlas.simulate.difficulty` for the
difficulty knobs. ``simulate`` and ``SimulationResult`` are imported on first use (numba, pandas),
so the configuration can import :class:`Difficulty` cheaply.
"""

from .difficulty import DIFFICULTY_PRESETS, Difficulty

__all__ = ["DIFFICULTY_PRESETS", "Difficulty", "SimulationResult", "simulate"]


def __getattr__(name: str):
    if name in ("SimulationResult", "simulate"):
        from . import stage

        return getattr(stage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
