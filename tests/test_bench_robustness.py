"""scripts/bench_robustness.py's cross-cohort table (the summary logic it shares with each section)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_robustness.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_robustness", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _run(precision: float, peer_precision: float, f1: float) -> dict:
    return {"point": "p", "seed": 0, "timing": {"atlas_s": 1.0, "peer_s": 1.0},
            "atlas": {"neutrophil_precision": precision, "state_macro_f1": f1},
            "peer": {"neutrophil_precision": peer_precision}}  # fmt: skip


def test_standing_table_counts_targets_worst_values_and_the_peer_per_set():
    bench = _bench()
    table = bench.standing_table({
        "sim": [_run(0.99, 0.90, 0.80), _run(0.95, 0.97, 0.65)],
        "other": [_run(0.85, 0.80, 0.71)],
    })  # fmt: skip
    lines = table.splitlines()
    assert lines[0] == "| figure | target | sim (2 runs) | other (1 run) |"
    precision = next(line for line in lines if line.startswith("| neutrophil precision |"))
    assert "2/2 (worst 0.950); >= peer 1/2" in precision and "0/1 (worst 0.850); >= peer 1/1" in precision
    f1 = next(line for line in lines if line.startswith("| state macro-F1 |"))
    assert "1/2 (worst 0.650) |" in f1 and "1/1 (worst 0.710) |" in f1 and "peer" not in f1
    assert not any(line.startswith("| ↳") for line in lines)  # only figures with a target


def test_an_unknown_grid_point_is_named_with_the_known_ones():
    br = _bench()
    assert br._grid_problem(["hard", "independent", "independent_rare_droplet_neutrophils", "independent_fixed_qc"]) is None
    problem = br._grid_problem(["hard", "independent_rare"])
    assert problem.startswith("--grid independent_rare:") and "weak_markers" in problem
    assert "independent_extra_types" in problem and "independent_rare_droplet_neutrophils" in problem


def test_a_qc_point_runs_on_its_cohort_with_its_own_ingest_qc(tmp_path):
    import yaml

    br = _bench()
    cohort = br._cohort_dir(tmp_path, "independent", 3)
    assert br._cohort_dir(tmp_path, "independent_fixed_qc", 3) == cohort and cohort.name == "independent-seed3.data"
    cohort.mkdir()
    (cohort / "ingest.yaml").write_text(yaml.safe_dump({"datasets": [{"id": "d", "path": "datasets/d.h5ad"}]}))
    cfg = yaml.safe_load(br.write_config(tmp_path, "independent_fixed_qc", 3, 1000, 2).read_text())
    assert cfg["run_dir"] == str(tmp_path / "independent_fixed_qc-seed3") and cfg["simulate"] is None
    ingest = yaml.safe_load(Path(cfg["ingest"]).read_text())
    assert Path(cfg["ingest"]).parent == cohort and ingest["qc"] == {"thresholds": {"mode": "fixed"}}
    assert ingest["datasets"] == [{"id": "d", "path": "datasets/d.h5ad"}]  # relative to the cohort, as before


def test_help_prints():  # argparse formats help with %: a bare "8 %" in a help text crashed --help
    import subprocess

    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    assert "independent_doublets_scrublet" in out and "8 % doublets" in out
