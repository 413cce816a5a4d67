"""Benchmark ingest: atlas vs the scanpy/anndata in-memory approach, and atlas alone at 1M cells.

    python scripts/bench_ingest.py --n-cells 1000000 --n-datasets 12 --peer-cells 100000

1. Simulates ``--peer-cells`` cells and ingests them with atlas and with the peer
   (``scripts/naive_ingest_peer.py``: read everything with scanpy/anndata, ``anndata.concat``, write),
   each in a fresh process; prints wall time, peak RSS and the ratios.
2. Simulates ``--n-cells`` cells (>= 10 files) and ingests them with atlas alone (the peer would not
   fit in memory at that size); prints throughput (cells/s) and peak RSS against the 4 GB target.
Results are appended to benchmarks/ingest.md with the machine and command. Data go under --data
(git-ignored ``bench_data/`` by default) and are reused when already simulated.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import REPO, record, run_measured  # noqa: E402

ATLAS = [sys.executable, "-m", "atlas.cli", "-q"]


def simulate(out: Path, n_cells: int, n_datasets: int, seed: int) -> dict:
    meta = out / "simulation.json"
    if meta.exists():
        print(f"reusing simulated data in {out}")
        return {"seconds": float("nan"), "peak_rss_gib": float("nan")}
    print(f"simulating {n_cells:,} cells in {n_datasets} data sets into {out} ...", flush=True)
    return run_measured([*ATLAS, "simulate", "--out", str(out), "--n-cells", str(n_cells),
                         "--n-datasets", str(n_datasets), "--seed", str(seed)])


def n_files(sim_dir: Path) -> int:
    import yaml

    return len(yaml.safe_load((sim_dir / "ingest.yaml").read_text())["datasets"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-cells", type=int, default=1_000_000)
    ap.add_argument("--n-datasets", type=int, default=12)
    ap.add_argument("--peer-cells", type=int, default=100_000, help="scale of the atlas-vs-peer comparison (0 skips)")
    ap.add_argument("--data", type=Path, default=REPO / "bench_data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    rows = []

    if args.peer_cells:
        sim = args.data / f"sim_{args.peer_cells}"
        simulate(sim, args.peer_cells, args.n_datasets, args.seed)
        ours = run_measured([*ATLAS, "ingest", str(sim / "ingest.yaml"), "--out", str(sim / "atlas_store.h5ad"),
                             "--overwrite"])
        peer = run_measured([sys.executable, str(REPO / "scripts" / "naive_ingest_peer.py"),
                             str(sim / "ingest.yaml"), str(sim / "peer_store.h5ad")])
        for name, r in (("atlas ingest", ours), ("scanpy/anndata in memory (peer)", peer)):
            rows.append({"cells": f"{args.peer_cells:,}", "files": n_files(sim), "tool": name,
                         "seconds": f"{r['seconds']:.1f}", "cells/s": f"{args.peer_cells / r['seconds']:,.0f}",
                         "peak RSS GiB": f"{r['peak_rss_gib']:.2f}"})
        rows.append({"cells": f"{args.peer_cells:,}", "files": n_files(sim), "tool": "ratio peer/atlas",
                     "seconds": f"{peer['seconds'] / ours['seconds']:.2f}x", "cells/s": "",
                     "peak RSS GiB": f"{peer['peak_rss_gib'] / ours['peak_rss_gib']:.2f}x"})

    if args.n_cells:
        sim = args.data / f"sim_{args.n_cells}"
        s = simulate(sim, args.n_cells, args.n_datasets, args.seed)
        ours = run_measured([*ATLAS, "ingest", str(sim / "ingest.yaml"), "--out", str(sim / "atlas_store.h5ad"),
                             "--overwrite"])
        rows.append({"cells": f"{args.n_cells:,}", "files": n_files(sim), "tool": "atlas ingest",
                     "seconds": f"{ours['seconds']:.1f}", "cells/s": f"{args.n_cells / ours['seconds']:,.0f}",
                     "peak RSS GiB": f"{ours['peak_rss_gib']:.2f} (target <= 3.73 GiB = 4 GB)"})
        if s["seconds"] == s["seconds"]:  # not NaN: it was simulated in this run
            rows.append({"cells": f"{args.n_cells:,}", "files": n_files(sim), "tool": "atlas simulate",
                         "seconds": f"{s['seconds']:.1f}", "cells/s": f"{args.n_cells / s['seconds']:,.0f}",
                         "peak RSS GiB": f"{s['peak_rss_gib']:.2f}"})

    width = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in rows[0]}
    print("  ".join(k.ljust(width[k]) for k in rows[0]))
    for r in rows:
        print("  ".join(str(r[k]).ljust(width[k]) for k in r))
    if not args.no_record:
        record("ingest.md", "Ingest: atlas vs scanpy/anndata in memory", rows,
               "python " + shlex.join(["scripts/bench_ingest.py", *sys.argv[1:]]),
               notes="peer = scripts/naive_ingest_peer.py (no harmonisation/QC: a lower bound of its cost); "
                     "each tool in a fresh process, peak RSS from getrusage(RUSAGE_CHILDREN)")
    print(json.dumps({"recorded": not args.no_record}))


if __name__ == "__main__":
    main()
