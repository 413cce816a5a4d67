"""``simulate``: write a messy multi-study neutrophil atlas with known ground truth.

Output folder::

    DIR/simulation.json          parameters, seed, atlas version, status, per-data-set file list
    DIR/ingest.yaml              ingest configuration (atlas.ingest.settings.IngestConfig) for the data sets
    DIR/datasets/...             the data sets (h5ad files, 10x mtx directories, csv.gz + metadata csv)
    DIR/truth/patients.csv       per patient: cancer type, platform, expected and realised T3 fraction
    DIR/truth/cancer_types.csv   per cancer type: mean T3 fraction parameter and realised fraction
    DIR/truth/genes.csv          per gene: names, marker of, neutrophil programme effects
    DIR/truth/difficulty.json    difficulty knobs (atlas.simulate.Difficulty) and what they did: neutrophil
                                 median UMIs per platform, T3_proxy genes the T3 programme uses, their
                                 replacements, SPP1/VEGFA-high macrophages per data set, obs column names

Randomness comes from ``numpy.random.SeedSequence(seed, spawn_key=...)`` streams (design, profiles,
each data set's cells and batch effects, each block of counts), so output does not depend on
``chunk_size`` or on the number of threads. Non-default difficulty knobs draw from their own streams
(keys 5 and 6), so at the default difficulty the output is that of earlier versions, byte for byte.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..core.atomic import write_json, write_table
from ..core.errors import AtlasError, RunDirError
from ..core.progress import track
from . import biology as bio
from .design import DatasetSpec, design_datasets, draw_cells, neutrophil_median_umis
from .difficulty import DIFFICULTY_PRESETS, Difficulty
from .genes import build_gene_table, feature_table, gene_names
from .ingest_yaml import ingest_yaml_text
from .sampler import BLOCK, DatasetModel
from .writers import CsvWriter, H5adWriter, MtxWriter

log = logging.getLogger(__name__)

SIMULATOR_VERSION = 2  # bump when the same parameters would give different data


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate` wrote.

    Attributes
    ----------
    out_dir
        The output folder.
    ingest_config
        Path of ``ingest.yaml``.
    cells_per_dataset
        Data set id -> number of cells.
    genes
        The simulated human gene symbols (the mouse data set keeps those with a 1:1 orthologue).
    skipped
        True when the folder already held this simulation and nothing was written.
    """

    out_dir: Path
    ingest_config: Path
    cells_per_dataset: dict[str, int]
    genes: tuple[str, ...] = field(repr=False)
    skipped: bool = False


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _check_out_dir(out: Path, params: dict, overwrite: bool) -> dict | None:
    """Decide what to do with an existing folder; returns the old simulation.json if any."""
    meta = out / "simulation.json"
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out} is a file, not a folder; give a folder for the simulation")
    if not out.exists() or not any(out.iterdir()):
        return None
    if not meta.is_file():
        if overwrite:
            return None
        raise RunDirError(
            f"{out} is not empty and holds no simulation.json, so it is not a simulation folder; "
            "choose an empty or new folder (or pass overwrite=True / --overwrite)"
        )
    try:
        old = json.loads(meta.read_text())
    except json.JSONDecodeError:
        old = {}
    if old.get("parameters") != params and not overwrite:
        raise RunDirError(
            f"{out} already holds a simulation with different parameters ({old.get('parameters')}) than "
            f"requested ({params}); choose another folder or pass overwrite=True (--overwrite) to replace it"
        )
    return old


def _remove_old_outputs(out: Path, old: dict, keep: set[str]) -> None:
    import shutil

    for rel in old.get("files", []):
        p = out / rel
        if rel in keep or not p.exists():
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
        log.info("removed %s from the previous simulation", p)


