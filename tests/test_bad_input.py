"""The bad-input battery: every broken input gets exit 2, one clear paragraph, and nothing written.

Each case breaks one copy of a small simulated data set and runs ``atlas ingest`` on a one-data-set
config through the CLI's entry point (in process, so the battery stays fast). For every case: exit
status 2, a message naming the file / data set / column / gene, nothing at the output path (no
store, no side tables, no temporaries) and the inputs unchanged.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import sparse

from atlas.cli import main
from atlas.simulate import simulate

DS = "ds01"  # the data set id used in every case


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """One simulated h5ad data set (raw counts in X, human symbols) and its ingest entry."""
    out = tmp_path_factory.mktemp("sim")
    simulate(out, n_cells=700, n_datasets=1, n_genes=3000, seed=5)
    entry = yaml.safe_load((out / "ingest.yaml").read_text())["datasets"][0]
    assert entry["format"] == "h5ad" and entry.get("counts", "X") == "X" and entry["gene_ids"] == "symbol"
    adata = ad.read_h5ad(out / entry["path"])
    adata.X = sparse.csr_matrix(adata.X, dtype=np.float32)
    entry.update(id=DS, path=None)
    return adata, entry


# ------------------------------------------------------------------------------- broken inputs
def _h5ad(edit: Callable[[ad.AnnData], ad.AnnData | None]):
    """A case that writes the data set as h5ad after ``edit`` (in place or returning a new AnnData)."""

    def make(adata: ad.AnnData, folder: Path) -> Path:
        a = adata.copy()
        edited = edit(a)
        a = a if edited is None else edited  # (an AnnData of 0 cells is falsy)
        path = folder / "data.h5ad"
        a.write_h5ad(path)
        return path

    return make


def _set_data(fn):
    def edit(a):
        a.X.data = fn(a.X.data.copy()).astype(np.float32)

    return edit


def _truncated(adata, folder):
    path = _h5ad(lambda a: None)(adata, folder)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _text_as_h5ad(adata, folder):
    path = folder / "data.h5ad"
    path.write_text("gene,cell1,cell2\nACTB,1,2\n")
    return path


def _log_normalised(a):
    import scanpy as sc

    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)


def _dup_genes(a):
    names = a.var_names.to_list()
    names[7] = names[3]
    a.var_names = names


def _dup_barcodes(a):
    names = a.obs_names.to_list()
    names[9] = names[2]
    a.obs_names = names


def _all_zero(a):
    a.X = sparse.csr_matrix(a.shape, dtype=np.float32)


def _unknown_genes(a):
    a.var_names = [f"QQX{i}Z" for i in range(a.n_vars)]


def _mouse_symbols(a):
    """Mouse-cased symbols (Actb, Cd14, ...), as mouse data carry them, under species: human."""
    from atlas.catalogue.genes import human_genes, mouse_genes

    human = set(human_genes()["symbol"])
    mouse = [g for g in dict.fromkeys(mouse_genes()["symbol"]) if g not in human]
    mouse = sorted(mouse, key=lambda g: g.upper() not in human)  # orthologue-like names first
    a.var_names = mouse[: a.n_vars]


def _csv_declared_genes_x_cells(adata, folder):
    """A cells x genes csv (cells as rows) whose entry says genes_x_cells."""
    a = adata[:200].copy()
    df = pd.DataFrame(a.X.toarray().astype(int), index=a.obs_names, columns=a.var_names)
    path = folder / "data.csv"
    df.to_csv(path)
    a.obs.to_csv(folder / "meta.csv")
    return path


#: case id -> (make input, entry changes, regex fragments the message must contain)
CASES = {
    "truncated_h5ad": (_truncated, {}, [r"data\.h5ad", "truncated"]),
    "text_named_h5ad": (_text_as_h5ad, {}, [DS, r"data\.h5ad"]),
    "nan_counts": (_h5ad(_set_data(lambda d: np.where(np.arange(d.size) == 5, np.nan, d))), {},
                   [DS, r"data\.h5ad", "NaN"]),
    "negative_counts": (_h5ad(_set_data(lambda d: np.where(np.arange(d.size) == 5, -3, d))), {},
                        [DS, r"data\.h5ad", "negative"]),
    "log_normalised": (_h5ad(_log_normalised), {}, [DS, r"data\.h5ad", "log"]),
    "non_integer": (_h5ad(_set_data(lambda d: d + 0.5)), {}, [DS, r"data\.h5ad", "not whole numbers", "round_counts"]),
    "duplicate_genes": (_h5ad(_dup_genes), {}, [DS, r"data\.h5ad", "duplicate"]),
    "duplicate_barcodes": (_h5ad(_dup_barcodes), {}, [DS, r"data\.h5ad"]),
    "missing_file": (lambda adata, folder: folder / "absent.h5ad", {}, [DS, r"absent\.h5ad"]),
    "zero_cells": (_h5ad(lambda a: a[:0].copy()), {}, [DS, r"data\.h5ad", "no cells"]),
    "all_cells_fail_qc": (_h5ad(_all_zero), {}, [DS, r"data\.h5ad", "QC removed every cell"]),
    "no_gene_recognised": (_h5ad(_unknown_genes), {}, [DS, "0%", "3000", "QQX0Z"]),
    "mouse_symbols_as_human": (_h5ad(_mouse_symbols), {}, [DS, "mouse", "species: mouse"]),
}

#: cases being fixed by other helpers (issue 13); strict=False so they pass once fixed
PENDING: set[str] = set()


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _ingest(config: Path, out: Path, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["-q", "ingest", str(config), "--out", str(out)])
    cap = capsys.readouterr()
    return exc.value.code, cap.err


def _check_refused(config: Path, inputs: Path, capsys, fragments: list[str]) -> str:
    """Run ingest; assert exit 2, the message's fragments, nothing written and inputs unchanged."""
    out_dir = config.parent / "out"
    out_dir.mkdir()
    before = _digest(inputs)
    code, err = _ingest(config, out_dir / "store.h5ad", capsys)
    msg = " ".join(err.split())
    assert code == 2, err
    assert msg.startswith("error: ") and "Traceback" not in err, err
    for frag in fragments:
        assert re.search(frag, msg), f"{frag!r} not in: {msg}"
    assert sorted(p.name for p in out_dir.iterdir()) == []
    assert _digest(inputs) == before, "an input file was modified"
    return msg


