"""The ``atlas query`` command (registered on the main app in :mod:`atlas.cli`; imports stay light)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..core.errors import AtlasError

__all__ = ["query"]


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out = {}
    for v in values or []:
        key, sep, val = v.partition("=")
        if not sep or not key.strip():
            raise AtlasError(f"{option} {v!r}: write FIELD=VALUE, e.g. {option} tissue=blood")
        out[key.strip()] = val.strip()
    return out


def query(
    refdir: Annotated[str, typer.Argument(  # a str: a Path would collapse s3:// URLs
        metavar="REFDIR", help="Run directory of `atlas run` (or a bundle of `atlas integrate`); path or URL (s3://, "
        "gs://: copied to a local cache, $ATLAS_CACHE_DIR or ~/.cache/atlas, reused while unchanged).")],
    query_input: Annotated[str, typer.Argument(  # a str: a Path would collapse s3:// URLs
        metavar="QUERY", help="Ingest YAML (one or more data sets) or one data file/10x directory (path or URL: "
        "s3://, gs://).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder (query.h5ad, report.html, tables/); path or URL "
                                     "(built locally, uploaded once complete).")],
    dataset_id: Annotated[str | None, typer.Option(help="Data set id of a single-file query (default: file name).")] = None,
    species: Annotated[str | None, typer.Option(help="human or mouse (mouse genes -> human orthologues).")] = None,
    format: Annotated[str | None, typer.Option(help="auto, h5ad, 10x_h5, 10x_mtx, csv or tsv.")] = None,
    counts: Annotated[str | None, typer.Option(help="Where raw counts are: X, raw or layers/<name> (h5ad).")] = None,
    obs_path: Annotated[str | None, typer.Option(help="csv/tsv of cell metadata (mtx/csv inputs; path or URL).")] = None,
    obs_column: Annotated[list[str] | None, typer.Option(
        "--obs-column", help="FIELD=COLUMN: schema field from a metadata column (repeatable).")] = None,
    constant: Annotated[list[str] | None, typer.Option(
        "--constant", help="FIELD=VALUE: one value for every cell (repeatable), e.g. tissue=blood.")] = None,
    gene_ids: Annotated[str | None, typer.Option(help="auto, symbol or ensembl.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML of query settings (atlas.query.QuerySettings; a `query:` section or top level).")] = None,
    label_key: Annotated[str | None, typer.Option(help="Reference obs column to transfer (default cell_type).")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="Query training epochs (default 100 on a GPU, 10 on the CPU).", min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(help="Cells per mini-batch (default 1024).", min=16)] = None,
    uncertainty_threshold: Annotated[float | None, typer.Option(
        help="Cells above this uncertainty are labelled unknown (default 0.5).")] = None,
    state_method: Annotated[str | None, typer.Option(
        help="Neutrophil states from each cell's own evidence at the reference's cuts (evidence, the default) or the "
        "nearest reference neutrophils' vote (knn).")] = None,
    marker_check: Annotated[bool | None, typer.Option(
        "--marker-check/--no-marker-check", help="Call the query's own cell types from its markers and mark cells "
        "of a type the reference lacks unknown (default on).")] = None,
    min_overlap: Annotated[float | None, typer.Option(
        help="Error below this share of reference HVGs measured (default 0.5).")] = None,
    accelerator: Annotated[str | None, typer.Option(help="auto, cpu or gpu.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the query training.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Map a new data set onto the reference: scArches, labels with uncertainty, UMAP placement, scores, report."""
    from ..core.settings import read_yaml, settings_with_flags
    from . import map_query
    from .settings import QuerySettings

    data = read_yaml(config) if config is not None else {}
    settings = settings_with_flags(QuerySettings, data.get("query", data), str(config or "command-line options"),
                                   label_key=label_key, max_epochs=max_epochs, batch_size=batch_size,
                                   min_overlap=min_overlap, uncertainty_threshold=uncertainty_threshold,
                                   accelerator=accelerator, seed=seed, state_method=state_method,
                                   marker_check=marker_check)  # fmt: skip
    res = map_query(refdir, query_input, out, settings=settings, overwrite=overwrite, dataset_id=dataset_id,
                    species=species, format=format, counts=counts, obs_path=obs_path,
                    obs_columns=_pairs(obs_column, "--obs-column"), constants=_pairs(constant, "--constant"),
                    gene_ids=gene_ids)  # fmt: skip
    top = ", ".join(f"{k} {v:,}" for k, v in sorted(res.predictions.items(), key=lambda kv: -kv[1])[:6])
    typer.echo(f"{res.n_cells:,} query cells mapped ({res.overlap:.0%} of the reference HVGs measured; "
               f"{res.unknown_fraction:.1%} unknown): {top}")
    typer.echo(f"written to {res.out_dir}: query.h5ad, report.html, tables/ ({res.seconds['total']:.0f} s)")
    for note in res.notes:
        typer.echo(f"note: {note}")
