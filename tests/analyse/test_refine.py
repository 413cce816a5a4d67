"""Signatures refined on the data (atlas.analyse.refine) on small hand-made cohorts."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from atlas.analyse.refine import (
    Programme,
    control_genes,
    programme_reliabilities,
    programme_scores,
    refine_programme,
)


def _cohort(seed=0, n=1500, depth=250.0, deep_factor=1.0):
    """Low-depth cells of 3 data sets: a programme P (genes P0-P29) on in 20 % of cells, an independent,
    stronger programme Q (Q0-Q29) in 30 %, data-set genes (D0-D9, high in data set 2 only), 300 null genes.
    The seed signature holds 6 of P's genes and 8 genes that do not move (a proxy that half matches).
    Data set 1 is sequenced ``deep_factor`` times deeper (another platform)."""
    rng = np.random.default_rng(seed)
    on_p, on_q = rng.random(n) < 0.2, rng.random(n) < 0.3
    ds = rng.integers(0, 3, n)
    genes = [f"P{i}" for i in range(30)] + [f"Q{i}" for i in range(30)] + [f"D{i}" for i in range(10)] + [
        f"N{i}" for i in range(300)]  # fmt: skip
    base = rng.gamma(2.0, 0.5, len(genes))
    rate = np.tile(base, (n, 1))
    rate[:, :30] *= np.where(on_p, 3.0, 1.0)[:, None]
    rate[:, 30:60] *= np.where(on_q, 5.0, 1.0)[:, None]
    rate[:, 60:70] *= np.where(ds == 2, 6.0, 1.0)[:, None]
    size = (rng.lognormal(0, 0.4, n) * np.where(ds == 1, deep_factor, 1.0))[:, None]
    rate = rate / rate.sum(axis=1, keepdims=True) * depth * size
    counts = sp.csr_matrix(rng.poisson(rate).astype(np.float32))
    obs = pd.DataFrame({"dataset_id": ds.astype(str)}, index=[f"c{i}" for i in range(n)])
    a = ad.AnnData(counts, obs=obs, var=pd.DataFrame(index=genes))
    seed_genes = [f"P{i}" for i in range(6)] + [f"N{i}" for i in range(8)]
    return a, seed_genes, on_p, on_q


def _auc(a, genes, truth):
    p = Programme("s", "s", tuple(genes), tuple([1.0] * len(genes)))
    return roc_auc_score(truth, programme_scores(a, [p])["s"])


def test_a_half_matching_signature_is_refined_to_its_programme():
    a, seed_genes, on_p, on_q = _cohort()
    prog, info = refine_programme(a, seed_genes, a.obs["dataset_id"].to_numpy(), source="S")
    assert prog is not None and prog.name == "S_refined" and info["n_seed_genes"] == 14
    kept = set(prog.genes)
    assert sum(g.startswith("P") for g in kept) >= 25  # the programme's genes, seeded by 6 of them
    assert not any(g.startswith(("Q", "D")) for g in kept)  # neither the other programme nor study genes
    assert sum(g.startswith("N") for g in kept) <= 2  # the seed's genes that do not move leave
    assert all(w > 0 for w in prog.weights) and list(prog.weights) == sorted(prog.weights, reverse=True)
    refined = roc_auc_score(on_p, programme_scores(a, [prog])["S_refined"])
    assert refined > _auc(a, seed_genes, on_p) + 0.05 and refined > 0.9
    assert 0 < info["corr_with_signature"] < 1 and info["iterations"] in (1, 2)


def test_a_side_programme_does_not_drift_onto_the_dominant_one():
    """Seeded by Q's genes plus noise, the refinement stays on Q: P's genes never enter, and the refined score
    is uncorrelated with P's."""
    a, _, on_p, on_q = _cohort(seed=1)
    prog, _ = refine_programme(a, [f"Q{i}" for i in range(3)] + [f"N{i}" for i in range(10)],
                               a.obs["dataset_id"].to_numpy(), max_iterations=5, source="Q")  # fmt: skip
    assert prog is not None and not any(g.startswith("P") for g in prog.genes)
    score = programme_scores(a, [prog])["Q_refined"]
    assert roc_auc_score(on_q, score) > 0.95 and abs(np.corrcoef(score, on_p)[0, 1]) < 0.1


