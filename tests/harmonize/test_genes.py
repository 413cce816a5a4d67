"""Gene harmonisation onto current human symbols."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atlas.errors import InputDataError
from atlas.harmonize import reference
from atlas.harmonize.genes import common_gene_axis, detect_id_type, harmonize_genes, strip_version


def _var(ids):
    return pd.DataFrame(index=ids)


def _ens(symbol: str) -> str:
    h = reference.human_genes()
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
    orth = reference.one_to_one_orthologues()
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
    c = harmonize_genes(_var(["ZZZ1", "ZZZ2"]), dataset_id="odd")
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
