"""Unit tests of the simulator's parts: genes, biology, design, sampler kernel, text formatters."""

from __future__ import annotations

import gzip

import numba
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from atlas.catalogue.signatures import load_registry
from atlas.core.errors import AtlasError
from atlas.simulate import biology as bio
from atlas.simulate.design import CSV_MAX_CELLS, design_datasets
from atlas.simulate.genes import MT_GENES, build_gene_table, feature_table, gene_names, required_genes
from atlas.simulate.sampler import _neg_binomial, sample_block
from atlas.simulate.writers import MtxWriter, format_dense_rows, log_normalise


def test_gene_table():
    table = build_gene_table(2500, bio.extra_genes())
    assert len(table.symbols) == 2500 and len(set(table.symbols)) == 2500
    assert list(table.symbols) == sorted(table.symbols)
    assert set(MT_GENES) <= set(table.symbols) and "RPL13A" in table.symbols
    assert set(load_registry()["T3_proxy"].genes) <= set(table.symbols)
    assert {"CSF3R", "EPCAM", "PLVAP", "CEACAM8", "HLA-DRA"} <= set(table.symbols)
    assert len(set(table.ensembl)) == 2500 and all(e.startswith("ENSG") for e in table.ensembl)
    assert table.outdated["CXCL8"] == "IL8"
    names, keep = gene_names(table, "mouse")
    assert len(names) == len(set(names)) == len(keep) < 2500 and "Cxcr2" in names
    bigger = build_gene_table(3000, bio.extra_genes())
    assert set(table.symbols) <= set(bigger.symbols)  # filler choice is stable
    with pytest.raises(AtlasError, match="too small"):
        build_gene_table(len(required_genes(bio.extra_genes())) - 1, bio.extra_genes())


def test_sample_states_fractions():
    rng = np.random.default_rng(0)
    n = 20_000
    for tissue, expected in (
        ("tumour", 0.4),
        ("adjacent_normal", 0.4 * bio.ADJACENT_T3_FACTOR),
        ("blood", 0.0),
    ):
        states, pt = bio.sample_states(rng, n, tissue, 0.4)
        t3 = states == bio.STATES.index("T3")
        assert abs(t3.mean() - expected) < 0.015
        assert ((pt >= 0) & (pt <= 1)).all()
        assert (pt[t3] >= bio.T3_THRESHOLD).all() and (pt[~t3] < bio.T3_THRESHOLD).all()
        assert pt[states == bio.STATES.index("immature")].max() < 0.1
    w = bio.w_t3(np.linspace(0, 1, 11))
    assert (np.diff(w) > 0).all() and w[0] < 0.01 and w[-1] > 0.99
    assert w[3] - w[0] > 0.1  # the drift: pseudotime visible in expression before the switch


def test_ageing_programme_follows_the_pseudotime_and_spares_state_genes():
    table = build_gene_table(15_000, bio.extra_genes())
    prof = bio.build_profiles(table, np.random.default_rng(0))
    sup = np.asarray(table.symbols)[prof.support[bio.NEUTROPHIL]]
    age = bio.PROGRAMS.index("ageing")
    moved = prof.effects[age] != 0
    assert moved.sum() >= bio.AGEING_DRIFT_GENES + 20
    assert (prof.effects[age] > 0).sum() > (prof.effects[age] < 0).sum() > 0
    # disjoint from markers, from the other programmes and from the signatures that define states
    reg = load_registry()
    state_genes = {g for name in bio.STATE_SIGNATURES for g in reg[name].genes}
    markers = {g for genes in bio.MARKERS.values() for g in genes}
    assert not set(sup[moved]) & (state_genes | markers)
    others = np.delete(prof.effects, age, axis=0)
    assert not (np.any(others != 0, axis=0) & moved).any()
    assert set(reg["Xie_maturation"].genes) & set(sup[moved])
    # the weight is the pseudotime itself, for every state
    rng = np.random.default_rng(3)
    states, pt = bio.sample_states(rng, 2000, "tumour", 0.3)
    w = bio.program_weights(rng, states, pt)
    np.testing.assert_array_equal(w[:, age], pt)


def test_patient_fractions_follow_cancer_types():
    rng = np.random.default_rng(1)
    means = {ct: np.mean([bio.patient_t3_fraction(rng, ct) for _ in range(400)]) for ct in bio.CANCER_TYPES}
    for ct, (m, _) in bio.CANCER_TYPES.items():
        assert abs(means[ct] - m) < 0.03
    assert list(means) == sorted(means, key=means.get, reverse=True)


def test_design_covers_every_kind():
    specs = design_datasets(np.random.default_rng(0), 20_000, 8)
    assert sum(s.n_cells for s in specs) == 20_000
    assert {s.cancer_type for s in specs} == set(bio.CANCER_TYPES)
    assert [s.species for s in specs].count("mouse") == 1
    assert {s.format for s in specs} == {"h5ad", "10x_mtx", "csv"}
    assert {s.gene_kind for s in specs} == {"symbol", "ensembl", "outdated", "mouse"}
    six = design_datasets(np.random.default_rng(0), 5_000, 6)
    assert {s.cancer_type for s in six} == set(bio.CANCER_TYPES) and [s.species for s in six].count(
        "mouse"
    ) == 1
    big = design_datasets(np.random.default_rng(0), 1_000_000, 8)
    assert all(s.format != "csv" or s.n_cells <= CSV_MAX_CELLS for s in big)
    with pytest.raises(AtlasError, match="too small"):
        design_datasets(np.random.default_rng(0), 100, 8)


