"""Accuracy of an analysed run against the simulator's truth (benchmarks and tests only).

The pipeline never reads ``truth_*`` columns; this module is the only place that does, after the
fact, to measure how well neutrophils, states, the reprogramming index, the pseudotime and the
per-cancer T3-like fractions were recovered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["evaluate_run", "supervised_ceiling"]


def _auroc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(score)
    y, score = y[ok], score[ok]
    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")


def supervised_ceiling(latent: np.ndarray, truth: np.ndarray) -> float:
    """How much of ``truth`` (the simulated pseudotime) a latent holds at all: Spearman of a 5-fold
    cross-validated kNN regression of the truth on the latent. It *uses* the truth, so no
    unsupervised pseudotime computed from that latent can be expected to beat it."""
    from scipy.stats import spearmanr
    from sklearn.model_selection import cross_val_predict
    from sklearn.neighbors import KNeighborsRegressor

    truth = np.asarray(truth, dtype=np.float64)
    ok = np.isfinite(truth)
    if ok.sum() < 50:
        return float("nan")
    pred = cross_val_predict(KNeighborsRegressor(15), np.asarray(latent)[ok], truth[ok], cv=5)
    return float(spearmanr(pred, truth[ok]).statistic)


def _supervised_ceiling(rundir: Path) -> float:
    """:func:`supervised_ceiling` of the run's neutrophil sub-atlas latent (NaN without one)."""
    import anndata as ad

    path = rundir / "neutrophils.h5ad"
    if not path.exists():
        return float("nan")
    sub = ad.read_h5ad(path)
    return supervised_ceiling(sub.obsm["X_scVI"], sub.obs["truth_pseudotime"].to_numpy(float))


def evaluate_run(rundir: str | Path) -> dict[str, float | pd.DataFrame]:
    """Figures of issue 5 for a run on simulated data (``RUNDIR/data/truth`` must exist).

    Returns a dict of scalars plus ``"cancer_types"``: per cancer type the estimated tumour T3-like
    fraction with its interval beside the simulated truth.
    """
    import anndata as ad
    from scipy.stats import spearmanr
    from sklearn.metrics import f1_score, precision_score, recall_score

    rundir = Path(rundir)
    obs = ad.read_h5ad(rundir / "atlas.h5ad", backed="r").obs
    truth_type = obs["truth_cell_type"].astype(str).to_numpy()
    is_true = truth_type == "neutrophil"
    called = obs["is_neutrophil"].to_numpy(bool)
    out: dict[str, float | pd.DataFrame] = {
        "n_cells": float(len(obs)),
        "n_true_neutrophils": float(is_true.sum()),
        "n_called_neutrophils": float(called.sum()),
        "neutrophil_precision": float(precision_score(is_true, called, zero_division=0)),
        "neutrophil_recall": float(recall_score(is_true, called, zero_division=0)),
        "cell_type_accuracy": float((obs["cell_type"].astype(str).to_numpy() == truth_type).mean()),
    }
    both = is_true & called
    sub = obs[both]
    t3 = (sub["truth_state"].astype(str) == "T3").to_numpy()
    out["index_auroc_t3"] = _auroc(t3, sub["reprogramming_index"].to_numpy(float))
    out["pseudotime_auroc_t3"] = _auroc(t3, sub["reprogramming_pseudotime"].to_numpy(float))
    truth_state = sub["truth_state"].astype(str).to_numpy()
    pred_state = sub["neutrophil_state"].astype(str).to_numpy()
    labels = sorted(set(truth_state))
    out["state_macro_f1"] = float(
        f1_score(truth_state, pred_state, labels=labels, average="macro", zero_division=0)
    )
    out["state_accuracy"] = float((truth_state == pred_state).mean())
    out["state_unassigned_fraction"] = float((pred_state == "unassigned").mean())
    tp = sub["truth_pseudotime"].to_numpy(float)
    for col, key in (
        ("reprogramming_pseudotime", "pseudotime_spearman"),
        ("reprogramming_index", "index_spearman"),
    ):
        v = sub[col].to_numpy(float)
        ok = np.isfinite(v) & np.isfinite(tp)
        out[key] = float(spearmanr(v[ok], tp[ok]).statistic) if ok.sum() > 2 else float("nan")

    out["pseudotime_spearman_supervised_ceiling"] = _supervised_ceiling(rundir)

    est = pd.read_csv(rundir / "tables" / "cancer_types.csv")
    est = est[est["tissue"] == "tumour"]
    truth = pd.read_csv(rundir / "data" / "truth" / "cancer_types.csv")
    patients = pd.read_csv(rundir / "data" / "truth" / "patients.csv")
    # the mean over this cohort's patients of their realised tumour fractions (what the estimate targets)
    cohort = (
        patients.dropna(subset=["realised_t3_fraction"]).groupby("cancer_type")["realised_t3_fraction"].mean()
    )
    m = truth[["cancer_type", "mean_t3_fraction"]].merge(est, on="cancer_type", how="left")
    m["cohort_t3_fraction"] = m["cancer_type"].map(cohort)
    for col in ("mean_t3_fraction", "cohort_t3_fraction"):
        m[f"{col}_in_interval"] = (m[col] >= m["t3_fraction_lo"]) & (m[col] <= m["t3_fraction_hi"])
    ok = m["t3_fraction"].notna()
    out["cancer_spearman"] = float(
        spearmanr(m.loc[ok, "t3_fraction"], m.loc[ok, "mean_t3_fraction"]).statistic
    )
    out["cancer_spearman_cohort"] = float(
        spearmanr(m.loc[ok, "t3_fraction"], m.loc[ok, "cohort_t3_fraction"]).statistic
    )
    out["n_cancers_truth_in_interval"] = float(m["mean_t3_fraction_in_interval"].sum())
    out["n_cancers_cohort_truth_in_interval"] = float(m["cohort_t3_fraction_in_interval"].sum())
    out["n_cancers"] = float(len(m))
    out["cancer_types"] = m
    return out
