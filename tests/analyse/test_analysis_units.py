"""Cell types, states, reprogramming axis and pseudotime root on small hand-made inputs."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atlas.analyse import ReprogrammingAxis, apply_reprogramming_axis, fit_reprogramming_axis
from atlas.analyse.celltypes import annotate_cell_types, cluster_order, neutrophil_yield
from atlas.analyse.pseudotime import (
    DIRECT_SOLVE_MAX,
    MIN_ANCHOR_CELLS,
    choose_root,
    distance_ratio_pseudotime,
    extreme_cells,
    harmonic_pseudotime,
    mean_of_standardised,
    reprogramming_pseudotime,
    signature_pseudotime,
    state_contrast_pseudotime,
)
from atlas.analyse.settings import AnalysisSettings
from atlas.analyse.states import UNASSIGNED, assign_states, smooth_on_graph, state_clusters
from atlas.core.errors import AtlasError


def _marker_scores(rng, n_per=100):
    types = ["neutrophil", "monocyte", "T"]
    rows, truth = [], []
    for j, t in enumerate(types):
        x = rng.normal(0, 0.3, (n_per, len(types)))
        x[:, j] += 2.0
        rows.append(x)
        truth += [t] * n_per
    df = pd.DataFrame(np.vstack(rows), columns=types, index=[f"c{i}" for i in range(len(truth))])
    return df, pd.Series(truth, index=df.index)


def test_cell_types_follow_markers_and_clusters():
    rng = np.random.default_rng(0)
    scores, truth = _marker_scores(rng)
    clusters = truth.map({"neutrophil": "0", "monocyte": "1", "T": "2"})
    cells, table = annotate_cell_types(scores, clusters)
    assert (cells["cell_type"].astype(str) == truth).all()
    assert (cells["is_neutrophil"] == (truth == "neutrophil")).all()
    assert set(table["call"]) == {"neutrophil", "monocyte", "T"}


def test_neutrophil_yield_per_dataset_and_platform():
    obs = pd.DataFrame(
        {
            "dataset_id": ["a", "a", "b", "b", "b"],
            "platform": ["x", "x", "y", "y", "y"],
            "is_neutrophil": [True, False, True, True, False],
        }
    )
    y = neutrophil_yield(obs).set_index("dataset_id")
    assert y.loc["a", "n_neutrophils"] == 1 and y.loc["b", "neutrophil_fraction"] == pytest.approx(2 / 3)


def test_states_rule_default_and_unassigned():
    idx = [f"n{i}" for i in range(6)]
    s = pd.DataFrame({"T3": [3, 0, 0, 2.0, 0, 0], "interferon": [0, 3, 0, 2.0, 0, 0]}, index=idx)
    out = assign_states(s, smoothing_steps=0, min_z=0.5, min_margin=0.25, default_state="mature", cells="smoothed")
    st = out["neutrophil_state"].astype(str).tolist()
    assert st[0] == "T3" and st[1] == "interferon"
    assert st[3] == UNASSIGNED  # two programmes equally high
    assert st[2] == "mature" and st[4] == "mature"  # nothing stands out: the default
    none = assign_states(s, smoothing_steps=0, default_state=None, cells="smoothed")
    assert none["neutrophil_state"].astype(str).iloc[2] == UNASSIGNED
    with pytest.raises(ValueError, match="cells="):
        assign_states(s, cells="both")


def test_smoothing_averages_neighbours():
    v = np.array([[1.0], [0.0], [0.0]])
    g = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float))
    out = smooth_on_graph(v, g, 1)
    np.testing.assert_allclose(out.ravel(), [0.5, 0.5, 0.0])
    assert smooth_on_graph(v, None, 3) is v


def test_state_clusters_majority_ignores_unassigned():
    states = pd.DataFrame({"neutrophil_state": ["T3", "T3", UNASSIGNED, "mature"]}, index=list("abcd"))
    scores = pd.DataFrame({"T3": [1.0, 2, 3, 4]}, index=list("abcd"))
    t = state_clusters(states, pd.Series(["0", "0", "0", "1"], index=list("abcd")), scores)
    assert t.set_index("neutrophil_leiden").loc["0", "state"] == "T3"
    assert t.set_index("neutrophil_leiden").loc["0", "mean_T3"] == pytest.approx(2.0)


def test_cluster_tables_in_numeric_order():
    assert cluster_order(["10", "2", "0", "x", "1"]) == ["0", "1", "2", "10", "x"]
    rng = np.random.default_rng(4)
    scores, truth = _marker_scores(rng, n_per=40)
    clusters = pd.Series([str(i % 12) for i in range(len(truth))], index=truth.index)
    _, table = annotate_cell_types(scores, clusters)
    assert list(table["cluster"]) == [str(i) for i in range(12)]
    states = pd.DataFrame({"neutrophil_state": ["mature"] * len(truth)}, index=truth.index)
    t = state_clusters(states, clusters, pd.DataFrame({"T3": 0.0}, index=truth.index))
    assert list(t["neutrophil_leiden"]) == [str(i) for i in range(12)]


def test_reprogramming_axis_fit_apply_roundtrip():
    rng = np.random.default_rng(2)
    scores = pd.DataFrame({"T3_proxy": rng.normal(size=500), "blood_like": rng.normal(size=500)})
    axis = fit_reprogramming_axis(scores)
    idx = apply_reprogramming_axis(scores, axis)
    assert np.quantile(idx, 0.01) == pytest.approx(0.0, abs=1e-9)
    assert np.quantile(idx, 0.99) == pytest.approx(1.0, abs=1e-9)
    again = apply_reprogramming_axis(scores, ReprogrammingAxis.from_dict(axis.to_dict()))
    np.testing.assert_allclose(idx, again)
    with pytest.raises(AtlasError, match="blood_like"):
        apply_reprogramming_axis(scores[["T3_proxy"]], axis)


def test_root_is_blood_like_and_falls_back_without_blood():
    index = np.array([0.5, 0.1, -1.0, 0.2])
    tissue = pd.Series(["blood", "blood", "tumour", "tumour"])
    assert choose_root(index, tissue, "blood") == 1
    assert choose_root(index, pd.Series(["tumour"] * 4), "blood") == 2


def _path_graph(n):
    i = np.arange(n - 1)
    return sp.coo_matrix((np.ones(n - 1), (i, i + 1)), shape=(n, n)).tocsr()


def test_harmonic_pseudotime_is_linear_on_a_path_and_ignores_side_branches():
    # a trunk 0..10 with a side branch of 5 cells leaving at trunk cell 4
    n_trunk, n_side = 11, 5
    w = sp.lil_matrix((n_trunk + n_side, n_trunk + n_side))
    w[: n_trunk, : n_trunk] = _path_graph(n_trunk)
    w[4, n_trunk] = 1.0
    for k in range(n_trunk, n_trunk + n_side - 1):
        w[k, k + 1] = 1.0
    pt = harmonic_pseudotime(w.tocsr(), start=[0], end=[10])
    np.testing.assert_allclose(pt[:n_trunk], np.linspace(0, 1, n_trunk), atol=1e-12)
    # every side-branch cell gets the value where its branch leaves the trunk (diffusion distance would grow)
    np.testing.assert_allclose(pt[n_trunk:], pt[4], atol=1e-12)


def test_harmonic_pseudotime_nan_without_start_or_end_and_refuses_empty_ends():
    w = sp.block_diag([_path_graph(5), _path_graph(4)]).tocsr()
    pt = harmonic_pseudotime(w, start=[0], end=[4, 6])  # cell 6 is the only boundary of its component
    np.testing.assert_allclose(pt[:5], [0, 0.25, 0.5, 0.75, 1.0])
    assert np.isnan(pt[5:]).all()
    with pytest.raises(AtlasError, match="start and one end"):
        harmonic_pseudotime(w, start=[0], end=[0])


def test_harmonic_pseudotime_iterative_solve_matches_direct(monkeypatch):
    rng = np.random.default_rng(0)
    n = 400
    w = sp.random(n, n, density=0.03, random_state=1, data_rvs=lambda k: rng.uniform(0.1, 1, k)) + _path_graph(n)
    direct = harmonic_pseudotime(w, start=[0, 1], end=[n - 1])
    monkeypatch.setattr("atlas.analyse.pseudotime.DIRECT_SOLVE_MAX", 10)
    iterative = harmonic_pseudotime(w, start=[0, 1], end=[n - 1])
    assert DIRECT_SOLVE_MAX > 10
    np.testing.assert_allclose(iterative, direct, atol=1e-6)
    assert 0 < np.median(direct) < 1


def test_extreme_cells_take_a_share_of_a_pool_and_skip_nan():
    v = np.array([5.0, np.nan, 1.0, 3.0, 4.0, 2.0])
    assert list(extreme_cells(v, 0.4, highest=True)) == [0, 4]
    assert list(extreme_cells(v, 0.01, highest=False)) == [2]
    assert list(extreme_cells(v, 0.5, highest=False, pool=np.array([0, 1, 3, 4]))) == [3, 4]
    assert extreme_cells(np.array([np.nan]), 0.5, highest=True).size == 0


def test_distance_ratio_is_the_relative_position_between_start_and_end():
    x = np.linspace(0, 1, 11)
    pt = distance_ratio_pseudotime(x[:, None], start=[0], end=[10], n_anchor_neighbors=1)
    np.testing.assert_allclose(pt, x, atol=1e-12)  # on the segment: d_start / (d_start + d_end) = x
    # a side state off the trunk keeps its order, and lies between the ends, pulled towards the middle
    side = np.column_stack([np.linspace(0.1, 0.4, 4), np.full(4, 0.5)])
    z = np.vstack([np.column_stack([x, np.zeros_like(x)]), side])
    pt = distance_ratio_pseudotime(z, start=[0], end=[10], n_anchor_neighbors=1)
    assert np.all(np.diff(pt[11:]) > 0) and np.all((pt[11:] > side[:, 0]) & (pt[11:] < 0.5))
    # the distance to a population is the mean over its nearest cells
    pt = distance_ratio_pseudotime(x[:, None], start=[0, 1], end=[9, 10], n_anchor_neighbors=2)
    assert np.all(np.diff(pt) >= 0) and pt[0] == 0 and pt[-1] == 1


def test_distance_ratio_subsamples_large_populations_without_losing_the_order():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(2)
    t = rng.uniform(0, 1, 2000)
    z = np.column_stack([t * 5, rng.normal(0, 0.2, (2000, 3))])
    start, end = np.flatnonzero(t < 0.2), np.flatnonzero(t > 0.7)
    full = distance_ratio_pseudotime(z, start, end)
    sub = distance_ratio_pseudotime(z, start, end, max_anchor_cells=50, seed=1)
    assert not np.allclose(full, sub) and spearmanr(full, sub).statistic > 0.99
    np.testing.assert_array_equal(sub, distance_ratio_pseudotime(z, start, end, max_anchor_cells=50, seed=1))


def test_distance_ratio_nan_for_a_non_finite_latent_and_refuses_empty_populations():
    z = np.linspace(0, 1, 6)[:, None].repeat(2, axis=1)
    z[3, 0] = np.nan
    pt = distance_ratio_pseudotime(z, start=[0], end=[5])
    assert np.isnan(pt[3]) and np.isfinite(np.delete(pt, 3)).all()
    with pytest.raises(AtlasError, match="one start and one end"):
        distance_ratio_pseudotime(z, start=[0], end=[0])
    with pytest.raises(AtlasError, match="one start and one end"):
        distance_ratio_pseudotime(z, start=[3], end=[5])
    with pytest.raises(AtlasError, match="latent"):
        distance_ratio_pseudotime(z[:, 0], start=[0], end=[5])


def _latent_trajectory(rng, n=600):
    """Neutrophils on a 1-D trajectory in a 5-D latent, with an interferon side state offset off it."""
    import anndata as ad

    t = rng.uniform(0, 1, n)
    side = rng.random(n) < 0.15
    z = np.column_stack([t * 6, np.sin(t * 3), rng.normal(0, 0.15, (n, 3))])
    z[side, 2] += 4.0  # the side programme: far from the trunk, not later along it
    state = np.select([t < 0.08, t > 0.75, side], ["immature", "T3", "interferon"], "mature")
    obs = pd.DataFrame({"reprogramming_index": t + rng.normal(0, 0.05, n),
                        "state_z_immature": -t + rng.normal(0, 0.05, n),
                        "neutrophil_state": state,
                        "tissue": np.where(t < 0.3, "blood", "tumour"), "dataset_id": "ds1"},
                       index=[f"n{i}" for i in range(n)])  # fmt: skip
    a = ad.AnnData(_trajectory_counts(rng, t), obs=obs.copy())
    a.obsm["X_scVI"] = z
    return a, obs, t, side


def _trajectory_counts(rng, t, n_moving=30, n_null=200):
    """Poisson counts (~450 per cell): ``n_moving`` genes rise and as many fall 4.5-fold along ``t``; the rest don't."""
    rate = np.hstack([2 * np.exp(1.5 * t)[:, None].repeat(n_moving, 1),
                      2 * np.exp(1.5 * (1 - t))[:, None].repeat(n_moving, 1), np.ones((t.size, n_null))])  # fmt: skip
    return sp.csr_matrix(rng.poisson(rate).astype(np.float32))


