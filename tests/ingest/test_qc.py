"""Neutrophil-aware QC: fixed floors, MAD bounds and low-RNA flags, reason order, tallies, second pass, doublets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atlas.ingest.qc import (
    QC_REASONS,
    QCGeneSets,
    QCTally,
    detect_doublets,
    floor_reasons,
    for_gene_panel,
    mad_bounds,
    mad_reasons,
    qc_by_cell_type,
    qc_metrics,
    qc_reasons,
    second_pass_keep,
)
from atlas.ingest.settings import QCConfig, QCThresholds

GENES = ["ACTB", "CD14", "CSF1R", "CSF3R", "CXCR2", "FCGR3B", "GAPDH", "MT-CO1", "RPL3", "RPS6", "S100A8"]
G = {g: i for i, g in enumerate(GENES)}
QC = QCConfig(
    thresholds=QCThresholds(
        mode="fixed",
        min_counts=500,
        min_genes=5,
        max_pct_mito=20,
        neutrophil_min_counts=150,
        neutrophil_min_genes=4,
        max_counts=5000,
    )
)


def _cell(**counts):
    row = np.zeros(len(GENES), dtype=np.float32)
    for g, v in counts.items():
        row[G[g.replace("_", "-")]] = v
    return row


def _run(rows, qc=QC):
    X = sp.csr_matrix(np.vstack(rows))
    sets = QCGeneSets.from_genes(GENES, qc)
    m = qc_metrics(X, sets, min_markers=qc.neutrophil_min_markers, exclusion_max=qc.exclusion_max_markers)
    reason, floor_kept = qc_reasons(m, qc.thresholds)
    return m, reason, floor_kept


def test_metrics():
    m, _, _ = _run([_cell(ACTB=60, MT_CO1=30, RPL3=5, RPS6=5)])
    assert m["total_counts"][0] == 100 and m["n_genes"][0] == 4
    assert m["pct_mito"][0] == pytest.approx(30) and m["pct_ribo"][0] == pytest.approx(10)


def test_neutrophil_floor_keeps_low_umi_neutrophil_only():
    neutrophil = _cell(CSF3R=40, CXCR2=30, FCGR3B=50, S100A8=60, ACTB=20)  # 200 UMI, 5 genes, 4 markers
    other = _cell(ACTB=100, GAPDH=80, RPL3=10, RPS6=5, CD14=5)  # 200 UMI, 5 genes, no markers
    mixed = _cell(CSF3R=40, CXCR2=30, FCGR3B=50, CD14=40, CSF1R=40)  # markers but 2 exclusion markers
    m, reason, floor_kept = _run([neutrophil, other, mixed])
    assert m["neutrophil_evidence"].tolist() == [True, False, False]
    assert reason.tolist() == [0, 1, 1]
    assert floor_kept.tolist() == [True, False, False]


def test_first_failing_reason_in_order():
    assert QC_REASONS[:5] == ("low_counts", "low_genes", "high_counts", "high_genes", "high_mito")
    low_and_mito = _cell(ACTB=50, MT_CO1=100)  # fails low counts, low genes and mito: counted as low_counts
    few_genes = _cell(ACTB=500, GAPDH=500)  # enough counts, too few genes
    high = _cell(ACTB=3000, GAPDH=3000, RPL3=10, RPS6=10, CD14=10)
    mito = _cell(ACTB=300, GAPDH=100, RPL3=50, RPS6=50, MT_CO1=500)
    fine = _cell(ACTB=300, GAPDH=100, RPL3=50, RPS6=50, MT_CO1=50)
    _, reason, _ = _run([low_and_mito, few_genes, high, mito, fine])
    assert reason.tolist() == [1, 2, 3, 5, 0]


def test_tally_counts_and_disabled():
    rows = [
        _cell(ACTB=50),
        _cell(ACTB=500, GAPDH=500),
        _cell(CSF3R=40, CXCR2=30, FCGR3B=50, S100A8=60, ACTB=20),
        _cell(ACTB=300, GAPDH=100, RPL3=50, RPS6=50, MT_CO1=50),
    ]
    m, reason, floor_kept = _run(rows)
    t = QCTally("d", QC.thresholds)
    keep = t.add(m, reason, floor_kept)
    assert keep.tolist() == [False, False, True, True]
    row = t.row()
    assert (
        row["cells_in"],
        row["removed_low_counts"],
        row["removed_low_genes"],
        row["cells_out"],
        row["kept_by_neutrophil_floor"],
        row["min_counts"],
    ) == (4, 1, 1, 2, 1, 500)
    assert t.neutrophil_row()["evidence_cells_in"] == 1 and t.neutrophil_row()["evidence_cells_out"] == 1
    off = QCTally("d", QC.thresholds, enabled=False)
    assert off.add(m, reason, floor_kept).all() and off.row()["cells_out"] == 4


def test_per_dataset_override():
    qc = QCConfig(per_dataset={"x": {"min_counts": 10}})
    assert qc.thresholds_for("x").min_counts == 10 and qc.thresholds_for("y").min_counts == 500


def test_doublets_skip_small_samples():
    pytest.importorskip("skimage")
    rng = np.random.default_rng(0)
    X = sp.csr_matrix(rng.poisson(0.5, (130, 200)).astype(np.float32))
    samples = np.array(["big"] * 110 + ["small"] * 20)
    score, predicted, untrusted = detect_doublets(X, samples, min_cells=100, random_state=0)
    assert np.isnan(score[110:]).all() and not predicted[110:].any()
    assert np.isfinite(score[:110]).all()


# ------------------------------------------------------------------------------------- mad mode
MAD = QCThresholds()  # the defaults: mode mad, floor 50 UMIs / 20 genes, 5/3/3 MADs, 10-20 % mito


def _metrics(counts, genes=None, mito=None, evidence=None) -> pd.DataFrame:
    counts = np.asarray(counts, dtype=np.float64)
    return pd.DataFrame(
        {
            "total_counts": counts.astype(np.float32),
            "n_genes": (counts * 0.4 if genes is None else np.asarray(genes)).astype(np.int32),
            "pct_mito": np.full(len(counts), 3.0, np.float32) if mito is None else np.asarray(mito, np.float32),
            "pct_ribo": np.zeros(len(counts), np.float32),
            "neutrophil_evidence": np.zeros(len(counts), bool) if evidence is None else np.asarray(evidence),
        }
    )


def _lognormal(n, median, sd=0.3, seed=0):
    return np.round(np.exp(np.random.default_rng(seed).normal(np.log(median), sd, n)))


def _mad_run(m: pd.DataFrame, t: QCThresholds = MAD):
    floor = floor_reasons(m, t)
    above = m[floor == 0].reset_index(drop=True)
    b = mad_bounds(above, t)
    reason, low = mad_reasons(above, b)
    full_reason = floor.copy()
    full_reason[floor == 0] = reason
    full_low = np.zeros(len(m), bool)
    full_low[floor == 0] = low
    return b, full_reason, full_low


def test_low_umi_neutrophil_is_flagged_not_removed():
    normal = _lognormal(300, 2500)
    m = _metrics(np.r_[normal, 320, 40], genes=np.r_[normal * 0.4, 150, 30])
    b, reason, low = _mad_run(m)
    assert b.min_counts == 50 and b.low_rna_counts > 320 and b.n_cells_mad == 301
    assert reason[300] == 0 and low[300]  # the 320-UMI neutrophil: kept, flagged
    assert reason[301] == QC_REASONS.index("low_counts") + 1 and not low[301]  # under the floor: removed
    assert not low[:300].any() and (reason[:300] == 0).all()


def test_a_gene_panel_data_set_gets_floors_for_its_share_of_the_genes():
    """A data set whose files hold 2,000 genes: its ~90-UMI, ~25-gene neutrophils pass the scaled floor (they fail
    the whole-transcriptome one), and it has no absolute % mito ceiling (its MAD bound still applies)."""
    t, share = for_gene_panel(MAD, 2_000, 10_000)
    assert share == pytest.approx(0.2) and (t.floor_min_counts, t.floor_min_genes) == (10, 4)
    assert t.max_pct_mito is None and t.min_counts == 100 and t.neutrophil_min_genes == 20
    assert for_gene_panel(MAD, 6_000, 10_000) == (MAD, 1.0)  # a mouse data set without some orthologues
    assert for_gene_panel(MAD, 2_000, 2_000) == (MAD, 1.0)  # every data set a panel: nothing to compare with
    assert for_gene_panel(MAD.model_copy(update={"panel_share": None}), 2_000, 10_000)[1] == 1.0
    cells = _lognormal(300, 600)
    mito = np.random.default_rng(1).normal(25, 1, 303)  # % of the panel's UMIs
    m = _metrics(np.r_[cells, 45, 60, 40], genes=np.r_[cells * 0.3, 15, 18, 12], mito=mito)
    whole, reason, _ = _mad_run(m)
    assert (reason[300:] > 0).all() and whole.max_pct_mito == 20  # below the floor; most cells above 20 %
    panel, reason, low = _mad_run(m, t)
    assert (reason[300:] == 0).all() and low[300:].all()  # kept, flagged for the cluster-level pass
    assert panel.max_pct_mito > 27 and (reason[:300] == 0).mean() > 0.95


def test_mad_bound_adapts_to_depth():
    shallow = _metrics(np.r_[_lognormal(300, 800), 400])
    deep = _metrics(np.r_[_lognormal(300, 6000), 400])
    bs, rs, ls = _mad_run(shallow)
    bd, rd, ld = _mad_run(deep)
    assert bs.low_rna_counts < 400 < bd.low_rna_counts
    assert bs.max_counts < bd.max_counts and bs.median_counts < bd.median_counts
    assert not ls[300] and ld[300] and rs[300] == rd[300] == 0
    row = bd.row()
    assert row["used_low_rna_counts"] == pytest.approx(bd.low_rna_counts) and row["used_max_pct_mito"] == 10


def test_upper_tail_and_mito_outliers_removed():
    n = 300
    rng = np.random.default_rng(1)
    counts = _lognormal(n, 3000, seed=2)
    low_mito = _metrics(np.r_[counts, 3000, 3000, 200_000], mito=np.r_[rng.normal(3, 1, n).clip(0), 15, 8, 3])
    b, reason, _ = _mad_run(low_mito)
    assert b.max_pct_mito == 10  # 3 + 3 MADs < 10: the floor of the mito bound
    high_mito, high_counts = QC_REASONS.index("high_mito") + 1, QC_REASONS.index("high_counts") + 1
    assert reason[n] == high_mito and reason[n + 1] == 0 and reason[n + 2] == high_counts
    # a data set with more mito overall: the bound follows (15 % kept), the 20 % ceiling still holds
    high = _metrics(np.r_[counts, 3000, 3000], mito=np.r_[rng.normal(12, 1.5, n), 15, 25])
    b, reason, _ = _mad_run(high)
    assert 15 < b.max_pct_mito < 20 and reason[n] == 0 and reason[n + 1] == high_mito


def test_mito_bound_allows_for_the_sampling_error_of_small_cells():
    from atlas.ingest.qc import mito_above

    total = np.array([300.0, 300.0, 5000.0, 5000.0, 300.0])
    pct = np.array([17.0, 40.0, 17.0, 9.0, 9.0])
    # 51 of 300 MT- UMIs is no evidence against 15 %; 120 of 300, or 850 of 5,000, is
    assert list(mito_above(total, pct, 15.0, 0.01)) == [False, True, True, False, False]
    assert list(mito_above(total, pct, 15.0, np.nan)) == [True, True, True, False, False]  # the plain cut-off
    # through the MAD rule (bound 10 %): a 300-UMI cell at 12.7 % (38 UMIs) stays, a damaged one goes; None = cut-off
    rng = np.random.default_rng(3)
    counts = np.r_[_lognormal(300, 3000, seed=4), 300, 300]
    m = _metrics(counts, mito=np.r_[rng.normal(5, 1.5, 300).clip(0), 12.7, 45])
    b, reason, _ = _mad_run(m)
    high_mito = QC_REASONS.index("high_mito") + 1
    assert b.max_pct_mito == 10 and b.mito_alpha == 0.01 and reason[300] == 0 and reason[301] == high_mito
    _, reason, _ = _mad_run(m, MAD.model_copy(update={"mito_alpha": None}))
    assert reason[300] == reason[301] == high_mito


def test_few_cells_or_zero_mad_give_no_mad_bound():
    b, reason, low = _mad_run(_metrics([1000, 200, 150]))
    assert np.isnan(b.low_rna_counts) and not low.any() and (reason == 0).all()
    flat = _metrics(np.full(100, 500.0), genes=np.full(100, 200), mito=np.zeros(100))
    b, reason, low = _mad_run(flat)
    assert np.isinf(b.max_counts) and not low.any() and (reason == 0).all()


def test_mode_override_per_dataset():
    qc = QCConfig(per_dataset={"old": {"mode": "fixed"}, "deep": {"nmads_low_rna": 2}})
    assert qc.thresholds_for("old").mode == "fixed" and qc.thresholds_for("x").mode == "mad"
    assert qc.thresholds_for("deep").nmads_low_rna == 2 and qc.thresholds_for("deep").mode == "mad"


def test_tally_mad_row():
    m = _metrics(np.r_[_lognormal(200, 2500), 300, 30], evidence=np.r_[np.zeros(200, bool), True, True])
    t = QCTally("d", MAD)
    keep = t.add(m, floor_reasons(m, MAD))
    kept = m[keep].reset_index(drop=True)
    t.bounds = mad_bounds(kept, MAD)
    reason, low = mad_reasons(kept, t.bounds)
    keep2 = t.add(kept, reason, new_cells=False)
    t.add_low_rna(low[keep2], kept["neutrophil_evidence"].to_numpy()[keep2])
    row = t.row()
    assert (row["cells_in"], row["removed_low_counts"], row["cells_flagged_low_rna"], row["cells_out"]) == (
        202, 1, int(low.sum()), 202 - 1 - int((reason > 0).sum())
    )
    assert row["qc_mode"] == "mad" and row["used_min_counts"] == 50 and row["used_low_rna_counts"] > 300
    nrow = t.neutrophil_row()
    assert (nrow["evidence_cells_in"], nrow["evidence_cells_removed"], nrow["evidence_cells_flagged_low_rna"]) == (
        2, 1, 1
    )
    assert "QC removed every cell of data set d" in t.all_removed_message()


def test_second_pass_keeps_flagged_cells_of_neutrophil_clusters_only():
    low = np.array([False, True, True, False])
    neut = np.array([False, True, False, True])
    assert second_pass_keep(low, neut).tolist() == [True, True, False, True]
    assert second_pass_keep(pd.Series([None, True]), [False, False]).tolist() == [True, False]
    with pytest.raises(ValueError, match="one of each per cell"):
        second_pass_keep(low, neut[:3])


def test_second_pass_needs_a_likely_neutrophil_when_confidences_are_given():
    low = np.array([True, True, True, False, True])
    neut = np.array([True, True, True, True, False])
    conf = np.array([0.9, 0.3, np.nan, 0.1, 0.99])  # unflagged cells stay whatever their confidence
    assert second_pass_keep(low, neut, conf).tolist() == [True, False, False, True, False]
    assert second_pass_keep(low, neut, conf, min_confidence=0.2).tolist() == [True, True, False, True, False]
    with pytest.raises(ValueError, match="confidences"):
        second_pass_keep(low, neut, conf[:4])


def test_qc_by_cell_type():
    obs = pd.DataFrame(
        {
            "dataset_id": ["a", "a", "a", "b", "b"],
            "cell_type": ["neutrophil", "neutrophil", "T", "T", "T"],
            "qc_low_rna": [True, False, True, True, False],
        }
    )
    keep = second_pass_keep(obs["qc_low_rna"], obs["cell_type"] == "neutrophil")
    t = qc_by_cell_type(obs, keep).set_index(["dataset_id", "cell_type"])
    assert t.loc[("a", "neutrophil")].tolist() == [2, 1, 0, 2]
    assert t.loc[("a", "T")].tolist() == [1, 1, 1, 0] and t.loc[("b", "T")].tolist() == [2, 1, 1, 1]
    with pytest.raises(ValueError, match="'cell_type'"):
        qc_by_cell_type(obs.drop(columns="cell_type"), keep)


def test_a_sample_where_scrublets_threshold_calls_most_cells_doublets_keeps_them(monkeypatch, caplog):
    """Scrublet's automatic threshold can fail on a non-bimodal score histogram and call most of a sample
    doublets; such a sample keeps every cell (with a warning), a plausible share is removed as called."""
    import scanpy as sc

    shares = iter([0.05, 0.9])  # sample "ok", then sample "failed"

    def scrublet(a, random_state=0, verbose=False):
        n = a.n_obs
        a.obs["doublet_score"] = np.linspace(0, 1, n)
        a.obs["predicted_doublet"] = np.arange(n) >= round(n * (1 - next(shares)))

    monkeypatch.setattr(sc.pp, "scrublet", scrublet)
    X = sp.csr_matrix(np.ones((400, 5), np.float32))
    samples = np.array(["ok"] * 200 + ["failed"] * 200)
    with caplog.at_level("WARNING", logger="atlas.ingest.qc"):
        score, predicted, untrusted = detect_doublets(X, samples, min_cells=100, dataset_id="d1", max_share=0.25)
    assert untrusted == ["failed"]
    assert predicted[:200].sum() == 10 and not predicted[200:].any()
    assert np.isfinite(score).all()  # the scores stay, for a user who sets a threshold by hand
    assert "d1, sample failed" in caplog.text and "180 of 200" in caplog.text and "doublet_max_share" in caplog.text
    assert QCConfig().doublet_max_share == 0.25
