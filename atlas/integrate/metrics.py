"""Integration metrics with scib-metrics: our latent spaces against an unintegrated PCA and Harmony.

scib-metrics' ``Benchmarker`` scores each embedding for batch correction (BRAS, iLISI, kBET per
label, graph connectivity, PCR comparison) and, with labels, bio conservation (isolated labels,
KMeans NMI/ARI, silhouette label, cLISI); the aggregates are the plain means per type and
``Total = 0.4 * batch + 0.6 * bio`` (scIB's weighting), *not* min-max scaled across embeddings, so
numbers compare between runs. JAX is pinned to the CPU (and told not to pre-allocate GPU memory)
before scib-metrics is imported, so it never competes with torch for the GPU.

In a real atlas the labels come from annotation; for simulated benchmarks ``truth_cell_type`` may
be passed here (evaluation-only use). With scANVI trained on the same labels, its bio scores are
optimistic (it saw the labels).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..core.progress import track
from ._checks import require_obs_keys

log = logging.getLogger(__name__)

#: Display names of the embeddings scored.
METHOD_NAMES = {"X_pca": "Unintegrated (PCA)", "X_harmony": "Harmony", "X_scVI": "scVI", "X_scANVI": "scANVI"}
AGGREGATES = ["Batch correction", "Bio conservation", "Total"]
#: scib-metrics' default metrics (``BioConservation`` and ``BatchCorrection`` fields), names for ``skip``.
SCIB_METRICS = (
    "isolated_labels",
    "nmi_ari_cluster_labels_leiden",
    "nmi_ari_cluster_labels_kmeans",
    "silhouette_label",
    "clisi_knn",
    "bras",
    "ilisi_knn",
    "kbet_per_label",
    "graph_connectivity",
    "pcr_comparison",
)
#: Batch-correction metrics scored within cell labels: skipped without labels (scib-metrics would treat
#: the batch as the labels, which is meaningless and makes BRAS fail on "No objects to concatenate").
LABEL_BATCH_METRICS = ("bras", "kbet_per_label", "graph_connectivity")


def configure_jax(platform: str = "cpu") -> str:
    """Pin JAX to ``platform`` and switch off GPU memory pre-allocation; returns JAX's backend.

    Must run before JAX initialises a backend (it does so lazily, on first use); when it has
    already, the backend in use is logged and returned unchanged.
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    try:
        jax.config.update("jax_platforms", platform)
    except Exception as e:  # pragma: no cover - depends on jax internals
        log.warning("could not pin JAX to %s: %s", platform, e)
    backend = jax.default_backend()
    if backend != platform:
        log.warning(
            "JAX already runs on %s (asked for %s): it was initialised before integrate", backend, platform
        )
    return backend


EXACT_KNN_MAX_CELLS = 10_000


def _neighbor_computer(n_jobs: int):
    """scib-metrics neighbour computer: exact kNN (scikit-learn) up to 10,000 cells, pynndescent above.

    Results are cached per embedding, so scoring a second batch key reuses the graphs.
    """
    cache: dict[str, object] = {}

    def compute(X: np.ndarray, n_neighbors: int):
        from scib_metrics.nearest_neighbors import NeighborsResults, pynndescent

        key = hashlib.sha1(np.ascontiguousarray(X).tobytes()).hexdigest() + f"-{n_neighbors}"
        if key not in cache:
            if X.shape[0] <= EXACT_KNN_MAX_CELLS:
                from sklearn.neighbors import NearestNeighbors

                nn = NearestNeighbors(n_neighbors=min(n_neighbors, X.shape[0]), n_jobs=n_jobs).fit(X)
                dist, ind = nn.kneighbors(X)
                cache[key] = NeighborsResults(indices=ind, distances=dist)
            else:
                cache[key] = pynndescent(X, n_neighbors=n_neighbors, random_state=0, n_jobs=n_jobs)
        return cache[key]

    return compute