@pytest.mark.parametrize("method", ["state_contrast", "signature", "distance_ratio", "harmonic"])
@pytest.mark.parametrize("root", ["immature", "blood_like"])
def test_reprogramming_pseudotime_follows_the_trajectory_with_side_states(root, method):
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    a, obs, t, side = _latent_trajectory(rng)
    s = AnalysisSettings(pseudotime_root=root, pseudotime_method=method)
    pt, summary, notes = reprogramming_pseudotime(a, obs, s)
    assert summary["method"] == method and notes == []
    if method != "harmonic":  # the annotated states, except a blood-like start (the lowest index)
        assert summary["end_cells"] == "state T3" and summary["n_end_cells"] == int((obs.neutrophil_state == "T3").sum())
        assert summary["start_cells"] == ("state immature" if root == "immature" else "lowest 5% reprogramming_index (blood)")
    else:  # harmonic: shares of cells
        assert summary["n_end_cells"] == 30 and summary["end_cells"] == "top 5% reprogramming_index"
    assert spearmanr(pt, t).statistic > 0.95
    assert spearmanr(pt[side], t[side]).statistic > 0.9  # side-state cells keep their order along the trunk
    assert np.nanmin(pt) == 0 and np.nanmax(pt) == 1
    assert "pseudotime_connectivities" not in a.obsp  # no graph is left behind


