"""The report's two pages: Markdown and HTML, from the sections ``reports.report`` computed.

Kept apart from the computing so each file reads in one sitting; both pages show
the same sections in the same order, each chart followed by the numbers it plots.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from costmodel.scenario import Scenario
from reports.outdir import LEGACY_SIGNATURE


@dataclass
class Section:
    """One heading of the report: a chart (a PNG name or none), what it shows, its numbers."""
    title: str
    image: str | None
    text: str
    rows: list[dict[str, Any]] = field(default_factory=list)


def _title(s: Scenario, names: list[str]) -> str:
    return f"costcl report: {', '.join(names)}"


def _scenario_line(s: Scenario) -> str:
    shown = ", ".join(f"{k}: {v}" for k, v in s.to_json().items()
                      if v not in (None, {}, []) and k not in ("method", "options"))
    return f"Input: {shown}."


def markdown(s: Scenario, names: list[str], sections: list[Section]) -> str:
    return markdown_document(_title(s, names), _scenario_line(s), sections)


def markdown_document(title: str, intro: str, sections: list[Section]) -> str:
    """A report as Markdown: the title, a line under it, each section with its chart and table."""
    lines = [f"# {title}", "", intro, ""]
    for sec in sections:
        lines += [f"## {sec.title}", "", sec.text, ""]
        if sec.image:
            lines += [f"![{sec.title}]({sec.image})", ""]
        if sec.rows:
            cols = list(sec.rows[0])
            lines.append("| " + " | ".join(cols) + " |")
            lines.append("| " + " | ".join("---" for _ in cols) + " |")
            for row in sec.rows:
                lines.append("| " + " | ".join(_cell(row.get(c)) for c in cols) + " |")
            lines.append("")
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
    if isinstance(v, int) and abs(v) >= 10**6:
        return f"{v:.3e}"
    return str(v)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
img{max-width:100%;height:auto}table{border-collapse:collapse;font-size:.8em;margin:1em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}p{line-height:1.5}"""


def page(s: Scenario, names: list[str], sections: list[Section]) -> str:
    return html_document(_title(s, names), _scenario_line(s), sections,
                         "Predictions come from the engine's formulas over facts traced on the "
                         "meta device; published figures are shown beside them, never copied "
                         "into them.")


def html_document(title: str, intro: str, sections: list[Section], footer: str) -> str:
    """A report as one HTML page (its charts beside it as PNG files)."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>"]
    parts.append("<p>" + e(intro) + "</p>")
    for sec in sections:
        parts.append(f"<h2>{e(sec.title)}</h2><p>{e(sec.text)}</p>")
        if sec.image:
            parts.append(f"<img src='{e(sec.image)}' alt='{e(sec.title)}'>")
        if sec.rows:
            cols = list(sec.rows[0])
            parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>")
            for row in sec.rows:
                parts.append("<tr>" + "".join(f"<td>{e(_cell(row.get(c)))}</td>" for c in cols) + "</tr>")
            parts.append("</table>")
    parts.append(f"<p><small>{LEGACY_SIGNATURE} {footer}</small></p></body></html>")
    return "\n".join(parts)
