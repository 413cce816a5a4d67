"""The neutrophil sub-atlas: neutrophils re-integrated on their own (own HVGs, own scVI, own graph).

Neutrophil states are subtle next to the differences between cell types, so the whole-atlas latent
spends little of its capacity on them; a neutrophil-only model (as in Salcher et al. 2022 and Wu et
al. 2024) resolves them. Defaults differ from the whole atlas in two ways, both because neutrophils
of one sample are few: the batch is the data set, and no batch is dropped for size (every
neutrophil keeps its place).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..integrate.settings import IntegrateSettings
from .settings import SubatlasSettings

__all__ = ["SUBATLAS_DEFAULTS", "build_subatlas", "read_store_rows", "subatlas_settings"]

log = logging.getLogger(__name__)

#: What the sub-atlas changes in the atlas's integrate settings when ``analyse.subatlas`` sets nothing
#: (:class:`~atlas.analyse.settings.SubatlasSettings`' own defaults; no integration metrics).
SUBATLAS_DEFAULTS: dict[str, Any] = {**SubatlasSettings().integrate_overrides(), "metrics": False}


def subatlas_settings(
    base: IntegrateSettings | None, overrides: SubatlasSettings | dict[str, Any] | None = None
) -> IntegrateSettings:
    """The sub-atlas settings: the atlas's integrate settings, the sub-atlas defaults, then the user's."""
    sub = overrides if isinstance(overrides, SubatlasSettings) else SubatlasSettings.model_validate(overrides or {})
    data = (base or IntegrateSettings()).model_dump()
    data.update(SUBATLAS_DEFAULTS)
    data.update(sub.integrate_overrides())
    return IntegrateSettings.model_validate(data)


def read_store_rows(store_path: str | Path, obs_names) -> Any:
    """The store's rows for ``obs_names`` (in that order), all genes, in memory.

    Both formats are read by row chunks (:func:`atlas.integrate.storeio.read_store_subset`): only those
    rows are held, never the whole matrix. All genes are kept: the signature reliabilities need each
    cell's depth over all genes, and the sub-atlas chooses its own HVGs among them.

    Raises
    ------
    InputDataError
        A missing or unreadable store, or cells of the atlas that are not in it.
    """
    from ..integrate.storeio import read_store_subset

    return read_store_subset(Path(store_path), rows=np.asarray(obs_names, dtype=object).astype(str))


def build_subatlas(adata, settings: IntegrateSettings) -> tuple[Any, dict[str, Any]]:
    """HVGs, scVI, neighbours/UMAP/Leiden on neutrophils (``adata``: their raw counts, all genes).

    Returns the neutrophils x HVGs AnnData (obsm ``X_scVI``, ``X_umap``; obs ``neutrophil_leiden``;
    obsp connectivities) and a summary (HVGs, epochs, seconds).
    """
    from ..integrate import compute_graph, select_hvgs, train_scvi
    from ..integrate._device import resolve_backend

    backend = resolve_backend(settings.backend)
    hvgs = select_hvgs(
        adata,
        n_top_genes=min(settings.n_hvgs, adata.n_vars),
        batch_key=settings.hvg_batch_key,
        exclude_groups=settings.exclude_gene_groups,
        exclude_genes=settings.exclude_genes,
        backend=backend,
    )
    sub = adata[:, hvgs].copy()
    train = train_scvi(sub, settings=settings, check_counts=False)
    if train.latent_key != "X_scVI":
        sub.obsm["X_scVI"] = sub.obsm[train.latent_key]
    seconds = dict(train.seconds)
    seconds.update(
        compute_graph(
            sub,
            use_rep="X_scVI",
            n_neighbors=settings.n_neighbors,
            resolution=settings.leiden_resolution,
            min_dist=settings.umap_min_dist,
            random_state=settings.seed,
            backend=backend,
            key_added="neutrophil_leiden",
        )
    )
    summary = {"n_cells": sub.n_obs, "n_hvgs": len(hvgs), "epochs": train.epochs, "notes": train.notes,
               "seconds": seconds}  # fmt: skip
    return sub, summary
