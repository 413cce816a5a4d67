"""Issue 12 robustness benchmark: atlas vs a naive scanpy peer over simulator difficulties and seeds.

    python scripts/bench_robustness.py                                   # 4 presets x 3 seeds, 8,000 cells
    python scripts/bench_robustness.py --grid default hard --seeds 0 --n-cells 3000 --n-datasets 6 --no-record
    python scripts/bench_robustness.py --work-dir W --skip-existing     # resume a long grid
    python scripts/bench_robustness.py --from-json W/robustness.json    # rebuild the report, no rerun
    python scripts/bench_robustness.py --standing "sim 8k=A/robustness.json" "independent=B/robustness.json"  # one table

For every grid point (a simulator difficulty preset, ``simulate.difficulty``, or ``independent``: a cohort of
``scripts/independent_cohort.py``, a generator designed apart from atlas's simulator; ``independent_extra_types``
, ``independent_rare_droplet_neutrophils`` and ``independent_doublets``: the same generator with mast, plasma and
dendritic cells, with droplet platforms that capture few neutrophils, or with 8 % heterotypic doublets;
``independent_sorted`` / ``independent_all_sorted``: 3 of the 8 studies, or all of them, sorted their neutrophils
(85-97 % of their cells); ``independent_hvg_only``: 3 of the 8 studies' files hold only their 2,000 most variable
genes, as deposited processed objects often do (``independent_panel500``: 500 genes, as small as a targeted panel);
``independent_fixed_qc``: the plain independent cohort ingested with ``qc.thresholds.mode: fixed``, issue 12's
QC, and ``independent_doublets_scrublet``: the doublet cohort with ``qc.doublets``, to see what the QC audit says of
them) and seed:

1. ``atlas run`` of the built-in demo config (its ``integrate.metrics_label_key: truth_cell_type``
   is kept: truth is used there only to *evaluate* integration) with that difficulty, seed and
   size, timed in a child process;
2. the **naive peer** on the same simulated files: atlas's own reader and harmoniser with QC
   switched off (harmonisation and QC are not what is compared), then plain scanpy:
   normalize_total 1e4, log1p, 2,000 seurat_v3 HVGs on the counts, PCA 50, 15 neighbours, Leiden
   (resolution 1), ``score_genes`` of each cell type's markers, each cluster -> the type with the
   highest mean score; its neutrophils = cells of neutrophil clusters; its T3 score = ``score_genes``
   of the T3_proxy genes; per cancer the mean T3 score of the true tumour neutrophils. Its batch
   mixing is the unintegrated PCA row of atlas's own ``reference/metrics.csv`` (same cells and
   metric code as scVI's and Harmony's rows);
3. both are compared with the truth (:mod:`atlas.simulate.evaluate`).

Results go to ``benchmarks/robustness.md`` (median and worst case over grid x seeds, targets,
per-point tables, the pooled reliability table of ``cell_type_confidence``, wall times) and, raw, to
``WORK/robustness.json`` and ``WORK/robustness.csv``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import independent_cohort  # noqa: E402
from _bench_common import REPO, machine, markdown_table, record, run_measured  # noqa: E402

from atlas.pipeline.demo import demo_config  # noqa: E402
from atlas.simulate.evaluate import evaluate_peer, evaluate_robustness, input_truth  # noqa: E402

DEFAULT_GRID = ("default", "weak_markers", "confounded", "hard")
#: grid points that are cohorts of scripts/independent_cohort.py -> the generator's options
INDEPENDENT_POINTS = independent_cohort.VARIANTS
#: grid points that run atlas with other ingest QC on an independent cohort: point -> (the cohort's point, qc section);
#: ``independent_fixed_qc`` is issue 12's setting (min_counts 500 with the neutrophil marker floor), where the QC
#: audit should say what QC cost the neutrophils; ``independent_doublets_scrublet`` runs scanpy's scrublet on the
#: doublet cohort (what it removes, by type)
QC_POINTS = {
    "independent_fixed_qc": ("independent", {"thresholds": {"mode": "fixed"}}),
    "independent_doublets_scrublet": ("independent_doublets", {"doublets": True}),
}
DASH = "—"


@dataclass(frozen=True)
class Figure:
    """One row of the summary: atlas's figure, the peer's, and the per-run target."""

    key: str
    label: str
    target: str = ""
    peer_key: str | None = None
    threshold: float | None = None  # atlas >= threshold
    above: str | None = None  # atlas >= this other atlas figure (strictly > when strict)
    strict: bool = False
    lower_is_better: bool = False
    count: bool = False  # a number of cells: shown without decimals

    @property
    def digits(self) -> int:
        """Decimals shown: one for the n_ figures, none for counts of cells."""
        return 0 if self.count else 1 if self.key.startswith("n_") else 3


FIGURES: tuple[Figure, ...] = (
    # QC is there to remove the cells the simulator damaged (4 % high-mito, 2 % low-quality of every type), so the
    # target is on the undamaged ones; the share of all input neutrophils is shown beside it.
    Figure("neutrophils_kept_ok", "neutrophils kept by QC (of undamaged input)", ">= 0.95", threshold=0.95),
    Figure("neutrophils_kept", "↳ of all input neutrophils (damaged included)"),
    Figure("neutrophils_kept_droplet", "↳ of all, on droplet platforms"),
    Figure("neutrophil_precision", "neutrophil precision", ">= 0.90", "neutrophil_precision", 0.90),
    Figure("neutrophil_recall_ok", "neutrophil recall (of undamaged input neutrophils)", ">= 0.90",
           "neutrophil_recall_ok", 0.90),
    Figure("neutrophil_recall", "↳ of all input neutrophils (the peer has no QC)", peer_key="neutrophil_recall"),
    Figure("cell_type_accuracy", "cell-type accuracy (9 types)", ">= 0.90", "cell_type_accuracy", 0.90),
    Figure("cell_type_unknown_share", "↳ share called unknown", peer_key="cell_type_unknown_share", lower_is_better=True),
    Figure("cell_type_ece", "cell_type_confidence ECE", lower_is_better=True),
    Figure("outside_panel_unknown_share", "cells of types outside the marker panel called unknown (extra-type cohorts)",
           peer_key="outside_panel_unknown_share"),
    Figure("doublets_removed", "heterotypic doublets removed by QC (doublet cohorts)"),
    Figure("neutrophil_calls_doublet_share", "↳ doublets among the neutrophil calls",
           peer_key="neutrophil_calls_doublet_share", lower_is_better=True),
    Figure("neutrophil_doublets_called_neutrophil", "↳ doublets with a neutrophil in them called neutrophil",
           peer_key="neutrophil_doublets_called_neutrophil", lower_is_better=True),
    Figure("removed_cells", "cells QC removed at ingest (above the floor)", count=True),
    Figure("removed_audit_accuracy", "↳ typed right by the QC audit (unknown counts wrong)"),
    Figure("removed_audit_accuracy_labelled", "↳ typed right among those it does not call unknown"),
    Figure("removed_audit_unknown_share", "↳ called unknown by the audit", lower_is_better=True),
    Figure("removed_neutrophils", "↳ true neutrophils among them", count=True),
    Figure("removed_neutrophils_audited", "↳ removed cells the audit labelled neutrophil", count=True),
    Figure("removed_neutrophil_audit_precision", "↳ precision of that label"),
    Figure("removed_neutrophil_audit_recall", "↳ recall of that label"),
    Figure("batch_correction_scvi", "batch correction, scVI (peer: PCA)", "> Harmony", "batch_correction_pca",
           above="batch_correction_harmony", strict=True),
    Figure("batch_correction_harmony", "↳ batch correction, Harmony"),
    Figure("ilisi_scvi", "iLISI, scVI (peer: PCA)", "> Harmony", "ilisi_pca", above="ilisi_harmony", strict=True),
    Figure("ilisi_harmony", "↳ iLISI, Harmony"),
    Figure("index_auroc_t3", "T3 AUROC of the index (peer: T3_proxy score)", ">= 0.85 and >= T3_proxy alone",
           "index_auroc_t3", 0.85, above="t3_proxy_auroc_t3"),
    Figure("t3_proxy_auroc_t3", "↳ T3 AUROC of T3_proxy alone"),
    Figure("oracle_t3_auroc", "↳ the cohort's own T3 programme (independent cohorts only; ceiling)"),
    Figure("state_macro_f1", "state macro-F1", ">= 0.70", threshold=0.70),
    Figure("oracle_state_macro_f1", "↳ the cohort's own programmes, truth-chosen thresholds (ceiling)"),
    Figure("state_ece", "neutrophil_state_confidence ECE", lower_is_better=True),
    Figure("pseudotime_spearman", "pseudotime Spearman", ">= 0.60", threshold=0.60),
    Figure("oracle_pseudotime_spearman", "↳ the cohort's own programmes (ceiling)"),
    Figure("cancer_spearman", "per-cancer T3 fraction Spearman", ">= 0.9", "cancer_spearman", 0.9),
    Figure("cancer_spearman_oracle", "↳ the same estimator on the true states (ceiling)"),
    Figure("cancer_spearman_index", "↳ Spearman of the mean reprogramming index per cancer"),
    Figure("n_cancers_reported", "cancers reported (of 6)", "6 of 6", "n_cancers_reported", 6),
    Figure("n_cancers_in_interval", "cancers with the truth in the interval", ">= 5 of 6", threshold=5),
    Figure("n_cancers_in_interval_single_patient", "↳ of which intervals of one patient (the model's prior)",
           lower_is_better=True),
    Figure("n_cancers_in_interval_oracle", "↳ the same on the true states (ceiling)"),
)  # fmt: skip


# ----------------------------------------------------------------------------------------- runs
def run_name(point: str, seed: int) -> str:
    """Folder name of one grid point and seed."""
    return f"{point}-seed{seed}"


def write_config(runs: Path, point: str, seed: int, n_cells: int, n_datasets: int) -> Path:
    """The demo config for one grid point and seed, written to ``runs/<name>.yaml``.

    Point ``independent``: the cohort comes from ``scripts/independent_cohort.py`` (written to
    ``runs/<name>.data``, linked as ``RUN/data`` after the run) and is read through its ``ingest.yaml``;
    the demo's other settings are kept.
    """
    run_dir = runs / run_name(point, seed)
    cfg = demo_config(run_dir).model_dump(mode="json")
    cfg["seed"] = seed
    cohort, qc = QC_POINTS.get(point, (point, None))
    if cohort in INDEPENDENT_POINTS:
        cfg["simulate"] = None
        ingest = _cohort_dir(runs, point, seed) / "ingest.yaml"  # kept: a new cohort would rerun every stage
        ingest = ingest if ingest.exists() else independent_cohort.generate(
            ingest.parent, n_cells, n_datasets, seed, **INDEPENDENT_POINTS[cohort])  # fmt: skip
        if qc is not None:  # beside the cohort's own ingest.yaml, so its relative paths hold
            doc = yaml.safe_load(Path(ingest).read_text()) | {"qc": qc}
            ingest = Path(ingest).with_name(f"ingest_{point}.yaml")
            ingest.write_text(yaml.safe_dump(doc, sort_keys=False))
        cfg["ingest"] = str(ingest)
    else:
        cfg["simulate"].update(seed=seed, n_cells=n_cells, n_datasets=n_datasets, difficulty=point)
    path = runs / f"{run_name(point, seed)}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _cohort_dir(runs: Path, point: str, seed: int) -> Path:
    """Where an independent cohort is written (outside the run folder, which atlas wants empty or its own); a QC
    point shares its cohort's."""
    return runs / f"{run_name(QC_POINTS.get(point, (point,))[0], seed)}.data"


