"""Cell-type rule on hand-made marker scores: cluster calls, unknown mixtures, demotion, calibration, second QC pass."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from atlas.analyse.celltypes import (
    UNKNOWN,
    CellTypeRule,
    annotate_cell_types,
    auto_resolution,
    fill_unmeasured,
)
from atlas.analyse.settings import AnalysisSettings
from atlas.analyse.steps import _note_gene_panels, _second_qc_pass

TYPES = ["neutrophil", "monocyte", "T"]


def _cohort(rng, spec, noise=1.0):
    """Cells x TYPES scores; ``spec``: list of (cluster, true type, n cells, signal of its own markers)."""
    rows, truth, clusters = [], [], []
    for cluster, cell_type, n, signal in spec:
        x = rng.normal(0, noise, (n, len(TYPES)))
        x[:, TYPES.index(cell_type)] += signal
        rows.append(x)
        truth += [cell_type] * n
        clusters += [cluster] * n
    idx = [f"c{i}" for i in range(len(truth))]
    scores = pd.DataFrame(np.vstack(rows), columns=TYPES, index=idx)
    return scores, pd.Series(truth, index=idx), pd.Series(clusters, index=idx)


def test_pure_cluster_of_weak_cells_is_called():
    rng = np.random.default_rng(0)
    # neutrophils at low depth: their markers stand only 0.7 noise SD above the rest
    spec = [
        ("0", "neutrophil", 300, 0.7),
        ("1", "monocyte", 300, 4.0),
        ("2", "T", 300, 4.0),
        ("3", "T", 300, 4.0),
    ]
    scores, truth, clusters = _cohort(rng, spec)
    own_best = (scores.idxmax(axis=1) == truth)[truth == "neutrophil"].mean()
    assert own_best < 0.8  # per cell, the markers alone are often wrong
    cells, table = annotate_cell_types(scores, clusters)
    assert table.set_index("cluster").loc["0", "call"] == "neutrophil"
    assert cells.loc[truth == "neutrophil", "is_neutrophil"].mean() > 0.97
    assert not cells.loc[truth != "neutrophil", "is_neutrophil"].any()
    assert (cells["cell_type"].astype(str) == truth).mean() > 0.97


def test_a_type_in_most_clusters_is_still_called():
    # an atlas of sorted neutrophils: 8 of 10 clusters are neutrophils, so the lower quartile of all cluster
    # means is a neutrophil cluster's; the baseline comes from the clusters of the other types
    rng = np.random.default_rng(5)
    spec = [(str(k), "neutrophil", 200, 2.0) for k in range(8)] + [("8", "monocyte", 40, 4.0), ("9", "T", 40, 4.0)]
    scores, truth, clusters = _cohort(rng, spec)
    cells, table = annotate_cell_types(scores, clusters)
    calls = table.set_index("cluster")["call"]
    assert (calls[[str(k) for k in range(8)]] == "neutrophil").all()
    assert calls["8"] == "monocyte" and calls["9"] == "T"
    assert cells.loc[truth == "neutrophil", "is_neutrophil"].mean() > 0.97
    assert (cells["cell_type"].astype(str) == truth).mean() > 0.95


def test_cells_of_a_data_set_without_a_types_markers_are_neutral_on_it_not_against_it():
    # monocyte clusters pooling two data sets, one of whose files lack the monocyte markers: read as evidence its
    # monocytes look like nothing (the control genes' mean only) and their clusters like mixtures
    rng = np.random.default_rng(7)
    spec = [(str(k), "monocyte", 120, 2.0) for k in range(3)] + [("3", "neutrophil", 200, 3.0), ("4", "T", 200, 3.0)]
    scores, truth, clusters = _cohort(rng, spec)
    lacking = (truth == "monocyte") & (np.arange(len(truth)) % 2 == 0)  # half of each monocyte cluster
    scores.loc[lacking, "monocyte"] = rng.normal(-1.5, 0.3, int(lacking.sum()))
    gaps = pd.DataFrame(False, index=scores.index, columns=TYPES)
    gaps.loc[lacking, "monocyte"] = True
    filled = fill_unmeasured(scores, clusters, gaps)
    measured_mean = scores.loc[~lacking & (clusters == "0"), "monocyte"].mean()
    assert np.allclose(filled.loc[lacking & (clusters == "0"), "monocyte"], measured_mean)
    assert filled.loc[~lacking].equals(scores.loc[~lacking]) and filled["T"].equals(scores["T"])
    monocytes = (truth == "monocyte").to_numpy()
    as_read, _ = annotate_cell_types(scores, clusters)
    cells, table = annotate_cell_types(filled, clusters)
    assert (as_read.loc[monocytes, "cell_type"] == "monocyte").mean() < 0.6
    assert (cells.loc[monocytes, "cell_type"] == "monocyte").mean() > 0.97
    assert (table.set_index("cluster").loc[["0", "1", "2"], "call"] == "monocyte").all()


def test_the_analysis_names_data_sets_that_hold_a_gene_panel():
    genes = [f"G{i}" for i in range(100)]
    record = pd.DataFrame({"whole": True, "mouse": [i < 80 for i in range(100)], "hvg": [i < 20 for i in range(100)]},
                          index=genes)  # fmt: skip
    obs = pd.DataFrame({"dataset_id": ["whole", "mouse", "hvg"]}, index=["a", "b", "c"])
    counts = ad.AnnData(np.ones((3, 100), np.float32), obs=obs, var=pd.DataFrame(index=genes))
    counts.varm["measured"] = record
    # ingest's QC table says which data sets it treated as panels (their floors scaled by their share of the genes)
    counts.uns["atlas"] = {"qc": pd.DataFrame({"panel_scale": [1.0, 1.0, 0.2]}, index=["whole", "mouse", "hvg"])}
    notes = []
    _note_gene_panels(counts, notes)
    assert len(notes) == 1 and "hvg (20 genes)" in notes[0] and "mouse" not in notes[0]
    counts.varm["measured"] = record.assign(hvg=True)
    counts.uns["atlas"]["qc"]["panel_scale"] = 1.0
    notes = []
    _note_gene_panels(counts, notes)
    assert notes == []


def test_cells_with_incomplete_evidence_keep_their_clusters_call():
    # a mixed cluster's cells are propagated on their own posteriors; a cell whose data set lacked a type's markers
    # (evidence filled with its cluster's level) is not: its posterior cannot weigh that type
    rng = np.random.default_rng(1)
    spec = [("0", "neutrophil", 200, 3.0), ("0", "monocyte", 200, 3.0), ("1", "neutrophil", 300, 3.0),
            ("2", "monocyte", 300, 3.0), ("3", "T", 300, 3.0)]  # fmt: skip
    scores, _, clusters = _cohort(rng, spec)
    incomplete = (clusters == "0").to_numpy() & (np.arange(len(clusters)) % 2 == 0)
    free, _ = annotate_cell_types(scores, clusters)
    held, _ = annotate_cell_types(scores, clusters, incomplete=incomplete)
    assert (free.loc[incomplete, "cell_type_rule"] == "propagated").mean() > 0.8
    assert (held.loc[incomplete, "cell_type"] == UNKNOWN).all()
    assert held.loc[~incomplete, "cell_type"].equals(free.loc[~incomplete, "cell_type"])


def test_mixed_cluster_is_unknown_not_forced():
    rng = np.random.default_rng(1)
    spec = [("0", "neutrophil", 200, 3.0), ("0", "monocyte", 200, 3.0), ("1", "neutrophil", 300, 3.0),
            ("2", "monocyte", 300, 3.0), ("3", "T", 300, 3.0)]  # fmt: skip
    scores, truth, clusters = _cohort(rng, spec)
    cells, table = annotate_cell_types(scores, clusters)
    row = table.set_index("cluster").loc["0"]
    assert row["call"] == UNKNOWN and row["rule"].startswith("unknown: mixed")
    assert row["runner_up_ratio"] > 0.5
    assert table.set_index("cluster").loc["1", "call"] == "neutrophil"
    # the mixed cluster's cells are not forced into its winner: they follow their own (clear) markers
    mixed = clusters == "0"
    assert (cells.loc[mixed, "cell_type"].astype(str) == truth[mixed]).mean() > 0.9
    assert (cells.loc[mixed, "cell_type_rule"].astype(str) == "propagated").mean() > 0.95


def test_mixed_clusters_of_a_type_no_cluster_was_called_stay_unknown():
    # every monocyte cluster is mixed (monocytes share neutrophil genes): no called cluster calibrates
    # "monocyte", so its cells must not be propagated to the nearest type that has one
    rng = np.random.default_rng(4)
    spec = [("0", "neutrophil", 300, 4.0), ("1", "T", 300, 4.0), ("2", "monocyte", 200, 4.0), ("3", "monocyte", 200, 4.0)]
    scores, truth, clusters = _cohort(rng, spec)
    mono = (truth == "monocyte").to_numpy()
    scores.loc[mono, "neutrophil"] += 6.0  # their neutrophil enrichment ~0.75 of their own: mixed
    cells, table = annotate_cell_types(scores, clusters)
    calls = table.set_index("cluster")["call"]
    assert calls["2"] == calls["3"] == UNKNOWN and calls["0"] == "neutrophil"
    assert not cells.loc[mono, "is_neutrophil"].any()
    assert (cells.loc[mono, "cell_type"].astype(str) == UNKNOWN).all()


def test_monocytes_sharing_neutrophil_markers_keep_their_call_doublets_do_not():
    """Monocyte clusters whose every cell carries some neutrophil markers (ratio ~0.55, above the mixture bound)
    are monocytes, not mixtures: their cells do not split and their neutrophil enrichment is below every
    neutrophil cluster's. A cluster of neutrophil-monocyte doublets has both types diluted: it stays unknown."""
    rng = np.random.default_rng(5)
    spec = [("0", "neutrophil", 300, 8.0), ("1", "neutrophil", 300, 8.0), ("2", "T", 300, 6.0),
            ("3", "monocyte", 200, 8.0), ("4", "monocyte", 200, 8.0), ("5", "monocyte", 150, 0.0),
            ("6", "T", 200, 6.0), ("7", "T", 200, 6.0), ("8", "T", 200, 6.0)]  # fmt: skip
    scores, truth, clusters = _cohort(rng, spec)
    mono = clusters.isin(["3", "4"]).to_numpy()
    scores.loc[mono, "neutrophil"] += 4.5  # shared markers: about half a neutrophil's enrichment, in every cell
    doublet = (clusters == "5").to_numpy()
    scores.loc[doublet, ["neutrophil", "monocyte"]] += [4.0, 3.8]  # half of each type's markers
    cells, table = annotate_cell_types(scores, clusters)
    t = table.set_index("cluster")
    assert (t.loc[["3", "4"], "runner_up_ratio"] > 0.5).all() and (t.loc[["3", "4"], "runner_up_cell_share"] < 0.1).all()
    assert (t.loc[["3", "4"], "call"] == "monocyte").all() and t.loc["3", "rule"].startswith("markers (runner-up")
    assert t.loc["5", "call"] == UNKNOWN and t.loc["5", "rule"].startswith("unknown: mixed")
    assert not cells.loc[mono, "is_neutrophil"].any()
    assert (cells.loc[mono, "cell_type"].astype(str) == "monocyte").all()


