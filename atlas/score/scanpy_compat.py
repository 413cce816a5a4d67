"""Control genes exactly as ``scanpy.tl.score_genes`` (scanpy 1.11 and 1.12) picks them, without global seeding.

scanpy, per call: ``np.random.seed(random_state)``; gene means over all cells; genes ranked
(``rank(method="min")``) and cut into bins of ``round(n_genes / (n_bins - 1))`` genes; for every bin
holding a signature gene (in ascending bin order) all genes of the bin are candidates (the signature
genes included, ``ctrl_as_ref=True``), ``ctrl_size`` of them are drawn with
``Series.sample`` (= ``RandomState.permutation(n)[:ctrl_size]``) when the bin is larger, and the
signature genes are then removed. The score is mean(signature) - mean(union of controls).

Here each signature gets a fresh ``RandomState(random_state)``, which is what a user gets by calling
``score_genes`` once per signature with the same ``random_state``. Gene means are summed the way
scanpy sums them (see :func:`fold_dtype`, :func:`finalize_gene_means`) so that the bins match bit for bit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.errors import AtlasError


def fold_dtype(data_dtype: np.dtype, mode: int, *, dense: bool = False) -> np.dtype:
    """Accumulator dtype scanpy's gene sums use: for float32 data float32 if dense (``np.nanmean``), else
    :func:`~atlas.ingest.genestats.sparse_sum_dtype` (float64 from scanpy 1.12 or SciPy 1.18); else float64."""
    from .._kernels.cpu import NORM_F32, NORM_F64
    from ..ingest.genestats import sparse_sum_dtype

    f32 = np.dtype(np.float32) if dense else sparse_sum_dtype()
    if mode == NORM_F32:
        return f32
    if mode == NORM_F64:
        return np.dtype(np.float64)
    data_dtype = np.dtype(data_dtype)
    if data_dtype.kind == "f" and data_dtype.itemsize <= 4:
        return f32
    return np.dtype(np.float64)


def finalize_gene_means(sums: np.ndarray, n_cells: int, *, dense: bool) -> np.ndarray:
    """Gene means from per-gene sums, rounded as scanpy rounds them.

    Sparse input: ``float64(sum) / n``. Dense float32 input: ``np.nanmean`` returns float32, i.e.
    ``float32(float64(sum) / n)``.
    """
    means = sums.astype(np.float64) / max(n_cells, 1)
    if dense and sums.dtype == np.float32:
        return means.astype(np.float32)
    return means


def control_sets(
    gene_means: np.ndarray,
    gene_sets: list[np.ndarray],
    *,
    ctrl_size: int,
    n_bins: int,
    random_state: int | np.random.RandomState | None,
    names: list[str] | None = None,
) -> list[np.ndarray]:
    """Sorted control-gene indices per signature (see the module docstring).

    Parameters
    ----------
    gene_means
        Mean of every gene over all cells (the candidate pool is every gene, as in scanpy).
    gene_sets
        Column indices of each signature's present genes.
    ctrl_size, n_bins, random_state
        As in ``scanpy.tl.score_genes``.
    names
        Signature names, for error messages.
    """
    if n_bins < 2:
        raise AtlasError(f"n_bins must be at least 2, got {n_bins}")
    obs_avg = pd.Series(gene_means)
    obs_avg = obs_avg[np.isfinite(obs_avg)]
    n_items = int(np.round(len(obs_avg) / (n_bins - 1)))
    if n_items == 0:
        raise AtlasError(
            f"{len(obs_avg)} genes are too few for n_bins={n_bins} expression bins; lower n_bins"
        )
    obs_cut = (obs_avg.rank(method="min") // n_items).to_numpy()
    pool = obs_avg.index.to_numpy()
    out = []
    for j, genes in enumerate(gene_sets):
        rs = _rng(random_state)
        present = np.asarray(genes, dtype=np.int64)
        cut_of = pd.Series(obs_cut, index=pool)
        controls = []
        for cut in np.unique(cut_of.loc[present].to_numpy()):
            r_genes = pool[obs_cut == cut]
            if ctrl_size < len(r_genes):
                r_genes = r_genes[rs.permutation(len(r_genes))[:ctrl_size]]
            controls.append(np.setdiff1d(r_genes, present))
        ctrl = np.unique(np.concatenate(controls)) if controls else np.zeros(0, np.int64)
        if ctrl.size == 0:
            name = names[j] if names else str(j)
            raise AtlasError(
                f"signature {name!r}: no control genes found in any expression bin "
                "(the signature covers its bins); score fewer genes or use method='mean'"
            )
        out.append(ctrl.astype(np.int64))
    return out


def _rng(random_state) -> np.random.RandomState:
    if isinstance(random_state, np.random.RandomState):
        # a user-owned generator: used as scanpy would use the global one (state advances)
        return random_state
    if random_state is None:
        return np.random.RandomState()
    return np.random.RandomState(random_state)
