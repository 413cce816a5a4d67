"""map_query / atlas query end to end on a tiny simulated reference, and its refusals of bad input."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atlas.core.errors import InputDataError, RunDirError
from atlas.query import load_reference, map_query


def _sha(path):
    h = hashlib.sha256()
    for f in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        h.update(f.read_bytes())
    return h.hexdigest()


def test_outputs_follow_the_interface(mapped, sim):
    out = mapped.out_dir
    assert {"query.h5ad", "report.html", "tables", "query.json", "store.h5ad", "model"} <= {p.name for p in out.iterdir()}
    q = ad.read_h5ad(out / "query.h5ad")
    for col in ("predicted_cell_type", "predicted_state", "prediction_uncertainty", "reprogramming_index",
                "T3_proxy", "blood_like", "Wu_IFIT1_ISG15"):
        assert col in q.obs, col
    assert q.obsm["X_scVI"].shape == (q.n_obs, 8) and q.obsm["X_umap"].shape == (q.n_obs, 2)
    assert not any(str(k).startswith("_scvi") for k in [*q.obs, *q.obsm, *q.uns])
    u = q.obs["prediction_uncertainty"].to_numpy()
    assert np.all((u >= 0) & (u <= 1))
    pred = q.obs["predicted_cell_type"].astype(str)
    assert ((u > 0.5) == (pred == "unknown")).all()
    neut = (pred == "neutrophil").to_numpy()
    assert q.obs["predicted_state"].notna().to_numpy().tolist() == neut.tolist()
    assert np.isfinite(q.obs["reprogramming_index"].to_numpy()[neut]).all()
    assert np.isnan(q.obs["reprogramming_index"].to_numpy()[~neut]).all()
    # the Ensembl-ID query was harmonised onto the symbol reference: every HVG measured
    overlap = pd.read_csv(out / "tables" / "gene_overlap_summary.csv").set_index("dataset_id")
    assert overlap.loc["all", "fraction"] == 1.0 and q.var_names[0].isupper()
    # known types are transferred (tiny 3-epoch models: a loose bar)
    truth = q.obs["truth_cell_type"].astype(str)
    known = (truth != "B").to_numpy() & (pred != "unknown").to_numpy()
    assert (pred[known] == truth[known]).mean() > 0.75
    assert q.uns["reprogramming_axis"]["up"] == ["T3_proxy"] and q.uns["atlas_scoring"]["method"] == "scanpy"
    for name in ("gene_overlap", "predictions", "cell_type_composition", "state_composition", "reprogramming_index",
                 "batch_renames"):
        assert (out / "tables" / f"{name}.csv").is_file(), name
    idx = pd.read_csv(out / "tables" / "reprogramming_index.csv")
    assert {"query", "reference"} == set(idx["source"]) and idx["reference_percentile"].between(0, 1).all()
    html = (out / "report.html").read_text()
    assert "Query mapped onto the neutrophil atlas" in html and "data:image/png;base64" in html
    summary = json.loads((out / "query.json").read_text())
    assert summary["reference"]["kind"] == "run" and summary["n_cells"] == q.n_obs
    assert not any(p.name.startswith(".atlas-tmp-") for p in out.parent.iterdir())


def test_absent_type_is_more_uncertain(mapped):
    q = ad.read_h5ad(mapped.out_dir / "query.h5ad")
    u = q.obs["prediction_uncertainty"].to_numpy()
    b = (q.obs["truth_cell_type"].astype(str) == "B").to_numpy()
    assert b.sum() > 5 and np.median(u[b]) > np.median(u[~b])


def test_own_markers_check_the_transfer(mapped):
    """Every query cell has its own marker call (the analysis's rule on the query's own clusters, the default rule
    for this truth-annotated reference); a cell marked novel is unknown with marker uncertainty 1; the crosstab of
    transferred and own calls is a table. (Finding the absent B cells: tests/query/test_marker_check.py; this
    query's 17 B cells are one cluster too small for a call.)"""
    out = mapped.out_dir
    q = ad.read_h5ad(out / "query.h5ad").obs
    own, truth = q["marker_cell_type"].astype(str), q["truth_cell_type"].astype(str)
    called = (own != "unknown").to_numpy()
    assert called.mean() > 0.7 and (own[called] == truth[called]).mean() > 0.9
    novel = (q["cell_type_rule"].astype(str) == "novel_type").to_numpy()
    assert (q["predicted_cell_type"].astype(str)[novel] == "unknown").all()
    assert (q["marker_uncertainty"].to_numpy() == novel).all()
    assert set(q["cell_type_rule"].astype(str)) <= {"transfer", "uncertain", "novel_type"}
    table = pd.read_csv(out / "tables" / "marker_check.csv")
    assert {"transferred_cell_type", "marker_cell_type", "cell_type_rule", "n_cells"} <= set(table.columns)
    assert table["n_cells"].sum() == len(q)
    notes = json.loads((out / "query.json").read_text())["notes"]
    assert any("records no cell-type rule" in n for n in notes)


def test_same_seed_same_result(mapped, ref_run, query_cfg, tmp_path, tiny):
    again = map_query(ref_run, query_cfg, tmp_path / "again", report=False, marker_check=False, **tiny)
    a = ad.read_h5ad(mapped.out_dir / "query.h5ad")
    b = ad.read_h5ad(again.out_dir / "query.h5ad")
    assert np.allclose(a.obsm["X_scVI"], b.obsm["X_scVI"], atol=1e-5)
    # without the marker check the transfer's labels stand
    assert "marker_cell_type" not in b.obs and set(b.obs["cell_type_rule"].astype(str)) <= {"transfer", "uncertain"}
    assert (b.obs["predicted_cell_type"] == b.obs["transferred_cell_type"]).to_numpy()[
        b.obs["cell_type_rule"].astype(str).to_numpy() == "transfer"].all()
    assert (a.obs["transferred_cell_type"] == b.obs["transferred_cell_type"]).all()
    assert not (tmp_path / "again" / "report.html").exists()


def test_inputs_are_not_modified_and_out_is_refused(mapped, ref_run, query_cfg, sim, tiny):
    before = {p: _sha(p) for p in (ref_run / "reference", ref_run / "atlas.h5ad", query_cfg.datasets[0].path)}
    with pytest.raises(RunDirError, match="already exists"):
        map_query(ref_run, query_cfg, mapped.out_dir, **tiny)
    with pytest.raises(RunDirError, match="overwrite the reference"):
        map_query(ref_run, query_cfg, ref_run, overwrite=True, **tiny)
    with pytest.raises(RunDirError, match="query input"):
        map_query(ref_run, query_cfg, query_cfg.datasets[0].path.parent, overwrite=True, **tiny)
    assert before == {p: _sha(p) for p in before}


def test_batch_collision_renamed_and_logged(ref_run, sim, tmp_path, capsys):
    """A single-file query (CLI path) whose sample name is a reference batch keeps its own batch."""
    from atlas.cli import main

    ref_batches = load_reference(ref_run).batch_categories
    data = ad.read_h5ad(sim.out_dir / "datasets" / "ds02_HCC.h5ad")
    del data.obs["sample_id"]  # so that --constant sample_id=... applies
    path = tmp_path / "ds02.h5ad"
    data.write_h5ad(path)
    out = tmp_path / "q"
    args = ["query", str(ref_run), str(path), "--out", str(out), "--counts", "layers/counts", "--gene-ids", "ensembl",
            "--obs-column", "patient_id=donor_id", "--obs-column", "tissue=tissue", "--constant",
            f"sample_id={ref_batches[0]}", "--constant", "cancer_type=HCC", "--max-epochs", "2",
            "--batch-size", "512", "--state-method", "knn", "--no-marker-check"]  # fmt: skip
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("query:\n  calibration_cells: 500\n  report: false\n")
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--config", str(cfg), "--constant", "platform=10x_3p"])
    assert exit_.value.code == 0
    printed = capsys.readouterr()
    assert "are also reference batches: renamed" in " ".join(printed.err.split())  # the warning
    assert "note: 1 query sample_id value(s) named like reference batches were renamed" in printed.out
    assert "state_method 'evidence'" not in printed.out  # --state-method knn: the vote, no fallback to announce
    q = ad.read_h5ad(out / "query.h5ad")
    assert "state_rule" not in q.obs and q.obs["predicted_state"].notna().any()
    assert "marker_cell_type" not in q.obs and "records no cell-type rule" not in printed.out  # --no-marker-check
    assert set(q.obs["sample_id"]) == {f"query:{ref_batches[0]}"}
    renames = pd.read_csv(out / "tables" / "batch_renames.csv")
    assert renames.to_dict("records") == [{"column": "sample_id", "original": ref_batches[0],
                                           "renamed": f"query:{ref_batches[0]}", "n_cells": q.n_obs}]  # fmt: skip


def test_bare_bundle_needs_label_key_and_skips_states(ref_run, query_cfg, tmp_path, caplog, tiny):
    with pytest.raises(InputDataError, match="--label-key"):
        load_reference(ref_run / "reference")
    with caplog.at_level(logging.INFO, logger="atlas.query"):
        res = map_query(ref_run / "reference", query_cfg, tmp_path / "b", label_key="leiden", report=False,
                        **tiny)  # fmt: skip
    assert "bare reference bundle" in caplog.text and any("bare" in n for n in res.notes)
    q = ad.read_h5ad(tmp_path / "b" / "query.h5ad")
    assert q.obs["predicted_state"].isna().all() and q.obs["reprogramming_index"].isna().all()
    assert not (tmp_path / "b" / "tables" / "state_composition.csv").exists()


def test_mouse_query_onto_human_reference(ref_run, mouse_cfg, tmp_path, tiny):
    res = map_query(ref_run, mouse_cfg, tmp_path / "m", report=False, **tiny)
    q = ad.read_h5ad(tmp_path / "m" / "query.h5ad")
    assert list(q.var_names) == load_reference(ref_run).hvgs  # human symbols, via one-to-one orthologues
    assert set(q.obs["species"]) == {"mouse"} and res.overlap >= 0.5
    truth, pred = q.obs["truth_cell_type"].astype(str), q.obs["predicted_cell_type"].astype(str)
    known = (truth != "B").to_numpy() & (pred != "unknown").to_numpy()
    assert (pred[known] == truth[known]).mean() > 0.5


def test_scanvi_reference(ref_run, query_cfg, tmp_path, tiny, tiny_integrate):
    """A scANVI bundle: its latent, the kNN labels and scANVI's own predictions."""
    from atlas.integrate import IntegrateSettings, integrate_store

    store = ad.read_h5ad(ref_run / "store.h5ad")
    store.obs["author_label"] = store.obs["truth_cell_type"].astype(str)  # a study's own annotation
    store.write_h5ad(tmp_path / "store.h5ad")
    s = IntegrateSettings(**tiny_integrate, model="scanvi", labels_key="author_label", scanvi_max_epochs=2)
    integrate_store(tmp_path / "store.h5ad", tmp_path / "bundle", s)
    map_query(tmp_path / "bundle", query_cfg, tmp_path / "q", label_key="author_label", report=False, **tiny)
    q = ad.read_h5ad(tmp_path / "q" / "query.h5ad")
    assert np.array_equal(q.obsm["X_scVI"], q.obsm["X_scANVI"])
    assert set(q.obs["scanvi_prediction"].astype(str)) <= set(store.obs["author_label"])
    assert q.obs["scanvi_uncertainty"].between(0, 1).all()
    pred = pd.read_csv(tmp_path / "q" / "tables" / "predictions.csv")
    assert "scanvi_agreement" in pred


def test_scarches_architecture_reference_adapts_the_query_latent(ref_run, query_cfg, tmp_path, tiny, tiny_integrate):
    """A reference built for scArches (batch fed to the encoder): query training moves the query's latent."""
    from atlas.integrate import IntegrateSettings, integrate_store

    s = IntegrateSettings(**tiny_integrate, scarches_architecture=True)
    integrate_store(ref_run / "store.h5ad", tmp_path / "bundle", s)
    latents = []
    for epochs in (1, 4):
        out = tmp_path / f"q{epochs}"
        map_query(tmp_path / "bundle", query_cfg, out, label_key="leiden", report=False,
                  **{**tiny, "max_epochs": epochs})  # fmt: skip
        latents.append(ad.read_h5ad(out / "query.h5ad").obsm["X_scVI"])
    assert latents[0].shape == latents[1].shape and not np.allclose(latents[0], latents[1])


# ------------------------------------------------------------------------------------------- bad input
def test_missing_bundle_file(run_copy, query_cfg, tmp_path):
    (run_copy / "reference" / "hvg.txt").unlink()
    with pytest.raises(InputDataError, match=r"missing hvg\.txt"):
        map_query(run_copy, query_cfg, tmp_path / "o")
    shutil.rmtree(run_copy / "reference" / "model")
    with pytest.raises(InputDataError, match=r"model/model\.pt, hvg\.txt"):
        map_query(run_copy, query_cfg, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_incompatible_versions(run_copy, query_cfg, tmp_path):
    path = run_copy / "reference" / "versions.json"
    versions = json.loads(path.read_text())
    path.write_text(json.dumps({**versions, "scvi-tools": "0.19.0"}))
    with pytest.raises(InputDataError, match=r"scvi-tools 0\.19\.0, which is incompatible"):
        map_query(run_copy, query_cfg, tmp_path / "o")
    path.write_text(json.dumps({**versions, "atlas-neutro": "7.0.0"}))
    with pytest.raises(InputDataError, match=r"atlas-neutro 7\.0\.0, which is incompatible"):
        map_query(run_copy, query_cfg, tmp_path / "o")
    path.write_text("{not json")
    with pytest.raises(InputDataError, match="not readable JSON"):
        map_query(run_copy, query_cfg, tmp_path / "o")


def test_inconsistent_bundle(run_copy, query_cfg, tmp_path):
    hvg = run_copy / "reference" / "hvg.txt"
    hvg.write_text("\n".join(reversed(hvg.read_text().split())) + "\n")
    with pytest.raises(InputDataError, match="mixes files of two builds"):
        map_query(run_copy, query_cfg, tmp_path / "o")


def _query_h5ad(path, X, genes, n=60):
    obs = pd.DataFrame({"sample_id": "s", "patient_id": "p", "cancer_type": "CRC", "tissue": "tumour",
                        "platform": "10x_3p"}, index=[f"c{i}" for i in range(n)])  # fmt: skip
    ad.AnnData(sp.csr_matrix(X, dtype=np.float32), obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(path)
    return path


def test_low_overlap_is_an_error_naming_the_counts(ref_run, tmp_path, tiny):
    hvgs = load_reference(ref_run).hvgs
    genes = hvgs[:100] + [f"NOTAGENE{i}" for i in range(20)]
    X = np.random.default_rng(0).poisson(3.0, (60, len(genes)))
    path = _query_h5ad(tmp_path / "few.h5ad", X, genes)
    with pytest.raises(InputDataError, match=r"measures 100 of the 400 reference HVGs \(25%\).*min_overlap = 50%"):
        map_query(ref_run, path, tmp_path / "o", min_overlap=0.5, **tiny)
    assert not (tmp_path / "o").exists()


def test_normalised_query_is_refused(ref_run, tmp_path, tiny):
    hvgs = load_reference(ref_run).hvgs
    X = np.log1p(np.random.default_rng(0).poisson(3.0, (60, len(hvgs))) * 1.7)
    path = _query_h5ad(tmp_path / "norm.h5ad", X, hvgs)
    with pytest.raises(InputDataError, match="raw counts"):
        map_query(ref_run, path, tmp_path / "o", **tiny)
    assert not (tmp_path / "o").exists()


def test_cli_error_exits_2(ref_run, tmp_path, capsys):
    from atlas.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["query", str(tmp_path / "nowhere"), str(tmp_path / "q.h5ad"), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_states_fall_back_to_the_vote_when_the_reference_records_no_cuts(mapped):
    """The session's reference is annotated from the ground truth (no analysis, no state cuts): the default
    ``state_method: evidence`` says so and keeps the nearest reference neutrophils' vote."""
    notes = json.loads((mapped.out_dir / "query.json").read_text())["notes"]
    assert any("state_method 'evidence'" in n and "cell_cuts" in n for n in notes)
    q = ad.read_h5ad(mapped.out_dir / "query.h5ad", backed="r")
    assert "predicted_state_knn" not in q.obs and "state_rule" not in q.obs


def test_evidence_states_call_the_query_at_the_references_cuts(run_copy, query_cfg, tiny, tmp_path):
    """A reference whose analysis recorded its state rule: each query neutrophil is called from its own T3_proxy
    score in the reference's units at the reference's cut (above: T3; below: the default state), the vote kept
    beside it; other cells get no state."""
    path = run_copy / "atlas.h5ad"
    atlas = ad.read_h5ad(path)
    loc, scale, cut = 0.05, 0.5, 0.4  # T3 above 0.05 + 0.4 x 0.5 = 0.25 on the query's own T3_proxy score
    atlas.uns["state_rule"] = {"cell_cuts": {"T3": cut, "mature": float("nan")}, "z_loc": {"T3": loc, "mature": 0.0},
                               "z_scale": {"T3": scale, "mature": 1.0}, "default_state_used": "mature",
                               "signatures_read": {"T3": ["T3_proxy"], "mature": ["blood_like"]}, "state_min_margin": 0.25,
                               "reliability": {"T3": 0.8, "mature": 0.1}, "true_score_cuts": {"T3": 0.3, "mature": float("nan")}}
    atlas.write_h5ad(path)
    out = map_query(run_copy, query_cfg, tmp_path / "q", **tiny).out_dir
    q = ad.read_h5ad(out / "query.h5ad").obs
    neut = (q["predicted_cell_type"].astype(str) == "neutrophil").to_numpy()
    expected = np.where(q["T3_proxy"].to_numpy() >= loc + cut * scale, "T3", "mature")
    assert neut.any() and q["predicted_state"].astype(str).to_numpy()[neut].tolist() == expected[neut].tolist()
    assert 0 < (expected[neut] == "T3").sum() < neut.sum()
    assert q["predicted_state"].isna().to_numpy()[~neut].all() and q["predicted_state_knn"].notna().to_numpy()[neut].all()
    assert set(q["state_rule"].astype(str)[neut]) <= {"cell", "default"}
    # uncertainty = 1 - the calibrated confidence, read with the reference's reliability and true-score cut
    from scipy.special import ndtr

    p_t3 = ndtr((0.8 * (q["T3_proxy"].to_numpy()[neut] - loc) / scale - 0.3) / np.sqrt(0.8 * 0.2))
    np.testing.assert_allclose(q["state_uncertainty"].to_numpy()[neut], 1 - np.where(expected[neut] == "T3", p_t3, 1 - p_t3))
    assert "own state evidence" in (out / "report.html").read_text()


def test_a_covariate_named_otherwise_takes_the_reference_models_spelling(ref_run):
    """A reference ingested before atlas had platform labels (``10x_3p``) meets a query ingested after (``10x 3'``)."""
    import dataclasses

    from atlas.query.prepare import prepare_query

    ref = load_reference(ref_run)
    cats = ref.covariate_categories["platform"]
    assert "10x 3'" in cats and "Smart-seq2" in cats  # the reference was ingested with atlas's labels
    old = dataclasses.replace(ref, covariate_categories={"platform": ["10x_3p" if c == "10x 3'" else c for c in cats]})
    platforms = ["10x 3'", "10x 3'", "Smart-seq2", "MARS-seq"]
    obs = pd.DataFrame({"sample_id": "s", "patient_id": "p", "cancer_type": "CRC", "tissue": "tumour",
                        "platform": platforms}, index=[f"c{i}" for i in range(4)])  # fmt: skip
    q = ad.AnnData(sp.csr_matrix(np.ones((4, len(ref.hvgs)), dtype=np.float32)), obs=obs,
                   var=pd.DataFrame(index=ref.hvgs))
    notes: list[str] = []
    prepared, _ = prepare_query(q, old, notes)
    assert list(prepared.obs["platform"].astype(str)) == ["10x_3p", "10x_3p", "Smart-seq2", "MARS-seq"]
    assert "query platform \"10x 3'\" read as the reference's '10x_3p'" in notes
    prepare_query(q, ref, notes := [])
    assert not any("read as the reference" in n for n in notes)
