"""Reprogramming statistics at the right level: samples and patients, never cells.

Cells of one patient are not independent observations, so every interval here treats *patients* as
the units (a model of the patients, or a bootstrap over them), and every within-patient comparison is
paired by patient. Input is a per-cell table (obs of neutrophils) with a boolean T3-like flag and a
continuous reprogramming index.

Intervals. A cancer type often has two to five patients, where resampling the patients at hand (a
percentile bootstrap) is too narrow: it treats them as the population (with two to four patients of many
cells each, a nominal 95 % interval covered the population mean in as few as 52 % of cohorts, the posterior
below in at least 87 %; ``scripts/bench_intervals.py``, ``benchmarks/statistics.md``). With ``interval="hierarchical"`` (the
default) the T3-like fraction's interval is the posterior of the patients' population mean under a
beta-binomial model: each patient's T3-like count is binomial in its own fraction, the fractions are
Beta(mu kappa, (1 - mu) kappa), mu is uniform and kappa has density proportional to (1 + kappa)^(-3/2)
(Gelman et al.'s prior for this model, Bayesian Data Analysis 3rd ed. section 5.3) on kappa >= 2, where
the patients' Beta is never U-shaped: without that bound a few patients with no T3-like cell cannot rule out a
population of all-or-nothing patients (three patients at 0 of 25 cells: upper bound 0.39 instead of 0.13).
The posterior is integrated on a grid. A single patient gets an interval too, resting on the prior for how
much patients differ (covered in 83-100 % of cohorts, median width 0.56): a pointer, and its note says so. The mean
index's interval is Student's t over the patients' means.
``interval="bootstrap"`` keeps the two-stage percentile bootstrap of earlier versions.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatsSettings:
    """Settings of the patient-level statistics."""

    min_neutrophils_per_patient: int = 5  # patient-tissue pairs with fewer are left out of fractions
    n_boot: int = 2000  # interval="bootstrap" only
    ci: float = 0.95
    random_state: int = 0
    interval: str = "hierarchical"  # or "bootstrap" (see the module docstring)


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


INTERVALS = ("hierarchical", "bootstrap")
#: The note of a group with one patient, per interval method.
SINGLE_PATIENT = {"hierarchical": "single patient: wide interval from the model's prior on how patients differ",
                  "bootstrap": "single patient: no interval"}  # fmt: skip
_MU = (np.arange(1000) + 0.5) / 1000  # the population mean's grid
_LOG_KAPPA = np.linspace(np.log(2.0), np.log(1e5), 80)  # kappa from widely different patients to identical ones
_LOG_PRIOR_KAPPA = -1.5 * np.log1p(np.exp(_LOG_KAPPA)) + _LOG_KAPPA  # density in kappa, times kappa (log grid)


@functools.cache
def _beta_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid's Beta parameters (mu kappa, (1 - mu) kappa) and log B(a, b), computed once."""
    from scipy.special import betaln

    kappa = np.exp(_LOG_KAPPA)
    a, b = _MU[:, None] * kappa[None, :], (1 - _MU[:, None]) * kappa[None, :]
    return a, b, betaln(a, b)


def beta_binomial_mean_interval(n_t3: np.ndarray, n: np.ndarray, ci: float) -> tuple[float, float]:
    """Equal-tailed posterior interval of the patients' population mean T3-like fraction.

    The beta-binomial model of the module docstring on a grid of (mu, log kappa). With no T3-like cell at all
    the interval starts at 0, with nothing else at 1 (Jeffreys' convention, as the bootstrap). One patient gets
    an interval too, but how much patients differ then comes from the prior alone: wide (median width 0.56 on the
    patient models of ``scripts/bench_intervals.py``), a pointer rather than an estimate.
    """
    from scipy.special import betaln

    n_t3, n = np.asarray(n_t3, float), np.asarray(n, float)
    if len(n) < 1:
        return float("nan"), float("nan")
    a, b, log_beta_ab = _beta_grid()
    pairs, counts = np.unique(np.column_stack([n_t3, n]), axis=0, return_counts=True)
    log_post = _LOG_PRIOR_KAPPA[None, :] - len(n) * log_beta_ab
    for (x, m), c in zip(pairs, counts, strict=True):
        log_post += c * betaln(x + a, m - x + b)
    post_mu = np.exp(log_post - log_post.max()).sum(axis=1)
    cdf = np.cumsum(post_mu) / post_mu.sum()
    tail = (1 - ci) / 2
    lo, hi = (float(np.interp(q, cdf, _MU)) for q in (tail, 1 - tail))
    return (0.0 if not n_t3.any() else lo), (1.0 if (n_t3 == n).all() else hi)