def _cohort_point(point: str) -> str:
    """The grid point whose cohort ``point`` runs on (itself but for :data:`QC_POINTS`)."""
    return QC_POINTS.get(point, (point,))[0]


def _link_cohort(runs: Path, point: str, seed: int) -> None:
    """``RUN/data`` -> the independent cohort, where the evaluation and the peer read the simulator's data."""
    link = runs / run_name(point, seed) / "data"
    if _cohort_point(point) in INDEPENDENT_POINTS and link.parent.is_dir() and not link.exists():
        link.symlink_to(_cohort_dir(runs, point, seed).resolve(), target_is_directory=True)


def _thread_env(jobs: int) -> dict[str, str]:
    """Thread caps for ``jobs`` runs at once: each gets its share of the cores (torch's threads spin on each other
    when two runs oversubscribe them: one 8,000-cell run took 45 minutes beside another instead of 7)."""
    if jobs <= 1 or "OMP_NUM_THREADS" in os.environ:
        return {}
    n = str(max(1, (os.cpu_count() or 1) // jobs))
    return {k: n for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}


def run_atlas(runs: Path, point: str, seed: int, args) -> dict:
    """``atlas run`` of one grid point and seed in a child process; returns its wall time and peak RSS.

    With ``--skip-existing`` a run that finished before (its timing file exists) is reused.
    """
    name = run_name(point, seed)
    timing = runs / f"{name}.timing.json"
    run_dir = runs / name
    if args.skip_existing and timing.exists() and (run_dir / "atlas.h5ad").exists():
        return json.loads(timing.read_text())
    if not args.resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    cfg = write_config(runs, point, seed, args.n_cells, args.n_datasets)
    t = time.perf_counter()
    try:
        m = run_measured([sys.executable, "-m", "atlas.cli", "-q", "run", str(cfg)], env=_thread_env(args.jobs))
    except RuntimeError as e:  # a crash on hard data is a result: every atlas figure of this run fails
        m = {
            "rc": 1,
            "seconds": time.perf_counter() - t,
            "peak_rss_gib": float("nan"),
            "error": str(e)[-2000:],
        }
        print(f"[{name}] atlas run FAILED after {m['seconds']:.0f} s:\n{m['error']}", flush=True)
    else:
        print(f"[{name}] atlas run {m['seconds']:.0f} s, peak RSS {m['peak_rss_gib']:.2f} GiB", flush=True)
    _link_cohort(runs, point, seed)
    timing.write_text(json.dumps(m))
    return m


# ------------------------------------------------------------------------------------ the peer
def peer_ingest(run_dir: Path, out: Path) -> Path:
    """The simulated files read and harmonised by atlas's own ingest with QC disabled."""
    from atlas.ingest.settings import load_ingest_config
    from atlas.ingest.stage import ingest

    cfg = load_ingest_config(run_dir / "data" / "ingest.yaml")
    cfg = cfg.model_copy(update={"qc": cfg.qc.model_copy(update={"enabled": False, "doublets": False})})
    store = out / "peer_store.h5ad"
    ingest(cfg, store, overwrite=True)
    return store


def _score(adata, genes: list[str], name: str, seed: int) -> None:
    """``sc.tl.score_genes`` of the genes present (score NaN when none is)."""
    import scanpy as sc

    present = [g for g in dict.fromkeys(genes) if g in adata.var_names]
    if not present:
        adata.obs[name] = np.nan
        return
    sc.tl.score_genes(adata, present, score_name=name, random_state=seed, use_raw=False)


def naive_peer(store: Path, seed: int) -> pd.DataFrame:
    """Plain scanpy on the ingested counts: clusters, marker-voted cell types, T3_proxy score.

    Returns the store's obs (truth columns included, for evaluation only) with ``peer_cell_type``,
    ``peer_is_neutrophil`` and ``peer_t3_score``.
    """
    import anndata as ad
    import scanpy as sc

    from atlas.analyse.settings import DEFAULT_MARKERS
    from atlas.catalogue.signatures import load_registry

    a = ad.read_h5ad(store)
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=2000, flavor="seurat_v3", layer="counts")
    sc.tl.pca(a, n_comps=50, mask_var="highly_variable", random_state=seed)
    sc.pp.neighbors(a, n_neighbors=15, random_state=seed)
    sc.tl.leiden(a, resolution=1.0, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    cols = []
    for cell_type, genes in DEFAULT_MARKERS.items():
        _score(a, genes, f"peer_score_{cell_type}", seed)
        cols.append(f"peer_score_{cell_type}")
    means = a.obs.groupby("leiden", observed=True)[cols].mean()
    cluster_type = means.idxmax(axis=1).str.removeprefix("peer_score_")
    obs = a.obs.copy()
    obs["peer_cell_type"] = obs["leiden"].map(cluster_type).astype(str)
    obs["peer_is_neutrophil"] = obs["peer_cell_type"] == "neutrophil"
    _score(a, load_registry()["T3_proxy"].genes, "peer_t3_score", seed)
    obs["peer_t3_score"] = a.obs["peer_t3_score"].to_numpy(float)
    return obs


# ------------------------------------------------------------------------------------ evaluate
def _clean(d: dict) -> dict:
    """Figures as JSON-safe floats (NaN -> None)."""
    return {
        k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)) for k, v in d.items()
    }


