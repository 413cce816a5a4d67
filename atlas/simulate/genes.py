"""The simulator's gene universe: real human symbols, and their Ensembl, outdated and mouse names.

The universe holds every gene of every shipped human signature, the markers and state genes of
:mod:`atlas.simulate.biology`, the 13 mitochondrial protein-coding genes, the ribosomal RPL/RPS genes,
and filler genes up to ``n_genes``. It depends only on ``n_genes`` (not on the seed), so runs with
different seeds share their genes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache

import pandas as pd

from ..core.errors import AtlasError

#: The 13 mitochondrial protein-coding genes.
MT_GENES: tuple[str, ...] = (
    "MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3",
    "MT-ND3", "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB",
)  # fmt: skip
_RIBO = re.compile(r"RP[LS]\d+[AXY]?\d?|RPLP[0-2]|RPSA")
# Filler genes: plain symbols (letters and digits), not lncRNA/miRNA/snoRNA/readthrough/ORF names.
_PLAIN = re.compile(r"[A-Z][A-Z0-9]{1,11}")
_ODD_PREFIXES = ("LINC", "MIR", "SNOR", "LOC", "RNU", "RNA5", "RN7", "SCARNA", "Y_RNA", "OR")
# Names in published lists that are not genes of a count matrix.
_NOT_GENES = {"Metazoa_SRP", "Y_RNA"}


@dataclass(frozen=True)
class GeneTable:
    """The simulated genes, in output order.

    Attributes
    ----------
    symbols
        Current HGNC symbols (unique), the order of every data set's genes.
    ensembl
        Ensembl gene ID of each symbol.
    mouse
        Mouse symbol of each gene with a one-to-one orthologue, else ``""``.
    outdated
        Current symbol -> an outdated symbol, for genes that have one (used by one data set).
    """

    symbols: tuple[str, ...]
    ensembl: tuple[str, ...]
    mouse: tuple[str, ...]
    outdated: dict[str, str]

    def index(self) -> dict[str, int]:
        """Symbol -> position."""
        return {g: i for i, g in enumerate(self.symbols)}


def _stable_key(name: str) -> str:
    """A seed-free pseudo-random sort key, so the filler choice is stable and unbiased by name."""
    return hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


def _ensembl_ids(symbols: list[str]) -> list[str]:
    """One Ensembl ID per symbol: the one with a 1:1 mouse orthologue if any, else the smallest."""
    from ..catalogue.genes import human_genes, one_to_one_orthologues

    h = human_genes()
    h = h[h["symbol"].isin(symbols)]
    ortho_ids = set(one_to_one_orthologues()["human_ensembl_id"])
    h = h.assign(pref=~h["ensembl_id"].isin(ortho_ids)).sort_values(["symbol", "pref", "ensembl_id"])
    first = h.drop_duplicates("symbol").set_index("symbol")["ensembl_id"]
    return [first[s] for s in symbols]


def _outdated_symbols(universe: set[str]) -> dict[str, str]:
    """Current -> outdated symbol, for universe genes whose outdated name is not itself in use."""
    from ..catalogue.genes import human_genes, previous_symbols

    in_use = set(human_genes()["symbol"])
    out: dict[str, str] = {}
    for old, new in sorted(previous_symbols().items()):
        if new in universe and new not in out and old not in in_use and _PLAIN.fullmatch(old):
            out[new] = old
    return out


def required_genes(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Genes that must be simulated: signatures, ``extra`` (markers, state genes), MT and ribosomal genes.

    Only symbols present in :func:`atlas.catalogue.genes.human_genes` are kept.
    """
    from ..catalogue.genes import human_genes
    from ..catalogue.signatures import load_registry

    known = set(human_genes()["symbol"])
    wanted: list[str] = []
    for sig in load_registry().values():
        if sig.species == "human":
            wanted.extend(sig.genes)
            wanted.extend(sig.optional_genes)
    wanted.extend(extra)
    wanted.extend(MT_GENES)
    wanted.extend(sorted(g for g in known if _RIBO.fullmatch(g)))
    seen: set[str] = set()
    out = []
    for g in wanted:
        if g in known and g not in _NOT_GENES and g not in seen:
            seen.add(g)
            out.append(g)
    return out


