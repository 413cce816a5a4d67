"""Benchmark query mapping (``atlas query``) on held-out data sets of a simulated cohort.

1. Generate a cohort: atlas's simulator (``--cohort simulator``, optionally a ``--difficulty`` preset of
   ``simulate.difficulty``) or ``scripts/independent_cohort.py`` (``--cohort independent``: a generator
   designed apart from atlas, with its own column names, depths and programmes). Hold out ``--hold``
   (default: the simulator's ds02_HCC and ds08_HCC, HCC in one 10x data set with Ensembl IDs and one
   Smart-seq2, about 10,000 cells after QC at the default size; the independent cohort's every data set
   of the cancer type of its second data set, so the reference has never seen that cancer).
2. Build a reference run from the others: ingest, drop every cell of ``--drop`` (default B cells, so
   the query holds a type the reference lacks), integrate with ``atlas demo``'s scVI settings (6,000
   gradient steps of 256 cells; ``--ref-epochs N``: N epochs of 1,024 cells instead, the benchmark's
   setting before 2026-12-06), score, annotate. Annotation: the real analysis stage
   (``atlas.analyse.stage.analyse`` with ``atlas demo``'s settings) when it runs (``--annotate
   auto|analysis``), else cell types and states copied from the ground truth (``--annotate truth``, or
   the fallback, which the output says).
3. Map the held-out data sets with ``map_query`` (defaults; CPU) and score against the ground truth:
   cell-type accuracy on cells of types the reference has (unknown counts as wrong), neutrophil-state
   macro-F1 (of ``predicted_state``, and of the reference neighbours' vote ``predicted_state_knn``), AUROC of the
   uncertainty for the absent type vs the known types and its share marked unknown (and, ``*_transfer``, the
   shares the transfer's vote and distance terms alone mark, before the query's marker check), wall time, and
   iLISI (scib-metrics ``ilisi_knn``, 90 exact neighbours, scaled to [0, 1]) of query vs reference cells of the
   same types on the joint latent. With the analysis stage's
   labels the transfer is also scored with the reference's true labels (same latent), which
   separates the transfer from the reference annotation.

Results are printed and appended to ``benchmarks/query.md`` with machine and command.

    python scripts/bench_query.py                        # ~20 min on 2 idle CPU cores (most of it the reference)
    python scripts/bench_query.py --cohort independent --n-cells 30000 --work W
    python scripts/bench_query.py --difficulty hard --work W
    python scripts/bench_query.py --n-cells 12000 --no-record    # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import independent_cohort  # noqa: E402
from _bench_common import REPO, record  # noqa: E402

log = logging.getLogger("bench_query")


def _quiet() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi", "py.warnings", "atlas.ingest", "atlas.score",
                 "atlas.catalogue"):  # fmt: skip
        logging.getLogger(name).setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")


SIMULATOR_HOLD = ["ds02_HCC", "ds08_HCC"]


def make_cohort(args, work: Path) -> Path:
    """Write the cohort under ``work/sim``; returns its ingest.yaml."""
    if args.cohort != "simulator":
        return independent_cohort.generate(work / "sim", args.n_cells, args.n_datasets, args.seed,
                                           **independent_cohort.VARIANTS[args.cohort])  # fmt: skip
    from atlas.simulate import simulate

    sim = simulate(work / "sim", n_cells=args.n_cells, n_datasets=args.n_datasets, seed=args.seed,
                   difficulty=args.difficulty, overwrite=True)  # fmt: skip
    return Path(sim.ingest_config)


def held_out(args, cfg) -> list[str]:
    """``--hold``, or the cohort's default: the simulator's two HCC data sets; for the independent cohort every
    data set of its second data set's cancer type (data set ids end with the cancer type)."""
    ids = [d.id for d in cfg.datasets]
    if args.hold:
        missing = set(args.hold) - set(ids)
        if missing:
            raise SystemExit(f"--hold {sorted(missing)}: not among {ids}")
        return list(args.hold)
    if args.cohort == "simulator":
        return list(SIMULATOR_HOLD)
    cancer = ids[1].rsplit("_", 1)[-1]
    return [i for i in ids if i.rsplit("_", 1)[-1] == cancer]


