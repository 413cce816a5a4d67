"""A small builder for one self-contained HTML report (inline CSS, images as base64 data URIs).

Used by the atlas report (``atlas report RUNDIR``) and reusable by other reports (e.g. the query
report)::

    rep = HtmlReport("My report", figures_dir=outdir / "figures")
    rep.section("Overview", "What this report shows.")
    rep.figure(fig, "What the figure shows and what its statistics mean.", name="umap_dataset")
    rep.table(df, "What the table holds.", csv_name="ranking.csv")
    rep.write(outdir / "report.html")

Nothing in the written file refers to the network: no external CSS, JS, fonts or images, so it
opens offline and can be mailed as one file. Numbers in tables are formatted by :func:`fmt_num`
(3 significant digits; integers in full), which the tests use to compare the HTML with the CSVs.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.atomic import atomic_path, write_text

__all__ = ["HtmlReport", "fmt_num", "fmt_interval", "MISSING"]

#: What a missing number (NaN / None) is shown as.
MISSING = "–"
_MAX_CSV_DOWNLOAD_BYTES = 2_000_000


def fmt_num(x) -> str:
    """Format a number for display: integers in full (``12,345``), floats to 3 significant digits.

    Floats between 1e-3 and 1e6 are written positionally (``0.123``, ``12.3``, ``1230``), others
    in scientific notation (``1.23e-05``); NaN/None/NA is :data:`MISSING`; booleans as ``yes``/``no``;
    anything else is ``str(x)``.
    """
    if x is None or x is pd.NA or x is pd.NaT:
        return MISSING
    if isinstance(x, bool | np.bool_):
        return "yes" if x else "no"
    if isinstance(x, int | np.integer):
        return f"{int(x):,}"
    if isinstance(x, float | np.floating):
        x = float(x)
        if math.isnan(x):
            return MISSING
        if math.isinf(x):
            return "∞" if x > 0 else "-∞"
        if x == 0:
            return "0"
        if 1e-3 <= abs(x) < 1e6:
            return np.format_float_positional(x, precision=3, unique=False, fractional=False, trim="-")
        return f"{x:.3g}"
    return str(x)


def fmt_interval(lo, hi) -> str:
    """``[lo, hi]`` with :func:`fmt_num`, or :data:`MISSING` when either bound is missing."""
    a, b = fmt_num(lo), fmt_num(hi)
    return MISSING if MISSING in (a, b) else f"{a} – {b}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _bbox(fig) -> str | None:
    # A figure with a layout engine (constrained/tight) is laid out already; "tight" costs a draw.
    return None if fig.get_layout_engine() is not None else "tight"


def _png_bytes_of(fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches=_bbox(fig), facecolor="white")
    return buf.getvalue()


@dataclass
class _Section:
    title: str
    anchor: str
    parts: list[str] = field(default_factory=list)


class HtmlReport:
    """Collects sections, paragraphs, figures and tables, and writes them as one HTML file.

    Parameters
    ----------
    title
        Page title and top heading.
    figures_dir
        When given, every figure is also saved there as ``NAME.png`` (and ``NAME.pdf`` for
        matplotlib figures), atomically.
    tables_dir
        When given, :meth:`table` with a ``csv_name`` also writes the full table there as CSV.
    subtitle
        A line under the title (for example the run name and date).
    dpi
        Resolution of the embedded PNGs.
    """

    def __init__(self, title: str, *, figures_dir: str | os.PathLike | None = None,
                 tables_dir: str | os.PathLike | None = None, subtitle: str = "", dpi: int = 110):
        self.title = title
        self.subtitle = subtitle
        self.figures_dir = Path(figures_dir) if figures_dir is not None else None
        self.tables_dir = Path(tables_dir) if tables_dir is not None else None
        self.dpi = dpi
        self._header: list[str] = []
        self._sections: list[_Section] = []
        self._n_figures = 0
        self._n_tables = 0

    # ------------------------------------------------------------------ structure
    def section(self, title: str, text: str = "") -> HtmlReport:
        """Start a new section (listed in the contents); later content goes into it."""
        anchor = _slug(title)
        taken = {s.anchor for s in self._sections}
        base, i = anchor, 2
        while anchor in taken:
            anchor, i = f"{base}-{i}", i + 1
        self._sections.append(_Section(title, anchor))
        if text:
            self.paragraph(text)
        return self

    def _add(self, part: str) -> None:
        if self._sections:
            self._sections[-1].parts.append(part)
        else:  # before the first section: goes to the page header (summary)
            self._header.append(part)

    def paragraph(self, text: str) -> HtmlReport:
        """A paragraph of plain text (escaped; blank lines start new paragraphs)."""
        for block in re.split(r"\n\s*\n", str(text).strip()):
            if block:
                self._add(f"<p>{html.escape(block)}</p>")
        return self

    def note(self, text: str, kind: str = "info") -> HtmlReport:
        """A highlighted box: ``kind`` is ``info``, ``warn`` (missing inputs, caveats) or ``ok``."""
        self._add(f'<div class="note {html.escape(kind)}">{html.escape(str(text))}</div>')
        return self

    def stats(self, items: list[tuple[str, object]]) -> HtmlReport:
        """A row of headline numbers: ``[(label, value), ...]``; values formatted by :func:`fmt_num`."""
        cells = "".join(
            f'<div class="stat"><div class="v" data-stat="{html.escape(label)}">{html.escape(fmt_num(v))}</div>'
            f'<div class="k">{html.escape(label)}</div></div>' for label, v in items)
        self._add(f'<div class="stats">{cells}</div>')
        return self

    def raw(self, html_text: str) -> HtmlReport:
        """Insert trusted HTML as is (no external references, please)."""
        self._add(html_text)
        return self

    # ------------------------------------------------------------------ figures
    def figure(self, fig_or_png_path, caption: str, name: str, *, size: str = "full") -> HtmlReport:
        """Embed a matplotlib figure (closed afterwards) or an existing PNG file, with a caption.

        ``name`` is the file stem under ``figures_dir`` (``NAME.png``/``NAME.pdf``). ``size`` is
        ``full`` (page width) or ``half`` (two side by side on wide screens).
        """
        self._n_figures += 1
        if isinstance(fig_or_png_path, str | os.PathLike):
            src = Path(fig_or_png_path)
            png = src.read_bytes()
            if png[:8] != b"\x89PNG\r\n\x1a\n":
                raise ValueError(f"{src} is not a PNG file")
            if self.figures_dir is not None:
                self._save_bytes(self.figures_dir / f"{name}.png", png)
        else:
            import matplotlib.pyplot as plt

            fig = fig_or_png_path
            try:
                png = _png_bytes_of(fig, self.dpi)
                if self.figures_dir is not None:
                    self._save_bytes(self.figures_dir / f"{name}.png", png)
                    with atomic_path(self.figures_dir / f"{name}.pdf") as tmp:
                        fig.savefig(tmp, format="pdf", bbox_inches=_bbox(fig), dpi=self.dpi)
            finally:
                plt.close(fig)
        data = base64.b64encode(png).decode("ascii")
        cls = "fig half" if size == "half" else "fig"
        self._add(
            f'<figure class="{cls}" id="fig-{html.escape(name)}">'
            f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>Figure {self._n_figures}.</b> {html.escape(caption)}</figcaption></figure>")
        return self

    def _save_bytes(self, target: Path, data: bytes) -> None:
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)

    # ------------------------------------------------------------------ tables
    def table(self, df: pd.DataFrame, caption: str, csv_name: str | None = None, max_rows: int = 50,
              *, index: bool = False, table_id: str | None = None) -> HtmlReport:
        """Show a DataFrame (numbers via :func:`fmt_num`), at most ``max_rows`` rows.

        With ``csv_name`` the caption names the CSV, the full table is offered as an embedded
        download, and it is written to ``tables_dir/csv_name`` when the report has a tables dir.
        ``table_id`` (default: the CSV stem) becomes the ``data-table`` attribute, which tests use
        to find the table.
        """
        self._n_tables += 1
        if index:
            df = df.reset_index()
        if csv_name is not None and self.tables_dir is not None:
            with atomic_path(self.tables_dir / csv_name) as tmp:
                df.to_csv(tmp, index=False)
        shown = df.head(max_rows) if max_rows is not None else df
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
        rows = []
        numeric = [pd.api.types.is_numeric_dtype(shown[c]) and not pd.api.types.is_bool_dtype(shown[c])
                   for c in shown.columns]
        for rec in shown.itertuples(index=False, name=None):
            tds = "".join(
                f'<td class="{"n" if isnum else "s"}">{html.escape(fmt_num(v))}</td>'
                for v, isnum in zip(rec, numeric, strict=True))
            rows.append(f"<tr>{tds}</tr>")
        tid = table_id or (Path(csv_name).stem if csv_name else f"table-{self._n_tables}")
        extra = []
        if len(df) > len(shown):
            extra.append(f"Showing {len(shown):,} of {len(df):,} rows.")
        if csv_name is not None:
            extra.append(f"Full table: {csv_name}.")
        text = " ".join([caption, *extra]).strip()
        link = ""
        if csv_name is not None:
            csv = df.to_csv(index=False).encode()
            if len(csv) <= _MAX_CSV_DOWNLOAD_BYTES:
                b64 = base64.b64encode(csv).decode("ascii")
                link = (f' <a class="dl" download="{html.escape(Path(csv_name).name)}" '
                        f'href="data:text/csv;base64,{b64}">download CSV</a>')
        if len(df) == 0:
            body = f'<tr><td class="s" colspan="{max(len(df.columns), 1)}">(no rows)</td></tr>'
        else:
            body = "".join(rows)
        self._add(
            f'<div class="tbl"><table data-table="{html.escape(tid)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>"
            f"<p class=\"caption\"><b>Table {self._n_tables}.</b> {html.escape(text)}{link}</p></div>")
        return self

    def pre(self, text: str, caption: str = "") -> HtmlReport:
        """Preformatted text (a config file, JSON), optionally in a collapsible block."""
        body = f"<pre>{html.escape(text)}</pre>"
        if caption:
            body = f"<details><summary>{html.escape(caption)}</summary>{body}</details>"
        self._add(body)
        return self

    # ------------------------------------------------------------------ output
    def to_html(self) -> str:
        """The whole page as a string."""
        toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in self._sections)
        sections = "".join(
            f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{"".join(s.parts)}</section>'
            for s in self._sections)
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        sub = f'<p class="sub">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body><main>"
            f"<header><h1>{html.escape(self.title)}</h1>{sub}{''.join(self._header)}</header>"
            + (f'<nav><b>Contents</b><ol>{toc}</ol></nav>' if toc else "")
            + sections
            + f'<footer>Written by atlas on {stamp}. Self-contained: every figure is embedded; '
              "no network access needed.</footer></main></body></html>\n")

    def write(self, path: str | os.PathLike) -> Path:
        """Write the page atomically to ``path`` and return it."""
        return write_text(path, self.to_html())


_CSS = """
:root{--fg:#1d2430;--muted:#5b6472;--line:#d9dee5;--accent:#2b5d9b;--bg:#fff;--soft:#f5f7fa}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
 font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:28px;margin:0 0 4px}h2{font-size:21px;margin:36px 0 10px;padding-top:8px;
 border-top:2px solid var(--line)}
