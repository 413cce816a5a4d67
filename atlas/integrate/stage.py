"""``integrate_store``: from the ingested store to a reference bundle, written atomically.

Layout of ``REFDIR`` (a temporary sibling renamed into place at the end, so a crash leaves the
old bundle or none)::

    model/            scvi-tools model (SCVI or SCANVI): SCVI.load("REFDIR/model", adata=atlas)
    atlas.h5ad        minified atlas: all obs (truth_* carried through), var = HVGs, X an empty CSR
                      of the right shape (scvi-tools minification: the latent posterior is kept in
                      obsm scvi_latent_qzm/qzv), obsm X_scVI (X_scANVI), X_umap, obs leiden
    hvg.txt           the HVGs in model order
    registry.json     the scvi-tools registry, for humans (the model keeps its own copy)
    elbo_curve.csv    per-epoch ELBO (train, validation), reconstruction, KL and KL weight, per model
    config.json       the settings used and what they resolved to (devices, covariates kept)
    summary.json      cells in and out, batches dropped, epochs, ELBOs, convergence, timings, notes
    versions.json     package versions
    signatures.yaml   copy of the signature registry the atlas is scored with
    metrics.csv/.png  scib-metrics: scVI vs unintegrated PCA and Harmony (when metrics are on)
    checks.json       convergence (epochs, steps, final ELBOs, plateau reached) and the baseline check
                      (does scVI beat Harmony on batch correction?), with the warnings raised

Everything up to ``signatures.yaml`` is written (and renamed into place) before the optional steps:
the scib metrics, their plot and the baseline check run on the finished bundle, and a failure there
is a logged WARNING (kept in ``summary.json`` notes), never a lost model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.atomic import atomic_path, write_json
from ..core.errors import InputDataError, RunDirError
from ._checks import INTEGRATION_BATCH, counts_matrix, refuse_truth, require_obs_keys, small_batches
from .errors import TooSmallError
from .settings import IntegrateSettings

log = logging.getLogger(__name__)

EXTRA_PACKAGES = (
    "scib-metrics",
    "jax",
    "jaxlib",
    "harmonypy",
    "leidenalg",
    "igraph",
    "umap-learn",
    "pynndescent",
    "scikit-misc",
    "scikit-learn",
    "matplotlib",
)


@dataclass
class IntegrateResult:
    """What :func:`integrate_store` did."""

    refdir: Path
    n_cells_in: int
    n_cells: int
    n_hvgs: int
    model: str
    latent_key: str
    dropped_batches: dict[str, int] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    history: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    metrics: pd.DataFrame | None = None
    written: bool = True
    convergence: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def read_store(path: str | Path):
    """Open an ingested store (``.h5ad`` or ``.zarr``) in memory, with a clear error when it is missing.

    All of it: :func:`integrate_store` reads only what it needs (:mod:`atlas.integrate.storeio`).
    """
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise InputDataError(f"store {path} does not exist; run `atlas ingest` first or check the path")
    try:
        return ad.read_zarr(path) if path.suffix == ".zarr" or path.is_dir() else ad.read_h5ad(path)
    except Exception as e:  # h5py / zarr errors on a corrupt or foreign file
        raise InputDataError(f"cannot read store {path} as AnnData: {e}") from e


def check_store(adata, s: IntegrateSettings) -> None:
    """Fail fast, before any training, on every obs key the settings name and on non-count data."""
    check_keys(adata, s)
    counts_matrix(adata)


def check_keys(adata, s: IntegrateSettings) -> None:
    """Every obs key the settings name is in ``adata.obs``, and none trains on ground truth (``truth_*``)."""
    from .model import _training_keys

    refuse_truth({**_training_keys(s), "hvg_batch_key": s.hvg_batch_key})
    keys: dict[str, str | None] = {"batch_key": s.batch_key, "hvg_batch_key": s.hvg_batch_key}
    keys.update({f"categorical_covariates[{i}]": c for i, c in enumerate(s.categorical_covariates)})
    if s.model == "scanvi":
        keys["labels_key"] = s.labels_key
    if s.metrics:
        keys["metrics_label_key"] = s.metrics_label_key
        keys.update({f"metrics_batch_keys[{i}]": k for i, k in enumerate(s.metrics_batch_keys)})
    require_obs_keys(adata, keys)


def _versions() -> dict[str, str]:
    from ..core.provenance import package_versions

    out = package_versions()
    for name in EXTRA_PACKAGES:
        try:
            out.setdefault(name, metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
    return out


def _minify(model, adata, notes: list[str]):
    """The atlas without counts: scvi-tools minification (the latent posterior is kept), else an empty CSR.

    Minification replaces ``model.adata`` by a new, minified AnnData (obs, obsm, uns carried over),
    which is returned; ``SCVI.load(dir, adata=...)`` recognises it and reads the latent from it.
    """
    import scipy.sparse as sp

    try:
        qzm, qzv = model.get_latent_representation(give_mean=True, return_dist=True, batch_size=4096)
        adata.obsm["_atlas_qzm"], adata.obsm["_atlas_qzv"] = qzm, qzv
        model.minify_adata(use_latent_qzm_key="_atlas_qzm", use_latent_qzv_key="_atlas_qzv")
        out = model.adata
    except Exception as e:  # minification is model-specific; the bundle stays usable without it
        notes.append(f"scvi-tools minification failed ({e}); counts replaced by an empty matrix")
        log.warning(notes[-1])
        out = adata
        out.X = sp.csr_matrix(adata.shape, dtype=np.float32)
    for a in {id(adata): adata, id(out): out}.values():
        for key in ("_atlas_qzm", "_atlas_qzv"):
            a.obsm.pop(key, None)
    return out


def _write_bundle(tmp: Path, adata, train, s: IntegrateSettings, resolved: dict, summary: dict) -> None:
    """The bundle's required files: everything analyse and query need, written before any optional step."""
    from .model import registry_summary

    tmp.mkdir(parents=True)
    train.model.save(str(tmp / "model"), save_anndata=False)
    (tmp / "hvg.txt").write_text("\n".join(map(str, train.model.adata.var_names)) + "\n")
    (tmp / "registry.json").write_text(
        json.dumps(registry_summary(train.model), indent=2, default=str) + "\n"
    )
    adata.write_h5ad(tmp / "atlas.h5ad", compression="gzip")
    curves = [c.assign(model=name) for name, c in train.curves.items() if len(c)]
    if curves:
        curve = pd.concat(curves, ignore_index=True)
        curve[["model", *[c for c in curve.columns if c != "model"]]].to_csv(
            tmp / "elbo_curve.csv", index=False
        )
    config = {"settings": s.model_dump(mode="json"), "resolved": resolved}
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    (tmp / "versions.json").write_text(json.dumps(_versions(), indent=2, sort_keys=True) + "\n")
    with resources.as_file(resources.files("atlas.catalogue") / "data" / "signatures.yaml") as sig:
        shutil.copyfile(sig, tmp / "signatures.yaml")


