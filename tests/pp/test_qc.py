"""Neutrophil-aware QC: floors, reason order, tallies, doublets."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from atlas.config import QCConfig, QCThresholds
from atlas.pp.qc import QC_REASONS, QCGeneSets, QCTally, detect_doublets, qc_metrics, qc_reasons

GENES = ["ACTB", "CD14", "CSF1R", "CSF3R", "CXCR2", "FCGR3B", "GAPDH", "MT-CO1", "RPL3", "RPS6", "S100A8"]
G = {g: i for i, g in enumerate(GENES)}
QC = QCConfig(
    thresholds=QCThresholds(
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
    score, predicted = detect_doublets(X, samples, min_cells=100, random_state=0)
    assert np.isnan(score[110:]).all() and not predicted[110:].any()
    assert np.isfinite(score[:110]).all()
