"""Read what a run directory holds for the report; every input is optional.

:func:`load_run` never fails on a missing or unreadable output of a stage: it records what is
missing in :attr:`RunInputs.missing` (and unreadable files in :attr:`RunInputs.problems`) and the
report says so in the section concerned. Only a path that is not an atlas run directory at all is
an error. Cell tables are read without the count matrix (only ``obs``, ``obsm/X_umap`` and a few
``uns`` keys), so a million-cell atlas loads in seconds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import AtlasError
from ..core.layout import RunLayout

log = logging.getLogger(__name__)

__all__ = ["TABLES", "CellData", "NotARunDirError", "RunInputs", "load_run"]

#: Tables of the analysis stage (``RUNDIR/tables/NAME.csv`` or ``.parquet``), see docs/run_directory.md.
TABLES = ("neutrophil_yield", "cell_type_composition", "state_composition", "state_clusters", "samples",
          "patients", "cancer_types", "tissue_comparison", "ranking", "index_vs_pseudotime")
#: Tables shown when present, never reported missing.
OPTIONAL_TABLES = ("cell_type_clusters", "refined_signatures", "qc_by_cell_type")
_UNS_KEYS = ("reprogramming_axis", "atlas_scoring", "state_rule")


class NotARunDirError(AtlasError):
    """The report was asked for a path that is not an atlas run directory."""


@dataclass
class CellData:
    """Per-cell annotations and the UMAP of one AnnData file (no matrix)."""

    path: Path
    obs: pd.DataFrame
    umap: np.ndarray | None
    uns: dict = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        return len(self.obs)

    def has(self, *columns: str) -> bool:
        return all(c in self.obs.columns for c in columns)

    @property
    def neutrophil_mask(self) -> np.ndarray | None:
        if "is_neutrophil" not in self.obs:
            return None
        return self.obs["is_neutrophil"].fillna(False).to_numpy(dtype=bool)


@dataclass
class RunInputs:
    """Everything the report may show; ``None`` where the run has not produced it."""

    rundir: Path
    location: str = ""  # where the run lives when ``rundir`` is a local copy of it (a URL)
    run_info: dict | None = None
    config_text: str | None = None
    config: dict = field(default_factory=dict)
    provenance: dict | None = None
    versions: dict | None = None
    analysis: dict | None = None
    atlas: CellData | None = None
    atlas_is_analysed: bool = False
    neutrophils: CellData | None = None
    tables: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    qc: pd.DataFrame | None = None
    qc_neutrophils: pd.DataFrame | None = None
    metadata: pd.DataFrame | None = None  # <store>.metadata.csv: metadata values as given and as stored
    metrics: pd.DataFrame | None = None
    metrics_png: Path | None = None
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def layout(self) -> RunLayout:
        """Where each file of the run directory is."""
        return RunLayout(self.rundir)

    def table(self, name: str) -> pd.DataFrame | None:
        """An analysis table, or ``None`` when it is missing or empty."""
        df = self.tables.get(name)
        return df if df is not None and len(df) else None

    def _statistics_setting(self, key: str):
        for src in ((self.analysis or {}).get("settings") or {}, self.config.get("analyse") or {}):
            stats = src.get("statistics") if isinstance(src, dict) else None
            if isinstance(stats, dict) and key in stats:
                return stats[key]
        return None

    @property
    def ci_level(self) -> float | None:
        """Coverage of the intervals (``analyse.statistics.ci``), when the run says."""
        ci = self._statistics_setting("ci")
        return float(ci) if isinstance(ci, int | float) else None

    @property
    def interval_method(self) -> str:
        """How the per-cancer intervals were made (``analyse.statistics.interval``; runs before it: bootstrap)."""
        from ..analyse.statistics import INTERVALS

        method = self._statistics_setting("interval")
        return method if method in INTERVALS else "bootstrap"

    @property
    def notes(self) -> list[str]:
        """Notes and warnings the analysis stage recorded in ``analysis.json``."""
        a = self.analysis or {}
        out = []
        for key in ("notes", "warnings"):
            v = a.get(key) or []
            out.extend([v] if isinstance(v, str) else [str(x) for x in v])
        return out


def _read_json(path: Path, inputs: RunInputs):
    if not path.exists():
        inputs.missing.append(path.name)
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        inputs.problems.append(f"{path.name}: {e}")
        return None


def _read_table(path: Path, inputs: RunInputs) -> pd.DataFrame | None:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, ValueError) as e:
        inputs.problems.append(f"{path.relative_to(inputs.rundir)}: {e}")
        return None


def _read_elem(group):
    try:
        from anndata.io import read_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import read_elem
    return read_elem(group)


def read_cells(path: Path, *, columns: list[str] | None = None) -> CellData:
    """``obs`` (all or ``columns``), ``obsm["X_umap"]`` and a few ``uns`` keys of an ``.h5ad`` file."""
    import h5py

    with h5py.File(path, "r") as f:
        obs = _read_elem(f["obs"])
        umap = np.asarray(f["obsm"]["X_umap"][...]) if "obsm" in f and "X_umap" in f["obsm"] else None
        uns = {}
        if "uns" in f:
            for k in _UNS_KEYS:
                if k in f["uns"]:
                    try:
                        uns[k] = _read_elem(f["uns"][k])
                    except Exception as e:  # an odd uns entry must not cost the report
                        log.debug("could not read uns/%s of %s: %s", k, path, e)
    if columns is not None:
        obs = obs[[c for c in columns if c in obs.columns]]
    return CellData(path=path, obs=obs, umap=umap, uns=uns)


def _attach_scores(cells: CellData, scores_path: Path, inputs: RunInputs) -> None:
    """Join ``scores.parquet`` columns the obs lacks (a run whose analysis has not run)."""
    try:
        scores = pd.read_parquet(scores_path)
    except (OSError, ValueError) as e:
        inputs.problems.append(f"scores.parquet: {e}")
        return
    new = [c for c in scores.columns if c not in cells.obs.columns]
    if new:
        cells.obs = cells.obs.join(scores[new], how="left")


def load_run(rundir: str | Path) -> RunInputs:
    """Collect a run directory's outputs for the report; raise :class:`NotARunDirError` if it is none."""
    rundir = Path(rundir)
    if not rundir.is_dir():
        raise NotARunDirError(f"{rundir} is not a directory; give the run directory of `atlas run` or `atlas demo`")
    layout = RunLayout(rundir)
    if not layout.run_json.exists():
        raise NotARunDirError(
            f"{rundir} is not an atlas run directory (no {layout.run_json.name}); run `atlas run CONFIG` or "
            "`atlas demo` first and pass its run directory")
    inputs = RunInputs(rundir=rundir)
    inputs.run_info = _read_json(layout.run_json, inputs)
    cfg = layout.config_resolved
    if cfg.exists():
        import yaml

        inputs.config_text = cfg.read_text()
        try:
            inputs.config = yaml.safe_load(inputs.config_text) or {}
        except yaml.YAMLError as e:
            inputs.problems.append(f"{cfg.name}: {e}")
    else:
        inputs.missing.append(cfg.name)
    inputs.provenance = _read_json(layout.provenance, inputs)
    inputs.versions = _read_json(layout.reference_versions, inputs)
    inputs.analysis = _read_json(layout.analysis_json, inputs)
    _read_cells(layout, inputs)
    _read_tables(layout, inputs)
    return inputs