def test_signature_pseudotime_keeps_the_moving_genes_and_reads_counts_the_latent_lost():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(11)
    a, obs, t, _ = _latent_trajectory(rng, n=800)
    start, end = np.flatnonzero(t < 0.08), np.flatnonzero(t > 0.75)
    pt, genes, weights = signature_pseudotime(a.X, start, end)
    assert genes.size >= 40 and (genes < 60).all()  # moving genes only, none of the 200 that do not move
    np.testing.assert_array_equal(np.sign(weights), np.where(genes < 30, 1.0, -1.0))
    assert spearmanr(pt, t).statistic > 0.95 and pt.min() == 0 and pt.max() == 1
    pt, summary, notes = reprogramming_pseudotime(a, obs, AnalysisSettings(pseudotime_method="signature",
                                                                         pseudotime_block_key=None))  # fmt: skip
    assert summary["method"] == "signature" and summary["n_axis_genes"] == genes.size and notes == []
    _, _, notes = reprogramming_pseudotime(a, obs, AnalysisSettings(pseudotime_block_key="study"))
    assert "'study' is not an obs column" in notes[0]
    assert summary["axis_genes_up"].count(",") == 4 and spearmanr(pt, t).statistic > 0.95
    # a latent that lost the trajectory (noise only; the state anchors fail their check there and the index
    # extremes replace them): the counts still order the cells
    a.obsm["X_scVI"] = rng.normal(size=(800, 5))
    pt, summary, notes = reprogramming_pseudotime(a, obs, AnalysisSettings(pseudotime_method="signature"))
    assert summary["method"] == "signature" and all("anchor check" in n for n in notes)
    assert spearmanr(pt, t).statistic > 0.95
    lost, _, _ = reprogramming_pseudotime(a, obs, AnalysisSettings(pseudotime_method="distance_ratio"))
    assert spearmanr(lost, t).statistic < 0.8


