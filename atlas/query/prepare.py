"""From the ingested query store to the AnnData scvi-tools' ``load_query_data`` expects.

1. **Gene overlap** with the reference HVGs, per query data set (``store.varm["measured"]``) and
   overall: an error below ``min_overlap``, a warning below ``warn_overlap``.
2. **Genes**: the query is cut to the reference HVGs, missing ones zero-filled (sparse), and
   ordered by ``SCVI.prepare_query_anndata``.
3. **Covariates**: the model's batch column (e.g. ``sample_id``; ``integration_batch``, filled from
   the reference's ``batch_key`` column, when small reference batches were pooled) must not reuse a reference batch
   name (the query would silently share that batch's weights): colliding values get a ``query:``
   prefix. Missing covariate columns get ``unknown``; a covariate value that names one of the model's under another
   spelling (a platform ingested before atlas had vocabularies) takes the model's; scANVI's label column is set to
   its unlabelled category.
"""

from __future__ import annotations

import logging

import pandas as pd

from ..core.errors import InputDataError
from ..ingest.values import to_known_spellings
from ..integrate._checks import INTEGRATION_BATCH
from ..integrate.encode import onto_genes
from .reference import Reference
from .settings import QuerySettings

__all__ = ["QUERY_PREFIX", "check_overlap", "gene_overlap", "prepare_query", "rename_batches"]

log = logging.getLogger(__name__)

QUERY_PREFIX = "query:"


