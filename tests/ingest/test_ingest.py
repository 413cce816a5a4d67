"""End-to-end ingest: three small data sets of different formats and species into one store."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import atlas.score as atlas_score
from atlas.catalogue import genes as catalogue
from atlas.core.errors import AtlasError, ConfigError, InputDataError, RunDirError
from atlas.ingest import readers
from atlas.ingest.settings import SCHEMA_FIELDS, IngestConfig, load_ingest_config
from atlas.ingest.stage import ingest, side_table_path

H5AD_GENES = ["CSF3R", "S100A8", "ACTB", "GAPDH", "MT-CO1", "IL8", "CXCL8", "MYGENE1"]
TENX_SYMBOLS = ["CSF3R", "FCGR3B", "ACTB", "GAPDH", "CD14"]
MOUSE_GENES = ["Csf3r", "S100a8", "Actb", "Rpl3", "Fakegene9"]
MOUSE_TO_HUMAN = {"Csf3r": "CSF3R", "S100a8": "S100A8", "Actb": "ACTB", "Rpl3": "RPL3"}
THRESHOLDS = {
    "mode": "fixed",
    "min_counts": 1,
    "min_genes": 1,
    "neutrophil_min_counts": 1,
    "neutrophil_min_genes": 1,
    "max_pct_mito": None,
}


def _ensembl(symbol: str) -> str:
    h = catalogue.human_genes()
    return h.loc[h["symbol"] == symbol, "ensembl_id"].iloc[0]


def _expected(X, names, genes) -> pd.DataFrame:
    """Counts summed by target symbol (None = dropped) and put on the store's genes."""
    df = pd.DataFrame(sp.csr_matrix(X).toarray(), columns=names)
    df = df.loc[:, [n is not None for n in names]]
    return df.T.groupby(level=0).sum().T.reindex(columns=genes, fill_value=0)


