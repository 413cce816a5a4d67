"""Gene sets for scoring: shipped signatures, user GMT/YAML files, symbol updates, orthologues.

Extends :mod:`atlas.catalogue.signatures` (the shipped registry) with:

* user sets from MSigDB-style GMT files and from YAML files (the registry's format, or a plain
  ``name: [genes]`` mapping), or from a ``{name: genes}`` dict;
* outdated human symbols mapped to current HGNC symbols for user sets too
  (:func:`atlas.catalogue.genes.previous_symbols`); matching a data set tries each gene as
  given first and uses current/previous symbols only for genes the data lack under that name;
* translation between mouse and human through one-to-one orthologues
  (:func:`atlas.catalogue.genes.one_to_one_orthologues`) for sets whose species differs from
  the data's;
* per-signature reports of the genes absent from a data set (a warning when fewer than half are
  present, an :class:`~atlas.core.errors.AtlasError` when none is).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..catalogue.signatures import Signature, get_signature, load_registry
from ..core import storage
from ..core.errors import AtlasError

logger = logging.getLogger(__name__)

GeneSet = Signature  # user sets are Signatures with kind="user"
SPECIES = ("human", "mouse")
_FILE_SUFFIXES = (".gmt", ".yaml", ".yml")


def read_gmt(path: str | os.PathLike, *, species: str = "human") -> list[Signature]:
    """Read an MSigDB-style GMT file: one set per line, ``name<TAB>description<TAB>gene...``.

    Parameters
    ----------
    path
        The ``.gmt`` file.
    species
        Species of the gene symbols in the file.
    """
    path = storage.location(path)
    sets = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) < 3:
            raise AtlasError(
                f"{path}:{lineno}: a GMT line needs a name, a description and at least one gene, "
                "separated by tabs"
            )
        genes = [g for g in parts[2:] if g]
        sets.append(
            _user_set(parts[0], genes, species=species, description=parts[1], source=f"{path}:{lineno}")
        )
    if not sets:
        raise AtlasError(f"gene set file {path} holds no gene sets")
    return sets


def read_gene_set_yaml(path: str | os.PathLike, *, species: str = "human") -> list[Signature]:
    """Read gene sets from YAML: ``name: [genes]`` or the registry's ``name: {genes: [...], ...}``.

    Parameters
    ----------
    path
        The ``.yaml``/``.yml`` file.
    species
        Default species for sets that do not give ``species:``.
    """
    path = storage.location(path)
    try:
        raw = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as err:
        raise AtlasError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict) or not raw:
        raise AtlasError(f"{path}: expected a mapping of set name -> genes (or -> {{genes: [...]}})")
    sets = []
    for name, entry in raw.items():
        where = f"{path}: set {name!r}"
        if isinstance(entry, list):
            sets.append(_user_set(str(name), entry, species=species, source=where))
        elif isinstance(entry, dict) and isinstance(entry.get("genes"), list):
            unknown = set(entry) - {
                "genes",
                "description",
                "citation",
                "kind",
                "species",
                "version",
                "optional_genes",
            }
            if unknown:
                raise AtlasError(f"{where}: unknown field(s) {sorted(unknown)}")
            sets.append(
                _user_set(
                    str(name),
                    entry["genes"],
                    species=entry.get("species", species),
                    description=entry.get("description", ""),
                    citation=entry.get("citation", ""),
                    version=entry.get("version"),
                    source=where,
                )
            )
        else:
            raise AtlasError(f"{where}: give a list of genes or a mapping with a 'genes' list")
    return sets


def _user_set(
    name: str,
    genes: Iterable[Any],
    *,
    species: str,
    description: str = "",
    citation: str = "",
    version: str | None = None,
    source: str = "",
) -> Signature:
    if species not in SPECIES:
        raise AtlasError(f"{source or name}: species must be one of {SPECIES}, got {species!r}")
    genes = [str(g).strip() for g in genes if str(g).strip()]
    if not genes:
        raise AtlasError(f"gene set {name!r} ({source or 'user'}) is empty; give at least one gene")
    current, renamed = _update_symbols(genes, species)
    return Signature(
        name=name,
        genes=current,
        description=description,
        citation=citation,
        kind="user",
        species=species,
        version=version,
        renamed=renamed,
    )


def _update_symbols(genes: Sequence[str], species: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """Outdated human symbols -> current HGNC symbols (order kept, duplicates dropped)."""
    prev: Mapping[str, str] = {}
    if species == "human":
        from ..catalogue.genes import previous_symbols

        prev = previous_symbols()
    out: list[str] = []
    renamed = {}
    for g in genes:
        new = prev.get(g, g)
        if new != g:
            renamed[g] = new
        if new not in out:
            out.append(new)
    if renamed:
        logger.info(
            "outdated symbols (matched as given first, else under the current symbol): %s",
            ", ".join(f"{a}->{b}" for a, b in renamed.items()),
        )
    return tuple(out), renamed


@dataclass
class ResolvedSet:
    """A signature as scored on one data set: the genes used and the report of the others."""

    signature: Signature
    genes: tuple[str, ...]  # in the data's species, before matching
    translated: dict[str, str] = field(default_factory=dict)
    untranslated: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.signature.name


def translate(sig: Signature, to_species: str) -> ResolvedSet:
    """Map a set's genes to ``to_species`` through one-to-one orthologues (identity when same species)."""
    if to_species not in SPECIES:
        raise AtlasError(f"species must be one of {SPECIES}, got {to_species!r}")
    if sig.species == to_species:
        return ResolvedSet(sig, tuple(sig.genes))
    from ..catalogue.genes import one_to_one_orthologues

    orth = one_to_one_orthologues()
    src, dst = (
        ("mouse_symbol", "human_symbol") if sig.species == "mouse" else ("human_symbol", "mouse_symbol")
    )
    table = dict(zip(orth[src], orth[dst], strict=True))
    out, mapping, lost = [], {}, []
    for g in sig.genes:
        h = table.get(g)
        if h is None:
            lost.append(g)
        elif h not in out:
            out.append(h)
            mapping[g] = h
    if lost:
        logger.warning(
            "signature %r: %d %s gene(s) have no one-to-one %s orthologue and are dropped: %s",
            sig.name,
            len(lost),
            sig.species,
            to_species,
            ", ".join(lost),
        )
    if not out:
        raise AtlasError(
            f"signature {sig.name!r}: none of its {sig.species} genes has a one-to-one {to_species} "
            "orthologue; give the set in the data's species"
        )
    return ResolvedSet(sig, tuple(out), mapping, tuple(lost))


