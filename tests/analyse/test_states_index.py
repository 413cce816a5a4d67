"""Reliability-weighted reprogramming index, cluster-shrunk states and pseudotime anchor checks."""

from __future__ import annotations

from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from atlas.analyse.pseudotime import anchor_enrichment, check_anchors, reprogramming_pseudotime
from atlas.analyse.reprogramming import (
    ReprogrammingAxis,
    apply_reprogramming_axis,
    fit_reprogramming_axis,
    signature_reliabilities,
    signature_reliability,
)
from atlas.analyse.states import UNASSIGNED, assign_states


def _counts(rng, n_cells: int, t3: np.ndarray, *, down_signal: float, up_signal: float = 1.5, depth: float = 400.0):
    """Poisson counts of 20 'up' genes (rising with ``t3``), 8 'down' genes and 200 background genes."""
    base = np.full(228, 1.0)
    rate = np.tile(base, (n_cells, 1))
    rate[:, :20] *= np.exp(up_signal * t3)[:, None]
    rate[:, 20:28] *= np.exp(-down_signal * t3)[:, None]
    rate /= rate.sum(axis=1, keepdims=True)
    lib = rng.lognormal(np.log(depth), 0.4, n_cells)
    x = rng.poisson(rate * lib[:, None]).astype(np.float32)
    genes = [f"U{i}" for i in range(20)] + [f"D{i}" for i in range(8)] + [f"B{i}" for i in range(200)]
    return ad.AnnData(sp.csr_matrix(x), var=pd.DataFrame(index=genes))


def _scores(a: ad.AnnData) -> pd.DataFrame:
    x = a.X.toarray()
    lx = np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4)
    ctrl = lx[:, 28:].mean(axis=1)
    return pd.DataFrame({"T3_proxy": lx[:, :20].mean(axis=1) - ctrl, "blood_like": lx[:, 20:28].mean(axis=1) - ctrl})


def test_reliability_separates_signal_from_noise():
    rng = np.random.default_rng(0)
    t3 = (rng.random(1500) < 0.3).astype(float)
    a = _counts(rng, 1500, t3, down_signal=0.0)
    rel = signature_reliabilities(a, {"up": [f"U{i}" for i in range(20)], "down": [f"D{i}" for i in range(8)],
                                      "few": ["U0", "nope"]})  # fmt: skip
    assert rel["up"] > 0.5
    assert rel["down"] < 0.15  # noise only: its genes do not co-vary once depth is regressed out
    assert np.isnan(rel["few"])  # fewer than 2 genes in the data
    assert np.isnan(signature_reliability(np.ones((10, 4))))


@pytest.mark.parametrize("seed", [1, 2])
def test_noise_down_signature_does_not_hurt_the_index(seed):
    rng = np.random.default_rng(seed)
    t3 = (rng.random(2000) < 0.3).astype(float)
    a = _counts(rng, 2000, t3, down_signal=0.0)
    scores = _scores(a)
    rel = signature_reliabilities(a, {"T3_proxy": [f"U{i}" for i in range(20)],
                                      "blood_like": [f"D{i}" for i in range(8)]})  # fmt: skip
    axis = fit_reprogramming_axis(scores, reliability=rel)
    assert axis.extra["weighting"] == "reliability"
    index = apply_reprogramming_axis(scores, axis)
    up_alone = roc_auc_score(t3, scores["T3_proxy"])
    assert roc_auc_score(t3, index) >= up_alone - 0.002
    # the legacy unweighted difference is worse: the noise is subtracted at full weight
    legacy = apply_reprogramming_axis(scores, fit_reprogramming_axis(scores))
    assert roc_auc_score(t3, legacy) < up_alone


def test_informative_down_signature_is_used():
    rng = np.random.default_rng(3)
    t3 = (rng.random(2000) < 0.3).astype(float)
    a = _counts(rng, 2000, t3, down_signal=0.8, up_signal=0.4)
    scores = _scores(a)
    rel = signature_reliabilities(a, {"T3_proxy": [f"U{i}" for i in range(20)],
                                      "blood_like": [f"D{i}" for i in range(8)]})  # fmt: skip
    axis = fit_reprogramming_axis(scores, reliability=rel)
    assert axis.extra["signatures"]["blood_like"]["disattenuated_corr_with_up"] > 0.5
    assert roc_auc_score(t3, apply_reprogramming_axis(scores, axis)) > roc_auc_score(t3, scores["T3_proxy"])


