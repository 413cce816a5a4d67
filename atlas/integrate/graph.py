"""kNN graph, UMAP and Leiden clusters on the latent space (rapids-singlecell on GPU, scanpy on CPU).

Both backends take the same parameters and seeds; their results agree in structure but not bit
for bit (different kNN search and layout optimisers), so the backend used is recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ..core.progress import format_duration
from .errors import missing_key

log = logging.getLogger(__name__)

#: Above this many cells the CPU UMAP starts from the latent space's first two principal components
#: instead of umap-learn's spectral layout: its ARPACK solver keeps sqrt(n) Lanczos vectors of n values,
#: n^1.5 in memory and time (at 954,104 cells: 1,000 vectors, about 8 GB and over 20 minutes on 2 cores).
#: A PCA start is what Kobak & Linderman (Nat Biotechnol 39:156, 2021) recommend for large data sets.
SPECTRAL_INIT_MAX_CELLS = 200_000


def umap_init(adata, use_rep: str, backend: str = "cpu"):
    """How UMAP starts: ``"spectral"`` (scanpy's default), or for a large atlas on CPU the latent's two leading
    principal components (an array, signs fixed so the result does not depend on the solver)."""
    if backend == "gpu" or adata.n_obs <= SPECTRAL_INIT_MAX_CELLS:
        return "spectral"
    x = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    x = x - x.mean(axis=0)
    _, vecs = np.linalg.eigh(x.T @ x)  # d x d: O(n d^2) time, O(n d) memory
    top = vecs[:, ::-1][:, :2]
    top *= np.sign(top[np.abs(top).argmax(axis=0), [0, 1]])  # largest loading positive
    log.info("UMAP: %d cells > %d: initialised from the first two principal components of %s (not spectral)",
             adata.n_obs, SPECTRAL_INIT_MAX_CELLS, use_rep)
    return (x @ top).astype(np.float32)


@contextmanager
def _timed(step: str, size: str, seconds: dict[str, float], key: str) -> Iterator[None]:
    """Log a start line with the size and a done line with the seconds (one library call, no progress inside)."""
    log.info("%s: started (%s)", step, size)
    t = time.perf_counter()
    yield
    seconds[key] = time.perf_counter() - t
    log.info("%s: done in %s", step, format_duration(seconds[key]))


def compute_graph(
    adata,
    *,
    use_rep: str = "X_scVI",
    n_neighbors: int = 15,
    resolution: float = 1.0,
    min_dist: float = 0.5,
    random_state: int = 0,
    backend: str = "cpu",
    key_added: str = "leiden",
) -> dict[str, float]:
    """Neighbours, UMAP and Leiden on ``adata.obsm[use_rep]``.

    Parameters
    ----------
    adata
        Cells with a latent space in ``obsm[use_rep]``.
    use_rep
        obsm key of the latent space.
    n_neighbors
        Neighbours of the kNN graph.
    resolution
        Leiden resolution.
    min_dist
        UMAP ``min_dist``.
    random_state
        Seed of UMAP and Leiden.
    backend
        ``"cpu"`` (scanpy; Leiden with igraph) or ``"gpu"`` (rapids-singlecell).
    key_added
        obs column of the Leiden clusters.

    Returns
    -------
    Seconds spent per step. Writes ``obsp['connectivities']``, ``obsp['distances']``,
    ``uns['neighbors']``, ``obsm['X_umap']``, ``obs[key_added]`` (categorical) and ``uns[key_added]``.
    """
    if use_rep not in adata.obsm:
        raise missing_key(use_rep, "use_rep", adata.obsm.keys(), where="the atlas's obsm")
    n_neighbors = int(min(n_neighbors, max(2, adata.n_obs - 1)))
    if backend == "gpu":  # pragma: no cover - needs a GPU
        import rapids_singlecell as rsc

        pp, tl = rsc.pp, rsc.tl
        leiden_kwargs = {}
    else:
        import scanpy as sc

        from ..core.jit import cache_graph_kernels

        cache_graph_kernels()
        pp, tl = sc.pp, sc.tl
        leiden_kwargs = {"flavor": "igraph", "n_iterations": 2, "directed": False}
    seconds = {}
    size = f"{adata.n_obs} cells x {adata.obsm[use_rep].shape[1]} dims, {backend}"
    with _timed("neighbours", f"{n_neighbors} per cell, {size}", seconds, "neighbors"):
        pp.neighbors(adata, n_neighbors=n_neighbors, use_rep=use_rep, random_state=random_state)
    with _timed("UMAP", size, seconds, "umap"):
        tl.umap(adata, min_dist=min_dist, random_state=random_state, init_pos=umap_init(adata, use_rep, backend))
    with _timed("Leiden", f"resolution {resolution:g}, {adata.n_obs} cells, {backend}", seconds, "leiden"):
        tl.leiden(adata, resolution=resolution, random_state=random_state, key_added=key_added, **leiden_kwargs)
    adata.obsm["X_umap"] = np.asarray(adata.obsm["X_umap"], dtype=np.float32)
    log.info(
        "graph on %s (%s): %d Leiden clusters at resolution %g; %s",
        use_rep,
        backend,
        adata.obs[key_added].nunique(),
        resolution,
        {k: round(v, 1) for k, v in seconds.items()},
    )
    return seconds
