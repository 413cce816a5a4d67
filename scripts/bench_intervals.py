"""Coverage of the per-cancer T3-fraction intervals over few patients: atlas's two intervals and a naive peer.

    python scripts/bench_intervals.py                        # the full grid, 200 cohorts per setting (~10 min on 2 cores)
    python scripts/bench_intervals.py --reps 50 --no-record  # a quick look

A cancer type's T3-like fraction is the mean over its patients (``atlas.analyse.statistics.per_group``). Its
interval should cover the population mean of patients' fractions in about ``ci`` of cohorts. This benchmark
draws cohorts from patient models that are *not* atlas's simulator, so no rule of the pipeline was tuned to
them: a cancer type of k patients (1 to 12), each patient's fraction from a Beta with concentration 5
(patients differ widely) or 20, or from a logit-normal (logit sd 0.6 or 1.0; its mean computed by
quadrature); each patient's neutrophils Poisson around 20 or 150 (at least ``min_neutrophils_per_patient``),
their T3-like cells binomial. The patient table goes through atlas's own ``per_group`` with

- ``hierarchical``: atlas's default (the population mean's posterior under a beta-binomial model of the patients);
- ``bootstrap``: the two-stage percentile bootstrap over patients (atlas's interval before stop 36);
- ``naive_cells``: the peer, what a cell-level analysis reports: a Wilson interval on all the cancer type's
  cells pooled, as if cells were independent.

Printed and recorded (``benchmarks/statistics.md``): coverage and median width per setting, and per method the
worst coverage over the grid and by number of patients (one patient: the hierarchical interval rests on its prior
for how patients differ; the bootstrap has none). No timing: this is a calibration check.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import record  # noqa: E402
from independent_cohort import logit_normal_mean  # noqa: E402

from atlas.analyse.statistics import StatsSettings, per_group  # noqa: E402

N_PATIENTS = (1, 2, 3, 4, 6, 8, 12)
MEANS = (0.05, 0.2, 0.4)
FAMILIES = (("beta", 5.0), ("beta", 20.0), ("logit_normal", 0.6), ("logit_normal", 1.0))
CELLS = (20, 150)
METHODS = ("hierarchical", "bootstrap", "naive_cells")


def _patient_fractions(rng, family: str, param: float, centre: float, size) -> tuple[np.ndarray, float]:
    """Patients' true fractions and the population mean they are drawn around."""
    if family == "beta":
        return rng.beta(centre * param, (1 - centre) * param, size=size), centre
    mu = np.log(centre / (1 - centre))
    return 1 / (1 + np.exp(-(mu + rng.normal(0, param, size=size)))), logit_normal_mean(centre, param)


def _cohorts(rng, k: int, family: str, param: float, centre: float, cells: int, reps: int, floor: int):
    """``reps`` cancer types of ``k`` patients as one patients table (each cohort its own cancer type)."""
    frac, truth = _patient_fractions(rng, family, param, centre, (reps, k))
    n = np.maximum(rng.poisson(cells, size=(reps, k)), floor)
    n_t3 = rng.binomial(n, frac)
    return pd.DataFrame({
        "cancer_type": np.repeat([f"c{i}" for i in range(reps)], k), "tissue": "tumour",
        "patient_id": [f"p{j}" for _ in range(reps) for j in range(k)],
        "n_neutrophils": n.ravel(), "n_t3": n_t3.ravel(), "t3_fraction": (n_t3 / n).ravel(), "mean_index": 0.0,
    }), truth  # fmt: skip


def _wilson(x: np.ndarray, n: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.stats import norm

    z = norm.ppf(1 - (1 - ci) / 2)
    p = x / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def _intervals(pats: pd.DataFrame, method: str, n_boot: int, seed: int, ci: float) -> pd.DataFrame:
    if method == "naive_cells":
        pooled = pats.groupby("cancer_type", sort=False)[["n_t3", "n_neutrophils"]].sum()
        lo, hi = _wilson(pooled["n_t3"].to_numpy(float), pooled["n_neutrophils"].to_numpy(float), ci)
        return pd.DataFrame({"t3_fraction_lo": lo, "t3_fraction_hi": hi}, index=pooled.index)
    g = per_group(pats, StatsSettings(n_boot=n_boot, ci=ci, random_state=seed, interval=method))
    return g.set_index("cancer_type")[["t3_fraction_lo", "t3_fraction_hi"]]


def run(reps: int, n_boot: int, seed: int, ci: float) -> list[dict]:
    rng = np.random.default_rng(seed)
    floor = StatsSettings().min_neutrophils_per_patient
    rows = []
    for k in N_PATIENTS:
        for family, param in FAMILIES:
            for centre in MEANS:
                for cells in CELLS:
                    pats, truth = _cohorts(rng, k, family, param, centre, cells, reps, floor)
                    row = {"patients": k, "patient_model": f"{family} {param:g}", "centre": centre,
                           "population_mean": round(truth, 4), "cells_per_patient": cells}  # fmt: skip
                    for m in METHODS:
                        iv = _intervals(pats, m, n_boot, seed, ci)
                        if iv["t3_fraction_lo"].isna().all():  # no interval at all (the bootstrap, one patient)
                            row[f"{m}_coverage"] = row[f"{m}_width"] = float("nan")
                            continue
                        inside = (iv["t3_fraction_lo"] <= truth) & (truth <= iv["t3_fraction_hi"])
                        row[f"{m}_coverage"] = round(float(inside.mean()), 3)
                        row[f"{m}_width"] = round(float((iv["t3_fraction_hi"] - iv["t3_fraction_lo"]).median()), 3)
                    rows.append(row)
                    print(row, flush=True)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per method: worst and median coverage over the grid from 2 patients, and the worst for each number of patients
    ("none": no interval)."""
    df = pd.DataFrame(rows)
    several = df[df["patients"] >= 2]
    out = []
    for m in METHODS:
        cov = several[f"{m}_coverage"]
        row = {"method": m, "median coverage, >= 2 patients": f"{cov.median():.3f}",
               "worst coverage, >= 2 patients": f"{cov.min():.3f}",
               "median width, >= 2 patients": f"{several[f'{m}_width'].median():.3f}"}  # fmt: skip
        for k, grp in df.groupby("patients"):
            worst = grp[f"{m}_coverage"].min()
            row[f"worst, {k} patient{'s' if k > 1 else ''}"] = "none" if np.isnan(worst) else f"{worst:.3f}"
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=200, help="cohorts per setting")
    ap.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (atlas's default)")
    ap.add_argument("--ci", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to benchmarks/")
    args = ap.parse_args()
    if args.reps < 10:
        ap.error("--reps: at least 10 cohorts per setting (coverage from fewer is noise)")
    rows = run(args.reps, args.n_boot, args.seed, args.ci)
    summ = summary(rows)
    print(pd.DataFrame(summ).to_string(index=False))
    if not args.no_record:
        command = "python " + shlex.join(["scripts/bench_intervals.py", *sys.argv[1:]])
        note = (f"{args.reps} cohorts per setting; nominal coverage {args.ci:g}; coverage's standard error at 0.95 is "
                f"{np.sqrt(0.95 * 0.05 / args.reps):.3f}")  # fmt: skip
        record("statistics.md", "Per-cancer interval coverage over few patients: summary", summ, command, notes=note)
        record("statistics.md", "Per-cancer interval coverage over few patients: every setting", rows, command)


if __name__ == "__main__":
    main()