def _records(df: pd.DataFrame | None) -> list[dict]:
    if df is None:
        return []
    return json.loads(df.to_json(orient="records"))


def _evaluate_atlas(run_dir: Path, truth: pd.DataFrame, timing: dict) -> tuple[dict, str | None]:
    """atlas's figures of one run, or no figures and the error when the run or its evaluation failed."""
    import traceback

    if "error" in timing:
        return {}, timing["error"]
    try:
        return evaluate_robustness(run_dir, truth), None
    except Exception as e:  # recorded (all figures fail) rather than losing the other runs
        traceback.print_exc()
        return {}, f"evaluation failed: {e!r}"


def cancer_ceiling_and_index(run_dir: Path) -> dict:
    """The per-cancer figures of atlas's own estimator fed the *true* states (the ceiling of this cohort), and
    the Spearman of the run's mean reprogramming index per cancer type.

    The true neutrophils that passed QC, flagged T3 by ``truth_state``, go through the run's patient
    statistics (same minimum neutrophils per patient, interval and pooled rows). What is left between this
    and the truth is sampling: too few patients and neutrophils per cancer for any caller to rank them.
    """
    import anndata as ad

    from atlas.analyse import statistics as st
    from atlas.analyse.steps import stats_settings
    from atlas.pipeline.config import load_pipeline_config
    from atlas.simulate.evaluate import cancer_figures

    stats = stats_settings(load_pipeline_config(run_dir / "config.resolved.yaml").analyse)
    obs = ad.read_h5ad(run_dir / "atlas.h5ad", backed="r").obs
    passed = obs["passed_qc"].to_numpy(bool) if "passed_qc" in obs else np.ones(len(obs), bool)
    cells = obs[passed & (obs["truth_cell_type"].astype(str) == "neutrophil").to_numpy()]
    cells = cells.assign(is_t3=cells["truth_state"].astype(str) == "T3", reprogramming_index=0.0)
    samples = st.per_sample(cells)
    groups = st.cancer_type_groups(samples, st.per_patient(samples, stats), stats)
    truth = pd.read_csv(run_dir / "data" / "truth" / "cancer_types.csv")
    figs, _ = cancer_figures(groups[groups["tissue"] == "tumour"], truth)
    out = {"cancer_spearman_oracle": figs["cancer_spearman"], "n_cancers_in_interval_oracle": figs["n_cancers_in_interval"]}
    # the continuous figure atlas reports beside the fraction: the mean reprogramming index per cancer type
    own = pd.read_csv(run_dir / "tables" / "cancer_types.csv")
    own = own[own["tissue"] == "tumour"][["cancer_type", "mean_index"]].rename(columns={"mean_index": "t3_fraction"})
    out["cancer_spearman_index"] = cancer_figures(own, truth)[0]["cancer_spearman"]
    return out