def reference_settings(args):
    """The reference's scVI and analysis settings: ``atlas demo``'s, or ``--ref-epochs`` epochs of 1,024 cells."""
    from atlas.integrate import IntegrateSettings
    from atlas.pipeline.demo import DEMO_ANALYSIS, DEMO_INTEGRATION

    arch = {"scarches_architecture": bool(getattr(args, "scarches_architecture", False))}
    if args.ref_epochs is None:
        integrate = DEMO_INTEGRATION.model_copy(update={"metrics": False, "seed": args.seed, **arch})
    else:
        integrate = IntegrateSettings(n_hvgs=2000, batch_size=1024, max_epochs=args.ref_epochs, early_stopping=False,
                                      metrics=False, seed=args.seed, **arch)  # fmt: skip
    return integrate, DEMO_ANALYSIS


def build_reference(args, work: Path) -> tuple[Path, str]:
    """The reference run directory (reused when built with the same parameters) and how it was annotated;
    sets ``args.hold`` to the held-out data sets."""
    from atlas.ingest.settings import load_ingest_config

    from helpers.query_fixtures import build_reference_run

    keys = ("cohort", "difficulty", "n_cells", "n_datasets", "seed", "hold", "drop", "ref_epochs",
            "scarches_architecture", "annotate")
    stamp = {k: getattr(args, k) for k in keys}
    run = work / "run"
    done = work / "reference.json"
    if done.exists() and json.loads(done.read_text()).get("params") == stamp:
        info = json.loads(done.read_text())
        args.hold = info["hold"]
        return run, info["annotation"]
    cfg = load_ingest_config(make_cohort(args, work))
    args.hold = held_out(args, cfg)
    ref_cfg = cfg.model_copy(update={"datasets": [d for d in cfg.datasets if d.id not in args.hold]})
    settings, analysis = reference_settings(args)
    t = time.perf_counter()
    annotation = "truth"
    if args.annotate in ("auto", "analysis"):
        try:
            build_reference_run(ref_cfg, run, settings, drop_cell_types=tuple(args.drop), annotate="analysis",
                                analysis=analysis)  # fmt: skip
            annotation = "analysis"
        except Exception as e:  # the analysis stage is young: fall back, and say so
            if args.annotate == "analysis":
                raise
            log.warning("analysis stage failed (%s: %s); reference labels copied from the ground truth instead",
                        type(e).__name__, e)  # fmt: skip
            from atlas.score.settings import DEFAULT_SIGNATURES

            from helpers.query_fixtures import annotate_from_truth

            annotate_from_truth(run, pd.read_parquet(run / "scores.parquet"), list(DEFAULT_SIGNATURES))
    else:
        build_reference_run(ref_cfg, run, settings, drop_cell_types=tuple(args.drop), annotate="truth")
    log.info("reference built in %.0f s (annotation: %s)", time.perf_counter() - t, annotation)
    done.write_text(json.dumps({"params": stamp, "hold": args.hold, "annotation": annotation,
                                "seconds": time.perf_counter() - t}))  # fmt: skip
    return run, annotation


def query_yaml(work: Path, hold: list[str]) -> Path:
    import yaml

    from atlas.ingest.settings import load_ingest_config

    cfg = load_ingest_config(work / "sim" / "ingest.yaml")  # both generators write it there
    q = cfg.model_copy(update={"datasets": [d for d in cfg.datasets if d.id in hold]})
    path = work / "query.yaml"
    path.write_text(yaml.safe_dump(q.model_dump(mode="json", exclude={"qc"})))
    return path


def state_f1(truth_state: pd.Series, pred_state: pd.Series, is_true_neut: np.ndarray) -> float:
    """Macro-F1 over true neutrophils; those not labelled neutrophil count as a wrong (``none``) state."""
    from sklearn.metrics import f1_score

    t = truth_state[is_true_neut].astype(str)
    p = pred_state[is_true_neut].astype(object).fillna("none").astype(str)
    return float(f1_score(t, p, average="macro", labels=sorted(t.unique())))