@pytest.fixture
def three(tmp_path, files):
    """h5ad (human symbols, layers/counts), 10x h5 (human Ensembl), mtx (mouse symbols)."""
    inp = tmp_path / "inputs"
    inp.mkdir()
    n1, n2, n3 = 30, 25, 20
    X1 = files.counts(n1, len(H5AD_GENES), seed=1)
    X1 = sp.csr_matrix(
        sp.diags(np.r_[np.ones(n1 - 1), 0].astype(np.float32)) @ X1
    )  # last cell empty -> removed
    X1.eliminate_zeros()
    obs1 = pd.DataFrame(
        {
            "Sample": ["s1"] * 15 + ["s2"] * 15,
            "patient_id": ["p1"] * 15 + ["p2"] * 15,
            "Tissue": ["Tumor", "T", "NAT", "Normal", "PBMC"] * 6,
            "truth_state": np.arange(n1) % 3,
            "truth_label": ["a", "b"] * 15,
            "junk": 1,
        },
        index=[f"BC{i}" for i in range(n1)],
    )
    files.write_h5ad(inp / "one.h5ad", X1, obs=obs1, genes=H5AD_GENES, where="layers/counts")
    X2 = files.counts(n2, len(TENX_SYMBOLS) + 1, seed=2)
    ids = [_ensembl(s) + ".5" for s in TENX_SYMBOLS] + ["ENSG99999999999"]
    bc2 = [f"BC{i}" for i in range(n2)]  # same barcodes as data set one: names must still be unique
    files.write_10x_h5(inp / "two.h5", X2, barcodes=bc2, ids=ids, names=[*TENX_SYMBOLS, "NOPE"])
    pd.DataFrame(
        {"sample_id": "t1", "patient_id": "p9", "tissue": "tumour", "truth_state": 1},
        index=pd.Index(bc2, name="barcode"),
    ).to_csv(inp / "two_obs.csv")
    X3 = files.counts(n3, len(MOUSE_GENES), seed=3)
    files.write_mtx_dir(
        inp / "three", X3, barcodes=[f"M{i}" for i in range(n3)], ids=MOUSE_GENES, names=MOUSE_GENES
    )
    cfg = {
        "datasets": [
            {
                "id": "one",
                "path": str(inp / "one.h5ad"),
                "counts": "layers/counts",
                "obs_columns": {"sample_id": "Sample", "tissue": "Tissue"},
                "constants": {"cancer_type": "LUAD", "platform": "10x"},
            },
            {
                "id": "two",
                "path": str(inp / "two.h5"),
                "obs_path": str(inp / "two_obs.csv"),
                "constants": {"cancer_type": "CRC", "platform": "10x"},
            },
            {
                "id": "three",
                "path": str(inp / "three"),
                "species": "mouse",
                "constants": {
                    "sample_id": "m1",
                    "patient_id": "mouse1",
                    "cancer_type": "PDAC",
                    "tissue": "tumour",
                    "platform": "10x",
                },
            },
        ],
        "qc": {"thresholds": THRESHOLDS},
        "chunk_size": 100,
    }
    # store genes in order of first appearance: data set one, then new genes of two, then three
    genes = ["CSF3R", "S100A8", "ACTB", "GAPDH", "MT-CO1", "CXCL8", "MYGENE1", "FCGR3B", "CD14", "RPL3"]
    expected = pd.concat(
        [
            _expected(X1, [*H5AD_GENES[:5], "CXCL8", "CXCL8", "MYGENE1"], genes).iloc[: n1 - 1],
            _expected(X2, [*TENX_SYMBOLS, None], genes),
            _expected(X3, [MOUSE_TO_HUMAN.get(g) for g in MOUSE_GENES], genes),
        ]
    )
    names = (
        [f"one:BC{i}" for i in range(n1 - 1)]
        + [f"two:BC{i}" for i in range(n2)]
        + [f"three:M{i}" for i in range(n3)]
    )
    return {"inputs": inp, "cfg": cfg, "genes": genes, "expected": expected.to_numpy(), "names": names}


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_ingest_three_formats(tmp_path, files, three, suffix):
    before = files.file_hashes(three["inputs"])
    out = tmp_path / "out" / f"atlas{suffix}"
    res = ingest(IngestConfig(**three["cfg"]), out)
    assert files.file_hashes(three["inputs"]) == before
    a = ad.read_h5ad(out) if suffix == ".h5ad" else ad.read_zarr(out)
    assert isinstance(a.X, sp.csr_matrix) and a.X.dtype == np.float32
    assert list(a.var_names) == three["genes"]
    np.testing.assert_array_equal(a.X.toarray(), three["expected"])
    assert list(a.obs_names) == three["names"] and a.obs_names.is_unique
    for f in SCHEMA_FIELDS:
        assert isinstance(a.obs[f].dtype, pd.CategoricalDtype), f
    assert a.obs["tissue"].iloc[:5].tolist() == [
        "tumour",
        "tumour",
        "adjacent_normal",
        "adjacent_normal",
        "blood",
    ]
    assert a.obs.loc["three:M0", "species"] == "mouse" and a.obs.loc["two:BC0", "sample_id"] == "t1"
    assert "junk" not in a.obs and {"truth_state", "truth_label"} <= set(a.obs.columns)
    assert a.obs.loc["two:BC3", "truth_state"] == 1 and pd.isna(a.obs.loc["three:M0", "truth_state"])
    assert {"total_counts", "n_genes", "pct_mito", "pct_ribo", "neutrophil_evidence", "qc_floor"} <= set(
        a.obs
    )
    np.testing.assert_allclose(a.obs["total_counts"], three["expected"].sum(axis=1))
    assert a.var.loc["ACTB", "n_datasets"] == 3 and a.var.loc["CXCL8", "n_datasets"] == 1
    assert a.varm["measured"].loc["RPL3"].tolist() == [False, False, True]
    prov = a.uns["atlas"]
    assert (
        list(prov["datasets"]) == ["one", "two", "three"] and prov["qc"].loc["one", "removed_low_counts"] == 1
    )
    assert (
        prov["gene_report"].loc["one", "renamed"] == 1
        and prov["config"]["datasets"]["three"]["species"] == "mouse"
    )
    assert (res.n_cells, res.n_genes) == a.shape
    assert res.qc.loc["one", "cells_out"] == 29 and res.qc.loc["two", "cells_in"] == 25
    assert (
        res.genes.loc["three", "dropped_no_orthologue"] == 1
        and res.genes.loc["two", "dropped_no_symbol"] == 1
    )
    qc_csv = pd.read_csv(side_table_path(out, "qc"), index_col=0)
    assert qc_csv.loc["one", "removed_low_counts"] == 1
    assert side_table_path(out, "genes").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".atlas-tmp")]


