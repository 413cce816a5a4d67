"""scArches surgery through scvi-tools: the reference model extended to the query's batches.

``SCVI.load_query_data`` (``SCANVI.load_query_data``) loads the saved reference model, adds the
query's batch categories and freezes every reference weight (scvi-tools' scArches defaults); only the
new batch weights are trained on the query, seeded, for ``max_epochs`` epochs with no weight decay,
as in the scvi-tools scArches tutorial. The reference latent space is therefore unchanged and the
query lands in it. scANVI references also give their classifier's predictions.

The reference models of ``atlas integrate`` do not feed the batch to the encoder (scvi-tools'
default ``encode_covariates=False``), so the query's latent coordinates, and with them its labels and
UMAP placement, come from the frozen encoder and do not depend on the query training, which fits the
query batches' decoder weights (what the saved query model uses for denoised expression). Measured:
identical latents after 1 and 50 epochs (``benchmarks/query.md``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .reference import Reference
from .settings import QuerySettings

__all__ = ["MappingResult", "map_to_reference"]

log = logging.getLogger(__name__)

INFERENCE_BATCH_SIZE = 4096
GPU_EPOCHS, CPU_EPOCHS = 100, 10  # max_epochs=None; 10 keeps 10k cells < 3 min on 2 busy CPU cores


@dataclass
class MappingResult:
    """The query model and what it gives."""

    model: Any
    latent: np.ndarray
    epochs: int
    history: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    scanvi: pd.DataFrame | None = None  # scANVI prediction and uncertainty per query cell


def map_to_reference(adata, ref: Reference, s: QuerySettings) -> MappingResult:
    """Train the query model on ``adata`` (from :func:`~atlas.query.prepare.prepare_query`).

    Returns
    -------
    :class:`MappingResult` with the query latent (the reference model's latent space).
    """
    import scvi

    from ..core.progress import progress_enabled
    from ..integrate._device import resolve_accelerator
    from ..integrate.progress_log import epoch_logger

    cls = getattr(scvi.model, ref.model_class)
    accelerator = resolve_accelerator(s.accelerator)
    max_epochs = s.max_epochs or (GPU_EPOCHS if accelerator == "gpu" else CPU_EPOCHS)
    scvi.settings.seed = s.seed
    t0 = time.perf_counter()
    model = cls.load_query_data(adata, str(ref.model_dir), accelerator=accelerator)
    seconds = {"load": time.perf_counter() - t0}
    kwargs: dict[str, Any] = {
        "max_epochs": max_epochs,
        "batch_size": s.batch_size,
        "accelerator": accelerator,
        "train_size": 1.0,
        "early_stopping": False,
        "plan_kwargs": {"lr": s.learning_rate, "weight_decay": s.weight_decay},
        "enable_progress_bar": progress_enabled(),
        "callbacks": epoch_logger("query"),  # progress lines off a terminal
    }
    log.info("scArches: training the %s query model on %d cells for %d epochs (%s)", ref.model_class, adata.n_obs,
             max_epochs, accelerator)  # fmt: skip
    t = time.perf_counter()
    model.train(**kwargs)
    seconds["train"] = time.perf_counter() - t
    hist = model.history
    epochs = len(hist["elbo_train"]) if "elbo_train" in hist else max_epochs
    history = {k: float(np.asarray(hist[k]).ravel()[-1]) for k in ("elbo_train", "reconstruction_loss_train")
               if k in hist and len(hist[k])}  # fmt: skip
    t = time.perf_counter()
    latent = np.asarray(model.get_latent_representation(batch_size=INFERENCE_BATCH_SIZE), dtype=np.float32)
    scanvi = None
    if ref.model_class == "SCANVI":
        soft = model.predict(soft=True, batch_size=INFERENCE_BATCH_SIZE)
        scanvi = pd.DataFrame(
            {"scanvi_prediction": soft.idxmax(axis=1).astype(str).to_numpy(),
             "scanvi_uncertainty": 1.0 - soft.max(axis=1).to_numpy()},
            index=adata.obs_names,
        )  # fmt: skip
    seconds["latent"] = time.perf_counter() - t
    return MappingResult(model=model, latent=latent, epochs=epochs, history=history, seconds=seconds, scanvi=scanvi)
