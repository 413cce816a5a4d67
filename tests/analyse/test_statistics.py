import warnings

import numpy as np
import pandas as pd
import pytest

from atlas.analyse.statistics import (
    StatsSettings,
    beta_binomial_mean_interval,
    cancer_type_groups,
    paired_tissue_comparison,
    per_group,
    per_patient,
    per_sample,
    rank_cancers,
    sparse_groups,
)


def _cells(rng, fractions, n_patients=5, cells=(40, 400)):
    """Neutrophils of patients with known T3 fractions per cancer; blood is never T3."""
    rows = []
    for cancer, f in fractions.items():
        for p in range(n_patients):
            pf = f * np.exp(rng.normal(0, 0.15))
            for tissue, frac in (("tumour", pf), ("blood", 0.0)):
                n = int(rng.integers(*cells))
                t3 = rng.random(n) < frac
                rows.append(
                    pd.DataFrame(
                        {
                            "dataset_id": "d1",
                            "cancer_type": cancer,
                            "patient_id": f"{cancer}_{p}",
                            "tissue": tissue,
                            "sample_id": f"{cancer}_{p}_{tissue}",
                            "is_t3": t3,
                            "reprogramming_index": np.where(t3, 1.0, 0.0) + rng.normal(0, 0.1, n),
                        }
                    )
                )
    return pd.concat(rows, ignore_index=True)


def test_hand_computed_small_case():
    cells = pd.DataFrame(
        {
            "dataset_id": "d",
            "cancer_type": "PDAC",
            "tissue": "tumour",
            "patient_id": ["p1"] * 10 + ["p2"] * 20,
            "sample_id": ["s1"] * 10 + ["s2"] * 20,
            "is_t3": [True] * 5 + [False] * 5 + [True] * 5 + [False] * 15,
            "reprogramming_index": [1.0] * 10 + [0.0] * 20,
        }
    )
    pats = per_patient(per_sample(cells))
    assert pats["t3_fraction"].tolist() == [0.5, 0.25]
    grp = per_group(pats)
    # the mean over patients (0.375), not over cells (10/30)
    assert grp["t3_fraction"].iloc[0] == pytest.approx(0.375)
    assert grp["n_patients"].iloc[0] == 2


def test_intervals_cover_truth_and_ranking_is_right():
    rng = np.random.default_rng(0)
    truth = {"PDAC": 0.45, "HCC": 0.3, "CRC": 0.15, "melanoma": 0.03}
    groups = per_group(per_patient(per_sample(_cells(rng, truth))), StatsSettings(n_boot=500))
    ranked = rank_cancers(groups)
    assert ranked["cancer_type"].tolist() == list(truth)
    covered = [
        r["t3_fraction_lo"] <= truth[r["cancer_type"]] <= r["t3_fraction_hi"] for _, r in ranked.iterrows()
    ]
    assert sum(covered) >= 3, ranked
    blood = groups[groups["tissue"] == "blood"]
    assert (blood["t3_fraction"] == 0).all()


def test_single_patient_gets_a_prior_interval_or_none_and_small_samples_are_dropped():
    rng = np.random.default_rng(1)
    cells = _cells(rng, {"BRCA": 0.1}, n_patients=1)
    pats = per_patient(per_sample(cells))
    groups = per_group(pats)  # hierarchical: an interval from the prior on how patients differ, said so
    tumour = groups[groups["tissue"] == "tumour"].iloc[0]
    assert tumour["t3_fraction_lo"] < tumour["t3_fraction"] < tumour["t3_fraction_hi"]
    assert tumour["t3_fraction_hi"] - tumour["t3_fraction_lo"] > 0.2  # one patient says little about the population
    assert groups["mean_index_lo"].isna().all() and groups["note"].str.contains("single patient: wide interval").all()
    boot = per_group(pats, StatsSettings(interval="bootstrap"))
    assert boot["t3_fraction_lo"].isna().all() and (boot["note"] == "single patient: no interval").all()
    tiny = _cells(rng, {"BRCA": 0.1}, n_patients=3, cells=(2, 5))
    assert per_patient(per_sample(tiny), StatsSettings(min_neutrophils_per_patient=10)).empty


def test_paired_tumour_vs_blood():
    rng = np.random.default_rng(2)
    pats = per_patient(per_sample(_cells(rng, {"PDAC": 0.45, "BRCA": 0.08}, n_patients=6)))
    cmp = paired_tissue_comparison(pats).set_index("cancer_type")
    assert cmp.loc["PDAC", "median_difference"] > 0.3
    assert cmp.loc["PDAC", "p_value"] < 0.05
    assert cmp.loc["PDAC", "n_patients"] == 6


def test_paired_comparison_skips_cancer_types_without_paired_patients():
    pats = pd.DataFrame({
        "cancer_type": pd.Categorical(["A", "A", "A", "A", "B"], categories=["A", "B", "C"]),
        "patient_id": ["p1", "p1", "p2", "p2", "p3"],
        "tissue": ["tumour", "blood", "tumour", "blood", "tumour"],
        "t3_fraction": [0.5, 0.0, 0.3, 0.0, 0.2],
    })  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no empty-group means, no pandas observed= deprecation
        cmp = paired_tissue_comparison(pats)
    assert list(cmp["cancer_type"]) == ["A"]
    assert cmp["n_patients"].tolist() == [2] and cmp["median_difference"].tolist() == [pytest.approx(0.4)]


