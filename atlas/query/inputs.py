"""The query's input as an ingest configuration: an ingest YAML, or one file plus options.

Either way the query goes through :func:`atlas.ingest.stage.ingest`, so the raw-count check, the gene
harmonisation (Ensembl IDs, outdated symbols, mouse orthologues) and QC are exactly the atlas's.
QC settings: those of the YAML when it has a ``qc`` section, else the reference's (recorded in a
run directory's store), else the defaults.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ..core import storage
from ..core.errors import InputDataError
from ..core.settings import read_yaml, validate
from ..ingest.settings import SCHEMA_FIELDS, IngestConfig, load_ingest_config

__all__ = ["YAML_SUFFIXES", "dataset_id_from_path", "query_ingest_config"]

log = logging.getLogger(__name__)

YAML_SUFFIXES = (".yaml", ".yml")
_DATA_SUFFIXES = (".gz", ".h5ad", ".h5", ".hdf5", ".csv", ".tsv", ".txt", ".mtx")

#: Values of schema fields a single-file query does not give (logged when used).
QUERY_DEFAULTS = {"cancer_type": "unknown", "tissue": "tumour", "platform": "unknown"}


def dataset_id_from_path(path: str | Path) -> str:
    """A data set id from a file name or URL: ``GSE123_tumour.h5ad`` -> ``GSE123_tumour``."""
    name = storage.name(path)
    while True:
        stem, suffix = Path(name).stem, Path(name).suffix.lower()
        if suffix not in _DATA_SUFFIXES or not stem:
            break
        name = stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-") or "query"


def _fill_schema(entry: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Constants for schema fields the file neither has nor is given (one sample per data set)."""
    from ..ingest.metadata import suggest_column
    from ..ingest.readers import open_reader
    from ..ingest.settings import DatasetConfig

    ds = validate(DatasetConfig, entry, "query options")
    with open_reader(ds) as reader:
        obs = reader.obs
    columns = set(map(str, obs.columns))
    filled, hints, taken = {}, [], list(ds.obs_columns.values())
    for f in SCHEMA_FIELDS:
        if f in ("dataset_id", "species") or f in ds.obs_columns or f in ds.constants or f in columns:
            continue
        filled[f] = ds.id if f in ("sample_id", "patient_id") else QUERY_DEFAULTS[f]
        hit = suggest_column(f, obs, taken)
        if hit is not None:
            taken.append(hit[0])
            hints.append(f"--obs-column {f}={hit[0]} ({hit[1]})")
    if filled:
        notes.append(
            f"query {ds.id}: no value given for {sorted(filled)}; assumed {filled} (set them with --obs-column "
            "FIELD=COLUMN or --constant FIELD=VALUE" + (f"; columns that look like them: {', '.join(hints)}" if hints
                                                        else "") + ")"
        )
        log.warning(notes[-1])
    return {**entry, "constants": {**entry.get("constants", {}), **filled}}


def query_ingest_config(
    query: str | Path | IngestConfig,
    *,
    reference_qc: dict | None = None,
    notes: list[str] | None = None,
    **dataset: Any,
) -> IngestConfig:
    """The ingest configuration of a query.

    Parameters
    ----------
    query
        An :class:`~atlas.ingest.settings.IngestConfig`, an ingest YAML (``.yaml``/``.yml``, one or more data
        sets), or one data file/directory in any format ingest reads; a data file may be a URL (``s3://...``,
        see :mod:`atlas.core.storage`), a YAML is read from local disk (its data set paths may be URLs).
    reference_qc
        The reference's QC settings, used when the query gives none.
    notes
        Collects what was assumed.
    **dataset
        For a single file: :class:`~atlas.ingest.settings.DatasetConfig` fields (``id``, ``species``, ``format``,
        ``counts``, ``obs_path``, ``obs_columns``, ``constants``, ``value_maps``, ``gene_ids``, ...).
        Schema fields neither in the file nor given default to one sample per data set, cancer type
        ``unknown``, tissue ``tumour`` and platform ``unknown`` (noted).

    Raises
    ------
    InputDataError, ConfigError
        A missing file, options given with a YAML, or an invalid entry.
    """
    notes = notes if notes is not None else []
    given = {k: v for k, v in dataset.items() if v not in (None, {}, [])}
    if isinstance(query, IngestConfig):
        cfg, has_qc = query, True
    else:
        path = storage.location(query)
        storage.require(path, "query ", "give an ingest YAML or a data file/directory")
        if storage.name(path).lower().endswith(YAML_SUFFIXES):
            if storage.is_url(path):
                raise InputDataError(
                    f"query {path}: an ingest YAML is read from local disk; copy it locally (its data set paths "
                    "may stay URLs) or give the data file's URL directly"
                )
            if given:
                raise InputDataError(
                    f"options {sorted(given)} apply to a single data file; with an ingest YAML ({path}) put them in "
                    "its data set entries"
                )
            cfg, has_qc = load_ingest_config(path), "qc" in read_yaml(path)
        else:
            entry = {"path": path, **given}
            entry.setdefault("id", dataset_id_from_path(path))
            cfg, has_qc = validate(IngestConfig, {"datasets": [_fill_schema(entry, notes)]}, "query options"), False
    if not has_qc and reference_qc is not None:
        cfg = validate(IngestConfig, {**cfg.model_dump(), "qc": reference_qc}, "query ingest (reference QC)")
        log.info("query QC: the reference's QC settings")
    return cfg
