"""Plot helpers: categorical/continuous UMAPs, the numpy raster path, subsampling, missing values."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from atlas.report import plots  # noqa: E402


@pytest.fixture
def cells():
    rng = np.random.default_rng(0)
    n = 40_000  # above RASTER_ABOVE: painted as an image
    xy = rng.normal(size=(n, 2))
    state = pd.Categorical(rng.choice(["mature", "T3", None], size=n, p=[0.5, 0.3, 0.2]),
                           categories=list(plots.STATE_COLOURS))
    return xy, state, xy[:, 0] + rng.normal(0, 0.1, n)


def _render(fig):
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    plt.close(fig)
    return img


def test_raster_and_scatter_paths_draw_the_state_colours(cells):
    xy, state, _ = cells
    for n in (plots.RASTER_ABOVE + 1000, 2000):
        fig = plots.umap_plot(xy[:n], state[:n], "states", name="neutrophil_state")
        ax = fig.axes[0]
        assert bool(ax.images) == (n > plots.RASTER_ABOVE)
        img = _render(fig)
        red = np.array([0xD7, 0x30, 0x1F])  # T3's fixed colour
        assert (np.abs(img.astype(int) - red).sum(axis=2) < 40).sum() > 50
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mature", "T3"]


def test_subsampling_is_noted_and_continuous_gets_a_colour_bar(cells):
    xy, _, v = cells
    fig = plots.umap_plot(xy, v, "score", max_points=10_000)
    assert "10,000 of 40,000 cells shown" in fig.axes[0].get_title()
    assert len(fig.axes) == 2  # the colour bar
    plt.close(fig)
    assert len(plots.subsample(100, 1000)) == 100
    idx = plots.subsample(10_000, 500, seed=1)
    assert len(idx) == 500 and np.all(np.diff(idx) > 0)


def test_highlight_and_all_missing(cells):
    xy, state, v = cells
    fig = plots.umap_plot(xy[:500], v[:500], "index", highlight=np.arange(500) < 100)
    plt.close(fig)
    fig = plots.umap_plot(xy[:500], np.full(500, np.nan), "nothing")
    _render(fig)


def test_summary_plots():
    comp = pd.DataFrame({"cancer_type": ["A", "A", "B"], "tissue": ["tumour", "blood", "tumour"],
                         "neutrophil_state": ["T3", "mature", "mature"], "fraction": [0.4, 1.0, 1.0]})
    plt.close(plots.composition_bars(comp, group="cancer_type", category="neutrophil_state", name="neutrophil_state"))
    ct = pd.DataFrame({"cancer_type": ["A", "B"], "tissue": ["tumour", "tumour"], "t3_fraction": [0.4, 0.1],
                       "t3_fraction_lo": [0.3, np.nan], "t3_fraction_hi": [0.5, np.nan]})
    fig = plots.forest_plot(ct, label="cancer_type", estimates=[("t3_fraction", "t3_fraction_lo", "t3_fraction_hi",
                                                                 "T3")], hue="tissue")
    assert any(t.get_text() == "no interval" for t in fig.axes[0].texts)
    plt.close(fig)
    pats = pd.DataFrame({"cancer_type": ["A"] * 4, "patient_id": ["p1", "p1", "p2", "p2"],
                         "tissue": ["tumour", "blood"] * 2, "t3_fraction": [0.5, 0.0, 0.3, 0.0]})
    plt.close(plots.paired_plot(pats, value="t3_fraction"))
    cells = pats.loc[pats.index.repeat(20)].assign(score=np.linspace(0, 1, 80))
    plt.close(plots.distribution_plot(cells, value="score", patients=pats.assign(score=0.5)))
    plt.close(plots.bar_chart(pats, x="patient_id", y="t3_fraction", colour_by="tissue"))
