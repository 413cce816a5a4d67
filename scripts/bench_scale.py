"""How each stage of ``atlas run`` grows with the number of cells: 10k, 100k and 1M cells on this machine.

For every size the script simulates a cohort (or reuses one under ``--data``), then runs the pipeline
of ``configs/large_atlas_cpu.yaml`` on it one stage at a time (``atlas run CONFIG --until STAGE``, each
in a fresh process), and records per stage: the stage's wall time (the runner's own figure, without
the process start-up), the peak resident memory of the whole process tree (polled every 0.25 s, so
child processes such as Lightning's or the neighbour graph's count too), and the bytes the tree read
(``read_chars`` of ``/proc/<pid>/io``: every read call, whether served by the disk or the page cache).
Then ``atlas query`` maps a 10,000-cell cohort onto the largest reference. Growth exponents
``k`` in ``time ~ n^k`` are fitted between consecutive sizes.

The same settings run at every size (so the exponents compare like with like): the step budget of scVI
is fixed (``train_steps``), which is what a user of a CPU machine would choose for a large atlas.

A long run may be interrupted: each finished stage's figures are saved beside its run
(``<runs>/n<size>.bench_<stage>.json``), and a rerun of the script resumes with the next stage (the
pipeline itself skips finished stages); the table gives the time each stage was measured, and a stage the
pipeline had already finished (a resumed ``atlas run``) says so. Two invocations may run different sizes
at the same time (the ``load`` column shows how much the stages shared the CPUs).

    python scripts/bench_scale.py --sizes 10000 100000 1000000      # results -> benchmarks/scale.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml
from _bench_common import REPO, machine, markdown_table

ATLAS = [sys.executable, "-m", "atlas.cli"]
STAGES = ["ingest", "integrate", "score", "analyse", "report"]
POLL_SECONDS = 0.25


def datasets_for(n_cells: int) -> int:
    """Data sets simulated for a cohort of ``n_cells``: 8 up to 10k, 12 to 100k, 20 above."""
    return 8 if n_cells <= 10_000 else 12 if n_cells <= 100_000 else 20


# ------------------------------------------------------------------------------ measuring a process
def measure(cmd: list[str], log_file: Path) -> dict:
    """Run ``cmd``; wall seconds, peak RSS of its process tree (GiB) and bytes its tree read (GiB)."""
    import psutil

    t0 = time.perf_counter()
    with log_file.open("a") as log:
        log.write(f"\n$ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        root = psutil.Process(proc.pid)
        peak_rss, reads, loads = 0, {}, []
        while proc.poll() is None:
            loads.append(os.getloadavg()[0])
            rss = 0
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
            for p in tree:
                try:
                    with p.oneshot():
                        rss += p.memory_info().rss
                        reads[p.pid] = max(reads.get(p.pid, 0), p.io_counters().read_chars)
                except psutil.Error:
                    continue
            peak_rss = max(peak_rss, rss)
            time.sleep(POLL_SECONDS)
    if proc.returncode != 0:
        raise RuntimeError(f"failed ({proc.returncode}): {shlex.join(cmd)}; see {log_file}")
    return {"wall_seconds": time.perf_counter() - t0, "peak_rss_gib": peak_rss / 2**30,
            "read_gib": sum(reads.values()) / 2**30, "load": sum(loads) / max(len(loads), 1)}


# ------------------------------------------------------------------------------------ the cohorts
def simulate(out: Path, n_cells: int, n_datasets: int, seed: int, log_file: Path) -> dict | None:
    """Simulate a cohort into ``out`` unless it is there; its measurement, or None when reused."""
    if (out / "ingest.yaml").exists():
        print(f"reusing {out}", flush=True)
        return None
    print(f"simulating {n_cells:,} cells in {n_datasets} data sets -> {out}", flush=True)
    return measure([*ATLAS, "simulate", "--out", str(out), "--n-cells", str(n_cells), "--n-datasets",
                    str(n_datasets), "--seed", str(seed), "--overwrite"], log_file)


def run_config(template: Path, sim: Path, run_dir: Path, name: str) -> Path:
    """The template config with this cohort's ingest.yaml and run directory, written beside the run."""
    cfg = yaml.safe_load(template.read_text())
    cfg.update(name=name, run_dir=str(run_dir.resolve()), ingest=str((sim / "ingest.yaml").resolve()))
    path = run_dir.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def stage_summary(run_dir: Path, stage: str) -> dict:
    """The runner's record of ``stage`` in provenance.json (status, seconds, peak RSS of the main process)."""
    prov = json.loads((run_dir / "provenance.json").read_text())
    return prov.get("run_summary", {}).get("stages", {}).get(stage, {})


