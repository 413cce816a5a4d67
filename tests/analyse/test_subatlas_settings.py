"""``analyse.subatlas``: a strict settings model (a typo fails validation, not the run), same YAML keys,
same sub-atlas settings and the same settings hash as the free mapping it replaced."""

import subprocess
import sys

import pytest
import yaml

from atlas.analyse.settings import SUBATLAS_OWN_DEFAULTS, AnalysisSettings, SubatlasSettings
from atlas.analyse.subatlas import SUBATLAS_DEFAULTS, subatlas_settings
from atlas.core.errors import ConfigError
from atlas.core.settings import settings_hash
from atlas.integrate.settings import IntegrateSettings
from atlas.pipeline.config import load_pipeline_config

BAD = {"n_hvgs": 500, "typo_field": 1}


def _config(tmp_path, subatlas):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "run_dir": "r", "simulate": {"n_cells": 500},
                                    "analyse": {"subatlas": subatlas}}))  # fmt: skip
    return path


def test_a_typo_fails_validation_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"analyse\.subatlas\.typo_field: unknown field"):
        load_pipeline_config(_config(tmp_path, BAD))
    cfg = load_pipeline_config(_config(tmp_path, {"n_hvgs": 500, "max_epochs": 5}))
    assert (cfg.analyse.subatlas.n_hvgs, cfg.analyse.subatlas.max_epochs) == (500, 5)


def test_atlas_validate_refuses_a_typo(tmp_path):
    res = subprocess.run([sys.executable, "-m", "atlas.cli", "validate", str(_config(tmp_path, BAD))],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode != 0
    assert "analyse.subatlas.typo_field: unknown field" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("subatlas", "message"),
    [({"n_latent": 1}, r"subatlas\.n_latent"), ({"max_epochs": "many"}, r"subatlas\.max_epochs"),
     ({"model": "scanvi"}, "needs labels_key"), ({"n_latent": None}, "n_latent: Input should be a valid integer")],
)  # fmt: skip
def test_bad_values_fail_validation(subatlas, message):
    with pytest.raises(ValueError, match=message):
        AnalysisSettings(subatlas=subatlas)


def test_settings_hash_unchanged():
    # a change of the hash reruns analyse in existing run directories: it should change only with the
    # analysis's settings (last: qc_audit, 6b2e3705c3529c26 / 3d7249afaaaecba3 before it; pseudotime_method
    # state_contrast, 8f536abf7da15e41 / 4e6be1dbffd5ec44 before it;
    # before it cell_types.confident_neutrophils, ff76fe6ba0dc4a07 / 5b68b1dc972147a3;
    # before it cell_types.neighbourhood_check, 3800c2d124effb60 / 4b0a93aa96cddd63;
    # before it statistics.interval, 5de3d4fd607da91f / 7d2e36f23442c89d; before it
    # state_shrink_evidence, d412cdc836b9c2e5 / 3a718e2917610d2f; before it
    # refine_signatures.side_states_apart, 8aa647875d4da464 / 6deed6f8a55c5b1b; before it
    # state_cells, ae85274eaebbdd15 / ef01e8e1384fe14c; before it
    # pseudotime_with_state_contrast, 8eca065aaafc1678 / b703399b5d7c5c09; before it
    # refine_signatures; before it pseudotime_block_key, b763cd7da99d0930 /
    # 299f12822490bfce; before that pseudotime_method signature with
    # pseudotime_min_effect/pseudotime_fdr, 8a1555d90fa699a7 / 2a22b0fed424a955, and cell_types.refine_cells,
    # 24369d71f854fbac / 2d5b720890ad9106; the hash of commit 15a602b, when subatlas was a free dict, was
    # 9e58ef2dc511d2bb / 8c05b719cdcdb947)
    assert settings_hash(AnalysisSettings()) == "75d7013d11903458"
    assert settings_hash(AnalysisSettings(subatlas={"n_hvgs": 500, "max_epochs": 5})) == "5a341f8ab0391191"
    assert AnalysisSettings().model_dump(mode="json")["subatlas"] == {}


def test_only_the_fields_set_are_serialised_and_round_trip():
    s = AnalysisSettings(subatlas={"max_epochs": None, "batch_size": 256})
    assert s.model_dump()["subatlas"] == {"max_epochs": None, "batch_size": 256}
    again = AnalysisSettings.model_validate(s.model_dump())
    assert again == s and again.subatlas.model_fields_set == {"max_epochs", "batch_size"}
    s.subatlas.seed = 3
    assert s.model_dump()["subatlas"]["seed"] == 3


def _former_subatlas_settings(base, overrides):
    """The free-mapping version this model replaced."""
    former_defaults = {"n_hvgs": 2000, "batch_key": "dataset_id", "hvg_batch_key": None, "categorical_covariates": [],
                       "min_cells_per_batch": 0, "model": "scvi", "labels_key": None, "metrics": False,
                       "n_neighbors": 15}  # fmt: skip
    data = (base or IntegrateSettings()).model_dump()
    data.update(former_defaults)
    data.update(overrides)
    return IntegrateSettings.model_validate(data)


@pytest.mark.parametrize("base", [None, IntegrateSettings(n_hvgs=300, max_epochs=8, batch_size=512, seed=3,
                                                          exclude_genes=["XIST"], backend="cpu")])  # fmt: skip
@pytest.mark.parametrize(
    "overrides",
    [{}, {"n_hvgs": 300, "max_epochs": 5}, {"max_epochs": None, "batch_size": 256, "seed": 4},
     {"model": "scanvi", "labels_key": "cell_type", "categorical_covariates": ["platform"]}],
)  # fmt: skip
def test_subatlas_settings_as_before(base, overrides):
    model = AnalysisSettings(subatlas=overrides).subatlas
    expected = _former_subatlas_settings(base, overrides)
    assert subatlas_settings(base, model) == expected
    assert subatlas_settings(base, overrides) == expected  # a mapping still works (scripts)
    if base is not None and "seed" not in overrides:  # unset: the atlas's integrate value
        assert (expected.seed, expected.exclude_genes, expected.backend) == (3, ["XIST"], "cpu")


def test_fields_are_the_integrate_settings_the_subatlas_reads():
    never_read = {"store_connectivities", "small_batches", *(f for f in IntegrateSettings.model_fields if f.startswith("metrics"))}
    assert set(SubatlasSettings.model_fields) == set(IntegrateSettings.model_fields) - never_read
    assert all(SubatlasSettings.model_fields[f].description for f in SubatlasSettings.model_fields)
    own = SubatlasSettings().integrate_overrides()
    assert list(own) == list(SUBATLAS_OWN_DEFAULTS)
    assert SUBATLAS_DEFAULTS == {**own, "metrics": False}


def test_subatlas_refuses_a_batch_minimum_it_would_not_apply():
    # the sub-atlas keeps every neutrophil: a minimum batch size there was accepted and silently ignored
    with pytest.raises(ValueError, match="min_cells_per_batch"):
        AnalysisSettings(subatlas={"min_cells_per_batch": 5})
    assert AnalysisSettings(subatlas={"min_cells_per_batch": 0}).subatlas.min_cells_per_batch == 0
