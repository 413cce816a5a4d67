"""Cell types, states, reprogramming axis and pseudotime root on small hand-made inputs."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atlas.analysis import ReprogrammingAxis, apply_reprogramming_axis, fit_reprogramming_axis
from atlas.analysis.celltypes import annotate_cell_types, cluster_order, neutrophil_yield
from atlas.analysis.pseudotime import choose_root
from atlas.analysis.settings import AnalysisSettings
from atlas.analysis.states import UNASSIGNED, assign_states, smooth_on_graph, state_clusters
from atlas.errors import AtlasError


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
    assert set(table["cell_type"]) == {"neutrophil", "monocyte", "T"}


def test_weak_neutrophil_carried_by_cluster_but_clear_monocyte_in_it_is_not():
    rng = np.random.default_rng(1)
    scores, truth = _marker_scores(rng)
    clusters = truth.map({"neutrophil": "0", "monocyte": "1", "T": "2"})
    weak, mono = scores.index[0], scores.index[1]
    scores.loc[weak] = [0.3, 0.2, 0.1]  # low-UMI neutrophil: barely any marker evidence
    scores.loc[mono] = [0.0, 3.0, 0.0]  # a monocyte that sits in the neutrophil cluster
    cells, _ = annotate_cell_types(scores, clusters)
    assert cells.loc[weak, "is_neutrophil"]
    assert not cells.loc[mono, "is_neutrophil"] and cells.loc[mono, "cell_type"] == "monocyte"
    # markers only (no cluster vote): the monocyte is still a monocyte
    only, _ = annotate_cell_types(scores, clusters, cluster_weight=0.0)
    assert only.loc[mono, "cell_type"] == "monocyte"


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
    out = assign_states(s, smoothing_steps=0, min_z=0.5, min_margin=0.25, default_state="mature")
    st = out["neutrophil_state"].astype(str).tolist()
    assert st[0] == "T3" and st[1] == "interferon"
    assert st[3] == UNASSIGNED  # two programmes equally high
    assert st[2] == "mature" and st[4] == "mature"  # nothing stands out: the default
    none = assign_states(s, smoothing_steps=0, default_state=None)
    assert none["neutrophil_state"].astype(str).iloc[2] == UNASSIGNED


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


def test_settings_refuse_incomplete_markers():
    with pytest.raises(ValueError, match="neutrophil"):
        AnalysisSettings(cell_type_markers={"T": ["CD3E"]})
    with pytest.raises(ValueError, match="no markers"):
        AnalysisSettings(cell_type_markers={"neutrophil": ["CSF3R"], "T": []})


def test_unknown_state_signature_fails_before_any_work():
    from atlas.analysis.run import _check_signature_names
    from atlas.errors import InputDataError

    s = AnalysisSettings(state_signatures={"T3": ["T3_proxy"], "odd": ["NOT_A_SIGNATURE"]})
    with pytest.raises(InputDataError, match=r"state_signatures\['odd'\].*NOT_A_SIGNATURE"):
        _check_signature_names(s, None)
    # a user's own gene set already scored (a column of scores.parquet) is accepted
    _check_signature_names(s, pd.DataFrame(columns=["NOT_A_SIGNATURE"]))