def test_study_genes_enter_without_blocks_and_not_with_them():
    """A seed of data-set genes: within data sets nothing moves with it, so no programme is learned."""
    a, _, _, _ = _cohort(seed=2)
    seed = [f"D{i}" for i in range(4)]
    with_blocks, info = refine_programme(a, seed, a.obs["dataset_id"].to_numpy(), source="D")
    assert with_blocks is None and "fewer than 5 genes" in info["reason"]
    pooled, _ = refine_programme(a, seed, None, source="D")
    assert pooled is not None and {f"D{i}" for i in range(4, 10)} <= set(pooled.genes)


def test_an_undetected_signature_is_not_refined_and_programmes_round_trip():
    a, seed_genes, on_p, _ = _cohort(seed=3, n=1000)
    prog, info = refine_programme(a, ["ABSENT1", "ABSENT2"], source="X")
    assert prog is None and info["n_seed_genes"] == 0 and "0 of its genes" in info["reason"]
    # one detected gene: nothing to check it against, so nothing is learned from chance co-detection with it
    one, info = refine_programme(a, ["P0", "ABSENT1"], a.obs["dataset_id"].to_numpy(), source="X")
    assert one is None and info["n_seed_genes"] == 1 and "1 of its genes" in info["reason"]
    two, _ = refine_programme(a, ["P0", "P1"], a.obs["dataset_id"].to_numpy(), source="X")
    assert two is not None and sum(g.startswith("P") for g in two.genes) >= 20
    prog, _ = refine_programme(a, seed_genes, a.obs["dataset_id"].to_numpy(), source="S")
    back = Programme.from_dict({k: (np.asarray(v) if isinstance(v, list) else v) for k, v in prog.to_dict().items()})
    assert back.genes == prog.genes and np.allclose(back.weights, prog.weights)
    assert back.control_genes == prog.control_genes and np.allclose(back.control_weights, prog.control_weights)
    np.testing.assert_allclose(programme_scores(a, [back])["S_refined"], programme_scores(a, [prog])["S_refined"])
    # absent genes count 0: a query lacking some genes is still scored on the others
    sub = a[:, [g for g in a.var_names if g != prog.genes[0]]].copy()
    assert np.isfinite(programme_scores(sub, [prog])["S_refined"]).all()
    rel = programme_reliabilities(a, {"S_refined": prog})["S_refined"]
    assert 0.3 < rel <= 0.95


def test_control_genes_take_the_shift_a_deeper_platform_gives_every_gene():
    """Two platforms, one at 4x the depth (SeqWell vs 10x): the plain weighted sum of the programme's genes rises
    with depth in cells where the programme is off; minus control genes of matched expression it does not."""
    a, seed_genes, on_p, _ = _cohort(seed=4, n=3000, depth=150.0, deep_factor=4.0)
    deep = a.obs["dataset_id"].to_numpy() == "1"
    prog, info = refine_programme(a, seed_genes, a.obs["dataset_id"].to_numpy(), source="S")
    assert prog is not None and info["n_control_genes"] > 0 and not set(prog.control_genes) & set(prog.genes)
    plain = Programme("plain", "S", prog.genes, prog.weights)
    scores = programme_scores(a, [prog, plain])

    def off_shift(col):  # deep minus shallow platform, programme off, in SDs of the score
        v = scores[col].to_numpy()
        return (v[deep & ~on_p].mean() - v[~deep & ~on_p].mean()) / v.std()

    assert off_shift("plain") > 0.5
    assert abs(off_shift("S_refined")) < 0.5 * off_shift("plain")
    assert roc_auc_score(on_p, scores["S_refined"]) > roc_auc_score(on_p, scores["plain"])


def test_control_genes_match_each_bin_and_carry_its_weight():
    mean = np.arange(100, dtype=float)  # 100 genes, 10 bins of 10
    ctrl, w = control_genes(mean, np.array([5, 7, 55]), np.array([1.0, 2.0, 4.0]), n_bins=10, size=4, seed=1)
    bins = ctrl // 10
    assert sorted(set(bins)) == [0, 5] and not set(ctrl) & {5, 7, 55}
    assert np.isclose(w[bins == 0].sum(), 3.0) and np.isclose(w[bins == 5].sum(), 4.0) and (bins == 0).sum() == 4
    # a programme stored by an earlier version (no control genes) is scored as its weighted sum
    old = Programme.from_dict({"name": "s", "source": "s", "genes": ["P0", "P1"], "weights": [1.0, 1.0]})
    assert old.control_genes == () and old.all_genes() == ["P0", "P1"]


@pytest.mark.parametrize("bad", [{"fdr": 0}, {"max_iterations": 0}, {"min_detection": 1.0}])
def test_refine_options_are_validated(bad):
    from pydantic import ValidationError

    from atlas.analyse.settings import RefineOptions

    with pytest.raises(ValidationError):
        RefineOptions(**bad)