def test_signature_axis_compares_start_and_end_within_data_sets():
    """Start cells mostly of study A, end cells mostly of study C: genes that only tell the studies apart are no
    trajectory genes when the comparison is made within studies."""
    from atlas.analyse.axis_genes import _log_normalised, axis_genes

    rng = np.random.default_rng(13)
    n = 900
    t = rng.uniform(0, 1, n)
    study = np.where(rng.random(n) < 0.6, np.where(t < 0.5, "A", "C"), "B")  # B holds both ends
    rate = np.hstack([_trajectory_counts(rng, t, n_moving=10, n_null=100).toarray() + 0.0,
                      np.where(study == "C", 20.0, 1.0)[:, None].repeat(10, 1)])  # 10 genes of study C only
    counts = sp.csr_matrix(rng.poisson(rate).astype(np.float32))
    x = _log_normalised(counts, None)
    start, end = np.flatnonzero(t < 0.1), np.flatnonzero(t > 0.9)
    pooled, _ = axis_genes(x, start, end)
    blocked, weights = axis_genes(x, start, end, blocks=study)
    assert (pooled >= 120).sum() >= 5  # study genes pass a comparison across studies
    assert (blocked < 20).sum() >= 15 and (blocked >= 120).sum() == 0 and (blocked >= 20).sum() <= 2
    moving = blocked < 20
    np.testing.assert_array_equal(np.sign(weights[moving]), np.where(blocked[moving] < 10, 1.0, -1.0))
    np.testing.assert_array_equal(axis_genes(x, start, end, blocks=np.array(["A"] * n))[0], pooled)


