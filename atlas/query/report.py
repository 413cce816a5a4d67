"""``DIR/report.html``: the query report (one self-contained file, figures also under ``DIR/figures/``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["write_query_report"]

log = logging.getLogger(__name__)


def _umaps(rep, ref, q) -> None:
    """Reference labels, transferred labels (same colours; unknown in black) and uncertainty on the reference UMAP."""
    import matplotlib.pyplot as plt

    from ..report.plots import NA_COLOUR, palette, subsample

    ref_xy, q_xy = ref.umap(), np.asarray(q.obsm["X_umap"])
    ref_lab = ref.atlas.obs[ref.label_key].astype(str).to_numpy()
    pred = q.obs["predicted_cell_type"].astype(str).to_numpy()
    settings = q.uns.get("query", {}).get("settings", {})
    unknown, neut = str(settings.get("unknown_label", "unknown")), str(settings.get("neutrophil_label", "neutrophil"))
    labels = sorted(set(ref_lab) | set(pred) - {unknown}, key=lambda v: (v != neut, v))  # neutrophils first: blue
    cols = palette(labels)
    cols[unknown] = "#000000"
    ri, qi = subsample(len(ref_xy)), subsample(len(q_xy))
    size = float(np.clip(40_000 / max(len(ri) + len(qi), 1), 0.5, 10))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), layout="constrained")
    for ax, title in zip(axes, (f"reference: {ref.label_key}", "query: predicted_cell_type",
                                "query: prediction_uncertainty"), strict=True):  # fmt: skip
        ax.scatter(ref_xy[ri, 0], ref_xy[ri, 1], s=size, c=NA_COLOUR, linewidths=0, rasterized=True)
        ax.set_title(title)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    axes[0].scatter(ref_xy[ri, 0], ref_xy[ri, 1], s=size, c=[cols[v] for v in ref_lab[ri]], linewidths=0,
                    rasterized=True)  # fmt: skip
    axes[1].scatter(q_xy[qi, 0], q_xy[qi, 1], s=size * 1.5, c=[cols[v] for v in pred[qi]], linewidths=0,
                    rasterized=True)  # fmt: skip
    u = q.obs["prediction_uncertainty"].to_numpy()[qi]
    order = np.argsort(u, kind="stable")
    sc = axes[2].scatter(q_xy[qi][order, 0], q_xy[qi][order, 1], s=size * 1.5, c=u[order], cmap="viridis",
                         vmin=0, vmax=1, linewidths=0, rasterized=True)  # fmt: skip
    plt.colorbar(sc, ax=axes[2], fraction=0.04)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, markersize=5, label=k) for k, c in cols.items()]
    axes[1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7.5)
    rep.figure(fig, "Query cells placed on the reference UMAP (kNN-weighted average of their reference neighbours' "
               "UMAP coordinates in the scVI latent space), over the reference in grey: reference labels, "
               "transferred labels (unknown in black) and their uncertainty.", name="umap_query")  # fmt: skip


def _states(rep, tables: dict[str, pd.DataFrame], q, ref) -> None:
    from ..report.plots import composition_bars, distribution_plot

    comp = tables.get("state_composition")
    if comp is not None and len(comp):
        order = sorted(comp["group"].astype(str).unique(), key=lambda g: (not g.startswith("query"), g))
        fig = composition_bars(comp, group="group", category="neutrophil_state", facet="tissue", order=order,
                               name="neutrophil_state", title="Neutrophil states: query beside reference cancer types")
        rep.figure(fig, "Share of each neutrophil state among neutrophils, per query data set and reference cancer "
                   "type, by tissue (query states transferred from the reference neutrophils).", name="states")
        rep.table(comp[comp["source"] == "query"], "Query neutrophil states per data set and tissue.",
                  csv_name="state_composition.csv", max_rows=60)
    idx = tables.get("reprogramming_index")
    if idx is not None and len(idx):
        cells = []
        qi = q.obs.loc[np.isfinite(q.obs["reprogramming_index"].to_numpy(float))]
        cells.append(pd.DataFrame({"group": "query: " + qi["dataset_id"].astype(str), "tissue": qi["tissue"].astype(str),
                                   "reprogramming_index": qi["reprogramming_index"].to_numpy(float)}))  # fmt: skip
        if "reprogramming_index" in ref.atlas.obs:
            ro = ref.atlas.obs
            ro = ro.loc[np.isfinite(ro["reprogramming_index"].to_numpy(float))]
            cells.append(pd.DataFrame({"group": ro["cancer_type"].astype(str), "tissue": ro["tissue"].astype(str),
                                       "reprogramming_index": ro["reprogramming_index"].to_numpy(float)}))  # fmt: skip
        cells = pd.concat(cells, ignore_index=True)
        order = sorted(cells["group"].unique(), key=lambda g: (not g.startswith("query"), g))
        fig = distribution_plot(cells, value="reprogramming_index", group="group", hue="tissue", order=order,
                                title="Reprogramming index of neutrophils: query beside reference cancer types")
        rep.figure(fig, "Reprogramming index (0 ~ most blood-like, 1 ~ most T3-like reference neutrophil) of "
                   "neutrophils, on the reference's axis.", name="reprogramming_index")
        rep.table(idx, "Reprogramming index per group and tissue; reference_percentile = share of reference "
                  "neutrophils at or below the group's median.", csv_name="reprogramming_index.csv", max_rows=80)


def write_query_report(out_dir: Path, *, ref, q, tables: dict[str, pd.DataFrame], summary: dict) -> Path:
    """Write ``out_dir/report.html`` (and ``out_dir/figures/``) from the mapped query."""
    from ..report.html import HtmlReport

    rep = HtmlReport("Query mapped onto the neutrophil atlas", figures_dir=out_dir / "figures",
                     subtitle=f"reference {summary['reference']['path']} · query {', '.join(summary['datasets'])}")
    obs = q.obs
    neut = obs["predicted_cell_type"].astype(str) == summary["settings"]["neutrophil_label"]
    overlap = tables["gene_overlap_summary"].set_index("dataset_id").loc["all", "fraction"]
    rep.stats([("query cells", q.n_obs), ("reference cells", ref.atlas.n_obs),
               ("reference HVGs measured", float(overlap)),
               ("marked unknown", float((obs["predicted_cell_type"].astype(str) == summary["settings"]["unknown_label"]).mean())),
               ("neutrophils", int(neut.sum())),
               ("mapping seconds", float(summary["seconds"].get("total", np.nan)))])  # fmt: skip
    for n in summary["notes"]:
        rep.note(n, "warn")

    rep.section("Input and genes", "The query went through the atlas's ingest (raw-count check, gene "
                "harmonisation, metadata mapping, neutrophil-aware QC), then was cut to the reference HVGs; "
                "missing HVGs are zero-filled as scvi-tools expects.")  # fmt: skip
    if "qc" in tables:
        rep.table(tables["qc"], "Cells in and out of QC per query data set.", csv_name=None)
    rep.table(tables["gene_overlap_summary"], "Reference HVGs measured by the query (missing: the first 50).",
              csv_name="gene_overlap_summary.csv")
    if len(tables.get("batch_renames", [])):
        rep.table(tables["batch_renames"], "Query batches named like reference batches, renamed so they keep "
                  "their own batch in the model.", csv_name="batch_renames.csv")

    rep.section("Mapping", f"scArches surgery with scvi-tools ({summary['reference']['model_class']}."
                f"load_query_data): reference weights frozen, the query's batch weights trained for "
                f"{summary['mapping']['epochs']} epochs.")  # fmt: skip
    _umaps(rep, ref, q)

    rep.section("Label transfer", "Labels by a distance-weighted vote of the reference neighbours in the latent "
                "space (scArches weighting). Uncertainty = the larger of 1 - the winner's vote share and a distance "
                "term that grows when a cell is farther from the reference than reference cells of that label are "
                f"from each other; above {summary['settings']['uncertainty_threshold']} a cell is 'unknown'.")
    rep.table(tables["predictions"], "Transferred labels per query data set.", csv_name="predictions.csv")
    if "marker_check" in tables:
        check = tables["marker_check"]
        novel = int(check.loc[check["cell_type_rule"] == "novel_type", "n_cells"].sum())
        agree = check.loc[check["transferred_cell_type"].astype(str) == check["marker_cell_type"].astype(str), "n_cells"]
        rep.paragraph(f"The query's own markers, called with the reference's cell-type rule on the query's own "
                      f"clusters (obs marker_cell_type), agree with the transferred label for "
                      f"{agree.sum() / max(check['n_cells'].sum(), 1):.1%} of the cells; {novel:,} cells whose own "
                      "markers call a type the reference lacks, or no type of the marker panel (marker_cell_type "
                      "unknown: a type outside it?), are 'unknown' (cell_type_rule novel_type).")
        rep.table(check.sort_values("n_cells", ascending=False), "Transferred label x the query's own marker call.",
                  csv_name="marker_check.csv", max_rows=60)
    if "scanvi_prediction" in obs:
        agree = float((obs["scanvi_prediction"].astype(str) == obs["predicted_cell_type"].astype(str)).mean())
        rep.paragraph(f"scANVI's classifier agrees with the kNN label for {agree:.1%} of the query cells "
                      "(obs scanvi_prediction, scanvi_uncertainty).")

    if ref.state_key is not None and "state_composition" in tables:
        how = ("each neutrophil's own state evidence (the reference's state programmes scored on the query's counts), "
               "called at the reference's cuts in the reference neutrophils' units (obs state_rule; the reference "
               "neighbours' vote is in predicted_state_knn)" if "state_rule" in q.obs else
               "a vote of the nearest reference neutrophils in the latent space")  # fmt: skip
        rep.section("Neutrophil states and reprogramming",
                    f"Query neutrophils beside the reference cancer types. States from {how}.")
        _states(rep, tables, q, ref)
    if "score_means" in tables and len(tables["score_means"]):
        rep.section("Signature scores", f"Scored with the reference's settings ({summary['scoring'].get('method')}).")
        rep.table(tables["score_means"], "Mean score per transferred label.", csv_name="score_means.csv")
    rep.section("Settings and provenance")
    rep.pre(json.dumps(summary, indent=2, default=str), "query.json")
    return rep.write(out_dir / "report.html")
