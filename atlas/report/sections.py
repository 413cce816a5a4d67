"""The sections of the atlas report, one function each: ``(HtmlReport, RunInputs) -> None``.

Each section states what is missing instead of failing (no neutrophils, analysis not run, no
metrics...). Numbers shown in tables come straight from the run's CSVs (formatted by
:func:`atlas.report.html.fmt_num`); figures are drawn from the same tables or from the cells.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..core import storage
from . import plots
from .html import HtmlReport, fmt_interval, fmt_num
from .inputs import RunInputs

NO_INTERVAL = "single patient: no interval"
#: Score columns shown on UMAPs and as distributions, when the run has them (in this order).
KEY_SCORES = ("reprogramming_index", "T3_proxy", "blood_like", "HALLMARK_HYPOXIA", "HALLMARK_GLYCOLYSIS",
              "HALLMARK_ANGIOGENESIS")
UNIT = "Patients, not cells, are the unit of the statistics: cells of one patient are not independent."


# ------------------------------------------------------------------------------------- helpers
def _ci(inputs: RunInputs) -> str:
    lvl = inputs.ci_level
    return f"{lvl * 100:g} % interval" if lvl else "interval"


#: What the report says of the per-cancer intervals, per ``analyse.statistics.interval``: the summary's sentence,
#: the forest plot's "from ...", its sentence on single patients, and the note naming them.
INTERVAL_TEXT = {
    "hierarchical": {
        "summary": "Intervals are for the mean over all patients of a cancer type, not only those sampled: from a "
                   "beta-binomial model of the patients (wide when a cancer type has few patients).",
        "how": "a beta-binomial model of the patients; Student's t for the index",
        "single_caption": "A cancer type with a single patient has a wide bar from the model's prior on how patients "
                          "differ (a pointer, not an estimate) and no bar for the index.",
        "single_note": "its interval rests on the model's prior for how much patients differ, not on data: read it "
                       "as a pointer",
    },
    "bootstrap": {
        "summary": "Intervals are bootstrap intervals over patients.",
        "how": "a bootstrap over patients",
        "single_caption": "A point without a bar had a single patient: no interval.",
        "single_note": "no interval (it needs two patients)",
    },
}  # fmt: skip


def _cell(t: pd.DataFrame | None, column: str) -> str:
    """The first row's ``column`` of a one-row table as text ('' when the table, column or value is missing)."""
    if t is None or column not in t or pd.isna(t[column].iloc[0]):
        return ""
    return str(t[column].iloc[0])


def _built_on_index(t: pd.DataFrame | None) -> str:
    """The index-vs-pseudotime table's warning when the pseudotime is built on the index ('' otherwise)."""
    if "reprogramming_index" not in _cell(t, "contrast"):
        return ""
    check = ("; axis_spearman, the gene axis learned from the start and end cells, is the independent check"
             if _cell(t, "axis_spearman") else "")  # fmt: skip
    return f" (the pseudotime is built on the index here, so the two agree by construction{check})"


def _pseudotime_caption(inputs) -> str:
    """What the pseudotime column is, from the method the analysis recorded (index_vs_pseudotime.csv)."""
    t = inputs.table("index_vs_pseudotime")
    method = _cell(t, "method")  # table(): None when empty
    ends = [_cell(t, c) for c in ("start_cells", "end_cells")]
    ends = f" ({ends[0]} -> {ends[1]})" if all(ends) else ""
    if method == "signature":
        genes = [_cell(t, c) for c in ("n_axis_genes", "axis_genes_up", "axis_genes_down")]
        axis = f"; {genes[0]} genes, rising {genes[1] or '-'}, falling {genes[2] or '-'}" if genes[0] else ""
        both = _cell(t, "combined_with")
        both = f", averaged with the state contrast {both} (each standardised)" if both else ""
        return ("pseudotime: each neutrophil's score on the genes that tell the T3-like end of the trajectory from its "
                f"start{ends} (compared within data sets: large effect, FDR-controlled; weighted by their mean difference{axis})"
                f"{both}, scaled to 0-1")  # fmt: skip
    if method == "distance_ratio":
        return ("pseudotime: each neutrophil's relative position in the sub-atlas latent between the start and the "
                f"T3-like end of the trajectory{ends}, d_start / (d_start + d_end) scaled to 0-1")  # fmt: skip
    if method == "state_contrast":
        text = ("pseudotime: the T3-like end's evidence (the reprogramming index by default) minus the immature state's "
                "(standardised within the neutrophils) scaled to 0-1")  # fmt: skip
        if _cell(t, "fallback_from"):
            return f"{text}; no gene told the trajectory's start from its end on its own here"
        rho, n_genes = _cell(t, "axis_spearman"), _cell(t, "n_axis_genes")
        if rho and n_genes not in ("", "0"):
            return (f"{text}; cross-check: the score on the {n_genes} genes that tell its start from its end{ends} "
                    f"orders the neutrophils with Spearman {float(rho):.2f} to it")  # fmt: skip
        return f"{text}; no gene told the trajectory's start from its end on its own here, so it has no cross-check"
    if method == "harmonic":
        return ("pseudotime: the probability that a random walk on the neutrophil graph from the cell reaches the "
                "most T3-like neutrophils before the start of the trajectory (0 = start, 1 = T3-like end)")  # fmt: skip
    if method == "dpt":
        return "diffusion pseudotime on the neutrophil graph (0 = start cell; higher = further along)"
    return "pseudotime along the neutrophil trajectory (0 = start of the trajectory; higher = further along)"


def _neutrophils(inputs: RunInputs) -> pd.DataFrame | None:
    """Obs of the atlas's neutrophils (``None`` when the analysis has not run)."""
    a = inputs.atlas
    if a is None or a.neutrophil_mask is None:
        return None
    return a.obs.loc[a.neutrophil_mask]


