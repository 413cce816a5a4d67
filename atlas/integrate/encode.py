"""Cells of a store into a trained atlas model's latent space, without training: the saved encoder only.

The atlas's models do not feed the batch to the encoder (scvi-tools' default ``encode_covariates=False``), so
a cell's latent mean depends on its counts alone: cells of the atlas's own data sets that were not trained on
(the cells QC removed, :mod:`atlas.analyse.qc_audit`) land where the atlas's cells of their kind are. A model
built with ``scarches_architecture`` does encode the batch: there a cell needs its training batch, and cells
whose batch the model never saw are left out (``encoded`` False) rather than given another batch's offset.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..core.errors import InputDataError

__all__ = ["EncodedCells", "SavedEncoder", "encode_cells", "model_categories", "onto_genes", "read_saved_model"]

log = logging.getLogger(__name__)

INFERENCE_BATCH_SIZE = 4096


def read_saved_model(model_dir: str | Path) -> tuple[str, list[str], dict]:
    """Class name, genes and scvi-tools registry of the model saved in ``model_dir`` (read without building it).

    Raises
    ------
    InputDataError
        The file is missing, damaged or not an scvi-tools model.
    """
    import torch

    path = Path(model_dir) / "model.pt"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        var_names = [str(g) for g in saved["var_names"]]
        registry = saved["attr_dict"]["registry_"]
    except Exception as e:  # torch/pickle errors on a damaged or foreign file
        raise InputDataError(f"cannot read the scvi-tools model {path} ({type(e).__name__}: {e}); rebuild the "
                             "reference bundle") from e  # fmt: skip
    return str(registry.get("model_name")), var_names, registry


def onto_genes(adata, genes: list[str]):
    """Cells x ``genes`` (float32 CSR, in that order): measured genes copied, the others zero-filled."""
    import anndata as ad

    target = pd.Index(genes)
    col = adata.var_names.get_indexer(target)
    X = sp.csr_matrix(adata.X, dtype=np.float32)
    have = np.flatnonzero(col >= 0)
    # relabel columns: X[:, col[have]] lands at positions `have`; the rest stay empty (zero-filled)
    M = sp.csr_matrix((np.ones(len(have), np.float32), (col[have], have)), shape=(adata.n_vars, len(target)))
    out = ad.AnnData(X=(X @ M).tocsr(), obs=adata.obs.copy(), var=pd.DataFrame(index=target))
    out.var["measured"] = col >= 0
    return out


@dataclass
class EncodedCells:
    """Latent means of the cells that could be encoded."""

    latent: np.ndarray  # encoded cells x n_latent
    encoded: np.ndarray  # bool per input cell
    notes: list[str] = field(default_factory=list)


def model_categories(registry: dict) -> dict[str, list[str]]:
    """obs column -> the model's categories, for every categorical field it was set up with."""
    args, fields = registry.get("setup_args", {}), registry.get("field_registries", {})
    out: dict[str, list[str]] = {}
    for name, key in (("batch", args.get("batch_key")), ("labels", args.get("labels_key"))):
        if key:
            out[key] = [str(c) for c in fields.get(name, {}).get("state_registry", {}).get("categorical_mapping", [])]
    mappings = fields.get("extra_categorical_covs", {}).get("state_registry", {}).get("mappings", {})
    for key in args.get("categorical_covariate_keys") or []:
        out[key] = [str(c) for c in mappings.get(key, [])]
    return out


def _model_obs(obs: pd.DataFrame, registry: dict) -> tuple[pd.DataFrame, np.ndarray]:
    """obs with every categorical field the model needs; and per cell whether all its values are the model's own
    (a value the model never saw gets the first category and ``seen`` False)."""
    args = registry.get("setup_args", {})
    out = pd.DataFrame(index=obs.index)
    seen = np.ones(len(obs), dtype=bool)
    for key, cats in model_categories(registry).items():
        if key == args.get("labels_key"):  # scANVI: every cell unlabelled (the encoder does not see labels)
            value = pd.Series(args.get("unlabeled_category", "unlabeled"), index=obs.index)
        else:
            value = obs[key].astype(str) if key in obs else pd.Series("", index=obs.index)
            ok = value.isin(cats).to_numpy()
            seen &= ok
            value = value.where(ok, cats[0] if cats else "")
        out[key] = pd.Categorical(value.astype(str), categories=cats or None)
    for key in args.get("continuous_covariate_keys") or []:
        if key not in obs:
            raise InputDataError(f"the model conditions on the continuous covariate {key!r}, which these cells lack")
        out[key] = obs[key].to_numpy(dtype=np.float32)
    return out, seen


class SavedEncoder:
    """The encoder of the model saved in ``model_dir`` (an ``atlas integrate`` bundle's ``model/``), built once and
    applied to any number of cell sets (:meth:`encode`); ``accelerator``: where it runs (``cpu``: the cells are few).
    """

    def __init__(self, model_dir: str | Path, accelerator: str = "cpu"):
        import scvi

        self.model_dir, self.accelerator = Path(model_dir), accelerator
        cls_name, self.genes, self.registry = read_saved_model(model_dir)
        self.cls = getattr(scvi.model, cls_name, None)
        if self.cls is None:
            raise InputDataError(f"{model_dir} holds a {cls_name} model, which scvi-tools does not provide")
        self.model = None

    def encode(self, adata) -> EncodedCells:
        """Latent means of ``adata``'s cells: raw counts in ``X`` (gene symbols), the store's obs (batch and
        covariate columns under the names the model was set up with)."""
        q = onto_genes(adata, self.genes)
        q.obs, seen = _model_obs(adata.obs, self.registry)
        layer = self.registry.get("setup_args", {}).get("layer")
        if layer:
            q.layers[layer] = q.X
        with warnings.catch_warnings():  # scvi-tools warns of categories with < 3 cells: nothing is trained here
            warnings.filterwarnings("ignore", message=".*fewer than 3 cells", category=UserWarning)
            if self.model is None:
                self.model = self.cls.load(str(self.model_dir), adata=q, accelerator=self.accelerator)
            module = self.model.module
            notes = []
            encoded = np.ones(q.n_obs, dtype=bool)
            if getattr(module, "encode_covariates", False) and not seen.all():
                encoded = seen
                notes.append(f"{int((~seen).sum())} cells are of batches the model never trained on and its encoder "
                             "reads the batch (scarches_architecture): they are left out")  # fmt: skip
            latent = np.zeros((0, module.n_latent), dtype=np.float32)
            if encoded.any():  # a later cell set is registered with the loaded model here (scvi-tools' own check)
                latent = np.asarray(self.model.get_latent_representation(
                    adata=q, indices=np.flatnonzero(encoded), give_mean=True, batch_size=INFERENCE_BATCH_SIZE),
                    dtype=np.float32)  # fmt: skip
        return EncodedCells(latent=latent, encoded=encoded, notes=notes)


def encode_cells(model_dir: str | Path, adata, *, accelerator: str = "cpu") -> EncodedCells:
    """Latent means of ``adata``'s cells in the model saved in ``model_dir`` (:class:`SavedEncoder`, once)."""
    return SavedEncoder(model_dir, accelerator).encode(adata)