def test_signature_pseudotime_without_moving_genes_falls_back_to_the_state_contrast():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(12)
    a, obs, t, _ = _latent_trajectory(rng, n=400)
    a.X = sp.csr_matrix(rng.poisson(2.0, (400, 260)).astype(np.float32))  # no gene follows the trajectory
    pt, genes, _ = signature_pseudotime(a.X, np.flatnonzero(t < 0.08), np.flatnonzero(t > 0.75))
    assert genes.size == 0 and np.isnan(pt).all()
    signature = AnalysisSettings(pseudotime_method="signature")
    pt, summary, notes = reprogramming_pseudotime(a, obs, signature)
    assert summary["method"] == "state_contrast" and "fewer than 5 genes" in notes[-1]
    assert summary["fallback_from"] == "signature"
    assert "reprogramming_index - state_z_immature" in notes[-1]  # no state_z_T3 column: the index stands in
    assert np.isfinite(pt).all() and pt.min() == 0 and pt.max() == 1
    # the end state's evidence minus the start's: noisy alone, together they order the cells
    obs["state_z_T3"] = t + rng.normal(0, 0.3, t.size)
    obs["state_z_immature"] = -t + rng.normal(0, 0.3, t.size)
    obs["reprogramming_index"] = t + rng.normal(0, 0.2, t.size)  # the T3 axis, less noisy than state_z_T3
    pt, summary, notes = reprogramming_pseudotime(a, obs, signature)
    assert "reprogramming_index - state_z_immature" in notes[-1]  # the index is built on T3's signature
    rho_index = spearmanr(pt, t).statistic
    other_up = AnalysisSettings(pseudotime_method="signature", reprogramming_up=["HALLMARK_HYPOXIA"])  # not T3's axis
    pt, summary, notes = reprogramming_pseudotime(a, obs, other_up)
    assert "state_z_T3 - state_z_immature" in notes[-1]
    rho = spearmanr(pt, t).statistic
    assert rho > spearmanr(obs["state_z_T3"], t).statistic + 0.05 and rho > 0.75
    assert rho_index > rho
    # a blood-like start has no start programme: the end evidence alone
    pt, what = state_contrast_pseudotime(obs, "T3", immature=False)
    z = obs["state_z_T3"].to_numpy()
    assert what == "state_z_T3" and np.allclose(pt, (z - z.min()) / (z.max() - z.min()))
    with pytest.raises(AtlasError, match="one start and one end"):
        signature_pseudotime(a.X, [], [1])


