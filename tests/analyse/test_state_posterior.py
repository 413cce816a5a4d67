"""Calibrated confidence of the state calls (atlas.analyse.state_posterior)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas.analyse.state_posterior import call_confidence, state_probabilities, true_score_cuts
from atlas.analyse.states import assign_states
from atlas.simulate.evaluate import expected_calibration_error, reliability_table


def _noisy_true_scores(rng, n: int, reliability: float, share: float):
    """A true programme ``T ~ N(0, r)`` read with noise ``N(0, 1 - r)``; the state is its top ``share``."""
    t = rng.normal(0, np.sqrt(reliability), n)
    z = t + rng.normal(0, np.sqrt(1 - reliability), n)
    return z, t >= np.quantile(t, 1 - share)


@pytest.mark.parametrize("reliability", [0.3, 0.6, 0.9])
def test_confidence_is_the_probability_that_the_call_is_right(reliability):
    """The top cells by observed score are called, as many as the state holds: their confidence matches how often
    they are right (ECE < 0.04), whatever the score's noise, and the probabilities add up to the count."""
    rng = np.random.default_rng(int(reliability * 10))
    n, share = 20000, 0.08
    z, true = _noisy_true_scores(rng, n, reliability, share)
    count = int(true.sum())
    called = z >= np.sort(z)[n - count]
    states = ["T3", "mature"]
    zz = np.column_stack([z, np.zeros(n)])
    tau = true_score_cuts(zz, [reliability, np.nan], [count, 0])
    assert np.isinf(tau[1])
    p = state_probabilities(zz, [reliability, np.nan], tau)
    assert p[:, 0].sum() == pytest.approx(count, rel=1e-6) and (p[:, 1] == 0).all()
    label = np.where(called, "T3", "mature")
    conf = call_confidence(label, states, "mature", p)
    right = np.where(called, true, ~true)
    assert expected_calibration_error(reliability_table(conf, right)) < 0.04
    precision = true[called].mean()
    assert conf[called].mean() == pytest.approx(precision, abs=0.04)
    assert precision < 0.9  # calls that are often wrong: a confidence of ~1 everywhere would fail above


def test_a_state_with_no_reliability_gets_no_confidence():
    """Reliability 0 (split halves that do not correlate) or not measured: the state's calls are not told apart from
    noise, so they get confidence 0 and do not lower the other calls' confidence."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1, (500, 3))
    states = ["T3", "antigen_presenting", "mature"]
    label = np.array(["T3"] * 40 + ["antigen_presenting"] * 20 + ["mature"] * 440, dtype=object)
    for r_ap in (0.0, np.nan):
        rel = [0.8, r_ap, np.nan]
        tau = true_score_cuts(z, rel, [40, 20, 0])
        p = state_probabilities(z, rel, tau)
        conf = call_confidence(label, states, "mature", p)
        assert np.isinf(tau[1]) and (p[:, 1] == 0).all()
        assert (conf[40:60] == 0).all()
        np.testing.assert_allclose(conf[:40], p[:40, 0])
        np.testing.assert_allclose(conf[60:], 1 - p[60:, 0])
    assert (call_confidence(np.array(["unassigned"]), states, "mature", p[:1]) == 0).all()
    # a state holding every cell: each is in it for sure
    every = true_score_cuts(z[:, :1], [0.5], [500])
    assert every[0] == -np.inf and (state_probabilities(z[:, :1], [0.5], every) == 1).all()


def test_assign_states_records_its_calibration_and_a_query_reads_it_back():
    """With reliabilities the analysis's confidence is calibrated and recorded (true-score cuts, expected precision
    per state: here the noisy interferon score's calls are right about a third of the time, and say so); a query's cells at the reference's cuts get the same confidence; without reliabilities the squashed
    margin stays."""
    from atlas.analyse.states import calls_at_cuts
    from atlas.query.stage import _state_confidence

    rng = np.random.default_rng(5)
    n = 4000
    rel = {"T3": 0.8, "interferon": 0.5, "mature": 0.0}  # continuous programmes read with noise 1 - r
    t = {st: rng.normal(0, np.sqrt(r), n) for st, r in rel.items() if r > 0}
    truth = np.full(n, "mature", dtype=object)
    for st, share in (("interferon", 0.06), ("T3", 0.15)):
        truth[t[st] >= np.quantile(t[st], 1 - share)] = st
    scores = pd.DataFrame({st: t[st] + rng.normal(0, np.sqrt(1 - rel[st]), n) for st in t}
                          | {"mature": rng.normal(0, 1, n)})  # fmt: skip
    res = assign_states(scores, smoothing_steps=0, default_state="mature", reliability=rel)
    conf = res["neutrophil_state_confidence"].to_numpy()
    label = res["neutrophil_state"].astype(str).to_numpy()
    assert set(res.attrs["true_score_cuts"]) == set(scores.columns) and np.isnan(res.attrs["true_score_cuts"]["mature"])
    prec = res.attrs["expected_precision"]
    for st in ("T3", "interferon", "mature"):
        assert prec[st] == pytest.approx(conf[label == st].mean())
        assert prec[st] == pytest.approx((truth[label == st] == st).mean(), abs=0.05)
    assert expected_calibration_error(reliability_table(conf, truth == label)) < 0.04
    # the query path: the reference's z units, cuts, reliabilities and true-score cuts
    states = list(scores.columns)
    z = ((scores - pd.Series(res.attrs["z_loc"])) / pd.Series(res.attrs["z_scale"])).to_numpy()
    cuts = np.array([res.attrs["cell_cuts"][st] for st in states])
    q_label, _, margin = calls_at_cuts(z, cuts, states, "mature", 0.25)
    rule = {"true_score_cuts": res.attrs["true_score_cuts"], "reliability": rel}
    notes: list[str] = []
    np.testing.assert_allclose(_state_confidence(rule, z, q_label, states, "mature", margin, notes), conf)
    assert not notes
    old = _state_confidence({}, z, q_label, states, "mature", margin, notes)  # a reference of an older atlas
    assert "true_score_cuts" in notes[0] and np.allclose(old, 1 - np.exp(-np.maximum(margin, 0)))
    # a reference state that held every neutrophil (cut -inf) is certain for a query cell called in it
    every = {"true_score_cuts": {"T3": -np.inf, "mature": np.nan}, "reliability": {"T3": 0.5}}
    conf_every = _state_confidence(every, z[:, [0, 2]], np.array(["T3"] * n), ["T3", "mature"], "mature", margin, notes)
    assert (conf_every == 1).all()
    plain = assign_states(scores, smoothing_steps=0, default_state="mature")
    assert "true_score_cuts" not in plain.attrs
