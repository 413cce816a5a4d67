"""Scrublet (``qc.doublets``) against sample size, on an independent cohort with known heterotypic doublets.

    python scripts/bench_doublets.py --work-dir /tmp/dbl [--n-cells 30000 --n-datasets 3 --seed 5 --doublet-rate 0.08]

Writes a cohort of ``scripts/independent_cohort.py`` with ``--doublet-rate`` (few data sets, so that samples hold
~1,000-2,800 cells), ingests it with QC off, then draws cells of each sample at several sizes and runs atlas's
doublet detection (:func:`atlas.ingest.qc.detect_doublets`: scanpy's scrublet with its automatic threshold) on each
draw. Per size, medians over samples: the doublets found (``tpr``), the singlets and the neutrophils called doublets
(``fpr``, ``neutrophil_fpr``), the share called, the precision of the calls (``ppv``), the scores' AUROC, and the
draws where the share called exceeds ``qc.doublet_max_share`` (``not_trusted``, whose calls atlas drops). Prints
the table and writes it to ``WORK/doublets_by_sample_size.csv``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import independent_cohort  # noqa: E402

SIZES = (150, 300, 600, 1200, 2400)


def _store(work: Path, args) -> Path:
    """The cohort ingested with QC off (reused when present)."""
    from atlas.ingest.settings import load_ingest_config
    from atlas.ingest.stage import ingest

    store = work / "store.h5ad"
    if not store.exists():
        cfg = load_ingest_config(independent_cohort.generate(
            work / "cohort", args.n_cells, args.n_datasets, args.seed, doublet_rate=args.doublet_rate))
        cfg.qc.enabled = False
        ingest(cfg, store, overwrite=True)
    return store


def _one(X: sp.csr_matrix, truth: np.ndarray) -> dict:
    """Scrublet's calls on one draw of cells against the truth."""
    from sklearn.metrics import roc_auc_score

    from atlas.ingest.qc import detect_doublets, doublet_threshold_failed
    from atlas.ingest.settings import QCConfig

    score, called, _ = detect_doublets(X, np.zeros(X.shape[0], int), min_cells=10)  # every call, as scrublet made it
    dbl, neut = truth == "doublet", truth == "neutrophil"
    return {"n_doublets": int(dbl.sum()), "tpr": called[dbl].mean() if dbl.any() else np.nan,
            "fpr": called[~dbl].mean(), "neutrophil_fpr": called[neut].mean() if neut.any() else np.nan,
            "called": called.mean(), "ppv": dbl[called].mean() if called.any() else np.nan,
            "auroc": roc_auc_score(dbl, score) if 0 < dbl.sum() < len(dbl) else np.nan,
            "not_trusted": doublet_threshold_failed(called, QCConfig().doublet_max_share)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--n-cells", type=int, default=30000)
    ap.add_argument("--n-datasets", type=int, default=3)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--doublet-rate", type=float, default=0.08)
    args = ap.parse_args()
    import anndata as ad

    warnings.filterwarnings("ignore")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    a = ad.read_h5ad(_store(args.work_dir, args))
    samples = a.obs["sample_id"].astype(str).to_numpy()
    truth = a.obs["truth_cell_type"].astype(str).to_numpy()
    sizes = pd.Series(samples).value_counts()
    rng = np.random.default_rng(0)
    rows = []
    for size in SIZES:
        for s in sizes.index[sizes >= size]:
            idx = np.sort(rng.choice(np.flatnonzero(samples == s), size, replace=False))
            rows.append({"size": size, "sample": s, **_one(sp.csr_matrix(a.X[idx]), truth[idx])})
    df = pd.DataFrame(rows)
    df.to_csv(args.work_dir / "doublets_by_sample_size.csv", index=False)
    cols = ["tpr", "fpr", "neutrophil_fpr", "called", "ppv", "auroc"]
    table = df.groupby("size")[cols].median().round(3)
    table["not_trusted"] = df.groupby("size")["not_trusted"].sum()
    table["samples"] = df.groupby("size").size()
    print(f"{len(sizes)} samples of {sizes.min()}-{sizes.max()} cells; medians over the samples drawn at each size")
    print(table.to_string())


if __name__ == "__main__":
    main()