def _shared_cohort(seed=0, n=2000, depth=300.0):
    """A T3-like programme T (T0-T29, 20 % of cells) and an interferon-like side programme I (I0-I19, 8 %) whose
    signature genes I0-I5 the T cells also raise, more weakly; 300 null genes."""
    rng = np.random.default_rng(seed)
    on_t = rng.random(n) < 0.2
    on_i = (rng.random(n) < 0.08) & ~on_t
    genes = [f"T{i}" for i in range(30)] + [f"I{i}" for i in range(20)] + [f"N{i}" for i in range(300)]
    rate = np.tile(rng.gamma(2.0, 0.5, len(genes)), (n, 1))
    rate[:, :30] *= np.where(on_t, 4.0, 1.0)[:, None]
    rate[:, 30:50] *= np.where(on_i, 6.0, 1.0)[:, None]
    rate[:, 30:36] *= np.where(on_t, 2.5, 1.0)[:, None]  # the side programme's signature genes, half-on in T cells
    rate = rate / rate.sum(axis=1, keepdims=True) * depth * rng.lognormal(0, 0.3, n)[:, None]
    a = ad.AnnData(sp.csr_matrix(rng.poisson(rate).astype(np.float32)),
                   obs=pd.DataFrame({"dataset_id": "d"}, index=[f"c{i}" for i in range(n)]),
                   var=pd.DataFrame(index=genes))  # fmt: skip
    return a, on_t, on_i


def test_a_side_programme_refined_apart_from_the_others_does_not_take_their_genes():
    """Seeded by I0-I5, which the T cells also raise, the refinement takes T's genes; refined apart from T's
    signature it keeps to I, and its score tells I cells from T cells."""
    a, on_t, on_i = _shared_cohort()
    seed = [f"I{i}" for i in range(6)]
    t_signature = {"T_signature": [f"T{i}" for i in range(8)]}
    blocks = a.obs["dataset_id"].to_numpy()
    naive, _ = refine_programme(a, seed, blocks, source="I")
    apart, info = refine_programme(a, seed, blocks, source="I", apart_from=t_signature)
    assert sum(g.startswith("T") for g in naive.genes) >= 10  # the T cells' genes came along
    assert not any(g.startswith("T") for g in apart.genes) and sum(g.startswith("I") for g in apart.genes) >= 15
    assert info["refined_apart_from"] == ["T_signature"]
    among = on_i | on_t  # I cells against T cells
    score = lambda p: programme_scores(a, [p])[p.name].to_numpy()[among]  # noqa: E731
    assert roc_auc_score(on_i[among], score(apart)) > roc_auc_score(on_i[among], score(naive)) + 0.05


def _tied_cohort(seed=0, n=3000, depth=300.0):
    """A strong programme Q (Q0-Q29, 5x in 30 % of cells) and a two-gene signature S0/S1 that only rises 2x with
    Q: genes correlated with the signature's score are Q's, while S0 and S1 barely correlate with each other."""
    rng = np.random.default_rng(seed)
    on_q = rng.random(n) < 0.3
    genes = ["S0", "S1"] + [f"Q{i}" for i in range(30)] + [f"N{i}" for i in range(300)]
    rate = np.tile(rng.gamma(2.0, 0.5, len(genes)), (n, 1))
    rate[:, 2:32] *= np.where(on_q, 5.0, 1.0)[:, None]
    rate[:, :2] *= np.where(on_q, 2.0, 1.0)[:, None]
    rate = rate / rate.sum(axis=1, keepdims=True) * depth * rng.lognormal(0, 0.4, n)[:, None]
    return ad.AnnData(sp.csr_matrix(rng.poisson(rate).astype(np.float32)), var=pd.DataFrame(index=genes))


def test_a_refinement_that_keeps_none_of_its_signatures_genes_is_not_used():
    a = _tied_cohort()
    drifted, info = refine_programme(a, ["S0", "S1"], max_iterations=1, source="S")
    assert drifted is None and info["n_seed_genes_kept"] == 0 and info["n_genes"] >= 5
    assert "none of the signature's own genes" in info["reason"] and info["top_genes"][0].startswith("Q")
    # a second step brings the signature's genes back in: then the programme is used (the guard is "none", not "few")
    prog, info = refine_programme(a, ["S0", "S1"], max_iterations=2, source="S")
    assert prog is not None and info["n_seed_genes_kept"] == 2