def _optional(step: str, refdir: Path, notes: list[str], warnings: list[str], fn, *args, **kwargs):
    """Run an optional step; a failure becomes a logged WARNING (the bundle is already complete)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # an optional step must never lose the trained model
        hint = (
            " (metrics: false skips them; metrics_fast: true leaves out kBET and BRAS)"
            if "metrics" in step
            else ""
        )
        msg = (
            f"{step} failed ({type(e).__name__}: {e}); the reference bundle {refdir} is complete and usable "
            f"without it{hint}"
        )
        log.warning(msg)
        notes.append(msg)
        warnings.append(msg)
        return None


def _metrics_input(atlas, latents: list[str]):
    """A light AnnData for the metrics: the atlas's counts (shared, not copied), obs and latent spaces."""
    import anndata as ad

    return ad.AnnData(X=atlas.X, obs=atlas.obs.copy(), obsm={k: np.asarray(atlas.obsm[k]) for k in latents})


@dataclass
class _Trail:
    """What the steps record on the way: timings, notes (``summary.json``) and warnings (``checks.json``)."""

    t0: float
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _check_refdir(refdir: Path, overwrite: bool) -> None:
    """An existing bundle is replaced only with ``overwrite``."""
    if refdir.exists() and not overwrite:
        raise RunDirError(
            f"{refdir} already exists; pass overwrite=True (--overwrite) or choose another --out"
        )