def _n_neutrophils(inputs: RunInputs) -> int | None:
    y = inputs.table("neutrophil_yield")
    if y is not None and "n_neutrophils" in y:
        return int(y["n_neutrophils"].sum())
    neut = _neutrophils(inputs)
    return None if neut is None else len(neut)


def _ranking_order(inputs: RunInputs) -> list[str] | None:
    r = inputs.table("ranking")
    if r is None or "cancer_type" not in r:
        return None
    r = r.sort_values("rank") if "rank" in r else r
    return r["cancer_type"].astype(str).tolist()


def _cancer_order(inputs: RunInputs, present) -> list[str]:
    """Cancer types in ranking order (most reprogrammed first), then any others."""
    present = [str(x) for x in pd.unique(pd.Series(present).astype(str))]
    ranked = [c for c in (_ranking_order(inputs) or []) if c in present]
    return ranked + sorted(c for c in present if c not in ranked)


def _missing_tables(inputs: RunInputs, *names: str) -> list[str]:
    return [f"tables/{n}.csv" for n in names if inputs.table(n) is None]


def _no_analysis_note(rep: HtmlReport, inputs: RunInputs, what: str, *tables: str) -> bool:
    """Add a note and return True when this section has nothing to show.

    That is: the analysis has not run, it found no neutrophils, or all of ``tables`` are missing.
    """
    if not inputs.atlas_is_analysed and not inputs.layout.tables.is_dir():
        rep.note(f"The analysis stage has not run (no annotated atlas.h5ad, no tables/), so there is no {what}. "
                 "Run the pipeline to the end (`atlas run CONFIG`), then `atlas report RUNDIR`.", "warn")
        return True
    if _n_neutrophils(inputs) == 0:
        rep.note(f"No neutrophils were found in this run, so there is no {what}.", "warn")
        return True
    missing = _missing_tables(inputs, *tables)
    if tables and len(missing) == len(tables):
        rep.note(f"No {what}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing or empty.", "warn")
        return True
    return False


def _intervals_table(df: pd.DataFrame, ci: str) -> pd.DataFrame:
    """The ranking/cancer-type table for reading: estimates beside their interval."""
    out = pd.DataFrame()
    for col, name in (("rank", "rank"), ("cancer_type", "cancer type"), ("tissue", "tissue"),
                      ("n_patients", "patients"), ("n_neutrophils", "neutrophils")):
        if col in df:
            out[name] = df[col].to_numpy()
    for est, label, iv in (("t3_fraction", "T3-like fraction", ci), ("mean_index", "mean index", f"{ci} (index)")):
        if est in df:
            out[label] = df[est].to_numpy(dtype=float)
            if f"{est}_lo" in df and f"{est}_hi" in df:
                out[iv] = [fmt_interval(a, b) for a, b in zip(df[f"{est}_lo"], df[f"{est}_hi"], strict=True)]
    if "note" in df:
        out["note"] = df["note"].fillna("").astype(str).to_numpy()
    else:  # the analysis stage should say it; say it here when it did not
        lo = df.get("t3_fraction_lo")
        single = (df["n_patients"] == 1) if "n_patients" in df else pd.Series(False, index=df.index)
        out["note"] = np.where(single.to_numpy() & (lo.isna().to_numpy() if lo is not None else True),
                               NO_INTERVAL, "")
    return out


# ------------------------------------------------------------------------------------- header
def summary(rep: HtmlReport, inputs: RunInputs) -> None:
    """Headline numbers and the "which cancers reprogram" answer, above the contents."""
    a = inputs.atlas
    items: list[tuple[str, object]] = []
    if a is not None:
        o = a.obs
        items.append(("cells", a.n_cells))
        for col, label in (("dataset_id", "data sets"), ("cancer_type", "cancer types")):
            if col in o:
                items.append((label, int(o[col].nunique())))
        if a.has("cancer_type", "patient_id"):
            items.append(("patients", int(o[["cancer_type", "patient_id"]].drop_duplicates().shape[0])))
    n_neut = _n_neutrophils(inputs)
    if n_neut is not None:
        items.append(("neutrophils", n_neut))
        if a is not None and a.n_cells:
            items.append(("neutrophils, % of cells", 100.0 * n_neut / a.n_cells))
    if a is not None and a.has("neutrophil_state"):
        items.append(("T3-like neutrophils", int((a.obs["neutrophil_state"].astype(str) == "T3").sum())))
    if items:
        rep.stats(items)
    if a is None:
        rep.note("No atlas was found in this run (neither atlas.h5ad nor reference/atlas.h5ad): the integrate "
                 "and analysis stages have not run. The sections below show what exists.", "warn")
    elif not inputs.atlas_is_analysed:
        rep.note("The analysis stage has not run: this report shows the integrated reference "
                 "(reference/atlas.h5ad) without neutrophil identification, states or statistics.", "warn")
    for n in inputs.notes:
        rep.note(f"Analysis note: {n}", "warn")
    for p in inputs.problems:
        rep.note(f"Could not read {p}", "warn")

    r = inputs.table("ranking")
    if r is None:
        if inputs.atlas_is_analysed:
            rep.note("No ranking of cancer types: tables/ranking.csv is missing or empty"
                     + (" (no neutrophils found)." if n_neut == 0 else "."), "warn")
        return
    ci = _ci(inputs)
    r = r.sort_values("rank") if "rank" in r else r
    parts = []
    for _, row in r.head(3).iterrows():
        iv = fmt_interval(row.get("t3_fraction_lo"), row.get("t3_fraction_hi"))
        iv = f"{ci} {iv}" if iv != "–" else NO_INTERVAL
        parts.append(f"{row['cancer_type']} ({fmt_num(row['t3_fraction'])}; {iv}; "
                     f"{fmt_num(row.get('n_patients'))} patients)")
    rep.paragraph(
        "Which cancers reprogram their neutrophils? Ranked by the T3-like fraction of tumour neutrophils "
        f"(mean over patients), the strongest are: {'; '.join(parts)}. {INTERVAL_TEXT[inputs.interval_method]['summary']} Overlapping "
        "intervals mean the ranking between those cancer types is not settled.")
    rep.table(_intervals_table(r, ci), "Which cancers reprogram: cancer types ranked by the T3-like fraction of "
              f"tumour neutrophils, with {ci}s over patients. " + UNIT, csv_name="ranking.csv",
              table_id="headline")