def evaluate_one(runs: Path, point: str, seed: int, timing: dict, args) -> dict:
    """Peer + evaluation of one finished run; cached in ``runs/<name>.result.json``."""
    name = run_name(point, seed)
    cache = runs / f"{name}.result.json"
    if args.skip_existing and not args.resume and cache.exists():
        return json.loads(cache.read_text())
    run_dir = runs / name
    truth = input_truth(run_dir / "data")
    atlas, error = _evaluate_atlas(run_dir, truth, timing)
    reliability, atlas_cancer = atlas.pop("reliability", None), atlas.pop("cancer_types", None)
    if atlas:
        atlas.update(cancer_ceiling_and_index(run_dir))
        # what the cohort's own programmes reach on the same store: the per-cell ceiling
        if _cohort_point(point) in INDEPENDENT_POINTS:
            extra_types = INDEPENDENT_POINTS[_cohort_point(point)].get("extra_types", False)
            atlas.update(independent_cohort.oracle_figures(run_dir / "store.h5ad", seed, args.n_datasets, extra_types))

    peer_dir = runs / f"{name}.peer"
    peer_dir.mkdir(exist_ok=True)
    t = time.perf_counter()
    store = peer_ingest(run_dir, peer_dir)
    t_ingest = time.perf_counter() - t
    peer_obs = naive_peer(store, seed)
    t_peer = time.perf_counter() - t
    peer = evaluate_peer(peer_obs, truth, pd.read_csv(run_dir / "data" / "truth" / "cancer_types.csv"))
    peer_cancer = peer.pop("cancer_types")
    peer["batch_correction_pca"] = atlas.get("batch_correction_pca", float("nan"))
    peer["ilisi_pca"] = atlas.get("ilisi_pca", float("nan"))
    shutil.rmtree(peer_dir, ignore_errors=True)
    print(f"[{name}] peer {t_peer:.0f} s (ingest {t_ingest:.0f} s)", flush=True)
    rec = {
        "point": point, "seed": seed, "run_dir": str(run_dir), "n_cells": args.n_cells, "n_datasets": args.n_datasets,
        "timing": {"atlas_s": timing["seconds"], "atlas_peak_rss_gib": timing["peak_rss_gib"],
                   "peer_s": t_peer, "peer_ingest_s": t_ingest},
        "atlas_error": error, "atlas": _clean(atlas), "peer": _clean(peer), "reliability": _records(reliability),
        "cancer_types": {"atlas": _records(atlas_cancer), "peer": _records(peer_cancer)},
    }  # fmt: skip
    if not (error or "").startswith("evaluation failed"):  # an evaluation bug is fixed and rerun, not cached
        cache.write_text(json.dumps(rec, indent=1))
    return rec