def test_inner_join_and_chunking(tmp_path, three):
    # chunk_size below the config minimum, to cross chunk boundaries in every data set
    cfg = IngestConfig(**{**three["cfg"], "join": "inner"}).model_copy(update={"chunk_size": 7})
    ingest(cfg, tmp_path / "a.h5ad")
    a = ad.read_h5ad(tmp_path / "a.h5ad")
    common = ["CSF3R", "ACTB"]
    assert list(a.var_names) == common
    keep = [three["genes"].index(g) for g in common]
    np.testing.assert_array_equal(a.X.toarray(), three["expected"][:, keep])
    assert (a.obs["total_counts"] >= a.X.sum(axis=1).A1).all()  # QC metrics use each data set's own genes


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_ingest_writes_gene_stats_that_scoring_uses(tmp_path, three, suffix, monkeypatch):
    """The sidecar equals a fresh gene-sum pass bit for bit, and score_store then reads the store once."""
    from atlas.ingest.genestats import GeneStatsCache, sidecar_path, sparse_sum_dtype
    from atlas.score import matrix
    from atlas.score.exec_cpu import run_fold
    from atlas.score.sources import as_source

    out = tmp_path / f"atlas{suffix}"
    cfg = IngestConfig(**three["cfg"]).model_copy(update={"chunk_size": 7})  # many appends
    ingest(cfg, out)
    assert sidecar_path(out).is_file()
    cached = GeneStatsCache(out).load()
    assert cached is not None and cached.n_cells == len(three["names"])
    sets = {"A": ["CSF3R", "ACTB", "CD14"], "B": ["GAPDH", "FCGR3B"]}
    kw = {"method": "scanpy", "backend": "cpu", "n_bins": 3, "ctrl_size": 2}
    fresh = atlas_score.score_store(out, sets, gene_stats_cache=False, **kw)

    def boom(*a, **k):
        raise AssertionError("a gene-sum pass ran although ingest cached the sums")

    monkeypatch.setattr(matrix, "src_fold", boom)
    warm = atlas_score.score_store(out, sets, **kw)
    np.testing.assert_array_equal(warm.to_numpy(), fresh.to_numpy())
    np.testing.assert_array_equal(cached.nnz, (three["expected"] > 0).sum(axis=0))
    a = ad.read_h5ad(out) if suffix == ".h5ad" else ad.read_zarr(out)
    sums, _ = run_fold(as_source(a.X), chunk_size=50, mode=1, target=1e4, dtype=sparse_sum_dtype())
    np.testing.assert_array_equal(cached.sums, sums)