# ------------------------------------------------------------------------------------- sections
def ranking(rep: HtmlReport, inputs: RunInputs) -> None:
    """Per-cancer T3-like fractions and mean indices with intervals: forest plot and tables."""
    if _no_analysis_note(rep, inputs, "per-cancer statistics", "cancer_types", "ranking"):
        return
    ci = _ci(inputs)
    ct = inputs.table("cancer_types")
    src = ct if ct is not None else inputs.table("ranking")
    order = _cancer_order(inputs, src["cancer_type"])
    estimates = [(c, f"{c}_lo", f"{c}_hi", lab) for c, lab in
                 (("t3_fraction", "T3-like fraction of neutrophils"), ("mean_index", "mean reprogramming index"))
                 if {c, f"{c}_lo", f"{c}_hi"} <= set(src.columns)]
    if estimates:
        fig = plots.forest_plot(src, label="cancer_type", estimates=estimates,
                                hue="tissue" if "tissue" in src else None, order=order)
        text = INTERVAL_TEXT[inputs.interval_method]
        rep.figure(fig, f"Per cancer type and tissue: the T3-like fraction of neutrophils (left) and the mean "
                   f"reprogramming index (right), each the mean over patients with its {ci} ({text['how']}). Cancer types are in ranking order (most reprogrammed tumour neutrophils first). "
                   f"{text['single_caption']} A cancer type none of whose patients has enough "
                   f"neutrophils is pooled over its cells (see the notes). {UNIT}", name="forest_t3_fraction")
    if "n_patients" in src:
        one = src[src["n_patients"] == 1]
        single = [f"{r.cancer_type} ({str(r.tissue).replace('_', ' ')})" if "tissue" in one else str(r.cancer_type)
                  for r in one.itertuples()]
        if single:
            rep.note(f"{', '.join(single)}: single patient: {INTERVAL_TEXT[inputs.interval_method]['single_note']}.",
                     "warn")
        for r in src[src["n_patients"] == 0].itertuples():  # pooled rows of sparse groups carry their own note
            where = f"{r.cancer_type} ({str(r.tissue).replace('_', ' ')})" if "tissue" in src else str(r.cancer_type)
            rep.note(f"{where}: {getattr(r, 'note', 'pooled over few cells')}: read it as a pointer, not an estimate.",
                     "warn")
    r = inputs.table("ranking")
    if r is not None:
        rep.table(r, "The ranking table as written by the analysis (tumour neutrophils; lo/hi are the "
                  f"{ci} bounds).", csv_name="ranking.csv")
    if ct is not None:
        rep.table(ct, f"Per cancer type and tissue: patients, neutrophils, T3-like fraction and mean index with "
                  f"{ci} bounds (lo/hi); t3_call_confidence, where present, is the mean calibrated confidence of the "
                  f"group's T3 calls (their expected precision). {UNIT}", csv_name="cancer_types.csv", max_rows=100)


def atlas_umaps(rep: HtmlReport, inputs: RunInputs) -> None:
    """UMAPs of the whole atlas by metadata, cell type, neutrophil state and scores."""
    a = inputs.atlas
    if a is None or a.umap is None:
        rep.note("No UMAP: the atlas (atlas.h5ad or reference/atlas.h5ad with obsm['X_umap']) is missing.", "warn")
        return
    o, xy = a.obs, a.umap
    sub = (f" {plots.MAX_POINTS:,} randomly chosen cells of {a.n_cells:,} are drawn." if a.n_cells > plots.MAX_POINTS
           else "")
    rep.paragraph(f"The integrated atlas ({a.n_cells:,} cells; scVI latent space, UMAP for display only: "
                  f"distances on a UMAP are not quantitative).{sub}")
    for col, what, extra in (
            ("dataset_id", "data set (study)", "Well-mixed data sets within a cell type mean batch effects were removed."),
            ("cancer_type", "cancer type", "Immune and stromal cells should mix across cancer types; tumour "
             "epithelial cells may not (they differ between cancers)."),
            ("tissue", "tissue of origin", "Tumour, adjacent normal tissue and blood; blood neutrophils are the "
             "unreprogrammed reference."),
            ("cell_type", "annotated cell type", "Cell types called per cluster of an over-clustering of the "
             "integrated graph from the clusters' marker enrichment."),
            ("leiden", "Leiden cluster of the integrated graph", "")):
        if col not in o or (col == "leiden" and "cell_type" in o):
            continue
        fig = plots.umap_plot(xy, o[col], f"UMAP by {what}", name=col)
        rep.figure(fig, f"The whole atlas coloured by {what}. {extra}".strip(), name=f"umap_{col}", size="half")
    t = inputs.table("cell_type_clusters")
    if t is not None:
        rep.table(t, "Cell-type call per cluster of the over-clustered integrated graph: the winning and runner-up "
                  "types with their mean marker enrichment (per-cell noise units above the type's baseline), the "
                  "call (unknown when the runner-up is too close, nothing is enriched or the cluster is small), the "
                  "rule that made it, cells demoted or propagated (and those left unknown because their latent "
                  "neighbourhood disagreed with their own posterior), cells of a neutrophil call left unknown because "
                  "their own neutrophil confidence was too low (n_contested), the mean calibrated confidence, whether it is "
                  "neutrophil-like (called neutrophil, or unknown with neutrophil leading: its low-RNA cells may stay) "
                  "and the low-RNA cells the second QC pass left out (in a neutrophil-like cluster: those whose own "
                  "neutrophil confidence is below the cell-type rule's min_confidence).",
                  csv_name="cell_type_clusters.csv")
    _low_confidence_neutrophils(rep, o)
    mask = a.neutrophil_mask
    if a.has("neutrophil_state") and mask is not None:
        if mask.any():
            fig = plots.umap_plot(xy, o["neutrophil_state"], "UMAP: neutrophil states", name="neutrophil_state",
                                  highlight=mask)
            rep.figure(fig, f"Neutrophils ({int(mask.sum()):,} cells) coloured by their state; all other cells in "
                       "grey. T3 is the terminal tumour-reprogrammed state (dcTRAIL-R1+, hypoxic, VEGFA-high).",
                       name="umap_neutrophil_state", size="half")
        else:
            rep.note("No neutrophils were found, so the neutrophil-state UMAP is empty.", "warn")
    scores = {c: o[c] for c in KEY_SCORES if c in o and o[c].notna().any()}
    if scores:
        fig = plots.umap_grid(xy, scores, ncols=3)
        names = ", ".join(c + (" (neutrophils only; other cells grey)" if c == "reprogramming_index" else "")
                          for c in scores)
        rep.figure(fig, f"The whole atlas coloured by key scores: {names}. T3_proxy and the hallmark hypoxia, "
                   "glycolysis and angiogenesis scores rise with T3 reprogramming; blood_like falls. Colour scale: "
                   "1st to 99th percentile of each score.", name="umap_scores")
    elif not inputs.atlas_is_analysed:
        rep.note("No score columns found (scores.parquet missing): no score UMAPs.", "warn")