def _toy_kernel_inputs(n_cells: int, lib: float):
    n_genes, k = 400, 300
    rng = np.random.default_rng(0)
    support = np.sort(rng.choice(n_genes, k, replace=False))[None, :]
    bg = np.setdiff1d(np.arange(n_genes), support[0])[None, :]
    logw = rng.normal(0, 1.5, n_genes)
    args = dict(
        ctype=np.zeros(n_cells, dtype=np.int64), prof=np.zeros(n_cells, dtype=np.int64),
        lib=np.full(n_cells, lib), mt_factor=np.ones(n_cells), wprog=np.zeros((n_cells, 1)), neutrophil=5,
        support=support, sup_w=np.exp(logw[support]), sup_theta=np.full((1, k), 1000.0),
        sup_mt=np.zeros((1, k), dtype=np.bool_), eff_pos=np.zeros(0, dtype=np.int64), effects=np.zeros((1, 0)),
        bg_genes=bg,
        bg_cdf=np.cumsum(np.exp(logw[bg]), axis=1), n_genes=n_genes,
        ambient=0.0, csample=np.zeros(n_cells, dtype=np.int64), soup_cdf=np.zeros((1, 1)),
    )  # fmt: skip
    return args, np.exp(logw) / np.exp(logw).sum()


def test_sample_block_means_and_determinism():
    args, p = _toy_kernel_inputs(2000, 1000.0)
    indptr, indices, data = sample_block(7, **args)
    x = sp.csr_matrix((data, indices, indptr), shape=(2000, 400))
    assert x.has_sorted_indices and (data > 0).all()
    totals = np.asarray(x.sum(axis=1)).ravel()
    assert abs(totals.mean() - 1000) < 10
    means, expected = np.asarray(x.mean(axis=0)).ravel(), 1000 * p
    assert (np.abs(means - expected) <= 0.05 + 0.1 * expected).all()
    again = sample_block(7, **args)
    assert all(np.array_equal(a, b) for a, b in zip((indptr, indices, data), again, strict=True))
    assert not np.array_equal(sample_block(8, **args)[2], data)


def test_mtx_writer_round_trip(tmp_path):
    table = build_gene_table(2500, bio.extra_genes())
    rng = np.random.default_rng(0)
    x = sp.csr_matrix(
        sp.random(30, 2500, density=0.05, random_state=rng, data_rvs=lambda n: rng.integers(1, 500, n))
    )
    x.sort_indices()
    barcodes = [f"c{i}" for i in range(30)]
    with MtxWriter(tmp_path / "m", feature_table(table, "symbol"), barcodes) as w:
        w.append(0, x[:13])
        w.append(13, x[13:])
    with gzip.open(tmp_path / "m" / "matrix.mtx.gz") as f:
        back = scipy.io.mmread(f).T.tocsr()
    assert (back != x).nnz == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "barcodes.tsv.gz",
        "features.tsv.gz",
        "matrix.mtx.gz",
    ]


def test_dense_rows_and_log_normalise():
    block = np.array([[0, 12, 3], [105, 0, 0]], dtype=np.int32)
    text, offsets = format_dense_rows(block)
    assert text.tobytes() == b",0,12,3\n,105,0,0\n" and offsets.tolist() == [0, 8, 17]
    x = sp.csr_matrix(np.array([[1.0, 3.0], [0.0, 2.0]]))
    np.testing.assert_allclose(
        log_normalise(x).toarray(), np.log1p([[2500.0, 7500.0], [0.0, 1e4]]), rtol=1e-6
    )


@numba.njit
def _nb_draws(seed, mu, theta, n):
    np.random.seed(seed)  # noqa: NPY002  (numba: legacy API only)
    out = np.empty(n)
    for i in range(n):
        out[i] = _neg_binomial(mu, theta)
    return out


@pytest.mark.parametrize(("mu", "theta"), [(0.05, 2.0), (1.5, 6.0), (6.0, 0.8), (40.0, 5.0)])
def test_negative_binomial_moments(mu, theta):
    x = _nb_draws(0, mu, theta, 200_000)
    var = mu + mu**2 / theta
    assert abs(x.mean() - mu) < 4 * np.sqrt(var / x.size)
    assert abs(x.var() / var - 1) < 0.05


@pytest.mark.parametrize("switch_at", [10**9, 50])
def test_h5ad_writer_chunks_and_64bit_offsets(tmp_path, monkeypatch, switch_at):
    import anndata as ad
    import pandas as pd

    from atlas.simulate import writers

    monkeypatch.setattr(writers, "INDPTR64_AT", switch_at)
    rng = np.random.default_rng(0)
    x = sp.csr_matrix(
        sp.random(40, 30, density=0.2, random_state=rng, data_rvs=lambda n: rng.integers(1, 9, n))
    )
    obs, var = (
        pd.DataFrame(index=[f"c{i}" for i in range(40)]),
        pd.DataFrame(index=[f"g{i}" for i in range(30)]),
    )
    with writers.H5adWriter(tmp_path / "a.h5ad", obs, var, "layers/counts") as w:
        for lo in range(0, 40, 15):
            w.append(lo, x[lo : lo + 15])
    a = ad.read_h5ad(tmp_path / "a.h5ad")
    assert (a.layers["counts"] != x).nnz == 0
    assert a.layers["counts"].indptr.dtype == (np.int64 if switch_at == 50 else np.int32)
    np.testing.assert_allclose(a.X.toarray(), log_normalise(x).toarray(), rtol=1e-6)
