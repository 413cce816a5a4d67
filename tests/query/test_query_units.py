"""Query building blocks on hand-made data: label transfer, gene overlap, batch names, inputs, versions."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atlas.core.errors import ConfigError, InputDataError
from atlas.integrate.encode import onto_genes
from atlas.integrate.label_transfer import knn_weights, transfer_labels
from atlas.query import QuerySettings
from atlas.query.inputs import dataset_id_from_path, query_ingest_config
from atlas.query.markers import absent_types, novel_cells
from atlas.query.prepare import check_overlap, gene_overlap, rename_batches
from atlas.query.reference import check_versions


def _blobs(centres, n, rng, sd=0.3):
    x = np.vstack([rng.normal(c, sd, (n, len(c))) for c in centres])
    return x, np.repeat(np.arange(len(centres)), n)


def test_knn_weights_rows_sum_to_one_and_favour_near():
    d = np.array([[0.1, 0.5, 2.0], [1.0, 1.0, 1.0]])
    w = knn_weights(d)
    assert np.allclose(w.sum(axis=1), 1)
    assert w[0, 0] > w[0, 1] > w[0, 2]
    assert np.allclose(w[1], 1 / 3)  # equal distances: equal votes


def test_transfer_labels_known_and_absent_types():
    rng = np.random.default_rng(0)
    centres = [np.r_[0, 0, 0, 0], np.r_[4, 0, 0, 0], np.r_[0, 4, 0, 0]]
    ref, lab = _blobs(centres, 300, rng)
    names = np.array(["T", "neutrophil", "B"])[lab]
    known, klab = _blobs(centres, 50, rng)
    absent = rng.normal([0, 0, 5, 0], 0.3, (50, 4))  # a type the reference lacks, nearest to "T"
    q = np.vstack([known, absent])
    umap = np.c_[lab * 10.0, lab * 1.0]
    table, xy = transfer_labels(ref, names, q, k=15, threshold=0.5, ref_umap=umap, calibration_cells=500)
    pred = table["label"].to_numpy()
    assert (pred[:150] == np.array(["T", "neutrophil", "B"])[klab]).mean() > 0.98
    assert (pred[150:] == "unknown").mean() > 0.9
    u = table["uncertainty"].to_numpy()
    assert u[150:].min() > np.quantile(u[:150], 0.95)
    # placement: the neighbours' UMAP coordinates, weighted
    assert np.allclose(xy[:150, 0], klab * 10.0, atol=1e-4)
    # without the distance term the absent cells are confidently (and wrongly) labelled
    t2, _ = transfer_labels(ref, names, q, k=15, threshold=0.5, distance_uncertainty=False)
    assert (t2["label"].to_numpy()[150:] == "unknown").mean() < 0.2


def test_absent_types_are_those_without_a_neighbourhood_of_reference_cells():
    counts = pd.Series({"neutrophil": 500, "T": 300, "B": 14, "unknown": 40})
    assert absent_types(["neutrophil", "T", "B", "NK"], counts, 15) == ["B", "NK"]
    assert absent_types(["neutrophil", "T", "B", "NK"], counts, 1) == ["NK"]


def test_novel_cells_need_an_absent_own_call_with_more_evidence_than_the_transferred_label():
    """A B-called cell is novel when its B evidence beats its evidence for the transferred label; a cell whose
    transferred label has no markers counts as having none; an own call the reference has is never novel."""
    enrich = pd.DataFrame({"B": [3.0, 0.5, 2.0, 4.0, 1.0], "T": [0.2, 1.5, 0.0, 5.0, 0.0],
                           "neutrophil": [0.0, 0.0, 0.1, 0.0, 3.0]})  # fmt: skip
    own = np.array(["B", "B", "B", "T", "neutrophil"])
    transferred = np.array(["T", "T", "unknown", "T", "T"])
    assert novel_cells(own, enrich, transferred, ["B"]).tolist() == [True, False, True, False, False]
    assert not novel_cells(own, enrich, transferred, []).any()
    # an own call of no panel type is novel where the transfer gave a panel type, not where it gave none
    assert novel_cells(np.array(["unknown", "unknown"]), enrich.iloc[:2], np.array(["T", "unknown"]), []).tolist() == [
        True, False]


def test_transfer_vote_uncertainty_between_types():
    rng = np.random.default_rng(1)
    ref, lab = _blobs([np.r_[0.0, 0.0], np.r_[1.0, 0.0]], 200, rng, sd=0.5)
    names = np.array(["a", "b"])[lab]
    table, _ = transfer_labels(ref, names, np.array([[0.5, 0.0], [-1.0, 0.0]]), k=30, distance_uncertainty=False)
    assert table["vote_uncertainty"].iloc[0] > 0.3 > table["vote_uncertainty"].iloc[1]


def _store(genes, datasets, measured=None):
    n = 4 * len(datasets)
    a = ad.AnnData(sp.csr_matrix(np.arange(n * len(genes), dtype=np.float32).reshape(n, len(genes))),
                   obs=pd.DataFrame({"dataset_id": np.repeat(datasets, 4)}, index=[f"c{i}" for i in range(n)]),
                   var=pd.DataFrame(index=genes))  # fmt: skip
    if measured is not None:
        a.varm["measured"] = pd.DataFrame(measured, index=genes, columns=datasets)
    return a


def test_gene_overlap_per_dataset_and_errors():
    hvgs = [f"G{i}" for i in range(10)]
    genes = hvgs[:7] + ["X1"]
    measured = np.ones((8, 2), bool)
    measured[:4, 1] = False  # data set b lacks G0..G3
    store = _store(genes, ["a", "b"], measured)
    per_gene, summary = gene_overlap(store, hvgs)
    s = summary.set_index("dataset_id")
    assert s.loc["a", "n_measured"] == 7 and s.loc["b", "n_measured"] == 3 and s.loc["all", "n_measured"] == 7
    assert s.loc["b", "missing"].split(";")[:4] == ["G0", "G1", "G2", "G3"]
    assert list(per_gene["gene"]) == hvgs and per_gene["measured"].sum() == 7
    with pytest.raises(InputDataError, match=r"'b' measures 3 of the 10 reference HVGs \(30%\)"):
        check_overlap(summary, QuerySettings(), [])
    notes: list[str] = []
    check_overlap(summary, QuerySettings(min_overlap=0.2), notes)
    assert len(notes) == 3 and "below 80%" in notes[0]  # a (70%), b (30%), all (70%) warned


def test_onto_genes_orders_and_zero_fills():
    store = _store(["B", "A", "Z"], ["a"])
    q = onto_genes(store, ["A", "C", "B"])
    X = q.X.toarray()
    src = store.X.toarray()
    assert list(q.var_names) == ["A", "C", "B"] and sp.issparse(q.X)
    assert np.array_equal(X[:, 0], src[:, 1]) and np.array_equal(X[:, 2], src[:, 0]) and not X[:, 1].any()
    assert list(q.var["measured"]) == [True, False, True]


def test_rename_batches_prefixes_collisions(caplog):
    obs = pd.DataFrame({"sample_id": pd.Categorical(["s1", "s1", "new", "query:s1"])})
    with caplog.at_level(logging.WARNING, logger="atlas.query"):
        renames = rename_batches(obs, "sample_id", ["s1", "s2", "query:s1"])
    table = renames.set_index("original")
    assert list(table.index) == ["query:s1", "s1"] and list(table["n_cells"]) == [1, 2]
    # each renamed batch stays distinct from the reference's and from the query's other batches
    assert obs["sample_id"].nunique() == 3 and not set(obs["sample_id"]) & {"s1", "s2", "query:s1"}
    assert table.loc["s1", "renamed"].startswith("query:")
    assert "renamed" in caplog.text


def test_dataset_id_from_path(tmp_path):
    assert dataset_id_from_path(tmp_path / "GSE1 tumour.csv.gz") == "GSE1_tumour"
    assert dataset_id_from_path(tmp_path / "pbmc_10x") == "pbmc_10x"
    assert dataset_id_from_path(tmp_path / "x.h5ad") == "x"


def test_single_file_query_fills_missing_schema_fields(tmp_path):
    X = sp.csr_matrix(np.ones((3, 2), np.float32))
    path = tmp_path / "q.h5ad"
    ad.AnnData(X, obs=pd.DataFrame({"donor": ["p1", "p1", "p2"]}, index=list("abc")),
               var=pd.DataFrame(index=["CSF3R", "CD3E"])).write_h5ad(path)  # fmt: skip
    notes: list[str] = []
    cfg = query_ingest_config(path, notes=notes, obs_columns={"patient_id": "donor"},
                              reference_qc={"thresholds": {"min_counts": 1}})  # fmt: skip
    ds = cfg.datasets[0]
    assert ds.id == "q" and ds.obs_columns == {"patient_id": "donor"}
    assert ds.constants == {"sample_id": "q", "cancer_type": "unknown", "tissue": "tumour", "platform": "unknown"}
    assert cfg.qc.thresholds.min_counts == 1  # the reference's QC when the query gives none
    assert "assumed" in notes[0] and "look like them" not in notes[0]
    ad.AnnData(X, obs=pd.DataFrame({"donor": ["p1", "p1", "p2"], "disease": ["Hepatocellular carcinoma"] * 3},
                                   index=list("abc")), var=pd.DataFrame(index=["CSF3R", "CD3E"])).write_h5ad(path)
    cfg = query_ingest_config(path, notes=(notes := []))  # the columns are named, never used unasked
    assert cfg.datasets[0].constants["cancer_type"] == "unknown"
    assert ("columns that look like them: --obs-column patient_id=donor (its name), --obs-column "
            "cancer_type=disease (its values are cancer types atlas knows)") in notes[0]
    with pytest.raises(ConfigError, match="species"):
        query_ingest_config(path, species="zebrafish")


def test_yaml_query_refuses_single_file_options(tmp_path):
    y = tmp_path / "q.yaml"
    y.write_text("datasets: []\n")
    with pytest.raises(InputDataError, match="single data file"):
        query_ingest_config(y, species="mouse")
    with pytest.raises(InputDataError, match="does not exist"):
        query_ingest_config(tmp_path / "missing.h5ad")


def test_check_versions(tmp_path):
    from importlib import metadata

    from atlas import __version__

    scvi = metadata.version("scvi-tools")
    notes: list[str] = []
    check_versions({"atlas-neutro": __version__, "scvi-tools": scvi}, tmp_path, notes)
    assert notes == []
    with pytest.raises(InputDataError, match=r"written with scvi-tools 0\.20\.3, which is incompatible"):
        check_versions({"atlas-neutro": __version__, "scvi-tools": "0.20.3"}, tmp_path, [])
    with pytest.raises(InputDataError, match="does not record"):
        check_versions({"scvi-tools": scvi}, tmp_path, [])
    major = int(scvi.split(".")[0])
    minor = int(scvi.split(".")[1])
    check_versions({"atlas-neutro": __version__, "scvi-tools": f"{major}.{minor + 1}.0"}, tmp_path, notes)
    assert "mapping with" in notes[0]


def test_settings_validation():
    with pytest.raises(ValueError, match="below min_overlap"):
        QuerySettings(min_overlap=0.9, warn_overlap=0.8)
    with pytest.raises(ValueError):
        QuerySettings(max_epochs=0)


def test_the_example_query_config_is_every_setting_at_its_default():
    """configs/query_example.yaml documents QuerySettings: every field, each at its default."""
    import yaml

    path = Path(__file__).resolve().parents[2] / "configs" / "query_example.yaml"
    section = yaml.safe_load(path.read_text())["query"]
    assert set(section) == set(QuerySettings.model_fields)
    assert QuerySettings(**section) == QuerySettings()


def test_state_uncertainty_threshold_makes_uncertain_calls_unknown():
    """``state_uncertainty_threshold``: own-evidence calls less likely to be right than 1 - threshold become unknown
    (rule ``uncertain``); 1 (the default) changes nothing; cells without a call (NaN) are left alone."""
    from atlas.query.stage import _uncertain_states_unknown

    u = np.array([0.05, 0.3, 0.9, np.nan])
    for threshold, expected in ((1.0, ["T3", "mature", "T3", None]), (0.2, ["T3", "unknown", "unknown", None])):
        state = np.array(["T3", "mature", "T3", None], dtype=object)
        rule = np.array(["cell", "default", "cell", None], dtype=object)
        _uncertain_states_unknown(state, rule, u, threshold, "unknown")
        assert state.tolist() == expected
        assert (rule[np.array(expected, dtype=object) == "unknown"] == "uncertain").all()
