"""Per-cell metadata onto the atlas obs schema (:data:`atlas.ingest.settings.SCHEMA_FIELDS`).

For each schema field the value comes from, in order: ``dataset_id`` = the data set id; the
column named in ``obs_columns``; a column of the same name; ``constants``. ``value_maps`` are
applied, tissue synonyms are normalised to :data:`atlas.ingest.settings.TISSUES`, cancer types and platforms to
atlas's labels (:mod:`atlas.ingest.values`) and ``species`` is the configured one (a species column that disagrees
is an error). Columns matching ``keep_obs`` glob patterns (``truth_*``) are carried unchanged. Cells are renamed
``{dataset_id}:{barcode}``. A data set that gives no value for a field is refused with every missing field named
and the columns that look like them (:func:`suggest_column`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..catalogue.vocabularies import VOCABULARIES, spelling_key
from ..core.errors import InputDataError
from .settings import SCHEMA_FIELDS, TISSUES, DatasetConfig
from .values import HARMONISED_FIELDS, harmonised_rows, normalise_to_vocabulary

__all__ = ["COLUMN_HINTS", "SPECIES_SYNONYMS", "TISSUE_SYNONYMS", "cell_names", "map_obs", "normalise_tissue",
           "suggest_column", "tissue_label"]

#: lower-cased synonyms -> atlas tissue
TISSUE_SYNONYMS: dict[str, str] = {
    **{
        k: "tumour"
        for k in (
            "tumour",
            "tumor",
            "t",
            "primary tumour",
            "primary tumor",
            "primary",
            "tumour tissue",
            "tumor tissue",
            "cancer",
            "neoplasm",
            "malignant",
        )
    },
    **{
        k: "adjacent_normal"
        for k in (
            "adjacent_normal",
            "adjacent normal",
            "adjacent-normal",
            "normal",
            "n",
            "nat",
            "adjacent",
            "normal adjacent",
            "normal adjacent tissue",
            "adjacent normal tissue",
            "paratumor",
            "paratumour",
            "adjacent non-tumour",
            "adjacent non-tumor",
            "non-tumour",
            "non-tumor",
            "normal tissue",
        )
    },
    **{
        k: "blood"
        for k in (
            "blood",
            "pbmc",
            "pbmcs",
            "peripheral blood",
            "pb",
            "whole blood",
            "peripheral blood mononuclear cells",
        )
    },
}

#: lower-cased synonyms -> atlas species
SPECIES_SYNONYMS: dict[str, str] = {
    "human": "human",
    "homo sapiens": "human",
    "hs": "human",
    "hsa": "human",
    "h. sapiens": "human",
    "mouse": "mouse",
    "mus musculus": "mouse",
    "mm": "mouse",
    "mmu": "mouse",
    "m. musculus": "mouse",
}


def cell_names(dataset_id: str, barcodes: pd.Index, *, source: str = "") -> pd.Index:
    """Unique cell names ``{dataset_id}:{barcode}``; duplicate barcodes are an error.

    Parameters
    ----------
    dataset_id
        The data set.
    barcodes
        Its cell barcodes.
    source
        File name, for messages.
    """
    barcodes = pd.Index(barcodes.astype(str))
    dup = barcodes[barcodes.duplicated()].unique()
    if len(dup):
        where = f" in {source}" if source else ""
        raise InputDataError(
            f"data set '{dataset_id}': {len(dup)} cell barcode(s) occur more than once{where} (e.g. "
            f"{list(dup[:5])}); cells must have unique names. If the file joins several samples, make the "
            "barcodes unique (e.g. prefix the sample) before ingest"
        )
    return pd.Index([f"{dataset_id}:{b}" for b in barcodes])


def tissue_label(value: str) -> str | None:
    """The atlas tissue a label names (any case or spacing, ``_`` as a space, common synonyms), or None."""
    key = " ".join(str(value).strip().lower().split())
    return TISSUE_SYNONYMS.get(key) or TISSUE_SYNONYMS.get(key.replace("_", " "))


def normalise_tissue(values: pd.Series, *, dataset_id: str, column: str) -> pd.Series:
    """Map tissue labels (any case, common synonyms) onto :data:`atlas.ingest.settings.TISSUES`.

    Parameters
    ----------
    values
        Tissue labels, after ``value_maps``.
    dataset_id, column
        Where they come from, for messages.
    """
    table = {v: tissue_label(v) for v in pd.unique(values.astype(str))}
    unknown = [v for v, t in table.items() if t is None]
    if unknown:
        ex = unknown[0]
        raise InputDataError(
            f"data set '{dataset_id}': tissue value(s) {unknown[:5]} in {column} are not one of {list(TISSUES)} "
            f"or a known synonym; map them in its entry, e.g. value_maps: {{tissue: {{'{ex}': tumour}}}}"
        )
    return values.astype(str).map(table)


#: obs column names that often hold a schema field (compared by :func:`spelling_key`, dots as spaces)
COLUMN_HINTS: dict[str, tuple[str, ...]] = {
    "sample_id": ("sample", "sample name", "samplename", "sample id", "library", "library id", "orig ident",
                  "biosample", "specimen", "channel", "gem well"),
    "patient_id": ("patient", "patient id", "donor", "donor id", "subject", "subject id", "individual", "case",
                   "case id", "participant", "participant id"),
    "tissue": ("tissue", "tissue type", "site", "sample type", "sample site", "source", "origin", "location",
               "compartment"),
    "cancer_type": ("cancer", "cancer type", "tumor type", "tumour type", "disease", "indication", "diagnosis",
                    "histology"),
    "platform": ("platform", "assay", "technology", "tech", "chemistry", "protocol", "method", "library prep"),
}


def _recognised_share(field: str, values: pd.Series) -> float:
    """Share of a column's distinct values the field's vocabulary (or tissue synonyms) knows."""
    distinct = pd.unique(values.dropna().astype(str))
    if not len(distinct):
        return 0.0
    if field == "tissue":
        known = [tissue_label(v) is not None for v in distinct]
    elif field in VOCABULARIES:
        known = [VOCABULARIES[field].label(v) is not None for v in distinct]
    else:
        return 0.0
    return float(np.mean(known))


def suggest_column(field: str, obs: pd.DataFrame, taken: Sequence[str] = ()) -> tuple[str, str] | None:
    """A column of ``obs`` that likely holds ``field``, and why: its values are the field's known values (tissues,
    cancer types, platforms), or its name is a usual one for the field. A suggestion for an error message, never
    applied: a guessed column would map silently."""
    free = [c for c in obs.columns if c not in taken and not str(c).startswith("truth_")]
    for c in free:
        if _recognised_share(field, obs[c]) >= 0.8:
            return str(c), f"its values are {field.replace('_', ' ')}s atlas knows"
    hints = {spelling_key(h) for h in COLUMN_HINTS.get(field, ())}
    for c in free:  # (a column with a value per cell names cells, not samples or patients)
        if spelling_key(str(c).replace(".", " ")) in hints and obs[c].nunique() < len(obs):
            return str(c), "its name"
    return None


def _missing_fields_message(ds: DatasetConfig, obs: pd.DataFrame) -> str:
    """Every schema field the data set gives no value for, each with a column that looks like it where one does."""
    missing = [f for f in SCHEMA_FIELDS if f not in ("dataset_id", "species") and _source_column(f, ds, obs) is None
               and f not in ds.constants]
    taken = list(ds.obs_columns.values())
    lines, mapping = [], {}
    for f in missing:
        hit = suggest_column(f, obs, taken)
        if hit is not None:
            mapping[f] = hit[0]
            taken.append(hit[0])
            lines.append(f"{f}: column {hit[0]!r} looks like it ({hit[1]})")
    names = ", ".join(repr(f) for f in missing)
    text = (f"data set '{ds.id}': no value for schema field{'s' if len(missing) > 1 else ''} {names}: its cell "
            f"metadata has no column of that name (columns: {list(obs.columns)}); add obs_columns: "
            f"{{{missing[0]}: <column>}} or constants: {{{missing[0]}: <value>}} to its entry for each")
    if lines:
        text += "".join(f"\n  {line}" for line in lines)
        text += "\n  if so, its entry needs: obs_columns: {" + ", ".join(f"{f}: {c}" for f, c in mapping.items()) + "}"
    return text


def _source_column(field: str, ds: DatasetConfig, obs: pd.DataFrame) -> str | None:
    if field in ds.obs_columns:
        col = ds.obs_columns[field]
        if col not in obs.columns:
            raise InputDataError(
                f"data set '{ds.id}': obs_columns maps {field!r} to column {col!r}, which its cell metadata does "
                f"not have; columns: {list(obs.columns)}"
            )
        return col
    if field in obs.columns:
        return field
    return None


def map_obs(
    obs: pd.DataFrame,
    ds: DatasetConfig,
    *,
    keep_obs: Sequence[str] = ("truth_*",),
    source: str = "",
    harmonised: list[pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Map one data set's cell metadata onto the schema.

    Parameters
    ----------
    obs
        Its cell metadata, index = barcodes.
    ds
        Its configuration entry (``obs_columns``, ``constants``, ``value_maps``, ``species``).
    keep_obs
        Glob patterns of columns carried through unchanged.
    source
        File name, for messages.
    harmonised
        When given, gets one table (:data:`atlas.ingest.values.HARMONISED_COLUMNS`) with a row per value given for
        a field of :data:`~atlas.ingest.values.HARMONISED_FIELDS`: what it became, by which rule, in how many cells.

    Returns
    -------
    DataFrame indexed by ``{dataset_id}:{barcode}`` with the schema fields as categorical strings,
    then the carried columns.
    """
    index = cell_names(ds.id, obs.index, source=source)
    out: dict[str, pd.Series] = {}
    record: list[pd.DataFrame] = []
    for field in SCHEMA_FIELDS:
        if field == "dataset_id":
            out[field] = pd.Series(ds.id, index=obs.index)
            continue
        col = _source_column(field, ds, obs)
        if field == "species":
            out[field] = _species(ds, obs, col)
            continue
        if col is not None:
            values = obs[col]
            label = f"column {col!r}"
            if values.isna().any():
                raise InputDataError(
                    f"data set '{ds.id}': {int(values.isna().sum())} cells have no value in {label} (schema field "
                    f"{field!r}); fill them in, or use value_maps/constants for this field"
                )
            values = values.astype(str)
        elif field in ds.constants:
            values, label = pd.Series(ds.constants[field], index=obs.index), f"constants.{field}"
        else:
            raise InputDataError(_missing_fields_message(ds, obs))
        given = values.astype(str)
        if field in ds.value_maps:
            vm = ds.value_maps[field]
            values = values.map(lambda v, vm=vm: vm.get(v, v))
        mapped = values.astype(str)
        if field == "tissue":
            values = normalise_tissue(values, dataset_id=ds.id, column=label)
        if field in VOCABULARIES:
            values = normalise_to_vocabulary(values, VOCABULARIES[field], dataset_id=ds.id)
        out[field] = values
        if field in HARMONISED_FIELDS:
            record.append(harmonised_rows(ds.id, field, label, given, mapped, values.astype(str)))
    df = pd.DataFrame({k: pd.Categorical(v.astype(str).to_numpy()) for k, v in out.items()}, index=index)
    if harmonised is not None:
        harmonised.append(pd.concat(record, ignore_index=True))
    carried = [c for c in obs.columns if any(fnmatch.fnmatchcase(str(c), p) for p in keep_obs)]
    clash = [c for c in carried if c in df.columns]
    if clash:
        raise InputDataError(
            f"data set '{ds.id}': keep_obs pattern matches schema field(s) {clash}; narrow it"
        )
    for c in carried:
        df[c] = obs[c].array  # keeps the dtype (categorical, nullable, ...) without aligning on the index
    return df


def _species(ds: DatasetConfig, obs: pd.DataFrame, col: str | None) -> pd.Series:
    given = []
    if col is not None:
        given = [(f"column {col!r}", v) for v in pd.unique(obs[col].dropna().astype(str))]
    if "species" in ds.constants:
        given.append(("constants.species", ds.constants["species"]))
    for label, v in given:
        v2 = ds.value_maps.get("species", {}).get(v, v)
        if SPECIES_SYNONYMS.get(v2.strip().lower()) != ds.species:
            raise InputDataError(
                f"data set '{ds.id}': {label} says species {v!r} but its entry says species: {ds.species}; "
                "correct one of them (the entry's species decides how genes are mapped)"
            )
    return pd.Series(ds.species, index=obs.index)