def _with_noise(rng, signal: np.ndarray, reliability: float) -> np.ndarray:
    """``signal`` plus Gaussian noise, so that ``reliability`` of the sum's variance is signal."""
    return signal + rng.normal(0, np.sqrt(signal.var() * (1 - reliability) / reliability), signal.size)


def test_programme_counts_by_what_its_anchor_shares():
    rng = np.random.default_rng(6)
    t3 = (rng.random(3000) < 0.2).astype(float)
    trajectory = rng.normal(size=t3.size)  # a second, T3-unrelated programme the learned one also took
    anchor = _with_noise(rng, t3, 0.6)  # the registry signature: T3 itself, with counting noise
    learned = _with_noise(rng, 0.5 * t3 / t3.std() + trajectory, 0.95)
    scores = pd.DataFrame({"T3_proxy": anchor, "T3_proxy_refined": learned, "blood_like": rng.normal(size=t3.size)})
    rel = {"T3_proxy": 0.6, "T3_proxy_refined": 0.95, "blood_like": 0.05}
    fit = dict(up=("T3_proxy", "T3_proxy_refined"), down=("blood_like",), reliability=rel)
    naive = fit_reprogramming_axis(scores, **fit)
    anchored = fit_reprogramming_axis(scores, **fit, anchors={"T3_proxy_refined": "T3_proxy"})
    info = anchored.extra["signatures"]["T3_proxy_refined"]
    assert info["anchor"] == "T3_proxy" and info["disattenuated_corr_with_anchor"] < 0.6
    auroc = {k: roc_auc_score(t3, apply_reprogramming_axis(scores, a)) for k, a in (("naive", naive), ("anchored", anchored))}
    alone = roc_auc_score(t3, anchor)
    assert auroc["naive"] < alone - 0.01  # the learned programme's reliability alone gave it the larger weight
    assert auroc["anchored"] >= alone - 0.002


def test_programme_that_measures_its_anchors_programme_better_keeps_its_weight():
    rng = np.random.default_rng(7)
    t3 = (rng.random(3000) < 0.2).astype(float)
    anchor = _with_noise(rng, t3, 0.2)  # half the programme's genes in the signature: mostly counting noise
    learned = _with_noise(rng, t3, 0.7)
    scores = pd.DataFrame({"T3_proxy": anchor, "T3_proxy_refined": learned, "blood_like": rng.normal(size=t3.size)})
    axis = fit_reprogramming_axis(scores, up=("T3_proxy", "T3_proxy_refined"), down=("blood_like",),
                                  reliability={"T3_proxy": 0.2, "T3_proxy_refined": 0.7, "blood_like": 0.05},
                                  anchors={"T3_proxy_refined": "T3_proxy"})  # fmt: skip
    assert axis.extra["signatures"]["T3_proxy_refined"]["disattenuated_corr_with_anchor"] > 0.9
    assert roc_auc_score(t3, apply_reprogramming_axis(scores, axis)) > roc_auc_score(t3, anchor) + 0.05


def test_axis_roundtrip_and_old_axes_without_weights():
    rng = np.random.default_rng(4)
    scores = pd.DataFrame({"T3_proxy": rng.normal(size=300), "blood_like": rng.normal(size=300)})
    axis = fit_reprogramming_axis(scores, reliability={"T3_proxy": 0.6, "blood_like": 0.3})
    back = ReprogrammingAxis.from_dict(axis.to_dict())
    np.testing.assert_allclose(apply_reprogramming_axis(scores, back), apply_reprogramming_axis(scores, axis))
    old = {"up": ["T3_proxy"], "down": ["blood_like"], "loc": 0.0, "scale": 2.0, "method": "scanpy", "extra": {}}
    want = (scores["T3_proxy"] - scores["blood_like"]).to_numpy() / 2.0
    np.testing.assert_allclose(apply_reprogramming_axis(scores, old), want)
    # no reliability for a column: the plain difference, and the fit says why
    plain = fit_reprogramming_axis(scores, reliability={"T3_proxy": 0.6, "blood_like": np.nan})
    assert plain.weights == {} and "blood_like" in plain.extra["reason"]