def test_one_dilute_neutrophil_cluster_does_not_make_every_monocyte_cluster_a_mixture():
    """Ten clean neutrophil clusters and one of low-count cells (clean, but half as enriched as the monocytes'
    shared neutrophil markers): the monocyte clusters' runner-up is still below the neutrophil clusters."""
    rng = np.random.default_rng(9)
    spec = [(f"n{i}", "neutrophil", 60, 8.0) for i in range(10)] + [
        ("dilute", "neutrophil", 60, 2.5), ("m0", "monocyte", 200, 8.0), ("m1", "monocyte", 200, 8.0)] + [
        (f"t{i}", "T", 60, 6.0) for i in range(10)]  # fmt: skip
    scores, truth, clusters = _cohort(rng, spec)
    mono = (truth == "monocyte").to_numpy()
    scores.loc[mono, "neutrophil"] += 4.5
    cells, table = annotate_cell_types(scores, clusters)
    t = table.set_index("cluster")
    assert t.loc["dilute", "call"] == "neutrophil" and t.loc["dilute", "winner_effect"] < t.loc["m0", "runner_up_effect"]
    assert (t.loc[["m0", "m1"], "call"] == "monocyte").all()
    assert (cells.loc[mono, "cell_type"].astype(str) == "monocyte").all()