def run_stages(cfg: Path, run_dir: Path, n_cells: int, log_file: Path, run: bool = True) -> list[dict]:
    """Run the pipeline stage by stage; one row per stage (saved so an interrupted benchmark resumes).

    ``run=False`` only collects the rows saved so far (``--no-run``: a table of a benchmark still running).
    """
    rows = []
    for stage in STAGES:
        saved = run_dir.parent / f"{run_dir.name}.bench_{stage}.json"
        if saved.exists():
            rows.append(json.loads(saved.read_text()))  # measured by an earlier invocation: its time is in the row
            continue
        if not run:
            break
        print(f"[{n_cells:,} cells] {stage} ...", flush=True)
        m = measure([*ATLAS, "run", str(cfg), "--until", stage], log_file)
        s = stage_summary(run_dir, stage)
        row = {"cells": n_cells, "stage": stage, "status": s.get("status", "?"),
               "seconds": s.get("seconds", m["wall_seconds"]), "process_seconds": m["wall_seconds"],
               "peak_rss_gib": m["peak_rss_gib"], "read_gib": m["read_gib"], "load": m["load"],
               "measured": time.strftime("%m-%d %H:%M"), "note": ""}
        if row["status"] == "skipped":
            row["note"] = "finished by an earlier `atlas run` (resumed; figures of this process only)"
        saved.write_text(json.dumps(row))
        print(f"  {stage}: {row['seconds']:.0f} s, peak {row['peak_rss_gib']:.2f} GiB, read "
              f"{row['read_gib']:.2f} GiB", flush=True)
        rows.append(row)
    return rows


def run_query(ref_dir: Path, query_sim: Path, out: Path, log_file: Path) -> dict:
    """``atlas query`` of the query cohort against the reference run ``ref_dir``."""
    saved = out.parent / f"{out.name}.bench.json"
    if saved.exists():
        return json.loads(saved.read_text())
    print(f"query {query_sim} -> {ref_dir}", flush=True)
    m = measure([*ATLAS, "query", str(ref_dir), str(query_sim / "ingest.yaml"), "--out", str(out)], log_file)
    row = {"stage": "query", "seconds": m["wall_seconds"], "process_seconds": m["wall_seconds"],
           "peak_rss_gib": m["peak_rss_gib"], "read_gib": m["read_gib"], "load": m["load"],
           "measured": time.strftime("%m-%d %H:%M"), "note": ""}
    saved.write_text(json.dumps(row))
    return row


# ------------------------------------------------------------------------------------------ report
def exponents(rows: list[dict]) -> list[dict]:
    """``k`` of ``time ~ n^k`` (and of peak memory) per stage between consecutive sizes."""
    out = []
    sizes = sorted({r["cells"] for r in rows})
    by = {(r["cells"], r["stage"]): r for r in rows}
    for a, b in zip(sizes, sizes[1:], strict=False):
        for stage in STAGES:
            ra, rb = by.get((a, stage)), by.get((b, stage))
            if not ra or not rb or min(ra["seconds"], rb["seconds"]) <= 0:
                continue
            ln = math.log(b / a)
            out.append({"stage": stage, "between": f"{a:,} -> {b:,}",
                        "time exponent k": f"{math.log(rb['seconds'] / ra['seconds']) / ln:.2f}",
                        "memory exponent": f"{math.log(rb['peak_rss_gib'] / ra['peak_rss_gib']) / ln:.2f}"})
    return out


def fmt(r: dict) -> dict:
    return {**r, "cells": f"{r['cells']:,}" if isinstance(r.get("cells"), int) else r.get("cells", ""),
            "seconds": f"{r['seconds']:.0f}", "minutes": f"{r['seconds'] / 60:.1f}",
            "peak RSS GiB": f"{r['peak_rss_gib']:.2f}", "read GiB": f"{r['read_gib']:.2f}",
            "load": f"{r.get('load', float('nan')):.1f}"}