def _read_cells(layout: RunLayout, inputs: RunInputs) -> None:
    """The annotated atlas (else the bundle's), its scores, and the neutrophil sub-atlas."""
    rundir = layout.root
    for path, analysed in ((layout.atlas, True), (layout.reference_atlas, False)):
        if path.exists():
            try:
                inputs.atlas = read_cells(path)
                inputs.atlas_is_analysed = analysed
                break
            except Exception as e:  # a truncated file: say so, try the next
                inputs.problems.append(f"{path.relative_to(rundir)}: {type(e).__name__}: {e}")
    if inputs.atlas is None:
        inputs.missing.append(layout.atlas.name)
    elif layout.scores.exists():
        _attach_scores(inputs.atlas, layout.scores, inputs)
    sub = layout.neutrophils
    if sub.exists():
        try:
            inputs.neutrophils = read_cells(sub)
        except Exception as e:
            inputs.problems.append(f"{sub.name}: {type(e).__name__}: {e}")
    else:
        inputs.missing.append(sub.name)


def _read_tables(layout: RunLayout, inputs: RunInputs) -> None:
    """The analysis tables, ingest's QC tables beside the store, and the integration metrics."""
    for name in (*TABLES, *OPTIONAL_TABLES):
        for suffix in (".csv", ".parquet"):
            p = layout.table(name, suffix)
            if p.exists():
                inputs.tables[name] = _read_table(p, inputs)
                break
        else:
            inputs.tables[name] = None
            if name not in OPTIONAL_TABLES:
                inputs.missing.append(str(layout.table(name).relative_to(layout.root)))

    qc, nt = layout.store_table("qc"), layout.store_table("neutrophils")
    inputs.qc = _read_table(qc, inputs) if qc.exists() else None
    inputs.qc_neutrophils = _read_table(nt, inputs) if nt.exists() else None
    md = layout.store_table("metadata")
    inputs.metadata = _read_table(md, inputs) if md.exists() else None
    m = layout.reference_metrics
    inputs.metrics = _read_table(m, inputs) if m.exists() else None
    png = layout.reference_metrics_png
    inputs.metrics_png = png if png.exists() else None