# -------------------------------------------------------------------------------------- report
def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    return f"{v:.{digits}f}"


def _values(records: list[dict], who: str, key: str | None) -> list[float | None]:
    return [r[who].get(key) for r in records] if key else []


def _median_worst(vals: list[float | None], lower_is_better: bool) -> tuple[float | None, float | None]:
    ok = [v for v in vals if v is not None]
    if not ok:
        return None, None
    return statistics.median(ok), (max(ok) if lower_is_better else min(ok))


def _meets(f: Figure, atlas: dict) -> bool | None:
    """Whether one run meets ``f``'s target (None: the figure has no target or no value)."""
    if f.threshold is None and f.above is None:
        return None
    v = atlas.get(f.key)
    if v is None:
        return False
    ok = True
    if f.threshold is not None:
        ok &= v >= f.threshold
    if f.above is not None:
        ref = atlas.get(f.above)
        ok &= ref is not None and (v > ref if f.strict else v >= ref)
    return ok


def _beats(f: Figure, r: dict) -> bool | None:
    """Whether atlas is at least as good as the peer in run ``r`` (None: the peer has no figure)."""
    if f.peer_key is None or (
        f.threshold is None and f.above is None
    ):  # only figures with a target are judged
        return None
    a, p = r["atlas"].get(f.key), r["peer"].get(f.peer_key)
    if p is None:
        return None
    if a is None:
        return False
    return a <= p if f.lower_is_better else a >= p


