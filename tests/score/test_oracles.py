"""Our scores against the peers they reproduce: scanpy, decoupler (AUCell), pyUCell (UCell).

Tolerances: AUCell and UCell exact (same integer rank arithmetic; UCell in pyUCell's float32). scanpy: the
same control genes on scanpy 1.11 and 1.12, scores equal up to rounding (see :func:`_scanpy_tol`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atlas.score import score_signatures

pytestmark = pytest.mark.filterwarnings("ignore")


def _scanpy_scores(b, sets, random_state=0, ctrl_size=50):
    import scanpy as sc

    out = {}
    for name, genes in sets.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.tl.score_genes(b, genes, random_state=random_state, score_name="_s", ctrl_size=ctrl_size)
        out[name] = b.obs["_s"].to_numpy()
    return pd.DataFrame(out, index=b.obs_names)


def _scanpy_tol(kind: str) -> float:
    """Largest |ours - scanpy| allowed, from the differences measured on scanpy 1.11.5 and 1.12.4 (README).

    Both sides sum in float64 (dense or float64 input; a sparse float32 matrix with scanpy >= 1.12 or
    SciPy >= 1.18): summation order only, <= 2e-15 measured. scanpy 1.11 on SciPy < 1.18 sums a sparse
    float32 matrix's cell means in float32, and the fused normalisation ("fused": counts in) rounds the
    log1p values apart from scanpy's float32 ones: <= 4e-7 measured.
    """
    from atlas.ingest.genestats import sparse_sum_dtype

    if kind in ("dense", "float64") or (kind == "csr" and sparse_sum_dtype() == np.float64):
        return 1e-12
    return 1e-6


@pytest.mark.parametrize("random_state", [0, 7])
def test_scanpy_fused_normalisation_matches(adata, sets, random_state, normalise):
    ref = _scanpy_scores(normalise(adata), sets, random_state)
    ours = score_signatures(
        adata, sets, method="scanpy", backend="cpu", random_state=random_state, chunk_size=97
    )
    assert np.abs(ours.to_numpy() - ref.to_numpy()).max() <= _scanpy_tol("fused")


@pytest.mark.parametrize("kind", ["csr", "dense", "float64"])
def test_scanpy_on_normalised_input_matches(adata, sets, kind, normalise):
    b = normalise(adata)
    if kind == "dense":
        b.X = b.X.toarray()
    elif kind == "float64":
        b.X = b.X.astype(np.float64)
    ref = _scanpy_scores(b.copy(), sets)
    ours = score_signatures(b, sets, method="scanpy", backend="cpu", chunk_size=128)
    assert np.abs(ours.to_numpy() - ref.to_numpy()).max() <= _scanpy_tol(kind)
    assert b.uns["signature_scores"]["normalized"] is False


def test_scanpy_sampled_controls_and_seed(adata, sets, normalise):
    """Bins larger than ctrl_size: controls are sampled; same seed matches, another seed does not."""
    ref = _scanpy_scores(normalise(adata), sets, 0, ctrl_size=10)
    same = score_signatures(adata, sets, method="scanpy", backend="cpu", random_state=0, ctrl_size=10)
    other = score_signatures(adata, sets, method="scanpy", backend="cpu", random_state=3, ctrl_size=10)
    assert np.abs(same.to_numpy() - ref.to_numpy()).max() <= _scanpy_tol("fused")
    assert np.abs(other.to_numpy() - ref.to_numpy()).max() > 1e-3


@pytest.mark.parametrize("kind", ["csr", "dense"])
def test_scanpy_gene_means_bit_for_bit(adata, kind, normalise):
    """The gene means that bin the control genes are scanpy's own, bit for bit: summed in float32 by
    scanpy 1.11 on SciPy < 1.18, in float64 by scanpy 1.12 (a bin boundary moves otherwise at scale)."""
    from scanpy.tools._score_genes import _nan_means  # private: the function score_genes bins with

    from atlas._kernels.cpu import NORM_NONE
    from atlas.score.exec_cpu import run_fold
    from atlas.score.scanpy_compat import finalize_gene_means, fold_dtype
    from atlas.score.sources import as_source

    x = normalise(adata).X
    x = x.toarray() if kind == "dense" else x
    dense = kind == "dense"
    sums, _ = run_fold(as_source(x), 64, NORM_NONE, 1e4, fold_dtype(x.dtype, NORM_NONE, dense=dense))
    ours = finalize_gene_means(sums, x.shape[0], dense=dense)
    np.testing.assert_array_equal(ours, _nan_means(x, axis=0))


def _decoupler(b, sets, **kw):
    import decoupler as dc

    net = pd.DataFrame([(s, g) for s, gs in sets.items() for g in gs], columns=["source", "target"])
    res = dc.mt.aucell(b, net, tmin=1, **kw)
    return (res if res is not None else b).obsm["score_aucell"]


@pytest.mark.parametrize("n_up", [None, 9])
def test_aucell_equals_decoupler(adata, sets, n_up, normalise):
    b = normalise(adata)
    ref = _decoupler(b.copy(), sets, **({} if n_up is None else {"n_up": n_up}))
    ours = score_signatures(b, sets, method="aucell", backend="cpu", n_up=n_up, chunk_size=50)
    ours = ours.loc[ref.index, ref.columns]  # decoupler drops the empty cell
    np.testing.assert_array_equal(ours.to_numpy(), ref.to_numpy())


def test_aucell_partial_sort_and_ties():
    """Rows with many more values than n_up (partial sort) and heavy ties among small counts."""
    import anndata as ad

    rng = np.random.default_rng(5)
    x = sp.csr_matrix(rng.poisson(0.8, (120, 400)).astype(np.float32))
    a = ad.AnnData(x)
    a.var_names = [f"G{i}" for i in range(400)]
    a.obs_names = [f"c{i}" for i in range(120)]
    sets = {"A": [f"G{i}" for i in range(0, 400, 7)], "B": [f"G{i}" for i in range(3, 60)]}
    ref = _decoupler(a.copy(), sets, n_up=20)
    ours = score_signatures(a, sets, method="aucell", backend="cpu", n_up=20)
    np.testing.assert_array_equal(ours.loc[ref.index, ref.columns].to_numpy(), ref.to_numpy())


@pytest.mark.parametrize(("max_rank", "missing"), [(1500, "skip"), (40, "skip"), (25, "impute")])
def test_ucell_equals_pyucell(adata, sets, max_rank, missing, normalise):
    import pyucell

    b = normalise(adata)
    sets = {**sets, "S2": sets["S2"] + ["NOT_A_GENE"]}
    pyucell.compute_ucell_scores(b, sets, max_rank=max_rank, n_jobs=1, missing_genes=missing)
    ref = b.obs[[f"{s}_UCell" for s in sets]].to_numpy(dtype=np.float64)
    ours = score_signatures(b, sets, method="ucell", backend="cpu", max_rank=max_rank, missing_genes=missing)
    np.testing.assert_array_equal(ours.to_numpy(), ref)


def test_ucell_partial_sort_boundary_ties():
    """A tie group straddling max_rank in rows far longer than max_rank (partial sort path)."""
    import anndata as ad
    import pyucell

    rng = np.random.default_rng(2)
    x = sp.csr_matrix(rng.poisson(1.2, (80, 500)).astype(np.float32))
    a = ad.AnnData(x)
    a.var_names = [f"G{i}" for i in range(500)]
    a.obs_names = [f"c{i}" for i in range(80)]
    sets = {"A": [f"G{i}" for i in range(0, 500, 5)], "B": [f"G{i}" for i in range(100, 140)]}
    pyucell.compute_ucell_scores(a, sets, max_rank=30, n_jobs=1)
    ref = a.obs[["A_UCell", "B_UCell"]].to_numpy(dtype=np.float64)
    ours = score_signatures(a, sets, method="ucell", backend="cpu", max_rank=30)
    np.testing.assert_array_equal(ours.to_numpy(), ref)


def test_mean_is_plain_mean(adata, sets, normalise):
    b = normalise(adata)
    ours = score_signatures(b, sets, method="mean", backend="cpu")
    for name, genes in sets.items():
        present = [g for g in genes if g in b.var_names]
        ref = np.asarray(b[:, present].X.astype(np.float64).mean(axis=1)).ravel()
        np.testing.assert_allclose(ours[name].to_numpy(), ref, rtol=0, atol=1e-12)