@cache
def build_gene_table(n_genes: int, extra: tuple[str, ...] = ()) -> GeneTable:
    """The gene universe of a simulation with ``n_genes`` genes.

    Parameters
    ----------
    n_genes
        Number of genes; must be at least the number of required genes (about 1,300).
    extra
        Further genes that must be present (cell-type markers, state genes).

    Returns
    -------
    GeneTable
        Genes sorted by symbol, with Ensembl IDs, mouse orthologues and outdated names.
    """
    from ..catalogue.genes import human_genes, one_to_one_orthologues

    req = required_genes(extra)
    if n_genes < len(req):
        raise AtlasError(
            f"n_genes={n_genes} is too small: the simulator needs at least {len(req)} genes "
            "(signature genes, markers, MT and ribosomal genes); pass a larger --n-genes"
        )
    h = human_genes()
    counts = h["symbol"].value_counts()
    ortho = one_to_one_orthologues()
    with_mouse = set(ortho["human_symbol"])
    req_set = set(req)
    candidates = sorted(
        (
            s
            for s in counts.index[counts == 1]
            if s not in req_set
            and s in with_mouse
            and _PLAIN.fullmatch(s)
            and not s.startswith(_ODD_PREFIXES)
            and not _RIBO.fullmatch(s)
        ),
        key=lambda s: (_stable_key(s), s),
    )
    n_fill = n_genes - len(req)
    if n_fill > len(candidates):
        raise AtlasError(
            f"n_genes={n_genes} is too large: only {len(req) + len(candidates)} suitable human genes "
            "are available; pass a smaller --n-genes"
        )
    symbols = sorted(req + candidates[:n_fill])
    mouse_of = dict(zip(ortho["human_symbol"], ortho["mouse_symbol"], strict=True))
    return GeneTable(
        symbols=tuple(symbols),
        ensembl=tuple(_ensembl_ids(symbols)),
        mouse=tuple(mouse_of.get(s, "") for s in symbols),
        outdated=_outdated_symbols(set(symbols)),
    )


def gene_names(table: GeneTable, kind: str) -> tuple[list[str], list[int]]:
    """The names a data set uses for its genes, and which universe genes it keeps.

    Parameters
    ----------
    table
        The gene universe.
    kind
        ``symbol`` (current symbols), ``ensembl`` (Ensembl IDs), ``outdated`` (current symbols
        except a few replaced by outdated ones, e.g. IL8 for CXCL8) or ``mouse`` (mouse symbols of
        genes with a one-to-one orthologue; the others are dropped).

    Returns
    -------
    names, keep
        Names of the kept genes and their positions in the universe.
    """
    n = len(table.symbols)
    if kind == "symbol":
        return list(table.symbols), list(range(n))
    if kind == "ensembl":
        return list(table.ensembl), list(range(n))
    if kind == "outdated":
        return [table.outdated.get(s, s) for s in table.symbols], list(range(n))
    if kind == "mouse":
        keep = [i for i, m in enumerate(table.mouse) if m]
        return [table.mouse[i] for i in keep], keep
    raise ValueError(f"unknown gene naming {kind!r}")


def feature_table(table: GeneTable, kind: str) -> pd.DataFrame:
    """10x-style features (id, name, type) for a data set with gene naming ``kind``."""
    names, keep = gene_names(table, kind)
    if kind == "mouse":
        from ..catalogue.genes import one_to_one_orthologues

        ortho = one_to_one_orthologues()
        mid = dict(zip(ortho["mouse_symbol"], ortho["mouse_ensembl_id"], strict=True))
        ids = [mid[m] for m in names]
    else:
        ids = [table.ensembl[i] for i in keep]
    return pd.DataFrame({"id": ids, "name": names, "type": "Gene Expression"})
