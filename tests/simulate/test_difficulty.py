"""Difficulty settings of the simulator: defaults change nothing; each knob has its intended effect."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from test_simulate_output import load_counts

from atlas.catalogue.signatures import load_registry
from atlas.core.errors import ConfigError, RunDirError
from atlas.core.settings import settings_hash, validate
from atlas.ingest.settings import load_ingest_config
from atlas.simulate import DIFFICULTY_PRESETS, Difficulty, simulate
from atlas.simulate import biology as bio
from atlas.simulate.design import design_datasets, draw_cells
from atlas.simulate.genes import build_gene_table
from atlas.simulate.sampler import sample_block
from atlas.simulate.settings import SimulateConfig
from atlas.simulate.stage import _model

#: Content digests of simulate(n_cells=1200, n_datasets=7, n_genes=2000, seed=3) computed with the
#: simulator before the difficulty settings existed (h5ad: matrices, obs and var names; other files:
#: bytes). The default difficulty must reproduce them exactly. ingest.yaml is compared without its
#: ``qc`` section, which follows atlas.ingest.settings.QCConfig's defaults.
BEFORE = {"n_cells": 1200, "n_datasets": 7, "n_genes": 2000, "seed": 3}
BEFORE_DIGESTS = {
    "datasets/ds01_PDAC.h5ad": "866c0b75fdc8c2ca",
    "datasets/ds02_HCC.h5ad": "55a6dd70be9781e4",
    "datasets/ds03_NSCLC_metadata.csv": "a8f8329819eeee85",
    "datasets/ds03_NSCLC_mtx/barcodes.tsv.gz": "5fb5c69a91ccef3c",
    "datasets/ds03_NSCLC_mtx/features.tsv.gz": "09b0c7c3bac60e02",
    "datasets/ds03_NSCLC_mtx/matrix.mtx.gz": "e53a9bfca34b7efd",
    "datasets/ds04_CRC.csv.gz": "729425155ec04959",
    "datasets/ds04_CRC_metadata.csv": "c1a61e8e56c6541e",
    "datasets/ds05_BRCA.h5ad": "706eabbb5476ff60",
    "datasets/ds06_melanoma.h5ad": "82e19c05bc7d3262",
    "datasets/ds07_PDAC_mouse_KPC.h5ad": "55a8152715a23af6",
    "truth/cancer_types.csv": "f8e40fb150f7b14b",
    "truth/genes.csv": "7b1e7fc3c7bd0590",
    "truth/patients.csv": "27ad3ac46b63c677",
    "ingest.yaml (without qc)": "e32fa6621d47279d",
}
BEFORE_PARAMETERS = {**BEFORE, "simulator_version": 2}
HARD = {"n_cells": 3000, "n_datasets": 7, "n_genes": 2500, "seed": 3}


def _h5ad_digest(path: Path) -> str:
    a = ad.read_h5ad(path)
    h = hashlib.sha256()
    for m in [a.X] + [a.layers[k] for k in sorted(k for k in a.layers if k is not None)]:  # None: X (anndata 0.13)
        m = sp.csr_matrix(m)
        for arr in (m.indptr.astype(np.int64), m.indices.astype(np.int64), np.asarray(m.data, dtype=np.float64)):
            h.update(arr.tobytes())
    h.update(a.obs.astype(str).to_csv(na_rep="nan").encode())  # pandas 3's astype(str) keeps NaN missing
    h.update("\n".join(a.var_names).encode())
    return h.hexdigest()[:16]


def _digests(out: Path) -> dict[str, str]:
    res = {}
    for p in sorted(out.rglob("*")):
        rel = str(p.relative_to(out))
        if not p.is_file() or rel in ("simulation.json", "truth/difficulty.json"):
            continue
        if p.name == "ingest.yaml":
            data = yaml.safe_load(p.read_text())
            data.pop("qc")
            res["ingest.yaml (without qc)"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        elif p.suffix == ".h5ad":
            res[rel] = _h5ad_digest(p)
        else:
            res[rel] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return res


def _normalised(out: Path) -> ad.AnnData:
    """Human, symbol-named data sets of a simulation, counts per 10k, with truth columns and data set."""
    cfg = load_ingest_config(out / "ingest.yaml")
    platform = {d["id"]: d["platform"] for d in json.loads((out / "simulation.json").read_text())["datasets"]}
    parts = []
    for e in cfg.datasets:
        if e.species == "mouse" or e.gene_ids == "ensembl":
            continue
        a = load_counts(e)
        a.obs = a.obs[[c for c in a.obs.columns if c.startswith("truth_")]].assign(platform=platform[e.id])
        parts.append(a)
    a = ad.concat(parts, join="inner")
    x = sp.csr_matrix(a.X).astype(np.float64)
    a.obs["total"] = np.asarray(x.sum(axis=1)).ravel()
    a.X = sp.diags(1e4 / np.maximum(a.obs["total"].to_numpy(), 1)) @ x
    return a


def _mean(a: ad.AnnData, mask, gene: str) -> float:
    return float(a[np.asarray(mask), gene].X.mean())


@pytest.fixture(scope="module")
def default_small(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("diff") / "default", difficulty="default", **BEFORE)


@pytest.fixture(scope="module")
def ambient_small(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("diff") / "ambient", difficulty={"ambient_fraction": 0.1}, **BEFORE)


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("diff") / "hard", difficulty="hard", **HARD)


@pytest.fixture(scope="module")
def hard_data(hard):
    return _normalised(hard.out_dir)


# ------------------------------------------------------------------------------- defaults, settings
def test_default_difficulty_reproduces_the_earlier_simulator(default_small):
    out = default_small.out_dir
    assert _digests(out) == BEFORE_DIGESTS
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["parameters"] == BEFORE_PARAMETERS  # existing simulations are not regenerated
    truth = json.loads((out / "truth" / "difficulty.json").read_text())
    assert truth["preset"] == "default" and truth["changed"] == {}
    assert truth["neutrophil_median_umis"]["10x_3p"] == 450 and truth["neutrophil_median_umis"]["10x_5p"] == 350


def test_presets_and_resolution():
    assert Difficulty().is_default and Difficulty.preset("default").is_default
    assert set(DIFFICULTY_PRESETS) >= {"default", "weak_markers", "confounded", "hard"}
    h = Difficulty.preset("hard")
    assert (h.marker_strength, h.neutrophil_umi_droplet, h.ambient_fraction, h.t3_proxy_overlap) == (0.5, 300, 0.1, 0.5)
    assert h.obs_style == "foreign" and h.batch_strength == 2 and h.vegfa_macrophages > 0
    assert Difficulty.resolve({"ambient_fraction": 0.05}).changed() == {"ambient_fraction": 0.05}
    assert Difficulty.resolve(None) == Difficulty()
    with pytest.raises(ConfigError, match="unknown simulator difficulty preset 'hardest'"):
        Difficulty.resolve("hardest")
    with pytest.raises(ConfigError, match="unknown difficulty knob.*ambiant_fraction"):
        Difficulty.resolve({"ambiant_fraction": 0.1})
    with pytest.raises(ConfigError, match="ambient_fraction"):
        Difficulty.resolve({"ambient_fraction": 0.5})
    with pytest.raises(Exception, match="frozen"):
        h.ambient_fraction = 0.0


def test_simulate_config_difficulty():
    assert SimulateConfig().difficulty == "default"
    assert SimulateConfig(difficulty="hard").difficulty == "hard"
    cfg = validate(SimulateConfig, {"difficulty": {"ambient_fraction": 0.1, "obs_style": "foreign"}}, "x.yaml")
    assert isinstance(cfg.difficulty, Difficulty) and cfg.difficulty.ambient_fraction == 0.1
    with pytest.raises(ConfigError, match=r"(?s)x\.yaml.*unknown difficulty knob.*marker_strenght"):
        validate(SimulateConfig, {"difficulty": {"marker_strenght": 0.5}}, "x.yaml")
    with pytest.raises(ConfigError, match="unknown simulator difficulty preset"):
        validate(SimulateConfig, {"difficulty": "impossible"}, "x.yaml")
    # the default difficulty leaves the settings (and so the pipeline's stage hashes) as they were
    old = {"n_cells": 20_000, "n_datasets": 8, "n_genes": 15_000, "seed": 0, "chunk_size": 20_000}
    assert settings_hash(SimulateConfig()) == settings_hash(old)
    assert settings_hash(SimulateConfig(difficulty={"batch_strength": 1.0})) == settings_hash(old)
    assert settings_hash(SimulateConfig(difficulty="hard")) != settings_hash(old)


def test_difficulty_is_a_parameter_of_the_folder(default_small):
    with pytest.raises(RunDirError, match="different parameters"):
        simulate(default_small.out_dir, difficulty="weak_markers", **BEFORE)
    again = simulate(default_small.out_dir, difficulty=None, **BEFORE)
    assert again.skipped


# ------------------------------------------------------------------------------------ model knobs
@pytest.fixture(scope="module")
def table():
    return build_gene_table(2500, bio.extra_genes())


def _rel(logw: np.ndarray, t: int, ids) -> np.ndarray:
    return logw[t, ids] - np.log(np.exp(logw[t]).sum())


def test_marker_strength_and_contrast(table):
    idx = table.index()
    base = bio.build_profiles(table, np.random.default_rng(0))
    weak = bio.build_profiles(table, np.random.default_rng(0), Difficulty(marker_strength=0.5, marker_contrast=0.6))
    t_cell = bio.CELL_TYPES.index("T")
    mk = [idx[g] for g in bio.MARKERS["T"]]
    others = [t for t in range(len(bio.CELL_TYPES)) if t != t_cell]
    drop = base.logw[t_cell, mk] - weak.logw[t_cell, mk]
    assert 1.0 < drop.mean() < 3.0  # about 6-fold lower in T cells
    gap_base = base.logw[t_cell, mk][None, :] - base.logw[np.ix_(others, mk)]
    gap_weak = weak.logw[t_cell, mk][None, :] - weak.logw[np.ix_(others, mk)]
    assert np.allclose(gap_weak, 0.6 * (gap_base - drop[None, :]))  # contrast on top of the weaker level
    plain = bio.build_profiles(table, np.random.default_rng(0), Difficulty(marker_contrast=0.6))
    assert np.array_equal(plain.logw[t_cell, mk], base.logw[t_cell, mk])


def test_monocyte_overlap_and_confounders(table):
    idx = table.index()
    d = Difficulty(monocyte_neutrophil_overlap=0.6, hypoxic_tumour=0.6, vegfa_macrophages=0.3)
    base = bio.build_profiles(table, np.random.default_rng(0))
    prof = bio.build_profiles(table, np.random.default_rng(0), d)
    mono = bio.CELL_TYPES.index("monocyte")
    s100 = [idx["S100A8"], idx["S100A9"], idx["MNDA"]]
    ratio = np.exp(_rel(prof.logw, mono, s100) - _rel(prof.logw, bio.NEUTROPHIL, s100))
    assert np.all((ratio > 0.45) & (ratio < 0.7))
    assert np.all(np.exp(_rel(base.logw, mono, s100) - _rel(base.logw, bio.NEUTROPHIL, s100)) < 0.05)
    tum = bio.CELL_TYPES.index("tumour_epithelial")
    assert prof.logw[tum, idx["VEGFA"]] > base.logw[tum, idx["VEGFA"]] + 1
    assert idx["VEGFA"] in prof.support[tum]
    # one extra profile, of a macrophage, with SPP1 and VEGFA high
    assert prof.logw.shape[0] == len(bio.CELL_TYPES) + 1 and prof.profile_type[-1] == bio.CELL_TYPES.index("macrophage")
    mac = bio.CELL_TYPES.index("macrophage")
    assert prof.logw[-1, idx["SPP1"]] > prof.logw[mac, idx["SPP1"]] + 2
    assert base.logw.shape[0] == len(bio.CELL_TYPES)


def test_t3_proxy_overlap_in_the_model(table):
    idx = table.index()
    proxy = np.array(sorted(idx[g] for g in load_registry()["T3_proxy"].genes if g in idx))
    base = bio.build_profiles(table, np.random.default_rng(0))
    half = bio.build_profiles(table, np.random.default_rng(0), Difficulty(t3_proxy_overlap=0.5), np.random.default_rng(1))
    assert np.array_equal(base.t3_proxy_used, proxy) and base.t3_replacements.size == 0
    assert half.t3_proxy_used.size == round(0.5 * proxy.size)
    assert half.t3_replacements.size == proxy.size - half.t3_proxy_used.size
    assert not np.isin(half.t3_replacements, proxy).any()
    eff = np.zeros((len(bio.PROGRAMS), len(table.symbols)))
    eff[:, half.support[bio.NEUTROPHIL]] = half.effects
    dropped = np.setdiff1d(proxy, half.t3_proxy_used)
    assert (eff[1, dropped] <= 0).all() and (eff[1, half.t3_proxy_used] > 0).all() and (eff[1, half.t3_replacements] > 0).all()
    assert np.isin(half.t3_replacements, half.t3_genes).all() and not np.isin(dropped, half.t3_genes).any()


def test_neutrophil_umis_on_droplets():
    spec = next(s for s in design_datasets(np.random.default_rng(0), 40_000, 3) if s.platform == "10x_3p")
    d = Difficulty(neutrophil_umi_droplet=300, neutrophil_umi_scale=0.5)
    cells = draw_cells(np.random.default_rng(1), spec, d)
    before = draw_cells(np.random.default_rng(1), spec)
    neut = cells.ctype == bio.NEUTROPHIL
    assert np.allclose(cells.lib[neut] / before.lib[neut], 300 / 450)
    assert np.array_equal(cells.lib[~neut], before.lib[~neut])
    pdac = design_datasets(np.random.default_rng(0), 40_000, 3)[0]  # BD Rhapsody
    assert pdac.platform == "BD_Rhapsody"
    plate = draw_cells(np.random.default_rng(1), pdac, d).lib / draw_cells(np.random.default_rng(1), pdac).lib
    assert np.allclose(plate[draw_cells(np.random.default_rng(1), pdac).ctype == bio.NEUTROPHIL], 0.5)


def test_batch_strength_scales_the_study_effects(table):
    prof = bio.build_profiles(table, np.random.default_rng(0))
    spec = design_datasets(np.random.default_rng(0), 2000, 3)[1]
    cells = draw_cells(np.random.default_rng(1), spec)
    one, two = (_model(spec, cells, prof, 5, Difficulty(batch_strength=b)) for b in (1.0, 2.0))
    default = _model(spec, cells, prof, 5)
    assert np.array_equal(one.sup_w, default.sup_w)
    n_prof = prof.logw.shape[0]
    extra = np.log(two.sup_w[::n_prof]) - np.log(one.sup_w[::n_prof])  # neutrophils of each sample
    assert np.allclose(extra, extra[0][None, :])  # the study effect: the same in every sample
    assert 0.25 < extra.std() < 0.55


def test_kernel_ambient_counts_keep_the_total():
    n, n_genes = 3000, 50
    support = np.arange(40)[None, :]
    bg = np.arange(40, 50)[None, :]
    logw = np.zeros(n_genes)
    soup = np.zeros((1, n_genes))
    soup[0, [5, 45]] = 1.0  # soup on a support gene and a background gene
    args = dict(
        ctype=np.zeros(n, dtype=np.int64), prof=np.zeros(n, dtype=np.int64), lib=np.full(n, 500.0),
        mt_factor=np.ones(n), wprog=np.zeros((n, 1)), neutrophil=5, support=support,
        sup_w=np.exp(logw[support]), sup_theta=np.full((1, 40), 1000.0), sup_mt=np.zeros((1, 40), dtype=np.bool_),
        eff_pos=np.zeros(0, dtype=np.int64), effects=np.zeros((1, 0)), bg_genes=bg,
        bg_cdf=np.cumsum(np.exp(logw[bg]), axis=1), n_genes=n_genes, csample=np.zeros(n, dtype=np.int64),
        soup_cdf=np.cumsum(soup, axis=1),
    )  # fmt: skip
    ip0, ix0, d0 = sample_block(3, ambient=0.0, **args)
    x0 = sp.csr_matrix((d0, ix0, ip0), shape=(n, n_genes))
    indptr, indices, data = sample_block(3, ambient=0.2, **args)
    x = sp.csr_matrix((data, indices, indptr), shape=(n, n_genes))
    assert x.has_sorted_indices and x.has_canonical_format
    means, means0 = np.asarray(x.mean(axis=0)).ravel(), np.asarray(x0.mean(axis=0)).ravel()
    assert abs(means.sum() - 500) < 5 and abs(means0.sum() - 500) < 5
    assert means[5] == pytest.approx(0.8 * 10 + 50, rel=0.05) and means[45] == pytest.approx(0.8 * 10 + 50, rel=0.05)
    assert means[0] == pytest.approx(0.8 * 10, rel=0.05)


# ------------------------------------------------------------------------------ end to end (small)
def test_ambient_raises_neutrophil_genes_in_t_cells(default_small, ambient_small):
    a0, a1 = _normalised(default_small.out_dir), _normalised(ambient_small.out_dir)
    t0, t1 = a0.obs["truth_cell_type"] == "T", a1.obs["truth_cell_type"] == "T"
    assert _mean(a1, t1, "S100A8") > 5 * _mean(a0, t0, "S100A8") + 0.2
    assert _mean(a1, t1, "EPCAM") > 3 * _mean(a0, t0, "EPCAM")
    params = json.loads((ambient_small.out_dir / "simulation.json").read_text())["parameters"]
    assert params["difficulty"] == {"ambient_fraction": 0.1}


def test_hard_cohort_cells(hard, hard_data):
    a, obs = hard_data, hard_data.obs
    ct = obs["truth_cell_type"]
    ok_neut = (ct == "neutrophil") & (obs["truth_quality"] == "ok")
    droplet = obs["platform"].isin(["10x_3p", "10x_5p"])
    assert 220 < obs.loc[ok_neut & droplet, "total"].median() < 400
    ratio = _mean(a, ct == "monocyte", "S100A8") / _mean(a, ct == "neutrophil", "S100A8")
    assert 0.35 < ratio < 1.0
    truth = json.loads((hard.out_dir / "truth" / "difficulty.json").read_text())
    assert truth["preset"] == "hard" and truth["neutrophil_median_umis"]["10x_5p"] == 300
    assert sum(truth["vegfa_high_macrophages"].values()) > 0
    mac = a[(ct == "macrophage").to_numpy()]
    spp1_high = np.asarray(mac[:, "SPP1"].X.todense()).ravel() > 50
    assert 0.15 < spp1_high.mean() < 0.45
    tum = ct == "tumour_epithelial"
    assert _mean(a, tum, "VEGFA") > 1.0


def test_hard_cohort_t3_programme(hard, hard_data):
    a, obs = hard_data, hard_data.obs
    neut = obs["truth_cell_type"] == "neutrophil"
    t3, mature = neut & (obs["truth_state"] == "T3"), neut & (obs["truth_state"] == "mature")
    proxy = [g for g in load_registry()["T3_proxy"].genes if g in a.var_names]
    lfc = {g: np.log2((_mean(a, t3, g) + 1) / (_mean(a, mature, g) + 1)) for g in proxy}
    up = {g for g, v in lfc.items() if v > 1}
    truth = json.loads((hard.out_dir / "truth" / "difficulty.json").read_text())["t3_programme"]
    assert 0.3 < len(up) / len(proxy) < 0.7
    assert len(up & set(truth["t3_proxy_genes_used"])) >= 0.8 * len(up)
    genes = pd.read_csv(hard.out_dir / "truth" / "genes.csv", index_col=0)
    assert set(genes.index[genes["t3_up"]]) >= set(truth["replacement_genes"])


def test_foreign_obs_names(hard):
    cfg = load_ingest_config(hard.ingest_config)
    foreign = {"patient_id": "donor", "sample_id": "library", "tissue": "site", "platform": "tech",
               "cancer_type": "tumor_type"}  # fmt: skip
    for e in cfg.datasets:
        assert all(foreign[f] == col for f, col in e.obs_columns.items())
        obs = load_counts(e).obs
        for field, col in e.obs_columns.items():
            assert col in obs.columns, (e.id, field)
        assert {"donor", "library", "site"} <= set(obs.columns)
    assert any(e.constants for e in cfg.datasets)  # missing columns stay missing