def _low_confidence_neutrophils(rep: HtmlReport, obs: pd.DataFrame) -> None:
    """How many cells of neutrophil clusters their own markers did not back (rule contested; with the gate off,
    those still called neutrophil: a strict set filters them)."""
    from ..analyse.celltypes import CONTESTED

    if "cell_type_rule" in obs:
        contested = int((obs["cell_type_rule"].astype(str) == CONTESTED).sum())
        if contested:
            rep.paragraph(f"{contested:,} cells of neutrophil clusters are unknown (rule contested): their own "
                          "calibrated neutrophil probability is below the cell-type rule's min_confidence, their "
                          "markers point to another type (contaminants, doublets or ambiguous cells the cluster call "
                          "would have kept; analyse.cell_types.confident_neutrophils).")  # fmt: skip
    if not {"is_neutrophil", "neutrophil_confidence"} <= set(obs):
        return
    neut = obs["is_neutrophil"].fillna(False).astype(bool).to_numpy()
    low = neut & (obs["neutrophil_confidence"].to_numpy(dtype=float) < 0.5)
    if low.any():
        rep.paragraph(f"{int(low.sum()):,} of {int(neut.sum()):,} neutrophils (cells of neutrophil clusters) have a "
                      "neutrophil_confidence below 0.5: their own markers point to another type (contaminants, "
                      "doublets or ambiguous low-RNA cells that the cluster call kept). For a strict neutrophil set, "
                      "filter on neutrophil_confidence >= 0.5 in atlas.h5ad.")  # fmt: skip


def subatlas(rep: HtmlReport, inputs: RunInputs) -> None:
    """The neutrophil sub-atlas: UMAP by state, index and pseudotime; index vs pseudotime."""
    if _no_analysis_note(rep, inputs, "neutrophil sub-atlas"):
        return
    n = inputs.neutrophils
    if n is None or n.umap is None or n.n_cells == 0:
        rep.note("No neutrophil sub-atlas (neutrophils.h5ad is missing: too few neutrophils to re-integrate on "
                 "their own, or the analysis has not run).", "warn")
    else:
        o, xy = n.obs, n.umap
        rep.paragraph(f"The {n.n_cells:,} neutrophils re-integrated on their own (their own HVGs and scVI model), "
                      "so their states are not dominated by differences from other cell types.")
        if "neutrophil_state" in o:
            rep.figure(plots.umap_plot(xy, o["neutrophil_state"], "Neutrophil sub-atlas: state",
                                       name="neutrophil_state"),
                       "Neutrophil sub-atlas coloured by state (immature, mature/blood-like, interferon, "
                       "antigen-presenting, T3; unassigned where two states are too close to call). "
                       + _state_rule_caption(inputs) + _expected_precision_caption(inputs),
                       name="subatlas_state", size="half")
            _unreliable_states_note(rep, inputs)
        for col, what in (("reprogramming_index", "reprogramming index: a per-cell position on the blood-like -> "
                           "T3 axis from signature scores (higher = more T3-like)"),
                          ("reprogramming_pseudotime", _pseudotime_caption(inputs))):
            if col in o and o[col].notna().any():
                rep.figure(plots.umap_plot(xy, o[col], f"Neutrophil sub-atlas: {col.replace('_', ' ')}",
                                           cmap="magma"),
                           f"Neutrophil sub-atlas coloured by the {what}.", name=f"subatlas_{col}", size="half")
        if "neutrophil_leiden" in o:
            rep.figure(plots.umap_plot(xy, o["neutrophil_leiden"], "Neutrophil sub-atlas: clusters"),
                       "Leiden clusters of the neutrophil sub-atlas; the state of each cluster (majority of its "
                       "cells) and its share are in the table below.",
                       name="subatlas_leiden", size="half")
    neut = _neutrophils(inputs)
    if neut is not None and {"reprogramming_index", "reprogramming_pseudotime"} <= set(neut.columns) and len(neut):
        ok = neut["reprogramming_index"].notna() & neut["reprogramming_pseudotime"].notna()
        if ok.sum() > 2:
            fig = plots.scatter_plot(neut.loc[ok, "reprogramming_pseudotime"], neut.loc[ok, "reprogramming_index"],
                                     xlabel="reprogramming pseudotime", ylabel="reprogramming index",
                                     title="Index vs pseudotime (neutrophils)")
            rep.figure(fig, "The two measures of reprogramming side by side, one dot per neutrophil: the "
                       "signature-based index and the pseudotime along the neutrophil trajectory. "
                       "Their Spearman correlation is in the table below.", name="index_vs_pseudotime", size="half")
    t = inputs.table("index_vs_pseudotime")
    if t is not None:
        rep.table(t, f"Spearman correlation between the reprogramming index and the pseudotime over neutrophils"
                  f"{_built_on_index(t)}.", csv_name="index_vs_pseudotime.csv")  # fmt: skip
    t = inputs.table("state_clusters")
    if t is not None:
        rep.table(t, "Clusters of the neutrophil sub-atlas: size, majority state and its share, and mean state "
                  "scores.", csv_name="state_clusters.csv")
    t = inputs.table("refined_signatures")
    if t is not None:
        cols = [c for c in ("signature", "refined", "programme", "n_seed_genes", "n_seed_genes_kept", "n_genes",
                            "iterations", "corr_with_signature", "top_genes", "reason") if c in t]  # fmt: skip
        rep.table(t[cols], "Signatures refined on these neutrophils: each registry signature the states and the index "
                  "read seeded a programme of the genes that co-vary with it within data sets; the states and the "
                  "index read the programme (column programme) instead of the signature where one was learned.",
                  csv_name="refined_signatures.csv")


