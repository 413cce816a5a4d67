"""Accuracy of an analysed run against the simulator's truth (benchmarks and tests only).

The pipeline never reads ``truth_*`` columns; this module is the only place that does, after the
fact, to measure how well neutrophils, states, the reprogramming index, the pseudotime and the
per-cancer T3-like fractions were recovered.

:func:`evaluate_run` gives the issue-5 figures of one run; :func:`evaluate_robustness` the issue-12
figures (QC losses against the simulated *input*, cell-type accuracy and calibration, scVI vs Harmony,
index vs T3_proxy alone) and :func:`evaluate_peer` the same figures, where defined, for a naive
scanpy analysis of the same files. The metric functions (:func:`reliability_table`,
:func:`expected_calibration_error`, :func:`detection_figures`, ...) work on plain frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.layout import RunLayout

__all__ = [
    "CELL_TYPES",
    "cancer_figures",
    "cell_type_figures",
    "detection_figures",
    "evaluate_peer",
    "evaluate_robustness",
    "evaluate_run",
    "expected_calibration_error",
    "input_truth",
    "integration_figures",
    "reliability_table",
    "supervised_ceiling",
]

#: The simulator's nine cell types (cell-type accuracy is measured over cells of these types).
CELL_TYPES = ("neutrophil", "monocyte", "macrophage", "T", "B", "NK", "tumour_epithelial", "fibroblast",
              "endothelial")  # fmt: skip
#: ``truth_cell_type`` of a heterotypic doublet (``scripts/independent_cohort.py --doublet-rate``; pair in
#: ``truth_doublet``): not a cell of any type, so a neutrophil call on it counts against precision
DOUBLET = "doublet"


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

    path = RunLayout(rundir).neutrophils
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
    lay = RunLayout(rundir)
    obs = ad.read_h5ad(lay.atlas, backed="r").obs
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

    est = pd.read_csv(lay.table("cancer_types"))
    est = est[est["tissue"] == "tumour"]
    truth = pd.read_csv(lay.truth / "cancer_types.csv")
    patients = pd.read_csv(lay.truth / "patients.csv")
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


# ------------------------------------------------------------------------------ issue 12: robustness
def reliability_table(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table of a confidence: equal-width bins over [0, 1].

    Parameters
    ----------
    confidence
        Predicted confidence per cell, in [0, 1] (NaN cells are left out).
    correct
        Whether each cell's call was right.
    n_bins
        Number of equal-width bins; the last one includes 1.0.

    Returns
    -------
    One row per bin: ``bin_lo``, ``bin_hi``, ``n_cells``, ``mean_confidence``, ``accuracy`` (NaN for
    empty bins).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.isfinite(conf)
    conf, corr = np.clip(conf[ok], 0.0, 1.0), np.asarray(correct, dtype=bool)[ok]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.minimum(np.searchsorted(edges, conf, side="right") - 1, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = idx == b
        rows.append({"bin_lo": edges[b], "bin_hi": edges[b + 1], "n_cells": int(m.sum()),
                     "mean_confidence": float(conf[m].mean()) if m.any() else np.nan,
                     "accuracy": float(corr[m].mean()) if m.any() else np.nan})  # fmt: skip
    return pd.DataFrame(rows)


def expected_calibration_error(table: pd.DataFrame) -> float:
    """Expected calibration error of a :func:`reliability_table`.

    The cell-weighted mean over bins of ``|accuracy - mean_confidence|``: 0 for a perfectly calibrated
    confidence, up to 1. NaN when the table holds no cells.
    """
    n = table["n_cells"].to_numpy(dtype=np.float64)
    if n.sum() == 0:
        return float("nan")
    gap = np.abs(table["accuracy"].to_numpy(float) - table["mean_confidence"].to_numpy(float))
    return float(np.nansum(n * gap) / n.sum())


def _read_obs(path: Path, fmt: str, obs_path: Path | None) -> pd.DataFrame:
    """The cell metadata of one simulated data set (its metadata csv, else the h5ad's obs)."""
    import anndata as ad

    if obs_path is not None:
        return pd.read_csv(obs_path, index_col=0)
    if fmt == "h5ad" or path.suffix == ".h5ad":
        return ad.read_h5ad(path, backed="r").obs.copy()
    raise ValueError(
        f"{path}: no obs_path in ingest.yaml and not an h5ad file; cannot read its truth columns"
    )


def input_truth(sim_dir: str | Path) -> pd.DataFrame:
    """Per-cell truth of every simulated input file, before any QC.

    Parameters
    ----------
    sim_dir
        The simulator's output folder (``RUNDIR/data``: ``ingest.yaml``, ``datasets/``, ``truth/``).

    Returns
    -------
    One row per input cell, indexed like the ingested store (``<dataset id>:<barcode>``), with
    ``dataset_id``, ``platform`` (the simulated one, from ``truth/patients.csv``), ``droplet`` and the
    file's ``truth_*`` columns.
    """
    from ..ingest.settings import load_ingest_config
    from .biology import PLATFORMS

    sim_dir = Path(sim_dir)
    cfg = load_ingest_config(sim_dir / "ingest.yaml")
    patients = pd.read_csv(sim_dir / "truth" / "patients.csv")
    platform = patients.drop_duplicates("dataset").set_index("dataset")["platform"]
    frames = []
    for d in cfg.datasets:
        obs = _read_obs(Path(d.path), d.format, Path(d.obs_path) if d.obs_path else None)
        truth = obs[[c for c in obs.columns if str(c).startswith("truth_")]].copy()
        truth.index = [f"{d.id}:{b}" for b in obs.index.astype(str)]
        truth.insert(0, "dataset_id", d.id)
        truth.insert(1, "platform", platform.get(d.id, "unknown"))
        frames.append(truth)
    out = pd.concat(frames)
    out["droplet"] = out["platform"].map(lambda p: p in PLATFORMS and PLATFORMS[p].droplet).astype(bool)
    for c in ("truth_cell_type", "truth_state", "truth_quality"):
        if c in out:
            out[c] = out[c].astype(str).replace("nan", "")
    return out


def detection_figures(
    truth_input: pd.DataFrame, obs: pd.DataFrame, called: np.ndarray | None
) -> dict[str, float]:
    """Neutrophils kept by QC and neutrophil precision / recall against the whole input.

    Parameters
    ----------
    truth_input
        :func:`input_truth` (every input cell).
    obs
        The analysed cells (index = cell names as in ``truth_input``) with ``truth_cell_type``; cells
        with ``passed_qc`` False (when that column exists) count as removed.
    called
        Boolean neutrophil call per row of ``obs`` (None: no call, only the QC figures).

    Returns
    -------
    ``neutrophils_kept`` (true input neutrophils analysed and passing QC / all true input neutrophils),
    ``neutrophils_kept_droplet`` (the same on droplet platforms), ``neutrophils_kept_ok`` (over the
    input neutrophils the simulator did not damage), and with ``called`` ``neutrophil_precision`` and
    ``neutrophil_recall`` (over *all* true input neutrophils, so QC losses count; with the simulator's
    ``truth_quality`` also ``neutrophil_recall_ok``, over the undamaged ones).
    """
    passed = obs["passed_qc"].to_numpy(bool) if "passed_qc" in obs else np.ones(len(obs), bool)
    is_true = (obs["truth_cell_type"].astype(str) == "neutrophil").to_numpy()
    kept = pd.Index(obs.index[is_true & passed])
    t_neut = truth_input[truth_input["truth_cell_type"] == "neutrophil"]
    out = {"n_input_neutrophils": float(len(t_neut))}

    ok = t_neut[t_neut["truth_quality"] == "ok"] if "truth_quality" in t_neut else None  # undamaged

    def share(sub: pd.DataFrame, found: pd.Index = kept) -> float:
        return float(sub.index.isin(found).mean()) if len(sub) else float("nan")

    out["neutrophils_kept"] = share(t_neut)
    out["neutrophils_kept_droplet"] = share(t_neut[t_neut["droplet"]])
    if ok is not None:
        out["neutrophils_kept_ok"] = share(ok)
    if called is not None:
        called = np.asarray(called, dtype=bool) & passed
        tp = float((called & is_true).sum())
        out["neutrophil_precision"] = tp / called.sum() if called.any() else float("nan")
        out["neutrophil_recall"] = tp / len(t_neut) if len(t_neut) else float("nan")
        if ok is not None:
            out["neutrophil_recall_ok"] = share(ok, pd.Index(obs.index[called & is_true]))
    out.update(doublet_figures(truth_input, obs, called, passed))
    return out


def doublet_figures(truth_input: pd.DataFrame, obs: pd.DataFrame, called: np.ndarray | None,
                    passed: np.ndarray) -> dict[str, float]:  # fmt: skip
    """What became of the input's doublets (``truth_cell_type`` :data:`DOUBLET`; none: no figures).

    ``doublets_removed``: input doublets not analysed or failing QC; with a neutrophil call
    ``neutrophil_calls_doublet_share`` (doublets among the passing neutrophil calls) and
    ``neutrophil_doublets_called_neutrophil`` (of the passing doublets with a neutrophil in them).
    """
    dbl_in = truth_input.index[truth_input["truth_cell_type"].astype(str) == DOUBLET]
    if not len(dbl_in):
        return {}
    is_dbl = (obs["truth_cell_type"].astype(str) == DOUBLET).to_numpy()
    out = {"doublets_removed": 1 - float(dbl_in.isin(obs.index[is_dbl & passed]).mean())}
    if called is None:
        return out
    called = np.asarray(called, dtype=bool) & passed
    out["neutrophil_calls_doublet_share"] = float(is_dbl[called].mean()) if called.any() else float("nan")
    pair = obs["truth_doublet"].astype(str) if "truth_doublet" in obs else pd.Series("", index=obs.index)
    with_neut = is_dbl & passed & pair.str.contains("neutrophil").to_numpy()
    out["neutrophil_doublets_called_neutrophil"] = float(called[with_neut].mean()) if with_neut.any() else float("nan")
    return out


def qc_audit_figures(removed: pd.DataFrame, truth_input: pd.DataFrame) -> dict[str, float]:
    """How well the analysis typed the cells QC removed at ingest (``tables/qc_removed_cells.csv``).

    ``removed_cells``; ``removed_audit_accuracy`` (label = true type, over removed cells of the nine types; unknown
    counts wrong) and ``removed_audit_accuracy_labelled`` (over those not labelled unknown);
    ``removed_audit_unknown_share``; ``removed_neutrophils`` (true neutrophils among them),
    ``removed_neutrophils_audited`` (cells labelled neutrophil) and the precision and recall of that label
    (``removed_neutrophil_audit_precision`` / ``_recall``). No table (audit off): no figures.
    """
    if removed is None or "cell" not in removed:
        return {}
    truth = truth_input["truth_cell_type"].astype(str).reindex(removed["cell"].astype(str)).to_numpy()
    label = removed["cell_type"].astype(str).to_numpy()
    typed = np.isin(truth, CELL_TYPES)
    out = {"removed_cells": float(len(removed)), "removed_neutrophils": float((truth == "neutrophil").sum()),
           "removed_neutrophils_audited": float((label == "neutrophil").sum())}  # fmt: skip
    nan = float("nan")
    out["removed_audit_accuracy"] = float((label[typed] == truth[typed]).mean()) if typed.any() else nan
    shown = typed & (label != "unknown")
    out["removed_audit_accuracy_labelled"] = float((label[shown] == truth[shown]).mean()) if shown.any() else nan
    out["removed_audit_unknown_share"] = float((label == "unknown").mean()) if len(label) else nan
    tp = float(((label == "neutrophil") & (truth == "neutrophil")).sum())
    out["removed_neutrophil_audit_precision"] = tp / out["removed_neutrophils_audited"] if tp else nan
    out["removed_neutrophil_audit_recall"] = tp / out["removed_neutrophils"] if out["removed_neutrophils"] else nan
    return out


def cell_type_figures(truth: np.ndarray, pred: np.ndarray, confidence: np.ndarray | None = None,
                      n_bins: int = 10) -> tuple[dict[str, float], pd.DataFrame | None]:  # fmt: skip
    """Cell-type accuracy over the nine simulated types, the share called unknown, and calibration.

    Parameters
    ----------
    truth, pred
        True and called cell type per cell; cells whose truth is not one of :data:`CELL_TYPES` are
        left out; a call of ``unknown`` (or anything not a type) counts as wrong.
    confidence
        The call's confidence per cell (``cell_type_confidence``), or None.
    n_bins
        Bins of the reliability table.

    Returns
    -------
    ``(figures, reliability)``: figures ``cell_type_accuracy``, ``cell_type_unknown_share``,
    ``outside_panel_unknown_share`` (of the cells of other types, e.g. mast cells, doublets left out: the share
    called ``unknown``, the only right call for a caller that knows the nine; NaN without such cells) and, with a
    confidence,
    ``cell_type_ece``; the :func:`reliability_table` (None without a confidence).
    """
    truth, pred = np.asarray(truth).astype(str), np.asarray(pred).astype(str)
    m = np.isin(truth, CELL_TYPES)
    outside = ~m & ~np.isin(truth, ("nan", "", DOUBLET))
    correct = truth[m] == pred[m]
    out = {"cell_type_accuracy": float(correct.mean()) if m.any() else float("nan"),
           "cell_type_unknown_share": float((pred[m] == "unknown").mean()) if m.any() else float("nan"),
           "outside_panel_unknown_share": float((pred[outside] == "unknown").mean()) if outside.any() else float("nan")}  # fmt: skip
    if confidence is None:
        return out, None
    table = reliability_table(np.asarray(confidence, dtype=np.float64)[m], correct, n_bins)
    out["cell_type_ece"] = expected_calibration_error(table)
    return out, table


def integration_figures(metrics: pd.DataFrame) -> dict[str, float]:
    """Batch correction and iLISI of scVI, Harmony and the unintegrated PCA from ``reference/metrics.csv``.

    ``metrics`` has one row per embedding (column ``embedding``: ``X_scVI``, ``X_harmony``,
    ``X_pca``; or ``method`` with the display names) and, when several batch keys were scored, a
    ``batch_key`` column: the first key listed is used (``dataset_id`` in the default settings).
    Missing embeddings or columns give NaN.
    """
    df = metrics.copy()
    if "batch_key" in df and df["batch_key"].nunique() > 1:
        df = df[df["batch_key"] == df["batch_key"].iloc[0]]
    key = "embedding" if "embedding" in df else "method"
    if key not in df:
        df = pd.DataFrame({key: []})
    names = {
        "scvi": ("X_scVI", "scVI"),
        "harmony": ("X_harmony", "Harmony"),
        "pca": ("X_pca", "Unintegrated (PCA)"),
    }
    out = {}
    for short, aliases in names.items():
        row = df[df[key].astype(str).isin(aliases)]
        for col, fig in (("Batch correction", "batch_correction"), ("iLISI", "ilisi")):
            ok = not row.empty and col in row
            out[f"{fig}_{short}"] = float(row[col].iloc[0]) if ok else float("nan")
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).statistic)


