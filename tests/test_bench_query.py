"""scripts/bench_query.py's choices: which data sets a cohort holds out, which settings build the reference."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_query.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_query", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _cfg(*ids: str):
    return SimpleNamespace(datasets=[SimpleNamespace(id=i) for i in ids])


def _args(**kw) -> argparse.Namespace:
    base = {"cohort": "simulator", "hold": None, "ref_epochs": None, "seed": 3}
    return argparse.Namespace(**{**base, **kw})


def test_the_independent_cohort_holds_out_every_data_set_of_its_second_data_sets_cancer():
    bench = _bench()
    cfg = _cfg("study01_PDAC", "study02_HCC", "study03_NSCLC", "study07_HCC", "study08_BRCA")
    assert bench.held_out(_args(cohort="independent"), cfg) == ["study02_HCC", "study07_HCC"]
    assert bench.held_out(_args(), _cfg("ds01_PDAC", "ds02_HCC", "ds08_HCC")) == ["ds02_HCC", "ds08_HCC"]
    assert bench.held_out(_args(hold=["study03_NSCLC"]), cfg) == ["study03_NSCLC"]
    with pytest.raises(SystemExit, match="study09_CRC"):
        bench.held_out(_args(hold=["study09_CRC"]), cfg)


def test_the_reference_is_trained_like_the_demo_unless_epochs_are_given():
    from atlas.pipeline.demo import DEMO_ANALYSIS, DEMO_INTEGRATION

    bench = _bench()
    integrate, analysis = bench.reference_settings(_args())
    assert (integrate.batch_size, integrate.train_steps, integrate.max_epochs) == (
        DEMO_INTEGRATION.batch_size, DEMO_INTEGRATION.train_steps, "auto")  # fmt: skip
    assert integrate.metrics is False and integrate.seed == 3 and analysis == DEMO_ANALYSIS
    assert integrate.scarches_architecture is False
    integrate, _ = bench.reference_settings(_args(ref_epochs=40, scarches_architecture=True))
    assert (integrate.batch_size, integrate.max_epochs, integrate.scarches_architecture) == (1024, 40, True)


def test_the_transfer_alone_is_read_from_its_two_uncertainty_terms():
    """What the vote and distance terms mark unknown without the marker check, from the same mapped cells."""
    import numpy as np
    import pandas as pd

    obs = pd.DataFrame({"vote_uncertainty": [0.1, 0.6, 0.2, 0.1], "distance_uncertainty": [0.0, 0.0, 0.7, 0.3]})
    absent = np.array([False, False, True, True])
    assert _bench()._transfer_only(obs, absent, 0.5) == {"known_marked_unknown_transfer": 0.5,
                                                         "absent_marked_unknown_transfer": 0.5}  # fmt: skip