def test_distance_ratio_falls_back_to_shares_when_a_state_is_too_rare():
    rng = np.random.default_rng(5)
    a, obs, t, _ = _latent_trajectory(rng, n=300)
    rare = obs.assign(neutrophil_state=np.where(np.argsort(np.argsort(-t)) < MIN_ANCHOR_CELLS - 1, "T3", "mature"))
    pt, summary, notes = reprogramming_pseudotime(a, rare, AnalysisSettings(pseudotime_method="distance_ratio"))
    assert summary["end_cells"] == "top 5% reprogramming_index" and summary["n_end_cells"] == 15
    assert summary["start_cells"] == "top 5% state_z_immature"
    assert len(notes) == 2 and "annotated 'T3'" in notes[1] and "end cells are the top 5%" in notes[1]
    assert np.isfinite(pt).all()
    with pytest.raises(ValueError, match="pseudotime_end_state 'T9'"):
        AnalysisSettings(pseudotime_end_state="T9")


def test_reprogramming_pseudotime_dpt_and_notes():
    import scanpy as sc

    rng = np.random.default_rng(4)
    a, obs, t, _ = _latent_trajectory(rng, n=300)
    sc.pp.neighbors(a, use_rep="X_scVI", n_neighbors=15)
    pt, summary, _ = reprogramming_pseudotime(a, obs, AnalysisSettings(pseudotime_method="dpt"))
    assert summary["method"] == "dpt" and summary["root_cell"] in obs.index
    assert np.nanmin(pt) == 0 and np.nanmax(pt) == 1
    pt, _, notes = reprogramming_pseudotime(a, obs.drop(columns="state_z_immature"), AnalysisSettings())
    assert np.isfinite(pt).all() and "most blood-like" in notes[0]
    pt, _, notes = reprogramming_pseudotime(a[:3].copy(), obs.iloc[:3], AnalysisSettings())
    assert np.isnan(pt).all() and "3 or fewer" in notes[0]


def test_settings_refuse_incomplete_markers():
    with pytest.raises(ValueError, match="neutrophil"):
        AnalysisSettings(cell_type_markers={"T": ["CD3E"]})
    with pytest.raises(ValueError, match="no markers"):
        AnalysisSettings(cell_type_markers={"neutrophil": ["CSF3R"], "T": []})


def test_unknown_state_signature_fails_before_any_work():
    from atlas.analyse.stage import _check_signature_names
    from atlas.core.errors import InputDataError

    s = AnalysisSettings(state_signatures={"T3": ["T3_proxy"], "odd": ["NOT_A_SIGNATURE"]})
    with pytest.raises(InputDataError, match=r"state_signatures\['odd'\].*NOT_A_SIGNATURE"):
        _check_signature_names(s, None)
    # a user's own gene set already scored (a column of scores.parquet) is accepted
    _check_signature_names(s, pd.DataFrame(columns=["NOT_A_SIGNATURE"]))


