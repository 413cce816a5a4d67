"""Cancer types: atlas's labels and the spellings data sets use for them.

Public data sets name one cancer in many ways ("PDAC", "pancreatic ductal adenocarcinoma", "Pancreatic
cancer", "PAAD"); left as given, the per-cancer statistics would split one cancer into several groups.
``data/cancer_types.csv`` lists atlas's label of each cancer (``code``: the abbreviation pan-cancer
single-cell atlases use, TCGA's where there is one; ``melanoma`` spelled out), its name and its synonyms.

Matching ignores case, surrounding space, ``_`` and ``-`` and repeated spaces. Only names of the same cancer are
synonyms: a subtype keeps its own label (lung adenocarcinoma is ``LUAD``, not ``NSCLC``), so pooling a subtype
with its parent is the user's choice (a data set's ``value_maps``). A value the table does not know is kept as
given.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pandas as pd

__all__ = ["cancer_type_key", "cancer_type_table", "canonical_cancer_type"]

TABLE = Path(__file__).resolve().parent / "data" / "cancer_types.csv"


def cancer_type_key(value: str) -> str:
    """The form two spellings of one name share: lower case, ``_`` and ``-`` as spaces, single spaces."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", str(value).lower())).strip()


@cache
def cancer_type_table() -> pd.DataFrame:
    """The vocabulary: columns ``code``, ``name`` and ``synonyms`` (a list per row)."""
    df = pd.read_csv(TABLE, dtype=str, keep_default_na=False)
    df["synonyms"] = [[s.strip() for s in row.split(";") if s.strip()] for row in df["synonyms"]]
    return df


@cache
def _codes_by_key() -> dict[str, str]:
    lookup: dict[str, str] = {}
    for row in cancer_type_table().itertuples(index=False):
        for spelling in (row.code, row.name, *row.synonyms):
            key = cancer_type_key(spelling)
            if lookup.setdefault(key, row.code) != row.code:
                raise ValueError(f"{TABLE}: {spelling!r} names both {lookup[key]} and {row.code}")
    return lookup


def canonical_cancer_type(value: str) -> str | None:
    """atlas's label of a cancer type given in any listed spelling, or None when the table does not know it."""
    return _codes_by_key().get(cancer_type_key(value))