def _monocyte_in_a_neutrophil_cluster():
    """Scores and clusters with a clear monocyte and a neutrophil with almost no evidence in the neutrophil cluster."""
    rng = np.random.default_rng(2)
    spec = [("0", "neutrophil", 400, 1.0), ("1", "monocyte", 300, 4.0), ("2", "T", 300, 4.0)]
    scores, _, clusters = _cohort(rng, spec)
    mono, weak = scores.index[0], scores.index[1]
    scores.loc[mono] = [0.0, 8.0, 0.0]  # a monocyte that landed in the neutrophil cluster
    scores.loc[weak] = [-0.5, 0.5, 0.0]  # a neutrophil with almost no evidence
    return scores, clusters, mono, weak


def test_cells_take_their_cluster_call_by_default_and_a_clear_outlier_says_so_in_its_confidence():
    scores, clusters, mono, weak = _monocyte_in_a_neutrophil_cluster()
    cells, _ = annotate_cell_types(scores, clusters, CellTypeRule(confident_neutrophils=False))
    assert (cells["cell_type_rule"].astype(str) == "cluster").all()  # majority voting: nobody leaves
    assert cells.loc[mono, "cell_type_confidence"] < 0.5 < cells.loc[weak, "cell_type_confidence"]


def test_a_neutrophil_call_needs_the_cells_own_confidence_a_weak_neutrophil_keeps_it():
    """The clear monocyte of the neutrophil cluster is no neutrophil (unknown, rule contested); the neutrophil with
    almost no evidence keeps the call (its cluster's composition carries its posterior); other types' clusters keep
    their calls whatever a cell's own posterior says."""
    scores, clusters, mono, weak = _monocyte_in_a_neutrophil_cluster()
    t_cell = scores.index[(clusters == "2").to_numpy()][0]
    scores.loc[t_cell] = [8.0, 0.0, 0.0]  # a neutrophil-looking cell in the T cluster
    cells, table = annotate_cell_types(scores, clusters)
    assert cells.loc[mono, "cell_type"] == UNKNOWN and cells.loc[mono, "cell_type_rule"] == "contested"
    assert not cells.loc[mono, "is_neutrophil"] and cells.loc[mono, "cell_type_confidence"] == 0
    assert cells.loc[mono, "neutrophil_confidence"] < 0.5
    assert cells.loc[weak, "is_neutrophil"] and cells.loc[weak, "cell_type_rule"] == "cluster"
    assert cells.loc[t_cell, "cell_type"] == "T" and cells.loc[t_cell, "cell_type_rule"] == "cluster"
    contested = cells["cell_type_rule"].astype(str) == "contested"
    assert (cells.loc[contested, "neutrophil_confidence"] < 0.5).all()
    assert contested.sum() <= 3  # per-cell noise in a pure cluster of weak neutrophils contests (almost) nobody
    by_cluster = table.set_index("cluster")["n_contested"]
    assert by_cluster["0"] == contested.sum() and by_cluster[["1", "2"]].sum() == 0