def test_signature_pseudotime_is_averaged_with_the_state_contrast():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(21)
    a, obs, t, _ = _latent_trajectory(rng, n=600)
    obs["reprogramming_index"] = t + rng.normal(0, 0.08, t.size)  # a contrast about as noisy as the gene axis
    obs["state_z_immature"] = -t + rng.normal(0, 0.08, t.size)
    alone, s_alone, _ = reprogramming_pseudotime(a, obs, AnalysisSettings(pseudotime_method="signature",
                                                                         pseudotime_with_state_contrast=False))
    both, s_both, _ = reprogramming_pseudotime(a, obs, AnalysisSettings(pseudotime_method="signature"))
    contrast, what = state_contrast_pseudotime(obs, "T3", immature=True, index_is_end_axis=True)
    assert s_alone["method"] == s_both["method"] == "signature" and "combined_with" not in s_alone
    assert s_both["combined_with"] == what == "reprogramming_index - state_z_immature"
    np.testing.assert_allclose(both, mean_of_standardised(alone, contrast))
    rho = {k: spearmanr(v, t).statistic for k, v in (("alone", alone), ("contrast", contrast), ("both", both))}
    assert rho["both"] > max(rho["alone"], rho["contrast"])  # two estimates with independent noise
    assert both.min() == 0 and both.max() == 1


def test_state_contrast_pseudotime_is_the_default_and_records_the_axis_as_a_cross_check():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(22)
    a, obs, t, _ = _latent_trajectory(rng, n=600)
    pt, summary, notes = reprogramming_pseudotime(a, obs, AnalysisSettings())
    contrast, what = state_contrast_pseudotime(obs, "T3", immature=True, index_is_end_axis=True)
    np.testing.assert_array_equal(pt, contrast)  # the contrast itself: no anchor cell moves it
    assert summary["method"] == "state_contrast" and summary["contrast"] == what and notes == []
    assert "fallback_from" not in summary and summary["n_axis_genes"] >= 40  # the moving genes, found from the anchors
    axis, _, _ = reprogramming_pseudotime(a, obs, AnalysisSettings(pseudotime_method="signature",
                                                                   pseudotime_with_state_contrast=False))
    assert summary["axis_spearman"] == pytest.approx(spearmanr(pt, axis).statistic) and summary["axis_spearman"] > 0.9
    # wrong state calls (T3 given to random cells): the anchors of the cross-check fail, the pseudotime does not move
    obs["neutrophil_state"] = np.where(t < 0.08, "immature", np.where(rng.random(t.size) < 0.1, "T3", "mature"))
    wrong, summary, notes = reprogramming_pseudotime(a, obs, AnalysisSettings())
    np.testing.assert_array_equal(wrong, contrast)
    assert summary["anchor_check"] != "passed" and any("anchor check" in n for n in notes)
    # no gene separates the ends: the contrast all the same, with no cross-check
    a.X = sp.csr_matrix(rng.poisson(2.0, (600, 260)).astype(np.float32))
    flat, summary, notes = reprogramming_pseudotime(a, obs, AnalysisSettings())
    np.testing.assert_array_equal(flat, contrast)
    assert summary["n_axis_genes"] == 0 and np.isnan(summary["axis_spearman"])


def test_mean_of_standardised_ignores_scale_and_keeps_nan():
    a = np.array([0.0, 1.0, 2.0, np.nan])
    b = np.array([10.0, 30.0, 50.0, 70.0])  # same order, another scale
    np.testing.assert_allclose(mean_of_standardised(a, b), [0.0, 0.5, 1.0, np.nan])
    assert np.isnan(mean_of_standardised(np.full(3, np.nan), np.ones(3))).all()