def _soup_cdf(profiles: bio.Profiles, cells, batch: np.ndarray, sample_batch: np.ndarray) -> np.ndarray:
    """(n_samples, n_genes) cumulative ambient profile of each sample: its cells' expression, UMI-weighted.

    As the soup of empty droplets, it is the sum of the sample's cells' expected counts, so abundant
    and RNA-rich cells dominate it (neutrophil programmes and damaged cells' MT excess are left out).
    """
    n_prof, n_genes = profiles.logw.shape
    n_samples = len(cells.samples)
    profile = cells.profile if cells.profile is not None else cells.ctype
    lib_sum = np.zeros((n_samples, n_prof))
    np.add.at(lib_sum, (cells.sample, profile), cells.lib)
    soup = np.zeros((n_samples, n_genes))
    for s in range(n_samples):
        w = np.exp(profiles.logw + batch + sample_batch[s])
        soup[s] = (lib_sum[s][:, None] * w / w.sum(axis=1, keepdims=True)).sum(axis=0)
    return np.cumsum(soup, axis=1)


def _model(spec: DatasetSpec, cells, profiles: bio.Profiles, seed: int,
           difficulty: Difficulty | None = None) -> DatasetModel:  # fmt: skip
    """Kernel inputs of one data set: profiles with data-set and sample batch effects."""
    d = difficulty or Difficulty()
    rb = _rng(seed, 3, spec.index)
    n_prof, n_genes = profiles.logw.shape
    n_types = profiles.support.shape[0]
    k = profiles.support.shape[1]
    sd = 0.5 if spec.species == "mouse" else rb.uniform(0.3, 0.5)
    batch = rb.normal(0.0, sd, n_genes)
    if d.batch_strength != 1.0:
        batch = d.batch_strength * batch
    n_samples = len(cells.samples)
    sample_batch = rb.normal(0.0, 0.1, (n_samples, n_genes))
    all_genes = np.arange(n_genes)
    bg_genes = np.stack([np.setdiff1d(all_genes, profiles.support[t]) for t in range(n_types)])
    sup_w = np.empty((n_samples * n_prof, k))
    bg_cdf = np.empty((n_samples * n_prof, n_genes - k))
    for s in range(n_samples):
        for r in range(n_prof):
            t = profiles.profile_type[r]
            lw = profiles.logw[r] + batch + sample_batch[s]
            sup_w[s * n_prof + r] = np.exp(lw[profiles.support[t]])
            bg_cdf[s * n_prof + r] = np.cumsum(np.exp(lw[bg_genes[t]]))
    profile = cells.profile if cells.profile is not None else cells.ctype
    soup = _soup_cdf(profiles, cells, batch, sample_batch) if d.ambient_fraction > 0 else None
    eff_pos = np.flatnonzero(np.any(profiles.effects != 0, axis=0))
    n_blocks = -(-spec.n_cells // BLOCK)
    block_seeds = _rng(seed, 4, spec.index).integers(0, 2**32 - 1, size=n_blocks, dtype=np.int64)
    return DatasetModel(
        support=profiles.support, sup_w=sup_w, sup_theta=profiles.theta[profiles.support],
        sup_mt=profiles.is_mt[profiles.support], eff_pos=eff_pos, effects=profiles.effects[:, eff_pos],
        bg_genes=bg_genes, bg_cdf=bg_cdf,
        ctype=cells.ctype.astype(np.int64), prof=(cells.sample * n_prof + profile).astype(np.int64),
        lib=cells.lib, mt_factor=np.exp(cells.log_mt), wprog=cells.wprog, block_seeds=block_seeds,
        neutrophil=bio.NEUTROPHIL, n_genes=n_genes, ambient=float(d.ambient_fraction),
        csample=cells.sample.astype(np.int64), soup_cdf=soup,
    )  # fmt: skip


def _write_dataset(out: Path, spec: DatasetSpec, cells, model: DatasetModel, genes, chunk_size: int,
                   n_jobs: int) -> list[str]:  # fmt: skip
    """Write one data set; returns its files relative to ``out``."""
    names, keep = gene_names(genes, spec.gene_kind)
    keep_arr = np.asarray(keep) if len(keep) < len(genes.symbols) else None
    barcodes = list(cells.obs.index)
    obs = cells.obs.copy()
    base = out / "datasets"
    if spec.format == "h5ad":
        files = [f"datasets/{spec.id}.h5ad"]
        for col in obs.columns:
            if pd.api.types.is_string_dtype(obs[col].dtype):  # object (pandas 2) or str (pandas 3)
                obs[col] = obs[col].astype("category")
        writer = H5adWriter(base / f"{spec.id}.h5ad", obs, pd.DataFrame(index=pd.Index(names)), spec.counts)
    else:
        meta = f"datasets/{spec.id}_metadata.csv"
        write_table(out / meta, obs.rename_axis("barcode"))
        if spec.format == "10x_mtx":
            files = [f"datasets/{spec.id}_mtx", meta]
            writer = MtxWriter(base / f"{spec.id}_mtx", feature_table(genes, spec.gene_kind), barcodes)
        else:
            files = [f"datasets/{spec.id}.csv.gz", meta]
            writer = CsvWriter(base / f"{spec.id}.csv.gz", names, barcodes)
    n_chunks = -(-spec.n_cells // (max(1, chunk_size // BLOCK) * BLOCK))
    with writer:
        for start, chunk in track(model.chunks(chunk_size, n_jobs), f"simulating {spec.id}", n_chunks):
            writer.append(start, chunk[:, keep_arr] if keep_arr is not None else chunk)
    return files


def _truth_tables(specs: list[DatasetSpec], all_cells: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    for spec, cells in zip(specs, all_cells, strict=True):
        obs = cells.obs
        patient = cells.samples["patient"].to_numpy()[cells.sample]
        tissue = cells.samples["tissue"].to_numpy()[cells.sample]
        neut = (obs["truth_cell_type"] == "neutrophil").to_numpy()
        t3 = (obs["truth_state"] == "T3").to_numpy()
        for _, p in cells.patients.iterrows():
            mine = patient == p["patient"]
            tn = mine & neut & (tissue == "tumour")
            rows.append({
                "dataset": spec.id, "patient": p["patient"], "cancer_type": spec.cancer_type,
                "species": spec.species, "platform": spec.platform,
                "expected_t3_fraction": p["t3_fraction"],
                "realised_t3_fraction": t3[tn].mean() if tn.any() else np.nan,
                "n_tumour_neutrophils": int(tn.sum()), "n_neutrophils": int((mine & neut).sum()),
                "n_cells": int(mine.sum()),
            })  # fmt: skip
    patients = pd.DataFrame(rows)
    ct_rows = []
    for ct, (mean, long_name) in bio.CANCER_TYPES.items():
        sub = patients[patients["cancer_type"] == ct]
        n_tn = int(sub["n_tumour_neutrophils"].sum())
        n_t3 = float((sub["realised_t3_fraction"].fillna(0) * sub["n_tumour_neutrophils"]).sum())
        ct_rows.append({
            "cancer_type": ct, "name": long_name, "mean_t3_fraction": mean,
            "adjacent_normal_t3_factor": bio.ADJACENT_T3_FACTOR,
            "realised_t3_fraction": n_t3 / n_tn if n_tn else np.nan,
            "mean_patient_t3_fraction": sub["expected_t3_fraction"].mean() if len(sub) else np.nan,
            "n_datasets": int(sub["dataset"].nunique()), "n_patients": len(sub), "n_tumour_neutrophils": n_tn,
        })  # fmt: skip
    return patients, pd.DataFrame(ct_rows)


def _gene_truth(genes, profiles: bio.Profiles) -> pd.DataFrame:
    df = pd.DataFrame({"symbol": genes.symbols, "ensembl_id": genes.ensembl, "mouse_symbol": genes.mouse})
    df["outdated_symbol"] = [genes.outdated.get(s, "") for s in genes.symbols]
    marker_of = {g: t for t, gs in bio.MARKERS.items() for g in gs}
    df["marker_of"] = [marker_of.get(s, "") for s in genes.symbols]
    sup = profiles.support[bio.NEUTROPHIL]
    for p, name in enumerate(bio.PROGRAMS):
        eff = np.zeros(len(genes.symbols))
        eff[sup] = profiles.effects[p]
        df[f"neutrophil_{name}_logfc"] = eff
    df["t3_up"] = np.isin(np.arange(len(df)), profiles.t3_genes)
    return df.set_index("symbol")


def _difficulty_truth(diff: Difficulty, given, specs: list[DatasetSpec], all_cells: list, genes,
                      profiles: bio.Profiles) -> dict:  # fmt: skip
    """``truth/difficulty.json``: the knobs and what they did (UMI medians, T3 genes, extra macrophages)."""
    sym = np.asarray(genes.symbols)
    proxy = [g for g in bio.state_gene_sets()["T3_proxy"] if g in set(genes.symbols)]
    used = set(sym[profiles.t3_proxy_used])
    n_tam = {spec.id: 0 if c.profile is None else int((c.profile >= len(bio.CELL_TYPES)).sum())
             for spec, c in zip(specs, all_cells, strict=True)}  # fmt: skip
    named = [name for name, p in DIFFICULTY_PRESETS.items() if p == diff]
    preset = given if isinstance(given, str) else (named[0] if named else None)
    return {
        "preset": preset,
        "knobs": diff.model_dump(mode="json"),
        "changed": diff.changed(),
        "neutrophil_median_umis": {p: neutrophil_median_umis(p, diff) for p in bio.PLATFORMS},
        "t3_programme": {
            "t3_proxy_genes_used": [g for g in proxy if g in used],
            "t3_proxy_genes_not_used": [g for g in proxy if g not in used],
            "replacement_genes": sym[profiles.t3_replacements].tolist(),
        },
        "vegfa_high_macrophages": n_tam,
        "obs_columns": {spec.id: spec.obs_columns() for spec in specs},
    }


def simulate(
    out_dir: str | os.PathLike,
    *,
    n_cells: int = 20_000,
    n_datasets: int = 8,
    n_genes: int = 15_000,
    seed: int = 0,
    chunk_size: int = 20_000,
    overwrite: bool = False,
    n_jobs: int | None = None,
    difficulty: Difficulty | str | dict | None = None,
) -> SimulationResult:
    """Simulate a multi-study tumour scRNA-seq atlas with known neutrophil reprogramming.

    Parameters
    ----------
    out_dir
        Output folder (created). A folder holding a simulation with other parameters is an error
        unless ``overwrite``; one holding the same complete simulation is left as it is (skipped).
    n_cells
        Total cells over all data sets (exact).
    n_datasets
        Number of data sets (studies); with 6 or more every kind of messiness occurs.
    n_genes
        Number of genes (real human symbols; at least the ~1,300 signature/marker genes).
    seed
        Seed of every random draw; the same arguments give the same data.
    chunk_size
        Cells drawn and written at a time (bounds memory; does not change the output).
    overwrite
        Replace an existing simulation in ``out_dir``.
    n_jobs
        Threads drawing counts (default: up to 4 CPUs); does not change the output.
    difficulty
        Difficulty knobs (:class:`atlas.simulate.Difficulty`), a preset name (``default``,
        ``weak_markers``, ``confounded``, ``hard``) or a mapping of knobs; None = default (the
        simulator's usual output, byte for byte). Written to ``truth/difficulty.json``; a non-default
        difficulty is part of the parameters in ``simulation.json``.

    Returns
    -------
    SimulationResult
    """
    if seed < 0:
        raise AtlasError(f"seed={seed}: give a non-negative integer seed")
    if chunk_size < 1:
        raise AtlasError(f"chunk_size={chunk_size}: give a positive number of cells")
    out = Path(out_dir)
    diff = Difficulty.resolve(difficulty)
    params = {"n_cells": int(n_cells), "n_datasets": int(n_datasets), "n_genes": int(n_genes), "seed": int(seed),
              "simulator_version": SIMULATOR_VERSION}  # fmt: skip
    if not diff.is_default:  # the default keeps the parameters (and so existing folders) of earlier versions
        params["difficulty"] = diff.changed()
    old = _check_out_dir(out, params, overwrite)
    if old and old.get("parameters") == params and old.get("status") == "complete" and not overwrite:
        if all((out / f).exists() for f in old.get("files", [])):
            log.info("%s already holds this simulation (same parameters, complete); skipping", out)
            genes = tuple(pd.read_csv(out / "truth" / "genes.csv", usecols=["symbol"])["symbol"])
            return SimulationResult(
                out, out / "ingest.yaml", dict(old["cells_per_dataset"]), genes, skipped=True
            )
        log.info("%s holds this simulation but files are missing; regenerating", out)
    elif old:
        log.info("%s holds an earlier simulation; regenerating", out)
    n_jobs = n_jobs or min(4, os.cpu_count() or 1)
    t0 = time.perf_counter()

    genes = build_gene_table(n_genes, bio.extra_genes())
    specs = design_datasets(_rng(seed, 0), n_cells, n_datasets, obs_style=diff.obs_style)
    profiles = bio.build_profiles(genes, _rng(seed, 1), diff, _rng(seed, 5))
    meta = {"status": "running", "parameters": params, "chunk_size": chunk_size, "atlas_version": __version__,
            "files": [], "datasets": [], "cells_per_dataset": {s.id: s.n_cells for s in specs}}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "simulation.json", {**meta, "files": (old or {}).get("files", [])})
    log.info("simulating %d cells in %d data sets, %d genes, seed %d -> %s", n_cells, n_datasets,
             len(genes.symbols), seed, out)  # fmt: skip

    all_cells, files = [], []
    for spec in specs:
        cells = draw_cells(_rng(seed, 2, spec.index), spec, diff, _rng(seed, 6, spec.index))
        model = _model(spec, cells, profiles, seed, diff)
        ds_files = _write_dataset(out, spec, cells, model, genes, chunk_size, n_jobs)
        all_cells.append(cells)
        files.extend(ds_files)
        meta["datasets"].append({"id": spec.id, "files": ds_files, "n_cells": spec.n_cells,
                                 "cancer_type": spec.cancer_type, "species": spec.species,
                                 "platform": spec.platform, "format": spec.format, "counts": spec.counts,
                                 "gene_ids": spec.gene_kind, "tissues": list(spec.tissues)})  # fmt: skip
        log.info("wrote %s (%d cells, %s, %s, %s)", spec.id, spec.n_cells, spec.format, spec.platform,
                 spec.species)  # fmt: skip

    patients, cancer_types = _truth_tables(specs, all_cells)
    write_table(out / "truth" / "patients.csv", patients.set_index("dataset"))
    write_table(out / "truth" / "cancer_types.csv", cancer_types.set_index("cancer_type"))
    write_table(out / "truth" / "genes.csv", _gene_truth(genes, profiles))
    write_json(out / "truth" / "difficulty.json", _difficulty_truth(diff, difficulty, specs, all_cells, genes, profiles))
    from ..core.atomic import write_text

    write_text(out / "ingest.yaml", ingest_yaml_text(specs, all_cells, params, __version__))
    files += ["truth/patients.csv", "truth/cancer_types.csv", "truth/genes.csv", "truth/difficulty.json",
              "ingest.yaml"]
    if old:
        _remove_old_outputs(out, old, set(files) | {"simulation.json"})
    meta.update(status="complete", files=files)
    write_json(out / "simulation.json", meta)
    log.info("simulation complete in %.1f s: %s", time.perf_counter() - t0, out / "ingest.yaml")
    return SimulationResult(out, out / "ingest.yaml", meta["cells_per_dataset"], genes.symbols)
