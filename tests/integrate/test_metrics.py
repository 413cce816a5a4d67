import numpy as np
import pandas as pd
import pytest

from atlas.integrate import MissingKeyError, integration_metrics, plot_metrics

FAST_SKIP = ("kbet_per_label", "bras")


def _embeddings(toy, seed=0):
    """A 'good' latent space (cell types apart, data sets mixed) beside the raw counts."""
    rng = np.random.default_rng(seed)
    labels = toy.obs["truth_cell_type"].cat.codes.to_numpy()
    centres = rng.normal(0, 4, (labels.max() + 1, 10))
    toy.obsm["X_scVI"] = (centres[labels] + rng.normal(0, 1, (toy.n_obs, 10))).astype(np.float32)


def test_metrics_table_scores_a_good_latent_above_the_baseline(toy, tmp_path):
    _embeddings(toy)
    df = integration_metrics(
        toy,
        embeddings=["X_scVI"],
        label_key="truth_cell_type",
        batch_keys=["dataset_id", "sample_id"],
        max_cells=1000,
        skip=FAST_SKIP,
    )
    assert list(df.index) == ["X_pca", "X_harmony", "X_scVI"]
    assert df.loc["X_scVI", "method"] == "scVI" and (df["n_cells"] == 1000).all()
    # the baselines integrate every cell, as scVI did, and are scored on the same 1,000
    assert toy.n_obs > 1000 and (df["n_cells_baselines"] == toy.n_obs).all()
    for col in (
        "Batch correction",
        "Bio conservation",
        "Total",
        "Batch correction [sample_id]",
        "Total [sample_id]",
        "iLISI",
        "KMeans NMI",
        "iLISI [sample_id]",
    ):
        assert col in df.columns, col
    assert "KBET" not in df.columns
    good, base = df.loc["X_scVI"], df.loc["X_pca"]
    assert (
        good["Batch correction"] > base["Batch correction"]
        and good["Bio conservation"] > base["Bio conservation"]
    )
    assert good["Total"] >= base["Total"] + 0.1
    np.testing.assert_allclose(df["Total"], 0.4 * df["Batch correction"] + 0.6 * df["Bio conservation"])
    plot_metrics(df, tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_batch_only_metrics_without_labels_and_bad_keys(toy):
    _embeddings(toy)
    df = integration_metrics(
        toy, embeddings=["X_scVI"], batch_keys=["dataset_id"], harmony=False, max_cells=1000
    )  # same shapes as above: JAX reuses its compilations
    assert list(df.index) == ["X_pca", "X_scVI"] and "Bio conservation" not in df
    # without labels the per-label batch metrics are skipped (BRAS would fail on the batch as labels)
    assert {"iLISI", "PCR comparison"} <= set(df.columns) and not {
        "BRAS",
        "KBET",
        "Graph connectivity",
    } & set(df)
    assert df["Total"].isna().all() and df["Batch correction"].notna().all()
    with pytest.raises(MissingKeyError, match="label_key='cell_type'"):
        integration_metrics(toy, label_key="cell_type")
    toy.obs["one"] = "x"
    assert integration_metrics(toy, batch_keys=["one"]).empty
    with pytest.raises(ValueError, match="unknown scib metrics"):
        integration_metrics(toy, batch_keys=["dataset_id"], skip=["kbet"])


def test_baselines_are_fitted_on_all_cells_up_to_a_cap_that_keeps_the_scored_ones():
    from atlas.integrate.metrics import _baseline_cells

    rng = np.random.default_rng(0)
    scored = np.sort(rng.choice(10_000, 1_000, replace=False))
    assert np.array_equal(_baseline_cells(10_000, scored, None, rng), np.arange(10_000))
    assert np.array_equal(_baseline_cells(10_000, scored, 10_000, rng), np.arange(10_000))
    fit = _baseline_cells(10_000, scored, 4_000, rng)
    assert fit.size == 4_000 and np.all(np.diff(fit) > 0) and np.isin(scored, fit).all()
    assert np.array_equal(_baseline_cells(10_000, scored, 500, rng), scored)  # a cap below the scored cells


@pytest.mark.slow
def test_all_default_scib_metrics(toy):
    _embeddings(toy)
    df = integration_metrics(
        toy, embeddings=["X_scVI"], label_key="truth_cell_type", batch_keys=["dataset_id"]
    )
    assert {"KBET", "BRAS", "Isolated labels", "cLISI", "PCR comparison"} <= set(df.columns)
    assert isinstance(df, pd.DataFrame) and df.loc["X_scVI", "Total"] > df.loc["X_pca", "Total"]


def _table(bc, ilisi, harmony_bc=0.70, harmony_ilisi=0.53):
    rows = ["X_pca", "X_harmony", "X_scVI"]
    return pd.DataFrame(
        {
            "embedding": rows,
            "method": ["Unintegrated (PCA)", "Harmony", "scVI"],
            "iLISI": [0.01, harmony_ilisi, ilisi],
            "Batch correction": [0.31, harmony_bc, bc],
            "Bio conservation": [0.80, 0.85, 0.90],
        }
    )


def test_baseline_check_against_harmony(tmp_path):
    from atlas.integrate.metrics import baseline_check, baseline_summary

    ok = baseline_check(_table(0.72, 0.42).set_index("embedding"))  # as integration_metrics returns it
    assert (
        ok["checked"] and ok["passed"] and ok["embeddings"]["X_scVI"]["beats_harmony"] and not ok["warnings"]
    )
    assert "ahead of Harmony" in baseline_summary(ok)
    bad = baseline_check(_table(0.42, 0.02))  # the undertrained case of issue 12
    assert bad["passed"] is False and len(bad["warnings"]) == 1
    msg = bad["warnings"][0]
    assert "batch correction 0.42 vs Harmony 0.70" in msg and "iLISI 0.02 vs Harmony 0.53" in msg
    assert "train_steps" in msg and "batch_size" in msg and "n_latent" in msg
    unmixed = baseline_check(_table(0.75, 0.20))  # ahead on the aggregate, iLISI < half Harmony's
    assert unmixed["passed"] is False and "iLISI 0.20" in unmixed["warnings"][0]
    _table(0.60, 0.50).to_csv(tmp_path / "metrics.csv", index=False)  # the bundle's csv read back
    assert baseline_check(pd.read_csv(tmp_path / "metrics.csv"))["passed"] is False
    no_harmony = baseline_check(_table(0.5, 0.5).iloc[[0, 2]])
    assert no_harmony["checked"] is False and "Harmony" in baseline_summary(no_harmony)