def cancer_figures(estimate: pd.DataFrame, truth: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """Per-cancer tumour T3-like fraction against the simulated truth.

    Parameters
    ----------
    estimate
        One row per cancer type: ``cancer_type``, ``t3_fraction`` and optionally ``t3_fraction_lo`` /
        ``t3_fraction_hi`` (tumour rows of ``tables/cancer_types.csv``; a peer's score means).
    truth
        ``data/truth/cancer_types.csv``: ``cancer_type``, ``mean_t3_fraction``.

    Returns
    -------
    ``(figures, table)``: ``cancer_spearman`` (estimate vs ``mean_t3_fraction`` over the cancers
    reported), ``n_cancers``, ``n_cancers_reported`` and, with an interval, ``n_cancers_in_interval``
    (NaN without one) and ``n_cancers_in_interval_single_patient`` (of those, the intervals of one patient,
    which rest on the hierarchical model's prior); the merged table.
    """
    m = truth[["cancer_type", "mean_t3_fraction"]].merge(estimate, on="cancer_type", how="left")
    rep = m["t3_fraction"].notna()
    out = {"cancer_spearman": _spearman(m.loc[rep, "t3_fraction"], m.loc[rep, "mean_t3_fraction"]),
           "n_cancers": float(len(m)), "n_cancers_reported": float(rep.sum())}  # fmt: skip
    if {"t3_fraction_lo", "t3_fraction_hi"} <= set(m.columns):
        inside = (m["mean_t3_fraction"] >= m["t3_fraction_lo"]) & (
            m["mean_t3_fraction"] <= m["t3_fraction_hi"]
        )
        m["truth_in_interval"] = inside
        out["n_cancers_in_interval"] = float(inside.sum())
        # of those, intervals resting on one patient (the hierarchical model's prior on how patients differ)
        note = m["note"].fillna("").astype(str) if "note" in m else pd.Series("", index=m.index)
        one = note.str.startswith("single patient") | note.str.contains(r"\bof 1 patient\(s\)")
        out["n_cancers_in_interval_single_patient"] = float((inside & one).sum())
    else:
        out["n_cancers_in_interval"] = float("nan")
    return out, m


def _state_f1(truth_state: np.ndarray, pred_state: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    labels = sorted(set(truth_state))
    if not labels:
        return float("nan")
    return float(f1_score(truth_state, pred_state, labels=labels, average="macro", zero_division=0))


def evaluate_robustness(rundir: str | Path, truth_input: pd.DataFrame | None = None) -> dict:
    """Issue-12 figures of one analysed run on simulated data.

    Parameters
    ----------
    rundir
        A finished ``atlas run`` directory with the simulator's ``data/`` (``truth/``, ``ingest.yaml``).
    truth_input
        :func:`input_truth` of ``RUNDIR/data`` if already read.

    Returns
    -------
    A dict of float figures (see :func:`detection_figures`, :func:`cell_type_figures`,
    :func:`integration_figures`, :func:`cancer_figures`; plus ``index_auroc_t3``,
    ``t3_proxy_auroc_t3``, ``state_macro_f1``, ``state_ece`` (of ``neutrophil_state_confidence``),
    ``pseudotime_spearman``) and the frames
    ``"reliability"`` and ``"cancer_types"``.
    """
    import anndata as ad

    lay = RunLayout(rundir)
    if truth_input is None:
        truth_input = input_truth(lay.data)
    obs = ad.read_h5ad(lay.atlas, backed="r").obs
    passed = obs["passed_qc"].to_numpy(bool) if "passed_qc" in obs else np.ones(len(obs), bool)
    called = obs["is_neutrophil"].to_numpy(bool)
    out: dict = {"n_cells": float(passed.sum())}
    out.update(detection_figures(truth_input, obs, called))
    q = obs[passed]
    ct, reliability = cell_type_figures(q["truth_cell_type"].to_numpy(), q["cell_type"].to_numpy(),
                                        q["cell_type_confidence"].to_numpy(float))  # fmt: skip
    out.update(ct)
    removed = lay.table("qc_removed_cells")
    out.update(qc_audit_figures(pd.read_csv(removed) if removed.exists() else None, truth_input))
    metrics = lay.reference_metrics
    out.update(integration_figures(pd.read_csv(metrics) if metrics.exists() else pd.DataFrame()))

    sub = q[(q["truth_cell_type"].astype(str) == "neutrophil").to_numpy() & q["is_neutrophil"].to_numpy(bool)]
    t3 = (sub["truth_state"].astype(str) == "T3").to_numpy()
    out["index_auroc_t3"] = _auroc(t3, sub["reprogramming_index"].to_numpy(float))
    out["t3_proxy_auroc_t3"] = (_auroc(t3, sub["T3_proxy"].to_numpy(float)) if "T3_proxy" in sub
                                else float("nan"))  # fmt: skip
    out["state_macro_f1"] = _state_f1(sub["truth_state"].astype(str).to_numpy(),
                                      sub["neutrophil_state"].astype(str).to_numpy())  # fmt: skip
    if "neutrophil_state_confidence" in sub:  # calibration of the state calls' confidence
        right = (sub["truth_state"].astype(str) == sub["neutrophil_state"].astype(str)).to_numpy()
        table = reliability_table(sub["neutrophil_state_confidence"].to_numpy(float), right)
        out["state_ece"] = expected_calibration_error(table)
    out["pseudotime_spearman"] = _spearman(sub["reprogramming_pseudotime"].to_numpy(float),
                                           sub["truth_pseudotime"].to_numpy(float))  # fmt: skip

    est = pd.read_csv(lay.table("cancer_types"))
    cf, table = cancer_figures(est[est["tissue"] == "tumour"], pd.read_csv(lay.truth / "cancer_types.csv"))
    out.update(cf)
    out["reliability"] = reliability
    out["cancer_types"] = table
    return out


def evaluate_peer(peer_obs: pd.DataFrame, truth_input: pd.DataFrame, truth_cancer: pd.DataFrame) -> dict:
    """The issue-12 figures a naive scanpy analysis has, on the same input (``scripts/bench_robustness.py``).

    Parameters
    ----------
    peer_obs
        One row per analysed cell (names as in ``truth_input``) with the truth columns
        (``truth_cell_type``, ``truth_state``), ``tissue``, ``cancer_type`` and the peer's
        ``peer_cell_type``, ``peer_is_neutrophil`` and ``peer_t3_score``.
    truth_input
        :func:`input_truth`.
    truth_cancer
        ``data/truth/cancer_types.csv``.

    Returns
    -------
    Neutrophil precision / recall, cell-type accuracy, ``index_auroc_t3`` (the T3 score's AUROC on
    true neutrophils the peer called neutrophils) and the cancer figures, where the per-cancer value
    is the mean T3 score of the *true* tumour neutrophils of each cancer type (no interval). The
    peer ran without QC, so ``neutrophils_kept`` is not a figure of the peer and is left out.
    """
    called = peer_obs["peer_is_neutrophil"].to_numpy(bool)
    det = detection_figures(truth_input, peer_obs, called)
    out: dict = {k: det[k] for k in ("neutrophil_precision", "neutrophil_recall", "neutrophil_recall_ok",
                                     "neutrophil_calls_doublet_share", "neutrophil_doublets_called_neutrophil") if k in det}  # fmt: skip
    ct, _ = cell_type_figures(peer_obs["truth_cell_type"].to_numpy(), peer_obs["peer_cell_type"].to_numpy())
    out.update(ct)
    is_true = (peer_obs["truth_cell_type"].astype(str) == "neutrophil").to_numpy()
    sub = peer_obs[is_true & called]
    t3 = (sub["truth_state"].astype(str) == "T3").to_numpy()
    out["index_auroc_t3"] = _auroc(t3, sub["peer_t3_score"].to_numpy(float))
    tum = peer_obs[is_true & (peer_obs["tissue"].astype(str) == "tumour").to_numpy()]
    est = tum.groupby(tum["cancer_type"].astype(str), observed=True)["peer_t3_score"].mean()
    est = est.rename("t3_fraction").rename_axis("cancer_type").reset_index()
    cf, table = cancer_figures(est, truth_cancer)
    out.update(cf)
    out["cancer_types"] = table
    return out
