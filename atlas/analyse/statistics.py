"""Reprogramming statistics at the right level: samples and patients, never cells.

Cells of one patient are not independent observations, so every interval here comes from
resampling *patients* (a cluster bootstrap), and every within-patient comparison is paired by
patient. Input is a per-cell table (obs of neutrophils) with a boolean T3-like flag and a
continuous reprogramming index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatsSettings:
    """Settings of the patient-level statistics."""

    min_neutrophils_per_patient: int = 5  # patient-tissue pairs with fewer are left out of fractions
    n_boot: int = 2000
    ci: float = 0.95
    random_state: int = 0


def per_sample(
    cells: pd.DataFrame,
    *,
    flag: str = "is_t3",
    index: str = "reprogramming_index",
    keys: tuple[str, ...] = ("dataset_id", "cancer_type", "patient_id", "tissue", "sample_id"),
) -> pd.DataFrame:
    """One row per sample: neutrophil count, T3-like fraction and mean reprogramming index."""
    g = cells.groupby(list(keys), observed=True, sort=True)
    out = g.agg(n_neutrophils=(flag, "size"), n_t3=(flag, "sum"), mean_index=(index, "mean")).reset_index()
    out["t3_fraction"] = out["n_t3"] / out["n_neutrophils"]
    return out


def per_patient(samples: pd.DataFrame, settings: StatsSettings = StatsSettings()) -> pd.DataFrame:
    """One row per patient and tissue: that patient's samples of the tissue pooled.

    Patient-tissue pairs with fewer than ``min_neutrophils_per_patient`` neutrophils are dropped
    (their fractions are noise). Pooling comes first, so a patient whose neutrophils are spread
    over several small samples (droplet platforms capture few) still counts.
    """
    g = samples.groupby(["cancer_type", "patient_id", "tissue"], observed=True, sort=True)
    pat = g.agg(
        n_samples=("sample_id", "nunique"),
        n_neutrophils=("n_neutrophils", "sum"),
        n_t3=("n_t3", "sum"),
        index_sum=("mean_index", lambda s: float((s * samples.loc[s.index, "n_neutrophils"]).sum())),
    ).reset_index()
    pat["t3_fraction"] = pat["n_t3"] / pat["n_neutrophils"]
    pat["mean_index"] = pat.pop("index_sum") / pat["n_neutrophils"]
    small = pat["n_neutrophils"] < settings.min_neutrophils_per_patient
    if small.any():
        log.info(
            "%d patient-tissue pair(s) with < %d neutrophils left out of fractions",
            int(small.sum()),
            settings.min_neutrophils_per_patient,
        )
    return pat[~small].reset_index(drop=True)


def _interval(means: np.ndarray, ci: float) -> tuple[float, float]:
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(lo), float(hi)


def _bootstrap_mean(
    values: np.ndarray, rng: np.random.Generator, n_boot: int, ci: float
) -> tuple[float, float]:
    """Percentile interval of the mean over patients, resampling patients."""
    if len(values) < 2:
        return float("nan"), float("nan")
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    return _interval(values[idx].mean(axis=1), ci)


def _bootstrap_fraction(
    n_t3: np.ndarray, n: np.ndarray, rng: np.random.Generator, n_boot: int, ci: float, *, pooled: bool = False
) -> tuple[float, float]:
    """Two-stage bootstrap of the mean patient fraction: resample patients, then each patient's fraction.

    ``pooled=True`` bootstraps the pooled fraction instead (the resampled patients' fractions weighted
    by their neutrophil counts), the estimand of :func:`sparse_groups`.

    The second stage carries each patient's sampling noise (few neutrophils -> wide), which a
    patients-only bootstrap would ignore. It draws the fraction from its Jeffreys posterior
    Beta(k + 1/2, n - k + 1/2) rather than re-sampling cells at the observed fraction: a plug-in binomial
    draw at k/n = 0 is always 0, so a cancer type whose patients show no T3-like cell got the interval
    [0, 0], which excludes any true fraction above zero; the Jeffreys draw keeps an upper bound that
    shrinks with the number of neutrophils observed.
    """
    if len(n) < 2:
        return float("nan"), float("nan")
    idx = rng.integers(0, len(n), size=(n_boot, len(n)))
    draws = rng.beta(n_t3[idx] + 0.5, n[idx] - n_t3[idx] + 0.5)
    means = (draws * n[idx]).sum(axis=1) / n[idx].sum(axis=1) if pooled else draws.mean(axis=1)
    lo, hi = _interval(means, ci)
    # Jeffreys' convention at the edges: no T3-like cell at all -> the interval starts at 0 (all -> ends at 1)
    return (0.0 if not n_t3.any() else lo), (1.0 if (n_t3 == n).all() else hi)


def per_group(
    patients: pd.DataFrame,
    settings: StatsSettings = StatsSettings(),
    by: tuple[str, ...] = ("cancer_type", "tissue"),
) -> pd.DataFrame:
    """Per cancer type and tissue: the mean over patients with a two-stage bootstrap interval (patients, then each one's fraction).

    Each patient counts once, whatever its neutrophil yield. A group with a single patient gets
    no interval (NaN bounds) and ``note = "single patient: no interval"``.
    """
    rng = np.random.default_rng(settings.random_state)
    rows = []
    for key, grp in patients.groupby(list(by), observed=True, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key, strict=True))
        frac = grp["t3_fraction"].to_numpy(float)
        idx = grp["mean_index"].to_numpy(float)
        lo, hi = _bootstrap_fraction(
            grp["n_t3"].to_numpy(np.int64),
            grp["n_neutrophils"].to_numpy(np.int64),
            rng,
            settings.n_boot,
            settings.ci,
        )
        ilo, ihi = _bootstrap_mean(idx, rng, settings.n_boot, settings.ci)
        row.update(
            n_patients=len(grp),
            n_neutrophils=int(grp["n_neutrophils"].sum()),
            t3_fraction=float(frac.mean()),
            t3_fraction_lo=lo,
            t3_fraction_hi=hi,
            mean_index=float(idx.mean()),
            mean_index_lo=ilo,
            mean_index_hi=ihi,
            note="single patient: no interval" if len(grp) < 2 else "",
        )
        rows.append(row)
    return pd.DataFrame(rows)


def sparse_groups(samples: pd.DataFrame, groups: pd.DataFrame, settings: StatsSettings = StatsSettings(),
                  by: tuple[str, ...] = ("cancer_type", "tissue")) -> pd.DataFrame:  # fmt: skip
    """Rows for the groups that have neutrophils but no patient reaching ``min_neutrophils_per_patient``.

    Such a group (droplet platforms capture few neutrophils) would otherwise vanish from the tables.
    It is reported with the fraction pooled over its cells, ``n_patients = 0`` (no patient-level
    estimate) and a note saying so. With two or more patients it gets an interval from the same
    two-stage bootstrap (patients, then each one's Jeffreys-drawn fraction) of the *pooled* fraction:
    wide, as a handful of cells from a few patients should be; one patient gets none.
    """
    have = set(map(tuple, groups[list(by)].to_numpy())) if len(groups) else set()
    rng = np.random.default_rng(settings.random_state + 1)
    rows = []
    for key, grp in samples.groupby(list(by), observed=True, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        n = int(grp["n_neutrophils"].sum())
        if key in have or n == 0:
            continue
        pat = grp.groupby("patient_id", observed=True)[["n_t3", "n_neutrophils"]].sum()
        pat = pat[pat["n_neutrophils"] > 0]
        lo, hi = _bootstrap_fraction(
            pat["n_t3"].to_numpy(np.int64), pat["n_neutrophils"].to_numpy(np.int64), rng,
            settings.n_boot, settings.ci, pooled=True,
        )  # fmt: skip
        row = dict(zip(by, key, strict=True))
        row.update(
            n_patients=0,
            n_neutrophils=n,
            t3_fraction=float(grp["n_t3"].sum() / n),
            t3_fraction_lo=lo,
            t3_fraction_hi=hi,
            mean_index=float((grp["mean_index"] * grp["n_neutrophils"]).sum() / n),
            mean_index_lo=float("nan"),
            mean_index_hi=float("nan"),
            note=f"no patient with >= {settings.min_neutrophils_per_patient} neutrophils: pooled over {n} cells "
            f"of {len(pat)} patient(s), "
            + ("wide interval (patients, then their cells)" if len(pat) >= 2 else "no interval"),
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=groups.columns if len(groups) else None)


def cancer_type_groups(samples: pd.DataFrame, patients: pd.DataFrame, settings: StatsSettings = StatsSettings(),
                       by: tuple[str, ...] = ("cancer_type", "tissue")) -> pd.DataFrame:  # fmt: skip
    """:func:`per_group` rows plus the :func:`sparse_groups` rows (logged), in ``by`` order."""
    groups = per_group(patients, settings, by)
    sparse = sparse_groups(samples, groups, settings, by)
    if len(sparse):
        log.warning("%s", "; ".join(f"{r.cancer_type} {r.tissue}: {r.note}" for r in sparse.itertuples()))
        groups = pd.concat([groups, sparse], ignore_index=True).sort_values(list(by)).reset_index(drop=True)
    return groups


def paired_tissue_comparison(
    patients: pd.DataFrame, a: str = "tumour", b: str = "blood", value: str = "t3_fraction"
) -> pd.DataFrame:
    """Within-patient differences ``a - b`` per cancer type, with a Wilcoxon signed-rank test.

    Only patients with both tissues enter; a cancer type with fewer than 2 such patients gets no p-value.
    """
    from scipy.stats import wilcoxon

    wide = patients.pivot_table(
        index=["cancer_type", "patient_id"], columns="tissue", values=value, observed=True
    )
    rows = []
    if a not in wide or b not in wide:
        return pd.DataFrame(columns=["cancer_type", "n_patients", "median_difference", "p_value"])
    both = wide[[a, b]].dropna()
    for cancer, grp in both.groupby(level="cancer_type", sort=True, observed=True):
        diff = (grp[a] - grp[b]).to_numpy()
        p = float("nan")
        if len(diff) >= 2 and np.any(diff != 0):
            p = float(wilcoxon(diff, zero_method="zsplit").pvalue)
        rows.append(
            {
                "cancer_type": cancer,
                "comparison": f"{a} - {b}",
                "n_patients": len(diff),
                "median_difference": float(np.median(diff)),
                "p_value": p,
            }
        )
    return pd.DataFrame(rows)


def rank_cancers(groups: pd.DataFrame, tissue: str = "tumour") -> pd.DataFrame:
    """The "which cancers reprogram" table: cancer types ranked by their tumour T3-like fraction."""
    t = groups[groups["tissue"] == tissue].sort_values("t3_fraction", ascending=False).reset_index(drop=True)
    t.insert(0, "rank", np.arange(1, len(t) + 1))
    return t