def _blobs(rng, n_per: int = 100):
    """Three latent compartments along one axis: 0 (start), 1 (middle), 2 (end)."""
    centres = np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0]])
    lab = np.repeat([0, 1, 2], n_per)
    return centres[lab] + rng.normal(0, 0.7, (lab.size, 2)), lab


def test_anchor_check_flags_scattered_and_misplaced_anchors():
    rng = np.random.default_rng(5)
    z, lab = _blobs(rng)
    index = lab + rng.normal(0, 0.3, lab.size)
    start, end = np.flatnonzero(lab == 0), np.flatnonzero(lab == 2)
    assert anchor_enrichment(z, end) > 2.0
    assert check_anchors(start, end, index, z) == {"start": [], "end": []}
    scattered = np.sort(rng.choice(lab.size, 30, replace=False))
    assert any("scattered" in r for r in check_anchors(start, scattered, index, z)["end"])
    swapped = check_anchors(end, start, index, z)
    assert any("not below" in r for r in swapped["end"] + swapped["start"])
    assert any("more than" in r for r in check_anchors(start, np.arange(100, lab.size), index, z)["end"])


def _settings(**kw):
    base = dict(pseudotime_method="distance_ratio", pseudotime_root="immature", pseudotime_root_tissue="blood",
                pseudotime_end_state="T3", pseudotime_start_fraction=0.05, pseudotime_end_fraction=0.05,
                pseudotime_anchor_neighbors=10, pseudotime_n_neighbors=15, seed=0)  # fmt: skip
    return SimpleNamespace(**(base | kw))


def test_pseudotime_falls_back_to_index_extremes_and_says_so():
    rng = np.random.default_rng(6)
    z, lab = _blobs(rng)
    index = lab + rng.normal(0, 0.3, lab.size)
    adata = ad.AnnData(np.zeros((lab.size, 1)), obsm={"X_scVI": z})
    good = np.where(lab == 0, "immature", np.where(lab == 2, "T3", "mature"))
    obs = pd.DataFrame({"reprogramming_index": index, "tissue": "tumour", "neutrophil_state": good,
                        "state_z_immature": (lab == 0).astype(float)}, index=[f"c{i}" for i in range(lab.size)])
    pt, summary, notes = reprogramming_pseudotime(adata, obs, _settings())
    assert summary["anchor_check"] == "passed" and not notes
    assert summary["end_cells"] == "state T3"
    # wrong states: 'T3' calls scattered over the start compartment and elsewhere
    bad = good.copy()
    bad[:] = "mature"
    bad[lab == 0] = "immature"
    bad[rng.choice(lab.size, 40, replace=False)] = "T3"
    obs["neutrophil_state"] = bad
    pt2, summary2, notes2 = reprogramming_pseudotime(adata, obs, _settings())
    assert summary2["end_cells"].startswith("top 5% reprogramming_index")
    assert any("failed the anchor check" in n and "end cells" in n for n in notes2)
    rho = pd.Series(pt2).corr(pd.Series(lab.astype(float)), method="spearman")
    assert rho > 0.8


