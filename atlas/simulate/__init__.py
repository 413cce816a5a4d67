"""Ground-truth simulator: a messy multi-study tumour scRNA-seq atlas with known neutrophil reprogramming.

``simulate(out_dir, n_cells=..., n_datasets=..., n_genes=..., seed=...)`` writes data sets in several
formats, an ``ingest.yaml`` that reads them, and the ground truth (``truth_*`` obs columns and
``truth/*.csv``). See :mod:`atlas.simulate.core` for the output layout and
:mod:`atlas.simulate.biology` for the simulated biology.
"""

from .core import SimulationResult, simulate

__all__ = ["SimulationResult", "simulate"]