def _count(flags: list[bool | None]) -> str:
    known = [x for x in flags if x is not None]
    return f"{sum(known)}/{len(known)}" if known else DASH


def summary_rows(records: list[dict]) -> list[dict]:
    """The summary table: median and worst case over all runs, target, runs meeting it, atlas >= peer."""
    rows = []
    for f in FIGURES:
        vals = _values(records, "atlas", f.key)
        am, aw = _median_worst(vals, f.lower_is_better)
        missing = sum(v is None for v in vals)  # failed runs: no value is the worst case
        worst = _fmt(aw, f.digits) + (f" (none in {missing} run(s))" if missing else "")
        pm, pw = _median_worst(_values(records, "peer", f.peer_key), f.lower_is_better)
        met = [_meets(f, r["atlas"]) for r in records]
        beats = [_beats(f, r) for r in records]
        verdicts = [x for x in (*met, *beats) if x is not None]
        rows.append({
            "figure": f.label, "target": f.target, "atlas median": _fmt(am, f.digits), "atlas worst": worst,
            "peer median": _fmt(pm, f.digits), "peer worst": _fmt(pw, f.digits), "runs meeting target": _count(met),
            "atlas >= peer (runs)": _count(beats), "pass": ("yes" if all(verdicts) else "NO") if verdicts else "",
        })  # fmt: skip
    t = [r["timing"]["atlas_s"] for r in records]
    rows.append({"figure": "atlas run wall time, s", "target": "", "atlas median": _fmt(statistics.median(t), 0),
                 "atlas worst": _fmt(max(t), 0), "peer median": _fmt(statistics.median(r["timing"]["peer_s"] for r in records), 0),
                 "peer worst": _fmt(max(r["timing"]["peer_s"] for r in records), 0), "runs meeting target": "",
                 "atlas >= peer (runs)": "", "pass": ""})  # fmt: skip
    return rows


def _table(rows: list[dict]) -> str:
    return "\n".join(markdown_table(rows))


def point_table(records: list[dict], point: str) -> str:
    """Per grid point: every figure per seed, atlas / peer."""
    recs = [r for r in records if r["point"] == point]
    rows = []
    for f in FIGURES:
        row = {"figure": f.label.strip()}
        for r in recs:
            peer = _fmt(r["peer"].get(f.peer_key), f.digits) if f.peer_key else DASH
            row[f"seed {r['seed']} atlas / peer"] = f"{_fmt(r['atlas'].get(f.key), f.digits)} / {peer}"
        rows.append(row)
    return _table(rows)


