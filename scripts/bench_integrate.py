"""Benchmark the integrate stage against its peers on the same data, in one run.

(a) speed   epoch time of the fast data path vs scvi-tools' default ``train()`` and its best built-in
            options (``load_sparse_tensor``, ``pin_memory``, ``num_workers``): same cells, HVGs, batch
            size, seed; medians over epochs (the first epoch of each run is warm-up and left out),
            configurations alternated over rounds.
(b) quality scib-metrics aggregate batch / bio scores of scVI vs an unintegrated PCA and Harmony, and NMI of
            Leiden vs truth_cell_type, on simulated data (atlas.simulate + atlas.ingest.stage; ``--toy`` for
            the integrate stage's own toy generator instead).
(c) memory  peak RSS of training on a large matrix on the CPU (default 1,000,000 cells x 4,000 HVGs) for a
            number of mini-batches, each loader in its own child process.

Results are printed and appended to ``benchmarks/integrate.md`` with machine, command and date.

    python scripts/bench_integrate.py --speed --quality          # (a) and (b)
    python scripts/bench_integrate.py --memory                   # (c), long
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import REPO, record, run_measured  # noqa: E402

log = logging.getLogger("bench_integrate")


def _quiet() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")


# ----------------------------------------------------------------------------------------- data
def simulated_store(workdir: Path, n_cells: int, n_datasets: int, n_genes: int, seed: int, toy: bool) -> Path:
    """An ingested store of simulated data (reused when present)."""
    store = workdir / f"store_{'toy' if toy else 'sim'}_{n_cells}_{n_datasets}_{n_genes}_{seed}.h5ad"
    if store.exists():
        return store
    workdir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if toy:
        from helpers.integrate_fixtures import toy_atlas

        toy_atlas(
            n_cells, n_genes, n_types=9, n_datasets=n_datasets, samples_per_dataset=6, seed=seed
        ).write_h5ad(store)
    else:
        from atlas.ingest.settings import load_ingest_config
        from atlas.ingest.stage import ingest
        from atlas.simulate import simulate

        sim = workdir / f"sim_{n_cells}_{n_datasets}_{n_genes}_{seed}"
        simulate(sim, n_cells=n_cells, n_datasets=n_datasets, n_genes=n_genes, seed=seed, overwrite=True)
        cfg = load_ingest_config(sim / "ingest.yaml")
        cfg.qc.doublets = False
        ingest(cfg, store, overwrite=True)
    log.info("store %s written in %.0f s", store, time.perf_counter() - t)
    return store


# ---------------------------------------------------------------------------------------- speed
def _epoch_timer():
    import lightning.pytorch as pl

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module):
            self._t = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.times.append(time.perf_counter() - self._t)

    return EpochTimer()


def bench_speed(
    store: Path,
    n_cells: int,
    n_hvgs: int,
    batch_sizes: list[int],
    epochs: int,
    rounds: int,
    seed: int,
    loaders: list[str] | None = None,
) -> list[dict]:
    import numpy as np
    import scvi

    from atlas.integrate import FastDataModule, read_store, select_hvgs

    adata = read_store(store)
    rng = np.random.default_rng(seed)
    if adata.n_obs > n_cells:
        adata = adata[np.sort(rng.choice(adata.n_obs, n_cells, replace=False))].copy()
    hvgs = select_hvgs(adata, n_top_genes=n_hvgs, batch_key="dataset_id")
    adata = adata[:, hvgs].copy()
    log.info(
        "speed data: %d cells x %d HVGs, %.0f stored values per cell",
        adata.n_obs,
        adata.n_vars,
        adata.X.nnz / adata.n_obs,
    )

    configs = {
        "scvi default": {},
        "scvi load_sparse_tensor": {"load_sparse_tensor": True},
        "scvi pin_memory": {"datasplitter_kwargs": {"pin_memory": True}},
        "scvi num_workers=2": {"datasplitter_kwargs": {"num_workers": 2, "persistent_workers": True}},
        "atlas fast": None,
    }
    if loaders:
        configs = {k: v for k, v in configs.items() if k in loaders or k in ("scvi default", "atlas fast")}
    times: dict[tuple[str, int], list[float]] = {}
    loader_only: dict[tuple[str, int], list[float]] = {}
    for r in range(rounds):
        for bs in batch_sizes:
            names = list(configs)
            order = names[r % len(names) :] + names[: r % len(names)]  # rotate: no config always first
            for name in order:
                scvi.settings.seed = seed
                a = adata.copy()
                scvi.model.SCVI.setup_anndata(
                    a, batch_key="sample_id", categorical_covariate_keys=["platform"]
                )
                model = scvi.model.SCVI(a, n_latent=30, n_layers=2, gene_likelihood="nb")
                loader_only.setdefault((name, bs), []).append(
                    _loader_epoch(model, name, configs[name], bs, seed)
                )
                timer = _epoch_timer()
                common = {
                    "max_epochs": epochs,
                    "accelerator": "cpu",
                    "early_stopping": False,
                    "enable_progress_bar": False,
                    "callbacks": [timer],
                }
                if configs[name] is None:
                    dm = FastDataModule(model.adata_manager, batch_size=bs, seed=seed)
                    model.train(datamodule=dm, **common)
                else:
                    model.train(batch_size=bs, **common, **configs[name])
                times.setdefault((name, bs), []).extend(timer.times[1:])  # first epoch = warm-up
                log.info(
                    "round %d, batch %d, %-24s epochs %s; loader alone %.3f s",
                    r,
                    bs,
                    name,
                    [round(t, 2) for t in timer.times],
                    loader_only[(name, bs)][-1],
                )
    rows = []
    for bs in batch_sizes:
        med = {name: statistics.median(times[(name, bs)]) for name in configs}
        low = {name: min(times[(name, bs)]) for name in configs}
        best = min((k for k in configs if k.startswith("scvi")), key=lambda k: med[k])
        for name in configs:
            rows.append(
                {
                    "loader": name,
                    "batch size": bs,
                    "cells": adata.n_obs,
                    "HVGs": adata.n_vars,
                    "median s/epoch": f"{med[name]:.2f}",
                    "min s/epoch": f"{low[name]:.2f}",
                    "epochs timed": len(times[(name, bs)]),
                    "loader alone s/epoch": f"{statistics.median(loader_only[(name, bs)]):.3f}",
                    "ratio default/this (median)": f"{med['scvi default'] / med[name]:.2f}",
                    "ratio default/this (min)": f"{low['scvi default'] / low[name]:.2f}",
                    "ratio best built-in/this (median)": f"{med[best] / med[name]:.2f}",
                }
            )
    return rows


def _loader_epoch(model, name: str, config: dict | None, batch_size: int, seed: int) -> float:
    """Seconds to draw one training epoch of batches, densified, without the model."""
    from scvi.dataloaders import DataSplitter

    from atlas.integrate import FastDataModule

    if config is None:
        dm = FastDataModule(model.adata_manager, batch_size=batch_size, seed=seed)
    else:
        dm = DataSplitter(
            model.adata_manager,
            batch_size=batch_size,
            load_sparse_tensor=config.get("load_sparse_tensor", False),
            **config.get("datasplitter_kwargs", {}),
        )
    dm.setup()
    loader = dm.train_dataloader()
    t = time.perf_counter()
    for batch in loader:
        if config is not None:
            batch = dm.on_after_batch_transfer(batch, 0)
    return time.perf_counter() - t


# -------------------------------------------------------------------------------------- quality
def bench_quality(
    store: Path,
    workdir: Path,
    n_hvgs: int,
    epochs: int | None,
    batch_size: int,
    metrics_cells: int,
    seed: int,
    resolution: float,
) -> tuple[list[dict], dict]:
    import anndata as ad
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from atlas.integrate import IntegrateSettings, integrate_store

    s = IntegrateSettings(
        n_hvgs=n_hvgs,
        max_epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        metrics_label_key="truth_cell_type",
        metrics_max_cells=metrics_cells,
        leiden_resolution=resolution,
    )
    ref = workdir / "ref_quality"
    res = integrate_store(store, ref, s, overwrite=True)
    atlas = ad.read_h5ad(ref / "atlas.h5ad")
    truth, leiden = atlas.obs["truth_cell_type"].astype(str), atlas.obs["leiden"].astype(str)
    extra = {
        "cells": atlas.n_obs,
        "data sets": atlas.obs["dataset_id"].nunique(),
        "cancer types": atlas.obs["cancer_type"].nunique(),
        "samples": atlas.obs["sample_id"].nunique(),
        "HVGs": atlas.n_vars,
        "epochs": res.epochs.get("scvi"),
        "Leiden clusters": leiden.nunique(),
        "NMI Leiden vs truth_cell_type": round(normalized_mutual_info_score(truth, leiden), 3),
        "ARI Leiden vs truth_cell_type": round(adjusted_rand_score(truth, leiden), 3),
        "seconds": {k: round(v) for k, v in res.seconds.items()},
    }
    m = res.metrics
    rows = []
    for _, r in m.iterrows():
        rows.append(
            {
                "embedding": r["method"],
                "Batch correction (dataset)": f"{r['Batch correction']:.3f}",
                "Bio conservation": f"{r['Bio conservation']:.3f}",
                "Total": f"{r['Total']:.3f}",
                "Batch correction (sample)": f"{r.get('Batch correction [sample_id]', float('nan')):.3f}",
                "Total (sample)": f"{r.get('Total [sample_id]', float('nan')):.3f}",
                "Total - unintegrated": f"{r['Total'] - m.loc['X_pca', 'Total']:+.3f}",
            }
        )
    return rows, extra


# --------------------------------------------------------------------------------------- memory
def memory_child(
    n_cells: int, n_genes: int, density: float, n_batches: int, batch_size: int, loader: str, seed: int
) -> None:
    """Runs in a child process: build a CSR count matrix in place, train n_batches mini-batches, print JSON."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    import scvi

    from atlas.integrate import FastDataModule

    rng = np.random.default_rng(seed)
    chunk = 20_000
    expected = n_cells * n_genes * density
    bound = int(expected + 10 * np.sqrt(expected) + n_genes)
    data = np.empty(bound, dtype=np.float32)  # untouched pages cost no memory
    indices = np.empty(bound, dtype=np.int32)
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    pos = 0
    t = time.perf_counter()
    for start in range(0, n_cells, chunk):
        n = min(chunk, n_cells - start)
        mask = rng.random((n, n_genes), dtype=np.float32) < density
        rows, cols = np.nonzero(mask)
        del mask
        k = rows.size
        data[pos : pos + k] = 1 + rng.poisson(1.5, k)
        indices[pos : pos + k] = cols
        indptr[start + 1 : start + n + 1] = pos + np.cumsum(np.bincount(rows, minlength=n))
        pos += k
    X = sp.csr_matrix((data[:pos], indices[:pos], indptr), shape=(n_cells, n_genes))
    build_s = time.perf_counter() - t
    obs = pd.DataFrame(
        {
            "sample_id": pd.Categorical(rng.integers(0, 400, n_cells).astype(str)),
            "platform": pd.Categorical(rng.integers(0, 4, n_cells).astype(str)),
        },
        index=pd.RangeIndex(n_cells).astype(str),
    )
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)]))
    scvi.settings.seed = seed
    scvi.model.SCVI.setup_anndata(adata, batch_key="sample_id", categorical_covariate_keys=["platform"])
    model = scvi.model.SCVI(adata, n_latent=30, n_layers=2, gene_likelihood="nb")
    common = {
        "max_epochs": 1,
        "accelerator": "cpu",
        "early_stopping": False,
        "enable_progress_bar": False,
        "limit_train_batches": n_batches,
    }
    t = time.perf_counter()
    if loader == "fast":
        model.train(
            datamodule=FastDataModule(model.adata_manager, batch_size=batch_size, seed=seed), **common
        )
    else:
        model.train(batch_size=batch_size, **common)
    train_s = time.perf_counter() - t
    steps = int(model.trainer.global_step)
    print(
        json.dumps(
            {
                "nnz": int(X.nnz),
                "csr_gib": (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2**30,
                "build_s": build_s,
                "train_s": train_s,
                "steps": steps,
            }
        )
    )


def bench_memory(
    n_cells: int, n_genes: int, density: float, n_batches: int, batch_size: int, seed: int
) -> list[dict]:
    rows = []
    for loader in ("scvi", "fast"):
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            loader,
            "--memory-cells",
            str(n_cells),
            "--memory-genes",
            str(n_genes),
            "--memory-density",
            str(density),
            "--memory-batches",
            str(n_batches),
            "--memory-batch-size",
            str(batch_size),
            "--seed",
            str(seed),
        ]
        out_file = Path("/tmp") / f"bench_integrate_memory_{loader}.json"
        cmd += ["--memory-out", str(out_file)]
        m = run_measured(cmd)
        info = json.loads(out_file.read_text())
        rows.append(
            {
                "loader": loader,
                "cells": n_cells,
                "HVGs": n_genes,
                "stored values": f"{info['nnz']:,}",
                "CSR GiB": f"{info['csr_gib']:.2f}",
                "mini-batches": info["steps"],
                "batch size": batch_size,
                "peak RSS GiB": f"{m['peak_rss_gib']:.2f}",
                "train s": f"{info['train_s']:.0f}",
                "s/mini-batch": f"{info['train_s'] / max(1, info['steps']):.2f}",
            }
        )
        log.info("memory %s: %s", loader, rows[-1])
    return rows


