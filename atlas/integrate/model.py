"""scVI (and scANVI) through scvi-tools: set-up, training on either data path, latent space, saving.

LuCA's recipe: scVI with batch = sample (here ``batch_key``, default ``sample_id``) and the
platform as a further categorical covariate, then optionally scANVI initialised from it with
``SCANVI.from_scvi_model``. Everything is scvi-tools' own model, so ``SCVI.load`` /
``SCANVI.load`` and scArches query mapping (``load_query_data``) work on the saved bundle.

Devices. ``accelerator: auto`` trains on CUDA when torch sees a GPU. ``data_loader: fast`` hands
scvi-tools a :class:`~atlas.integrate.datamodule.FastDataModule` (``model.train(datamodule=...)``);
``scvi`` uses scvi-tools' own loader. Both use scvi-tools' train/validation split and seed.

Multi-GPU (Lightning DDP through scvi-tools; run in CI on two CPU processes, tests/integrate/test_ddp.py,
see docs/multi_process.md): set ``accelerator: gpu``, ``devices: 4`` (or a list of ids) and
``strategy: ddp`` (run as ``ddp_find_unused_parameters_true``, :func:`lightning_strategy`). Run it as a
command (``atlas integrate``), not in a notebook: Lightning's launcher starts one process per GPU,
each re-running the command; every rank trains on its share of each epoch (the fast loader shards
one seeded permutation, scvi-tools' loader uses a distributed sampler), the effective batch size is
``batch_size x devices``, scvi-tools switches early stopping off under DDP, and only rank 0 writes
the bundle.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._checks import as_categorical, counts_matrix, refuse_truth, require_obs_keys
from .errors import IntegrateInputError, TooSmallError, missing_key
from .settings import IntegrateSettings

log = logging.getLogger(__name__)

INFERENCE_BATCH_SIZE = 4096
MIN_CELLS = 50
#: Bounds of ``max_epochs: auto`` (400 is scvi-tools' own cap).
AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS = 1, 400
#: scvi-tools' default KL warm-up (``n_epochs_kl_warmup``), whatever the training length.
SCVI_KL_WARMUP_EPOCHS = 400
#: the final KL weight below which a run is said not to have reached the ELBO (the last epoch of a warm-up
#: spanning the whole training ends just under 1)
KL_WEIGHT_REACHED = 0.95
#: Per-epoch training metrics kept in the ELBO curve (scvi-tools' history keys), when logged.
CURVE_KEYS = (
    "elbo_train",
    "elbo_validation",
    "reconstruction_loss_train",
    "reconstruction_loss_validation",
    "kl_local_train",
    "kl_local_validation",
    "kl_weight",
)


@dataclass
class TrainResult:
    """What :func:`train_scvi` produced."""

    model: Any
    """The final scvi-tools model (``SCANVI`` when ``model='scanvi'``, else ``SCVI``)."""
    scvi_model: Any
    """The scVI model (the same object as ``model`` without scANVI)."""
    latent_key: str
    """obsm key of the final latent space (``X_scANVI`` or ``X_scVI``)."""
    batch_key: str | None
    """Batch key given to ``setup_anndata`` (``None`` when the configured one had a single value)."""
    categorical_covariates: list[str]
    """Covariates given to ``setup_anndata`` (constant ones are left out)."""
    epochs: dict[str, int] = field(default_factory=dict)
    history: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    convergence: dict[str, dict] = field(default_factory=dict)
    """Per model (``scvi``, ``scanvi``): epochs planned and trained, steps, final ELBOs, plateau check."""
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    """Per model: the per-epoch ELBO curve (:data:`CURVE_KEYS`), one row per epoch."""
    warnings: list[str] = field(default_factory=list)
    """Convergence warnings (also in ``notes``)."""


def _scratch_dir(prefix: str) -> str:
    """A temporary folder removed when the process ends."""
    import atexit
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def lightning_strategy(strategy: str) -> str:
    """The Lightning strategy for ``strategy``: plain ``ddp``/``ddp_spawn`` find unused parameters.

    scVI has parameters that never enter the loss (the library-size encoder when the observed library
    size is used, the per-cell dispersion head when the dispersion is per gene), so DDP's default reducer
    stops at the first step; ``ddp`` becomes ``ddp_find_unused_parameters_true`` (same for ``ddp_spawn``, ``ddp_notebook``).
    """
    if strategy in ("ddp", "ddp_spawn", "ddp_notebook"):
        return f"{strategy}_find_unused_parameters_true"
    return strategy


def plan_epochs(n_obs: int, s: IntegrateSettings) -> tuple[int | None, dict[str, Any]]:
    """scVI's ``max_epochs`` for ``n_obs`` cells, and how it was chosen.

    ``max_epochs: auto`` trains for ``train_steps`` gradient steps: ``ceil(train_steps / steps per
    epoch)`` epochs, bounded to [1, 400], where an epoch is ``ceil(n_train / (batch_size x devices x num_nodes))``
    steps. A fixed number is used as given; ``None`` leaves the choice to scvi-tools.

    Parameters
    ----------
    n_obs
        Cells trained on (training and validation).
    s
        Integration settings (``max_epochs``, ``train_steps``, ``batch_size``, ``train_size``, ``devices``).

    Returns
    -------
    ``(max_epochs, plan)``: the epochs to pass to ``model.train`` (``None`` = scvi-tools' rule) and a
    JSON-able record (``rule``, ``steps_per_epoch``, ``epochs_planned``, ``steps_planned``).
    """
    n_train = max(1, math.floor(n_obs * s.train_size))
    per_epoch = max(1, math.ceil(n_train / (s.batch_size * s.n_processes)))
    if s.max_epochs == "auto":
        rule = f"auto: {s.train_steps} steps at batch {s.batch_size}"
        epochs = int(min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, math.ceil(s.train_steps / per_epoch))))
    elif s.max_epochs is None:
        rule = "scvi-tools: min(400, round(400 x 20,000 / n_cells))"
        epochs = int(min(AUTO_MAX_EPOCHS, max(1, round(400 * 20_000 / max(1, n_obs)))))
    else:
        rule, epochs = "fixed", int(s.max_epochs)
    plan = {
        "rule": rule,
        "batch_size": s.batch_size,
        "n_train_cells": n_train,
        "steps_per_epoch": per_epoch,
        "epochs_planned": epochs,
        "steps_planned": epochs * per_epoch,
        "kl_warmup_epochs": kl_warmup_epochs(epochs, s.kl_warmup),
    }
    return (None if s.max_epochs is None else epochs), plan


def kl_warmup_epochs(epochs: int, share: float | None) -> int:
    """Epochs of the linear KL warm-up: ``share`` of ``epochs``, or scvi-tools' 400 when ``None``.

    At most ``epochs - 1`` (at least 1), so that the last epoch trains on the ELBO itself: scvi-tools sets the
    weight of epoch ``e`` (from 0) to ``e / warm-up epochs``.
    """
    if share is None:
        return SCVI_KL_WARMUP_EPOCHS
    return max(1, min(math.ceil(share * epochs), epochs - 1))


def elbo_curve(model) -> pd.DataFrame:
    """The per-epoch training metrics of a trained scvi-tools model (:data:`CURVE_KEYS` that were logged)."""
    hist = getattr(model, "history", None) or {}
    cols = []
    for key in CURVE_KEYS:
        h = hist.get(key)
        if h is not None and len(h):
            frame = h if isinstance(h, pd.DataFrame) else pd.DataFrame({key: np.asarray(h).ravel()})
            col = frame.iloc[:, 0].rename(key).astype(float)
            cols.append(col.set_axis(pd.RangeIndex(len(col))) if col.index.has_duplicates else col)
    if not cols:
        return pd.DataFrame({"epoch": pd.Series(dtype=int)})
    out = pd.concat(cols, axis=1).sort_index()  # aligned on scvi-tools' epoch index (0-based)
    out.insert(0, "epoch", np.arange(1, len(out) + 1))
    return out.reset_index(drop=True)


def plateau_check(values, window: float = 0.2, tolerance: float = 0.005) -> dict[str, Any]:
    """Whether a loss curve (lower is better) has levelled off over its last ``window`` share of epochs.

    The improvement is ``(best before the window - best overall) / |best before the window|``; the
    plateau is reached when it is below ``tolerance``. The window is at least 2 epochs, and at
    least one epoch must precede it (else ``reached`` is ``None``: too few epochs to judge).

    Parameters
    ----------
    values
        Per-epoch values (NaNs are dropped), e.g. the validation ELBO.
    window
        Share of the epochs, at the end, over which the improvement is measured.
    tolerance
        Relative improvement below which the curve counts as levelled off.

    Returns
    -------
    ``{"reached": bool | None, "relative_improvement": float | None, "window_epochs": int}``.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    w = max(2, math.ceil(window * v.size))
    if v.size < w + 1:
        return {"reached": None, "relative_improvement": None, "window_epochs": w}
    before = float(v[: v.size - w].min())
    gain = (before - float(v.min())) / max(abs(before), 1e-12)
    return {"reached": bool(gain < tolerance), "relative_improvement": gain, "window_epochs": w}


def _convergence(model, name: str, plan: dict, s: IntegrateSettings, result: TrainResult) -> None:
    """Record the convergence and ELBO curve of a trained model in ``result``; warn when it has not levelled off."""
    if getattr(getattr(model, "trainer", None), "global_rank", 0):
        return  # DDP rank > 0: the metrics are logged (and the bundle written) on rank 0
    curve = elbo_curve(model)
    key = (
        "elbo_validation"
        if "elbo_validation" in curve and curve["elbo_validation"].notna().any()
        else "elbo_train"
    )
    check = plateau_check(curve[key] if key in curve else [], s.plateau_window, s.plateau_tolerance)
    trainer = getattr(model, "trainer", None)
    epochs = int(len(curve))
    record = {
        **plan,
        "epochs": epochs,
        "steps": int(getattr(trainer, "global_step", 0) or 0) or epochs * plan["steps_per_epoch"],
        "stopped_early": epochs < plan["epochs_planned"],
        "plateau_metric": key,
        "plateau_reached": check["reached"],
        "plateau_relative_improvement": check["relative_improvement"],
        "plateau_window_epochs": check["window_epochs"],
        "plateau_tolerance": s.plateau_tolerance,
    }
    for col in ("elbo_train", "elbo_validation"):
        if col in curve and curve[col].notna().any():
            record[f"final_{col}"] = float(curve[col].dropna().iloc[-1])
    if "kl_warmup_epochs" in plan and epochs:  # scvi-tools' weight of the last epoch (from 0): e / warm-up
        record["final_kl_weight"] = min(1.0, (epochs - 1) / plan["kl_warmup_epochs"])
    log.info(
        "%s trained %d epochs (%d steps of %d cells); %s %.1f -> %.1f; plateau %s (%s over the last %d epochs)",
        name,
        epochs,
        record["steps"],
        s.batch_size,
        key,
        float(curve[key].dropna().iloc[0]) if key in curve and curve[key].notna().any() else float("nan"),
        record.get(f"final_{key}", float("nan")),
        {True: "reached", False: "NOT reached", None: "not judged"}[check["reached"]],
        "n/a" if check["relative_improvement"] is None else f"{100 * check['relative_improvement']:.2f}%",
        check["window_epochs"],
    )
    result.convergence[name.lower()], result.curves[name.lower()] = record, curve
    kl = record.get("final_kl_weight")  # scANVI (no planned warm-up) keeps scvi-tools' own
    if kl is not None and kl < KL_WEIGHT_REACHED:
        _warn(result, f"{name}: training ended at KL weight {kl:.2f}, before the warm-up reached the ELBO (a "
                      f"beta-VAE with beta < 1 keeps more batch signal in the latent): set integrate.kl_warmup "
                      f"(share of the epochs) below 1, or train longer")  # fmt: skip
    if check["reached"] is False:
        _warn(result, f"{name}: the {key} still improved by {100 * check['relative_improvement']:.2f}% over the last "
                      f"{check['window_epochs']} of {epochs} epochs ({record['steps']} steps; plateau: < "
                      f"{100 * s.plateau_tolerance:.2f}%): the model may be undertrained; raise train_steps "
                      f"(max_epochs: auto) or max_epochs, or lower batch_size")  # fmt: skip


def _warn(result: TrainResult, msg: str) -> None:
    """Log ``msg`` as a warning and keep it in the result's notes and warnings (the report shows both)."""
    log.warning(msg)
    result.notes.append(msg)
    result.warnings.append(msg)


def resolve_settings(settings: IntegrateSettings | None, overrides: dict) -> IntegrateSettings:
    """``settings`` updated by keyword overrides (validated like the config)."""
    from ..core.settings import validate

    base = settings.model_dump() if settings is not None else {}
    return validate(IntegrateSettings, {**base, **overrides}, "integrate settings")


def _prepare_covariates(adata, s: IntegrateSettings, notes: list[str]) -> tuple[str | None, list[str]]:
    keys = {
        "batch_key": s.batch_key,
        **{f"categorical_covariates[{i}]": c for i, c in enumerate(s.categorical_covariates)},
    }
    require_obs_keys(adata, keys)
    as_categorical(adata, [s.batch_key, *s.categorical_covariates])
    batch_key: str | None = s.batch_key
    n_batches = adata.obs[s.batch_key].nunique()
    if n_batches < 2:
        msg = (
            f"batch_key {s.batch_key!r} has a single value ({adata.obs[s.batch_key].iloc[0]!r}): "
            f"training scVI without a batch covariate"
        )
        log.warning(msg)
        notes.append(msg)
        batch_key = None
    covs = []
    for cov in s.categorical_covariates:
        if adata.obs[cov].nunique() < 2:
            msg = f"categorical covariate {cov!r} is constant: left out of the model"
            log.warning(msg)
            notes.append(msg)
        else:
            covs.append(cov)
    return batch_key, covs


def _prepare_labels(adata, s: IntegrateSettings, notes: list[str]) -> None:
    key = s.labels_key
    if not key:
        raise IntegrateInputError("model='scanvi' needs labels_key (the obs column of cell labels)")
    if key not in adata.obs.columns:
        raise missing_key(key, "labels_key", adata.obs.columns)
    col = adata.obs[key].astype(object)
    n_missing = int(col.isna().sum())
    if n_missing:
        notes.append(f"{n_missing} cells without a label in {key!r} treated as {s.unlabeled_category!r}")
    col = col.where(col.notna(), s.unlabeled_category).astype(str)
    adata.obs[key] = pd.Categorical(col)
    n_labelled = int((col != s.unlabeled_category).sum())
    if n_labelled == 0:
        raise IntegrateInputError(
            f"labels_key {key!r} holds no labelled cell (every value is {s.unlabeled_category!r} or missing); "
            f"scANVI needs some labelled cells, or use model: scvi"
        )
    log.info("scANVI labels %r: %d labelled, %d unlabelled cells", key, n_labelled, adata.n_obs - n_labelled)


def _train(
    model, s: IntegrateSettings, max_epochs: int | None, notes: list[str], kl_warmup: int | None = None
) -> None:
    """``model.train`` on the configured data path and devices."""
    from ..core.progress import progress_enabled
    from ._device import resolve_accelerator
    from .progress_log import epoch_logger

    accelerator = resolve_accelerator(s.accelerator)
    # 0.9 = scvi-tools' default split, which also moves a tail of < 3 cells to validation.
    train_size = None if math.isclose(s.train_size, 0.9) else s.train_size
    early_stopping = s.early_stopping
    if early_stopping and s.train_size >= 1.0:
        notes.append("early stopping needs a validation set (train_size < 1): switched off")
        log.warning(notes[-1])
        early_stopping = False
    kwargs: dict[str, Any] = {
        "max_epochs": max_epochs,
        "accelerator": accelerator,
        "devices": s.devices,
        "plan_kwargs": {"lr": s.learning_rate, **({"n_epochs_kl_warmup": kl_warmup} if kl_warmup else {})},
        "early_stopping": early_stopping,
        "early_stopping_patience": s.early_stopping_patience,
        "enable_progress_bar": progress_enabled(),
        "callbacks": epoch_logger("integrate"),  # progress lines off a terminal
        # the validation ELBO every epoch: the convergence check and the recorded curve need it
        "check_val_every_n_epoch": 1,
    }
    if s.strategy:
        kwargs["strategy"] = lightning_strategy(s.strategy)
        if s.strategy.startswith("ddp"):  # scvi-tools then keeps its history on disk: not in the user's folder
            kwargs["log_save_dir"] = _scratch_dir("atlas-scvi-log-")
    if s.num_nodes > 1:
        kwargs["num_nodes"] = s.num_nodes
    if s.data_loader == "fast":
        from .datamodule import FastDataModule

        dm = FastDataModule(
            model.adata_manager,
            batch_size=s.batch_size,
            train_size=train_size,
            seed=s.seed,
            chunk_cells=s.device_chunk_cells,
        )
        if early_stopping and dm.n_val == 0:
            notes.append("no validation cells: early stopping switched off")
            early_stopping = kwargs["early_stopping"] = False
        model.train(datamodule=dm, **kwargs)
    else:
        model.train(batch_size=s.batch_size, train_size=train_size, **kwargs)


def _training_keys(s: IntegrateSettings) -> dict[str, str | None]:
    """The obs columns the model trains on, by setting name."""
    keys: dict[str, str | None] = {"batch_key": s.batch_key}
    keys.update({f"categorical_covariates[{i}]": c for i, c in enumerate(s.categorical_covariates)})
    if s.model == "scanvi":
        keys["labels_key"] = s.labels_key
    return keys


def _history(model, prefix: str) -> tuple[int, dict[str, float]]:
    hist = model.history
    out = {}
    for key in ("elbo_train", "elbo_validation", "reconstruction_loss_validation"):
        if key in hist and len(hist[key]):
            out[f"{prefix}_{key}"] = float(np.asarray(hist[key]).ravel()[-1])
    epochs = len(hist["elbo_train"]) if "elbo_train" in hist else 0
    return epochs, out


def train_scvi(
    adata,
    *,
    layer: str | None = None,
    settings: IntegrateSettings | None = None,
    check_counts: bool = True,
    **overrides,
) -> TrainResult:
    """Set up and train scVI (then scANVI when asked) on raw counts; write the latent space into ``adata``.

    Parameters
    ----------
    adata
        Cells x HVGs with raw counts in ``X`` (or ``layer``). Registered in place by
        ``SCVI.setup_anndata`` (batch and covariate columns become categorical).
    layer
        Layer holding the counts (default ``X``).
    settings
        Integration settings; defaults of :class:`IntegrateSettings` when ``None``.
    check_counts
        Refuse a matrix that is not raw counts (skip when the caller has checked).
    **overrides
        Any :class:`IntegrateSettings` field (``n_latent=10``, ``max_epochs=5``, ``data_loader='scvi'``, ...).

    Returns
    -------
    :class:`TrainResult`; ``adata.obsm['X_scVI']`` (and ``adata.obsm['X_scANVI']``) hold the latent means.

    Raises
    ------
    MissingKeyError
        A batch, covariate or labels column is not in ``adata.obs``.
    IntegrateInputError
        scANVI without labels, or labels without any labelled cell.
    NotCountsError, TooSmallError
        Not raw counts; fewer than 50 cells.
    """
    import scvi

    s = resolve_settings(settings, overrides)
    refuse_truth(_training_keys(s))
    if check_counts:
        counts_matrix(adata, layer)
    if adata.n_obs < MIN_CELLS:
        raise TooSmallError(f"scVI needs at least {MIN_CELLS} cells; the data hold {adata.n_obs}")
    notes: list[str] = []
    batch_key, covs = _prepare_covariates(adata, s, notes)
    if s.model == "scanvi":
        _prepare_labels(adata, s, notes)

    scvi.settings.seed = s.seed
    scvi.model.SCVI.setup_anndata(
        adata, layer=layer, batch_key=batch_key, categorical_covariate_keys=covs or None
    )
    model = scvi.model.SCVI(
        adata,
        n_latent=s.n_latent,
        n_hidden=s.n_hidden,
        n_layers=s.n_layers,
        gene_likelihood=s.gene_likelihood,
        dropout_rate=s.dropout_rate,
        **(
            {"encode_covariates": True, "use_layer_norm": "both", "use_batch_norm": "none"}
            if s.scarches_architecture
            else {}
        ),
    )
    log.info(
        "training scVI on %d cells x %d genes (batch %s, covariates %s, data loader %s)",
        adata.n_obs,
        adata.n_vars,
        batch_key,
        covs,
        s.data_loader,
    )
    result = TrainResult(
        model=model,
        scvi_model=model,
        latent_key="X_scVI",
        batch_key=batch_key,
        categorical_covariates=covs,
        notes=notes,
    )
    max_epochs, plan = plan_epochs(adata.n_obs, s)
    log.info(
        "scVI: %d epochs x %d steps of %d cells (%s)",
        plan["epochs_planned"],
        plan["steps_per_epoch"],
        s.batch_size,
        plan["rule"],
    )
    t0 = time.perf_counter()
    _train(model, s, max_epochs, notes, plan["kl_warmup_epochs"])
    result.seconds["scvi_train"] = time.perf_counter() - t0
    result.epochs["scvi"], hist = _history(model, "scvi")
    result.history.update(hist)
    _convergence(model, "scVI", plan, s, result)
    adata.obsm["X_scVI"] = model.get_latent_representation(batch_size=INFERENCE_BATCH_SIZE).astype(np.float32)

    if s.model == "scanvi":
        scvi.settings.seed = s.seed
        scanvi = scvi.model.SCANVI.from_scvi_model(
            model, unlabeled_category=s.unlabeled_category, labels_key=s.labels_key
        )
        t0 = time.perf_counter()
        _train(scanvi, s, s.scanvi_max_epochs, notes)
        result.seconds["scanvi_train"] = time.perf_counter() - t0
        result.epochs["scanvi"], hist = _history(scanvi, "scanvi")
        result.history.update(hist)
        scanvi_plan = {
            "rule": "fixed" if s.scanvi_max_epochs else "scvi-tools (pretrained scANVI)",
            "batch_size": s.batch_size,
            "n_train_cells": plan["n_train_cells"],
            "steps_per_epoch": plan["steps_per_epoch"],
            "epochs_planned": result.epochs["scanvi"] if s.scanvi_max_epochs is None else s.scanvi_max_epochs,
        }
        scanvi_plan["steps_planned"] = scanvi_plan["epochs_planned"] * plan["steps_per_epoch"]
        _convergence(scanvi, "scANVI", scanvi_plan, s, result)
        adata.obsm["X_scANVI"] = scanvi.get_latent_representation(batch_size=INFERENCE_BATCH_SIZE).astype(
            np.float32
        )
        result.model, result.latent_key = scanvi, "X_scANVI"
    return result


def validation_elbo(model, batch_size: int = INFERENCE_BATCH_SIZE) -> float:
    """The model's ELBO on its validation cells, computed with scvi-tools' own loader (for comparisons)."""
    idx = getattr(model, "validation_indices", None)
    if idx is None or len(idx) == 0:
        raise ValueError("the model has no validation cells (train_size = 1)")
    return float(model.get_elbo(indices=np.asarray(idx), batch_size=batch_size))


def registry_summary(model) -> dict:
    """A JSON-able summary of the model's scvi-tools registry (setup arguments, categories, sizes)."""
    reg = model.adata_manager.registry
    fields = {}
    for name, fr in reg.get("field_registries", {}).items():
        state = fr.get("state_registry", {})
        fields[name] = {
            "data_registry": fr.get("data_registry", {}),
            "state_registry": {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in state.items()},
            "summary_stats": {
                k: (v.item() if hasattr(v, "item") else v) for k, v in fr.get("summary_stats", {}).items()
            },
        }
    return {
        "model_class": type(model).__name__,
        "scvi_version": reg.get("scvi_version"),
        "setup_method_name": reg.get("setup_method_name"),
        "setup_args": reg.get("setup_args", {}),
        "fields": fields,
        "n_vars": int(model.adata.n_vars),
        "n_obs_trained": int(model.adata.n_obs),
        "init_params": _jsonable(getattr(model, "init_params_", {})),
    }


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)