def test_a_cancer_with_no_qualifying_patient_is_reported_pooled_with_a_note():
    rng = np.random.default_rng(2)
    cells = pd.concat([_cells(rng, {"PDAC": 0.4}), _cells(rng, {"NSCLC": 0.5}, n_patients=4, cells=(1, 4))])
    settings = StatsSettings(min_neutrophils_per_patient=5)
    samples = per_sample(cells)
    groups = per_group(per_patient(samples, settings), settings)
    assert set(groups["cancer_type"]) == {"PDAC"}  # NSCLC's patients all have < 5 neutrophils
    sparse = sparse_groups(samples, groups, settings)
    nsclc = sparse[sparse["tissue"] == "tumour"].iloc[0]
    sub = samples[(samples["cancer_type"] == "NSCLC") & (samples["tissue"] == "tumour")]
    assert nsclc["n_patients"] == 0 and nsclc["n_neutrophils"] == sub["n_neutrophils"].sum()
    assert nsclc["t3_fraction"] == pytest.approx(sub["n_t3"].sum() / sub["n_neutrophils"].sum())
    assert nsclc["t3_fraction_lo"] < nsclc["t3_fraction"] < nsclc["t3_fraction_hi"]  # 4 patients: an interval
    assert "pooled over" in nsclc["note"] and "wide interval" in nsclc["note"]
    assert list(sparse.columns) == list(groups.columns)
    assert sparse_groups(samples[samples["cancer_type"] == "PDAC"], groups, settings).empty
    both = cancer_type_groups(samples, per_patient(samples, settings), settings)  # what the analysis writes
    assert list(zip(both["cancer_type"], both["tissue"], strict=True)) == sorted(zip(both["cancer_type"], both["tissue"], strict=True))
    assert set(both["cancer_type"]) == {"PDAC", "NSCLC"} and len(both) == len(groups) + len(sparse)
    one = cells[(cells["cancer_type"] == "NSCLC") & (cells["patient_id"] == "NSCLC_0")]
    lone = sparse_groups(per_sample(one), groups, settings).iloc[0]  # one patient: the prior's interval, said so
    assert lone["t3_fraction_hi"] - lone["t3_fraction_lo"] > 0.2 and "wide interval from the model's prior" in lone["note"]
    boot = StatsSettings(min_neutrophils_per_patient=5, interval="bootstrap")
    lone = sparse_groups(per_sample(one), groups, boot).iloc[0]  # the bootstrap: none
    assert np.isnan(lone["t3_fraction_lo"]) and "no interval" in lone["note"]


def test_sparse_group_intervals_cover_the_pooled_truth():
    # 3-6 patients with 1-4 neutrophils each (a droplet platform's harvest): the pooled interval must still cover
    # the true fraction in most cohorts, and be wide (a handful of cells says little).
    rng = np.random.default_rng(11)
    covered, widths = [], []
    settings = StatsSettings(min_neutrophils_per_patient=5, n_boot=300)
    for _ in range(100):
        cells = _cells(rng, {"NSCLC": 0.25}, n_patients=int(rng.integers(3, 7)), cells=(1, 5))
        samples = per_sample(cells)
        r = sparse_groups(samples, per_group(per_patient(samples, settings), settings), settings)
        r = r[r["tissue"] == "tumour"].iloc[0]
        covered.append(r["t3_fraction_lo"] <= 0.25 <= r["t3_fraction_hi"])
        widths.append(r["t3_fraction_hi"] - r["t3_fraction_lo"])
    assert np.mean(covered) >= 0.85 and np.median(widths) > 0.3


def test_rare_t3_intervals_are_not_degenerate_and_cover_the_truth():
    # A cancer type whose few neutrophils per patient show no T3-like cell must still get an interval above 0:
    # the plug-in binomial bootstrap gave [0, 0] and covered a true 1 % in only ~60 % of cohorts.
    rng = np.random.default_rng(5)
    covered, widths = [], []
    for rep in range(100):
        cells = _cells(rng, {"CRC": 0.01}, n_patients=4, cells=(10, 40))
        g = per_group(per_patient(per_sample(cells)), StatsSettings(n_boot=300, random_state=rep))
        r = g[g["tissue"] == "tumour"].iloc[0]
        covered.append(r["t3_fraction_lo"] <= 0.01 <= r["t3_fraction_hi"])
        widths.append(r["t3_fraction_hi"] - r["t3_fraction_lo"])
    assert np.mean(covered) >= 0.85 and min(widths) > 0
    blood = g[g["tissue"] == "blood"].iloc[0]  # no T3-like cell at all: the interval starts at exactly 0
    assert blood["t3_fraction_lo"] == 0 and 0 < blood["t3_fraction_hi"] < 0.2