def _drop_batches(adata, s: IntegrateSettings, notes: list[str]):
    """The store with batches of <= ``min_cells_per_batch`` cells pooled (``small_batches: pool``, the training
    batches in obs ``integration_batch``) or dropped, noted; too few cells left is an error."""
    from .model import MIN_CELLS

    labels, pooled, dropped = small_batches(adata.obs, s.batch_key, s.min_cells_per_batch,
                                            pool=s.small_batches == "pool")  # fmt: skip
    if dropped:
        adata = adata[labels.notna().to_numpy()].copy()
        notes.append(
            f"dropped {sum(dropped.values())} cells of {len(dropped)} {s.batch_key} batches with <= "
            f"{s.min_cells_per_batch} cells (min_cells_per_batch): {dropped}"
        )
        log.warning(notes[-1])
    if pooled:
        adata.obs[INTEGRATION_BATCH] = pd.Categorical(labels.dropna())
        notes.append(f"{s.batch_key} batches with <= {s.min_cells_per_batch} cells (min_cells_per_batch) pooled per "
                     f"data set for scVI (obs {INTEGRATION_BATCH!r}): {pooled}")  # fmt: skip
        log.info(notes[-1])
    if adata.n_obs < MIN_CELLS:
        raise TooSmallError(
            f"{adata.n_obs} cells are left after dropping {len(dropped)} batches of {s.batch_key!r} with <= "
            f"{s.min_cells_per_batch} cells; integration needs at least {MIN_CELLS} (lower min_cells_per_batch?)"
        )
    return adata, dropped


def _training_settings(atlas, s: IntegrateSettings) -> IntegrateSettings:
    """``s``, with scVI's batch the pooled ``integration_batch`` column when small batches were pooled."""
    return s.model_copy(update={"batch_key": INTEGRATION_BATCH}) if INTEGRATION_BATCH in atlas.obs else s


def _streamed_atlas(store_path: str | Path, s: IntegrateSettings, trail: _Trail):
    """The cells of the kept batches x the HVGs, without the whole store in memory.

    The store's obs/var are read and checked, small batches dropped, seurat_v3 HVGs chosen in two
    passes over row chunks (:mod:`.hvg_stream`: the genes :func:`select_hvgs` chooses, on either
    backend) and only their columns read. Peak memory: the HVG matrix plus one row chunk.

    Returns ``(atlas, hvgs, n_cells_in, dropped)``.
    """
    from .hvg_stream import stream_hvgs
    from .storeio import Store

    with Store(store_path) as store:
        frame = store.frame()
        trail.seconds["read"] = time.perf_counter() - trail.t0
        log.info("store %s: %d cells x %d genes (read by row chunks)", store_path, frame.n_obs, frame.n_vars)
        check_keys(frame, s)
        n_in = frame.n_obs
        frame.obs["_atlas_row"] = np.arange(n_in)
        kept, dropped = _drop_batches(frame, s, trail.notes)
        rows = kept.obs.pop("_atlas_row").to_numpy(np.int64)
        del frame
        t = time.perf_counter()
        hv = stream_hvgs(
            store,
            kept,
            rows,
            n_top_genes=s.n_hvgs,
            batch_key=s.hvg_batch_key,
            exclude_groups=s.exclude_gene_groups,
            exclude_genes=s.exclude_genes,
        )
        trail.seconds["hvg"] = time.perf_counter() - t
        t = time.perf_counter()
        atlas = kept[:, hv.positions].copy()
        atlas.X = store.take(rows, hv.positions, nnz=hv.nnz)
        trail.seconds["read_hvgs"] = time.perf_counter() - t
    log.info("read %d cells x %d HVGs (%d stored values)", atlas.n_obs, atlas.n_vars, hv.nnz)
    return atlas, hv.genes, n_in, dropped


