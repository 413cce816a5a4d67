import pytest

from atlas.core.errors import ConfigError
from atlas.core.settings import validate
from atlas.integrate import IntegrateSettings


def test_defaults_follow_the_documented_choices():
    s = IntegrateSettings()
    assert (s.n_hvgs, s.hvg_batch_key, s.batch_key) == (4000, "dataset_id", "sample_id")
    assert s.exclude_gene_groups == ["mito", "ribo"] and s.categorical_covariates == ["platform"]
    assert (s.n_latent, s.n_layers, s.max_epochs, s.min_cells_per_batch) == (30, 2, "auto", 25)
    assert s.train_steps == 56_000 and (s.plateau_window, s.plateau_tolerance) == (0.2, 0.005)
    assert s.data_loader == "fast" and s.accelerator == "auto" and s.model == "scvi"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model": "scanvi"}, "needs labels_key"),
        ({"n_hvgs": 4000, "n_hvg": 10}, "n_hvg: unknown field"),
        ({"data_loader": "gpu"}, "data_loader"),
        ({"batch_key": "platform"}, "also listed in categorical_covariates"),
        ({"exclude_gene_groups": ["mito", "mito"]}, "listed twice"),
        ({"exclude_gene_groups": ["histones"]}, "exclude_gene_groups"),
        ({"max_epochs": "lots"}, "max_epochs"),
        ({"train_steps": 0}, "train_steps"),
    ],
)
def test_invalid_settings_are_reported_with_their_path(data, message):
    with pytest.raises(ConfigError, match=message):
        validate(IntegrateSettings, data, "integrate.yaml")


def test_small_batches_per_data_set_then_into_a_batch_of_the_patient_then_across_then_drops():
    import pandas as pd

    from atlas.integrate._checks import small_batches

    obs = pd.DataFrame({"sample_id": ["a"] * 30 + ["b"] * 10 + ["c"] * 20 + ["d"] * 5 + ["e"] * 3,
                        "dataset_id": ["D1"] * 60 + ["D2"] * 5 + ["D3"] * 3,
                        "patient_id": ["p1"] * 30 + ["p2"] * 30 + ["p3"] * 5 + ["p4"] * 3})  # fmt: skip
    labels, pooled, dropped = small_batches(obs, "sample_id", 25)
    assert pooled == {"D1: small sample_ids": 30} and dropped == {"d": 5, "e": 3}  # D2 + D3 have only small ones
    assert labels.isna().sum() == 8 and (labels.iloc[:30] == "a").all()
    labels, pooled, dropped = small_batches(obs, "sample_id", 15)  # b (10) alone: joins c, its patient's
    assert pooled == {"c": 10} and dropped == {"d": 5, "e": 3} and (labels.iloc[30:60] == "c").all()
    labels, pooled, _ = small_batches(obs.assign(patient_id="p9"), "sample_id", 15)  # no batch of its patient
    assert pooled == {"a": 10}  # the data set's largest
    labels, pooled, dropped = small_batches(obs.drop(columns=["dataset_id", "patient_id"]), "sample_id", 25)
    assert pooled == {"small sample_ids": 38} and dropped == {}  # no data set column: one pool
    assert small_batches(obs, "sample_id", 0)[1:] == ({}, {}) and small_batches(obs, "sample_id", 2)[1:] == ({}, {})
    labels, pooled, dropped = small_batches(obs, "sample_id", 25, pool=False)  # LuCA's rule
    assert pooled == {} and dropped == {"b": 10, "c": 20, "d": 5, "e": 3} and labels.notna().sum() == 30
