"""Atomic output: write under a temporary name beside the target, then rename.

A crash leaves either the old output or none, never a half-written file that a later run
could mistake for a finished one. Temporary names start with ``.atlas-tmp-`` so they are
easy to recognise and clean up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".atlas-tmp-"


def _tmp_sibling(target: Path) -> Path:
    return target.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{target.name}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``target`` (a file or a directory) to; rename on success.

    On an exception the temporary output is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary output for {target}")
        if target.exists():
            if not overwrite:
                raise FileExistsError(target)
            # Move the old output aside first so the swap is as short as possible.
            old = _tmp_sibling(target)
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
    finally:
        _remove(tmp)


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_json(target: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (sorted keys, indented, ``default=str`` for paths and numpy scalars)."""
    return write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_table(target: str | os.PathLike, df) -> Path:
    """Write a pandas DataFrame atomically as CSV (``.csv``/``.tsv``) or parquet (``.parquet``)."""
    target = Path(target)
    with atomic_path(target) as tmp:
        if target.suffix == ".parquet":
            df.to_parquet(tmp)
        elif target.suffix == ".tsv":
            df.to_csv(tmp, sep="\t")
        else:
            df.to_csv(tmp)
    return target


def write_anndata(target: str | os.PathLike, adata) -> Path:
    """Write an AnnData atomically as ``.h5ad`` or ``.zarr`` (chosen by the suffix)."""
    target = Path(target)
    with atomic_path(target) as tmp:
        if target.suffix == ".zarr":
            adata.write_zarr(tmp)
        else:
            adata.write_h5ad(tmp)
    return target