def baseline_embeddings(
    sub,
    *,
    layer: str | None = None,
    harmony_keys: Sequence[str] = (),
    n_pcs: int = 50,
    random_state: int = 0,
    backend: str = "cpu",
) -> dict[str, float]:
    """Add the unintegrated PCA (``obsm['X_pca']``) and, with ``harmony_keys``, Harmony (``obsm['X_harmony']``).

    PCA runs on log-normalised counts (``normalize_total`` to 10,000, ``log1p``); Harmony corrects
    that PCA for ``harmony_keys`` (harmonypy on CPU, rapids-singlecell on GPU). Returns seconds per step.
    """
    import anndata as ad
    import scanpy as sc

    seconds = {}
    t = time.perf_counter()
    tmp = ad.AnnData(X=(sub.X if layer is None else sub.layers[layer]).copy(), obs=sub.obs[[]].copy())
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    n_comps = int(min(n_pcs, tmp.n_vars - 1, tmp.n_obs - 1))
    sc.pp.pca(tmp, n_comps=n_comps, random_state=random_state)
    sub.obsm["X_pca"] = np.asarray(tmp.obsm["X_pca"], dtype=np.float32)
    seconds["pca"] = time.perf_counter() - t
    if harmony_keys:
        t = time.perf_counter()
        meta = sub.obs[list(harmony_keys)].astype(str)
        if backend == "gpu":  # pragma: no cover - needs a GPU
            import rapids_singlecell as rsc

            tmp.obs = meta
            key = list(harmony_keys) if len(harmony_keys) > 1 else harmony_keys[0]
            rsc.pp.harmony_integrate(tmp, key, basis="X_pca", adjusted_basis="X_harmony")
            z = tmp.obsm["X_harmony"]
            z = z.get() if hasattr(z, "get") else z
        else:
            import harmonypy

            ho = harmonypy.run_harmony(
                sub.obsm["X_pca"].astype(np.float64),
                meta,
                list(harmony_keys),
                random_state=random_state,
                verbose=False,
            )
            z = np.asarray(ho.Z_corr)
            if z.shape[0] != sub.n_obs:
                z = z.T
        sub.obsm["X_harmony"] = np.asarray(z, dtype=np.float32)
        seconds["harmony"] = time.perf_counter() - t
    return seconds