def ilisi(q, ref, types: list[str], seed: int) -> float:
    """scaled iLISI of query vs reference cells of the query's known types (matched counts per type)."""
    from scib_metrics import ilisi_knn
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    qt = q.obs["truth_cell_type"].astype(str).to_numpy()
    rt = ref.atlas.obs["truth_cell_type"].astype(str).to_numpy()
    q_idx, r_idx = [], []
    for t in types:
        qi, ri = np.flatnonzero(qt == t), np.flatnonzero(rt == t)
        n = min(len(qi), len(ri))
        if n:
            q_idx.append(rng.choice(qi, n, replace=False))
            r_idx.append(rng.choice(ri, n, replace=False))
    q_idx, r_idx = np.concatenate(q_idx), np.concatenate(r_idx)
    X = np.vstack([q.obsm["X_scVI"][q_idx], ref.latent()[r_idx]])
    batches = np.r_[np.zeros(len(q_idx), int), np.ones(len(r_idx), int)]
    d, i = NearestNeighbors(n_neighbors=90).fit(X).kneighbors(X)
    return float(ilisi_knn(NeighborsResults(indices=i, distances=d), batches))


def _transfer_only(obs: pd.DataFrame, absent: np.ndarray, threshold: float) -> dict:
    """Known and absent cells the transfer alone marks unknown (vote and distance terms; no marker check)."""
    u = np.maximum(obs["vote_uncertainty"].to_numpy(), obs["distance_uncertainty"].to_numpy())
    return {"known_marked_unknown_transfer": float((u[~absent] > threshold).mean()),
            "absent_marked_unknown_transfer": float((u[absent] > threshold).mean())}


