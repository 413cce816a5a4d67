"""The query's own marker calls: a type the reference lacks is found and marked, known types are left alone."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from atlas.analyse.settings import DEFAULT_MARKERS
from atlas.query.markers import marker_check

TYPES = ("neutrophil", "T", "B", "monocyte")


def _query(tmp_path, n_per_type=150, seed=0, drop=(), types=TYPES):
    """Raw counts of four types, each expressing its own markers (weakly: ~1 count per marker gene) over 800
    background genes and the other types' markers (the genes of ``drop`` types not measured), and a latent where
    each type is a blob; the store as ingest writes it (CSR counts). A type of ``types`` outside the marker panel
    expresses eight background genes instead (G0-G7)."""
    rng = np.random.default_rng(seed)
    genes = list(dict.fromkeys(g for t in DEFAULT_MARKERS if t not in drop for g in DEFAULT_MARKERS[t]))
    genes += [f"G{i}" for i in range(800)]
    col = {g: j for j, g in enumerate(genes)}
    labels = np.repeat(types, n_per_type)
    mu = np.full((len(labels), len(genes)), 0.3)
    for i, t in enumerate(labels):
        mu[i, [col[g] for g in DEFAULT_MARKERS.get(t, [f"G{k}" for k in range(8)])]] = 1.5
    x = sp.csr_matrix(rng.poisson(mu * rng.gamma(4, 0.25, size=(len(labels), 1))).astype(np.float32))
    names = pd.Index([f"c{i}" for i in range(len(labels))])
    store = tmp_path / "store.h5ad"
    ad.AnnData(x, obs=pd.DataFrame(index=names), var=pd.DataFrame(index=genes)).write_h5ad(store)
    centres = rng.normal(0, 4, size=(len(types), 10))
    latent = (centres[pd.factorize(labels)[0]] + rng.normal(0, 1, size=(len(labels), 10))).astype(np.float32)
    return store, names, latent, labels


def test_marker_check_finds_the_type_the_reference_lacks(tmp_path):
    store, names, latent, truth = _query(tmp_path)
    transferred = np.where(truth == "B", "T", truth)  # the B cells were mapped onto T cells
    ref_counts = pd.Series({"neutrophil": 900, "T": 700, "monocyte": 300, "B": 3})  # 3 B cells: absent
    notes: list[str] = []
    check = marker_check(store, names, latent, transferred, ref_counts, record=None, scoring={"method": "scanpy"},
                         min_reference_cells=15, notes=notes)  # fmt: skip
    assert set(check.absent) == {"B", "macrophage", "NK", "tumour_epithelial", "fibroblast", "endothelial"}
    assert (check.own[truth == "B"] == "B").mean() > 0.9
    # per-cell refinement: a few noisy cells of known types (weak markers, ~1.5 counts per marker gene) move too
    assert check.novel[truth == "B"].mean() > 0.9 and check.novel[truth != "B"].mean() < 0.02
    assert any("own markers call B" in n for n in notes) and any("no cell-type rule" in n for n in notes)


def test_marker_check_leaves_a_reference_with_every_type_alone(tmp_path):
    store, names, latent, truth = _query(tmp_path)
    ref_counts = pd.Series(1000, index=list(DEFAULT_MARKERS))
    notes: list[str] = []
    check = marker_check(store, names, latent, truth, ref_counts, record={"cell_type_markers": DEFAULT_MARKERS},
                         scoring={"method": "scanpy"}, min_reference_cells=15, notes=notes)  # fmt: skip
    assert check.absent == [] and not check.novel.any() and notes == []


def test_marker_check_leaves_out_types_the_query_does_not_measure(tmp_path):
    store, names, latent, truth = _query(tmp_path, drop=("macrophage", "NK"))
    notes: list[str] = []
    check = marker_check(store, names, latent, np.where(truth == "B", "T", truth), pd.Series({"T": 500}),
                         record=None, scoring={"method": "scanpy"}, min_reference_cells=15, notes=notes)  # fmt: skip
    assert "macrophage" not in check.enrichment.columns and check.novel[truth == "B"].mean() > 0.9
    assert any("no marker of NK, macrophage" in n for n in notes)


def test_marker_check_is_skipped_for_labels_of_another_vocabulary(tmp_path):
    store, names, latent, truth = _query(tmp_path, n_per_type=20)
    notes: list[str] = []
    check = marker_check(store, names, latent, truth, pd.Series({"Neutrophils": 50, "T cells": 50}), record=None,
                         scoring={"method": "scanpy"}, min_reference_cells=15, notes=notes)  # fmt: skip
    assert check is None and "not the analysis's marker types" in notes[0]


def test_marker_check_marks_a_type_outside_the_marker_panel(tmp_path):
    # mast cells: no marker type is enriched in their cluster; the transfer gave them the nearest known label
    store, names, latent, truth = _query(tmp_path, types=(*TYPES, "mast"))
    mast = truth == "mast"
    transferred = np.where(mast, "monocyte", truth)
    ref_counts = pd.Series(1000, index=list(DEFAULT_MARKERS))  # the reference has every panel type
    notes: list[str] = []
    check = marker_check(store, names, latent, transferred, ref_counts, record={"cell_type_markers": DEFAULT_MARKERS},
                         scoring={"method": "scanpy"}, min_reference_cells=15, notes=notes)  # fmt: skip
    assert check.absent == [] and (check.own[mast] == "unknown").all()
    assert (check.novel & (check.own == "unknown"))[mast].all() and check.novel[mast].all() and not check.novel[~mast].any()
    assert any("call no type of the panel" in n for n in notes)
    # cells the transfer already left unknown need no second mark
    left = marker_check(store, names, latent, np.where(mast, "unknown", truth), ref_counts,
                        record={"cell_type_markers": DEFAULT_MARKERS}, scoring={"method": "scanpy"},
                        min_reference_cells=15, notes=[])  # fmt: skip
    assert not left.novel.any()
