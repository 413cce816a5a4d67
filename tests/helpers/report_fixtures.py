"""A small synthetic run directory laid out as docs/run_directory.md describes (for tests and demos).

:func:`synthetic_run_dir` writes fake but self-consistent outputs of every stage the report reads
(``atlas.h5ad``, ``neutrophils.h5ad``, ``tables/*.csv``, ``analysis.json``, ``store.qc.csv``,
``reference/metrics.csv``, provenance...) in about a second, so the report can be built and tested
without running scVI. The tables are computed from the fake cells the way the analysis stage
defines them (patients as the unit, bootstrap intervals over patients), but with a simpler method.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from atlas.core.layout import RunLayout

__all__ = ["synthetic_run_dir"]

CELL_TYPES = ["neutrophil", "monocyte", "macrophage", "T", "B", "NK", "tumour_epithelial", "fibroblast",
              "endothelial", "unknown"]
STATES = ["immature", "mature", "interferon", "antigen_presenting", "T3", "unassigned"]
SCORES = ["T3_proxy", "blood_like", "HALLMARK_HYPOXIA", "HALLMARK_GLYCOLYSIS", "HALLMARK_ANGIOGENESIS"]
# dataset -> (cancer type, platform, patients, tissues); the last data set has a single patient.
DATASETS = {
    "ds01_PDAC": ("PDAC", "10x_3prime_v3", ["P01", "P02", "P03", "P04"], ["tumour", "blood"]),
    "ds02_PDAC": ("PDAC", "BD_Rhapsody", ["P05", "P06", "P07"], ["tumour", "adjacent_normal"]),
    "ds03_NSCLC": ("NSCLC", "10x_5prime", ["P08", "P09", "P10", "P11"], ["tumour", "adjacent_normal", "blood"]),
    "ds04_CRC": ("CRC", "SeqWell", ["P12", "P13", "P14"], ["tumour", "blood"]),
    "ds05_BRCA": ("BRCA", "10x_3prime_v3", ["P15", "P16", "P17"], ["tumour"]),
    "ds06_melanoma": ("melanoma", "Smart-seq2", ["P18"], ["tumour"]),
}
T3_TRUTH = {"PDAC": 0.45, "NSCLC": 0.25, "CRC": 0.15, "BRCA": 0.08, "melanoma": 0.03}
TISSUE_FACTOR = {"tumour": 1.0, "adjacent_normal": 0.15, "blood": 0.0}


def _cells(n_cells: int, rng: np.random.Generator, with_neutrophils: bool) -> pd.DataFrame:
    samples = [(ds, ct, plat, p, t) for ds, (ct, plat, pats, tis) in DATASETS.items() for p in pats for t in tis]
    per = max(20, n_cells // len(samples))
    rows = []
    for ds, ct, plat, p, t in samples:
        n = per + int(rng.integers(-per // 4, per // 4 + 1))
        neut_p = (0.5 if t == "blood" else 0.25) if with_neutrophils else 0.0
        other = np.array([0.1, 0.1, 0.25, 0.08, 0.06, 0.2, 0.08, 0.08, 0.05])
        probs = np.concatenate([[neut_p], other / other.sum() * (1 - neut_p)])
        ctype = rng.choice(CELL_TYPES, size=n, p=probs)
        rows.append(pd.DataFrame({
            "dataset_id": ds, "sample_id": f"{p}_{t[:1].upper()}", "patient_id": p, "cancer_type": ct,
            "tissue": t, "platform": plat, "species": "human", "cell_type": ctype}))
    obs = pd.concat(rows, ignore_index=True)
    obs.index = [f"{d}:cell{i:06d}" for i, d in enumerate(obs["dataset_id"])]
    return obs


def _annotate(obs: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    n = len(obs)
    neut = (obs["cell_type"] == "neutrophil").to_numpy()
    obs["truth_cell_type"] = obs["cell_type"]
    obs["cell_type_confidence"] = rng.uniform(0.6, 1.0, n)
    obs["is_neutrophil"] = neut
    obs["neutrophil_confidence"] = np.where(neut, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.3, n))
    # Patient-level T3 propensity (Beta around the cancer's truth), then per-cell states.
    pat_rate = {}
    for (ct, p), _ in obs.groupby(["cancer_type", "patient_id"], observed=True):
        m = T3_TRUTH[ct]
        pat_rate[p] = rng.beta(m * 20 + 0.1, (1 - m) * 20 + 0.1)
    rate = obs["patient_id"].map(pat_rate).to_numpy() * obs["tissue"].map(TISSUE_FACTOR).to_numpy()
    t3 = neut & (rng.uniform(size=n) < rate)
    others = rng.choice(["immature", "mature", "interferon", "antigen_presenting", "unassigned"], size=n,
                        p=[0.15, 0.55, 0.1, 0.1, 0.1])
    state = np.where(t3, "T3", others).astype(object)
    state[~neut] = np.nan
    obs["neutrophil_state"] = pd.Categorical(state, categories=STATES)
    obs["neutrophil_state_confidence"] = np.where(neut, rng.uniform(0.4, 1.0, n), np.nan)
    pt = np.where(t3, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.55, n))
    obs["reprogramming_pseudotime"] = np.where(neut, pt, np.nan)
    obs["reprogramming_index"] = np.where(neut, 2 * pt - 1 + rng.normal(0, 0.15, n), np.nan)
    obs["truth_state"] = obs["neutrophil_state"].astype(object).where(neut, "")
    obs["truth_pseudotime"] = obs["reprogramming_pseudotime"]
    idx = np.nan_to_num(obs["reprogramming_index"].to_numpy(), nan=-0.5)
    obs["T3_proxy"] = 0.3 * idx + rng.normal(0, 0.1, n)
    obs["blood_like"] = -0.3 * idx + rng.normal(0, 0.1, n)
    obs["HALLMARK_HYPOXIA"] = 0.2 * idx + rng.normal(0, 0.1, n)
    obs["HALLMARK_GLYCOLYSIS"] = 0.15 * idx + rng.normal(0, 0.1, n)
    obs["HALLMARK_ANGIOGENESIS"] = 0.1 * idx + rng.normal(0, 0.1, n)
    obs["leiden"] = pd.Categorical([str(CELL_TYPES.index(c)) for c in obs["cell_type"]])
    for c in ["dataset_id", "sample_id", "patient_id", "cancer_type", "tissue", "platform", "species",
              "cell_type", "truth_cell_type", "truth_state"]:
        obs[c] = obs[c].astype("category")
    obs["cell_type"] = obs["cell_type"].cat.set_categories(CELL_TYPES)
    return obs


def _umap(obs: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, len(CELL_TYPES), endpoint=False)
    centres = np.c_[np.cos(angle), np.sin(angle)] * 10
    code = obs["cell_type"].cat.codes.to_numpy()
    xy = centres[code] + rng.normal(0, 1.2, (len(obs), 2))
    neut = obs["is_neutrophil"].to_numpy()
    pt = np.nan_to_num(obs["reprogramming_pseudotime"].to_numpy())
    xy[neut] += np.c_[pt * 6 - 3, np.sin(pt * 3) * 2][neut]
    return xy.astype(np.float32)


def _tables(obs: pd.DataFrame, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    o = obs.copy()
    for c in o.columns:
        if isinstance(o[c].dtype, pd.CategoricalDtype):
            o[c] = o[c].astype(object)
    neut = o[o["is_neutrophil"]]
    t = {}
    y = o.groupby(["dataset_id", "platform"]).agg(n_cells=("is_neutrophil", "size"),
                                                  n_neutrophils=("is_neutrophil", "sum")).reset_index()
    y["neutrophil_fraction"] = y["n_neutrophils"] / y["n_cells"]
    t["neutrophil_yield"] = y
    ct = o.groupby(["cancer_type", "tissue", "cell_type"]).size().rename("n_cells").reset_index()
    ct["fraction"] = ct["n_cells"] / ct.groupby(["cancer_type", "tissue"])["n_cells"].transform("sum")
    t["cell_type_composition"] = ct
    sc = neut.groupby(["cancer_type", "tissue", "neutrophil_state"]).size().rename("n_cells").reset_index()
    sc["fraction"] = sc["n_cells"] / sc.groupby(["cancer_type", "tissue"])["n_cells"].transform("sum")
    t["state_composition"] = sc
    cl = neut.assign(neutrophil_leiden=(neut["reprogramming_pseudotime"] * 5).astype(int).astype(str))
    rows = []
    for k, g in cl.groupby("neutrophil_leiden"):
        vc = g["neutrophil_state"].value_counts()
        rows.append({"neutrophil_leiden": k, "n_cells": len(g), "state": vc.index[0],
                     "state_fraction": vc.iloc[0] / len(g), "mean_T3_proxy": g["T3_proxy"].mean(),
                     "mean_blood_like": g["blood_like"].mean()})
    t["state_clusters"] = pd.DataFrame(rows)
    keys = ["dataset_id", "cancer_type", "patient_id", "tissue", "sample_id"]
    s = neut.groupby(keys).agg(n_neutrophils=("is_neutrophil", "size"),
                               n_t3=("neutrophil_state", lambda v: int((v == "T3").sum())),
                               mean_index=("reprogramming_index", "mean")).reset_index()
    s["t3_fraction"] = s["n_t3"] / s["n_neutrophils"]
    t["samples"] = s[keys + ["n_neutrophils", "n_t3", "mean_index", "t3_fraction"]]
    p = s.groupby(["cancer_type", "patient_id", "tissue"]).agg(
        n_samples=("sample_id", "nunique"), n_neutrophils=("n_neutrophils", "sum"), n_t3=("n_t3", "sum"),
        mean_index=("mean_index", "mean")).reset_index()
    p["t3_fraction"] = p["n_t3"] / p["n_neutrophils"]
    t["patients"] = p[["cancer_type", "patient_id", "tissue", "n_samples", "n_neutrophils", "n_t3", "t3_fraction",
                       "mean_index"]]
    from atlas.analyse.statistics import StatsSettings, per_group

    cty = per_group(p, StatsSettings(n_boot=300, interval="hierarchical"))  # as the config below says
    if cty.empty:
        cty = pd.DataFrame(columns=["cancer_type", "tissue", "n_patients", "n_neutrophils", "t3_fraction",
                                    "t3_fraction_lo", "t3_fraction_hi", "mean_index", "mean_index_lo",
                                    "mean_index_hi", "note"])  # fmt: skip
    t["cancer_types"] = cty
    rows = []
    for c, g in p.groupby("cancer_type"):
        wide = g.pivot_table(index="patient_id", columns="tissue", values="t3_fraction")
        for other in ["blood", "adjacent_normal"]:
            if "tumour" in wide and other in wide:
                d = (wide["tumour"] - wide[other]).dropna()
                if len(d):
                    from scipy.stats import wilcoxon

                    pv = float(wilcoxon(d).pvalue) if len(d) >= 2 and (d != 0).any() else np.nan
                    rows.append({"cancer_type": c, "comparison": f"tumour - {other}", "n_patients": len(d),
                                 "median_difference": float(d.median()), "p_value": pv})
    t["tissue_comparison"] = pd.DataFrame(rows, columns=["cancer_type", "comparison", "n_patients",
                                                          "median_difference", "p_value"])
    r = cty[cty["tissue"] == "tumour"].sort_values("t3_fraction", ascending=False).reset_index(drop=True)
    r.insert(0, "rank", np.arange(1, len(r) + 1))
    t["ranking"] = r
    from scipy.stats import spearmanr

    rho = spearmanr(neut["reprogramming_index"], neut["reprogramming_pseudotime"]).statistic if len(neut) > 2 else np.nan
    t["index_vs_pseudotime"] = pd.DataFrame({"spearman": [rho], "n_cells": [len(neut)]})
    t["refined_signatures"] = pd.DataFrame({
        "signature": ["T3_proxy", "blood_like"], "refined": [True, False], "programme": ["T3_proxy_refined", ""],
        "n_seed_genes": [20, 8], "n_seed_genes_kept": [15, np.nan], "n_genes": [40, np.nan], "iterations": [2, 0],
        "corr_with_signature": [0.8, np.nan], "top_genes": ["VEGFA, BNIP3, PLAU", ""],
        "reason": ["", "fewer than 5 genes correlated with the signature at FDR 0.01"]})  # fmt: skip
    return t


def synthetic_run_dir(path: str | Path, *, n_cells: int = 3000, seed: int = 0, with_neutrophils: bool = True,
                      analysis: bool = True, metrics: bool = True, subatlas: bool = True) -> Path:
    """Write a fake run directory at ``path`` and return it.

    ``with_neutrophils=False`` gives a run whose analysis found none; ``analysis=False`` stops after
    the integrate and score stages (no ``atlas.h5ad``/``neutrophils.h5ad``/``tables``);
    ``metrics=False`` leaves out ``reference/metrics.csv``/``.png``; ``subatlas=False`` leaves out
    ``neutrophils.h5ad``.
    """
    import anndata as ad
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import scipy.sparse as sp
    import yaml

    run = Path(path)
    lay = RunLayout(run)
    lay.reference.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    obs = _annotate(_cells(n_cells, rng, with_neutrophils), rng)
    umap = _umap(obs, rng)
    latent = rng.normal(size=(len(obs), 10)).astype(np.float32)
    n_hvg = 50
    var = pd.DataFrame(index=[f"GENE{i}" for i in range(n_hvg)])

    def adata(o, xy, z):
        a = ad.AnnData(X=sp.csr_matrix((len(o), n_hvg), dtype=np.float32), obs=o, var=var.copy())
        a.obsm["X_umap"], a.obsm["X_scVI"] = xy, z
        return a

    schema = ["dataset_id", "sample_id", "patient_id", "cancer_type", "tissue", "platform", "species",
              "truth_cell_type", "truth_state", "truth_pseudotime", "leiden"]
    adata(obs[schema].copy(), umap, latent).write_h5ad(lay.reference_atlas)
    scores = obs[SCORES].astype(np.float32)
    scores.to_parquet(lay.scores)

    # ingest side tables
    qc = obs.groupby("dataset_id", observed=True).size().rename("cells_out").reset_index()
    qc.insert(1, "cells_in", qc["cells_out"] + 40)
    qc.insert(2, "removed_low_counts", 25)
    qc.insert(3, "removed_low_genes", 0)
    qc.insert(4, "removed_high_mito", 15)
    qc["kept_by_neutrophil_floor"] = 7
    qc["qc_enabled"] = True
    qc["min_counts"], qc["min_genes"], qc["max_pct_mito"] = 500, 200, 20.0
    qc.to_csv(lay.store_table("qc"), index=False)
    nt = qc[["dataset_id"]].assign(evidence_cells_in=120, evidence_cells_out=110, evidence_cells_removed=10,
                                   kept_by_neutrophil_floor=7)
    nt.to_csv(lay.store_table("neutrophils"), index=False)

    # reference bundle extras
    if metrics:
        m = pd.DataFrame({
            "embedding": ["X_pca", "X_harmony", "X_scVI"], "method": ["Unintegrated (PCA)", "Harmony", "scVI"],
            "Isolated labels": [0.70, 0.75, 0.89], "KMeans NMI": [0.95, 0.99, 1.0], "iLISI": [0.02, 0.5, 0.17],
            "Batch correction": [0.3147582, 0.7286895, 0.6239461], "Bio conservation": [0.8587502, 0.8993394, 0.9561071],
            "Total": [0.6411535, 0.8310794, 0.8232427], "n_cells": len(obs), "batch_key": "dataset_id",
            "label_key": "truth_cell_type"})
        m.to_csv(lay.reference_metrics, index=False)
        fig, ax = plt.subplots(figsize=(4, 2.5))
        ax.barh(m["method"], m["Total"])
        fig.savefig(lay.reference_metrics_png)
        plt.close(fig)
    lay.reference_versions.write_text(json.dumps({"anndata": version("anndata"), "scvi-tools": "1.4.2",
                                                                "numpy": np.__version__}, indent=2))
    (lay.reference / "summary.json").write_text(json.dumps({"n_cells": len(obs), "notes": []}))

    # run identity, config, provenance
    lay.run_json.write_text(json.dumps({"atlas_version": "0.1.0", "created": 0.0, "name": "synthetic"}))
    cfg = {"name": "synthetic", "run_dir": str(run), "seed": seed, "score": {"method": "scanpy"},
           "analyse": {"statistics": {"ci": 0.95, "n_boot": 300, "min_cells_per_sample": 10, "interval": "hierarchical"},
                       "seed": seed}}
    lay.config_resolved.write_text(yaml.safe_dump(cfg, sort_keys=False))
    lay.provenance.write_text(json.dumps({
        "atlas_version": "0.1.0", "command": ["atlas", "run", "synthetic.yaml"], "python": "3.11",
        "platform": "Linux", "packages": {"numpy": np.__version__, "pandas": pd.__version__},
        "seeds": {"pipeline": seed, "simulate": seed}, "time": "2026-01-01T00:00:00+0000"}, indent=2))
    lay.manifest.write_text(json.dumps({"stages": {}}))
    if not analysis:
        return run

    tables = _tables(obs, rng)
    lay.tables.mkdir(exist_ok=True)
    for name, df in tables.items():
        df.to_csv(lay.table(name), index=False)
    full = adata(obs, umap, latent)
    full.uns["reprogramming_axis"] = {"up": ["T3_proxy"], "down": ["blood_like"]}
    full.uns["atlas_scoring"] = {"method": "scanpy", "signatures": SCORES, "ctrl_size": 50, "n_bins": 25,
                                 "random_state": 0, "normalize": True}
    full.uns["state_rule"] = {"min_z": 0.5, "min_margin": 0.25, "default_state": "mature"}
    full.write_h5ad(lay.atlas)
    neut = obs[obs["is_neutrophil"]].copy()
    if subatlas and len(neut):
        pt = neut["reprogramming_pseudotime"].to_numpy()
        sub_xy = np.c_[pt * 10, np.sin(pt * 4) * 2].astype(np.float32) + rng.normal(0, 0.5, (len(neut), 2)).astype(np.float32)
        neut["neutrophil_leiden"] = pd.Categorical((pt * 5).astype(int).astype(str))
        adata(neut, sub_xy, latent[obs["is_neutrophil"].to_numpy()]).write_h5ad(lay.neutrophils)
    counts = {"cells": len(obs), "neutrophils": int(obs["is_neutrophil"].sum()),
              "states": {k: int(v) for k, v in obs["neutrophil_state"].value_counts().items()}}
    notes = [] if len(neut) else ["no neutrophils found: no states, index or per-cancer statistics"]
    lay.analysis_json.write_text(json.dumps({"counts": counts, "settings": cfg["analyse"], "notes": notes},
                                                  indent=2))
    return run
