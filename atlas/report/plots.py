"""Matplotlib figures for reports (Agg backend; every function returns a ``Figure``).

Scatter points are rasterized (small PDFs) and large embeddings are subsampled to ``max_points``
(the title says so), so a million-cell atlas draws in seconds. Colours of a categorical column are
fixed by :func:`palette`, so a cancer type has the same colour in every figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = [
    "MAX_POINTS",
    "STATE_COLOURS",
    "TISSUE_COLOURS",
    "bar_chart",
    "composition_bars",
    "distribution_grid",
    "distribution_plot",
    "forest_plot",
    "palette",
    "paired_plot",
    "scatter_plot",
    "subsample",
    "umap_grid",
    "umap_plot",
]

#: Points drawn per scatter panel at most; more are subsampled at random (seeded).
MAX_POINTS = 200_000
#: Values per violin used for its density estimate (a random subset above this).
KDE_MAX_POINTS = 5_000
#: Above this many points a UMAP is painted as one image (numpy) rather than as markers.
RASTER_ABOVE = 30_000
NA_COLOUR = "#d3d6db"
#: Fixed colours of the neutrophil states and tissues (the same in every report).
STATE_COLOURS = {
    "immature": "#8c6bb1",
    "mature": "#4a90d9",
    "interferon": "#2ca25f",
    "antigen_presenting": "#f2b01e",
    "T3": "#d7301f",
    "unassigned": "#9e9e9e",
}
TISSUE_COLOURS = {"tumour": "#d7301f", "adjacent_normal": "#41ab5d", "blood": "#3182bd"}
_TISSUE_ORDER = ["tumour", "adjacent_normal", "blood"]

plt.rcParams.update({
    "figure.dpi": 100, "font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
    "axes.spines.right": False, "legend.frameon": False, "savefig.dpi": 110,
})  # fmt: skip


# ---------------------------------------------------------------------------------------- colours
def palette(categories: Sequence, name: str | None = None) -> dict:
    """Colours for ``categories`` (sorted order gives stable colours); fixed ones for states/tissues."""
    cats = [c for c in categories if not (isinstance(c, float) and np.isnan(c))]
    fixed = STATE_COLOURS if name == "neutrophil_state" else TISSUE_COLOURS if name == "tissue" else {}
    free = [c for c in cats if c not in fixed]
    n = len(free)
    if n <= 10:
        base = [plt.get_cmap("tab10")(i) for i in range(10)]
    elif n <= 20:
        base = [plt.get_cmap("tab20")(i) for i in range(20)]
    else:
        base = [plt.get_cmap("gist_ncar")(x) for x in np.linspace(0.02, 0.95, n)]
    out = {c: fixed[c] for c in cats if c in fixed}
    out.update({c: base[i % len(base)] for i, c in enumerate(free)})
    return out


def tissue_order(tissues: Sequence) -> list:
    """Tumour, adjacent normal, blood first, then any others in sorted order."""
    present = list(dict.fromkeys(str(t) for t in tissues))
    return [t for t in _TISSUE_ORDER if t in present] + sorted(t for t in present if t not in _TISSUE_ORDER)


# ---------------------------------------------------------------------------------------- scatter
def subsample(n: int, max_points: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_points`` of ``n`` rows (all of them, in order, when ``n`` is small)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def _point_size(n: int) -> float:
    return float(np.clip(60_000 / max(n, 1), 0.3, 12.0))


def _is_categorical(values) -> bool:
    s = pd.Series(values)
    return not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def _raster_points(ax, xy: np.ndarray, rgba: np.ndarray) -> None:
    """Draw points (in order; later ones on top) as one image sized to the axes, instead of markers.

    Matplotlib's marker path costs about 1 s per 100,000 points per output format; painting pixels
    with numpy costs milliseconds, so million-cell UMAPs stay cheap. Each point covers a small
    cross of pixels; where points overlap, the last one drawn wins.
    """
    fig = ax.figure
    box = ax.get_window_extent()
    scale = plt.rcParams["savefig.dpi"] / fig.dpi if isinstance(plt.rcParams["savefig.dpi"], float | int) else 1.0
    w0, h0 = max(box.width * scale, 200), max(box.height * scale, 200)
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    pad = 0.02 * max(x1 - x0, y1 - y0, 1e-9)
    x0, x1, y0, y1 = x0 - pad, x1 + pad, y0 - pad, y1 + pad
    size = max((x1 - x0) / w0, (y1 - y0) / h0)  # data units per pixel (square pixels: equal aspect)
    w, h = int(np.ceil((x1 - x0) / size)), int(np.ceil((y1 - y0) / size))
    ix = np.clip(((xy[:, 0] - x0) / size).astype(np.int64), 0, w - 1)
    iy = np.clip(((y1 - xy[:, 1]) / size).astype(np.int64), 0, h - 1)
    offsets = np.array([(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)])
    cx = np.clip(ix[:, None] + offsets[None, :, 0], 0, w - 1)
    cy = np.clip(iy[:, None] + offsets[None, :, 1], 0, h - 1)
    lin = (cy * w + cx).ravel()  # point-major: point i's pixels before point i+1's
    src = np.repeat(np.arange(len(xy)), len(offsets))
    # The last point painted on each pixel wins: first occurrence in the reversed order.
    uniq, first_rev = np.unique(lin[::-1], return_index=True)
    img = np.zeros((h * w, 4))
    img[uniq] = rgba[src[::-1][first_rev]]
    ax.imshow(img.reshape(h, w, 4), extent=(x0, x0 + w * size, y1 - h * size, y1), origin="upper",
              interpolation="antialiased", aspect="equal")


def _draw_embedding(ax, coords: np.ndarray, values, *, title: str, categorical: bool | None,
                    name: str | None, highlight: np.ndarray | None, cmap: str, legend: bool,
                    max_points: int, seed: int, vmin=None, vmax=None, max_legend: int = 40,
                    note_subsample: bool = True) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize, to_rgba

    coords = np.asarray(coords, dtype=float)[:, :2]
    n_all = len(coords)
    idx = subsample(n_all, max_points, seed)
    xy = coords[idx]
    src = values.reset_index(drop=True) if isinstance(values, pd.Series) else pd.Series(values)
    categorical = _is_categorical(src) if categorical is None else categorical
    vals = src.iloc[idx].reset_index(drop=True)
    back = vals.isna().to_numpy().copy()  # pandas 3 (copy-on-write) hands out a read-only view
    if highlight is not None:
        back |= ~np.asarray(highlight, dtype=bool)[idx]
    rgba = np.empty((len(idx), 4))
    rgba[back] = to_rgba(NA_COLOUR)
    front = np.flatnonzero(~back)
    rng = np.random.default_rng(seed)
    handles: list = []
    n_cats = 0
    if categorical:
        fv = vals.iloc[front].astype(str)
        present = set(fv)
        known = [str(c) for c in src.cat.categories] if isinstance(src.dtype, pd.CategoricalDtype) else sorted(present)
        cats = [c for c in known if c in present] + sorted(present - set(known))
        if cats and all(c.isdigit() for c in cats):  # cluster labels: 0, 1, 2, ..., 10, not 0, 1, 10, 2
            cats = sorted(cats, key=int)
        n_cats = len(cats)
        cols = palette(cats, name)
        lut = np.array([to_rgba(cols[c]) for c in cats]).reshape(-1, 4)
        rgba[front] = lut[pd.Categorical(fv, categories=cats).codes]
        front = front[rng.permutation(len(front))]  # random order: no category painted over the others
        handles = [plt.Line2D([], [], marker="o", ls="", color=cols[c], markersize=5, label=c) for c in cats]
    else:
        v = vals.iloc[front].to_numpy(dtype=float)
        lo = (np.nanpercentile(v, 1) if len(v) else 0.0) if vmin is None else vmin
        hi = (np.nanpercentile(v, 99) if len(v) else 1.0) if vmax is None else vmax
        norm = Normalize(lo, hi if hi > lo else lo + 1e-9)
        cm = plt.get_cmap(cmap)
        rgba[front] = cm(norm(v))
        front = front[np.argsort(v, kind="stable")]  # high values drawn last
        if legend and len(v):
            plt.colorbar(ScalarMappable(norm=norm, cmap=cm), ax=ax, fraction=0.04, pad=0.02)
    order = np.concatenate([np.flatnonzero(back), front])
    if len(order) > RASTER_ABOVE:
        _raster_points(ax, xy[order], rgba[order])
    elif len(order):
        ax.scatter(xy[order, 0], xy[order, 1], s=_point_size(len(order)), c=rgba[order], linewidths=0,
                   rasterized=True)
        ax.set_aspect("equal", adjustable="datalim")
    if legend and 0 < n_cats <= max_legend:
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7.5,
                  ncol=1 if n_cats <= 16 else 2, handletextpad=0.2, borderaxespad=0.2)
    elif legend and n_cats > max_legend:
        ax.text(1.01, 0.5, f"{n_cats} categories\n(legend omitted)", transform=ax.transAxes, va="center",
                fontsize=7.5)
    note = f" ({len(idx):,} of {n_all:,} cells shown)" if len(idx) < n_all and note_subsample else ""
    ax.set_title(title + note)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("UMAP 1", fontsize=8, loc="left")
    ax.set_ylabel("UMAP 2", fontsize=8, loc="bottom")


def umap_plot(coords: np.ndarray, values, title: str, *, name: str | None = None,
              categorical: bool | None = None, highlight: np.ndarray | None = None, cmap: str = "viridis",
              max_points: int = MAX_POINTS, seed: int = 0, figsize=(6.2, 4.6)) -> Figure:
    """One UMAP coloured by ``values`` (categorical -> legend, numeric -> colour bar).

    ``highlight`` (bool per cell) draws the other cells in light grey underneath (e.g. neutrophils
    over the whole atlas); missing values are grey too. ``name`` picks fixed colours for
    ``neutrophil_state`` and ``tissue``.
    """
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    _draw_embedding(ax, coords, values, title=title, categorical=categorical, name=name, highlight=highlight,
                    cmap=cmap, legend=True, max_points=max_points, seed=seed)
    return fig


def umap_grid(coords: np.ndarray, panels: Mapping[str, object], *, ncols: int = 3,
              highlight: Mapping[str, np.ndarray] | None = None, cmap: str = "viridis",
              max_points: int = MAX_POINTS, seed: int = 0, panel_size=(4.2, 3.5)) -> Figure:
    """Several UMAP panels (title -> values) on one figure, e.g. one per score."""
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                             layout="constrained", squeeze=False)
    for ax, (title, values) in zip(axes.ravel(), panels.items(), strict=False):
        _draw_embedding(ax, coords, values, title=title, categorical=None, name=None,
                        highlight=(highlight or {}).get(title), cmap=cmap, legend=True,
                        max_points=max_points, seed=seed, note_subsample=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    if len(coords) > max_points:
        fig.suptitle(f"{max_points:,} of {len(coords):,} cells shown (random subset)", fontsize=9)
    return fig


def scatter_plot(x, y, *, xlabel: str, ylabel: str, title: str, colour=None, max_points: int = 30_000,
                 seed: int = 0) -> Figure:
    """A plain scatter of two per-cell quantities (subsampled to ``max_points``, rasterized)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    idx = subsample(len(x), max_points, seed)
    fig, ax = plt.subplots(figsize=(5.2, 4.2), layout="constrained")
    kw = {"color": "#2b5d9b"} if colour is None else {"c": np.asarray(colour, dtype=float)[idx], "cmap": "viridis"}
    sc = ax.scatter(x[idx], y[idx], s=_point_size(len(idx)) * 1.5, linewidths=0, rasterized=True, alpha=0.7, **kw)
    if colour is not None:
        plt.colorbar(sc, ax=ax, fraction=0.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f" ({len(idx):,} of {len(x):,} cells shown)" if len(idx) < len(x) else ""))
    return fig