def test_doublets_and_disabled_qc(tmp_path, files):
    pytest.importorskip("skimage")
    genes = list(catalogue.human_genes()["symbol"].drop_duplicates().iloc[1000:1300])
    X = files.counts(150, len(genes), seed=5, lam=0.8)
    obs = pd.DataFrame({"sample_id": ["big"] * 120 + ["tiny"] * 30}, index=[f"c{i}" for i in range(150)])
    files.write_h5ad(tmp_path / "d.h5ad", X, obs=obs, genes=genes)
    cfg = {
        "datasets": [
            {
                "id": "d",
                "path": str(tmp_path / "d.h5ad"),
                "constants": {"patient_id": "p", "cancer_type": "c", "tissue": "tumour", "platform": "x"},
            }
        ],
        # random counts have no doublet structure: scrublet's threshold calls most of "big" doublets, which
        # qc.doublet_max_share would refuse (below); here every call is taken, to check what removal does
        "qc": {"doublets": True, "doublet_min_cells": 100, "doublet_max_share": 1.0, "thresholds": THRESHOLDS},
        "chunk_size": 100,
    }
    res = ingest(IngestConfig(**cfg), tmp_path / "o.h5ad")
    a = ad.read_h5ad(tmp_path / "o.h5ad")
    n_doublets = res.qc.loc["d", "removed_doublets"]
    assert n_doublets > 0.25 * 120 and res.qc.loc["d", "doublet_samples_not_trusted"] == 0
    assert a.n_obs == 150 - n_doublets and not a.obs["predicted_doublet"].any()
    assert a.obs.loc[a.obs["sample_id"] == "tiny", "doublet_score"].isna().all()
    kept = [int(n.split(":c")[1]) for n in a.obs_names]
    expected = pd.DataFrame(X.toarray(), columns=genes).iloc[kept][list(a.var_names)]
    np.testing.assert_array_equal(a.X.toarray(), expected.to_numpy())
    cfg["qc"]["doublet_max_share"] = 0.25  # the default: that sample's calls are not trusted, its cells stay
    res = ingest(IngestConfig(**cfg), tmp_path / "o.h5ad", overwrite=True)
    assert res.n_cells == 150 and res.qc.loc["d", ["removed_doublets", "doublet_samples_not_trusted"]].tolist() == [0, 1]
    cfg["qc"]["enabled"] = False
    res = ingest(IngestConfig(**cfg), tmp_path / "o.h5ad", overwrite=True)
    assert res.n_cells == 150 and res.qc.loc["d", "removed_doublets"] == 0
    assert ad.read_h5ad(tmp_path / "o.removed.h5ad").n_obs == 0  # nothing removed, nothing aside


# --------------------------------------------------------------------------------- bad input
def _bad(cfg: dict, out, match: str, exc=InputDataError):
    with pytest.raises(exc, match=match):
        ingest(IngestConfig(**cfg), out)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".atlas-tmp")]


def _one(path, **kw) -> dict:
    ds = {
        "id": "bad1",
        "path": str(path),
        "constants": {
            "sample_id": "s",
            "patient_id": "p",
            "cancer_type": "c",
            "tissue": "tumour",
            "platform": "x",
        },
    }
    ds.update(kw)
    return {"datasets": [ds], "qc": {"thresholds": THRESHOLDS}}


def test_log_normalised_counts_refused(tmp_path, files, three):
    cfg = three["cfg"]
    cfg["datasets"][0]["counts"] = "X"  # X holds log values; counts are in layers/counts
    _bad(cfg, tmp_path / "o.h5ad", r"'one'.*one\.h5ad.*normalised or log-transformed.*counts: layers/counts")


def test_negative_values_refused(tmp_path, files):
    X = files.counts(10, 4).toarray()
    X[3, 2] = -1
    p = files.write_csv(
        tmp_path / "neg.csv",
        X,
        barcodes=[f"c{i}" for i in range(10)],
        genes=["ACTB", "GAPDH", "CD14", "CSF3R"],
    )
    _bad(_one(p), tmp_path / "o.h5ad", r"'bad1'.*neg\.csv.*negative")


def test_nan_refused(tmp_path, files):
    X = files.counts(10, 4).toarray()
    X[1, 1] = np.nan
    p = files.write_h5ad(
        tmp_path / "nan.h5ad",
        X,
        obs=pd.DataFrame(index=[f"c{i}" for i in range(10)]),
        genes=["ACTB", "GAPDH", "CD14", "CSF3R"],
        where="dense",
    )
    _bad(_one(p), tmp_path / "o.h5ad", r"'bad1'.*nan\.h5ad.*1 NaN")


