#!/usr/bin/env python
"""Benchmark signature scoring: atlas vs scanpy's score_genes loop, decoupler AUCell and pyUCell.

Writes a synthetic raw-count CSR store (``.h5ad``) under ``--data-dir``, then times

1. ``atlas.score.score_store`` (CPU, out of core, counts normalised on the fly; median of ``--repeats``,
   peak RSS of the worker process) vs a loop of ``scanpy.tl.score_genes`` over the signatures on
   the log-normalised matrix in memory. atlas is timed *cold* (the per-gene statistics sidecar
   ``<store>.genestats.parquet`` deleted before every repeat: two passes, the sidecar rewritten)
   and *warm* (sidecar valid: one pass). scanpy runs on the first ``--scanpy-cells`` cells; when
   that is fewer than all cells its time is scaled linearly (and the output says so). The scores of
   both on that subset are compared (max abs difference).
2. AUCell and UCell on ``--rank-cells`` cells vs decoupler and pyUCell (time ratio, equality).
3. ``--gpu``: the same workload resident on the GPU (when one answers), against the time one pass
   over the matrix takes at the device's memory bandwidth, and rapids-singlecell's score_genes loop
   when installed.

Prints a table and appends it, with the machine and the command, to ``benchmarks/score.md``.

Example: ``python scripts/bench_score.py --data-dir bench_data --cells 1000000``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from _bench_common import machine  # noqa: E402  (one machine description for every benchmark)


# ------------------------------------------------------------------------------------------- data
def make_store(
    path: Path, n_cells: int, n_genes: int, nnz_per_cell: int, seed: int = 0, chunk: int = 50_000
) -> None:
    """Raw counts (genes with log-normal rates, ~nnz_per_cell stored values per cell) as a CSR .h5ad.

    Written chunk by chunk to a scratch file, then copied into contiguous datasets (h5py's default
    layout; anndata and ``atlas ingest`` write chunked ones, which atlas also memory-maps run by
    run, see :mod:`atlas.score.h5rows`).
    """
    import h5py
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import write_elem

    rng = np.random.default_rng(seed)
    rates = rng.lognormal(0, 1.5, n_genes)
    cdf = np.cumsum(rates) / rates.sum()
    scratch = path.with_suffix(".scratch.h5")
    indptr = np.zeros(n_cells + 1, np.int64)
    with h5py.File(scratch, "w") as s:
        d_data = s.create_dataset("data", shape=(0,), maxshape=(None,), dtype="float32", chunks=(1 << 22,))
        d_ind = s.create_dataset("indices", shape=(0,), maxshape=(None,), dtype="int32", chunks=(1 << 22,))
        pos = 0
        for start in range(0, n_cells, chunk):
            stop = min(n_cells, start + chunk)
            m = stop - start
            draws = rng.poisson(nnz_per_cell * 1.2, m)  # repeated draws of a gene add up to its count
            rows = np.repeat(np.arange(m, dtype=np.int32), draws)
            genes = np.minimum(np.searchsorted(cdf, rng.random(rows.size)), n_genes - 1).astype(np.int32)
            x = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, genes)), shape=(m, n_genes))
            x.sum_duplicates()
            indptr[start + 1 : stop + 1] = pos + x.indptr[1:]
            d_data.resize((pos + x.nnz,))
            d_ind.resize((pos + x.nnz,))
            d_data[pos:] = x.data
            d_ind[pos:] = x.indices
            pos += x.nnz
        tmp = path.with_suffix(".tmp.h5ad")
        with h5py.File(tmp, "w") as f:
            f.attrs["encoding-type"] = "anndata"
            f.attrs["encoding-version"] = "0.1.0"
            g = f.create_group("X")
            g.attrs.update(
                {"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, n_genes)}
            )
            for name, dtype in (("data", "float32"), ("indices", "int32")):
                out = g.create_dataset(name, shape=(pos,), dtype=dtype)
                for lo in range(0, pos, 1 << 26):
                    out[lo : lo + (1 << 26)] = s[name][lo : lo + (1 << 26)]
            g.create_dataset("indptr", data=indptr)
            write_elem(f, "obs", pd.DataFrame(index=pd.Index([f"cell{i}" for i in range(n_cells)])))
            write_elem(f, "var", pd.DataFrame(index=pd.Index([f"GENE{i}" for i in range(n_genes)])))
            for k in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
                write_elem(f, k, {})
    scratch.unlink()
    os.replace(tmp, path)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does not survive exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def signatures(n_genes: int, n_sig: int = 20, seed: int = 1) -> dict[str, list[str]]:
    """``n_sig`` random gene sets of 30-200 genes."""
    rng = np.random.default_rng(seed)
    return {
        f"SIG{j:02d}": [f"GENE{i}" for i in rng.choice(n_genes, int(rng.integers(30, 201)), replace=False)]
        for j in range(n_sig)
    }


def load_rows(path: Path, n: int):
    """The first ``n`` cells of the store as an in-memory AnnData (raw counts)."""
    import anndata as ad

    a = ad.read_h5ad(path, backed="r")
    sub = a[:n].to_memory()
    a.file.close()
    return sub


# ------------------------------------------------------------------------------------------- workers
def worker_atlas(args) -> dict:
    """Run in a fresh process: time atlas.score.score_store; report times and peak RSS.

    ``--cache cold`` deletes the gene statistics sidecar before every repeat (the run rebuilds it);
    ``warm`` makes sure a valid one exists first (untimed).
    """
    import atlas.score as tl
    from atlas.ingest.genestats import GeneStatsCache, sidecar_path

    sigs = signatures(args.genes)

    def run() -> float:
        t = time.perf_counter()
        tl.score_store(
            args.store,
            sigs,
            method=args.method,
            backend=args.backend,
            chunk_size=args.chunk_size,
            out_path=Path(args.store).with_suffix(f".{args.method}.parquet"),
        )
        return time.perf_counter() - t

    if args.cache == "warm" and args.method == "scanpy" and GeneStatsCache(args.store).load() is None:
        run()
    times = []
    for _ in range(args.repeats):
        if args.cache == "cold":
            sidecar_path(args.store).unlink(missing_ok=True)
        times.append(run())
    return {"times": times, "peak_rss_mb": peak_rss_mb()}


def load_average() -> str:
    """The 1/5/15-minute load averages (``uptime``): other jobs on the machine slow the timings."""
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_worker(args, method: str, backend: str = "cpu", cache: str = "warm") -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--store",
        str(args.store),
        "--genes",
        str(args.genes),
        "--repeats",
        str(args.repeats),
        "--method",
        method,
        "--backend",
        backend,
        "--chunk-size",
        str(args.chunk_size),
        "--cache",
        cache,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm_numba() -> None:
    """Compile (or load from cache) the numba kernels so the timings exclude JIT."""
    import scipy.sparse as sp

    from atlas.score.matrix import score_matrix

    x = sp.random(200, 100, density=0.2, format="csr", random_state=0, dtype=np.float32)
    x.data = np.ceil(x.data * 5)
    for m in ("scanpy", "aucell", "ucell", "mean"):
        score_matrix(x, [np.arange(10), np.arange(20, 50)], method=m, backend="cpu")


# ------------------------------------------------------------------------------------------- sections
def bench_scanpy(args, rows: list) -> None:
    import scanpy as sc

    from atlas.score import score_signatures

    sigs = signatures(args.genes)
    n_sub = min(args.cells, args.scanpy_cells)
    a = load_rows(args.store, n_sub)
    counts = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    t = time.perf_counter()
    ref = {}
    for name, genes in sigs.items():
        sc.tl.score_genes(a, genes, random_state=0, score_name=name)
        ref[name] = a.obs[name].to_numpy()
    t_sc = time.perf_counter() - t
    b = a.copy()
    b.X = counts
    t = time.perf_counter()
    ours = score_signatures(b, sigs, method="scanpy", backend="cpu", chunk_size=args.chunk_size)
    t_in = time.perf_counter() - t
    diff = max(float(np.abs(ours[n].to_numpy() - ref[n]).max()) for n in sigs)
    scale = args.cells / n_sub
    note = "" if scale == 1 else f" (scanpy timed on {n_sub:,} cells, scaled x{scale:g} linearly)"
    for cache, what in (
        ("cold", "cold: no gene-stats cache, 2 passes"),
        ("warm", "warm: gene-stats cache, 1 pass"),
    ):
        res = run_worker(args, "scanpy", cache=cache)
        t_atlas = float(np.median(res["times"]))
        rows.append(
            (
                f"scanpy loop (20 sigs), {what}",
                f"{t_sc * scale:.1f} s{note}",
                f"{t_atlas:.2f} s (store, out of core; runs {', '.join(f'{x:.2f}' for x in res['times'])})",
                f"{t_sc * scale / t_atlas:.0f}x",
                f"max |diff| {diff:.1e} on {n_sub:,} cells" if cache == "cold" else "",
                f"{res['peak_rss_mb'] / 1024:.2f} GB",
            )
        )
    rows.append(
        (
            f"  same {n_sub:,} cells in memory",
            f"{t_sc:.1f} s",
            f"{t_in:.2f} s (counts, fused normalise)",
            f"{t_sc / t_in:.0f}x",
            "",
            "",
        )
    )
    res_m = run_worker(args, "mean")
    rows.append(
        (
            "mean (20 sigs, one pass)",
            "",
            f"{np.median(res_m['times']):.2f} s (store)",
            "",
            "",
            f"{res_m['peak_rss_mb'] / 1024:.2f} GB",
        )
    )


def bench_rank(args, rows: list) -> None:
    import anndata as ad
    import decoupler as dc
    import pandas as pd
    import pyucell
    import scanpy as sc

    from atlas.score import score_signatures

    sigs = signatures(args.genes)
    n = min(args.cells, args.rank_cells)
    a = load_rows(args.store, n)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    net = pd.DataFrame([(s, g) for s, gs in sigs.items() for g in gs], columns=["source", "target"])
    t = time.perf_counter()
    dc.mt.aucell(a, net, tmin=1)
    t_dc = time.perf_counter() - t
    ref = a.obsm["score_aucell"]
    b = ad.AnnData(a.X, obs=a.obs[[]], var=a.var[[]])
    t = time.perf_counter()
    ours = score_signatures(b, sigs, method="aucell", backend="cpu", chunk_size=args.chunk_size)
    t_at = time.perf_counter() - t
    ok = ref.index.equals(ours.index)
    diff = max(float(np.abs(ours.loc[ref.index, s].to_numpy() - ref[s].to_numpy()).max()) for s in sigs)
    corr = min(float(np.corrcoef(ours.loc[ref.index, s], ref[s])[0, 1]) for s in sigs)
    rows.append(
        (
            f"AUCell, {n:,} cells",
            f"{t_dc:.1f} s (decoupler)",
            f"{t_at:.2f} s",
            f"{t_dc / t_at:.0f}x",
            f"max |diff| {diff:.1e}, min r {corr:.6f}{'' if ok else ' (decoupler dropped empty cells)'}",
            "",
        )
    )
    t = time.perf_counter()
    pyucell.compute_ucell_scores(a, sigs, max_rank=1500, n_jobs=1)  # loky would pickle the AnnData per task
    t_uc = time.perf_counter() - t
    t = time.perf_counter()
    ours = score_signatures(b, sigs, method="ucell", backend="cpu", chunk_size=args.chunk_size, max_rank=1500)
    t_at = time.perf_counter() - t
    diff = max(float(np.abs(ours[s].to_numpy() - a.obs[f"{s}_UCell"].to_numpy()).max()) for s in sigs)
    corr = min(float(np.corrcoef(ours[s], a.obs[f"{s}_UCell"])[0, 1]) for s in sigs)
    rows.append(
        (
            f"UCell, {n:,} cells",
            f"{t_uc:.1f} s (pyUCell, n_jobs=1)",
            f"{t_at:.2f} s",
            f"{t_uc / t_at:.0f}x",
            f"max |diff| {diff:.1e}, min r {corr:.6f}",
            "",
        )
    )


def bench_gpu(args, rows: list) -> None:
    from atlas.core.backend import gpu_available

    if not gpu_available():
        rows.append(("GPU", "", "skipped: no GPU answers", "", "", ""))
        return
    import cupy as cp
    import cupyx.scipy.sparse as csp
    import scipy.sparse as sp

    from atlas.score.matrix import score_matrix

    a = load_rows(args.store, args.cells)
    x = sp.csr_matrix(a.X)
    names = a.var_names
    sets = [names.get_indexer(g) for g in signatures(args.genes).values()]
    d = csp.csr_matrix((cp.asarray(x.data), cp.asarray(x.indices), cp.asarray(x.indptr)), shape=x.shape)
    dev = cp.cuda.Device()
    bw = dev.attributes["MemoryClockRate"] * 1e3 * 2 * dev.attributes["GlobalMemoryBusWidth"] / 8
    nbytes = x.data.nbytes + x.indices.nbytes + x.indptr.nbytes
    for method in ("mean", "scanpy", "ucell", "aucell"):
        score_matrix(d, sets, method=method, backend="gpu", chunk_size=args.cells)  # compile
        ts = []
        for _ in range(3):
            cp.cuda.Device().synchronize()
            t = time.perf_counter()
            score_matrix(d, sets, method=method, backend="gpu", chunk_size=args.cells)
            cp.cuda.Device().synchronize()
            ts.append(time.perf_counter() - t)
        t = float(np.median(ts))
        bound = nbytes / bw
        rows.append(
            (
                f"GPU {method}, resident {args.cells:,} cells",
                f"{bound * 1e3:.1f} ms (one pass at {bw / 1e9:.0f} GB/s)",
                f"{t * 1e3:.1f} ms",
                f"{t / bound:.1f}x bound",
                "",
                "",
            )
        )
    try:
        import rapids_singlecell as rsc
    except ImportError:
        rows.append(("GPU rapids-singlecell", "not installed", "", "", "", ""))
        return
    import anndata as ad

    g = ad.AnnData(d, var=a.var[[]])
    rsc.pp.normalize_total(g, target_sum=1e4)
    rsc.pp.log1p(g)
    cp.cuda.Device().synchronize()
    t = time.perf_counter()
    for name, genes in signatures(args.genes).items():
        rsc.tl.score_genes(g, genes, score_name=name, random_state=0)
    cp.cuda.Device().synchronize()
    t_r = time.perf_counter() - t
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        score_matrix(d, sets, method="scanpy", backend="gpu", chunk_size=args.cells)
        cp.cuda.Device().synchronize()
        ts.append(time.perf_counter() - t)
    rows.append(
        (
            "GPU scanpy vs rapids-singlecell loop",
            f"{t_r:.2f} s",
            f"{np.median(ts):.3f} s",
            f"{t_r / np.median(ts):.0f}x",
            "",
            "",
        )
    )


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=ROOT / "bench_data")
    p.add_argument("--cells", type=int, default=1_000_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--nnz", type=int, default=1_000, help="stored values per cell (mean)")
    p.add_argument(
        "--scanpy-cells", type=int, default=100_000, help="cells scanpy is timed on (scaled linearly)"
    )
    p.add_argument("--rank-cells", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-size", type=int, default=50_000, help="cells per chunk (atlas score's default)")
    p.add_argument("--sections", default="scanpy,rank", help="comma list of: scanpy, rank")
    p.add_argument("--gpu", action="store_true", help="also run the GPU section (needs a GPU)")
    p.add_argument("--no-append", action="store_true", help="do not append to benchmarks/score.md")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--method", default="scanpy", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--cache", default="warm", choices=("cold", "warm"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        warm_numba()
        print(json.dumps(worker_atlas(args)))
        return
    args.data_dir.mkdir(parents=True, exist_ok=True)
    args.store = args.data_dir / f"counts_{args.cells}x{args.genes}_{args.nnz}.h5ad"
    if not args.store.exists():
        t = time.perf_counter()
        make_store(args.store, args.cells, args.genes, args.nnz)
        print(f"wrote {args.store} in {time.perf_counter() - t:.0f} s", flush=True)
    warm_numba()
    load_before = load_average()
    rows: list[tuple] = []
    sections = set(args.sections.split(","))
    for name, fn in (("scanpy", bench_scanpy), ("rank", bench_rank), ("gpu", bench_gpu)):
        if name in sections or (name == "gpu" and args.gpu):
            n0 = len(rows)
            fn(args, rows)
            for r in rows[n0:]:
                print(" | ".join(map(str, r)), flush=True)
    head = ("comparison", "peer", "atlas", "speed-up", "agreement", "atlas peak RSS")
    table = "\n".join("| " + " | ".join(map(str, r)) + " |" for r in [head, ("---",) * len(head), *rows])
    nnz = os.path.getsize(args.store) / 1e9
    text = (
        f"\n## {dt.datetime.now().isoformat(timespec='minutes')}\n\n- machine: {machine()}\n"
        f"- load average (1/5/15 min, shared machine): {load_before} at the start, {load_average()} at the end\n"
        f"- command: `python {shlex.join(sys.argv)}`\n- data: {args.cells:,} cells x {args.genes:,} genes, "
        f"~{args.nnz} stored counts per cell, 20 signatures of 30-200 genes (store {nnz:.1f} GB)\n\n{table}\n"
    )
    print(text)
    if not args.no_append:
        with open(ROOT / "benchmarks" / "score.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
