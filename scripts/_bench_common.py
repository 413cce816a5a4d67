"""Helpers shared by the benchmark scripts: machine description, child-process peak memory, recording."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The synthetic data of the tests (tests/helpers: toy atlas, reference runs) serve the benchmarks too;
# appended, so nothing under tests/ shadows an installed module.
if str(REPO / "tests") not in sys.path:
    sys.path.append(str(REPO / "tests"))


def machine() -> str:
    """One line describing this machine: cores, CPU model, memory, Python."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {cpu}, {mem_gib:.0f} GiB RAM, Python {platform.python_version()}"


def run_measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run a command in a child process; return wall seconds and the child's peak RSS (GiB).

    Each measurement runs in its own ``/usr/bin/time``-free wrapper: a fresh Python child reports its
    own ``ru_maxrss`` so earlier children do not mask it.
    """
    wrapper = (
        "import resource, subprocess, sys, json, time; t=time.perf_counter(); "
        "rc=subprocess.call(sys.argv[1:]); "
        "print(json.dumps({'rc': rc, 'seconds': time.perf_counter()-t, "
        "'peak_rss_gib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/2**20}), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    last = proc.stderr.strip().splitlines()[-1]
    out = json.loads(last)
    if out["rc"] != 0:
        raise RuntimeError(f"command failed ({out['rc']}): {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    return out


def markdown_table(rows: list[dict], cols: list[str] | None = None) -> list[str]:
    """A Markdown table's lines: ``cols`` (default: the first row's keys) of every row (missing -> empty)."""
    cols = cols or list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]


def record(markdown_file: str, title: str, rows: list[dict], command: str, notes: str = "") -> None:
    """Append a result table with machine, command and date to ``benchmarks/<markdown_file>``."""
    path = REPO / "benchmarks" / markdown_file
    lines = [f"\n## {title} ({time.strftime('%Y-%m-%d %H:%M')})", "", f"- machine: {machine()}",
             f"- command: `{command}`"]
    if notes:
        lines.append(f"- notes: {notes}")
    lines += ["", *markdown_table(rows)]
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")
