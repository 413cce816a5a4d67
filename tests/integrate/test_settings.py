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
