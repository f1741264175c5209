"""The report as an ordered list of blocks, rendered to markdown here and to HTML in html.py.

Keeping one document model means report.md and report.html always say the same things in the
same order.
"""

from __future__ import annotations

from dataclasses import dataclass

from asc_deploy.report.tables import Table, to_markdown


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str
    strong: bool = False


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Image:
    filename: str  # relative to the report folder, e.g. plots/pareto-cpu.png
    caption: str
    png: bytes


Block = Heading | Paragraph | Bullets | Table | Image


def to_markdown_document(blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}\n")
        elif isinstance(block, Paragraph):
            parts.append(f"**{block.text}**\n" if block.strong else f"{block.text}\n")
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items) + "\n")
        elif isinstance(block, Table):
            parts.append(to_markdown(block))
        elif isinstance(block, Image):
            parts.append(f"![{block.caption}]({block.filename})\n\n_{block.caption}_\n")
    return "\n".join(parts)
