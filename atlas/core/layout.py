"""The layout of a run directory: every path ``atlas run`` writes there, named once.

Stages, the report, ``atlas analyse`` and ``atlas query`` find a run's files through :class:`RunLayout`
instead of spelling path literals. What each file holds: ``docs/run_directory.md``. The files inside
the reference bundle (``reference/``) are the bundle's own format (``atlas integrate``); the layout
names only those that other stages read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["STORE_FORMATS", "STORE_TABLES", "RunLayout", "beside_store"]

def beside_store(store: str | os.PathLike, name: str) -> Path:
    """``<store without its suffix>.<name>`` in the store's folder, e.g. ``atlas.qc.csv`` beside ``atlas.h5ad``: where
    ingest's tables, the removed cells and the gene-statistics cache of any store (in a run directory or not) go."""
    store = Path(store)
    stem = store.name[: -len(store.suffix)] if store.suffix else store.name
    return store.with_name(f"{stem}.{name}")


#: Formats of the ingested store (``store_format`` of a pipeline config).
STORE_FORMATS = ("h5ad", "zarr")
#: The tables ingest writes beside the store: ``store.<name>.csv``.
STORE_TABLES = ("qc", "genes", "neutrophils", "metadata")


@dataclass(frozen=True)
class RunLayout:
    """Where each file of one run directory is.

    Parameters
    ----------
    root
        The run directory.
    store_format
        ``h5ad`` or ``zarr``: the ingested store is ``store.<store_format>``.
    """

    root: Path
    store_format: str = "h5ad"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.store_format not in STORE_FORMATS:
            raise ValueError(f"store_format={self.store_format!r}: use one of {', '.join(STORE_FORMATS)}")

    @classmethod
    def of(cls, root: str | os.PathLike) -> RunLayout:
        """The layout of an existing run directory.

        The store format is the one ``config.resolved.yaml`` records; without a readable one, the format
        of the store on disk (``store.zarr`` when only that exists), else ``h5ad``.
        """
        root = Path(root)
        fmt = _resolved_store_format(root / "config.resolved.yaml")
        if fmt is None:
            zarr_only = (root / "store.zarr").exists() and not (root / "store.h5ad").exists()
            fmt = "zarr" if zarr_only else "h5ad"
        return cls(root, fmt)

    # ------------------------------------------------------------- identity and bookkeeping
    @property
    def run_json(self) -> Path:
        """Name of the run held here, atlas version, creation time."""
        return self.root / "run.json"

    @property
    def config_resolved(self) -> Path:
        """The validated config with every default filled in."""
        return self.root / "config.resolved.yaml"

    @property
    def provenance(self) -> Path:
        """Package versions, seeds, python, platform, command line."""
        return self.root / "provenance.json"

    @property
    def manifest(self) -> Path:
        """One record per finished stage (settings hash, input and output fingerprints)."""
        return self.root / "manifest.json"

    @property
    def lock(self) -> Path:
        """Held (flock) while a run is in progress."""
        return self.root / ".lock"

    # -------------------------------------------------------------------------- simulate
    @property
    def data(self) -> Path:
        """The simulated input data sets (demo runs)."""
        return self.root / "data"

    @property
    def ingest_yaml(self) -> Path:
        """The simulator's ingest configuration of :attr:`data`."""
        return self.data / "ingest.yaml"

    @property
    def truth(self) -> Path:
        """The simulator's ground-truth tables (never read by the pipeline)."""
        return self.data / "truth"

    # ---------------------------------------------------------------------------- ingest
    @property
    def store(self) -> Path:
        """The ingested store: ``store.h5ad`` or ``store.zarr``."""
        return self.root / f"store.{self.store_format}"

    def store_table(self, name: str) -> Path:
        """A table ingest writes beside the store (``qc``, ``genes``, ``neutrophils``): ``store.<name>.csv``."""
        return self.root / f"store.{name}.csv"

    @property
    def store_tables(self) -> list[Path]:
        """All tables ingest writes beside the store."""
        return [self.store_table(n) for n in STORE_TABLES]

    @property
    def store_removed(self) -> Path:
        """The cells QC removed at ingest (above the lenient floor): ``store.removed.h5ad``."""
        return self.root / "store.removed.h5ad"

    @property
    def store_genestats(self) -> Path:
        """The per-gene statistics cached beside the store (``atlas.ingest.genestats``)."""
        return self.root / "store.genestats.parquet"

    # ------------------------------------------------------------------------- integrate
    @property
    def reference(self) -> Path:
        """The reference bundle: model, HVGs, minified atlas, metrics."""
        return self.root / "reference"

    @property
    def reference_atlas(self) -> Path:
        """The bundle's minified atlas (before the analysis annotates it)."""
        return self.reference / "atlas.h5ad"

    @property
    def reference_metrics(self) -> Path:
        """The bundle's integration metrics (scib-metrics)."""
        return self.reference / "metrics.csv"

    @property
    def reference_metrics_png(self) -> Path:
        """The bundle's metrics figure."""
        return self.reference / "metrics.png"

    @property
    def reference_versions(self) -> Path:
        """Package versions the bundle was written with."""
        return self.reference / "versions.json"

    # ----------------------------------------------------------------------------- score
    @property
    def scores(self) -> Path:
        """Signature scores, cells x signatures."""
        return self.root / "scores.parquet"

    # --------------------------------------------------------------------------- analyse
    @property
    def atlas(self) -> Path:
        """The annotated whole atlas."""
        return self.root / "atlas.h5ad"

    @property
    def neutrophils(self) -> Path:
        """The neutrophil sub-atlas."""
        return self.root / "neutrophils.h5ad"

    @property
    def tables(self) -> Path:
        """The analysis tables (CSV)."""
        return self.root / "tables"

    def table(self, name: str, suffix: str = ".csv") -> Path:
        """One analysis table, e.g. ``table("cancer_types")`` is ``tables/cancer_types.csv``."""
        return self.tables / f"{name}{suffix}"

    @property
    def analysis_json(self) -> Path:
        """Counts, settings and notes of the analysis stage."""
        return self.root / "analysis.json"

    # ---------------------------------------------------------------------------- report
    @property
    def report(self) -> Path:
        """The self-contained HTML report."""
        return self.root / "report.html"

    @property
    def figures(self) -> Path:
        """The report's figures (PNG, PDF)."""
        return self.root / "figures"


def _resolved_store_format(path: Path) -> str | None:
    """``store_format`` recorded in a ``config.resolved.yaml`` (None when absent or unreadable)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    fmt = data.get("store_format") if isinstance(data, dict) else None
    return fmt if fmt in STORE_FORMATS else None