def composition(rep: HtmlReport, inputs: RunInputs) -> None:
    """Cell-type and neutrophil-state composition per cancer type and tissue."""
    ct = inputs.table("cell_type_composition")
    st = inputs.table("state_composition")
    if ct is None and st is None:
        _no_analysis_note(rep, inputs, "composition", "cell_type_composition", "state_composition")
        return
    for df, cat, table, what in ((ct, "cell_type", "cell_type_composition", "cell types"),
                                 (st, "neutrophil_state", "state_composition", "neutrophil states")):
        if df is None:
            rep.note(f"No {what} composition: tables/{table}.csv is missing or empty"
                     + (" (no neutrophils found)." if _n_neutrophils(inputs) == 0 else "."), "warn")
            continue
        order = _cancer_order(inputs, df["cancer_type"])
        fig = plots.composition_bars(df, group="cancer_type", category=cat, facet="tissue" if "tissue" in df else None,
                                     name=cat, order=order)
        rep.figure(fig, f"Composition of {what} per cancer type (one bar each, ranking order) and tissue: the "
                   f"fraction of {'all cells' if cat == 'cell_type' else 'neutrophils'} pooled over the cancer "
                   "type's samples. Pooled fractions describe the data; capture differs by platform (droplet "
                   "platforms under-capture neutrophils), so compare within a tissue and see the patient-level "
                   "statistics for inference.", name=f"composition_{cat}")
        idx = [c for c in ("cancer_type", "tissue") if c in df]
        wide = df.pivot_table(index=idx, columns=cat, values="fraction", aggfunc="sum", observed=True).reset_index()
        wide.columns.name = None
        rep.table(wide, f"Fraction of {'cells' if cat == 'cell_type' else 'neutrophils'} per {what[:-1]} (rows: "
                  "cancer type and tissue; missing = none observed).", csv_name=f"{table}.csv")


def distributions(rep: HtmlReport, inputs: RunInputs) -> None:
    """Per-cell score distributions per cancer type and tissue, with patient means as dots."""
    if _no_analysis_note(rep, inputs, "score distribution"):
        return
    neut = _neutrophils(inputs)
    if neut is None or not len(neut):
        rep.note("No neutrophils annotated in the atlas (no is_neutrophil column): no distributions.", "warn")
        return
    if not {"cancer_type", "tissue"} <= set(neut.columns):
        rep.note("No cancer_type/tissue columns in the atlas: no distributions.", "warn")
        return
    order = _cancer_order(inputs, neut["cancer_type"])
    cols = [c for c in KEY_SCORES if c in neut and neut[c].notna().any()]
    if not cols:
        rep.note("No score columns among neutrophils: no distributions.", "warn")
        return
    pid = [c for c in ("cancer_type", "tissue", "patient_id") if c in neut]
    pats = neut.groupby(pid, observed=True)[cols].mean().reset_index() if "patient_id" in pid else None
    what = ("violins show all neutrophils; black dots are per-patient means (the unit of the statistics: "
            "intervals and tests are over patients, never over cells).")
    first, rest = cols[0], cols[1:]
    rep.figure(plots.distribution_plot(neut, value=first, patients=pats, order=order,
                                       title=f"{first} of neutrophils"),
               f"{first} of neutrophils per cancer type (ranking order) and tissue: {what}",
               name=f"distribution_{first}")
    if rest:
        rep.figure(plots.distribution_grid(neut, rest, patients=pats, order=order),
                   f"Signature scores of neutrophils ({', '.join(rest)}) per cancer type and tissue: {what}",
                   name="distribution_scores")


def tissues(rep: HtmlReport, inputs: RunInputs) -> None:
    """Tumour vs blood vs adjacent normal within patients."""
    if _no_analysis_note(rep, inputs, "tissue comparison", "patients", "tissue_comparison"):
        return
    p = inputs.table("patients")
    if p is not None and "tissue" in p:
        multi = p.groupby(["cancer_type", "patient_id"])["tissue"].nunique()
        if (multi > 1).any():
            for col, what in (("t3_fraction", "T3-like fraction"), ("mean_index", "mean reprogramming index")):
                if col in p:
                    fig = plots.paired_plot(p, value=col, order=_cancer_order(inputs, p["cancer_type"]))
                    rep.figure(fig, f"{what} per patient in each tissue; a line joins the tissues of one patient. "
                               "Within-patient differences remove between-patient variation; the table below tests "
                               "them over patients (Wilcoxon signed-rank on the paired differences).",
                               name=f"tissues_{col}")
        else:
            rep.note("No patient has samples from more than one tissue: no within-patient comparison.", "warn")
    t = inputs.table("tissue_comparison")
    if t is not None:
        rep.table(t, "Tumour minus blood and tumour minus adjacent normal T3-like fraction within patients: number "
                  "of patients with both tissues, median paired difference and p-value over patients.",
                  csv_name="tissue_comparison.csv")
    else:
        rep.note("tables/tissue_comparison.csv is missing or empty: no tissue test.", "warn")