def test_clear_monocyte_in_neutrophil_cluster_is_demoted_with_refine_cells_weak_neutrophils_are_not():
    scores, clusters, mono, weak = _monocyte_in_a_neutrophil_cluster()
    cells, _ = annotate_cell_types(scores, clusters, CellTypeRule(refine_cells=True))
    assert cells.loc[mono, "cell_type"] == "monocyte" and cells.loc[mono, "cell_type_rule"] == "demoted"
    assert not cells.loc[mono, "is_neutrophil"]
    assert cells.loc[weak, "is_neutrophil"] and cells.loc[weak, "cell_type_rule"] == "cluster"
    # per-cell noise in pure clusters relabels (almost) nobody
    assert (cells["cell_type_rule"].astype(str) == "demoted").sum() <= 3


def test_confidence_is_calibrated():
    rng = np.random.default_rng(3)
    # clusters with 15 % contamination by another type and overlapping markers: many calls are wrong
    rows = []
    for k, main in enumerate(["neutrophil", "monocyte", "T"] * 2):
        other = TYPES[(TYPES.index(main) + 1) % 3]
        rows += [(str(k), main, 340, 1.5), (str(k), other, 60, 1.5)]
    scores, truth, clusters = _cohort(rng, rows)
    cells, _ = annotate_cell_types(scores, clusters)
    right = (cells["cell_type"].astype(str) == truth).to_numpy()
    conf = cells["cell_type_confidence"].to_numpy()
    assert 0.8 < right.mean() < 0.98  # not trivial
    assert conf.mean() == pytest.approx(right.mean(), abs=0.05)
    bins = np.digitize(conf, [0.5, 0.8, 0.95])
    ece = sum(
        abs(conf[bins == b].mean() - right[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins)
    )
    assert ece < 0.06
    is_neut = (truth == "neutrophil").to_numpy()
    assert (
        cells["neutrophil_confidence"].to_numpy()[is_neut].mean()
        > cells["neutrophil_confidence"].to_numpy()[~is_neut].mean() + 0.5
    )


def test_no_type_enriched_means_no_neutrophils():
    rng = np.random.default_rng(4)
    scores, _, clusters = _cohort(rng, [("0", "neutrophil", 200, 0.0), ("1", "T", 200, 0.0)])
    cells, table = annotate_cell_types(scores, clusters, rule=CellTypeRule(min_effect=100.0))
    assert (table["call"] == UNKNOWN).all() and not cells["is_neutrophil"].any()
    assert (cells["cell_type_confidence"] == 0).all()


def test_a_cluster_of_a_type_outside_the_panel_stays_unknown_not_given_the_nearest_type():
    # cluster 3: mast cells, whose markers the panel lacks (no type enriched); the posteriors know only the
    # panel's types and would give them to the nearest one with a confidence near 1
    rng = np.random.default_rng(8)
    spec = [("0", "neutrophil", 300, 4.0), ("1", "monocyte", 300, 4.0), ("2", "T", 300, 4.0), ("3", "T", 150, 0.0),
            ("4", "neutrophil", 60, 4.0), ("4", "T", 60, 4.0)]  # fmt: skip
    scores, truth, clusters = _cohort(rng, spec)
    scores.loc[(clusters == "3").to_numpy(), "T"] -= 1.0  # below every type's baseline
    cells, table = annotate_cell_types(scores, clusters)
    by = table.set_index("cluster")
    assert by.loc["3", ["call", "rule"]].tolist() == [UNKNOWN, "unknown: no type enriched"]
    mast = (clusters == "3").to_numpy()
    assert (cells.loc[mast, "cell_type"].astype(str) == UNKNOWN).all()
    assert (cells.loc[mast, "cell_type_confidence"] == 0).all() and not cells.loc[mast, "is_neutrophil"].any()
    # a mixed cluster's cells still take their own clear types
    mixed = (clusters == "4").to_numpy()
    assert by.loc["4", "rule"].startswith("unknown: mixed")
    assert (cells.loc[mixed, "cell_type"].astype(str) == truth[mixed]).mean() > 0.9


def _latent_by_type(rng, truth: pd.Series, spread: float = 0.3) -> np.ndarray:
    """A 2-D latent where each true type is one blob (as scVI places a type's cells together)."""
    centre = {"neutrophil": (0.0, 0.0), "monocyte": (3.0, 0.0), "T": (0.0, 3.0)}
    return np.array([centre[t] for t in truth]) + rng.normal(0, spread, (len(truth), 2))


def _shared_marker_monocytes_in_a_mixed_cluster(seed: int = 11):
    """Cluster 0 mixes clear neutrophils with monocytes whose own evidence leans to neutrophil (the genes they
    share); clean neutrophil, monocyte and T clusters calibrate the marker model."""
    rng = np.random.default_rng(seed)
    spec = [("0", "neutrophil", 100, 4.0), ("0", "monocyte", 200, 2.5), ("1", "neutrophil", 300, 4.0),
            ("2", "monocyte", 300, 4.0), ("3", "T", 300, 4.0)]  # fmt: skip
    scores, truth, clusters = _cohort(rng, spec)
    shared = ((clusters == "0") & (truth == "monocyte")).to_numpy()
    scores.loc[shared, "neutrophil"] += 2.5
    return scores, truth, clusters, shared, _latent_by_type(rng, truth)


def test_a_propagated_call_needs_its_latent_neighbourhood_to_agree():
    from atlas.analyse.celltypes import knn_graph

    scores, truth, clusters, shared, latent = _shared_marker_monocytes_in_a_mixed_cluster()
    alone, table = annotate_cell_types(scores, clusters)
    assert table.set_index("cluster").loc["0", "rule"].startswith("unknown: mixed")
    assert alone.loc[shared, "is_neutrophil"].sum() >= 20  # their own posterior calls many of them neutrophil
    cells, table = annotate_cell_types(scores, clusters, graph=knn_graph(latent, 15))
    assert cells.loc[shared, "is_neutrophil"].sum() <= 10  # their neighbours (monocytes) disagree
    held = int(table.set_index("cluster").loc["0", "n_not_propagated_neighbours"])
    assert held >= alone.loc[shared, "is_neutrophil"].sum() - 10
    unknown = shared & (cells["cell_type"].astype(str) == UNKNOWN).to_numpy()
    assert unknown.sum() >= held and (cells.loc[unknown, "cell_type_confidence"] == 0).all()
    # the mixed cluster's true neutrophils, among neutrophils in the latent, are still propagated
    neut0 = ((clusters == "0") & (truth == "neutrophil")).to_numpy()
    assert cells.loc[neut0, "is_neutrophil"].mean() > 0.95
    assert (cells.loc[neut0, "cell_type_rule"].astype(str) == "propagated").all()
    called = (clusters != "0").to_numpy()  # called clusters are not touched by the check
    assert (cells.loc[called, "cell_type"] == alone.loc[called, "cell_type"]).all()


def test_a_monocyte_pocket_leaves_its_neutrophil_cluster_only_with_its_neighbourhood():
    """Cluster 0 holds 300 neutrophils and 30 monocytes that the latent places with the monocytes; 10 of its
    neutrophils have scores that read as monocyte (one misleading transcript at low depth) but sit among
    neutrophils. Majority voting keeps all 330 neutrophil; with the latent graph the monocytes leave (their own
    posterior and their neighbours' agree), the misread neutrophils stay (their neighbours disagree)."""
    from atlas.analyse.celltypes import knn_graph

    rng = np.random.default_rng(21)
    spec = [("0", "neutrophil", 300, 4.0), ("0", "monocyte", 30, 4.0), ("1", "monocyte", 300, 4.0),
            ("2", "T", 300, 4.0)]  # fmt: skip
    scores, truth, clusters = _cohort(rng, spec)
    misread = np.zeros(len(truth), dtype=bool)
    misread[:10] = True  # the first 10 neutrophils of cluster 0
    scores.loc[misread, ["neutrophil", "monocyte"]] = [0.0, 6.0]
    pocket = ((clusters == "0") & (truth == "monocyte")).to_numpy()
    alone, _ = annotate_cell_types(scores, clusters, CellTypeRule(confident_neutrophils=False))
    assert (alone.loc[pocket | misread, "cell_type"].astype(str) == "neutrophil").all()  # majority voting
    assert (alone.loc[misread, "neutrophil_confidence"] < 0.5).all()  # their own posterior says otherwise
    graph = knn_graph(_latent_by_type(rng, truth), 15)
    cells, _ = annotate_cell_types(scores, clusters, CellTypeRule(confident_neutrophils=False), graph)
    assert (cells.loc[pocket, "cell_type"].astype(str) == "monocyte").mean() > 0.9
    assert (cells.loc[pocket & (cells["cell_type"].astype(str) == "monocyte").to_numpy(), "cell_type_rule"] == "demoted").all()
    assert (cells.loc[misread, "cell_type"].astype(str) == "neutrophil").all()
    other = ~(pocket | misread)
    assert (cells.loc[other, "cell_type"].astype(str) == truth[other]).all()
    # by default a neutrophil call also needs the cell's own confidence: the misread cells are unknown, not monocytes
    gated, _ = annotate_cell_types(scores, clusters, graph=graph)
    assert (gated.loc[misread, "cell_type_rule"].astype(str) == "contested").all()
    assert (gated.loc[misread, "cell_type"].astype(str) == UNKNOWN).all()
    assert (gated.loc[~misread, "cell_type"] == cells.loc[~misread, "cell_type"]).all()

def test_second_pass_keeps_low_rna_neutrophils_of_neutrophil_clusters_only(tmp_path):
    rng = np.random.default_rng(5)
    spec = [("0", "neutrophil", 200, 3.0), ("1", "T", 200, 3.0), ("2", "monocyte", 200, 3.0)]
    scores, truth, clusters = _cohort(rng, spec)
    cells, table = annotate_cell_types(scores, clusters)
    low = np.zeros(len(cells), bool)
    neut_low, t_low = (
        scores.index[0],
        scores.index[250],
    )  # a low-RNA neutrophil, a low-RNA cell of the T cluster
    low[[0, 250]] = True
    atlas = ad.AnnData(obs=pd.DataFrame({"dataset_id": "d1", "qc_low_rna": low}, index=scores.index))
    keep, qc = _second_qc_pass(atlas, None, cells, table)
    assert keep[0] and not keep[250] and keep.sum() == len(keep) - 1
    assert cells.loc[neut_low, "is_neutrophil"] and not cells.loc[t_low, "is_neutrophil"]
    t_row = qc.set_index("cell_type").loc["T"]
    assert t_row["flagged_low_rna"] == 1 and t_row["removed_second_pass"] == 1
    # the flag read from the store's obs when the atlas lacks it; no flag anywhere: everyone passes
    bare = ad.AnnData(obs=atlas.obs[["dataset_id"]].copy())
    atlas.write_h5ad(tmp_path / "store.h5ad")
    keep_store, _ = _second_qc_pass(bare, tmp_path / "store.h5ad", cells.copy(), table)
    assert (keep_store == keep).all()
    bare.write_h5ad(tmp_path / "noflag.h5ad")
    keep_all, _ = _second_qc_pass(bare, tmp_path / "noflag.h5ad", cells.copy(), table)
    assert keep_all.all()


def test_second_pass_leaves_out_the_unlikely_cells_of_a_low_quality_cluster_called_neutrophil():
    rng = np.random.default_rng(6)
    # cluster 3: low-quality cells of two types that clustered together, 70 % neutrophils (called neutrophil)
    spec = [("0", "neutrophil", 200, 3.0), ("1", "T", 200, 3.0), ("2", "monocyte", 200, 3.0),
            ("3", "neutrophil", 70, 3.0), ("3", "T", 30, 3.0)]  # fmt: skip
    scores, truth, clusters = _cohort(rng, spec)
    cells, table = annotate_cell_types(scores, clusters)
    assert table.set_index("cluster").loc["3", "call"] == "neutrophil"
    low = (clusters == "3").to_numpy() | (np.arange(len(clusters)) < 20)  # plus 20 low-RNA cells of cluster 0
    atlas = ad.AnnData(obs=pd.DataFrame({"dataset_id": "d1", "qc_low_rna": low}, index=scores.index))
    before = cells["cell_type"].astype(str).copy()
    keep, qc = _second_qc_pass(atlas, None, cells, table)
    in_3 = (clusters == "3").to_numpy()
    t_cells, neutrophils = in_3 & (truth == "T").to_numpy(), in_3 & (truth == "neutrophil").to_numpy()
    assert keep[:20].all()  # low-RNA cells of a pure neutrophil cluster all stay
    assert keep[t_cells].mean() < 0.2 and keep[neutrophils].mean() > 0.9
    assert not cells.loc[~keep, "is_neutrophil"].any()
    assert table.set_index("cluster").loc["3", "left_out_second_pass"] == (~keep[in_3]).sum()
    # the QC table types a left-out cell by its call before the pass (a neutrophil call it loses counts there)
    by_call = before[~keep].value_counts()
    assert qc.groupby("cell_type")["removed_second_pass"].sum().loc[by_call.index].tolist() == by_call.tolist()
    # without the per-cell check (probability 0 needed) the whole cluster stays
    keep_all, _ = _second_qc_pass(atlas, None, cells.copy(), table, min_confidence=0.0)
    assert keep_all.all()


def test_second_pass_keeps_the_likely_neutrophils_of_an_unknown_cluster_led_by_neutrophil_only():
    rng = np.random.default_rng(7)
    # clusters 3 and 4 have no clear winner; 3 is led by neutrophils (with monocytes), 4 by T cells
    spec = [("0", "neutrophil", 200, 3.0), ("1", "T", 200, 3.0), ("2", "monocyte", 200, 3.0),
            ("3", "neutrophil", 120, 3.0), ("3", "monocyte", 80, 3.0), ("4", "T", 120, 3.0), ("4", "neutrophil", 80, 3.0)]
    scores, truth, clusters = _cohort(rng, spec)
    cells, table = annotate_cell_types(scores, clusters)
    by = table.set_index("cluster")
    assert by.loc["3", ["call", "winner"]].tolist() == [UNKNOWN, "neutrophil"]
    assert by.loc["4", ["call", "winner"]].tolist() == [UNKNOWN, "T"]
    low = clusters.isin(["3", "4"]).to_numpy()  # every cell of the two clusters flagged low-RNA
    atlas = ad.AnnData(obs=pd.DataFrame({"dataset_id": "d1", "qc_low_rna": low}, index=scores.index))
    before = cells["cell_type"].astype(str).copy()
    keep, qc = _second_qc_pass(atlas, None, cells, table)
    left_neut = int((~keep & (before == "neutrophil").to_numpy()).sum())  # the neutrophil calls of cluster 4
    assert left_neut > 0 and qc.set_index("cell_type").loc["neutrophil", "removed_second_pass"] == left_neut
    in_3, in_4 = (clusters == "3").to_numpy(), (clusters == "4").to_numpy()
    neut = (truth == "neutrophil").to_numpy()
    assert keep[in_3 & neut].mean() > 0.9 and keep[in_3 & ~neut].mean() < 0.1
    assert not keep[in_4].any()  # a cluster led by another type keeps none of its low-RNA cells
    assert cells.loc[in_3 & neut, "is_neutrophil"].mean() > 0.9 and not cells.loc[in_4, "is_neutrophil"].any()
    assert table.set_index("cluster")["neutrophil_like"].to_dict() == {"0": True, "1": False, "2": False, "3": True,
                                                                      "4": False}


def test_settings_validate_and_resolution_schedule():
    assert AnalysisSettings().cell_types.resolution == "auto"
    with pytest.raises(ValueError):
        AnalysisSettings.model_validate({"cluster_weight": 0.5})  # the old rule's settings are gone
    with pytest.raises(ValueError):
        AnalysisSettings.model_validate({"cell_types": {"max_runner_up_ratio": 1.5}})
    with pytest.raises(ValueError):
        AnalysisSettings.model_validate({"cell_types": {"resolution": 0}})
    assert auto_resolution(3000) == 5 and auto_resolution(1_000_000) == 30