def pooled_reliability(records: list[dict]) -> pd.DataFrame:
    """The reliability tables of all runs pooled (counts summed, means weighted by counts)."""
    tables = [pd.DataFrame(r["reliability"]) for r in records if r["reliability"]]
    if not tables:  # every run failed
        return pd.DataFrame(columns=["bin_lo", "bin_hi", "n_cells", "mean_confidence", "accuracy"])
    df = pd.concat(tables, ignore_index=True)
    df["conf_sum"] = df["mean_confidence"].fillna(0) * df["n_cells"]
    df["acc_sum"] = df["accuracy"].fillna(0) * df["n_cells"]
    g = df.groupby(["bin_lo", "bin_hi"], as_index=False)[["n_cells", "conf_sum", "acc_sum"]].sum()
    n = g["n_cells"].replace(0, np.nan)
    g["mean_confidence"], g["accuracy"] = g["conf_sum"] / n, g["acc_sum"] / n
    return g[["bin_lo", "bin_hi", "n_cells", "mean_confidence", "accuracy"]]


def timing_table(records: list[dict]) -> str:
    rows = [{"point": r["point"], "seed": r["seed"], "atlas run, s": f"{r['timing']['atlas_s']:.0f}",
             "atlas peak RSS, GiB": f"{r['timing']['atlas_peak_rss_gib']:.2f}",
             "peer (ingest + scanpy), s": f"{r['timing']['peer_s']:.0f}"} for r in records]  # fmt: skip
    return _table(rows)


def print_report(records: list[dict]) -> list[dict]:
    """Print the summary, per-point tables, reliability and timings; returns the summary rows."""
    from atlas.simulate.evaluate import expected_calibration_error

    rows = summary_rows(records)
    print(_table(rows))
    for point in dict.fromkeys(r["point"] for r in records):
        print(f"\n{point}:\n{point_table(records, point)}")
    rel = pooled_reliability(records)
    print(f"\ncell_type_confidence reliability (pooled, ECE {expected_calibration_error(rel):.3f}):")
    print(rel.round(3).to_string(index=False))
    for r in records:
        print(f"\n{r['point']} seed {r['seed']} per cancer (atlas):")
        print(pd.DataFrame(r["cancer_types"]["atlas"]).round(3).to_string(index=False))
    print("\n" + timing_table(records))
    return rows


def write_raw(records: list[dict], work: Path, command: str) -> Path:
    """All raw figures to ``WORK/robustness.json`` (rebuild with --from-json) and a flat CSV."""
    path = work / "robustness.json"
    path.write_text(json.dumps({"command": command, "machine": machine(), "records": records}, indent=1))
    flat = [{"point": r["point"], "seed": r["seed"], "who": who, "figure": k, "value": v}
            for r in records for who in ("atlas", "peer") for k, v in r[who].items()]  # fmt: skip
    pd.DataFrame(flat).to_csv(work / "robustness.csv", index=False)
    return path


def record_markdown(records: list[dict], rows: list[dict], command: str) -> None:
    """Append the dated section to ``benchmarks/robustness.md``."""
    from atlas.simulate.evaluate import expected_calibration_error

    grid = list(dict.fromkeys(r["point"] for r in records))
    seeds = sorted({r["seed"] for r in records})
    load = os.getloadavg()
    notes = (f"grid {grid} x seeds {seeds}, {records[0]['n_cells']} cells, {records[0]['n_datasets']} data sets per run; "
             f"worst = lowest (highest for ECE / unknown share); pass = every run meets the target and atlas >= the "
             f"peer in every run where the peer has the figure. Peer: atlas ingest with QC off (harmonisation is "
             f"not compared) + plain scanpy; its batch figures are the unintegrated PCA row of metrics.csv; it has "
             f"no QC, states, pseudotime or interval. Load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}.")  # fmt: skip
    record("robustness.md", "Robustness: atlas vs a naive scanpy peer over simulator difficulties", rows, command,
           notes=notes)  # fmt: skip
    rel = pooled_reliability(records)
    parts = ["", "Per grid point (atlas / peer per seed):"]
    for point in grid:
        parts += ["", f"**{point}**", "", point_table(records, point)]
    rel_rows = [
        {k: _fmt(v) if isinstance(v, float) else v for k, v in row.items()} for row in rel.to_dict("records")
    ]
    parts += ["", f"Reliability of `cell_type_confidence`, pooled over all runs (ECE {expected_calibration_error(rel):.3f}):",
              "", _table(rel_rows), "", "Wall time per run:", "", timing_table(records), ""]  # fmt: skip
    with (REPO / "benchmarks" / "robustness.md").open("a") as fh:
        fh.write("\n".join(parts) + "\n")


