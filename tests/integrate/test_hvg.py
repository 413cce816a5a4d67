import logging

import numpy as np
import pytest
import scipy.sparse as sp

from atlas.integrate import MissingKeyError, NotCountsError, TooSmallError, gene_groups, select_hvgs


def test_gene_groups_match_the_documented_families():
    genes = [
        "MT-CO1",
        "MTRNR2L1",
        "RPL10A",
        "RPS27L",
        "RPLP0",
        "RPSA",
        "RPS6KA1",
        "RPS6KB2",
        "MRPL3",
        "HSPA1A",
        "HSPB1",
        "HSPH1",
        "HSP90AA1",
        "DNAJB1",
        "FOS",
        "JUNB",
        "IER2",
        "CD3E",
    ]
    got = dict(zip(genes, gene_groups(genes, ["mito", "ribo", "heat_shock", "dissociation"]), strict=True))
    assert got["MT-CO1"] == "mito" and got["MTRNR2L1"] == ""
    assert {got[g] for g in ("RPL10A", "RPS27L", "RPLP0", "RPSA")} == {"ribo"}
    assert got["RPS6KA1"] == got["RPS6KB2"] == got["MRPL3"] == ""  # kinases, mitoribosome: kept
    assert {got[g] for g in ("HSPA1A", "HSPB1", "HSPH1", "HSP90AA1", "DNAJB1")} == {"heat_shock"}
    assert got["FOS"] == got["JUNB"] == got["IER2"] == "dissociation" and got["CD3E"] == ""
    with pytest.raises(ValueError, match="unknown gene group"):
        gene_groups(genes, ["histones"])


def test_select_hvgs_is_scanpy_seurat_v3_after_exclusions(toy):
    import scanpy as sc

    hvgs = select_hvgs(
        toy, n_top_genes=100, batch_key="dataset_id", exclude_groups=["mito", "ribo", "heat_shock"]
    )
    assert len(hvgs) == 100 and hvgs == [g for g in toy.var_names if g in set(hvgs)]  # var (model) order
    excluded = toy.var_names[toy.var["hvg_excluded"].astype(str) != ""]
    assert {"MT-CO1", "RPL3", "HSPA1A"} <= set(excluded) and not set(excluded) & set(hvgs)
    assert toy.var["highly_variable"].sum() == 100 and "highly_variable_nbatches" in toy.var
    # oracle: scanpy on the matrix without the excluded genes chooses the same genes
    ref = toy[:, toy.var["hvg_excluded"].astype(str) == ""].copy()
    sc.pp.highly_variable_genes(ref, flavor="seurat_v3", n_top_genes=100, batch_key="dataset_id")
    assert set(ref.var_names[ref.var["highly_variable"]]) == set(hvgs)


def test_too_few_genes_reduces_with_a_warning(toy, caplog):
    with caplog.at_level(logging.WARNING, logger="atlas.integrate.hvg"):
        hvgs = select_hvgs(toy, n_top_genes=5000, batch_key=None)
    assert len(hvgs) == toy.n_vars - int((toy.var["hvg_excluded"].astype(str) != "").sum())
    assert "n_hvgs=5000 but only" in caplog.text


def test_bad_inputs_are_refused_with_clear_errors(toy):
    with pytest.raises(MissingKeyError, match="hvg_batch_key='study'"):
        select_hvgs(toy, batch_key="study")
    lognorm = toy.copy()
    lognorm.X = sp.csr_matrix(np.log1p(lognorm.X.toarray()))
    with pytest.raises(NotCountsError, match="does not hold raw counts"):
        select_hvgs(lognorm)
    with pytest.raises(TooSmallError, match="genes are left"):
        select_hvgs(toy[:, :12].copy(), exclude_groups=["mito", "ribo", "heat_shock", "dissociation"])


@pytest.mark.gpu
def test_gpu_hvgs_equal_cpu_hvgs(toy):
    pytest.importorskip("rapids_singlecell")
    cpu = select_hvgs(toy.copy(), n_top_genes=100, batch_key="dataset_id", backend="cpu")
    gpu = select_hvgs(toy.copy(), n_top_genes=100, batch_key="dataset_id", backend="gpu")
    assert cpu == gpu