def resolve_gene_sets(signatures: Any, *, species: str = "human") -> list[ResolvedSet]:
    """Turn the ``signatures`` argument into signatures in the data's species.

    Parameters
    ----------
    signatures
        A registry name, a GMT/YAML path, a :class:`~atlas.catalogue.signatures.Signature`, a ``{name: genes}``
        dict, or a list of any of these.
    species
        Species of the data (sets of the other species are translated through orthologues).
    """
    sigs = _collect(signatures)
    if not sigs:
        raise AtlasError(
            "no signatures given; name registry signatures (atlas signatures list) or give a GMT/YAML file"
        )
    names = [s.name for s in sigs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AtlasError(f"signature names must be unique; repeated: {dupes}")
    return [translate(s, species) for s in sigs]


def _collect(signatures: Any) -> list[Signature]:
    if isinstance(signatures, Signature):
        return [signatures]
    if isinstance(signatures, os.PathLike) or (isinstance(signatures, str) and _is_file_ref(signatures)):
        path = storage.location(signatures)
        if storage.name(path).lower().endswith(".gmt"):
            return read_gmt(path)
        return read_gene_set_yaml(path)
    if isinstance(signatures, str):
        return [get_signature(signatures)]
    if isinstance(signatures, Mapping):
        out = []
        for name, genes in signatures.items():
            if isinstance(genes, Signature):
                out.append(replace(genes, name=str(name)))
            elif isinstance(genes, str) or not isinstance(genes, Iterable):
                raise AtlasError(
                    f"signature {name!r}: give a list of gene symbols, not {type(genes).__name__}"
                )
            else:
                out.append(_user_set(str(name), genes, species="human", source="dict"))
        return out
    if isinstance(signatures, Iterable):
        out = []
        for s in signatures:
            out.extend(_collect(s))
        return out
    raise AtlasError(f"cannot read signatures from a {type(signatures).__name__}")


def _is_file_ref(s: str) -> bool:
    if s in load_registry():
        return False
    return s.lower().endswith(_FILE_SUFFIXES) or os.sep in s or storage.is_url(s)


def _read_text(path) -> str:
    """The text of a gene set file (a local path or a URL), or an AtlasError naming it."""
    storage.require(path, "gene set file ", "check the path (signatures: a GMT or YAML file, or registry names)")
    with storage.translating(path, "gene set file "), storage.open_input(path, "rt", compression=None) as fh:
        return fh.read()


def _aliases(rs: ResolvedSet) -> dict[str, list[str]]:
    """Per gene of a human set: other names to look for when it is absent, the one given first.

    The user's own spelling (before the symbol update), then the current HGNC symbol of a
    previous one, then the previous symbols of a current one; so data aligned to an older or a
    newer annotation still find the gene (``SEPTIN9`` in a set, ``SEPT9`` in the data, or back).
    """
    if rs.translated or rs.signature.species != "human":
        return {}
    from ..catalogue.genes import previous_symbols

    prev = previous_symbols()
    older: dict[str, list[str]] = {}
    for old, new in prev.items():
        older.setdefault(new, []).append(old)
    given: dict[str, list[str]] = {}
    for old, new in rs.signature.renamed.items():
        given.setdefault(new, []).append(old)
    out = {}
    for g in rs.genes:
        names = [*given.get(g, []), g, *([prev[g]] if g in prev else []), *older.get(g, [])]
        out[g] = list(dict.fromkeys(names))
    return out


def _find(rs: ResolvedSet, var_names: pd.Index) -> tuple[np.ndarray, dict[str, str]]:
    """Column of each gene in ``var_names`` (-1 = absent) and ``{gene as given: name in the data}``
    for the genes found under another name."""
    aliases = _aliases(rs)
    given = {new: old for old, new in rs.signature.renamed.items()}
    idx = np.full(len(rs.genes), -1, dtype=np.int64)
    via: dict[str, str] = {}
    for i, g in enumerate(rs.genes):
        for name in aliases.get(g, [g]):
            j = var_names.get_indexer([name])[0]
            if j >= 0:
                idx[i] = j
                if name != given.get(g, g):
                    via[given.get(g, g)] = name
                break
    return idx, via


def match_genes(rs: ResolvedSet, var_names: pd.Index) -> tuple[np.ndarray, dict[str, Any]]:
    """Column indices of a set's genes in ``var_names`` and the per-signature report.

    A gene is looked up as the user gave it first, then under its current or previous HGNC
    symbols (:func:`_aliases`), so a set matches data aligned to an older or newer annotation;
    genes found under another name are logged and listed in the report (``matched_as``).
    Warns when fewer than half of the genes are present; raises when none is.

    Parameters
    ----------
    rs
        The resolved set.
    var_names
        The data's gene names.
    """
    idx, via = _find(rs, var_names)
    present = idx >= 0
    absent = [g for g, ok in zip(rs.genes, present, strict=True) if not ok]
    report = {
        "n_genes": len(rs.genes),
        "n_present": int(present.sum()),
        "absent": absent,
        "renamed": dict(rs.signature.renamed),
        "matched_as": via,
        "translated_from": rs.signature.species if rs.translated or rs.untranslated else None,
        "no_orthologue": list(rs.untranslated),
        "kind": rs.signature.kind,
    }
    # the usual outdated -> current update is reported under 'renamed'; log the other look-ups
    unusual = {k: v for k, v in via.items() if rs.signature.renamed.get(k) != v}
    if unusual:
        logger.info(
            "signature %r: %d gene(s) found in the data under another HGNC symbol: %s",
            rs.name,
            len(unusual),
            ", ".join(f"{k} as {v}" for k, v in unusual.items()),
        )
    if not present.any():
        raise AtlasError(
            f"signature {rs.name!r}: none of its {len(rs.genes)} genes is in the data (e.g. "
            f"{', '.join(rs.genes[:5])}); check the species and the gene identifiers (symbols vs Ensembl IDs)"
        )
    if present.sum() * 2 < len(rs.genes):
        logger.warning(
            "signature %r: only %d of %d genes are in the data; absent: %s",
            rs.name,
            int(present.sum()),
            len(rs.genes),
            ", ".join(absent[:20]) + (" ..." if len(absent) > 20 else ""),
        )
    elif absent:
        logger.info(
            "signature %r: %d of %d genes absent from the data: %s",
            rs.name,
            len(absent),
            len(rs.genes),
            ", ".join(absent[:20]),
        )
    return np.unique(idx[present]).astype(np.int64), report
