"""Formatting and writers of the study report: cell and percent formats, and the list of blocks
(:data:`Block`) written as Markdown or as a self-contained HTML page (figures embedded)."""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

Block = tuple  # ("h", level, text) | ("p", text) | ("ul", [text]) | ("table", DataFrame) | ("fig", key, alt)


def fmt(x: Any, digits: int = 4) -> str:
    if isinstance(x, (float, np.floating)):
        return f"{x:.{digits}g}" if math.isfinite(x) else "n/a"
    if x is None:
        return "n/a"
    return str(x)


def pct(x: Any) -> str:
    return f"{x:+.1%}" if isinstance(x, (int, float, np.floating)) and math.isfinite(x) else "n/a"


def ci_text(lo: Any, hi: Any) -> str:
    return f"{pct(lo)} to {pct(hi)}"


def select(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """``df`` restricted to ``columns`` (source -> header) that exist, renamed."""
    keep = {k: v for k, v in columns.items() if k in df.columns}
    return df[list(keep)].rename(columns=keep)


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(x) for x in row) + " |\n" for row in df.itertuples(index=False))


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
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(x))}</td>" for x in row) + "</tr>"
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
             "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f2f2f2}"
             "img{max-width:100%}figcaption{color:#555;font-size:0.85em}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>IRED study report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