def test_states_follow_the_data_spread_and_clusters():
    rng = np.random.default_rng(7)
    truth = np.repeat(["mature", "interferon", "T3"], [400, 100, 100])
    clusters = np.repeat(["0", "1", "2"], [400, 100, 100])
    signal = pd.DataFrame({"mature": (truth == "mature") * 1.0, "interferon": (truth == "interferon") * 1.0,
                           "T3": (truth == "T3") * 1.0})  # fmt: skip
    noisy = signal + rng.normal(0, 0.6, signal.shape)
    # the units of the scores do not matter: thresholds are in the neutrophils' own spread
    a = assign_states(noisy, smoothing_steps=0, default_state="mature", cells="smoothed")
    b = assign_states(noisy * 1000.0 - 5.0, smoothing_steps=0, default_state="mature", cells="smoothed")
    assert (a["neutrophil_state"] == b["neutrophil_state"]).all()
    rel = {c: 0.3 for c in signal}
    shrunk = assign_states(noisy, smoothing_steps=0, default_state="auto", clusters=clusters, reliability=rel,
                           cells="smoothed")
    assert shrunk.attrs["default_state"] == "mature"  # chosen from the data
    rule = shrunk["neutrophil_state_rule"].astype(str)
    assert set(rule) <= {"cell", "cluster", "default", "ambiguous"}
    # clear cell-level calls are kept; ambiguous cells are settled by their cluster, mostly rightly
    cell = (rule == "cell").to_numpy()
    assert (shrunk["neutrophil_state"].to_numpy()[cell] == a["neutrophil_state"].to_numpy()[cell]).all()
    settled = (rule == "cluster").to_numpy()
    assert settled.sum() > 0
    assert (shrunk["neutrophil_state"].astype(str).to_numpy()[settled] == truth[settled]).mean() > 0.8
    assert (a["neutrophil_state"].astype(str) == "unassigned").sum() > (shrunk["neutrophil_state"].astype(str)
                                                                         == "unassigned").sum()  # fmt: skip
    # a reliable score keeps the cell's own value: little shrinkage
    kept = assign_states(noisy, smoothing_steps=0, clusters=clusters, reliability={c: 0.95 for c in signal})
    assert kept.attrs["cluster_weight"]["T3"] < 0.2


def _chain_graph(n: int) -> sp.csr_matrix:
    """Each cell linked to its two neighbours in order (a graph whose neighbourhoods mix the states below)."""
    i = np.arange(n - 1)
    g = sp.coo_matrix((np.ones(n - 1), (i, i + 1)), shape=(n, n))
    return (g + g.T).tocsr()


def test_own_evidence_picks_the_cells_smoothing_set_the_count_of():
    """A rare state whose cells form no compartment of the graph: smoothing halves each cell's evidence (its
    neighbours are mature), so the smoothed calls lose cells to their neighbours; the own-evidence rule keeps the
    smoothed rule's count but chooses the cells by their own scores."""
    rng = np.random.default_rng(3)
    n = 2000
    truth = np.where(rng.random(n) < 0.06, "interferon", "mature")
    noisy = pd.DataFrame({"mature": rng.normal(0, 0.3, n), "interferon": (truth == "interferon") + rng.normal(0, 0.3, n)})
    kw = dict(connectivities=_chain_graph(n), smoothing_steps=1, default_state="mature")
    smoothed = assign_states(noisy, cells="smoothed", **kw)
    own = assign_states(noisy, **kw)
    ifn_s = smoothed["neutrophil_state"].astype(str).to_numpy() == "interferon"
    ifn_o = own["neutrophil_state"].astype(str).to_numpy() == "interferon"
    assert ifn_o.sum() == ifn_s.sum()  # the count is the smoothed rule's
    true = truth == "interferon"
    f1 = lambda call: 2 * (call & true).sum() / (call.sum() + true.sum())  # noqa: E731
    assert f1(ifn_o) > f1(ifn_s) + 0.05
    cut = own.attrs["cell_cuts"]["interferon"]
    z = (noisy["interferon"] - noisy["interferon"].mean()) / noisy["interferon"].std(ddof=0)
    assert (z.to_numpy()[ifn_o] >= cut - 1e-12).all() and np.isnan(own.attrs["cell_cuts"]["mature"])
    assert set(own["neutrophil_state_rule"].astype(str)) <= {"cell", "default", "ambiguous"}
    assert (own["neutrophil_state_rule"].astype(str).to_numpy()[ifn_o] == "cell").all()
    conf = own["neutrophil_state_confidence"].to_numpy()
    assert ((conf >= 0) & (conf <= 1)).all()


