"""The signature registry: gene sets shipped with atlas, with their provenance.

Sets are read from ``atlas/catalogue/data/signatures.yaml`` (built from the team's science notes by
``scripts/build_signature_registry.py``). Outdated human symbols are mapped to current HGNC
symbols at load time (IL8 -> CXCL8, ...), and the original symbol is remembered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from ..core.errors import AtlasError

REGISTRY_FILE = Path(__file__).resolve().parent / "data" / "signatures.yaml"


@dataclass(frozen=True)
class Signature:
    """A named gene set with provenance."""

    name: str
    genes: tuple[str, ...]
    description: str = ""
    citation: str = ""
    kind: str = "published"  # published | published_markers | proxy | user
    species: str = "human"
    version: str | None = None
    optional_genes: tuple[str, ...] = ()
    renamed: dict[str, str] = field(default_factory=dict)  # previous symbol -> current symbol


def _current(genes: list[str], species: str) -> tuple[tuple[str, ...], dict[str, str]]:
    if species != "human":
        return tuple(genes), {}
    from .genes import previous_symbols

    prev = previous_symbols()
    out, renamed = [], {}
    for g in genes:
        new = prev.get(g, g)
        if new != g:
            renamed[g] = new
        if new not in out:
            out.append(new)
    return tuple(out), renamed


@cache
def load_registry() -> dict[str, Signature]:
    """All shipped signatures by name, with current gene symbols."""
    raw = yaml.safe_load(REGISTRY_FILE.read_text())
    reg = {}
    for name, e in raw.items():
        genes, renamed = _current(e["genes"], e.get("species", "human"))
        optional, renamed_opt = _current(e.get("optional_genes", []), e.get("species", "human"))
        reg[name] = Signature(
            name=name,
            genes=genes,
            description=e.get("description", ""),
            citation=e.get("citation", ""),
            kind=e.get("kind", "published"),
            species=e.get("species", "human"),
            version=e.get("version"),
            optional_genes=optional,
            renamed={**renamed, **renamed_opt},
        )
    return reg


def get_signature(name: str) -> Signature:
    """One shipped signature by name, with a clear error listing close names when unknown."""
    reg = load_registry()
    if name not in reg:
        import difflib

        close = difflib.get_close_matches(name, list(reg), n=5, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise AtlasError(f"unknown signature {name!r}.{hint} List them with: atlas signatures list")
    return reg[name]
