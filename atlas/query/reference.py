"""Open and check the reference a query is mapped onto.

``REFDIR`` is either

* a run directory of ``atlas run`` (the normal case): the bundle in ``REFDIR/reference/`` and the
  annotated atlas ``REFDIR/atlas.h5ad`` (cell types, neutrophil states, reprogramming index, scores,
  ``uns["reprogramming_axis"]`` and ``uns["atlas_scoring"]``; see ``docs/run_directory.md``), or
* a bare reference bundle of ``atlas integrate``: labels come from ``label_key`` in its
  ``atlas.h5ad``; neutrophil states and the reprogramming index are then skipped.

Everything is checked before any work: the bundle's files, its versions (``versions.json``), its
settings (``config.json``), the model file, and that the model's genes are the bundle's HVGs.

``REFDIR`` may be a URL (``s3://``, ``gs://``, any fsspec URL; see :mod:`atlas.core.storage`): the files the
query reads (the bundle, a run's ``atlas.h5ad`` and ``config.resolved.yaml``) are downloaded once into a
local cache (:func:`fetch_reference`) and reused while their remote fingerprints are unchanged; the
QC settings are read from the run's store in place (never downloaded).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..core import storage
from ..core.errors import InputDataError
from ..core.layout import STORE_FORMATS, RunLayout
from ..integrate.encode import model_categories, read_saved_model

__all__ = ["BUNDLE_FILES", "Reference", "check_versions", "fetch_reference", "load_reference"]

log = logging.getLogger(__name__)

#: Files every reference bundle must hold (``model/model.pt`` is scvi-tools' saved model).
BUNDLE_FILES = ("model/model.pt", "hvg.txt", "atlas.h5ad", "config.json", "versions.json")
MODEL_CLASSES = ("SCVI", "SCANVI")


@dataclass
class Reference:
    """A checked reference: where its parts are and what the query needs of it.

    ``path`` is what was given (a URL for a reference in object storage); ``bundle`` is on local disk.
    """

    path: Path | str
    bundle: Path
    kind: str  # "run" or "bundle"
    model_class: str
    hvgs: list[str]
    setup_args: dict[str, Any]
    batch_categories: list[str]
    latent_key: str
    atlas: Any  # AnnData: obs, obsm[latent_key], obsm["X_umap"] of every reference cell (no counts)
    label_key: str
    state_key: str | None
    scoring: dict[str, Any] | None
    axis: dict[str, Any] | None
    versions: dict[str, str]
    state_rule: dict[str, Any] | None = None  # uns["state_rule"]: the analysis's state rule, cuts and programmes
    cell_type_rule: dict[str, Any] | None = None  # uns["cell_type_rule"]: the analysis's markers and cell-type rule
    qc: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    batch_source: str | None = None  # the integrate batch_key; the model's batch when no batch was pooled
    covariate_categories: dict[str, list[str]] = field(default_factory=dict)  # the model's categorical covariates

    @property
    def model_dir(self) -> Path:
        return self.bundle / "model"

    @property
    def batch_key(self) -> str | None:
        return self.setup_args.get("batch_key")

    def latent(self) -> np.ndarray:
        return np.asarray(self.atlas.obsm[self.latent_key], dtype=np.float32)

    def umap(self) -> np.ndarray:
        return np.asarray(self.atlas.obsm["X_umap"], dtype=np.float32)


def _major_minor(version: str) -> tuple[int, int] | None:
    try:
        parts = version.split("+")[0].split(".")
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return None


def check_versions(bundle_versions: dict[str, str], bundle: Path, notes: list[str]) -> None:
    """Refuse a bundle written by an incompatible atlas or scvi-tools; note minor differences.

    atlas bundles are compatible within a major version (within a minor version while the major is
    0); scvi-tools models load within a major version.

    Raises
    ------
    InputDataError
        The bundle lacks the versions, or was written by an incompatible version.
    """
    ours = {"atlas-neutro": __version__, "scvi-tools": metadata.version("scvi-tools")}
    missing = [k for k in ours if k not in bundle_versions]
    if missing:
        raise InputDataError(
            f"{bundle / 'versions.json'} does not record {missing}; the bundle was not written by "
            f"`atlas integrate` (or is damaged): rebuild it with atlas {__version__}"
        )
    for pkg, mine in ours.items():
        theirs = str(bundle_versions[pkg])
        a, b = _major_minor(theirs), _major_minor(mine)
        if a is None or b is None:
            notes.append(f"cannot compare {pkg} versions (bundle {theirs}, installed {mine}); assumed compatible")
            log.warning(notes[-1])
            continue
        strict_minor = pkg == "atlas-neutro" and b[0] == 0
        if a[0] != b[0] or (strict_minor and a[1] != b[1]):
            raise InputDataError(
                f"reference bundle {bundle} was written with {pkg} {theirs}, which is incompatible with the "
                f"installed {pkg} {mine}; rebuild the reference with this version (atlas integrate / atlas run) "
                f"or install {pkg}=={theirs}"
            )
        if a != b:
            notes.append(f"reference written with {pkg} {theirs}, mapping with {mine}")
            log.info(notes[-1])


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputDataError(f"{path} is not readable JSON ({e}); the reference bundle is damaged: rebuild it") from e
    if not isinstance(data, dict):
        raise InputDataError(f"{path} should hold a JSON object; the reference bundle is damaged: rebuild it")
    return data


def _locate(refdir: Path) -> tuple[Path, str]:
    if not refdir.is_dir():
        raise InputDataError(
            f"reference {refdir} does not exist or is not a directory; give a run directory of `atlas run` "
            "or a reference bundle of `atlas integrate`"
        )
    layout = RunLayout(refdir)
    if layout.reference.is_dir():
        return layout.reference, "run"
    if (refdir / "model").exists() or (refdir / "hvg.txt").exists():
        return refdir, "bundle"
    raise InputDataError(
        f"{refdir} is neither a run directory (no reference/ folder) nor a reference bundle (no model/ and "
        "hvg.txt); give the run directory of `atlas run` or the --out folder of `atlas integrate`"
    )


def _load_model_file(bundle: Path) -> tuple[str, list[str], dict]:
    """Class name, genes and scvi-tools registry of the saved model (read without building it)."""
    cls, var_names, registry = read_saved_model(bundle / "model")
    if cls not in MODEL_CLASSES:
        raise InputDataError(f"{bundle / 'model' / 'model.pt'} holds a {cls} model; query mapping supports "
                             f"{', '.join(MODEL_CLASSES)}")  # fmt: skip
    return cls, var_names, registry


def _batch_categories(registry: dict) -> list[str]:
    try:
        mapping = registry["field_registries"]["batch"]["state_registry"]["categorical_mapping"]
    except KeyError:
        return []
    return [str(x) for x in mapping]


def _run_qc(rundir: Path) -> dict | None:
    """The reference run's ingest QC settings (None when the run records none: the query uses the defaults).

    Those its store records (``uns/atlas/config_json``), whatever the store's format, else the ``ingest.qc``
    of its ``config.resolved.yaml``.
    """
    layout = RunLayout.of(rundir)
    qc = _store_qc(layout.store, layout.store_format) if layout.store.exists() else None
    if qc is None:
        qc = _resolved_qc(layout.config_resolved)
    if qc is None:
        log.warning("%s records no ingest QC settings (no readable %s); the query uses the default QC",
                    rundir, layout.store.name)  # fmt: skip
    return qc


def _store_qc(store: storage.Location, store_format: str) -> dict | None:
    """The ``qc`` of the ingest config that the store at ``store`` (path or URL) records."""
    from anndata.io import read_elem

    key = "uns/atlas/config_json"
    try:
        if store_format == "zarr":
            raw = read_elem(storage.open_zarr(store)[key])
        else:
            f, closers = storage.open_h5(store)
            try:
                with f:
                    raw = read_elem(f[key])
            finally:
                for c in closers:
                    c.close()
        qc = json.loads(raw).get("qc")
    except Exception as e:  # an older or foreign store
        log.debug("no ingest config in %s: %s: %s", store, type(e).__name__, e)
        return None
    return qc if isinstance(qc, dict) else None


def _resolved_qc(path: Path) -> dict | None:
    """``ingest.qc`` of a run's ``config.resolved.yaml`` (None when the run's ingest was not spelled out)."""
    import yaml

    try:
        ingest = (yaml.safe_load(path.read_text()) or {}).get("ingest")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    qc = ingest.get("qc") if isinstance(ingest, dict) else None
    return qc if isinstance(qc, dict) else None


def fetch_reference(url: str) -> tuple[Path, dict | None]:
    """A local copy of the reference at ``url`` (a run directory or a bundle) and, for a run, its QC settings.

    The copy lives in :func:`atlas.core.storage.cache_dir` ``("references", url)``: for a run directory its
    ``reference/`` bundle, ``atlas.h5ad`` and ``config.resolved.yaml``; for a bare bundle the bundle (as
    ``bundle/``). A part is downloaded again only when its remote fingerprint changed
    (:func:`atlas.core.storage.cached_download`). The QC settings are read from the run's store in place.

    Returns
    -------
    The local path to open (a run directory or a bundle) and the run's ingest QC settings (None for a bundle,
    or a run that records none).

    Raises
    ------
    InputDataError
        Nothing at ``url`` (or a missing bucket, no access), or neither a run directory nor a bundle there.
    """
    what = f"reference {url}: "
    storage.require(url, "reference ", "give the URL of a run directory of `atlas run` or of a reference bundle "
                    "of `atlas integrate`")  # fmt: skip
    cache = storage.cache_dir("references", url)
    layout = RunLayout(cache)
    if storage.isdir(storage.join(url, "reference")):
        for local in (layout.reference, layout.atlas, layout.config_resolved):
            storage.cached_download(storage.join(url, local.relative_to(cache).as_posix()), local, what)
        log.info("reference %s: local copy in %s", url, cache)
        return cache, _remote_run_qc(url, layout)
    if storage.exists(storage.join(url, "hvg.txt")) or storage.exists(storage.join(url, "model")):
        bundle = storage.cached_download(url, cache / "bundle", what)
        log.info("reference bundle %s: local copy in %s", url, bundle)
        return bundle, None
    raise InputDataError(
        f"{url} is neither a run directory (no reference/ folder) nor a reference bundle (no model/ and hvg.txt); "
        "give the URL of the run directory of `atlas run` or of the --out folder of `atlas integrate`"
    )


def _remote_run_qc(url: str, cached: RunLayout) -> dict | None:
    """:func:`_run_qc` of the run at ``url``: its store read in object storage, else its resolved config."""
    layout = RunLayout.of(cached.root)
    formats = [layout.store_format] if layout.config_resolved.exists() else list(STORE_FORMATS)
    qc = None
    for fmt in formats:
        store = storage.join(url, RunLayout(cached.root, fmt).store.name)
        if storage.exists(store):
            qc = _store_qc(store, fmt)
            break
    if qc is None:
        qc = _resolved_qc(layout.config_resolved)
    if qc is None:
        log.warning("%s records no ingest QC settings; the query uses the default QC", url)
    return qc


def _uns_dict(value) -> dict | None:
    if value is None:
        return None
    out = dict(value)
    return out or None


def load_reference(refdir: str | Path, *, label_key: str | None = None, state_key: str = "neutrophil_state") -> Reference:
    """Open ``refdir`` (run directory or bundle) and check everything the query needs.

    Parameters
    ----------
    refdir
        A run directory of ``atlas run`` or a bundle of ``atlas integrate``; a URL is copied to a local
        cache first (:func:`fetch_reference`).
    label_key
        obs column of the labels to transfer (default ``cell_type``, which a run directory has).
    state_key
        obs column of the neutrophil states (run directories only).

    Raises
    ------
    InputDataError
        A missing or damaged file, an incompatible version, an inconsistent bundle, a missing label column.
    """
    if storage.is_url(refdir):
        local, qc = fetch_reference(str(refdir))
        try:
            ref = _load(local, label_key, state_key, run_qc=lambda _: qc)
        except InputDataError as err:
            raise InputDataError(f"reference {refdir} (local copy {local}): {err}") from None
        ref.path = str(refdir)
        return ref
    return _load(Path(refdir), label_key, state_key, run_qc=_run_qc)


def _load(refdir: Path, label_key: str | None, state_key: str, run_qc) -> Reference:
    """:func:`load_reference` of a local ``refdir``; ``run_qc(refdir)`` gives a run's QC settings."""
    bundle, kind = _locate(refdir)
    missing = [f for f in BUNDLE_FILES if not (bundle / f).is_file()]
    if missing:
        raise InputDataError(
            f"reference bundle {bundle} is missing {', '.join(missing)}; it is incomplete (an interrupted copy?): "
            "copy the whole folder again or rebuild it with `atlas integrate`"
        )
    notes: list[str] = []
    versions = _read_json(bundle / "versions.json")
    check_versions(versions, bundle, notes)
    config = _read_json(bundle / "config.json")
    if "settings" not in config:
        raise InputDataError(f"{bundle / 'config.json'} has no 'settings'; the bundle is damaged: rebuild it")
    model_class, model_genes, registry = _load_model_file(bundle)
    hvgs = (bundle / "hvg.txt").read_text().split()
    if hvgs != model_genes:
        raise InputDataError(
            f"{bundle / 'hvg.txt'} lists {len(hvgs)} genes but the model was trained on {len(model_genes)} other or "
            "differently ordered genes; the bundle mixes files of two builds: rebuild it"
        )
    latent_key = config.get("resolved", {}).get("latent_key") or ("X_scANVI" if model_class == "SCANVI" else "X_scVI")

    atlas_path = RunLayout(refdir).atlas if kind == "run" else bundle / "atlas.h5ad"
    if kind == "run" and not atlas_path.is_file():
        raise InputDataError(
            f"run directory {refdir} has no annotated atlas.h5ad; run the analysis stage first (atlas run), or "
            f"map onto the bare bundle {bundle} with --label-key"
        )
    atlas = _read_atlas(atlas_path, bundle, latent_key)
    key = label_key or "cell_type"
    if key not in atlas.obs.columns:
        hint = "" if kind == "run" else " (a bare bundle has no cell_type: pass --label-key with one of its columns)"
        raise InputDataError(
            f"{atlas_path} has no obs column {key!r} to transfer labels from{hint}; columns: "
            f"{', '.join(map(str, atlas.obs.columns[:30]))}"
        )
    if str(key).startswith("truth_"):
        raise InputDataError(f"label_key={key!r}: truth_* columns are ground truth for evaluation, never labels")
    scoring = axis = state_rule = cell_type_rule = None
    skey: str | None = state_key
    n_logged = len(notes)
    if kind == "run":
        scoring, axis = _uns_dict(atlas.uns.get("atlas_scoring")), _uns_dict(atlas.uns.get("reprogramming_axis"))
        state_rule = _uns_dict(atlas.uns.get("state_rule"))
        cell_type_rule = _uns_dict(atlas.uns.get("cell_type_rule"))
        if state_key not in atlas.obs.columns:
            skey = None
            notes.append(f"{atlas_path} has no {state_key!r} column: neutrophil states are not transferred")
        if axis is None:
            notes.append(f"{atlas_path} records no reprogramming axis: no reprogramming index for the query")
    else:
        skey = None
        notes.append(
            f"{refdir} is a bare reference bundle: labels from {key!r}; neutrophil states, reprogramming index and "
            "the comparison with reference cancer types need a run directory and are skipped"
        )
    for n in notes[n_logged:]:
        log.info(n)
    ref = Reference(
        path=refdir, bundle=bundle, kind=kind, model_class=model_class, hvgs=hvgs,
        setup_args=dict(registry.get("setup_args", {})), batch_categories=_batch_categories(registry),
        latent_key=latent_key, atlas=atlas, label_key=key, state_key=skey, scoring=scoring, axis=axis,
        versions={k: str(v) for k, v in versions.items()}, qc=run_qc(refdir) if kind == "run" else None, notes=notes,
        state_rule=state_rule, cell_type_rule=cell_type_rule,
        batch_source=config["settings"].get("batch_key"),
        covariate_categories={k: v for k, v in model_categories(registry).items()
                              if k in (registry.get("setup_args", {}).get("categorical_covariate_keys") or [])},
    )  # fmt: skip
    log.info("reference %s (%s): %s model, %d HVGs, %d cells, batch key %r (%d batches)", refdir, kind, model_class,
             len(hvgs), atlas.n_obs, ref.batch_key, len(ref.batch_categories))  # fmt: skip
    return ref


def _read_atlas(path: Path, bundle: Path, latent_key: str):
    """obs, latent and UMAP of the reference cells (the latent from the bundle when the atlas lacks it)."""
    import anndata as ad

    try:
        atlas = ad.read_h5ad(path)
    except Exception as e:  # h5py errors on a damaged file
        raise InputDataError(f"cannot read {path} ({type(e).__name__}: {e}); rebuild the reference") from e
    if latent_key not in atlas.obsm or "X_umap" not in atlas.obsm:
        base = ad.read_h5ad(bundle / "atlas.h5ad") if path != bundle / "atlas.h5ad" else atlas
        for key in (latent_key, "X_umap"):
            if key in atlas.obsm:
                continue
            if key not in base.obsm:
                raise InputDataError(f"{path} has no obsm[{key!r}]; rebuild the reference bundle")
            lost = atlas.obs_names.difference(base.obs_names)
            if len(lost):
                raise InputDataError(f"{path} lacks obsm[{key!r}] and {len(lost)} of its cells are not in the bundle")
            atlas.obsm[key] = pd.DataFrame(np.asarray(base.obsm[key]), index=base.obs_names).loc[atlas.obs_names].to_numpy()
    return atlas