def test_own_evidence_cuts_at_each_count_and_leaves_ties_unassigned():
    from atlas.analyse.states import _own_evidence_calls

    states = ["T3", "interferon", "mature"]
    z = np.array([[3.0, 0.0, 0], [0.0, 3.0, 0], [2.0, 2.1, 0], [1.9, 0.5, 0], [0.0, 0.0, 0]])
    smoothed = np.array(["T3", "interferon", UNASSIGNED, "T3", "mature"], dtype=object)
    label, rule, margin, cut = _own_evidence_calls(z, smoothed, states, "mature", min_margin=0.25)
    # two T3 cells and one interferon cell, as the smoothed rule counted: the cuts are the 2nd highest T3 z and
    # the highest interferon z; n2 (the smoothed rule's tie) is above the T3 cut only, so its own evidence
    # makes it T3, and n3 stays mature
    assert cut[0] == 2.0 and cut[1] == 3.0 and np.isinf(cut[2])
    assert list(label) == ["T3", "interferon", "T3", "mature", "mature"]
    assert list(rule) == ["cell", "cell", "cell", "default", "default"]
    assert margin[3] == pytest.approx(0.1) and margin[4] == pytest.approx(2.0)  # how far below the nearest cut
    # a cell above two cuts by nearly the same amount stays unassigned
    z2 = np.vstack([z, [3.5, 3.6, 0]])
    smoothed2 = np.array([*smoothed, "interferon"], dtype=object)
    label2, rule2, _, _ = _own_evidence_calls(z2, smoothed2, states, "mature", min_margin=0.25)
    assert label2[-1] == UNASSIGNED and rule2[-1] == "ambiguous"


def test_own_evidence_a_cell_two_states_want_goes_to_the_clearer():
    from atlas.analyse.states import _own_evidence_calls

    states = ["T3", "interferon", "mature"]
    # n0 is above both cuts but exceeds T3's far more: it is T3, and interferon keeps only its other cell
    z = np.array([[5.0, 2.0, 0], [4.0, 0.0, 0], [0.0, 1.5, 0], [0.0, 1.0, 0]])
    smoothed = np.array(["T3", "T3", "interferon", "interferon"], dtype=object)
    label, _, margin, cut = _own_evidence_calls(z, smoothed, states, "mature", min_margin=0.25)
    assert cut[1] == 1.5 and list(label) == ["T3", "T3", "interferon", "mature"]
    assert margin[0] == pytest.approx(0.5)  # 1.0 over the T3 cut, 0.5 ahead of its interferon excess


def test_own_evidence_cut_never_admits_more_than_the_count():
    """A one-gene score is the same in every cell without the gene: a count reaching into that tie must not
    call every such cell (on an independent cohort it called 756 neutrophils antigen-presenting for a count of 49)."""
    from atlas.analyse.states import _own_evidence_calls

    states = ["antigen_presenting", "mature"]
    z = np.zeros((100, 2))
    z[:5, 0] = [3.0, 2.5, 2.5, 2.0, 1.0]  # five cells detect the gene, the rest tie at 0
    for count, called in ((6, 5), (5, 5), (4, 4), (3, 3), (2, 1)):  # a tie that would overfill is left out
        smoothed = np.array(["antigen_presenting"] * count + ["mature"] * (100 - count), dtype=object)
        label, _, _, cut = _own_evidence_calls(z, smoothed, states, "mature", min_margin=0.25)
        assert (label == "antigen_presenting").sum() == called, (count, cut)
    smoothed = np.array(["antigen_presenting"] + ["mature"] * 99, dtype=object)
    z_tied = np.zeros((100, 2))  # no cell stands out: no cut admits one cell only
    label, _, _, cut = _own_evidence_calls(z_tied, smoothed, states, "mature", min_margin=0.25)
    assert (label == "mature").all() and np.isinf(cut[0])