def _baseline_cells(n_obs: int, scored: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted cells the baselines are fitted on: all ``n_obs`` up to ``cap``, else the ``scored`` cells plus a
    seeded draw of the others up to ``cap`` in all."""
    if cap is None or n_obs <= cap:
        return np.arange(n_obs)
    rest = np.setdiff1d(np.arange(n_obs), scored)
    extra = rng.choice(rest, size=min(rest.size, max(cap - scored.size, 0)), replace=False)
    return np.sort(np.concatenate([scored, extra]))


def integration_metrics(
    adata,
    *,
    embeddings: Sequence[str] = ("X_scVI",),
    label_key: str | None = None,
    batch_keys: Sequence[str] = ("dataset_id", "sample_id"),
    max_cells: int = 50_000,
    baseline_max_cells: int | None = 200_000,
    harmony: bool = True,
    harmony_keys: Sequence[str] | None = None,
    layer: str | None = None,
    n_pcs: int = 50,
    random_state: int = 0,
    n_jobs: int = -1,
    backend: str = "cpu",
    skip: Sequence[str] = (),
) -> pd.DataFrame:
    """Score latent spaces against an unintegrated PCA baseline (and Harmony) with scib-metrics.

    Parameters
    ----------
    adata
        Cells with raw counts in ``X`` (or ``layer``) for the baseline and the latent spaces in obsm.
    embeddings
        obsm keys of the integrated latent spaces to score (``X_scVI``, ``X_scANVI``).
    label_key
        obs column of cell labels for the bio-conservation metrics; ``None`` scores the label-free batch
        metrics only (iLISI, PCR comparison): bio conservation and the per-label batch metrics
        (:data:`LABEL_BATCH_METRICS`) are skipped, with a log line.
    batch_keys
        obs columns scored as batch; the first gives the main columns, each further one adds its batch
        metrics and aggregates with the suffix ``" [key]"``. Keys with one value are skipped.
    max_cells
        Cells subsampled (without replacement, seeded) when the atlas is larger.
    baseline_max_cells
        Cells the PCA and Harmony baselines are fitted on: every cell up to this many (``None``: always all),
        above it a seeded subsample that holds the scored cells. The latent spaces were learned from every
        cell, so their peers integrate the same cells and are then scored on the same subsample: Harmony
        fitted on the 5,000 scored cells alone mixed more (iLISI 0.48-0.51) than the same Harmony fitted on
        the whole 28,790-cell atlas and scored on those cells (0.44; ``benchmarks/integrate.md``, stop 31).
    harmony
        Add Harmony (on the PCA baseline) as a peer.
    harmony_keys
        Columns Harmony corrects; default the first batch key.
    layer
        Layer with the counts (default ``X``).
    n_pcs
        Principal components of the baseline.
    random_state
        Seed of the subsample, PCA and Harmony.
    n_jobs
        Threads of the neighbour search.
    backend
        ``"cpu"`` or ``"gpu"`` (Harmony only; scib-metrics' JAX always runs on the CPU here).
    skip
        scib-metrics metric names left out (e.g. ``("kbet_per_label", "bras")``, the slowest); default: all
        of scib-metrics' default metrics.

    Returns
    -------
    One row per embedding (index: obsm key) with scib-metrics' metric columns, the aggregates
    ``Batch correction``, ``Bio conservation`` (with labels) and ``Total``, plus ``method`` and ``n_cells``.
    """
    import anndata as ad

    unknown = set(skip) - set(SCIB_METRICS)
    if unknown:
        raise ValueError(f"unknown scib metrics in skip: {sorted(unknown)}; known: {list(SCIB_METRICS)}")
    keys = {f"batch_keys[{i}]": k for i, k in enumerate(batch_keys)}
    keys["label_key"] = label_key
    require_obs_keys(adata, keys)
    missing = [e for e in embeddings if e not in adata.obsm]
    if missing:
        raise ValueError(f"embeddings {missing} are not in obsm (has {list(adata.obsm)})")
    if not label_key:
        skip = tuple(dict.fromkeys([*skip, *LABEL_BATCH_METRICS]))
        log.info(
            "integration metrics without cell labels (no metrics_label_key): bio conservation and the per-label "
            "batch metrics %s skipped; iLISI and PCR comparison scored",
            list(LABEL_BATCH_METRICS),
        )
    batch_keys = [k for k in batch_keys if adata.obs[k].nunique() > 1]
    if not batch_keys:
        log.warning("no batch key with more than one value: integration metrics skipped")
        return pd.DataFrame()

    rng = np.random.default_rng(random_state)
    idx = np.arange(adata.n_obs)
    if adata.n_obs > max_cells:
        idx = np.sort(rng.choice(adata.n_obs, size=max_cells, replace=False))
        log.info("integration metrics on a seeded subsample of %d of %d cells", max_cells, adata.n_obs)
    fit_idx = _baseline_cells(adata.n_obs, idx, baseline_max_cells, rng)
    cols = list(dict.fromkeys([*batch_keys, *([label_key] if label_key else []), *(harmony_keys or [])]))
    obs = adata.obs.iloc[fit_idx][cols].copy()
    for c in cols:
        obs[c] = obs[c].astype(str).astype("category")
    X = adata.X if layer is None else adata.layers[layer]
    # every cell: the counts as they are (baseline_embeddings normalises a copy), not a fancy-indexed copy
    fit = ad.AnnData(X=X if fit_idx.size == adata.n_obs else X[fit_idx], obs=obs)
    h_keys = list(harmony_keys or batch_keys[:1]) if harmony else []
    baseline_embeddings(fit, harmony_keys=h_keys, n_pcs=n_pcs, random_state=random_state, backend=backend)
    log.info(
        "PCA%s baselines fitted on %d cells, scored on %d", " and Harmony" if h_keys else "", fit_idx.size, idx.size
    )
    # the scored cells are a subset of the fitted ones: the same set when the sizes agree
    sub = fit if fit_idx.size == idx.size else fit[np.searchsorted(fit_idx, idx)].copy()
    for e in embeddings:
        sub.obsm[e] = np.asarray(adata.obsm[e])[idx].astype(np.float32)

    configure_jax("cpu")
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    def selection(cls):
        return cls(**{n: False for n in set(cls.__dataclass_fields__) & set(skip)})

    emb_keys = ["X_pca", *(["X_harmony"] if harmony else []), *embeddings]
    neighbors = _neighbor_computer(n_jobs)
    tables = []
    for i, bk in enumerate(track(batch_keys, "scib-metrics")):
        t = time.perf_counter()
        bio = selection(BioConservation) if (label_key and i == 0) else None
        bm = Benchmarker(
            sub,
            batch_key=bk,
            label_key=label_key or bk,
            embedding_obsm_keys=emb_keys,
            bio_conservation_metrics=bio,
            batch_correction_metrics=selection(BatchCorrection),
            pre_integrated_embedding_obsm_key="X_pca",
            n_jobs=n_jobs,
            progress_bar=False,
        )
        bm.prepare(neighbor_computer=neighbors)
        bm.benchmark()
        res = bm.get_results(min_max_scale=False)
        res = res.drop(index="Metric Type").astype(float)
        res.index.name = "embedding"
        log.info("scib-metrics with batch %r: %.1f s", bk, time.perf_counter() - t)
        tables.append(res)

    out = tables[0]
    if "Total" not in out:
        out["Total"] = np.nan
    for bk, res in zip(batch_keys[1:], tables[1:], strict=True):
        extra = res.drop(columns=[c for c in res.columns if c == "Total"]).add_suffix(f" [{bk}]")
        out = out.join(extra)
        if "Bio conservation" in out:
            out[f"Total [{bk}]"] = 0.4 * out[f"Batch correction [{bk}]"] + 0.6 * out["Bio conservation"]
    out.insert(0, "method", [METHOD_NAMES.get(k, k) for k in out.index])
    out["n_cells"] = sub.n_obs
    out["n_cells_baselines"] = len(fit_idx)
    out["batch_key"] = batch_keys[0]
    out["label_key"] = label_key or ""
    return out


def plot_metrics(df: pd.DataFrame, path) -> None:
    """Bar chart of the aggregate scores and a heat map of every metric, saved as a PNG (Agg backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    numeric = df.select_dtypes("number").drop(columns=["n_cells"], errors="ignore")
    aggs = [c for c in numeric.columns if c.split(" [")[0] in AGGREGATES]
    metrics = [c for c in numeric.columns if c not in aggs]
    fig = Figure(figsize=(max(8, 0.55 * len(metrics) + 6), 1.2 + 0.6 * len(df) + 2.5))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, max(1.5, len(metrics) / 5)]})
    names = df["method"].tolist() if "method" in df else [str(i) for i in df.index]
    width = 0.8 / max(1, len(aggs))
    for j, col in enumerate(aggs):
        ax1.barh(np.arange(len(df)) + j * width, numeric[col].to_numpy(), height=width, label=col)
    ax1.set_yticks(np.arange(len(df)) + width * (len(aggs) - 1) / 2, names)
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("score (higher is better)")
    ax1.legend(fontsize=7, loc="lower right")
    ax1.invert_yaxis()
    if metrics:
        vals = numeric[metrics].to_numpy(float)
        im = ax2.imshow(vals, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax2.set_xticks(np.arange(len(metrics)), metrics, rotation=60, ha="right", fontsize=7)
        ax2.set_yticks(np.arange(len(df)), names, fontsize=8)
        for (r, c), v in np.ndenumerate(vals):
            if np.isfinite(v):
                ax2.text(
                    c, r, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k"
                )
        fig.colorbar(im, ax=ax2, fraction=0.03)
    title = f"scib-metrics on {int(df['n_cells'].iloc[0]):,} cells" if "n_cells" in df else "scib-metrics"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


#: Baseline check: an integrated latent whose iLISI is below this share of Harmony's fails even when its
#: aggregate batch correction is ahead (e.g. a latent that keeps data sets apart but scores on PCR comparison).
ILISI_SHARE_OF_HARMONY = 0.5
ADVICE = (
    "train more gradient steps (raise train_steps with max_epochs: auto, or max_epochs), use a smaller "
    "batch_size (more steps per epoch), or more HVGs (n_hvgs) / a larger n_latent"
)


def _row(df: pd.DataFrame, key: str):
    """The row of embedding ``key`` (``X_scVI``...) by index, ``embedding`` column or method name."""
    if key in df.index:
        return df.loc[key]
    for col, value in (("embedding", key), ("method", METHOD_NAMES.get(key, key))):
        if col in df.columns:
            hit = df[df[col].astype(str) == value]
            if len(hit):
                return hit.iloc[0]
    return None


def _value(row, col: str) -> float | None:
    if row is None or col not in row.index:
        return None
    v = pd.to_numeric(row[col], errors="coerce")
    return None if pd.isna(v) else float(v)


def baseline_check(df: pd.DataFrame, embeddings: Sequence[str] | None = None) -> dict:
    """Whether each integrated latent beats Harmony on batch correction (scores of :func:`integration_metrics`).

    A latent fails when its aggregate ``Batch correction`` is below Harmony's, or its iLISI below
    :data:`ILISI_SHARE_OF_HARMONY` of Harmony's. Works on the bundle's ``metrics.csv`` read back too.

    Parameters
    ----------
    df
        The metrics table (rows ``X_pca``, ``X_harmony``, ``X_scVI``...; by index or ``embedding`` column).
    embeddings
        Latents to check; default those of ``X_scVI``/``X_scANVI`` present.

    Returns
    -------
    ``{"checked": bool, "passed": bool | None, "warnings": [str], "embeddings": {key: figures}}``;
    ``checked`` is false (with a ``reason``) when Harmony or the latent was not scored.
    """
    out: dict = {"checked": False, "passed": None, "warnings": [], "embeddings": {}}
    harmony = _row(df, "X_harmony")
    pca = _row(df, "X_pca")
    keys = [e for e in (embeddings or ("X_scVI", "X_scANVI")) if _row(df, e) is not None]
    if harmony is None or _value(harmony, "Batch correction") is None or not keys:
        out["reason"] = "no Harmony baseline or no integrated latent among the metrics"
        return out
    out["checked"], out["passed"] = True, True
    cols = {
        "batch_correction": "Batch correction",
        "ilisi": "iLISI",
        "bio_conservation": "Bio conservation",
        "total": "Total",
    }
    out["harmony"] = {k: _value(harmony, c) for k, c in cols.items()}
    out["pca"] = {k: _value(pca, c) for k, c in cols.items()}
    for key in keys:
        row = _row(df, key)
        fig = {k: _value(row, c) for k, c in cols.items()}
        name, h = METHOD_NAMES.get(key, key), out["harmony"]
        fails = []
        if fig["batch_correction"] is not None and fig["batch_correction"] < h["batch_correction"]:
            fails.append(
                f"batch correction {fig['batch_correction']:.2f} vs Harmony {h['batch_correction']:.2f}"
            )
        if (
            fig["ilisi"] is not None
            and h["ilisi"] is not None
            and fig["ilisi"] < ILISI_SHARE_OF_HARMONY * h["ilisi"]
        ):
            fails.append(f"iLISI {fig['ilisi']:.2f} vs Harmony {h['ilisi']:.2f}")
        fig["beats_harmony"] = not fails
        out["embeddings"][key] = fig
        if fails:
            out["passed"] = False
            bio = (
                f"; bio conservation {fig['bio_conservation']:.2f} vs Harmony {h['bio_conservation']:.2f}"
                if fig["bio_conservation"] is not None and h["bio_conservation"] is not None
                else ""
            )
            out["warnings"].append(
                f"{name} mixes batches worse than the Harmony baseline: {', '.join(fails)}{bio}. "
                f"The model is probably undertrained or too small: {ADVICE}"
            )
    return out


def baseline_summary(check: dict) -> str:
    """One sentence on :func:`baseline_check`'s verdict (for logs and the report)."""
    if not check.get("checked"):
        return f"scVI was not compared with Harmony ({check.get('reason', 'no metrics')})."
    if not check["passed"]:
        return " ".join(check["warnings"])
    h = check["harmony"]
    parts = [
        f"{METHOD_NAMES.get(k, k)} batch correction {f['batch_correction']:.2f}"
        + (f", iLISI {f['ilisi']:.2f}" if f["ilisi"] is not None else "")
        for k, f in check["embeddings"].items()
    ]
    ilisi = f", iLISI {h['ilisi']:.2f}" if h["ilisi"] is not None else ""
    return f"{'; '.join(parts)}: ahead of Harmony (batch correction {h['batch_correction']:.2f}{ilisi})."
