"""A self-contained report.html: inline CSS, plots embedded as base64 PNG, no external links,
so it opens offline and can be attached to a release ticket as one file."""

from __future__ import annotations

import base64
import re
from html import escape

from asc_deploy.report.document import Block, Bullets, Heading, Image, Paragraph
from asc_deploy.report.tables import Table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; white-space: nowrap; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note { font-size: 12px; color: #555; margin: 0.2em 0 1.5em; max-width: 100em; }
.scroll > table { margin-bottom: 0.2em; }
.pass { color: #11772d; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.inconclusive { color: #a15c00; font-weight: bold; }
.verdict { font-size: 1.4em; } figure { margin: 1em 0; } img { max-width: 100%; }
figcaption { font-size: 12px; color: #555; }
.scroll { overflow-x: auto; }
td.wrap { white-space: normal; min-width: 30em; }
"""


WRAP_AT = 60
NUMBER = re.compile(r"^([-+–]?\d|–$)")  # numbers, cells leading with one, and dashes: right


def _cell(text: str, mark: str | None = None) -> str:
    """A table cell; `mark` ("fail" / "pass", Table.marks) colours a value that misses or meets
    its target on top of its alignment."""
    verdicts = {"PASS": "pass", "FAIL": "fail", "INCONCLUSIVE": "inconclusive"}
    cls = verdicts.get(text) or ("num" if NUMBER.match(text) else None)
    if cls is None and len(text) > WRAP_AT:
        cls = "wrap"  # a sentence (a flag, a gate's reason) wraps instead of widening the table
    if mark:
        cls = f"{cls} {mark}" if cls and cls != mark else mark
    return f'<td class="{cls}">{escape(text)}</td>' if cls else f"<td>{escape(text)}</td>"


def table_html(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(_cell(c, table.marks.get((r, k))) for k, c in enumerate(row)) + "</tr>"
        for r, row in enumerate(table.rows)
    )
    # The note goes under the scrolling box, at page width: a caption inside a table wider
    # than the page would scroll out of sight with it.
    note = f"<p class='note'>{escape(table.note)}</p>" if table.note else ""
    if not table.rows:
        return f"<h3>{escape(table.title)}</h3><p>{escape(table.note or '(nothing to show)')}</p>"
    return (
        f"<h3>{escape(table.title)}</h3><div class='scroll'><table>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{note}"
    )


def _block_html(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        if not block.strong:
            return f"<p>{escape(block.text)}</p>"
        # A verdict is green only when it passed: noisy (inconclusive) numbers are amber.
        cls = next((c for c in ("fail", "inconclusive") if c.upper() in block.text), "pass")
        return f'<p class="verdict {cls}">{escape(block.text)}</p>'
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        return table_html(block)
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        return (
            f'<figure><img alt="{escape(block.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(block.caption)}</figcaption></figure>"
        )
    raise TypeError(f"unknown block {type(block).__name__}")


def to_html_document(blocks: list[Block], title: str) -> str:
    body = "\n".join(_block_html(b) for b in blocks)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