# ----------------------------------------------------------------------------------- summaries
def composition_bars(df: pd.DataFrame, *, group: str, category: str, value: str = "fraction",
                     facet: str | None = "tissue", title: str = "", name: str | None = None,
                     order: Sequence | None = None) -> Figure:
    """Stacked horizontal bars: one bar per ``group`` (cancer type), segments = ``category`` shares.

    ``df`` is long (group, [facet,] category, value); one panel per ``facet`` value.
    """
    facets = tissue_order(df[facet].unique()) if facet else [None]
    cats = [c for c in pd.unique(df[category].astype(str))]
    if name == "neutrophil_state":
        cats = [c for c in STATE_COLOURS if c in cats] + sorted(c for c in cats if c not in STATE_COLOURS)
    else:
        cats = sorted(cats)
    cols = palette(cats, name)
    groups = list(order) if order is not None else sorted(df[group].astype(str).unique())
    fig, axes = plt.subplots(1, len(facets), figsize=(3.6 * len(facets) + 1.8, 0.42 * len(groups) + 1.6),
                             layout="constrained", squeeze=False, sharey=True)
    for ax, fac in zip(axes[0], facets, strict=True):
        sub = df if fac is None else df[df[facet].astype(str) == fac]
        wide = (sub.assign(**{group: sub[group].astype(str), category: sub[category].astype(str)})
                .pivot_table(index=group, columns=category, values=value, aggfunc="sum", fill_value=0.0)
                .reindex(index=groups, columns=cats, fill_value=0.0))
        left = np.zeros(len(groups))
        for c in cats:
            w = wide[c].to_numpy(dtype=float)
            ax.barh(range(len(groups)), w, left=left, color=cols[c], label=c, height=0.75, edgecolor="white",
                    linewidth=0.4)
            left += w
        ax.set_yticks(range(len(groups)), groups)
        ax.invert_yaxis()
        ax.set_xlim(0, max(1.0, float(left.max()) if len(left) else 1.0))
        ax.set_xlabel(value.replace("_", " "))
        ax.set_title(str(fac).replace("_", " ") if fac is not None else "")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cols[c]) for c in cats]
    fig.legend(handles, cats, loc="outside right center", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def distribution_plot(cells: pd.DataFrame, *, value: str, group: str = "cancer_type", hue: str = "tissue",
                      patients: pd.DataFrame | None = None, title: str = "", ax=None,
                      order: Sequence | None = None, legend: bool = True) -> Figure:
    """Violins of a per-cell ``value`` per ``group`` x ``hue``, with per-patient means as dots.

    ``patients`` (group, hue, value columns; one row per patient) are drawn as black dots over the
    violins: they, not the cells, are the unit of the statistics.
    """
    groups = list(order) if order is not None else sorted(cells[group].astype(str).unique())
    hues = tissue_order(cells[hue].astype(str).unique())
    cols = palette(hues, "tissue")
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(max(6.0, 1.15 * len(groups) * max(1, len(hues)) ** 0.5 + 2), 4.0),
                               layout="constrained")
    else:
        fig = ax.figure
    width = 0.8 / max(len(hues), 1)
    rng = np.random.default_rng(0)
    g_str, h_str = cells[group].astype(str).to_numpy(), cells[hue].astype(str).to_numpy()
    vals = cells[value].to_numpy(dtype=float)
    for gi, g in enumerate(groups):
        for hi, h in enumerate(hues):
            x = gi + (hi - (len(hues) - 1) / 2) * width
            v = vals[(g_str == g) & (h_str == h)]
            v = v[np.isfinite(v)]
            if len(v) > KDE_MAX_POINTS:  # the violin's shape; a random 5,000 draw it just as well
                v = rng.choice(v, KDE_MAX_POINTS, replace=False)
            if len(v) >= 3 and np.ptp(v) > 0:
                parts = ax.violinplot(v, positions=[x], widths=width * 0.92, showextrema=False)
                for b in parts["bodies"]:
                    b.set_facecolor(cols[h])
                    b.set_alpha(0.45)
                    b.set_edgecolor("none")
            elif len(v):
                ax.plot([x], [np.mean(v)], marker="_", color=cols[h], markersize=12)
            if patients is not None and len(patients):
                pv = patients.loc[(patients[group].astype(str) == g) & (patients[hue].astype(str) == h), value]
                pv = pv.to_numpy(dtype=float)
                pv = pv[np.isfinite(pv)]
                if len(pv):
                    jitter = rng.uniform(-width * 0.18, width * 0.18, len(pv))
                    ax.scatter(x + jitter, pv, s=14, c="black", zorder=3, linewidths=0)
    ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center")
    ax.set_ylabel(value)
    handles = [plt.Rectangle((0, 0), 1, 1, color=cols[h], alpha=0.6) for h in hues]
    labels = [h.replace("_", " ") for h in hues]
    if patients is not None:
        handles.append(plt.Line2D([], [], marker="o", ls="", color="black", markersize=4))
        labels.append("patient mean")
    if legend:
        ax.legend(handles, labels, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or value)
    return fig