def _t_interval(values: np.ndarray, ci: float) -> tuple[float, float]:
    """Student's t interval of the mean over patients."""
    from scipy.stats import t

    if len(values) < 2:
        return float("nan"), float("nan")
    half = t.ppf(1 - (1 - ci) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


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


def _fraction_interval(
    n_t3: np.ndarray, n: np.ndarray, rng: np.random.Generator, settings: StatsSettings, *, pooled: bool = False
) -> tuple[float, float]:
    """The T3-like fraction's interval as ``settings.interval`` says (``pooled``: the bootstrap's estimand)."""
    if settings.interval == "hierarchical":
        return beta_binomial_mean_interval(n_t3, n, settings.ci)
    return _bootstrap_fraction(n_t3, n, rng, settings.n_boot, settings.ci, pooled=pooled)


def _check_interval(settings: StatsSettings) -> None:
    if settings.interval not in INTERVALS:
        raise ValueError(f"statistics interval {settings.interval!r}: use one of {INTERVALS}")


def per_group(
    patients: pd.DataFrame,
    settings: StatsSettings = StatsSettings(),
    by: tuple[str, ...] = ("cancer_type", "tissue"),
) -> pd.DataFrame:
    """Per cancer type and tissue: the mean T3-like fraction and mean index over patients, with intervals.

    The intervals are as ``settings.interval`` says (module docstring): by default the population mean's
    posterior under a beta-binomial model of the patients and Student's t for the index; with ``"bootstrap"``
    two-stage bootstraps (patients, then each one's fraction). Each patient counts once, whatever its neutrophil
    yield. A group with a single patient gets a note saying so (:data:`SINGLE_PATIENT`): with ``"hierarchical"``
    its fraction's interval rests on the model's prior for how much patients differ and its index has none; with
    ``"bootstrap"`` it has no interval (NaN bounds).
    """
    _check_interval(settings)
    rng = np.random.default_rng(settings.random_state)
    rows = []
    for key, grp in patients.groupby(list(by), observed=True, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key, strict=True))
        frac = grp["t3_fraction"].to_numpy(float)
        idx = grp["mean_index"].to_numpy(float)
        lo, hi = _fraction_interval(grp["n_t3"].to_numpy(np.int64), grp["n_neutrophils"].to_numpy(np.int64), rng,
                                    settings)  # fmt: skip
        ilo, ihi = (_t_interval(idx, settings.ci) if settings.interval == "hierarchical"
                    else _bootstrap_mean(idx, rng, settings.n_boot, settings.ci))  # fmt: skip
        row.update(
            n_patients=len(grp),
            n_neutrophils=int(grp["n_neutrophils"].sum()),
            t3_fraction=float(frac.mean()),
            t3_fraction_lo=lo,
            t3_fraction_hi=hi,
            mean_index=float(idx.mean()),
            mean_index_lo=ilo,
            mean_index_hi=ihi,
            note=SINGLE_PATIENT[settings.interval] if len(grp) < 2 else "",
        )
        rows.append(row)
    return pd.DataFrame(rows)


def sparse_groups(samples: pd.DataFrame, groups: pd.DataFrame, settings: StatsSettings = StatsSettings(),
                  by: tuple[str, ...] = ("cancer_type", "tissue")) -> pd.DataFrame:  # fmt: skip
    """Rows for the groups that have neutrophils but no patient reaching ``min_neutrophils_per_patient``.

    Such a group (droplet platforms capture few neutrophils) would otherwise vanish from the tables.
    It is reported with the fraction pooled over its cells, ``n_patients = 0`` (no patient-level
    estimate) and a note saying so. Its interval: by default the beta-binomial posterior of its patients'
    population mean (every patient enters, weighted by its few cells; one patient too, from the prior on how
    patients differ), with ``interval="bootstrap"`` the two-stage bootstrap (patients, then each one's
    Jeffreys-drawn fraction) of the *pooled* fraction, and none for one patient; wide either way, as a handful of
    cells from a few patients should be.
    """
    _check_interval(settings)
    how = "over its patients" if settings.interval == "hierarchical" else "patients, then their cells"
    single = "a wide interval from the model's prior" if settings.interval == "hierarchical" else "no interval"
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
        lo, hi = _fraction_interval(pat["n_t3"].to_numpy(np.int64), pat["n_neutrophils"].to_numpy(np.int64), rng,
                                    settings, pooled=True)  # fmt: skip
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
            + (f"wide interval ({how})" if len(pat) >= 2 else single),
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