class _RankTag(logging.Filter):
    """Prefixes every log line of this process with its DDP rank (``[rank 1] ...``)."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "_atlas_rank", False):
            record.msg, record._atlas_rank = f"[{self.tag}] {record.msg}", True
        return True


def _tag_rank_logs() -> None:
    """On a process a DDP launcher started for rank > 0, tag its log lines with the rank.

    Lightning's launcher gives its children ``LOCAL_RANK`` (and ``NODE_RANK``); torchrun gives ``RANK``.
    Rank 0 (the command that was run) logs untagged.
    """
    env = os.environ
    node, local = env.get("NODE_RANK", "0"), env.get("LOCAL_RANK")
    tag = env.get("RANK") or (local if node == "0" else f"{node}.{local}" if local else None)
    if tag in (None, "0"):
        return
    for handler in {*logging.getLogger().handlers, *logging.getLogger("atlas").handlers}:
        if not any(isinstance(f, _RankTag) for f in handler.filters):
            handler.addFilter(_RankTag(f"rank {tag}"))


def _writes_bundle(train) -> bool:
    """False on a DDP rank other than 0 (rank 0 writes the bundle)."""
    trainer = getattr(train.model, "trainer", None)
    if trainer is not None and getattr(trainer, "global_rank", 0) != 0:  # pragma: no cover - DDP only
        log.info("DDP rank %d: training done; rank 0 writes the bundle", trainer.global_rank)
        return False
    return True


def _embed(atlas, latent_key: str, s: IntegrateSettings, backend: str, seconds: dict[str, float]) -> None:
    """The kNN graph, Leiden clusters and UMAP of the latent space, into ``atlas``."""
    from .graph import compute_graph

    timings = compute_graph(
        atlas,
        use_rep=latent_key,
        n_neighbors=s.n_neighbors,
        resolution=s.leiden_resolution,
        min_dist=s.umap_min_dist,
        random_state=s.seed,
        backend=backend,
    )
    seconds.update({f"graph_{k}": v for k, v in timings.items()})


def _atlas_to_write(atlas, train, s: IntegrateSettings, notes: list[str]):
    """The atlas as written (minified; the graph only with ``store_connectivities``) and the metrics' input.

    The metrics' input (``None`` unless metrics are on) is taken before minification: it keeps the counts
    for the PCA baseline.
    """
    latents = [k for k in ("X_scVI", "X_scANVI") if k in atlas.obsm]
    cells = _metrics_input(atlas, latents) if s.metrics else None
    atlas = _minify(train.model, atlas, notes)
    if not s.store_connectivities:
        for key in ("connectivities", "distances"):
            atlas.obsp.pop(key, None)
        atlas.uns.pop("neighbors", None)
    return atlas, cells


def _resolved(train, backend: str, accelerator, hvgs, store_path: str | Path) -> dict[str, Any]:
    """What the settings resolved to, for ``config.json``."""
    return {
        "backend": backend,
        "accelerator": accelerator,
        "batch_key": train.batch_key,
        "categorical_covariates": train.categorical_covariates,
        "latent_key": train.latent_key,
        "n_hvgs": len(hvgs),
        "store": str(store_path),
    }


def _summary(n_in: int, atlas, hvgs, dropped: dict[str, int], train, trail: _Trail) -> dict[str, Any]:
    """``summary.json``; it shares ``trail``'s timings and notes, so its rewrite at the end has them all."""
    return {
        "n_cells_in": n_in,
        "n_cells": atlas.n_obs,
        "n_hvgs": len(hvgs),
        "dropped_batches": dropped,
        "n_cells_dropped": int(sum(dropped.values())),
        "epochs": train.epochs,
        "history": train.history,
        "convergence": train.convergence,
        "n_leiden_clusters": int(atlas.obs["leiden"].nunique()),
        "seconds": trail.seconds,
        "notes": trail.notes,
    }


