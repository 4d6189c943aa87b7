"""A report as a list of blocks, rendered two ways: one self-contained HTML page, and Markdown.

The blocks are plain data (headings, paragraphs, lists, tables, code, images), so both
renderings say the same thing. The HTML page needs nothing outside itself: the CSS is inline and
every image is a ``data:image/png;base64`` URI; there are no scripts, links or fonts to fetch.
The Markdown references the images as PNG files next to it.

Tables produced elsewhere as Markdown (``results.md``, the bench's ``table.md``, the audit
table) are turned into blocks by :func:`blocks_from_markdown`, so their formatting has one
source.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote


@dataclass(frozen=True)
class Heading:
    """A section heading.

    Attributes:
        text: plain text.
        level: 1 (the title) to 4.
    """

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of plain text (no markup; escaped in both renderings)."""

    text: str


@dataclass(frozen=True)
class BulletList:
    """An unordered list of plain-text items."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A table of plain-text cells.

    Attributes:
        header: the column headings.
        rows: the body, each row as long as ``header``.
    """

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class CodeBlock:
    """Preformatted text (a command line, a recorded YAML config).

    Attributes:
        text: the text, shown verbatim.
        language: a Markdown fence language (``"yaml"``, ``"console"``) or ``""``.
    """

    text: str
    language: str = ""


@dataclass(frozen=True)
class Image:
    """A PNG image: embedded in the HTML, a file next to the Markdown.

    Attributes:
        name: file-name-safe identifier (``forgetting_curve``); names the PNG file.
        alt: a short text replacing the image where it cannot be shown.
        caption: what the image shows and how to read it (printed under it).
        png: the encoded PNG.
    """

    name: str
    alt: str
    caption: str
    png: bytes


Block = Heading | Paragraph | BulletList | Table | CodeBlock | Image
"""Any block of a report."""


@dataclass
class Report:
    """A report: a title and its blocks, in reading order.

    Attributes:
        title: the page title and first heading.
        blocks: the content after the title.
    """

    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def images(self) -> list[Image]:
        """The report's images, in order."""
        return [block for block in self.blocks if isinstance(block, Image)]


def blocks_from_markdown(text: str) -> list[Block]:
    """Parse the small Markdown subset conun's tables are written in into blocks.

    Understood: ``#`` headings, pipe tables (a header line, a ``|---|`` line, body lines;
    ``\\|`` is a ``|`` inside a cell) and paragraphs (consecutive other non-blank lines); nothing
    else is interpreted.

    Args:
        text: e.g. :func:`conun.evaluation.results.format_table`'s output.

    Returns:
        The blocks; a table with a header but no body rows is kept (callers decide).
    """
    blocks: list[Block] = []
    paragraph: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if paragraph:
            blocks.append(Paragraph(" ".join(paragraph)))
            paragraph.clear()
        if table:
            header, *body = table
            rows = [row for row in body if not all(re.fullmatch(r":?-+:?", c) for c in row)]
            blocks.append(Table(tuple(header), tuple(tuple(row) for row in rows)))
            table.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("|"):
            if paragraph:
                flush()
            inner = line[1:-1] if line.endswith("|") and not line.endswith("\\|") else line[1:]
            cells = re.split(r"(?<!\\)\|", inner)
            table.append([cell.strip().replace("\\|", "|") for cell in cells])
            continue
        if table:
            flush()
        if not line:
            flush()
        elif heading := re.fullmatch(r"(#{1,6})\s+(.*)", line):
            flush()
            blocks.append(Heading(heading.group(2), level=len(heading.group(1))))
        else:
            paragraph.append(line)
    flush()
    return blocks


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       background: #fff; margin: 0; line-height: 1.5; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
h1 { font-size: 1.7rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
h2 { font-size: 1.35rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem;
     margin-top: 2rem; }
h3 { font-size: 1.1rem; margin-top: 1.5rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; display: block;
        overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: left; }
th { background: #f6f8fa; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: .7rem 1rem;
      overflow-x: auto; font-size: .85rem; }
figure { margin: 1rem 0 1.5rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .9rem; margin-top: .3rem; }
ul { padding-left: 1.4rem; }
"""

_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?(\s*±\s*[-+]?\d+(\.\d*)?)?%?|–")


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        level = min(max(block.level, 1), 6)
        return f"<h{level}>{_escape(block.text)}</h{level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_escape(block.text)}</p>"
    if isinstance(block, BulletList):
        items = "".join(f"<li>{_escape(item)}</li>" for item in block.items)
        return f"<ul>{items}</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{_escape(cell)}</th>" for cell in block.header)
        body = "".join(
            "<tr>"
            + "".join(
                f'<td class="num">{_escape(cell)}</td>'
                if _NUMBER.fullmatch(cell)
                else f"<td>{_escape(cell)}</td>"
                for cell in row
            )
            + "</tr>\n"
            for row in block.rows
        )
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"
    if isinstance(block, CodeBlock):
        return f"<pre><code>{_escape(block.text.rstrip())}</code></pre>"
    data = base64.b64encode(block.png).decode("ascii")
    return (
        f'<figure id="figure-{_escape(block.name)}">'
        f'<img src="data:image/png;base64,{data}" alt="{_escape(block.alt)}">'
        f"<figcaption>{_escape(block.caption)}</figcaption></figure>"
    )


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page.

    Args:
        report: the report.

    Returns:
        A complete HTML5 document: inline CSS, images as ``data:`` URIs, no scripts and no
        reference to any other file or URL.
    """
    body = "\n".join(_html_block(block) for block in report.blocks)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="conun report">\n'
        f"<title>{_escape(report.title)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{_escape(report.title)}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    )


# -- Markdown -----------------------------------------------------------------------------------


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_block(block: Block, image_files: Mapping[str, str]) -> str:
    if isinstance(block, Heading):
        return "#" * min(max(block.level, 1), 6) + " " + block.text
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, BulletList):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        lines = [
            "| " + " | ".join(_markdown_cell(cell) for cell in block.header) + " |",
            "|" + "|".join("---" for _ in block.header) + "|",
        ]
        lines += [
            "| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in block.rows
        ]
        return "\n".join(lines)
    if isinstance(block, CodeBlock):
        fence = "````" if "```" in block.text else "```"
        return f"{fence}{block.language}\n{block.text.rstrip()}\n{fence}"
    target = quote(image_files[block.name])
    alt = block.alt.replace("[", "(").replace("]", ")")
    return f"![{alt}]({target})\n\n{block.caption}"


def render_markdown(report: Report, image_files: Mapping[str, str]) -> str:
    """The report as Markdown, images referenced as files.

    Args:
        report: the report.
        image_files: for every image's ``name``, its path relative to the Markdown file.

    Returns:
        The Markdown text.

    Raises:
        KeyError: an image has no entry in ``image_files``.
    """
    parts = [f"# {report.title}"]
    parts += [_markdown_block(block, image_files) for block in report.blocks]
    return "\n\n".join(parts) + "\n"


def image_file_names(report: Report, stem_name: str) -> dict[str, str]:
    """``{image name: "<stem_name>-<image name>.png"}`` for every image of the report."""
    return {image.name: f"{stem_name}-{image.name}.png" for image in report.images}


__all__ = [
    "Block",
    "BulletList",
    "CodeBlock",
    "Heading",
    "Image",
    "Paragraph",
    "Report",
    "Table",
    "blocks_from_markdown",
    "image_file_names",
    "render_html",
    "render_markdown",
]
