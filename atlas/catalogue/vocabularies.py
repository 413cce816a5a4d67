"""Controlled vocabularies of the obs schema: atlas's label for each cancer type and platform, and the
spellings data sets use for them.

Public data sets name one cancer or one assay in many ways ("PDAC", "pancreatic ductal adenocarcinoma",
"Pancreatic cancer", "PAAD"; "10x_3p", "10X Genomics 3'", "Chromium 3'"). Left as given, the per-cancer
statistics would split one cancer into groups, and scVI, which conditions on the platform, would learn one
platform as several. Each vocabulary is a table in ``data/``: ``code`` (atlas's label), ``name`` and
``synonyms``.

- :data:`CANCER_TYPES` (``cancer_types.csv``): the abbreviations pan-cancer single-cell atlases use, TCGA's
  where there is one (``melanoma`` spelled out).
- :data:`PLATFORMS` (``platforms.csv``): the assay labels of the CELLxGENE schema (EFO), e.g. ``10x 3' v3``,
  ``Smart-seq2``, ``Seq-Well``; a 10x chemistry given without its version is ``10x 3'`` / ``10x 5'``.

Matching ignores case, surrounding space, ``_`` and ``-``, repeated spaces and curly quotes
(:func:`spelling_key`). Only names of one thing are synonyms: a subtype keeps its own label (lung adenocarcinoma
is ``LUAD``, not ``NSCLC``; ``10x`` alone names no chemistry), so pooling is the user's choice (a data set's
``value_maps``). A value a table does not know is kept as given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

__all__ = ["CANCER_TYPES", "PLATFORMS", "VOCABULARIES", "Vocabulary", "spelling_key"]

DATA_DIR = Path(__file__).resolve().parent / "data"


def spelling_key(value: str) -> str:
    """The form two spellings of one name share: lower case, ``_``/``-`` as spaces, straight quotes, single
    spaces."""
    text = str(value).lower().replace("\u2019", "'").replace("\u2032", "'")
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", text)).strip()


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """One obs field's labels, read from ``data/<file>``."""

    field: str
    file: str

    @property
    def path(self) -> Path:
        return DATA_DIR / self.file

    @cached_property
    def table(self) -> pd.DataFrame:
        """Columns ``code``, ``name`` and ``synonyms`` (a list per row)."""
        df = pd.read_csv(self.path, dtype=str, keep_default_na=False)
        df["synonyms"] = [[s.strip() for s in row.split(";") if s.strip()] for row in df["synonyms"]]
        return df

    @cached_property
    def _codes_by_key(self) -> dict[str, str]:
        lookup: dict[str, str] = {}
        for row in self.table.itertuples(index=False):
            for spelling in (row.code, row.name, *row.synonyms):
                key = spelling_key(spelling)
                if lookup.setdefault(key, row.code) != row.code:
                    raise ValueError(f"{self.path}: {spelling!r} names both {lookup[key]} and {row.code}")
        return lookup

    def label(self, value: str) -> str | None:
        """atlas's label of ``value`` in any listed spelling, or None when the table does not know it."""
        return self._codes_by_key.get(spelling_key(value))


CANCER_TYPES = Vocabulary("cancer_type", "cancer_types.csv")
PLATFORMS = Vocabulary("platform", "platforms.csv")
#: obs field -> its vocabulary
VOCABULARIES = {v.field: v for v in (CANCER_TYPES, PLATFORMS)}