def test_duplicate_cell_names_refused(tmp_path, files):
    p = files.write_csv(
        tmp_path / "dup.csv",
        files.counts(4, 3),
        barcodes=["c1", "c2", "c1", "c3"],
        genes=["ACTB", "GAPDH", "CD14"],
    )
    _bad(_one(p), tmp_path / "o.h5ad", r"'bad1'.*dup\.csv.*\['c1'\]")


def test_duplicate_gene_names_refused(tmp_path, files):
    p = files.write_csv(
        tmp_path / "dupg.csv",
        files.counts(4, 3),
        barcodes=["c1", "c2", "c3", "c4"],
        genes=["ACTB", "GAPDH", "ACTB"],
    )
    _bad(_one(p), tmp_path / "o.h5ad", r"'bad1'.*dupg\.csv.*\['ACTB'\].*duplicate_genes: sum")


def test_missing_schema_field_refused(tmp_path, three):
    cfg = three["cfg"]
    del cfg["datasets"][2]["constants"]["patient_id"]
    _bad(cfg, tmp_path / "o.h5ad", r"'three'.*'patient_id'.*constants")


def test_no_common_genes_refused(tmp_path, files, three):
    p = files.write_csv(
        tmp_path / "odd.csv", files.counts(4, 2), barcodes=["a", "b", "c", "d"], genes=["CD3E", "CD8A"]
    )
    cfg = three["cfg"]
    cfg["datasets"].append(_one(p)["datasets"][0])
    _bad(cfg, tmp_path / "o.h5ad", r"'bad1' has no genes in common")


def test_truncated_file_refused(tmp_path, files, three):
    path = three["inputs"] / "one.h5ad"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _bad(three["cfg"], tmp_path / "o.h5ad", r"'one'.*one\.h5ad.*truncated")


def test_unknown_species_in_config(tmp_path):
    y = tmp_path / "ingest.yaml"
    y.write_text("datasets:\n  - id: fish1\n    path: fish.h5ad\n    species: zebrafish\n")
    with pytest.raises(ConfigError, match=r"(?s)ingest\.yaml.*datasets\[0\]\.species.*'zebrafish'"):
        load_ingest_config(y)


def test_existing_output_refused(tmp_path, three):
    out = tmp_path / "o.h5ad"
    out.write_text("precious")
    with pytest.raises(RunDirError, match=r"o\.h5ad already exists.*--overwrite"):
        ingest(IngestConfig(**three["cfg"]), out)
    assert out.read_text() == "precious"


def test_crash_mid_ingest_leaves_nothing(tmp_path, three, monkeypatch):
    real = readers.Reader.chunks

    def chunks(self, chunk_size):
        if self.ds.id == "two":
            raise RuntimeError("disk on fire")
        yield from real(self, chunk_size)

    monkeypatch.setattr(readers.Reader, "chunks", chunks)
    out = tmp_path / "o.h5ad"
    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest(IngestConfig(**three["cfg"]), out)
    assert list(tmp_path.iterdir()) == [three["inputs"]]


def test_errors_are_atlas_errors():
    assert issubclass(InputDataError, AtlasError) and issubclass(RunDirError, AtlasError)


