import logging

import numpy as np
import pytest

from atlas.core.errors import ConfigError
from atlas.integrate import IntegrateInputError, MissingKeyError, NotCountsError, TooSmallError, train_scvi


def test_scvi_trains_saves_and_loads(toy, fast, tmp_path):
    import scvi

    res = train_scvi(toy, **fast)
    assert res.latent_key == "X_scVI" and toy.obsm["X_scVI"].shape == (toy.n_obs, 8)
    assert res.batch_key == "sample_id" and res.categorical_covariates == ["platform"]
    assert res.epochs == {"scvi": 3} and np.isfinite(res.history["scvi_elbo_train"])
    conv, curve = res.convergence["scvi"], res.curves["scvi"]
    assert (
        conv["epochs"] == 3 and conv["rule"] == "fixed" and conv["steps"] == 3 * conv["steps_per_epoch"] == 9
    )
    assert (
        list(curve["epoch"]) == [1, 2, 3] and curve["elbo_validation"].notna().all()
    )  # validated every epoch
    assert (
        conv["final_elbo_validation"] == curve["elbo_validation"].iloc[-1]
        and conv["plateau_metric"] == "elbo_validation"
    )
    assert (
        type(res.model).__name__ == "SCVI"
        and res.model.adata_manager.registry["setup_args"]["batch_key"] == "sample_id"
    )
    res.model.save(str(tmp_path / "model"), save_anndata=False)
    loaded = scvi.model.SCVI.load(str(tmp_path / "model"), adata=toy)
    np.testing.assert_allclose(loaded.get_latent_representation(), toy.obsm["X_scVI"], atol=1e-5)


def test_auto_epochs_keep_the_step_budget_whatever_the_batch_size():
    from atlas.integrate import IntegrateSettings
    from atlas.integrate.model import plan_epochs

    small, large = (IntegrateSettings(batch_size=b, train_steps=7000) for b in (256, 1024))
    e_small, p_small = plan_epochs(12_000, small)
    e_large, p_large = plan_epochs(12_000, large)
    assert p_small["steps_per_epoch"] == 43 and e_small == 163  # ceil(10,800 / 256), ceil(7,000 / 43)
    assert p_large["steps_per_epoch"] == 11 and e_large == 400  # 637 epochs wanted, bounded to 400
    assert p_small["steps_planned"] >= 7000 and p_large["steps_planned"] == 4400
    e, p = plan_epochs(2_000_000, IntegrateSettings())  # default budget: scvi-tools' own at batch 128
    assert e == 4 and p["steps_planned"] >= 56_000
    assert plan_epochs(12_000, IntegrateSettings(max_epochs=40)) == (
        40,
        {
            **p_small,
            "rule": "fixed",
            "batch_size": 128,
            "steps_per_epoch": 85,
            "epochs_planned": 40,
            "steps_planned": 3400,
            "kl_warmup_epochs": 30,
        },
    )
    assert p_small["kl_warmup_epochs"] == 123  # ceil(0.75 x 163)
    e, p = plan_epochs(12_000, IntegrateSettings(max_epochs=None))
    assert e is None and p["epochs_planned"] == 400 and p["rule"].startswith("scvi-tools")


def test_kl_warmup_ends_before_training_does():
    from atlas.integrate.model import SCVI_KL_WARMUP_EPOCHS, kl_warmup_epochs

    assert kl_warmup_epochs(60, 0.75) == 45 and kl_warmup_epochs(223, 0.75) == 168
    assert kl_warmup_epochs(3, 0.75) == 2 and kl_warmup_epochs(3, 1.0) == 2  # the last epoch at weight 1
    assert kl_warmup_epochs(1, 0.75) == 1
    assert kl_warmup_epochs(60, None) == SCVI_KL_WARMUP_EPOCHS  # scvi-tools' own: 400 whatever the length


def test_training_reaches_the_elbo_or_says_so(toy, fast):
    res = train_scvi(toy, **fast)  # 3 epochs: warm-up 2, the last epoch at KL weight 1
    conv = res.convergence["scvi"]
    assert conv["kl_warmup_epochs"] == 2 and conv["final_kl_weight"] == pytest.approx(1.0)
    assert not any("KL weight" in w for w in res.warnings)
    res = train_scvi(toy, kl_warmup=None, **fast)  # scvi-tools' 400 epochs: ends at 2 / 400
    assert res.convergence["scvi"]["final_kl_weight"] < 0.01
    assert any("ended at KL weight 0.01" in w for w in res.warnings)