def distribution_grid(cells: pd.DataFrame, values: Sequence[str], *, patients: pd.DataFrame | None = None,
                      ncols: int | None = None, order: Sequence | None = None, **kw) -> Figure:
    """:func:`distribution_plot` panels for several ``values`` on one figure (legend on the last of row 1)."""
    ncols = ncols or (3 if len(values) > 4 else 2)
    ncols = max(1, min(ncols, len(values)))
    nrows = int(np.ceil(len(values) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(13.5, (3.4 if ncols <= 2 else 3.1) * nrows), layout="constrained",
                             squeeze=False)
    for i, (ax, v) in enumerate(zip(axes.ravel(), values, strict=False)):
        distribution_plot(cells, value=v, patients=patients, ax=ax, order=order, legend=i == ncols - 1, **kw)
    for ax in axes.ravel()[len(values):]:
        ax.set_visible(False)
    return fig


def forest_plot(df: pd.DataFrame, *, label: str, estimates: Sequence[tuple[str, str, str, str]],
                hue: str | None = None, order: Sequence | None = None, title: str = "") -> Figure:
    """Point estimates with interval bars, one row per ``label`` (e.g. cancer type).

    ``estimates`` is ``[(column, lo, hi, axis label), ...]``, one panel each. With ``hue`` (tissue)
    rows carry one marker per hue value, slightly offset. A missing interval draws the point
    alone, marked "no interval".
    """
    labels = list(order) if order is not None else list(pd.unique(df[label].astype(str)))
    hues = tissue_order(df[hue].astype(str).unique()) if hue else [None]
    cols = palette([h for h in hues if h is not None], "tissue") if hue else {}
    markers = {"tumour": "o", "adjacent_normal": "s", "blood": "D"}
    fig, axes = plt.subplots(1, len(estimates), figsize=(4.6 * len(estimates) + 1.6, 0.45 * len(labels) + 1.5),
                             layout="constrained", squeeze=False, sharey=True)
    step = 0.6 / max(len(hues), 1)
    for ax, (col, lo, hi, xlabel) in zip(axes[0], estimates, strict=True):
        for hi_i, h in enumerate(hues):
            sub = df if h is None else df[df[hue].astype(str) == h]
            sub = sub.set_index(sub[label].astype(str))
            for i, lab in enumerate(labels):
                if lab not in sub.index:
                    continue
                r = sub.loc[lab]
                r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
                y = i + (hi_i - (len(hues) - 1) / 2) * step
                est, a, b = float(r[col]), float(r[lo]), float(r[hi])
                c = cols.get(h, "#2b5d9b") if h else "#2b5d9b"
                if np.isfinite(a) and np.isfinite(b):
                    ax.plot([a, b], [y, y], color=c, lw=1.6)
                elif np.isfinite(est):
                    ax.annotate("no interval", (est, y), xytext=(6, 0), textcoords="offset points",
                                va="center", fontsize=7, color="#7a4a00")
                if np.isfinite(est):
                    ax.plot([est], [y], marker=markers.get(h, "o"), color=c, ms=5.5,
                            label=(h.replace("_", " ") if h else None))
        ax.set_yticks(range(len(labels)), labels)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", color="#e3e6ea", lw=0.6)
    if hue:
        seen: dict[str, object] = {}
        for h_, l_ in zip(*axes[0][0].get_legend_handles_labels(), strict=True):
            seen.setdefault(l_, h_)
        if seen:
            fig.legend(list(seen.values()), list(seen.keys()), loc="outside right center", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def paired_plot(patients: pd.DataFrame, *, value: str, group: str = "cancer_type", unit: str = "patient_id",
                within: str = "tissue", ncols: int = 5, title: str = "", order: Sequence | None = None) -> Figure:
    """Per ``group`` panel: each ``unit`` (patient) a line across ``within`` (tissues)."""
    present = set(patients[group].astype(str))
    groups = [g for g in order if g in present] if order is not None else sorted(present)
    levels = tissue_order(patients[within].astype(str).unique())
    cols = palette(levels, "tissue")
    ncols = max(1, min(ncols, len(groups)))
    nrows = int(np.ceil(len(groups) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols + 0.6, 2.5 * nrows + 0.3), layout="constrained",
                             squeeze=False, sharey=True)
    for ax, g in zip(axes.ravel(), groups, strict=False):
        sub = patients[patients[group].astype(str) == g]
        wide = sub.pivot_table(index=unit, columns=within, values=value, aggfunc="mean", observed=True)
        wide = wide.reindex(columns=[lv for lv in levels if lv in wide.columns])
        xs = [levels.index(c) for c in wide.columns]
        for _, row in wide.iterrows():
            y = row.to_numpy(dtype=float)
            ok = np.isfinite(y)
            ax.plot(np.array(xs)[ok], y[ok], color="#8a94a3", lw=0.9, alpha=0.8)
        for c, x in zip(wide.columns, xs, strict=True):
            y = wide[c].to_numpy(dtype=float)
            ax.scatter(np.full(len(y), x), y, color=cols[c], s=16, zorder=3, linewidths=0)
        ax.set_xticks(range(len(levels)), [lv.replace("_", "\n") for lv in levels], fontsize=7.5)
        ax.set_xlim(-0.4, len(levels) - 0.6)
        ax.set_title(f"{g} ({wide.shape[0]} patients)")
    for ax in axes[:, 0]:
        ax.set_ylabel(value.replace("_", " "))
    for ax in axes.ravel()[len(groups):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def bar_chart(df: pd.DataFrame, *, x: str, y: str, colour_by: str | None = None, title: str = "",
              ylabel: str | None = None, horizontal: bool = False) -> Figure:
    """One bar per row of ``df`` (in order), coloured by ``colour_by`` with a legend."""
    labels = df[x].astype(str).tolist()
    vals = df[y].to_numpy(dtype=float)
    if colour_by is not None:
        cats = sorted(df[colour_by].astype(str).unique())
        cols = palette(cats, colour_by)
        colours = [cols[c] for c in df[colour_by].astype(str)]
    else:
        cats, cols, colours = [], {}, ["#2b5d9b"] * len(df)
    if horizontal:
        fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(df) + 1.4), layout="constrained")
        ax.barh(range(len(df)), vals, color=colours)
        ax.set_yticks(range(len(df)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel or y)
    else:
        fig, ax = plt.subplots(figsize=(max(5.5, 0.45 * len(df) + 2.5), 3.8), layout="constrained")
        ax.bar(range(len(df)), vals, color=colours)
        ax.set_xticks(range(len(df)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(ylabel or y)
    if cats:
        handles = [plt.Rectangle((0, 0), 1, 1, color=cols[c]) for c in cats]
        ax.legend(handles, cats, title=colour_by, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    return fig
