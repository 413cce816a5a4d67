"""HtmlReport, the reusable builder of self-contained reports, and the number formatting."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest

from atlas.report.html import MISSING, HtmlReport, fmt_interval, fmt_num


@pytest.mark.parametrize("value, text", [
    (12345, "12,345"), (np.int64(7), "7"), (0.123456, "0.123"), (0.1, "0.1"), (12.0, "12"), (1234.5, "1230"),
    (-0.07148, "-0.0715"), (0.0001234, "0.000123"), (5e-8, "5e-08"), (3.2e7, "3.2e+07"), (0.0, "0"),
    (float("nan"), MISSING), (None, MISSING), (pd.NA, MISSING), (True, "yes"), ("PDAC", "PDAC"),
])
def test_fmt_num(value, text):
    assert fmt_num(value) == text


def test_fmt_interval():
    assert fmt_interval(0.25342, 0.45877) == "0.253 – 0.459"
    assert fmt_interval(float("nan"), 0.4) == MISSING


def test_report_builder(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep = HtmlReport("A <title>", figures_dir=tmp_path / "figures", tables_dir=tmp_path / "tables", subtitle="sub")
    rep.stats([("cells", 1234)])
    rep.section("First", "Intro text.\n\nSecond paragraph.")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    rep.figure(fig, "A line.", name="line")
    rep.figure(tmp_path / "figures" / "line.png", "The same PNG again.", name="copy", size="half")
    rep.section("First")  # same title twice: unique anchors
    df = pd.DataFrame({"a": range(60), "b": np.linspace(0, 1, 60), "c": ["x"] * 60})
    rep.table(df, "Numbers.", csv_name="numbers.csv", max_rows=10)
    rep.note("Careful.", "warn")
    rep.pre("key: value", "config")
    out = rep.write(tmp_path / "r.html")
    text = out.read_text()
    assert (tmp_path / "figures" / "line.png").exists() and (tmp_path / "figures" / "line.pdf").exists()
    assert (tmp_path / "figures" / "copy.png").exists()
    assert pd.read_csv(tmp_path / "tables" / "numbers.csv").shape == (60, 3)
    assert "A &lt;title&gt;" in text and "<title>A &lt;title&gt;</title>" in text
    assert 'id="first"' in text and 'id="first-2"' in text
    assert "Showing 10 of 60 rows." in text and "Full table: numbers.csv." in text
    assert text.count("<tr>") == 11  # header + 10 rows
    assert "Figure 2." in text and "Table 1." in text and 'class="note warn"' in text
    csv = text.split('href="data:text/csv;base64,')[1].split('"')[0]
    assert base64.b64decode(csv).decode().startswith("a,b,c\n0,0.0,x")
    assert text.count("data:image/png;base64,") == 2 and "http" not in text
    assert not list(tmp_path.glob(".atlas-tmp-*"))


def test_figure_rejects_a_non_png(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        HtmlReport("t").figure(bad, "caption", name="x")


def test_empty_table_and_no_sections(tmp_path):
    rep = HtmlReport("t")
    rep.paragraph("Only a header.")
    rep.table(pd.DataFrame(columns=["a", "b"]), "Empty.")
    text = rep.write(tmp_path / "r.html").read_text()
    assert "(no rows)" in text and "<nav>" not in text