def test_plateau_check():
    from atlas.integrate.model import plateau_check

    falling = 1000 * np.exp(-np.arange(20) / 4) + 500  # still dropping 2% at the end
    flat = np.r_[falling[:10], np.full(10, falling[9] - 0.1)]
    assert plateau_check(falling, 0.2, 0.005)["reached"] is False
    res = plateau_check(flat, 0.2, 0.005)
    assert res["reached"] is True and res["window_epochs"] == 4 and res["relative_improvement"] < 1e-3
    assert plateau_check([5.0, 4.0], 0.2, 0.005)["reached"] is None  # too few epochs to judge
    assert plateau_check([np.nan, 3.0, 2.0, 1.0], 0.2, 0.005)["window_epochs"] == 2


def test_scanvi_from_scvi_with_partial_labels(toy, fast):
    toy.obs["labels"] = toy.obs["truth_cell_type"].astype(object)
    toy.obs.loc[toy.obs_names[::3], "labels"] = None  # missing labels count as unlabelled
    res = train_scvi(toy, model="scanvi", labels_key="labels", scanvi_max_epochs=2, **fast)
    assert type(res.model).__name__ == "SCANVI" and res.latent_key == "X_scANVI"
    assert toy.obsm["X_scANVI"].shape == (toy.n_obs, 8) and "X_scVI" in toy.obsm
    assert res.epochs == {"scvi": 3, "scanvi": 2}
    assert (toy.obs["labels"] == "unlabeled").sum() == len(toy.obs_names[::3])
    assert any("treated as 'unlabeled'" in n for n in res.notes)


def test_scanvi_needs_labels(toy, fast):
    with pytest.raises(ConfigError, match="needs labels_key"):
        train_scvi(toy, model="scanvi", **fast)
    with pytest.raises(MissingKeyError, match="labels_key='cell_type'"):
        train_scvi(toy, model="scanvi", labels_key="cell_type", **fast)
    toy.obs["labels"] = "unlabeled"
    with pytest.raises(IntegrateInputError, match="no labelled cell"):
        train_scvi(toy, model="scanvi", labels_key="labels", **fast)


def test_single_valued_batch_key_trains_without_batch(toy, fast, caplog):
    toy.obs["sample_id"] = "only_sample"
    toy.obs["platform"] = "10x_3p"
    with caplog.at_level(logging.WARNING, logger="atlas.integrate.model"):
        res = train_scvi(toy, **fast)
    assert res.batch_key is None and res.categorical_covariates == []
    assert "has a single value" in caplog.text and "is constant" in caplog.text
    assert res.model.summary_stats["n_batch"] == 1
    assert len([n for n in res.notes if n not in res.warnings]) == 2


def test_bad_inputs(toy, fast):
    with pytest.raises(MissingKeyError, match="categorical_covariates\\[0\\]='chemistry'"):
        train_scvi(toy, categorical_covariates=["chemistry"], **fast)
    half = toy.copy()
    half.X = half.X * 0.5
    with pytest.raises(NotCountsError):
        train_scvi(half, **fast)
    with pytest.raises(TooSmallError, match="at least 50 cells"):
        train_scvi(toy[:20].copy(), **fast)


def test_ground_truth_columns_are_evaluation_only(toy, fast):
    with pytest.raises(IntegrateInputError, match="truth_\\* columns are ground truth"):
        train_scvi(toy, model="scanvi", labels_key="truth_cell_type", **fast)
    with pytest.raises(IntegrateInputError, match="batch_key='truth_state'"):
        train_scvi(toy, batch_key="truth_state", **fast)


def test_no_validation_set_switches_early_stopping_off(toy, fast):
    res = train_scvi(toy, train_size=1.0, **{**fast, "early_stopping": True})
    assert res.epochs == {"scvi": 3} and len(res.model.validation_indices) == 0
    assert any("early stopping" in n for n in res.notes)


def test_scarches_architecture_encodes_the_batch(toy, fast):
    res = train_scvi(toy, **fast, scarches_architecture=True)
    import torch

    layers = list(res.model.module.modules())
    assert res.model.module.encode_covariates is True
    assert any(isinstance(m, torch.nn.LayerNorm) for m in layers)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in layers)
    assert np.isfinite(toy.obsm["X_scVI"]).all()