def integration_checks(rows: list[dict], runs: Path) -> list[dict]:
    """Per size, scVI against the Harmony baseline and the convergence check the integrate stage recorded."""
    out = []
    for n in sorted({r["cells"] for r in rows if r["stage"] == "integrate"}):
        path = runs / f"n{n}" / "reference" / "checks.json"
        if not path.exists():
            continue
        c = json.loads(path.read_text())
        scvi = c.get("baselines", {}).get("embeddings", {}).get("X_scVI", {})
        harmony = c.get("baselines", {}).get("harmony", {})
        conv = c.get("convergence", {}).get("scvi", {})
        f = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
        out.append({"cells": f"{n:,}", "scVI batch correction": f(scvi.get("batch_correction")),
                    "Harmony": f(harmony.get("batch_correction")), "scVI iLISI": f(scvi.get("ilisi")),
                    "Harmony iLISI": f(harmony.get("ilisi")),
                    "ELBO levelled off": {True: "yes", False: "no"}.get(conv.get("plateau_reached"), "—")})
    return out


def write_markdown(path: Path, rows: list[dict], sims: list[dict], query: dict | None, command: str,
                   runs: Path) -> None:
    lines = [f"\n## Scale: atlas run stage by stage ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"- machine: {machine()}", f"- command: `{command}`",
             "- settings: configs/large_atlas_cpu.yaml at every size (scVI: batch 1,024, 1,500 steps; sub-atlas "
             "1,000 steps; zarr store); time = the stage as the runner timed it; peak RSS = whole process tree "
             "(polled every 0.25 s); read = read_chars of the tree (page cache included); load = mean 1-minute load "
             f"average during the stage ({os.cpu_count()} cores: above that, the stage shared the CPUs)", ""]
    lines += markdown_table([fmt(r) for r in rows], ["cells", "stage", "status", "minutes", "peak RSS GiB", "read GiB", "load", "measured", "note"])
    if sims:
        lines += ["", "Simulating the cohorts (not part of a run):", ""]
        lines += markdown_table([fmt(s) for s in sims], ["cells", "stage", "minutes", "peak RSS GiB", "note"])
    if query:
        lines += ["", "Query (10,000 cells mapped onto the largest reference, `atlas query`, whole command):", ""]
        lines += markdown_table([fmt({**query, "cells": query.get("cells", "")})],
                       ["cells", "stage", "minutes", "peak RSS GiB", "read GiB", "note"])
    checks = integration_checks(rows, runs)
    if checks:
        lines += ["", "Did the step budget train scVI enough? (`reference/checks.json` of each run: the run's own check)", ""]
        lines += markdown_table(checks, ["cells", "scVI batch correction", "Harmony", "scVI iLISI", "Harmony iLISI",
                                "ELBO levelled off"])
    exp = exponents(rows)
    if exp:
        lines += ["", "Growth between sizes (time ~ n^k; n log n between 10x sizes is k of about 1.1):", ""]
        lines += markdown_table(exp, ["stage", "between", "time exponent k", "memory exponent"])
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--data", type=Path, default=REPO / "bench_data" / "scale", help="cohorts and runs (git-ignored)")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "large_atlas_cpu.yaml")
    ap.add_argument("--query-cells", type=int, default=10_000, help="0 skips the query")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "scale.md")
    ap.add_argument("--no-run", action="store_true", help="only tabulate the stages measured so far")
    args = ap.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    log_file = args.data / "bench_scale.log"
    print(f"logs: {log_file}", flush=True)
    rows, sims = [], []
    for n in sorted(args.sizes):
        sim = args.data / f"sim_{n}"
        m = None if args.no_run else simulate(sim, n, datasets_for(n), args.seed, log_file)
        if m:
            sims.append({"cells": n, "stage": "simulate", "seconds": m["wall_seconds"], **m, "note": ""})
        run_dir = args.data / "runs" / f"n{n}"
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        cfg = run_config(args.config, sim, run_dir, f"scale_{n}")
        rows += run_stages(cfg, run_dir, n, log_file, run=not args.no_run)
    query = None
    if args.query_cells and not args.no_run:
        qsim = args.data / f"query_{args.query_cells}"
        simulate(qsim, args.query_cells, 2, args.seed + 101, log_file)
        largest = args.data / "runs" / f"n{max(args.sizes)}"
        query = {**run_query(largest, qsim, args.data / "runs" / f"query_n{max(args.sizes)}", log_file),
                 "cells": f"{args.query_cells:,} onto {max(args.sizes):,}"}
    command = "python scripts/bench_scale.py " + shlex.join(sys.argv[1:])
    write_markdown(args.out, rows, sims, query, command, args.data / "runs")
    (args.data / "scale_results.json").write_text(json.dumps({"rows": rows, "query": query}, indent=1))
    print(f"results appended to {args.out}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("ATLAS_PROGRESS_INTERVAL", "60")
    main()
