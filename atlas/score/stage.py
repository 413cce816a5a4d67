"""Scoring a store on disk (for the CLI and the pipeline) and the signature catalogue helpers.

* :func:`score_store` scores an ``.h5ad`` or ``.zarr`` store in row chunks (bounded memory; the
  matrix is never loaded whole) and writes a parquet table atomically. Per-gene statistics are
  cached beside the store (:mod:`atlas.ingest.genestats`), so the scanpy method reads the store once
  when the cache is valid (twice otherwise, and the second run once).
* :func:`list_signatures`, :func:`show_signature`, :func:`export_signatures` return the data that
  ``atlas signatures list|show|export`` prints.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..catalogue.signatures import Signature, get_signature, load_registry
from ..core import storage
from ..core.errors import AtlasError, InputDataError
from ..ingest.genestats import GeneStatsCache
from .adata import prepare_sets
from .gene_sets import resolve_gene_sets
from .matrix import DEFAULT_CHUNK_SIZE, Method, score_matrix
from .settings import ScoreConfig

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _open_store(path: storage.Location) -> Iterator[Any]:
    if storage.is_url(path):
        with _open_remote(path) as root:
            yield root
        return
    if not path.exists():
        raise InputDataError(f"store {path} does not exist")
    if path.suffix == ".zarr" or path.is_dir():
        import zarr

        yield zarr.open_group(str(path), mode="r")
    else:
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise InputDataError(f"cannot open {path} as an .h5ad (HDF5) store: {err}") from err
        with f:
            yield f


@contextlib.contextmanager
def _open_remote(url: str) -> Iterator[Any]:
    """A store in object storage, streamed: a ``.zarr`` prefix through zarr, an ``.h5ad`` through a block cache."""
    storage.require(url, "store ", "check the URL (an .h5ad object or the prefix of a .zarr store)")
    if storage.name(url).endswith(".zarr") or storage.isdir(url):
        yield storage.open_zarr(url)
        return
    try:
        f, closers = storage.open_h5(url)
    except OSError as err:
        raise InputDataError(f"cannot open {url} as an .h5ad (HDF5) store: {err}") from err
    try:
        with f:
            yield f
    finally:
        for c in closers:
            c.close()


def _index(root: Any, key: str) -> pd.Index:
    from anndata.io import read_elem

    grp = root[key]
    idx_key = grp.attrs.get("_index", "_index")
    elem = grp[idx_key]
    if elem.attrs.get("encoding-type") == "nullable-string-array":  # pandas 3 str index (anndata >= 0.13)
        elem = elem["values"]  # names are never missing: the mask is all False
    if type(elem).__module__.startswith("h5py") and elem.dtype.kind == "O" and elem.ndim == 1:
        import pyarrow as pa

        # raw bytes decoded by arrow: ~4x faster than read_elem for millions of names
        names = pa.array(elem[()], pa.binary()).cast(pa.string()).to_numpy(zero_copy_only=False)
        return pd.Index(names, dtype=object)
    return pd.Index([str(v) for v in read_elem(elem)], dtype=object)


def _write_scores(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """Write the scores as parquet atomically (readable with ``pd.read_parquet``).

    Only the cell names are compressed and dictionary-encoded: scores barely compress, and trying
    costs more time than the rest of the write. A URL ``path``: written to a local temporary file,
    then uploaded (:func:`atlas.core.storage.publish`: a failed upload keeps the file and says where).
    """
    if storage.is_url(path):
        import tempfile

        local = Path(tempfile.mkdtemp(prefix="atlas-scores-")) / storage.name(path)
        _write_scores(local, df)
        storage.publish(local, str(path), "scores: ")
        local.parent.rmdir()
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..core.atomic import atomic_path

    table = pa.Table.from_pandas(df, preserve_index=True)
    name = str(df.index.name)
    codec = {c: ("snappy" if c == name else "none") for c in table.column_names}
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=codec, use_dictionary=[name])


def score_store(
    store_path: str | os.PathLike,
    signatures: Any,
    *,
    method: Method = "scanpy",
    backend: str = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    out_path: str | os.PathLike | None = None,
    layer: str | None = None,
    normalize: bool | str = "auto",
    ctrl_size: int = 50,
    n_bins: int = 25,
    random_state: int = 0,
    max_rank: int = 1500,
    n_up: int | None = None,
    species: str = "human",
    target_sum: float = 1e4,
    gene_stats_cache: bool = True,
) -> pd.DataFrame:
    """Score signatures on an ``.h5ad``/``.zarr`` store read in row chunks; write a parquet table.

    Parameters
    ----------
    store_path
        AnnData store on disk (CSR ``X`` or ``layers/<layer>``; dense matrices work too), or its URL
        (``s3://.../store.zarr``, ``gs://.../store.h5ad``; see :mod:`atlas.core.storage`): streamed in row
        chunks, never downloaded (``indptr`` once, then each chunk's values).
    signatures
        As in :func:`atlas.score.score_signatures`.
    method, backend, chunk_size, normalize, ctrl_size, n_bins, random_state, max_rank
        As in :func:`atlas.score.score_signatures`; validated by :class:`~atlas.score.settings.ScoreConfig`
        (a :class:`~atlas.core.errors.ConfigError` names a bad one).
    n_up, species, target_sum
        As in :func:`atlas.score.score_signatures`.
    out_path
        Parquet file to write atomically (cells x signatures, index ``obs_names``); not written when None.
        A URL is written locally, then uploaded.
    layer
        Score ``layers/<layer>`` instead of ``X`` (e.g. ``"counts"``).
    gene_stats_cache
        Read per-gene statistics from ``<stem>.genestats.parquet`` beside the store when it matches
        the store, and write it after a full first pass (see :mod:`atlas.ingest.genestats`); the scanpy
        method then makes one pass over the store instead of two. Scores are identical either way.
        Not used for a store in object storage.

    Returns
    -------
    The cells x signatures DataFrame (its ``attrs["report"]`` holds the per-signature report).
    """
    from anndata.io import sparse_dataset

    from ..core.settings import validate

    opts = validate(
        ScoreConfig,
        {"method": method, "backend": backend, "chunk_size": chunk_size, "normalize": normalize,
         "ctrl_size": ctrl_size, "n_bins": n_bins, "random_state": random_state, "max_rank": max_rank},
        "score_store() arguments",
    ).kwargs()  # fmt: skip
    store_path = storage.location(store_path)
    remote = storage.is_url(store_path)
    if storage.is_url(out_path):
        storage.require_bucket(str(out_path), "scores: ")  # before the work, not after
    with _open_store(store_path) as root, storage.translating(store_path, "store: "):
        key = "X" if layer is None else f"layers/{layer}"
        if key not in root:
            raise InputDataError(
                f"{store_path} has no {key}; layers present: "
                f"{', '.join(root['layers'].keys()) if 'layers' in root else 'none'}"
            )
        elem = root[key]
        X = (
            sparse_dataset(elem)
            if hasattr(elem, "attrs")
            and "encoding-type" in elem.attrs
            and elem.attrs["encoding-type"] in ("csr_matrix", "csc_matrix")
            else elem
        )
        var_names = _index(root, "var")
        obs_names = _index(root, "obs")
        names, idx, reports = prepare_sets(signatures, var_names, species)
        logger.info(
            "scoring %d signature(s) on %s (%s; %d cells x %d genes) with method=%r",
            len(names),
            store_path,
            key,
            len(obs_names),
            len(var_names),
            opts["method"],
        )
        scores, details = score_matrix(
            X,
            idx,
            **opts,
            n_up=n_up,
            target_sum=target_sum,
            names=names,
            gene_stats=GeneStatsCache(store_path, key) if gene_stats_cache and not remote else None,
        )
    df = pd.DataFrame(scores, index=obs_names, columns=names, copy=False)
    df.index.name = "obs_names"
    df.attrs["report"] = {
        "method": opts["method"],
        "store": str(store_path),
        "matrix": key,
        "signatures": reports,
        **details.as_dict(),
    }
    if out_path is not None:
        _write_scores(out_path, df)
        logger.info("wrote %s", out_path)
    return df


def list_signatures(*, kind: str | None = None, species: str | None = None) -> pd.DataFrame:
    """One row per shipped signature: name, kind, species, n_genes, version, description, citation."""
    rows = []
    for sig in load_registry().values():
        if (kind and sig.kind != kind) or (species and sig.species != species):
            continue
        rows.append(
            {
                "name": sig.name,
                "kind": sig.kind,
                "species": sig.species,
                "n_genes": len(sig.genes),
                "version": sig.version or "",
                "description": sig.description,
                "citation": sig.citation,
            }
        )
    return pd.DataFrame(
        rows, columns=["name", "kind", "species", "n_genes", "version", "description", "citation"]
    )


def show_signature(name: str, *, species: str | None = None) -> dict[str, Any]:
    """Everything about one shipped signature (genes, provenance, renamed symbols).

    With ``species`` given and different from the set's, also the translated genes and those
    without a one-to-one orthologue.
    """
    sig = get_signature(name)
    out: dict[str, Any] = {
        "name": sig.name,
        "kind": sig.kind,
        "species": sig.species,
        "version": sig.version,
        "description": sig.description,
        "citation": sig.citation,
        "genes": list(sig.genes),
        "optional_genes": list(sig.optional_genes),
        "renamed": dict(sig.renamed),
    }
    if species and species != sig.species:
        rs = resolve_gene_sets(sig, species=species)[0]
        out["translated_genes"] = list(rs.genes)
        out["no_orthologue"] = list(rs.untranslated)
    return out


def export_signatures(
    names: Sequence[str] | None = None, *, format: str = "gmt", path: str | os.PathLike | None = None
) -> str:
    """Shipped signatures as GMT or YAML text (written atomically to ``path`` when given)."""
    sigs: list[Signature] = [get_signature(n) for n in names] if names else list(load_registry().values())
    if format == "gmt":
        lines = [
            "\t".join([s.name, (s.description or s.citation or s.kind).replace("\t", " "), *s.genes])
            for s in sigs
        ]
        text = "\n".join(lines) + "\n"
    elif format == "yaml":
        import yaml

        data = {
            s.name: {
                "description": s.description,
                "citation": s.citation,
                "kind": s.kind,
                "species": s.species,
                "version": s.version,
                "genes": list(s.genes),
                **({"optional_genes": list(s.optional_genes)} if s.optional_genes else {}),
            }
            for s in sigs
        }
        text = yaml.safe_dump(data, sort_keys=False, width=120)
    else:
        raise AtlasError(f"format={format!r}: use 'gmt' or 'yaml'")
    if path is not None:
        from ..core.atomic import write_text

        write_text(path, text)
    return text