def _case(tmp_path, source, make, entry_changes) -> tuple[Path, Path]:
    adata, entry = source
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = make(adata, inputs)
    ds = {**entry, "path": str(path), **entry_changes}
    config = tmp_path / "ingest.yaml"
    config.write_text(yaml.safe_dump({"datasets": [ds]}))
    shutil.copy(config, inputs / "ingest.yaml")  # hashed with the inputs
    return config, inputs


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.xfail(strict=False, reason="issue 13: pending")) if c in PENDING else c
     for c in CASES],
)
def test_broken_input_is_refused_cleanly(case, tmp_path, source, capsys):
    make, changes, fragments = CASES[case]
    config, inputs = _case(tmp_path, source, make, changes)
    _check_refused(config, inputs, capsys, fragments)


def test_config_typo_names_the_field(tmp_path, source, capsys):
    config, inputs = _case(tmp_path, source, _h5ad(lambda a: None), {"speceis": "human"})
    _check_refused(config, inputs, capsys, [r"ingest\.yaml", "speceis"])


def test_yaml_syntax_error_names_the_line(tmp_path, source, capsys):
    config, inputs = _case(tmp_path, source, _h5ad(lambda a: None), {})
    config.write_text(config.read_text().replace("datasets:", "datasets: [\n", 1))
    _check_refused(config, inputs, capsys, [r"ingest\.yaml", "line"])


def test_cells_x_genes_csv_declared_genes_x_cells_is_detected_or_refused(tmp_path, source, capsys):
    """Never a store of 0 cells (or of 3,000 'cells' named after genes)."""
    changes = {"format": "csv", "orientation": "genes_x_cells", "obs_path": None}
    config, inputs = _case(tmp_path, source, _csv_declared_genes_x_cells, changes)
    data = yaml.safe_load(config.read_text())
    data["datasets"][0]["obs_path"] = str(inputs / "meta.csv")
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out" / "store.h5ad"
    out.parent.mkdir()
    before = _digest(inputs)
    code, err = _ingest(config, out, capsys)
    assert _digest(inputs) == before
    if code == 2:  # refused: the message names the orientation, nothing written
        assert DS in err and "orientation" in err, err
        assert list(out.parent.iterdir()) == []
    else:  # detected: the cells are the csv's rows
        assert code == 0, err
        store = ad.read_h5ad(out, backed="r")
        assert 0 < store.n_obs <= 200
        assert not set(store.obs_names.str.split(":").str[-1]) & set(source[0].var_names)


@pytest.mark.slow  # scVI and scib-metrics: about a minute of CPU
def test_integrate_on_a_store_without_cell_types_writes_the_bundle(tmp_path, source, capsys):
    """No cell-type column: label metrics are skipped, the model and bundle are still written (exit 0)."""
    config, _ = _case(tmp_path, source, _h5ad(lambda a: a.obs.drop(columns=["truth_cell_type"], inplace=True)), {})
    store = tmp_path / "store.h5ad"
    assert _ingest(config, store, capsys)[0] == 0
    assert not {"cell_type", "truth_cell_type"} & set(ad.read_h5ad(store, backed="r").obs)
    settings = tmp_path / "integrate.yaml"
    settings.write_text(yaml.safe_dump({"integrate": {
        "n_hvgs": 200, "max_epochs": 1, "batch_size": 256, "min_cells_per_batch": 5, "metrics": True,
        "metrics_fast": True, "metrics_harmony": False, "metrics_max_cells": 300}}))
    ref = tmp_path / "reference"
    with pytest.raises(SystemExit) as exc:
        main(["-q", "integrate", str(store), "--out", str(ref), "--config", str(settings)])
    err = capsys.readouterr().err
    assert exc.value.code == 0, err
    assert (ref / "model" / "model.pt").exists() and (ref / "atlas.h5ad").exists()
    metrics = pd.read_csv(ref / "metrics.csv")
    assert "iLISI" in metrics and "Bio conservation" not in metrics  # label metrics skipped, batch ones kept
