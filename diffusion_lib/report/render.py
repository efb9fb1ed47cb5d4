"""Formatting and writers of the study report: cell and percent formats, and the list of blocks
(:data:`Block`) written as Markdown or as a self-contained HTML page (figures embedded)."""
from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from ..analysis.statistics import level_text, p_text

Block = tuple  # ("h", level, text) | ("p", text) | ("ul", [text]) | ("table", DataFrame) | ("fig", key, alt)


#: how a table column is written (see :func:`cell`); "auto" follows the value's type
KINDS = ("auto", "text", "int", "num", "pct", "share", "p", "yesno", "ci", "ci_pct", "ci_share")


def _number(x: Any) -> float | None:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        return None
    return float(x)


def cell(x: Any, kind: str = "auto") -> str:
    """One table cell: ``num`` 4 significant digits, never e-notation (:func:`number`: MSEs, seconds,
    ratios); ``pct`` a signed percentage with one decimal (relative changes); ``share`` an unsigned
    one (fractions of steps or pairs, skill); ``p`` "< 0.001" or three decimals; ``yesno`` yes/no; ``int``
    thousands-separated; ``text`` as is; ``auto`` by type (bool → yes/no, integers plain, other
    numbers 4 significant digits). Missing or non-finite numbers are "n/a"."""
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return {"true": "yes", "false": "no"}.get(x.lower(), x) if kind == "yesno" else x
    if kind == "yesno" or isinstance(x, (bool, np.bool_)):
        flag = float(x) if isinstance(x, (bool, np.bool_)) else _number(x)
        return "n/a" if flag is None or not math.isfinite(flag) else ("yes" if flag else "no")
    value = _number(x)
    if value is None:
        return str(x)
    if not math.isfinite(value):
        return "n/a"
    if kind == "pct":
        return f"{value:+.1%}"
    if kind == "share":
        return f"{value:.1%}"
    if kind == "p":
        return p_text(value)
    if kind == "int" or kind == "auto" and isinstance(x, (int, np.integer)):
        return f"{int(value):,}"
    return number(value)


def number(value: float, digits: int = 4) -> str:
    """``digits`` significant digits, trailing zeros kept so a column's entries line up, never
    e-notation: 0.00001117, 0.01040, 16.20; 10,000 and above as whole numbers with separators."""
    if not math.isfinite(value):
        return "n/a"
    if abs(value) >= 1e4:
        return f"{value:,.0f}"
    if value == 0:
        return "0"
    rounded = float(f"{value:.{digits - 1}e}")  # 0.099996 -> 0.1000: its magnitude after rounding
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}"


def interval(lo: Any, hi: Any, kind: str = "ci") -> str:
    """A CI as "[low, high]": signed percentages with one decimal (``ci_pct``), unsigned ones
    (``ci_share``) or 4 significant digits (``ci``)."""
    each = {"ci_pct": "pct", "ci_share": "share"}.get(kind, "num")
    return f"[{cell(lo, each)}, {cell(hi, each)}]"


def levels(df: pd.DataFrame, column: str = "confidence") -> str:
    """The confidence level(s) of a table's intervals, e.g. "97.5%" (for its CI header)."""
    found = [c for c in dict.fromkeys(df[column].dropna())] if column in df else []
    return ", ".join(level_text(c) for c in found) or "95%"


Column = str | tuple[str, str]  # a header, or (header, kind)


def select(df: pd.DataFrame, columns: Mapping[Any, Column]) -> pd.DataFrame:
    """``df``'s columns, formatted for reading (strings): ``columns`` maps a source column (or a
    (low, high) pair of columns, written as one "[low, high]" CI) to its header or to (header,
    kind) with a kind of :data:`KINDS`; sources missing from ``df`` are left out."""
    out: dict[str, list[str]] = {}
    for source, spec in columns.items():
        header, kind = (spec, "auto") if isinstance(spec, str) else spec
        if isinstance(source, tuple):
            lo, hi = source
            if lo in df and hi in df:
                out[header] = [interval(a, b, kind if kind.startswith("ci") else "ci") for a, b in zip(df[lo], df[hi])]
        elif source in df:
            out[header] = [cell(x, kind) for x in df[source]]
    return pd.DataFrame(out, index=range(len(df)))


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(cell(x) for x in row) + " |\n" for row in df.itertuples(index=False))


def to_markdown(doc: list[Block], figure_path: Callable[[str], str], figures: Mapping[str, str] | None = None) -> str:
    """Markdown text of ``doc``; ``figure_path`` maps a figure file to the link written."""
    out = []
    for block in doc:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + block[2] + "\n")
        elif kind == "p":
            out.append(block[1] + "\n")
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in block[1]) + "\n")
        elif kind == "table":
            out.append(_md_table(block[1]))
        elif kind == "fig" and figures and block[1] in figures:
            out.append(f"![{block[2]}]({figure_path(figures[block[1]])})\n")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then render the Markdown emphasis and code this report uses (**bold**, `code`)."""
    parts = html.escape(text).split("**")
    text = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


_NUMERIC = re.compile(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?|\[.*\]|< 0\.001|n/a")


def _td(text: str) -> str:
    """A table cell; numbers, percentages and intervals right-aligned so their digits line up."""
    return f'<td class="num">{html.escape(text)}</td>' if _NUMERIC.fullmatch(text) else f"<td>{html.escape(text)}</td>"


def to_html(doc: list[Block], figures: Mapping[str, str] | None = None) -> str:
    """A self-contained HTML page of ``doc`` (figures embedded as data URIs)."""
    body = []
    for block in doc:
        kind = block[0]
        if kind == "h":
            body.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
        elif kind == "p":
            body.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            df = block[1]
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            rows = "".join("<tr>" + "".join(_td(cell(x)) for x in row) + "</tr>"
                           for row in df.itertuples(index=False))
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "fig" and figures and block[1] in figures and Path(figures[block[1]]).exists():
            path = Path(figures[block[1]])
            mime = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}.get(path.suffix[1:], "image/png")
            data = base64.b64encode(path.read_bytes()).decode()
            if mime == "application/pdf":
                body.append(f'<p><a download="{path.name}" href="data:{mime};base64,{data}">{html.escape(block[2])} '
                            "(PDF)</a></p>")
            else:
                body.append(f'<figure><img alt="{html.escape(block[2])}" src="data:{mime};base64,{data}">'
                            f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}"
             "table{display:block;max-width:100%;overflow-x:auto}"
             "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f2f2f2}"
             "td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}"
             "img{max-width:100%}figcaption{color:#555;font-size:0.85em}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>IRED study report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