.sub{color:var(--muted);margin:0 0 14px}
nav{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:10px 16px;margin:18px 0}
nav ol{margin:6px 0 0;padding-left:22px;columns:2}nav a{color:var(--accent);text-decoration:none}
.stats{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}
.stat{flex:1 1 140px;background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:10px 14px}
.stat .v{font-size:24px;font-weight:600;color:var(--accent)}.stat .k{color:var(--muted);font-size:13px}
.note{border-left:4px solid var(--accent);background:#eef3fa;padding:8px 12px;margin:10px 0;border-radius:3px}
.note.warn{border-color:#c77700;background:#fff6e5}.note.ok{border-color:#2e7d32;background:#edf7ee}
figure.fig{margin:16px 0;display:inline-block;width:100%;vertical-align:top}
figure.fig.half{width:49%}
@media (max-width:900px){figure.fig.half{width:100%}}
figure img{max-width:100%;height:auto;display:block;margin:0 auto;border:1px solid var(--line)}
figcaption,.caption{color:var(--muted);font-size:13.5px;margin:6px 2px}
.tbl{overflow-x:auto;margin:14px 0}
table{border-collapse:collapse;font-size:13.5px;min-width:40%}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;white-space:nowrap}
th{background:var(--soft);white-space:normal;vertical-align:bottom}td.n{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:hover{background:#f0f4fa}
a.dl{color:var(--accent);margin-left:6px}
pre{background:var(--soft);border:1px solid var(--line);padding:10px;overflow-x:auto;font-size:12.5px}
details{margin:8px 0}summary{cursor:pointer;color:var(--accent)}
footer{margin-top:40px;color:var(--muted);font-size:12.5px;border-top:1px solid var(--line);padding-top:10px}
"""
