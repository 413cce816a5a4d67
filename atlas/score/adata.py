"""``atlas.score.score_signatures``: the AnnData-facing scorer (the math is in :mod:`atlas.score.matrix`)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import AtlasError
from .gene_sets import match_genes, resolve_gene_sets
from .matrix import DEFAULT_CHUNK_SIZE, METHODS, Method, score_matrix

logger = logging.getLogger(__name__)


def _matrix(adata, layer: str | None, use_raw: bool | None) -> tuple[Any, pd.Index, str]:
    """The matrix to score, its gene names and where it came from (scanpy's use_raw rules)."""
    if use_raw is None:
        use_raw = layer is None and adata.raw is not None
    if use_raw and layer is not None:
        raise AtlasError(f"use_raw=True and layer={layer!r} exclude each other; pass one of them")
    if use_raw:
        if adata.raw is None:
            raise AtlasError("use_raw=True but adata.raw is empty; pass use_raw=False or a layer")
        return adata.raw.X, adata.raw.var_names, "raw.X"
    if layer is not None:
        if layer not in adata.layers:
            have = [str(k) for k in adata.layers if k is not None]  # anndata >= 0.13 lists X as layers[None]
            raise AtlasError(f"layer {layer!r} is not in adata.layers (have: {', '.join(have) or 'none'})")
        return adata.layers[layer], adata.var_names, f"layers[{layer!r}]"
    return adata.X, adata.var_names, "X"


def prepare_sets(
    signatures: Any, var_names: pd.Index, species: str
) -> tuple[list[str], list[np.ndarray], dict]:
    """Resolve ``signatures`` and match them to ``var_names``: names, column indices, reports."""
    if not var_names.is_unique:
        dup = var_names[var_names.duplicated()].unique()[:5].tolist()
        raise AtlasError(
            f"gene names are not unique (e.g. {dup}); make them unique (adata.var_names_make_unique())"
        )
    resolved = resolve_gene_sets(signatures, species=species)
    names, idx, reports = [], [], {}
    for rs in resolved:
        cols, rep = match_genes(rs, var_names)
        names.append(rs.name)
        idx.append(cols)
        reports[rs.name] = rep
    return names, idx, reports


def score_signatures(
    adata,
    signatures: Any,
    *,
    method: Method = "scanpy",
    layer: str | None = None,
    use_raw: bool | None = None,
    normalize: bool | str = "auto",
    backend: str = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    ctrl_size: int = 50,
    n_bins: int = 25,
    random_state: int | np.random.RandomState | None = 0,
    key_added: str | None = None,
    max_rank: int = 1500,
    n_up: int | None = None,
    missing_genes: str = "skip",
    species: str = "human",
    target_sum: float = 1e4,
) -> pd.DataFrame:
    """Score gene signatures in every cell, all signatures fused in one pass over the matrix.

    Parameters
    ----------
    adata
        Cells x genes AnnData (in memory or backed; X may be numpy, scipy CSR, dask, cupyx CSR).
    signatures
        Registry names (``atlas signatures list``), a GMT/YAML path, a ``{name: genes}`` dict, or a
        list of these. Outdated human symbols are updated; sets of the other species are translated
        through one-to-one orthologues.
    method
        ``"scanpy"``: ``sc.tl.score_genes`` reproduced (same bins, same control genes for the same
        ``random_state``, as if called once per signature); ``"aucell"``: decoupler's AUCell;
        ``"ucell"``: pyUCell's UCell; ``"mean"``: mean of the signature genes.
    layer, use_raw
        Which matrix to score (scanpy's rules: ``.raw`` by default when present and no layer).
    normalize
        ``"auto"``: integer counts are normalised on the fly (counts per 10k, log1p; nothing is
        stored), other data are scored as they are. ``True`` requires counts; ``False`` never
        normalises. The rank methods rank values as stored (per-cell normalisation keeps ranks).
    backend
        ``"auto"``, ``"cpu"`` or ``"gpu"``.
    chunk_size
        Cells per row chunk (bounds memory).
    ctrl_size, n_bins, random_state
        As in ``sc.tl.score_genes``; ``random_state`` also orders ties for AUCell (decoupler: 0).
    key_added
        Prefix of the obs columns; scores go to ``obs[f"{key_added or ''}{name}_score"]`` and the
        report to ``uns[f"{key_added or ''}signature_scores"]``.
    max_rank
        UCell's rank cap (pyUCell's default 1500).
    n_up
        AUCell's rank cap (default 5% of the expressed genes, as decoupler).
    missing_genes
        UCell only: ``"skip"`` (absent genes ignored) or ``"impute"`` (counted at ``max_rank``, as
        pyUCell's default). Other methods always skip absent genes.
    species
        Species of the data's gene symbols (``"human"`` or ``"mouse"``).
    target_sum
        Counts per cell after normalisation.

    Returns
    -------
    Cells x signatures float64 DataFrame (index ``obs_names``, one column per signature name); the
    per-signature report (genes absent, renamed, translated; control genes) is in ``df.attrs``.
    """
    if method not in METHODS:
        raise AtlasError(f"method={method!r} is not one of {', '.join(METHODS)}")
    if missing_genes not in ("skip", "impute"):
        raise AtlasError(f"missing_genes={missing_genes!r}: use 'skip' or 'impute'")
    X, var_names, where = _matrix(adata, layer, use_raw)
    names, idx, reports = prepare_sets(signatures, var_names, species)
    n_missing = [len(reports[n]["absent"]) for n in names] if missing_genes == "impute" else None
    logger.info(
        "scoring %d signature(s) with method=%r on adata.%s (%d cells x %d genes)",
        len(names),
        method,
        where,
        adata.n_obs,
        len(var_names),
    )
    scores, details = score_matrix(
        X,
        idx,
        method=method,
        normalize=normalize,
        backend=backend,
        chunk_size=chunk_size,
        ctrl_size=ctrl_size,
        n_bins=n_bins,
        random_state=random_state,
        max_rank=max_rank,
        n_up=n_up,
        n_missing=n_missing,
        target_sum=target_sum,
        names=names,
    )
    df = pd.DataFrame(scores, index=adata.obs_names.copy(), columns=names)
    prefix = key_added or ""
    for name in names:
        adata.obs[f"{prefix}{name}_score"] = df[name].to_numpy()
    info = details.as_dict()
    for j, name in enumerate(names):
        if details.n_controls:
            reports[name]["n_controls"] = details.n_controls[j]
        if details.dropped_unexpressed:
            reports[name]["n_never_expressed"] = len(details.dropped_unexpressed[j])
    uns = {
        "method": method,
        "layer": where,
        "backend": details.backend,
        "normalized": details.normalized,
        "params": {
            "ctrl_size": ctrl_size,
            "n_bins": n_bins,
            "max_rank": max_rank,
            "n_up": details.n_up,
            "random_state": random_state if isinstance(random_state, int) else None,
            "target_sum": target_sum,
            "missing_genes": missing_genes,
        },
        "signatures": reports,
    }
    adata.uns[f"{prefix}signature_scores"] = _plain(uns)
    df.attrs["report"] = uns
    df.attrs["details"] = info
    return df


def _plain(obj: Any) -> Any:
    """Make a report storable in ``adata.uns`` (no None values, lists of strings)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        return [str(x) for x in obj]
    return obj