def standing_table(sets: dict[str, list[dict]]) -> str:
    """One row per figure with a target, one column per set of runs (e.g. the simulator grid at 8,000 cells, an
    independent generator's seeds): runs meeting the target, the worst value and runs where atlas >= the peer."""
    summaries = {label: summary_rows(records) for label, records in sets.items()}
    rows = []
    for i, f in enumerate(FIGURES):
        if f.threshold is None and f.above is None:
            continue
        row = {"figure": f.label, "target": f.target}
        for label, summary in summaries.items():
            s = summary[i]
            cell = f"{s['runs meeting target']} (worst {s['atlas worst']})"
            if s["atlas >= peer (runs)"] != DASH:
                cell += f"; >= peer {s['atlas >= peer (runs)']}"
            row[f"{label} ({len(sets[label])} run{'' if len(sets[label]) == 1 else 's'})"] = cell
        rows.append(row)
    return _table(rows)


# ----------------------------------------------------------------------------------------- main
def _grid_problem(grid: list[str]) -> str | None:
    """What is wrong with ``--grid``: points that are neither simulator difficulty presets nor independent cohorts."""
    from atlas.simulate.difficulty import DIFFICULTY_PRESETS

    unknown = [p for p in grid if p not in INDEPENDENT_POINTS and p not in QC_POINTS and p not in DIFFICULTY_PRESETS]
    if not unknown:
        return None
    return (f"--grid {' '.join(unknown)}: unknown grid point; choose simulator difficulty presets "
            f"({', '.join(DIFFICULTY_PRESETS)}), independent cohorts ({', '.join(INDEPENDENT_POINTS)}) or "
            f"other QC on them ({', '.join(QC_POINTS)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", nargs="+", default=list(DEFAULT_GRID),
                    help=f"simulate.difficulty presets, or {' / '.join(INDEPENDENT_POINTS)} (scripts/independent_cohort.py; "
                         "the second also holds mast, plasma and dendritic cells, types outside the marker panel; "
                         "the third has droplet platforms capture few neutrophils, the fourth 8 %% doublets), or "
                         f"{' / '.join(QC_POINTS)} (the independent cohort with fixed-threshold QC, the doublet cohort "
                         "with scrublet)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--n-cells", type=int, default=8000)
    ap.add_argument("--n-datasets", type=int, default=8)
    ap.add_argument("--work-dir", type=Path, default=None, help="where runs go (default: a temp dir)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to benchmarks/")
    ap.add_argument(
        "--skip-existing", action="store_true", help="reuse finished runs and results in --work-dir"
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="rerun `atlas run` in existing run folders (the pipeline skips stages whose settings and inputs are "
        "unchanged) and re-evaluate; wall times then cover only the stages that reran",
    )
    ap.add_argument("--jobs", type=int, default=1, help="atlas runs at once (each is a child process)")
    ap.add_argument("--from-json", type=Path, default=None, help="rebuild the report from a robustness.json")
    ap.add_argument("--standing", nargs="+", metavar="LABEL=JSON", default=None,
                    help="print one table over several robustness.json files (each a column: runs meeting each "
                    "target, worst value, runs where atlas >= the peer); runs nothing")
    args = ap.parse_args()
    command = "python " + shlex.join(["scripts/bench_robustness.py", *sys.argv[1:]])

    if args.standing:
        sets = {}
        for item in args.standing:
            label, sep, path = item.partition("=")
            if not sep:
                ap.error(f"--standing {item!r}: write LABEL=path/to/robustness.json")
            try:
                sets[label] = json.loads(Path(path).read_text())["records"]
            except (OSError, ValueError, KeyError) as err:
                ap.error(f"--standing {item!r}: {path} is not a robustness.json of this script ({err!r})")
        print(standing_table(sets))
        return
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        rows = print_report(data["records"])
        if not args.no_record:
            record_markdown(data["records"], rows, f"{data['command']} (report rebuilt with {command})")
        return

    if problem := _grid_problem(args.grid):
        ap.error(problem)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="atlas_bench_robustness_"))
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}", flush=True)
    jobs = [(p, s) for p in args.grid for s in args.seeds]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        timings = list(pool.map(lambda ps: run_atlas(runs, *ps, args), jobs))
    records = [evaluate_one(runs, p, s, t, args) for (p, s), t in zip(jobs, timings, strict=True)]
    raw = write_raw(records, work, command)
    rows = print_report(records)
    print(f"\nraw figures: {raw} (rebuild with --from-json {raw})")
    if not args.no_record:
        record_markdown(records, rows, command)


if __name__ == "__main__":
    main()
