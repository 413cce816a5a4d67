"""Gene harmonisation onto current human symbols."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atlas.catalogue import genes as catalogue
from atlas.core.errors import InputDataError
from atlas.ingest.genes import (
    common_gene_axis,
    detect_id_type,
    harmonize_genes,
    recognised_share,
    strip_version,
)


def _var(ids):
    return pd.DataFrame(index=ids)


def _ens(symbol: str) -> str:
    h = catalogue.human_genes()
    return h.loc[h["symbol"] == symbol, "ensembl_id"].iloc[0]


def test_detect_and_strip():
    assert strip_version(["ENSG00000169429.11", "ACTB", "ENSMUSG00000028859.3"]) == [
        "ENSG00000169429",
        "ACTB",
        "ENSMUSG00000028859",
    ]
    assert detect_id_type(["ENSG00000169429", "ENSG00000075624", "ACTB"]) == "ensembl"
    assert detect_id_type(["ENSG00000169429", "ACTB", "GAPDH"]) == "symbol"


def test_human_ensembl_to_symbol_with_versions():
    ids = [_ens("CXCL8") + ".11", _ens("ACTB") + ".2", "ENSG99999999999"]
    m = harmonize_genes(_var(ids), dataset_id="e")
    assert m.genes == ["CXCL8", "ACTB"]  # order of first appearance
    r = m.report
    assert (r["id_type"], r["n_in"], r["mapped"], r["dropped_no_symbol"], r["n_out"]) == (
        "ensembl",
        3,
        2,
        1,
        2,
    )
    X = sp.csr_matrix(np.array([[1, 2, 5], [0, 3, 7]], dtype=np.float32))
    np.testing.assert_array_equal(m.apply(X).toarray(), [[1, 2], [0, 3]])


def test_previous_symbol_renamed_and_duplicates_summed():
    m = harmonize_genes(_var(["IL8", "CXCL8", "ACTB", "MYFAVGENE1"]), dataset_id="h")
    assert m.genes == ["CXCL8", "ACTB", "MYFAVGENE1"]
    r = m.report
    assert (r["renamed"], r["unrecognised"], r["summed_duplicates"]) == (1, 1, 1)
    assert "IL8->CXCL8" in r["examples"] and "MYFAVGENE1" in r["examples"]
    X = sp.csr_matrix(np.array([[1, 2, 3, 0], [4, 0, 0, 9]], dtype=np.float32))
    np.testing.assert_array_equal(m.apply(X).toarray(), [[3, 3, 0], [4, 0, 9]])


def test_mouse_symbols_and_ensembl_to_human():
    orth = catalogue.one_to_one_orthologues()
    csf3r = orth.loc[orth["mouse_symbol"] == "Csf3r", "mouse_ensembl_id"].iloc[0]
    m = harmonize_genes(_var(["S100a8", "mt-Co1", "Actb", "Fakegene9"]), dataset_id="mo", species="mouse")
    assert m.genes == ["S100A8", "MT-CO1", "ACTB"]
    assert m.report["dropped_no_orthologue"] == 1 and "Fakegene9" in m.report["examples"]
    m2 = harmonize_genes(_var([csf3r + ".4", "ENSMUSG99999999999"]), dataset_id="me", species="mouse")
    assert m2.genes == ["CSF3R"] and m2.report["dropped_no_symbol"] == 1


def test_gene_column_used():
    var = pd.DataFrame({"symbol": ["ACTB", "IL8"]}, index=["g1", "g2"])
    assert harmonize_genes(var, dataset_id="g", gene_column="symbol").genes == ["ACTB", "CXCL8"]
    with pytest.raises(InputDataError, match=r"'g'.*gene_column 'sym'.*\['symbol'\]"):
        harmonize_genes(var, dataset_id="g", gene_column="sym")


def test_duplicate_input_ids_error_unless_sum():
    var = _var(["ACTB", "GAPDH", "ACTB"])
    with pytest.raises(InputDataError, match=r"'dup'.*in\.h5ad.*\['ACTB'\].*duplicate_genes: sum"):
        harmonize_genes(var, dataset_id="dup", source="in.h5ad")
    m = harmonize_genes(var, dataset_id="dup", duplicate_genes="sum")
    X = sp.csr_matrix(np.array([[1, 2, 10]], dtype=np.float32))
    np.testing.assert_array_equal(m.apply(X).toarray(), [[11, 2]])


def test_wrong_species_ensembl_ids():
    with pytest.raises(InputDataError, match=r"'w'.*mouse Ensembl ids.*species: mouse"):
        harmonize_genes(_var(["ENSMUSG00000028859", "ENSMUSG00000064351"]), dataset_id="w")


def test_common_axis_outer_inner_and_disjoint():
    a = harmonize_genes(_var(["ACTB", "GAPDH"]), dataset_id="a")
    b = harmonize_genes(_var(["GAPDH", "CD14"]), dataset_id="b")
    genes, measured = common_gene_axis([a, b], "outer")
    assert genes == ["ACTB", "GAPDH", "CD14"]
    assert measured.sum(axis=1).tolist() == [1, 2, 1]
    assert common_gene_axis([a, b], "inner")[0] == ["GAPDH"]
    c = harmonize_genes(_var(["CD3E", "CD8A"]), dataset_id="odd")
    with pytest.raises(InputDataError, match=r"data set 'odd' has no genes in common"):
        common_gene_axis([a, b, c], "outer")


def test_apply_equals_matrix_product_and_is_canonical():
    rng = np.random.default_rng(0)
    ids = ["IL8", "ACTB", "CXCL8", "ENSGFAKE", "GAPDH", "CD14", "IL8X", "S100A8"]
    m = harmonize_genes(_var(ids), dataset_id="r", gene_ids="symbol").onto(
        ["S100A8", "GAPDH", "CXCL8", "CD14"]
    )
    assert m.colmap.tolist() == [2, -1, 2, -1, 1, 3, -1, 0]
    X = sp.random(50, len(ids), density=0.5, format="csr", random_state=rng, dtype=np.float32)
    X.data = np.ceil(X.data * 10)
    before = X.toarray().copy()
    Y = m.apply(X)
    np.testing.assert_array_equal(Y.toarray(), (X @ m.matrix).toarray())
    assert Y.has_canonical_format and Y.dtype == np.float32
    np.testing.assert_array_equal(X.toarray(), before)  # input untouched


def test_symbol_ids_on_10x_features_use_names():
    var = pd.DataFrame({"gene_symbols": ["IL8", "ACTB"]}, index=[_ens("CXCL8"), _ens("ACTB")])
    assert harmonize_genes(var, dataset_id="x", gene_ids="symbol").genes == ["CXCL8", "ACTB"]
    assert harmonize_genes(var, dataset_id="x").report["id_type"] == "ensembl"
    with pytest.raises(InputDataError, match=r"'x'.*gene_ids: symbol.*Ensembl ids.*gene_ids: ensembl"):
        harmonize_genes(var.drop(columns="gene_symbols"), dataset_id="x", gene_ids="symbol")


def _real(species: str, n: int, start: int = 2000) -> list[str]:
    table = catalogue.human_genes() if species == "human" else catalogue.mouse_genes()
    return list(table["symbol"].drop_duplicates().iloc[start : start + n])


def test_unrecognised_gene_names_refused_with_share_examples_and_fix():
    var = pd.DataFrame({"name": _real("human", 3000)}, index=[f"feature_{i}" for i in range(3000)])
    with pytest.raises(InputDataError) as err:
        harmonize_genes(var, dataset_id="u", source="u.h5ad")
    msg = str(err.value)
    for part in ("'u'", "only 0% of its 3000 gene ids (u.h5ad)", "feature_0", "below the 20%", "gene_column",
                 "['name']", "gene_ids", "species: human"):
        assert part in msg
    assert len(harmonize_genes(var, dataset_id="u", gene_column="name").genes) == 3000  # the fix works


def test_partly_recognised_gene_names_warn(caplog):
    ids = _real("human", 600) + [f"feature_{i}" for i in range(400)]  # 60% known: quiet
    with caplog.at_level(logging.WARNING, logger="atlas.ingest.genes"):
        harmonize_genes(_var(ids), dataset_id="ok")
    assert not caplog.records
    ids = _real("human", 300) + [f"feature_{i}" for i in range(700)]  # 30% known: warning, still kept
    with caplog.at_level(logging.WARNING, logger="atlas.ingest.genes"):
        m = harmonize_genes(_var(ids), dataset_id="w")
    assert len(m.genes) == 1000
    assert "only 30% of its 1000 gene ids" in caplog.text and "feature_0" in caplog.text


def test_mouse_symbols_under_species_human_name_mouse():
    ids = ["Cd3e", "Lyz2", *_real("mouse", 200)]
    with pytest.raises(InputDataError, match=r"'m'.*are mouse gene symbols \(Cd3e, Lyz2, .*species: mouse"):
        harmonize_genes(_var(ids), dataset_id="m")
    assert len(harmonize_genes(_var(ids), dataset_id="m", species="mouse").genes) > 50


def test_human_symbols_under_species_mouse_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="atlas.ingest.genes"):
        m = harmonize_genes(_var(["CD3E", "LYZ", *_real("human", 200)]), dataset_id="h", species="mouse")
    assert "are human gene symbols (CD3E, LYZ" in caplog.text and "species: human" in caplog.text
    assert "CD3E" in m.genes  # mapped case-insensitively, as before


def test_recognised_share():
    assert recognised_share(["ACTB", "IL8", "nope", "ENSG00000075624"], "human", "symbol") == 0.5
    assert recognised_share([_ens("ACTB") + ".3", "ENSG99999999999"], "human") == 0.5
    assert recognised_share(["Actb", "Cd3e"], "human") == 0.0