# ----------------------------------------------------------------------------------------- main
def _table(rows: list[dict]) -> str:
    cols = list(rows[0])
    out = [" | ".join(cols)] + [" | ".join(str(r[c]) for c in cols) for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speed", action="store_true", help="(a) epoch time of the data paths")
    p.add_argument("--quality", action="store_true", help="(b) scib metrics and Leiden NMI on simulated data")
    p.add_argument("--memory", action="store_true", help="(c) peak memory on a large matrix (long)")
    p.add_argument(
        "--toy", action="store_true", help="use the integrate toy generator instead of atlas.simulate"
    )
    p.add_argument("--workdir", type=Path, default=Path("/tmp/atlas_bench_integrate"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sim-cells", type=int, default=50_000)
    p.add_argument("--sim-datasets", type=int, default=8)
    p.add_argument("--sim-genes", type=int, default=6_000)
    p.add_argument("--speed-cells", type=int, default=30_000)
    p.add_argument("--speed-hvgs", type=int, default=2_000)
    p.add_argument("--speed-epochs", type=int, default=3)
    p.add_argument("--speed-rounds", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128])
    p.add_argument(
        "--loaders",
        nargs="+",
        help="scvi-tools options to compare (default: all); default and fast always run",
    )
    p.add_argument("--quality-hvgs", type=int, default=2_000)
    p.add_argument("--quality-epochs", type=int, default=None, help="default: scvi-tools' heuristic")
    p.add_argument("--quality-batch-size", type=int, default=128)
    p.add_argument("--metrics-cells", type=int, default=50_000)
    p.add_argument("--resolution", type=float, default=1.0)
    p.add_argument("--memory-cells", type=int, default=1_000_000)
    p.add_argument("--memory-genes", type=int, default=4_000)
    p.add_argument("--memory-density", type=float, default=0.1, help="share of HVG entries that are non-zero")
    p.add_argument(
        "--memory-batches", type=int, default=50, help="mini-batches trained (>= an epoch: one epoch)"
    )
    p.add_argument("--memory-batch-size", type=int, default=1024)
    p.add_argument("--memory-child", choices=["scvi", "fast"], help=argparse.SUPPRESS)
    p.add_argument("--memory-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument(
        "--no-record", action="store_true", help="print only; do not append to benchmarks/integrate.md"
    )
    args = p.parse_args(argv)
    _quiet()

    if args.memory_child:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            memory_child(
                args.memory_cells,
                args.memory_genes,
                args.memory_density,
                args.memory_batches,
                args.memory_batch_size,
                args.memory_child,
                args.seed,
            )
        args.memory_out.write_text(buf.getvalue().strip().splitlines()[-1])
        return

    command = "python scripts/bench_integrate.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    source = (
        "toy generator (tests/helpers/integrate_fixtures.py: toy_atlas)"
        if args.toy
        else "atlas.simulate + atlas.ingest.stage"
    )
    store = None
    if args.speed or args.quality:
        store = simulated_store(
            args.workdir, args.sim_cells, args.sim_datasets, args.sim_genes, args.seed, args.toy
        )
    if args.speed:
        rows = bench_speed(
            store,
            args.speed_cells,
            args.speed_hvgs,
            args.batch_sizes,
            args.speed_epochs,
            args.speed_rounds,
            args.seed,
            args.loaders,
        )
        print(_table(rows))
        if not args.no_record:
            record(
                "integrate.md",
                "(a) scVI epoch time: fast data path vs scvi-tools' loaders (CPU)",
                rows,
                command,
                notes=f"data: {source}; {args.speed_epochs} epochs per run, first left out; "
                f"{args.speed_rounds} rounds rotating the order; accelerator cpu",
            )
    if args.quality:
        rows, extra = bench_quality(
            store,
            args.workdir,
            args.quality_hvgs,
            args.quality_epochs,
            args.quality_batch_size,
            args.metrics_cells,
            args.seed,
            args.resolution,
        )
        print(_table(rows))
        print(json.dumps(extra, indent=1))
        if not args.no_record:
            record(
                "integrate.md",
                "(b) integration quality on simulated data (scib-metrics)",
                rows,
                command,
                notes=f"data: {source}; " + "; ".join(f"{k}: {v}" for k, v in extra.items()),
            )
    if args.memory:
        rows = bench_memory(
            args.memory_cells,
            args.memory_genes,
            args.memory_density,
            args.memory_batches,
            args.memory_batch_size,
            args.seed,
        )
        print(_table(rows))
        if not args.no_record:
            record(
                "integrate.md",
                "(c) peak memory of scVI training on the CPU",
                rows,
                command,
                notes="synthetic CSR counts built in place in each child; peak RSS of the child process",
            )


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
