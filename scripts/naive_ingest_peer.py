"""The peer for bench_ingest.py: what a user writes with scanpy/anndata alone.

Reads every data set of an ingest.yaml fully into memory (scanpy/anndata readers), attaches its
metadata, and concatenates in memory with ``anndata.concat(join="outer")``, then writes one h5ad.
It does less than atlas (no gene harmonisation, no orthologues, no QC, no counts checks), so it is a
lower bound for the peer's cost.

    python scripts/naive_ingest_peer.py INGEST_YAML OUT.h5ad
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import pandas as pd
import scanpy as sc
import yaml
from scipy import sparse


def read_one(d: dict, base: Path) -> ad.AnnData:
    path = base / d["path"]
    fmt = d.get("format", "auto")
    if fmt == "auto":
        fmt = "h5ad" if path.suffix == ".h5ad" else "10x_mtx" if path.is_dir() else "csv"
    if fmt == "h5ad":
        a = ad.read_h5ad(path)
        counts = d.get("counts", "X")
        if counts.startswith("layers/"):
            a.X = a.layers[counts.split("/", 1)[1]]
        a.layers.clear()
    elif fmt == "10x_mtx":
        a = sc.read_10x_mtx(path, var_names="gene_symbols")
    else:
        df = pd.read_csv(path, index_col=0)
        if d.get("orientation", "genes_x_cells") == "genes_x_cells":
            df = df.T
        a = ad.AnnData(sparse.csr_matrix(df.to_numpy("float32")),
                       obs=pd.DataFrame(index=df.index.astype(str)), var=pd.DataFrame(index=df.columns.astype(str)))
    if d.get("obs_path"):
        meta = pd.read_csv(base / d["obs_path"], index_col=0)
        a.obs = meta.loc[a.obs_names]
    a.var_names_make_unique()
    a.obs_names = [f"{d['id']}:{b}" for b in a.obs_names]
    a.obs["dataset_id"] = d["id"]
    return a


def main(cfg_path: str, out: str) -> None:
    cfg = yaml.safe_load(Path(cfg_path).read_text())
    base = Path(cfg_path).resolve().parent
    parts = [read_one(d, base) for d in cfg["datasets"]]
    merged = ad.concat(parts, join="outer")
    merged.obs = merged.obs.astype(str)
    merged.write_h5ad(out)
    print(f"{merged.n_obs} cells x {merged.n_vars} genes")


if __name__ == "__main__":
    main(*sys.argv[1:3])