def patients(rep: HtmlReport, inputs: RunInputs) -> None:
    """Per-patient and per-sample tables (the unit of the statistics)."""
    p, s = inputs.table("patients"), inputs.table("samples")
    if p is None and s is None:
        _no_analysis_note(rep, inputs, "per-patient table", "patients", "samples")
        return
    if p is not None:
        rep.table(p, "Per patient and tissue: samples, neutrophils, T3-like neutrophils, T3-like fraction and mean "
                  "index. These values are what the per-cancer intervals resample.", csv_name="patients.csv")
    if s is not None:
        rep.table(s, "Per sample: neutrophils, T3-like neutrophils, mean index and T3-like fraction.",
                  csv_name="samples.csv", max_rows=30)


def _untrusted_doublet_samples_note(rep: HtmlReport, qc: pd.DataFrame) -> None:
    """Warn where scrublet's automatic threshold failed and a sample's doublet calls were dropped."""
    if "doublet_samples_not_trusted" not in qc:
        return
    n = pd.to_numeric(qc["doublet_samples_not_trusted"], errors="coerce").fillna(0)
    if n.sum() > 0:
        where = ", ".join(f"{d} ({int(k)})" for d, k in zip(qc["dataset_id"], n, strict=True) if k > 0)
        rep.note(f"Doublet detection: in {int(n.sum())} sample(s) scrublet's automatic threshold called more "
                 f"than qc.doublet_max_share of the cells doublets, so those calls were not used and every "
                 f"cell was kept: {where}. The scores are in obs['doublet_score'] (log: the samples).", "warn")


def _qc_neutrophil_note(rep: HtmlReport, t: pd.DataFrame, fixed: list[str] | None = None) -> None:
    """What QC did to the cells that are (or map to) neutrophils, against what it did to the others (``fixed``:
    the data sets QC'd with fixed thresholds, named in the warning)."""
    num = t.select_dtypes("number").columns
    by_type = t.groupby(t["cell_type"].astype(str))[list(num)].sum()
    if "neutrophil" not in by_type.index or "cells_input" not in by_type:
        return
    n, rest = by_type.loc["neutrophil"], by_type.drop(index="neutrophil").sum()

    def gone(r: pd.Series) -> float:
        return r.get("removed_at_ingest", 0) + r.get("removed_second_pass", 0)

    share_n = gone(n) / max(n["cells_input"], 1)
    share_rest = gone(rest) / max(rest["cells_input"], 1)
    reasons = ", ".join(f"{c.removeprefix('removed_')} {int(n[c])}" for c in t.columns
                        if c.startswith("removed_") and c not in ("removed_at_ingest", "removed_second_pass") and n[c])
    text = (f"QC removed {int(gone(n))} of {int(n['cells_input'])} cells that are or map to neutrophils "
            f"({100 * share_n:.1f} %; at ingest: {reasons or 'none'}; low-RNA cells the second pass left out: "
            f"{int(n.get('removed_second_pass', 0))}), and {100 * share_rest:.1f} % of the other cells. Cells removed "
            "at ingest take the type of their nearest annotated atlas cells where their own markers agree, else "
            f"unknown ({int(by_type['removed_at_ingest'].get('unknown', 0))} of "
            f"{int(by_type['removed_at_ingest'].sum())}; tables/qc_removed_cells.csv).")
    worse = share_n > 0.05 and share_n > 2 * share_rest
    advice = (f" {', '.join(fixed)} used fixed thresholds (qc.thresholds.mode: fixed), whose min_counts / min_genes "
              "remove low-RNA neutrophils: the default mode, mad, keeps them for the cluster-level second pass."
              if fixed else "")
    rep.note(text + (" QC cost neutrophils more than twice the rate of the other cells: check the bounds in "
                     "store.qc.csv (mito, counts) against the neutrophils' own." + advice if worse else ""),
             "warn" if worse else "info")


def _harmonised_metadata(rep: HtmlReport, md: pd.DataFrame | None) -> None:
    """The metadata values ingest changed or did not know (store.metadata.csv)."""
    if md is None or "rule" not in md:
        return
    changed = md[md["rule"].astype(str) != "as given"]
    if not len(changed):
        rep.paragraph("Metadata: every sample, patient, tissue, cancer type and platform was stored as given "
                      "(store.metadata.csv).")
        return
    rep.table(changed, "Metadata values ingest changed or did not know, per data set (all values: store.metadata.csv): "
              "the data set's value_maps, atlas's label for a listed spelling (atlas/catalogue/data/: one label per "
              "cancer type and platform, so one cancer is one group and one platform one covariate level), one "
              "spelling across data sets for values the lists lack, kept as given but not in atlas's list (check "
              "that it is not a listed cancer or platform under a name the list lacks), or sample and patient ids "
              "several data sets use, prefixed with the data set (two studies' P01 are two patients; ingest's "
              "shared_ids says when they are one).",
              csv_name="metadata_changed.csv", table_id="metadata", max_rows=60)


