"""Metadata values onto atlas's labels, in one spelling across data sets, with a record of what changed.

Cancer types and platforms read as the labels of :mod:`atlas.catalogue.vocabularies` (values a vocabulary does
not know are kept as given); :func:`unify_spellings` gives values that differ only in case or punctuation one
spelling across data sets; :func:`harmonised_rows` records, per value given, what it became and by which rule
(``<store>.metadata.csv``); :func:`to_known_spellings` lets a query's value take a reference's spelling of it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from ..catalogue.vocabularies import VOCABULARIES, Vocabulary, spelling_key

__all__ = ["HARMONISED_COLUMNS", "HARMONISED_FIELDS", "ID_FIELDS", "harmonised_rows", "normalise_to_vocabulary",
           "to_known_spellings", "unify_spellings", "unique_ids"]

logger = logging.getLogger(__name__)

#: fields whose given values are recorded with what ingest made of them (``<store>.metadata.csv``)
HARMONISED_FIELDS = ("sample_id", "patient_id", "tissue", "cancer_type", "platform")
#: id fields whose values name different samples / patients in different data sets unless declared shared
ID_FIELDS = ("sample_id", "patient_id")
HARMONISED_COLUMNS = ["dataset_id", "field", "source", "given", "stored", "rule", "n_cells"]

#: values that say "not known" rather than name a cancer or platform (no note that the vocabulary lacks them)
_NOT_GIVEN = frozenset({"", "unknown", "na", "n/a", "nan", "none", "not available", "not reported"})


def normalise_to_vocabulary(values: pd.Series, vocabulary: Vocabulary, *, dataset_id: str) -> pd.Series:
    """``values`` in any listed spelling as the vocabulary's labels (:mod:`atlas.catalogue.vocabularies`); others as
    given. What was renamed, and which values the vocabulary does not know, are logged per data set."""
    labels = {v: vocabulary.label(v) for v in pd.unique(values.astype(str))}
    table = {v: label or v.strip() for v, label in labels.items()}
    field = vocabulary.field
    renamed = {v: c for v, c in table.items() if c != v}
    if renamed:
        logger.info("data set %s: %s read as atlas's labels: %s", dataset_id, field,
                    ", ".join(f"{v!r} -> {c}" for v, c in renamed.items()))
    unlisted = [v for v, label in labels.items() if label is None and spelling_key(v) not in _NOT_GIVEN]
    if unlisted:
        logger.info(
            "data set %s: %s %s not in atlas's list (atlas/catalogue/data/%s), kept as given; if one names a listed "
            "value under another name, map it in the data set's value_maps",
            dataset_id, field, ", ".join(repr(v) for v in unlisted), vocabulary.file)
    return values.astype(str).map(table)


def unify_spellings(frames: Sequence[pd.DataFrame], field: str, records: Sequence[pd.DataFrame] | None = None) -> None:
    """Give ``field``'s values that differ only in case, ``_``/``-`` or spaces one spelling across ``frames``
    (the first seen), in place: "Glioma" in one data set and "glioma" in another are one group, not two.
    ``records`` (one per frame, :func:`atlas.ingest.metadata.map_obs`'s ``harmonised`` tables) are updated to match."""
    first: dict[str, str] = {}
    for df in frames:
        for v in df[field].cat.categories:
            first.setdefault(spelling_key(v), v)
    for i, df in enumerate(frames):
        cats = df[field].cat.categories
        to = {v: first[spelling_key(v)] for v in cats if first[spelling_key(v)] != v}
        if not to:
            continue
        logger.info("%s: %s spelled as in an earlier data set", field, ", ".join(f"{v!r} -> {w!r}" for v, w in to.items()))
        df[field] = df[field].astype(str).replace(to).astype("category")  # two spellings of one data set may merge
        if records is not None:
            _restate(records[i], field, to, "one spelling across data sets")


def unique_ids(frames: Sequence[pd.DataFrame], field: str, dataset_ids: Sequence[str],
               records: Sequence[pd.DataFrame] | None = None) -> dict[str, list[str]]:
    """Store ``field``'s values that several data sets use as ``<data set>:<value>`` in each of them, in place.

    Public data sets reuse ids ("P01", "donor_1", "P01_T"): left as given, two studies' patients would be pooled as
    one in the per-patient statistics, and their samples trained as one scVI batch. ``records`` (one per frame,
    :func:`atlas.ingest.metadata.map_obs`'s ``harmonised`` tables) are updated to match. Returns
    ``{value: [data sets]}`` of the values made unique.
    """
    users: dict[str, list[str]] = {}
    for df, ds in zip(frames, dataset_ids, strict=True):
        for v in df[field].cat.categories:
            users.setdefault(v, []).append(ds)
    shared = {v: ds for v, ds in users.items() if len(ds) > 1}
    if not shared:
        return {}
    logger.warning(
        "%d %s value(s) are used by several data sets (%s): stored as '<data set>:<value>' so that each data set's "
        "are its own; if each names one %s whichever data set uses it, list %s in the ingest config's shared_ids",
        len(shared), field,
        ", ".join(f"{v!r} in {', '.join(ds)}" for v, ds in list(shared.items())[:5]) + (" ..." if len(shared) > 5 else ""),
        field.removesuffix("_id"), field)
    for i, (df, ds) in enumerate(zip(frames, dataset_ids, strict=True)):
        to = {v: f"{ds}:{v}" for v in df[field].cat.categories if v in shared}
        if not to:
            continue
        df[field] = df[field].cat.rename_categories(to)
        if records is not None:
            _restate(records[i], field, to, "used by several data sets: prefixed with the data set")
    return shared


def _restate(record: pd.DataFrame, field: str, to: dict[str, str], rule: str) -> None:
    """A data set's :func:`harmonised_rows` after ``field``'s stored values were renamed by ``to`` under ``rule``."""
    rows = (record["field"] == field) & record["stored"].isin(list(to))
    record.loc[rows, "rule"] = [rule if r == "as given" else f"{r}, {rule}" for r in record.loc[rows, "rule"]]
    record.loc[rows, "stored"] = record.loc[rows, "stored"].map(to)


def to_known_spellings(values: pd.Series, known: Sequence[str], field: str) -> tuple[pd.Series, dict[str, str]]:
    """``values`` with each value that is not in ``known`` but names one of them (the same label of ``field``'s
    vocabulary, or the same :func:`~atlas.catalogue.vocabularies.spelling_key`) spelled as there; and what changed.

    A query's ``10x 3'`` meets a reference whose platform was ingested as ``10x_3p`` before atlas had vocabularies.
    """
    vocabulary = VOCABULARIES.get(field)

    def ident(v: str) -> str:
        return (vocabulary.label(v) if vocabulary is not None else None) or spelling_key(v)

    known = [str(k) for k in known]
    by_ident: dict[str, str] = {}
    for k in known:
        by_ident.setdefault(ident(k), k)
    values = values.astype(str)
    to = {v: by_ident[ident(v)] for v in pd.unique(values) if v not in known and ident(v) in by_ident}
    return (values.replace(to) if to else values), to


def harmonised_rows(dataset_id: str, field: str, source: str, given: pd.Series, mapped: pd.Series,
                     stored: pd.Series) -> pd.DataFrame:
    """One row per distinct given value: what it became and the rule (value_maps, atlas's label, as given)."""
    rows = pd.DataFrame({"given": given.to_numpy(), "mapped": mapped.to_numpy(), "stored": stored.to_numpy()})
    rows = rows.groupby(["given", "mapped", "stored"], sort=True).size().rename("n_cells").reset_index()
    vocabulary = VOCABULARIES.get(field)

    def rule(r) -> str:
        steps = ["value_maps"] if r.mapped != r.given else []
        if r.stored != r.mapped:
            steps.append("atlas label")
        elif vocabulary is not None and vocabulary.label(r.mapped) is None and spelling_key(r.mapped) not in _NOT_GIVEN:
            steps.append("not in atlas's list")
        return ", ".join(steps) or "as given"

    rows["rule"] = [rule(r) for r in rows.itertuples(index=False)]
    rows.insert(0, "source", source)
    rows.insert(0, "field", field)
    rows.insert(0, "dataset_id", dataset_id)
    return rows[HARMONISED_COLUMNS]