def gene_overlap(store, hvgs: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Which reference HVGs the query measures.

    Parameters
    ----------
    store
        The ingested query (AnnData; ``varm["measured"]``: genes x data sets, when ingest wrote it).
    hvgs
        The reference HVGs.

    Returns
    -------
    ``(genes, summary)``: one row per HVG (``gene``, ``measured``, one bool column per query data
    set); one row per data set plus ``all`` (``n_reference_hvgs``, ``n_measured``, ``fraction``,
    ``n_missing``, ``missing`` = the first 50 missing genes, ``;``-separated).
    """
    hv = pd.Index(hvgs)
    measured = store.varm.get("measured") if hasattr(store, "varm") else None
    if isinstance(measured, pd.DataFrame) and len(measured.columns):
        per = measured.reindex(hv).fillna(False).astype(bool)
    else:
        ids = sorted(store.obs["dataset_id"].astype(str).unique()) if "dataset_id" in store.obs else ["query"]
        per = pd.DataFrame({d: hv.isin(store.var_names) for d in ids}, index=hv)
    genes = pd.DataFrame({"gene": hv, "measured": per.any(axis=1).to_numpy()})
    for c in per.columns:
        genes[str(c)] = per[c].to_numpy()
    rows = []
    for name, col in [*((str(c), per[c]) for c in per.columns), ("all", genes.set_index("gene")["measured"])]:
        missing = hv[~col.to_numpy(bool)]
        rows.append({"dataset_id": name, "n_reference_hvgs": len(hv), "n_measured": int(col.sum()),
                     "fraction": float(col.mean()) if len(hv) else 0.0, "n_missing": len(missing),
                     "missing": ";".join(missing[:50])})  # fmt: skip
    return genes, pd.DataFrame(rows)


def check_overlap(summary: pd.DataFrame, s: QuerySettings, notes: list[str]) -> None:
    """Raise below ``min_overlap`` (naming the counts), warn below ``warn_overlap``."""
    for r in summary.itertuples(index=False):
        what = "the query" if r.dataset_id == "all" else f"query data set {r.dataset_id!r}"
        msg = (f"{what} measures {r.n_measured} of the {r.n_reference_hvgs} reference HVGs ({r.fraction:.0%}); "
               f"missing e.g. {', '.join(r.missing.split(';')[:8])}")  # fmt: skip
        if r.fraction < s.min_overlap:
            raise InputDataError(
                f"{msg}. Below min_overlap = {s.min_overlap:.0%}, the mapping would be unreliable: check that the "
                "query is the same species and gene naming as declared (species, gene_ids), that it is not a "
                "targeted panel, or lower --min-overlap knowingly"
            )
        if r.fraction < s.warn_overlap:
            notes.append(f"{msg}; below {s.warn_overlap:.0%}: missing genes are zero-filled, expect a weaker mapping")
            log.warning(notes[-1])


def rename_batches(obs: pd.DataFrame, key: str, reference_batches: list[str]) -> pd.DataFrame:
    """Prefix query batch values that a reference batch already uses; return the renames made."""
    values = obs[key].astype(str)
    own = set(values.unique())
    clash = sorted(own & set(reference_batches))
    taken = set(reference_batches) | own  # a new name must be neither a reference batch nor another query batch
    renames = []
    for v in clash:
        new = QUERY_PREFIX + v
        while new in taken:
            new = QUERY_PREFIX + new
        taken.add(new)
        renames.append({"column": key, "original": v, "renamed": new, "n_cells": int((values == v).sum())})
    if renames:
        table = {r["original"]: r["renamed"] for r in renames}
        obs[key] = pd.Categorical(values.map(lambda v: table.get(v, v)))
        log.warning("query %s value(s) %s are also reference batches: renamed %s so they get their own batch",
                    key, clash[:10], [table[c] for c in clash[:10]])  # fmt: skip
    return pd.DataFrame(renames, columns=["column", "original", "renamed", "n_cells"])


def prepare_query(adata, ref: Reference, notes: list[str]) -> tuple[object, pd.DataFrame]:
    """The query ready for ``load_query_data``, and the table of renamed batches.

    Parameters
    ----------
    adata
        The ingested query store (raw counts, harmonised gene symbols, schema obs).
    ref
        The checked reference.
    notes
        Collects what was changed.
    """
    import scvi

    q = onto_genes(adata, ref.hvgs)
    args = ref.setup_args
    renames = pd.DataFrame(columns=["column", "original", "renamed", "n_cells"])
    batch_key = args.get("batch_key")
    if batch_key == INTEGRATION_BATCH and batch_key not in q.obs.columns and ref.batch_source in q.obs.columns:
        q.obs[batch_key] = q.obs[ref.batch_source].astype(str)  # small reference batches were pooled in training
    if batch_key:
        if batch_key not in q.obs.columns:
            raise InputDataError(
                f"the reference model's batch column {batch_key!r} is not in the query's obs (columns: "
                f"{list(q.obs.columns)[:20]}); it is a schema field: map it at ingest (obs_columns/constants)"
            )
        renames = rename_batches(q.obs, batch_key, ref.batch_categories)
        if len(renames):
            notes.append(f"{len(renames)} query {batch_key} value(s) named like reference batches were renamed "
                         f"with the prefix {QUERY_PREFIX!r} (tables/batch_renames.csv)")  # fmt: skip
    for cov in args.get("categorical_covariate_keys") or []:
        if cov not in q.obs.columns:
            q.obs[cov] = "unknown"
            notes.append(f"the reference model conditions on {cov!r}, which the query lacks: set to 'unknown'")
            log.warning(notes[-1])
            continue
        q.obs[cov], respelled = to_known_spellings(q.obs[cov], ref.covariate_categories.get(cov, []), cov)
        if respelled:
            notes.append(f"query {cov} " + ", ".join(f"{v!r}" for v in respelled) + " read as the reference's "
                         + ", ".join(f"{w!r}" for w in respelled.values()))
            log.info(notes[-1])
    labels_key = args.get("labels_key")
    if ref.model_class == "SCANVI" and labels_key:
        q.obs[labels_key] = pd.Categorical([args.get("unlabeled_category", "unlabeled")] * q.n_obs)
    for key in [batch_key, *(args.get("categorical_covariate_keys") or [])]:
        if key:
            q.obs[key] = pd.Categorical(q.obs[key].astype(str))
    # scvi-tools' own check and ordering (the matrix already holds every reference gene)
    scvi.model.SCVI.prepare_query_anndata(q, str(ref.model_dir), inplace=True)
    if list(q.var_names) != list(ref.hvgs):
        raise InputDataError("internal: query genes are not in the reference model's order")  # pragma: no cover
    return q, renames
