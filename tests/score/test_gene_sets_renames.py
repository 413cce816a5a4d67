"""User gene lists match data aligned to older or newer HGNC symbols (SEPT9 / SEPTIN9, IL8 / CXCL8)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

import atlas.score as atlas_score
from atlas.score.gene_sets import match_genes, resolve_gene_sets


def _match(genes: list[str], var_names: list[str]) -> tuple[list[str], dict]:
    rs = resolve_gene_sets({"s": genes})[0]
    cols, report = match_genes(rs, pd.Index(var_names))
    return [var_names[i] for i in cols], report


@pytest.mark.parametrize(
    ("given", "data", "matched_as"),
    [
        (["IL8", "ACTB"], ["ACTB", "IL8", "GAPDH"], {}),  # data on the old symbol, list too: as given
        (["IL8", "ACTB"], ["ACTB", "CXCL8", "GAPDH"], {"IL8": "CXCL8"}),  # list old, data new
        (["CXCL8", "ACTB"], ["ACTB", "IL8", "GAPDH"], {"CXCL8": "IL8"}),  # list new, data old
        (["SEPT9", "ACTB"], ["SEPT9", "SEPTIN9", "ACTB"], {}),  # both present: the name given wins
        (["SEPTIN9", "ACTB"], ["SEPT9", "SEPTIN9", "ACTB"], {}),
    ],
)
def test_match_as_given_first_then_renames_both_ways(given, data, matched_as):
    found, report = _match(given, data)
    expect = [matched_as.get(g, g) for g in given]
    assert sorted(found) == sorted(expect)
    assert report["matched_as"] == matched_as and report["absent"] == []


def test_rename_lookup_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="atlas.score.gene_sets"):
        _match(["SEPTIN9", "ACTB"], ["SEPT9", "ACTB"])
    assert "found in the data under another HGNC symbol: SEPTIN9 as SEPT9" in caplog.text


def test_scanpy_method_equals_score_genes_on_old_symbols():
    """Hand-made data on an older annotation: the set's genes (old or new names) score as in scanpy."""
    sc = pytest.importorskip("scanpy")
    import anndata as ad

    rng = np.random.default_rng(3)
    X = rng.poisson(rng.lognormal(0, 1, 120), (300, 120)).astype(np.float32)
    names = ["SEPT9", "IL8", "SEPT7", "H1FX"] + [f"G{i}" for i in range(116)]
    a = ad.AnnData(X, var=pd.DataFrame(index=names))
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    data_names = ["SEPT9", "IL8", "SEPT7", "H1FX", "G5", "G9"]
    for genes in (data_names, ["SEPTIN9", "CXCL8", "SEPTIN7", "H1-10", "G5", "G9"]):
        ours = atlas_score.score_signatures(a, {"hN1": genes}, method="scanpy", backend="cpu")
        assert ours.attrs["report"]["signatures"]["hN1"]["n_present"] == 6
        ref = a.copy()
        sc.tl.score_genes(ref, data_names, score_name="ref", random_state=0)
        np.testing.assert_allclose(ours["hN1"].to_numpy(), ref.obs["ref"].to_numpy(), atol=1e-5)


def test_pbmc68k_reduced_bundled_set_keeps_sept9():
    """scanpy's bundled PBMC set (offline) has SEPT9 and SEPT7; a list naming them scores as scanpy does."""
    sc = pytest.importorskip("scanpy")
    try:
        a = sc.datasets.pbmc68k_reduced()
    except Exception as err:  # pragma: no cover - only if a scanpy release stops shipping the file
        pytest.skip(f"pbmc68k_reduced not available offline: {err}")
    genes = ["SEPT9", "SEPT7", "LYZ", "S100A8", "FCN1", "CST3"]
    ours = atlas_score.score_signatures(a, {"hN1": genes}, method="scanpy", backend="cpu")
    rep = ours.attrs["report"]["signatures"]["hN1"]
    assert rep["n_present"] == 6 and rep["absent"] == []
    ref = a.copy()
    sc.tl.score_genes(ref, genes, score_name="ref", random_state=0)
    np.testing.assert_allclose(ours["hN1"].to_numpy(), ref.obs["ref"].to_numpy(), atol=1e-5)
    renamed = atlas_score.score_signatures(a, {"hN1": ["SEPTIN9", "SEPTIN7", "LYZ", "S100A8", "FCN1", "CST3"]},
                                  method="scanpy", backend="cpu")
    np.testing.assert_allclose(renamed["hN1"].to_numpy(), ref.obs["ref"].to_numpy(), atol=1e-5)