# ------------------------------------------------------------------------------- mad-mode QC
def _mad_dataset(tmp_path, files, n=240):
    """Normal cells (~2,500 UMIs), 4 low-UMI neutrophil-like cells, 1 empty-ish barcode, 1 high-mito cell."""
    rng = np.random.default_rng(7)
    genes = ["MT-CO1", "CSF3R", "FCGR3B", "CXCR2", "S100A8"]
    genes += list(catalogue.human_genes()["symbol"].drop_duplicates().iloc[2000:2400])
    p = rng.gamma(0.5, size=len(genes))
    p[:5] = [0.03 * p.sum(), 0, 0, 0, 0]  # ~3 % mito, no markers in normal cells
    p /= p.sum()
    lib = np.exp(rng.normal(np.log(2500), 0.3, n)).astype(int)
    X = np.vstack([rng.multinomial(k, p) for k in lib])
    neut_p = p.copy()
    neut_p[1:5] = 0.1  # markers carry 40 % of a neutrophil's UMIs
    neut_p /= neut_p.sum()
    extra = [rng.multinomial(k, neut_p) for k in (250, 280, 300, 320)]
    extra.append(rng.multinomial(30, p))  # under the 50-UMI floor
    mito_p = p.copy()
    mito_p[0] = 0.5
    extra.append(rng.multinomial(2500, mito_p / mito_p.sum()))  # 33 % mito
    X = sp.csr_matrix(np.vstack([X, *extra]).astype(np.float32))
    names = [f"c{i}" for i in range(X.shape[0])]
    obs = pd.DataFrame({"sample_id": ["s1", "s2"] * (X.shape[0] // 2)}, index=names)
    path = files.write_h5ad(tmp_path / "mad.h5ad", X, obs=obs, genes=genes)
    cfg = _one(path)
    cfg["qc"] = {}  # the defaults: mad mode
    return cfg, n


@pytest.mark.parametrize("doublets", [False, True])
def test_mad_qc_flags_low_rna_and_removes_outliers(tmp_path, files, doublets):
    if doublets:
        pytest.importorskip("skimage")
    cfg, n = _mad_dataset(tmp_path, files)
    cfg["qc"] = {"doublets": doublets, "doublet_min_cells": 100}
    res = ingest(IngestConfig(**cfg), tmp_path / "o.h5ad")
    a = ad.read_h5ad(tmp_path / "o.h5ad")
    row = res.qc.loc["bad1"]
    assert row["qc_mode"] == "mad" and row["removed_low_counts"] == 1 and row["removed_high_mito"] == 1
    assert f"bad1:c{n + 4}" not in a.obs_names and f"bad1:c{n + 5}" not in a.obs_names
    neut = [f"bad1:c{n + i}" for i in range(4)]
    assert set(neut) <= set(a.obs_names) and a.obs.loc[neut, "qc_low_rna"].all()
    assert a.obs["qc_low_rna"].dtype == bool and row["cells_flagged_low_rna"] == a.obs["qc_low_rna"].sum()
    assert row["cells_flagged_low_rna"] < 10 and row["cells_out"] == a.n_obs
    assert 250 < row["used_low_rna_counts"] < 2500 and row["used_min_counts"] == 50
    assert res.neutrophils.loc["bad1", "evidence_cells_flagged_low_rna"] == 4
    kept = [int(c.split(":c")[1]) for c in a.obs_names]
    src = ad.read_h5ad(tmp_path / "mad.h5ad")
    expected = pd.DataFrame(src.X.toarray(), columns=src.var_names).iloc[kept][list(a.var_names)]
    np.testing.assert_array_equal(a.X.toarray(), expected.to_numpy())
    if doublets:
        assert a.n_obs == n + 4 - row["removed_doublets"] and "doublet_score" in a.obs
    else:
        assert a.n_obs == n + 4
    # the cells removed above the floor are kept aside with their reason and counts; the sub-floor barcode is not
    r = ad.read_h5ad(tmp_path / "o.removed.h5ad")
    assert r.obs.loc[f"bad1:c{n + 5}", "qc_reason"] == "high_mito" and f"bad1:c{n + 4}" not in r.obs_names
    assert (r.obs["qc_reason"] == "doublets").sum() == row["removed_doublets"] and r.n_obs == 1 + row["removed_doublets"]
    assert r.obs["dataset_id"].eq("bad1").all() and list(r.var_names) == list(a.var_names)
    gone = [int(c.split(":c")[1]) for c in r.obs_names]
    np.testing.assert_array_equal(r.X.toarray(), pd.DataFrame(src.X.toarray(), columns=src.var_names).iloc[gone][
        list(a.var_names)].to_numpy())  # fmt: skip


def test_fixed_qc_keeps_removed_cells_above_the_floor(tmp_path, files):
    cfg, n = _mad_dataset(tmp_path, files)
    cfg["qc"] = {"thresholds": {"mode": "fixed", "min_counts": 2400}}
    res = ingest(IngestConfig(**cfg), tmp_path / "o.h5ad")
    r = ad.read_h5ad(tmp_path / "o.removed.h5ad")
    row = res.qc.loc["bad1"]
    assert r.n_obs == row["removed_low_counts"] + row["removed_high_mito"] - 1  # all but the 30-UMI barcode
    assert r.obs.loc[f"bad1:c{n + 5}", "qc_reason"] == "high_mito" and f"bad1:c{n + 4}" not in r.obs_names
    assert set(r.obs["qc_reason"]) == {"low_counts", "high_mito"} and (r.obs["total_counts"] < 2400).sum() == r.n_obs - 1


def test_dataset_without_cells_refused(tmp_path, files, three):
    p = files.write_h5ad(
        tmp_path / "empty.h5ad", sp.csr_matrix((0, 3)), obs=pd.DataFrame(index=[]), genes=["ACTB", "GAPDH", "CD14"]
    )
    cfg = three["cfg"]
    cfg["datasets"].append(_one(p)["datasets"][0])
    _bad(cfg, tmp_path / "o.h5ad", r"data set bad1 \(.*empty\.h5ad\) has no cells; remove it from the config")


def test_dataset_whose_cells_all_fail_qc_refused(tmp_path, files, three):
    p = files.write_csv(
        tmp_path / "tiny.csv", files.counts(12, 4), barcodes=[f"c{i}" for i in range(12)],
        genes=["ACTB", "GAPDH", "CD14", "CSF3R"],
    )
    cfg = three["cfg"]
    cfg["datasets"].append(_one(p)["datasets"][0])
    cfg["qc"] = {"per_dataset": {"one": THRESHOLDS, "two": THRESHOLDS, "three": THRESHOLDS}}
    _bad(
        cfg, tmp_path / "o.h5ad",
        r"(?s)QC removed every cell of data set bad1 \(.*tiny\.csv\): 12 cells read.*low_counts 12.*"
        r"min UMIs 50.*qc\.per_dataset.*qc\.enabled: false",
    )


def test_cli_reports_qc_removing_every_cell_as_one_paragraph(tmp_path, files):
    import subprocess
    import sys

    import yaml

    p = files.write_csv(
        tmp_path / "tiny.csv", files.counts(12, 4), barcodes=[f"c{i}" for i in range(12)],
        genes=["ACTB", "GAPDH", "CD14", "CSF3R"],
    )
    (tmp_path / "ingest.yaml").write_text(yaml.safe_dump(_one(p) | {"qc": {}}))
    out = tmp_path / "o.h5ad"
    res = subprocess.run(
        [sys.executable, "-m", "atlas.cli", "ingest", str(tmp_path / "ingest.yaml"), "--out", str(out)],
        capture_output=True, text=True,
    )
    assert res.returncode == 2 and "QC removed every cell of data set bad1" in res.stderr
    assert "Traceback" not in res.stderr and not out.exists()


def test_one_cancer_in_several_spellings_is_one_cancer_type_in_the_store(tmp_path, files):
    genes = list(catalogue.human_genes()["symbol"].drop_duplicates().iloc[1000:1200])
    spellings = {"a": "PDAC", "b": "Pancreatic ductal adenocarcinoma", "c": "Glioma", "d": "glioma"}
    datasets = []
    for i, (name, cancer) in enumerate(spellings.items()):
        obs = pd.DataFrame({"disease": cancer}, index=[f"c{j}" for j in range(40)])
        files.write_h5ad(tmp_path / f"{name}.h5ad", files.counts(40, len(genes), seed=i), obs=obs, genes=genes)
        datasets.append({"id": name, "path": str(tmp_path / f"{name}.h5ad"), "obs_columns": {"cancer_type": "disease"},
                         "constants": {"sample_id": name, "patient_id": name, "tissue": "tumour", "platform": "x"}})
    ingest(IngestConfig(datasets=datasets, qc={"enabled": False}), tmp_path / "o.h5ad")
    obs = ad.read_h5ad(tmp_path / "o.h5ad", backed="r").obs
    assert obs.groupby("dataset_id", observed=True)["cancer_type"].first().astype(str).to_dict() == {
        "a": "PDAC", "b": "PDAC", "c": "Glioma", "d": "Glioma"}
    assert sorted(obs["cancer_type"].cat.categories) == ["Glioma", "PDAC"]
    md = pd.read_csv(tmp_path / "o.metadata.csv")  # what became of each given value, and why
    ct = md[md["field"] == "cancer_type"].set_index("dataset_id")
    assert ct[["source", "given", "stored", "rule", "n_cells"]].to_dict("index") == {
        "a": {"source": "column 'disease'", "given": "PDAC", "stored": "PDAC", "rule": "as given", "n_cells": 40},
        "b": {"source": "column 'disease'", "given": "Pancreatic ductal adenocarcinoma", "stored": "PDAC",
              "rule": "atlas label", "n_cells": 40},
        "c": {"source": "column 'disease'", "given": "Glioma", "stored": "Glioma", "rule": "not in atlas's list",
              "n_cells": 40},
        "d": {"source": "column 'disease'", "given": "glioma", "stored": "Glioma",
              "rule": "not in atlas's list, one spelling across data sets", "n_cells": 40}}
    assert set(md.loc[md["field"] == "platform", "rule"]) == {"not in atlas's list"}  # the constant "x"
    assert set(md.loc[md["field"] == "tissue", "rule"]) == {"as given"}


def test_ids_several_data_sets_use_are_each_data_sets_own_unless_declared_shared(tmp_path, files):
    genes = list(catalogue.human_genes()["symbol"].drop_duplicates().iloc[1000:1200])
    datasets = []
    for i, (name, cancer) in enumerate({"a": "HCC", "b": "HCC", "c": "CRC"}.items()):
        obs = pd.DataFrame({"donor": ["donor_1"] * 20 + [f"{name}_only"] * 20,
                            "library": ["donor_1_T"] * 20 + [f"{name}_T"] * 20}, index=[f"c{j}" for j in range(40)])
        files.write_h5ad(tmp_path / f"{name}.h5ad", files.counts(40, len(genes), seed=i), obs=obs, genes=genes)
        datasets.append({"id": name, "path": str(tmp_path / f"{name}.h5ad"),
                         "obs_columns": {"patient_id": "donor", "sample_id": "library"},
                         "constants": {"cancer_type": cancer, "tissue": "tumour", "platform": "10x 3'"}})
    ingest(IngestConfig(datasets=datasets, qc={"enabled": False}), tmp_path / "o.h5ad")
    obs = ad.read_h5ad(tmp_path / "o.h5ad", backed="r").obs
    assert sorted(obs["patient_id"].cat.categories) == ["a:donor_1", "a_only", "b:donor_1", "b_only", "c:donor_1",
                                                        "c_only"]
    assert obs["sample_id"].nunique() == 6 and (obs["sample_id"] == "a:donor_1_T").sum() == 20
    md = pd.read_csv(tmp_path / "o.metadata.csv")
    row = md[(md["field"] == "patient_id") & (md["given"] == "donor_1")].set_index("dataset_id")
    assert row["stored"].to_dict() == {"a": "a:donor_1", "b": "b:donor_1", "c": "c:donor_1"}
    assert set(row["rule"]) == {"used by several data sets: prefixed with the data set"}
    # one patient profiled in several data sets: said so, the patients stay one, their samples still do not
    ingest(IngestConfig(datasets=datasets, qc={"enabled": False}, shared_ids=["patient_id"]), tmp_path / "o.h5ad",
           overwrite=True)
    obs = ad.read_h5ad(tmp_path / "o.h5ad", backed="r").obs
    assert "donor_1" in obs["patient_id"].cat.categories and obs["sample_id"].nunique() == 6