def _write(
    refdir: Path, overwrite: bool, atlas, train, s, resolved: dict, summary: dict, seconds: dict
) -> None:
    """The bundle's required files, written under a temporary name and renamed into place."""
    t = time.perf_counter()
    with atomic_path(refdir, overwrite=overwrite) as tmp:
        _write_bundle(tmp, atlas, train, s, resolved, summary)
    seconds["write"] = time.perf_counter() - t
    log.info("reference bundle written to %s (%d cells, %d HVGs)", refdir, atlas.n_obs, summary["n_hvgs"])


def _score(cells, s: IntegrateSettings, train, backend: str, refdir: Path, trail: _Trail):
    """The optional steps on the written bundle: scib metrics, their plot, the baseline check."""
    from ..core.atomic import write_table
    from .metrics import baseline_check, baseline_summary, integration_metrics, plot_metrics

    notes, warnings, seconds = trail.notes, trail.warnings, trail.seconds
    t = time.perf_counter()
    metrics_df = _optional(
        "the integration metrics (scib-metrics)",
        refdir,
        notes,
        warnings,
        integration_metrics,
        cells,
        embeddings=[k for k in ("X_scVI", "X_scANVI") if k in cells.obsm],
        label_key=s.metrics_label_key,
        batch_keys=s.metrics_batch_keys,
        max_cells=s.metrics_max_cells,
        baseline_max_cells=s.metrics_baseline_max_cells,
        harmony=s.metrics_harmony,
        harmony_keys=[k for k in [train.batch_key, *train.categorical_covariates] if k] or None,
        random_state=s.seed,
        n_jobs=s.metrics_n_jobs,
        backend=backend,
        skip=("kbet_per_label", "bras") if s.metrics_fast else (),
    )
    seconds["metrics"] = time.perf_counter() - t
    if metrics_df is None or metrics_df.empty:
        return metrics_df, {"checked": False, "passed": None, "reason": "no metrics", "warnings": []}
    _optional("writing metrics.csv", refdir, notes, warnings, write_table, refdir / "metrics.csv", metrics_df)
    _optional("the metrics plot", refdir, notes, warnings, plot_metrics, metrics_df, refdir / "metrics.png")
    check = _optional("the baseline check", refdir, notes, warnings, baseline_check, metrics_df) or {
        "checked": False,
        "passed": None,
        "reason": "the check failed",
        "warnings": [],
    }
    if check["checked"] and not check["passed"]:
        for w in check["warnings"]:
            log.warning(w)
            notes.append(w)
            warnings.append(w)
    else:
        log.info("baseline check: %s", baseline_summary(check))
    return metrics_df, check


def _metrics_steps(cells, s: IntegrateSettings, train, backend: str, refdir: Path, trail: _Trail):
    """The optional scib metrics, their plot and the baseline check (or why they did not run)."""
    if cells is None:
        return None, {"checked": False, "passed": None, "reason": "metrics: false", "warnings": []}
    return _score(cells, s, train, backend, refdir, trail)