def quality(rep: HtmlReport, inputs: RunInputs) -> None:
    """QC per data set and per annotated cell type, and neutrophil yield per data set and platform."""
    if inputs.qc is not None and len(inputs.qc):
        qc = inputs.qc
        keep = [c for c in qc.columns if c == "dataset_id" or c.startswith(("cells_", "removed_", "kept_"))]
        rep.table(qc[keep] if keep else qc, "Quality control per data set (store.qc.csv): cells read, removed by "
                  "reason and kept; kept_by_neutrophil_floor counts cells kept only thanks to the lower "
                  "neutrophil floor (neutrophils carry little RNA).", csv_name="store.qc.csv", table_id="qc")
        _untrusted_doublet_samples_note(rep, qc)
    else:
        rep.note("No QC table (store.qc.csv is missing): the ingest stage has not run in this directory.", "warn")
    _harmonised_metadata(rep, inputs.metadata)
    if inputs.qc_neutrophils is not None and len(inputs.qc_neutrophils):
        rep.table(inputs.qc_neutrophils, "Cells with neutrophil marker evidence per data set, before and after QC.",
                  csv_name="store.neutrophils.csv", table_id="qc_neutrophils")
    by_type = inputs.table("qc_by_cell_type")
    if by_type is not None and len(by_type):
        qc = inputs.qc if inputs.qc is not None else pd.DataFrame()
        fixed = qc.loc[qc["qc_mode"].astype(str) == "fixed", "dataset_id"].astype(str).tolist() if "qc_mode" in qc else []
        _qc_neutrophil_note(rep, by_type, fixed)
        ingest_note = ("" if "removed_at_ingest" in by_type else " Cells removed at ingest are not in it (the store "
                       "predates store.removed.h5ad, or the audit was switched off).")
        rep.table(by_type, "QC per data set and annotated cell type: cells in the store, low-RNA cells flagged and "
                  "those the cluster-level second pass left out, and the cells removed at ingest by reason, typed by "
                  "their nearest annotated atlas cells (unknown where those disagree or lie far away; a cell type "
                  "is never restored)." + ingest_note, csv_name="qc_by_cell_type.csv", table_id="qc_by_cell_type",
                  max_rows=60)
    y = inputs.table("neutrophil_yield")
    if y is None:
        _no_analysis_note(rep, inputs, "neutrophil yield", "neutrophil_yield")
        return
    if "neutrophil_fraction" in y:
        fig = plots.bar_chart(y, x="dataset_id", y="neutrophil_fraction",
                              colour_by="platform" if "platform" in y else None,
                              title="Neutrophil yield per data set", ylabel="neutrophils / cells")
        rep.figure(fig, "Fraction of each data set's cells identified as neutrophils, coloured by platform. Droplet "
                   "platforms capture neutrophils poorly, so low yields there are expected.",
                   name="neutrophil_yield", size="half")
        if "platform" in y and {"n_cells", "n_neutrophils"} <= set(y.columns):
            byp = y.groupby("platform")[["n_cells", "n_neutrophils"]].sum().reset_index()
            byp["neutrophil_fraction"] = byp["n_neutrophils"] / byp["n_cells"]
            fig = plots.bar_chart(byp, x="platform", y="neutrophil_fraction", title="Neutrophil yield per platform",
                                  ylabel="neutrophils / cells")
            rep.figure(fig, "Neutrophil yield pooled per platform (sum of neutrophils over sum of cells of its "
                       "data sets).", name="neutrophil_yield_platform", size="half")
    rep.table(y, "Neutrophils identified per data set and platform.", csv_name="neutrophil_yield.csv")


def integration(rep: HtmlReport, inputs: RunInputs) -> None:
    """scib-metrics of scVI against the unintegrated PCA and Harmony."""
    m = inputs.metrics
    if m is None or not len(m):
        rep.note("No integration metrics (reference/metrics.csv is missing: metrics were switched off or the "
                 "integrate stage has not run).", "warn")
        return
    shown = m.drop(columns=[c for c in ("Unnamed: 0",) if c in m.columns])
    keys = {c: str(shown[c].iloc[0]) for c in ("batch_key", "label_key", "n_cells") if c in shown}
    shown = shown.drop(columns=[c for c in ("batch_key", "label_key") if c in shown])
    rep.table(shown, "scib-metrics per embedding (higher is better): batch correction, bio conservation and "
              "Total = 0.4 x batch + 0.6 x bio (means, not min-max scaled). "
              + (f"Batch key {keys.get('batch_key')}, labels {keys.get('label_key')}." if keys else ""),
              csv_name="reference/metrics.csv", table_id="metrics")
    from ..integrate.metrics import baseline_check, baseline_summary

    check = baseline_check(m)  # the integrate stage's own check (also in reference/checks.json)
    rep.note("Baseline check: " + baseline_summary(check),
             "ok" if check["passed"] else ("warn" if check["passed"] is False else "info"))
    if inputs.metrics_png is not None:
        rep.figure(inputs.metrics_png, "Integration metrics as plotted by the integrate stage (reference/metrics.png): "
                   "scVI should beat the unintegrated PCA on batch correction without losing bio conservation.",
                   name="integration_metrics")
    else:
        agg = [c for c in ("Batch correction", "Bio conservation", "Total") if c in m]
        label = "method" if "method" in m else m.columns[0]
        if agg:
            long = m.melt(id_vars=[label], value_vars=agg, var_name="aggregate", value_name="score")
            long["x"] = long[label].astype(str) + " - " + long["aggregate"]
            rep.figure(plots.bar_chart(long, x="x", y="score", colour_by="aggregate", title="Integration metrics",
                                       horizontal=True),
                       "Aggregate scib-metrics per embedding (reference/metrics.png was missing; redrawn from the "
                       "CSV).", name="integration_metrics")


