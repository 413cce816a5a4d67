"""Input checks shared by the integrate steps: obs keys, raw counts, small batches."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import NotCountsError, missing_key

log = logging.getLogger(__name__)

#: values within this distance of a whole number count as whole (float round-trips of counts)
INTEGER_TOLERANCE = 1e-4
_CHUNK = 10_000_000  # values checked at a time (bounds the temporary memory of the check)


def require_obs_keys(adata, keys: dict[str, str | None]) -> None:
    """Raise :class:`MissingKeyError` for the first ``{setting: key}`` whose key is not an obs column."""
    for setting, key in keys.items():
        if key is not None and key not in adata.obs.columns:
            raise missing_key(key, setting, adata.obs.columns)


def refuse_truth(keys: dict[str, str | None]) -> None:
    """Ground truth (``truth_*`` obs columns of simulated data) may only be used for evaluation.

    Raises
    ------
    IntegrateInputError
        A training input (batch, covariate, labels) names a ``truth_*`` column.
    """
    from .errors import IntegrateInputError

    for setting, key in keys.items():
        if key is not None and str(key).startswith("truth_"):
            raise IntegrateInputError(
                f"{setting}={key!r}: truth_* columns are ground truth of simulated data, for evaluation only "
                f"(metrics_label_key may name one); the model must not train on them"
            )


def counts_matrix(adata, layer: str | None = None):
    """The count matrix (``X`` or a layer), refused with evidence unless it holds raw counts.

    Raises
    ------
    NotCountsError
        Negative, non-finite or non-integer values; the message quotes examples.
    """
    X = adata.X if layer is None else adata.layers[layer]
    where = "X" if layer is None else f"layers[{layer!r}]"
    if X is None:
        raise NotCountsError("the store has no count matrix (X is empty); integrate needs raw counts")
    data = X.data if sp.issparse(X) else np.asarray(X).reshape(-1)
    for start in range(0, data.size, _CHUNK):
        chunk = data[start : start + _CHUNK]
        bad = ~np.isfinite(chunk) | (chunk < 0) | (np.abs(chunk - np.rint(chunk)) > INTEGER_TOLERANCE)
        if bad.any():
            examples = ", ".join(f"{v:.4g}" for v in chunk[bad][:3])
            raise NotCountsError(
                f"{where} of the store does not hold raw counts: found values such as {examples} "
                f"(negative, non-finite or not whole numbers). scVI and seurat_v3 HVGs need raw UMI counts; "
                f"ingest the data sets from their raw counts (DatasetConfig.counts: 'raw' or 'layers/<name>')"
            )
    return X


def as_categorical(adata, keys: Iterable[str]) -> None:
    """Make obs columns categorical strings (scvi-tools and scib need categories; NaN becomes 'nan')."""
    for key in keys:
        col = adata.obs[key]
        if not isinstance(col.dtype, pd.CategoricalDtype) or col.isna().any():
            adata.obs[key] = pd.Categorical(col.astype(str))
        else:
            adata.obs[key] = col.cat.remove_unused_categories()


#: obs column scVI trains on when small batches were pooled (``batch_key`` keeps each cell's own value)
INTEGRATION_BATCH = "integration_batch"
#: the data set column small batches are pooled within
POOL_GROUP_KEY = "dataset_id"
#: a pool too small on its own joins a batch of the same patient (this column) in its data set
POOL_PATIENT_KEY = "patient_id"


def small_batches(
    obs: pd.DataFrame, batch_key: str, min_cells: int, *, pool: bool = True, group_key: str = POOL_GROUP_KEY,
    patient_key: str = POOL_PATIENT_KEY,
) -> tuple[pd.Series, dict[str, int], dict[str, int]]:
    """Training batches when batches of ``min_cells`` cells or fewer are pooled (or, ``pool=False``, dropped).

    Without pooling the cells of every small batch are dropped (LuCA dropped batches of <= 25 cells). With
    it, in order, for the cells of small batches:

    1. the small batches of one data set (``group_key``) form one batch, ``"<data set>: small <batch_key>s"``;
    2. such a pool that is itself that small joins a regular batch of its data set: the largest one of the
       same patient (``patient_key``) when there is one, else the data set's largest;
    3. a data set with no regular batch sends it to ``"small <batch_key>s"``, shared across data sets;
    4. cells still in a pool of ``min_cells`` or fewer are dropped.

    Cells of one sample share their batch's technical effects; pooling small samples of one data set (one
    protocol, one lab) keeps their cells in the atlas at the price of a shared batch effect, where
    dropping them (LuCA's rule) loses whole patients.

    Returns
    -------
    labels, pooled, dropped
        The training batch of every cell (NaN: dropped), ``{training batch: cells of small batches in it}``
        and ``{batch: n_cells}`` of the batches dropped.
    """
    labels = obs[batch_key].astype(str)
    if min_cells <= 0:
        return labels, {}, {}
    sizes = labels.value_counts()
    small = labels.isin(sizes.index[sizes <= min_cells]).to_numpy()
    if not small.any():
        return labels, {}, {}
    if not pool:
        labels[small] = np.nan
        return labels, {}, _counts(obs.loc[small, batch_key])
    plural = f"small {batch_key}s"
    groups = obs[group_key].astype(str) if group_key in obs.columns else pd.Series("", index=obs.index)
    patients = obs[patient_key].astype(str) if patient_key in obs.columns else groups
    labels = labels.where(~small, groups.map(lambda g: f"{g}: {plural}" if g else plural))
    regular = pd.DataFrame({"batch": labels, "group": groups, "patient": patients})[~small]
    pool_sizes = labels[small].value_counts()
    for pool in pool_sizes.index[pool_sizes <= min_cells]:
        cells = small & (labels == pool).to_numpy()
        group, patient = groups[cells].iloc[0], patients[cells].iloc[0]
        same = regular[regular["group"] == group]
        mine = same[same["patient"] == patient] if patients[cells].nunique() == 1 else same.iloc[:0]
        target = (mine if len(mine) else same)["batch"].value_counts()
        labels[cells] = target.index[0] if len(target) else plural
    last = small & (labels == plural).to_numpy()
    if 0 < last.sum() <= min_cells:
        labels[last] = np.nan
    kept = small & labels.notna().to_numpy()
    return labels, _counts(labels[kept]), _counts(obs.loc[small & labels.isna().to_numpy(), batch_key])


def _counts(values: pd.Series) -> dict[str, int]:
    """``{value: n}``, sorted by value."""
    return {str(k): int(v) for k, v in values.astype(str).value_counts().sort_index().items()}
