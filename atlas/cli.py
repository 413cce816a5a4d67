"""The ``atlas`` command line.

Every command has ``--help``. User errors (bad input, bad config, occupied outputs) print one
paragraph and exit with status 2; ``--verbose`` adds the traceback. Unexpected failures exit 1.
"""

from __future__ import annotations

import logging
import os
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Annotated

import typer

from . import __version__
from .core.errors import AtlasError
from .core.progress import set_progress_enabled

app = typer.Typer(
    name="atlas",
    help="Build a pan-cancer neutrophil atlas and score neutrophil reprogramming (Ng et al. 2024) on GPU or CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"verbose": False}
log = logging.getLogger("atlas")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (as rich's handler does)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _configure_logging(level: int) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False,
                                               rich_tracebacks=False, log_time_format="[%X]")
    else:  # a log file or a batch job's log: one unwrapped, dated line per record
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("atlas")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Libraries we call are chatty (Lightning's GPU/TPU lines, tips, deprecation warnings); keep the
    # terminal to atlas's own lines unless --verbose.
    from .core.log import quiet_third_party

    quiet_third_party(verbose=level <= logging.DEBUG)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"atlas {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bars.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging and tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """atlas: pan-cancer neutrophil atlas and reprogramming scores."""
    _state["verbose"] = verbose
    _configure_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    set_progress_enabled(not quiet)


# --------------------------------------------------------------------------------------- simulate
@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the data sets and ingest.yaml to.")],
    n_cells: Annotated[int, typer.Option(help="Total cells over all data sets.", min=200)] = 20_000,
    n_datasets: Annotated[int, typer.Option(help="Number of data sets (studies); >= 6 covers every cancer type and format.", min=1)] = 8,
    n_genes: Annotated[int, typer.Option(help="Genes per human data set (real symbols).", min=2_000)] = 15_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
    chunk_size: Annotated[int, typer.Option(help="Cells generated per chunk (bounds memory).", min=100)] = 20_000,
    overwrite: Annotated[bool, typer.Option(help="Replace a different simulation already in --out.")] = False,
    difficulty: Annotated[str, typer.Option(
        help="Difficulty preset: default, weak_markers, confounded or hard (see atlas.simulate.difficulty).")] = "default",
) -> None:
    """Simulate tumour scRNA-seq data sets with known neutrophil states and reprogramming (the ground truth).

    Writes h5ad, 10x mtx and csv data sets with realistic differences between studies, truth tables
    under OUT/truth/, and OUT/ingest.yaml, which `atlas ingest OUT/ingest.yaml --out STORE` accepts as is.
    --difficulty makes the cohort harder (weaker markers, shallower neutrophils, ambient RNA, confounders).
    """
    from .simulate import simulate as _simulate

    res = _simulate(out, n_cells=n_cells, n_datasets=n_datasets, n_genes=n_genes, seed=seed,
                    chunk_size=chunk_size, overwrite=overwrite, difficulty=difficulty)
    typer.echo(f"simulated data written to {out}; ingest it with: atlas ingest {res.ingest_config} --out store.h5ad")


# ----------------------------------------------------------------------------------------- ingest
@app.command()
def ingest(
    config: Annotated[Path, typer.Argument(help="Ingest YAML listing the data sets (e.g. the simulator's ingest.yaml).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store to write: .h5ad or .zarr.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store at --out.")] = False,
    chunk_size: Annotated[int | None, typer.Option(help="Cells read per chunk (overrides the config).", min=100)] = None,
) -> None:
    """Read, harmonise (genes, orthologues, metadata), QC and concatenate data sets into one on-disk store."""
    from .ingest.settings import load_ingest_config

    if out.suffix not in (".h5ad", ".zarr"):
        raise AtlasError(f"--out {out}: the store must end in .h5ad or .zarr")
    cfg = load_ingest_config(config)
    from .ingest.stage import ingest as _ingest

    if chunk_size is not None:
        cfg.chunk_size = chunk_size
    from .ingest.removed import removed_store_path
    from .ingest.stage import side_table_path

    res = _ingest(cfg, out, overwrite=overwrite)
    qc = res.qc
    typer.echo(f"store written to {res.store}: {res.n_cells:,} cells x {res.n_genes:,} genes from "
               f"{len(qc)} data sets in {res.elapsed_s:.1f} s "
               f"({int(qc['cells_in'].sum()):,} cells read, {int(qc['cells_out'].sum()):,} kept by QC)")
    typer.echo(f"tables: {side_table_path(res.store, 'qc')}, {side_table_path(res.store, 'genes')}, "
               f"{side_table_path(res.store, 'neutrophils')}; cells removed above the floor: "
               f"{removed_store_path(res.store)}")


# -------------------------------------------------------------------------------------- integrate
@app.command()
def integrate(
    store: Annotated[Path, typer.Argument(help="Store (.h5ad or .zarr) with raw counts, e.g. from `atlas ingest`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Reference bundle directory to write.")],
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML of integrate settings (the `integrate:` section of a pipeline config).")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="scVI epochs (default: auto, enough epochs for train_steps gradient steps).", min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(help="Cells per mini-batch (default 128).", min=16)] = None,
    n_hvgs: Annotated[int | None, typer.Option(help="Highly variable genes (default 4,000).", min=50)] = None,
    data_loader: Annotated[str | None, typer.Option(help="fast (matrix on the device once) or scvi.")] = None,
    accelerator: Annotated[str | None, typer.Option(help="auto, cpu or gpu.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bundle at --out.")] = False,
) -> None:
    """Integrate data sets with scVI (scvi-tools): HVGs, model, UMAP/Leiden, scib-metrics, and a reference bundle."""
    from .core.settings import read_yaml, settings_with_flags
    from .integrate.settings import IntegrateSettings

    data = read_yaml(config) if config is not None else {}
    source = str(config or "command-line options")
    settings = settings_with_flags(IntegrateSettings, data.get("integrate", data), source, max_epochs=max_epochs,
                                   batch_size=batch_size, n_hvgs=n_hvgs, data_loader=data_loader,
                                   accelerator=accelerator)  # fmt: skip
    if not store.exists():
        raise AtlasError(f"store {store} does not exist; create one with `atlas ingest CONFIG --out {store}`")
    from .integrate import integrate_store

    res = integrate_store(store, out, settings, overwrite=overwrite)
    if not res.written:  # a DDP worker other than rank 0
        rank = os.environ.get("RANK") or os.environ.get("LOCAL_RANK", "?")
        typer.echo(f"DDP worker (rank {rank}): trained; rank 0 writes the bundle to {res.refdir}")
        return
    typer.echo(f"reference bundle written to {res.refdir}: {res.n_cells:,} cells, {res.n_hvgs:,} HVGs, "
               f"model {res.model}")


# ------------------------------------------------------------------------------------------ score
@app.command()
def score(
    store: Annotated[str, typer.Argument(help="Store (.h5ad or .zarr) with raw counts in X, e.g. from `atlas ingest`; "
                                         "path or URL (s3://, gs://: streamed, not downloaded).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Parquet table to write (cells x signatures); path or URL.")],
    signatures: Annotated[list[str] | None, typer.Option(
        "--signatures", "-s",
        help="Registry name or GMT/YAML file (repeatable); default: the T3 proxy, hallmarks and neutrophil states.")] = None,
    method: Annotated[str | None, typer.Option(help="scanpy (score_genes, the default), aucell, ucell or mean.")] = None,
    backend: Annotated[str | None, typer.Option(help="auto (default), cpu or gpu (gpu never falls back silently).")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Cells per chunk streamed from disk (default 50,000).", min=100)] = None,
    layer: Annotated[str | None, typer.Option(help="Score layers/<LAYER> instead of X.")] = None,
    random_state: Annotated[int | None, typer.Option(help="Seed of the control-gene draw (scanpy method; default 0).")] = None,
    max_rank: Annotated[int | None, typer.Option(help="UCell max rank / AUCell top genes (default 1,500).", min=10)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Score gene signatures on every cell of a store, all signatures in one pass, out of core (CPU or GPU)."""
    from .core import storage
    from .core.errors import RunDirError
    from .core.settings import settings_with_flags
    from .score.settings import ScoreConfig

    store, out = storage.location(store), storage.location(out)
    if not storage.name(out).endswith(".parquet"):
        raise AtlasError(f"--out {out}: write the scores to a .parquet file")
    if storage.exists(out) and not overwrite:
        raise RunDirError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    storage.require(store, "store ", f"create one with `atlas ingest CONFIG --out {store}`")
    from .score import score_store

    s = settings_with_flags(ScoreConfig, None, "command-line options", signatures=signatures or None, method=method,
                            backend=backend, chunk_size=chunk_size, random_state=random_state, max_rank=max_rank)
    table = score_store(store, s.signature_arg(), out_path=out, layer=layer, **s.kwargs())
    typer.echo(f"{table.shape[1]} signature scores for {table.shape[0]:,} cells written to {out}")


signatures_app = typer.Typer(help="The shipped signature registry: list, show, export.", no_args_is_help=True)
app.add_typer(signatures_app, name="signatures")


@signatures_app.command("list")
def signatures_list(
    kind: Annotated[str | None, typer.Option(help="published, published_markers or proxy.")] = None,
    species: Annotated[str | None, typer.Option(help="human or mouse.")] = None,
) -> None:
    """List shipped signatures with their kind, species, size and source."""
    from .score import list_signatures

    table = list_signatures(kind=kind, species=species)
    for _, r in table.iterrows():
        typer.echo(f"{r['name']:<40} {r['kind']:<18} {r['species']:<6} {r['n_genes']:>4}  {r['citation'][:60]}")


@signatures_app.command("show")
def signatures_show(
    name: Annotated[str, typer.Argument(help="Signature name (see `atlas signatures list`).")],
    species: Annotated[str | None, typer.Option(help="Also translate the genes to this species.")] = None,
) -> None:
    """Show one signature: genes, provenance, renamed symbols."""
    import yaml

    from .score import show_signature

    typer.echo(yaml.safe_dump(show_signature(name, species=species), sort_keys=False, width=110))


@signatures_app.command("export")
def signatures_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write (.gmt or .yaml).")],
    names: Annotated[list[str] | None, typer.Argument(help="Signatures to export (default: all).")] = None,
) -> None:
    """Export shipped signatures as GMT (MSigDB format) or YAML, chosen by the file suffix."""
    from .score import export_signatures

    fmt = "yaml" if out.suffix in (".yaml", ".yml") else "gmt"
    export_signatures(names or None, format=fmt, path=out)
    typer.echo(f"wrote {out}")


# ---------------------------------------------------------------------------------------- analyse
@app.command()
def analyse(
    rundir: Annotated[Path, typer.Argument(help="Run directory of `atlas run` (after its integrate and score stages).")],
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML of analysis settings (the `analyse:` section of a pipeline config).")] = None,
) -> None:
    """Find neutrophils, re-integrate them, assign states, reprogramming index and pseudotime, patient statistics."""
    from .analyse.settings import AnalysisSettings
    from .analyse.stage import analyse as run_analysis
    from .core.layout import RunLayout
    from .core.settings import read_yaml, settings_with_flags, validate
    from .pipeline.config import PipelineConfig
    from .pipeline.rundir import RunDir
    from .pipeline.stages import Context, refdir_path, scores_path, scoring_options, store_path

    resolved = RunLayout(rundir).config_resolved
    if not resolved.exists():
        raise AtlasError(f"{rundir} is not an atlas run directory ({resolved.name} is missing); "
                         "run `atlas run CONFIG` first")
    cfg = validate(PipelineConfig, read_yaml(resolved), str(resolved))
    cfg.run_dir = rundir
    if config is not None:
        data = read_yaml(config)
        cfg.analyse = settings_with_flags(AnalysisSettings, data.get("analyse", data), str(config))
    ctx = Context(config=cfg)
    for needed in (store_path(ctx), refdir_path(ctx)):
        if not needed.exists():
            raise AtlasError(f"{needed} is missing; run the ingest and integrate stages (`atlas run`) first")
    scores = scores_path(ctx)
    with RunDir(rundir, cfg.name):  # the run lock: no `atlas run` may work in this directory meanwhile
        res = run_analysis(rundir, store=store_path(ctx), refdir=refdir_path(ctx),
                           scores=scores if scores.exists() else None, settings=cfg.analyse or AnalysisSettings(),
                           scoring=scoring_options(ctx), subatlas_base=cfg.integrate)
    states = ", ".join(f"{k} {v:,}" for k, v in res.states.items())
    typer.echo(f"{res.n_neutrophils:,} neutrophils among {res.n_cells:,} cells ({states or 'no states'}); "
               f"atlas.h5ad, neutrophils.h5ad and tables/ written to {rundir}")
    for note in res.notes:
        typer.echo(f"note: {note}")


# ----------------------------------------------------------------------------------------- report
@app.command()
def report(
    rundir: Annotated[str, typer.Argument(help="Run directory of `atlas run` or `atlas demo`; path or URL (s3://, gs://: "
                                          "its outputs are cached locally, the report is uploaded beside them).")],
    out: Annotated[str | None, typer.Option("--out", "-o", help="HTML file to write (default RUNDIR/report.html); "
                                            "path or URL.")] = None,
) -> None:
    """Write the atlas report: one self-contained HTML file (figures embedded) plus PNG/PDF figures."""
    from .core import storage
    from .report import write_report

    path = write_report(rundir, out=out)
    typer.echo(f"report written to {path} (figures in {storage.join(storage.parent(path), 'figures')}); open it in "
               "any browser, offline")


# ------------------------------------------------------------------------------------------ query
from .query.cli import query as _query  # noqa: E402  (the command lives with the query package)

app.command(name="query")(_query)


# -------------------------------------------------------------------------------------------- run
def _print_run(result) -> None:
    if result.stages:  # per-stage time and peak memory (also in provenance.json's run_summary)
        typer.echo(result.table())
    if result.ran:
        typer.echo(f"ran: {', '.join(f'{s} ({result.seconds[s]:.1f} s)' for s in result.ran)}")
    if result.skipped:
        typer.echo(f"skipped (unchanged): {', '.join(result.skipped)}")
    typer.echo(f"run directory: {result.run_dir}")
    if result.local_dir and result.local_dir != result.run_dir:
        typer.echo(f"working copy: {result.local_dir}")
    from .core.layout import RunLayout

    report = RunLayout(result.local_dir or result.run_dir).report
    if report.exists():
        typer.echo(f"report: {report.resolve()}")


StageOpt = Annotated[list[str] | None, typer.Option("--force", help="Rerun this stage even if unchanged (repeatable; 'all' for every stage).")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Stop after this stage.")]


@app.command()
def run(
    config: Annotated[str, typer.Argument(help="Pipeline YAML (see configs/): a path or a URL (s3://...).")],
    force: StageOpt = None,
    until: UntilOpt = None,
    force_lock: Annotated[bool, typer.Option(
        "--force-lock", help="run_dir URL: take its .lock even if another run seems to hold it (docs/cloud.md).")] = False,
) -> None:
    """Run the pipeline; a rerun skips stages whose inputs and settings are unchanged and resumes after a crash."""
    from .pipeline import run_pipeline
    from .pipeline.config import load_pipeline_config

    cfg = load_pipeline_config(config)
    _print_run(run_pipeline(cfg, force=force or (), until=until, force_lock=force_lock))


@app.command()
def demo(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Where the demo run goes.")] = Path("atlas_demo"),
    n_cells: Annotated[int | None, typer.Option(help="Override the demo's cell count.", min=200)] = None,
    force: StageOpt = None,
) -> None:
    """Run the whole pipeline on a built-in simulated pan-cancer cohort (no downloads, CPU is enough)."""
    from .pipeline import run_pipeline
    from .pipeline.demo import demo_config

    result = run_pipeline(demo_config(run_dir, n_cells=n_cells), force=force or ())
    _print_run(result)


@app.command()
def validate(
    config: Annotated[str, typer.Argument(help="Pipeline or ingest YAML to check: a path or a URL (s3://...).")],
) -> None:
    """Check a pipeline or ingest config and print it with every default filled in."""
    import yaml

    from .core.settings import read_yaml
    from .ingest.settings import load_ingest_config
    from .pipeline.config import load_pipeline_config

    data = read_yaml(config)
    cfg = load_ingest_config(config) if "datasets" in data else load_pipeline_config(config)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    typer.echo(f"# {config}: valid {type(cfg).__name__}", err=True)


# ------------------------------------------------------------------------------------------- main
def _paragraph(prefix: str, text: str) -> str:
    """The message as one paragraph: wrapped at 100 columns on a terminal, one line per line in a log or
    pipe (so a log can be searched for the message whatever the length of the paths it names)."""
    lines = str(text).strip().splitlines() or [""]
    if not sys.stderr.isatty():
        return "\n".join([f"{prefix}{lines[0]}", *lines[1:]])
    head = textwrap.fill(f"{prefix}{lines[0]}", width=100, subsequent_indent="  ",
                         break_on_hyphens=False, break_long_words=False)  # keep paths whole
    return "\n".join([head, *lines[1:]])


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``atlas`` console script."""
    # Standalone mode: the CLI library handles --help and usage errors itself (exit 0 / 2) by raising
    # SystemExit; our own exceptions come through to the handlers below.
    try:
        app(args=argv, prog_name="atlas")
    except KeyboardInterrupt:
        typer.echo("interrupted; outputs are written atomically, so rerun to resume", err=True)
        sys.exit(130)
    except AtlasError as e:
        if _state["verbose"]:
            traceback.print_exc()
        typer.echo(_paragraph("error: ", str(e)), err=True)
        sys.exit(2)
    except MemoryError:
        typer.echo("error: out of memory; lower chunk_size in the config or use a larger machine", err=True)
        sys.exit(1)
    except Exception as e:  # an atlas bug or an unexpected library failure
        if _state["verbose"]:
            traceback.print_exc()
        typer.echo(_paragraph("internal error: ", f"{type(e).__name__}: {e}") +
                   "\n  rerun with --verbose for the traceback, and report it if the input looks valid", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