def evaluate(out: Path, run: Path, args) -> dict:
    """Figures of the mapped query against the ground truth (truth_* read here only, for scoring)."""
    import anndata as ad
    from sklearn.metrics import roc_auc_score

    from atlas.query import load_reference, transfer_labels

    q = ad.read_h5ad(out / "query.h5ad")
    ref = load_reference(run)
    obs = q.obs
    truth, pred = obs["truth_cell_type"].astype(str), obs["predicted_cell_type"].astype(str)
    absent = truth.isin(args.drop).to_numpy()
    u = obs["prediction_uncertainty"].to_numpy()
    is_neut = (truth == "neutrophil").to_numpy()
    res = {
        "query_cells": q.n_obs,
        "cell_type_accuracy": float((pred[~absent] == truth[~absent]).mean()),
        "known_marked_unknown": float((pred[~absent] == "unknown").mean()),
        "state_macro_f1": state_f1(obs["truth_state"], obs["predicted_state"], is_neut),
        # the reference neighbours' vote, kept beside the own-evidence call (state_method: evidence)
        "state_macro_f1_knn": (state_f1(obs["truth_state"], obs["predicted_state_knn"], is_neut)
                               if "predicted_state_knn" in obs else float("nan")),
        "absent_auroc": float(roc_auc_score(absent, u)),
        "absent_marked_unknown": float((pred[absent] == "unknown").mean()),
        **({f"absent_marked_unknown_{t}": float((pred[(truth == t).to_numpy()] == "unknown").mean())
            for t in args.drop if (truth == t).any()} if len(args.drop) > 1 else {}),
        # the transfer's own uncertainty alone (before the query's marker check), on the same mapping
        **_transfer_only(obs, absent, float(q.uns["query"]["settings"]["uncertainty_threshold"])),
        "ilisi_query_vs_reference": ilisi(q, ref, sorted(set(truth[~absent])), args.seed),
    }
    # the transfer alone: the reference's true labels on the same latent
    rt = ref.atlas.obs["truth_cell_type"].astype(str).to_numpy()
    tab, _ = transfer_labels(ref.latent(), rt, q.obsm["X_scVI"], k=15)
    res["cell_type_accuracy_truth_labels"] = float((tab["label"].to_numpy()[~absent] == truth[~absent]).mean())
    rs = ref.atlas.obs["truth_state"].astype(str).to_numpy()
    rn = (rt == "neutrophil") & (rs != "")
    qn = tab["label"].to_numpy() == "neutrophil"
    st, _ = transfer_labels(ref.latent()[rn], rs[rn], q.obsm["X_scVI"][qn], k=15, distance_uncertainty=False)
    ps = pd.Series(np.full(q.n_obs, None, dtype=object), index=obs.index)
    ps[qn] = st["label"].to_numpy()
    res["state_macro_f1_truth_labels"] = state_f1(obs["truth_state"], ps, is_neut)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=REPO / "bench_data" / "query", help="work folder (reused)")
    p.add_argument("--n-cells", type=int, default=51_000, help="simulated cells (the query keeps ~10,000)")
    p.add_argument("--n-datasets", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cohort", choices=["simulator", *independent_cohort.VARIANTS], default="simulator",
                   help="atlas's simulator or a variant of scripts/independent_cohort.py (independent_extra_types holds "
                        "mast, plasma and dendritic cells, types outside the marker panel: drop them too, --drop B mast "
                        "plasma dendritic; independent_rare_droplet_neutrophils has 10x capture few neutrophils)")
    p.add_argument("--difficulty", default=None, help="simulate.difficulty preset (simulator only)")
    p.add_argument("--hold", nargs="+", default=None, help="data sets held out as the query (default: see above)")
    p.add_argument("--drop", nargs="+", default=["B"])
    p.add_argument("--ref-epochs", type=int, default=None,
                   help="reference scVI: this many epochs of 1,024 cells (default: atlas demo's 6,000 steps of 256)")
    p.add_argument("--scarches-architecture", action="store_true",
                   help="reference with integrate.scarches_architecture (batch fed to the encoder: query training "
                   "adapts the query's latent)")
    p.add_argument("--annotate", choices=["auto", "analysis", "truth"], default="auto")
    p.add_argument("--no-record", action="store_true", help="print only; do not append to benchmarks/query.md")
    args = p.parse_args()
    if args.difficulty and args.cohort != "simulator":
        p.error("--difficulty is a simulator preset; the independent cohort has its own generative choices")
    _quiet()
    from atlas.query import map_query

    args.work.mkdir(parents=True, exist_ok=True)
    run, annotation = build_reference(args, args.work)
    qy = query_yaml(args.work, args.hold)
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    result = map_query(run, qy, args.work / "query_out", overwrite=True, accelerator="cpu")
    wall = time.perf_counter() - t
    load_after = os.getloadavg()[0]
    figures = evaluate(args.work / "query_out", run, args)
    summary = json.loads((args.work / "query_out" / "query.json").read_text())
    row = {
        "reference labels": annotation,
        "reference cells": summary["reference"]["n_cells"],
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()},
        "map_wall_s": round(wall, 1),
        "train_s": round(result.seconds["mapping"], 1),
        "epochs": summary["mapping"]["epochs"],
        "load_1min": f"{load_before:.1f} / {load_after:.1f}",
    }
    print(json.dumps(row, indent=2))
    if not args.no_record:
        cohort = (f"{args.cohort} cohort (scripts/independent_cohort.py)" if args.cohort != "simulator" else
                  f"simulator (difficulty {args.difficulty or 'none'})")  # fmt: skip
        scvi = (f"{args.ref_epochs} epochs of 1,024 cells" if args.ref_epochs is not None else
                "atlas demo's settings (6,000 steps of 256 cells)")  # fmt: skip
        if args.scarches_architecture:
            scvi += ", scArches architecture (encode_covariates, layer norm)"
        note = (f"{cohort}, {args.n_cells} cells / {args.n_datasets} data sets (seed {args.seed}); query = {args.hold} "
                f"held out; {args.drop} removed from the reference; reference scVI {scvi}, 2,000 HVGs; "
                f"reference labels: {annotation}"
                + ("" if annotation == "analysis" else " (copied from the ground truth: the analysis stage was not used)")
                + "; map_wall_s = whole map_query (ingest, surgery, transfer, scores, report) on the CPU; load_1min = "
                "the machine's 1-minute load average before / after mapping (above the core count: shared cores)")  # fmt: skip
        cmd = "python " + shlex.join([str(Path(sys.argv[0]).resolve().relative_to(REPO)), *sys.argv[1:]])
        title = "held-out data sets of an independent cohort" if args.cohort != "simulator" else \
            "held-out simulated data sets"
        record("query.md", f"Query mapping: {title}", [row], cmd, note)


if __name__ == "__main__":
    main()