def _finish(refdir: Path, convergence: dict, baselines: dict, summary: dict, trail: _Trail) -> dict[str, Any]:
    """``checks.json`` and the final ``summary.json`` (both optional: a failure is a warning); the checks."""
    notes, warnings = trail.notes, trail.warnings
    checks = {"convergence": convergence, "baselines": baselines, "warnings": warnings}
    trail.seconds["total"] = time.perf_counter() - trail.t0
    _optional("writing checks.json", refdir, notes, warnings, write_json, refdir / "checks.json", checks)
    _optional("updating summary.json", refdir, notes, warnings, write_json, refdir / "summary.json", summary)
    log.info(
        "integrate done in %.0f s%s",
        trail.seconds["total"],
        f" with {len(warnings)} warning(s) (see {refdir / 'checks.json'})" if warnings else "",
    )
    return checks


def integrate_store(
    store_path: str | Path,
    refdir: str | Path,
    settings: IntegrateSettings | None = None,
    *,
    overwrite: bool = False,
) -> IntegrateResult:
    """Integrate an ingested store with scVI (scANVI) and write the reference bundle ``refdir``.

    Steps: read and check the store -> drop small batches -> select HVGs -> train -> graph, Leiden
    and UMAP -> minify -> write the bundle atomically -> the optional metrics, plot and checks.

    Parameters
    ----------
    store_path
        The ingested store (``.h5ad`` or ``.zarr``) with raw counts in ``X``.
    refdir
        Output folder (see the module docstring for its layout); written atomically.
    settings
        Integration settings (defaults when ``None``).
    overwrite
        Replace an existing ``refdir``; otherwise an existing one is an error.

    Returns
    -------
    :class:`IntegrateResult`.

    Raises
    ------
    RunDirError
        ``refdir`` exists and ``overwrite`` is false.
    InputDataError
        A missing or unreadable store, a missing obs key, non-count data, too few cells or genes
        (:mod:`atlas.integrate.errors`).
    """
    from ._device import resolve_accelerator, resolve_backend
    from .model import train_scvi

    s = settings or IntegrateSettings()
    refdir = Path(refdir)
    _tag_rank_logs()
    _check_refdir(refdir, overwrite)
    trail = _Trail(t0=time.perf_counter())
    backend, accelerator = resolve_backend(s.backend), resolve_accelerator(s.accelerator)
    atlas, hvgs, n_in, dropped = _streamed_atlas(store_path, s, trail)

    train = train_scvi(atlas, settings=_training_settings(atlas, s), check_counts=False)
    trail.seconds.update(train.seconds)
    if not _writes_bundle(train):  # pragma: no cover - DDP only
        return IntegrateResult(
            refdir, n_in, atlas.n_obs, len(hvgs), s.model, train.latent_key, dropped, written=False
        )
    _embed(atlas, train.latent_key, s, backend, trail.seconds)
    trail.notes += train.notes
    trail.warnings = list(train.warnings)
    atlas, cells = _atlas_to_write(atlas, train, s, trail.notes)

    resolved = _resolved(train, backend, accelerator, hvgs, store_path)
    summary = _summary(n_in, atlas, hvgs, dropped, train, trail)
    _write(refdir, overwrite, atlas, train, s, resolved, summary, trail.seconds)

    # Optional steps, on the finished bundle: a failure is a warning, never a lost model.
    metrics_df, baselines = _metrics_steps(cells, s, train, backend, refdir, trail)
    del cells
    checks = _finish(refdir, train.convergence, baselines, summary, trail)
    return IntegrateResult(
        refdir=refdir,
        n_cells_in=n_in,
        n_cells=atlas.n_obs,
        n_hvgs=len(hvgs),
        model=s.model,
        latent_key=train.latent_key,
        dropped_batches=dropped,
        epochs=train.epochs,
        history=train.history,
        seconds=trail.seconds,
        notes=trail.notes,
        metrics=metrics_df,
        convergence=train.convergence,
        checks=checks,
        warnings=trail.warnings,
    )


def result_dict(result: IntegrateResult) -> dict[str, Any]:
    """A JSON-able view of an :class:`IntegrateResult` (without the metrics table)."""
    out = asdict(result)
    out.pop("metrics", None)
    out["refdir"] = str(result.refdir)
    return out
