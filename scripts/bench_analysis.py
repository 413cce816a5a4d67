"""Issue 5 figures: `atlas demo` wall time (median of N fresh runs) and accuracy against the simulated truth.

    python scripts/bench_analysis.py                      # 3 demo runs, evaluate the last
    python scripts/bench_analysis.py --runs 1 --n-cells 30000 --n-datasets 10

Each run is a fresh `atlas run` of the built-in demo config (or its size overrides) in a new
directory, timed in a child process. The last run is then compared with its `data/truth` (the
pipeline itself never reads truth). Results are appended to benchmarks/analysis.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import record, run_measured  # noqa: E402

from atlas.pipeline.demo import demo_config  # noqa: E402
from atlas.simulate.evaluate import evaluate_run  # noqa: E402

TARGETS = {
    "neutrophil_precision": 0.95, "neutrophil_recall": 0.95, "index_auroc_t3": 0.9, "state_macro_f1": 0.8,
    "cancer_spearman": 0.9, "pseudotime_spearman": 0.8,
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="fresh demo runs to time (median reported)")
    ap.add_argument("--n-cells", type=int, default=None, help="override the demo's cells")
    ap.add_argument("--n-datasets", type=int, default=None, help="override the demo's data sets")
    ap.add_argument("--work-dir", type=Path, default=None, help="where the runs go (default: a temp dir)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to benchmarks/")
    args = ap.parse_args()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="atlas_bench_analysis_"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(work / "run").model_dump(mode="json")
    if args.n_cells:
        cfg["simulate"]["n_cells"] = args.n_cells
    if args.n_datasets:
        cfg["simulate"]["n_datasets"] = args.n_datasets
    times, peaks, run_dir = [], [], None
    for i in range(args.runs):
        run_dir = work / f"run{i}"
        cfg["run_dir"] = str(run_dir)
        cfg_path = work / f"run{i}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        m = run_measured([sys.executable, "-m", "atlas.cli", "-q", "run", str(cfg_path)])
        times.append(m["seconds"])
        peaks.append(m["peak_rss_gib"])
        print(
            f"run {i + 1}/{args.runs}: {m['seconds']:.1f} s, peak RSS {m['peak_rss_gib']:.2f} GiB", flush=True
        )
    ev = evaluate_run(run_dir)
    per_cancer = ev.pop("cancer_types")
    print(per_cancer.to_string(index=False))
    rows = []
    for key, value in ev.items():
        target = TARGETS.get(key)
        rows.append({"figure": key, "value": f"{value:.3f}" if value % 1 else f"{value:.0f}",
                     "target": f">= {target}" if target else "",
                     "met": ("yes" if value >= target else "NO") if target else ""})  # fmt: skip
    rows.append(
        {
            "figure": "demo wall time, s (median)",
            "value": f"{statistics.median(times):.1f}",
            "target": "<= 600",
            "met": "yes" if statistics.median(times) <= 600 else "NO",
        }
    )
    rows.append(
        {"figure": "demo runs, s", "value": ", ".join(f"{t:.1f}" for t in times), "target": "", "met": ""}
    )
    rows.append({"figure": "demo peak RSS, GiB (max)", "value": f"{max(peaks):.2f}", "target": "", "met": ""})
    for r in rows:
        print(f"{r['figure']:<40} {r['value']:>14} {r['target']:>8} {r['met']}")
    if not args.no_record:
        cols = [
            "cancer_type",
            "mean_t3_fraction",
            "cohort_t3_fraction",
            "n_patients",
            "t3_fraction",
            "t3_fraction_lo",
            "t3_fraction_hi",
        ]
        pc = per_cancer[cols].round(3).astype(str)
        table = "\n".join(
            [
                "| " + " | ".join(cols) + " |",
                "|" + "---|" * len(cols),
                *("| " + " | ".join(r) + " |" for r in pc.to_numpy()),
            ]
        )
        load = os.getloadavg()
        record("analysis.md", "Neutrophil analysis vs simulated truth", rows,
               "python " + shlex.join(["scripts/bench_analysis.py", *sys.argv[1:]]),
               notes=f"load average during the run {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; per-cancer tumour "
                     f"T3-like fractions (estimate and patient-bootstrap interval vs truth):\n\n{table}\n")  # fmt: skip


if __name__ == "__main__":
    main()