def test_beta_binomial_interval_edges_and_order():
    rng_free = beta_binomial_mean_interval
    assert np.isnan(rng_free([], [], 0.95)[0])
    lo, hi = rng_free([3], [10], 0.95)  # one patient: the prior on how patients differ makes it wide
    assert lo < 0.3 < hi and hi - lo > 0.4
    lo, hi = rng_free([0, 0, 0], [20, 30, 25], 0.95)  # no T3-like cell at all: starts at 0, an upper bound above 0
    assert lo == 0 and 0 < hi < 0.2
    assert rng_free([20, 30], [20, 30], 0.95)[1] == 1.0  # all T3-like: ends at 1
    lo, hi = rng_free([200, 210, 190], [1000, 1000, 1000], 0.95)  # three alike patients of many cells
    assert lo < 0.2 < hi and hi - lo < 0.15
    assert rng_free([5, 40, 12, 12], [50, 80, 30, 30], 0.95) == rng_free([12, 5, 12, 40], [30, 50, 30, 80], 0.95)
    wide, narrow = rng_free([5, 40], [50, 80], 0.95), rng_free([5, 40, 12, 30, 20, 25], [50, 80, 60, 70, 55, 60], 0.95)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]  # more patients, a narrower interval


def _patient_cohorts(rng, reps, k, cells=150):
    """``reps`` cancer types of ``k`` patients whose fractions differ widely (Beta(2, 8), mean 0.2)."""
    frac = rng.beta(2.0, 8.0, size=(reps, k))
    n = rng.poisson(cells, size=(reps, k)) + 5
    x = rng.binomial(n, frac)
    return pd.DataFrame({"cancer_type": np.repeat([f"c{i:03d}" for i in range(reps)], k), "tissue": "tumour",
                         "patient_id": [f"p{j}" for _ in range(reps) for j in range(k)], "n_neutrophils": n.ravel(),
                         "n_t3": x.ravel(), "t3_fraction": (x / n).ravel(), "mean_index": (x / n).ravel()})  # fmt: skip


def test_hierarchical_intervals_cover_the_mean_of_few_heterogeneous_patients():
    # Three patients with many cells each and fractions that differ widely: the bootstrap is too narrow (it treats
    # the three as the population); the beta-binomial posterior and Student's t cover the population mean.
    pats = _patient_cohorts(np.random.default_rng(3), reps=150, k=3)
    cover = {}
    for method in ("bootstrap", "hierarchical"):
        g = per_group(pats, StatsSettings(n_boot=500, interval=method))
        cover[method] = ((g["t3_fraction_lo"] <= 0.2) & (0.2 <= g["t3_fraction_hi"])).mean()
        cover[method + "_index"] = ((g["mean_index_lo"] <= 0.2) & (0.2 <= g["mean_index_hi"])).mean()
    assert cover["bootstrap"] < 0.8 and cover["hierarchical"] >= 0.9, cover
    assert cover["bootstrap_index"] < 0.8 and cover["hierarchical_index"] >= 0.9, cover


def test_the_interval_setting_reaches_the_statistics():
    from pydantic import ValidationError

    from atlas.analyse.settings import AnalysisSettings
    from atlas.analyse.steps import stats_settings

    assert stats_settings(AnalysisSettings()).interval == "hierarchical"
    assert stats_settings(AnalysisSettings(statistics={"interval": "bootstrap"})).interval == "bootstrap"
    with pytest.raises(ValidationError, match="interval"):
        AnalysisSettings(statistics={"interval": "wald"})
    with pytest.raises(ValueError, match="interval 'wald'"):
        per_group(_patient_cohorts(np.random.default_rng(0), 2, 3), StatsSettings(interval="wald"))


def test_cancer_tables_carry_the_t3_calls_expected_precision():
    """``cancer_types``/``ranking`` give each group's mean calibrated confidence of its T3 calls; a group without T3
    calls has none (NaN), and an analysis without confidences adds no column."""
    from atlas.analyse.settings import AnalysisSettings
    from atlas.analyse.steps import neutrophil_tables

    rng = np.random.default_rng(4)
    cells = _cells(rng, {"PDAC": 0.3, "CRC": 0.1})
    neut = cells.assign(neutrophil_state=np.where(cells.pop("is_t3"), "T3", "mature"))
    conf = np.where(neut["cancer_type"] == "PDAC", 0.9, 0.4)
    tables = neutrophil_tables(neut.assign(neutrophil_state_confidence=conf), AnalysisSettings())
    ct = tables["cancer_types"].set_index(["cancer_type", "tissue"])["t3_call_confidence"]
    assert ct[("PDAC", "tumour")] == pytest.approx(0.9) and ct[("CRC", "tumour")] == pytest.approx(0.4)
    assert np.isnan(ct[("PDAC", "blood")])  # blood is never T3 here
    assert "t3_call_confidence" in tables["ranking"]
    assert "t3_call_confidence" not in neutrophil_tables(neut, AnalysisSettings())["cancer_types"]
