"""Reference run directories built from simulated data, for tests and benchmarks of query mapping.

:func:`build_reference_run` ingests some simulated data sets, integrates them and scores them like
``atlas run`` does, then writes the annotated ``atlas.h5ad`` of ``docs/run_directory.md`` either
with the real analysis stage (``annotate="analysis"``) or, for speed and independence from it, with
labels copied from the simulator's ground truth (``annotate="truth"``). Only this helper reads
``truth_*`` columns to make labels; the query code never does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from atlas.ingest.settings import IngestConfig
from atlas.integrate.settings import IntegrateSettings
from atlas.score.settings import DEFAULT_SIGNATURES

__all__ = ["annotate_from_truth", "build_reference_run"]

log = logging.getLogger(__name__)

SCORING = {"method": "scanpy", "ctrl_size": 50, "n_bins": 25, "random_state": 0, "normalize": "auto",
           "max_rank": 1500}  # fmt: skip


def annotate_from_truth(rundir: Path, scores: pd.DataFrame, signatures: list[str]) -> Path:
    """``rundir/atlas.h5ad`` from the bundle with cell types and states copied from the ground truth.

    The reprogramming axis is fitted on the (true) neutrophils' scores as the analysis stage does.
    """
    import anndata as ad

    from atlas.analyse import apply_reprogramming_axis, fit_reprogramming_axis
    from atlas.core.atomic import write_anndata

    atlas = ad.read_h5ad(rundir / "reference" / "atlas.h5ad")
    obs = atlas.obs
    ctype = obs["truth_cell_type"].astype(str)
    obs["cell_type"] = pd.Categorical(ctype)
    obs["cell_type_confidence"] = 1.0
    neut = (ctype == "neutrophil").to_numpy()
    obs["is_neutrophil"] = neut
    state = obs["truth_state"].astype(str).where(neut & (obs["truth_state"].astype(str) != ""))
    obs["neutrophil_state"] = pd.Categorical(state)
    sc = scores.loc[atlas.obs_names, signatures]
    for c in sc.columns:
        obs[c] = sc[c].to_numpy()
    axis = fit_reprogramming_axis(sc.loc[neut], method=SCORING["method"])
    index = np.full(atlas.n_obs, np.nan)
    index[neut] = apply_reprogramming_axis(sc.loc[neut], axis)
    obs["reprogramming_index"] = index
    atlas.uns["reprogramming_axis"] = axis.to_dict()
    atlas.uns["atlas_scoring"] = {**SCORING, "signatures": list(signatures)}
    atlas.uns["annotation"] = "ground truth (test/benchmark reference)"
    return write_anndata(rundir / "atlas.h5ad", atlas)


def build_reference_run(
    ingest_config: IngestConfig,
    rundir: str | Path,
    integrate: IntegrateSettings,
    *,
    drop_cell_types: tuple[str, ...] = (),
    signatures: list[str] | None = None,
    annotate: Literal["truth", "analysis"] = "truth",
    analysis=None,
) -> Path:
    """Ingest, integrate, score and annotate simulated data sets into a reference run directory.

    Parameters
    ----------
    ingest_config
        The data sets of the reference (e.g. the simulator's ingest.yaml minus held-out data sets).
    rundir
        The run directory to write (``store.h5ad``, ``reference/``, ``scores.parquet``, ``atlas.h5ad``).
    integrate
        Integration settings (tiny ones for tests).
    drop_cell_types
        True cell types removed from the store before integration (a type the reference lacks).
    signatures
        Signatures to score (default: the pipeline's defaults).
    annotate
        ``truth`` (labels from the ground truth) or ``analysis`` (:func:`atlas.analyse.stage.analyse`).
    analysis
        :class:`atlas.analyse.AnalysisSettings` of the analysis stage (``None``: its defaults).
    """
    import anndata as ad

    from atlas.ingest.stage import ingest
    from atlas.integrate import integrate_store
    from atlas.score import score_store

    rundir = Path(rundir)
    rundir.mkdir(parents=True, exist_ok=True)
    store = rundir / "store.h5ad"
    ingest(ingest_config, store, overwrite=True)
    if drop_cell_types:
        a = ad.read_h5ad(store)
        keep = ~a.obs["truth_cell_type"].astype(str).isin(drop_cell_types).to_numpy()
        a[keep].copy().write_h5ad(store)
        log.info("dropped %d cells of %s from the reference store", int((~keep).sum()), drop_cell_types)
    integrate_store(store, rundir / "reference", integrate, overwrite=True)
    sigs = list(signatures or DEFAULT_SIGNATURES)
    kw = {k: v for k, v in SCORING.items() if k != "max_rank"}
    scores = score_store(store, sigs, out_path=rundir / "scores.parquet", max_rank=SCORING["max_rank"], **kw)
    if annotate == "analysis":
        from atlas.analyse.stage import analyse

        analyse(rundir, store=store, refdir=rundir / "reference", scores=rundir / "scores.parquet",
                settings=analysis, subatlas_base=integrate)  # fmt: skip
    else:
        annotate_from_truth(rundir, scores, sigs)
    return rundir