def test_a_noisy_state_score_needs_more_evidence_per_cell():
    """A side state whose score is mostly counting noise (reliability ~0.2, as an antigen-presenting programme of sparse
    class-II genes at 300 UMIs): the smoothed rule read as it is admits the noise's upper tail (a quarter of all
    cells); shrunk by its reliability (Kelley) the count comes near the truth and F1 rises. A reliable score keeps its
    evidence, and a reliability of 0 (split halves that did not correlate) estimates nothing: that state is left as is."""
    rng = np.random.default_rng(11)
    n = 3000
    u = rng.random(n)
    truth = np.where(u < 0.05, "antigen_presenting", np.where(u < 0.13, "T3", "mature"))
    scores = pd.DataFrame({
        "T3": 3.0 * (truth == "T3") + rng.normal(0, 0.3, n),
        "antigen_presenting": 2.5 * (truth == "antigen_presenting") + rng.normal(0, 1.0, n),
        "mature": rng.normal(0, 1.0, n),
    })  # fmt: skip
    kw = dict(smoothing_steps=0, default_state="mature")
    rel = {"T3": 0.97, "antigen_presenting": 0.23}
    plain = assign_states(scores, reliability=rel, shrink=False, **kw)
    shrunk = assign_states(scores, reliability=rel, **kw)
    true = truth == "antigen_presenting"

    def called(res, state):
        return res["neutrophil_state"].astype(str).to_numpy() == state

    f1 = lambda call: 2 * (call & true).sum() / (call.sum() + true.sum())  # noqa: E731
    assert called(plain, "antigen_presenting").sum() > 3 * true.sum()
    assert 0.4 * true.sum() < called(shrunk, "antigen_presenting").sum() < 1.5 * true.sum()
    assert f1(called(shrunk, "antigen_presenting")) > f1(called(plain, "antigen_presenting")) + 0.1
    weight = shrunk.attrs["evidence_weight"]
    assert weight["antigen_presenting"] < 0.35 and weight["T3"] > 0.9 and weight["mature"] == 1.0  # no reliability
    assert abs(called(shrunk, "T3").sum() - called(plain, "T3").sum()) <= 0.1 * (truth == "T3").sum()
    # the state z the pseudotime and the report read is the smoothed z, not the shrunk evidence
    np.testing.assert_allclose(shrunk["state_z_antigen_presenting"], plain["state_z_antigen_presenting"])
    unknown = assign_states(scores, reliability={**rel, "antigen_presenting": 0.0}, **kw)
    assert unknown.attrs["evidence_weight"]["antigen_presenting"] == 1.0
    assert (called(unknown, "antigen_presenting") == called(plain, "antigen_presenting")).all()
    # the cluster step reads a reliability of 0 the same way: not estimated (no pull to the cluster mean)
    clusters = rng.integers(0, 8, n)
    zero = assign_states(scores, clusters=clusters, reliability={**rel, "antigen_presenting": 0.0}, **kw)
    unset = assign_states(scores, clusters=clusters, reliability={**rel, "antigen_presenting": np.nan}, **kw)
    assert zero.attrs["cluster_weight"]["antigen_presenting"] == 0.0
    assert zero.attrs["cluster_weight"]["T3"] > 0.0
    assert (zero["neutrophil_state"].astype(str) == unset["neutrophil_state"].astype(str)).all()


def test_calls_at_fixed_cuts_read_new_cells_as_the_analysis_read_its_own():
    """A query's cells at the reference's cuts: above one cut that state, above two the larger excess (a tie within
    the margin unassigned), above none the default; a state without a cut (NaN or inf) takes no cell; and the
    analysis's own calls are reproduced from its recorded cuts and z units."""
    from atlas.analyse.states import calls_at_cuts

    states = ["T3", "interferon", "mature"]
    cut = np.array([1.0, 2.0, np.nan])
    z = np.array([[1.5, 0.0, 9.0], [0.0, 2.5, 0.0], [1.9, 2.3, 0.0], [1.9, 2.85, 0.0], [0.5, 1.0, 0.0]])
    label, rule, margin = calls_at_cuts(z, cut, states, "mature", min_margin=0.25)
    assert label.tolist() == ["T3", "interferon", "T3", UNASSIGNED, "mature"]
    assert rule.tolist() == ["cell", "cell", "cell", "ambiguous", "default"]
    assert margin[0] == pytest.approx(0.5) and margin[4] == pytest.approx(0.5)  # half a unit below the T3 cut
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"T3": rng.normal(0, 1, 500), "interferon": rng.normal(0, 1, 500), "mature": rng.normal(0, 1, 500)})
    own = assign_states(scores, smoothing_steps=0, default_state="mature")
    loc, scale = pd.Series(own.attrs["z_loc"]), pd.Series(own.attrs["z_scale"])
    cuts = np.array([own.attrs["cell_cuts"][st] for st in scores.columns])
    again, _, _ = calls_at_cuts(((scores - loc) / scale).to_numpy(), cuts, list(scores.columns), "mature", 0.25)
    assert again.tolist() == own["neutrophil_state"].astype(str).tolist()
