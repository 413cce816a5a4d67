"""Parse atlas's HTML report in tests: its sections, tables and figures (no browser)."""

from __future__ import annotations

import html.parser

import pandas as pd


class ReportParser(html.parser.HTMLParser):
    """Collects tables (by ``data-table``), images, links, stats and figure captions of a report."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.headers: dict[str, list[str]] = {}
        self.stats: dict[str, str] = {}
        self.imgs: list[str] = []
        self.urls: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()
        self.captions: list[str] = []
        self.notes: list[str] = []
        self._table = None
        self._cell = None
        self._row = None
        self._stat = None
        self._cap = None
        self._note = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        for k in ("src", "href", "action", "data", "poster"):
            if k in a:
                self.urls.append((tag, k, a[k] or ""))
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "table":
            self._table = a.get("data-table")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "div" and "data-stat" in a:
            self._stat, self._cell = a["data-stat"], []
        elif tag == "figcaption":
            self._cap = []
        elif tag == "div" and "note" in (a.get("class") or ""):
            self._note = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._table not in self.headers:
                self.headers[self._table] = self._row
            else:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "div" and self._stat is not None:
            self.stats[self._stat] = "".join(self._cell).strip()
            self._stat, self._cell = None, None
        elif tag == "div" and self._note is not None:
            self.notes.append("".join(self._note))
            self._note = None
        elif tag == "figcaption":
            self.captions.append("".join(self._cap))
            self._cap = None

    def handle_data(self, data):
        for buf in (self._cell, self._cap, self._note):
            if buf is not None:
                buf.append(data)


def parse_report(path) -> ReportParser:
    p = ReportParser()
    p.feed(path.read_text())
    return p


def frame(parsed: ReportParser, table_id: str) -> pd.DataFrame:
    """A report table as strings, columns from its header row."""
    return pd.DataFrame(parsed.tables[table_id], columns=parsed.headers[table_id])