def provenance(rep: HtmlReport, inputs: RunInputs) -> None:
    """Command, versions, seeds and the resolved config."""
    prov = inputs.provenance or {}
    info = inputs.run_info or {}
    rows = []
    if info.get("name"):
        rows.append(("run name", info["name"]))
    local = str(inputs.rundir.resolve())
    remote = next((u for u in (inputs.location, (inputs.config or {}).get("run_dir")) if storage.is_url(u)), None)
    rows.append(("run directory", remote or local))
    if remote:
        rows.append(("read from", f"a local copy, {local}"))
    for k, label in (("atlas_version", "atlas version"), ("time", "started"), ("python", "python"),
                     ("platform", "platform")):
        if prov.get(k):
            rows.append((label, str(prov[k])))
    if prov.get("command"):
        cmd = prov["command"]
        rows.append(("command", " ".join(map(str, cmd)) if isinstance(cmd, list) else str(cmd)))
    for k, v in (prov.get("seeds") or {}).items():
        rows.append((f"seed ({k})", str(v)))
    if not prov:
        rep.note("provenance.json is missing: command, versions and seeds are unknown.", "warn")
    rep.table(pd.DataFrame(rows, columns=["item", "value"]), "How this run was made.", table_id="provenance")
    pk = dict(prov.get("packages") or {})
    ref = dict(inputs.versions or {})
    if pk or ref:
        names = sorted(set(pk) | set(ref))
        rep.table(pd.DataFrame({"package": names, "run": [pk.get(n, "") for n in names],
                                "reference (integrate)": [ref.get(n, "") for n in names]}),
                  "Package versions recorded by the run (provenance.json) and by the integrate stage "
                  "(reference/versions.json).", table_id="versions", max_rows=200)
    if inputs.config_text:
        rep.pre(inputs.config_text, "config.resolved.yaml (the whole configuration, defaults filled in)")
    settings = (inputs.analysis or {}).get("settings")
    if settings:
        rep.pre(json.dumps(settings, indent=2, default=str), "analysis.json: settings used by the analysis stage")
    uns = inputs.atlas.uns if inputs.atlas is not None else {}
    for k, what in (("atlas_scoring", "signature scoring settings"), ("state_rule", "state assignment rule"),
                    ("reprogramming_axis", "reprogramming axis")):
        if uns.get(k):
            rep.pre(json.dumps(_jsonable(uns[k]), indent=2, default=str), f"atlas.h5ad uns['{k}']: {what}")


def _state_rule_caption(inputs: RunInputs) -> str:
    """Which rule made the state calls (``uns["state_rule"]``), in a sentence."""
    rule = _state_rule(inputs)
    if rule.get("cells") == "own":
        cuts = {k: v for k, v in _floats(rule, "cell_cuts").items() if np.isfinite(v)}
        shown = ", ".join(f"{k} z >= {v:.2f}" for k, v in cuts.items())
        return ("Each state holds as many cells as the graph-smoothed rule (state_min_z, state_min_margin, cluster "
                f"evidence{_shrunk_caption(rule)}) gives it, chosen by each cell's own unsmoothed evidence "
                f"({shown or 'no state called'}); the rest take the default state "
                f"({rule.get('default_state_used', 'mature')}).")
    if rule.get("cells") == "smoothed":
        return "Calls of the graph-smoothed rule (state_cells: smoothed)."
    return ""


def _state_rule(inputs: RunInputs) -> dict:
    uns = inputs.atlas.uns if inputs.atlas is not None else {}
    return dict(uns.get("state_rule") or {})


def _floats(rule: dict, key: str) -> dict[str, float]:
    """``rule[key]``, a per-state dict, with float values (empty when absent)."""
    return {str(k): float(v) for k, v in dict(rule.get(key) or {}).items()}


def _expected_precision_caption(inputs: RunInputs) -> str:
    """The expected precision of each state's calls (the mean of their calibrated confidence), in a sentence."""
    prec = _floats(_state_rule(inputs), "expected_precision")
    if not prec:
        return ""
    return (" neutrophil_state_confidence is each call's probability of being right, from its score's reliability on "
            "these neutrophils; expected precision of the calls (their mean confidence): "
            + ", ".join(f"{k} {v:.2f}" for k, v in prec.items()) + ".")


#: expected precision below which a state's calls are reported as not told apart from counting noise
LOW_EXPECTED_PRECISION = 0.5


def _unreliable_states_note(rep: HtmlReport, inputs: RunInputs) -> None:
    """A warning naming the called states whose calls are expected to be mostly wrong, with their reliability."""
    rule = _state_rule(inputs)
    prec, rel = _floats(rule, "expected_precision"), _floats(rule, "reliability")
    default = rule.get("default_state_used")
    low = [k for k, v in prec.items() if v < LOW_EXPECTED_PRECISION and k != default]
    if low:
        rep.note(f"Expected precision below {LOW_EXPECTED_PRECISION} (most of these calls are counting noise at this depth; each state's score's "
                 "split-half reliability on these neutrophils in brackets): "
                 + ", ".join(f"{k} {prec[k]:.2f} (reliability {rel.get(k, float('nan')):.2f})" for k in low)
                 + ". Read these states' cells and fractions with caution; a signature with more genes detected "
                 "in these data (analyse.state_signatures) would measure them better.", "warn")


def _shrunk_caption(rule: dict) -> str:
    """The states whose smoothed evidence the rule shrank by their reliability, and what share it kept."""
    kept = {k: v for k, v in _floats(rule, "evidence_weight").items() if v < 0.995}  # NaN: no
    if not kept:
        return ""
    return "; the smoothed evidence of noisy scores shrunk by their reliability first: " + ", ".join(
        f"{k} kept {v:.2f}" for k, v in kept.items())


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


#: (title, intro, function) in report order; the summary goes above the contents.
SECTIONS: list[tuple[str, str, Callable[[HtmlReport, RunInputs], None]]] = [
    ("Which cancers reprogram their neutrophils",
     "T3-like fraction and reprogramming index per cancer type and tissue, with intervals over patients.", ranking),
    ("The atlas", "", atlas_umaps),
    ("Neutrophil sub-atlas", "", subatlas),
    ("Composition per cancer type", "", composition),
    ("Scores per cancer type and tissue", "", distributions),
    ("Tumour vs blood vs adjacent normal", "Within-patient comparisons of tissues.", tissues),
    ("Patients and samples", "", patients),
    ("Quality control and neutrophil yield", "", quality),
    ("Integration metrics", "", integration),
    ("Provenance", "Configuration, versions, seeds and command of this run.", provenance),
]
