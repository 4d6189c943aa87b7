"""Reports: one self-contained HTML page, and a Markdown twin, from a run or bench directory.

``conun report DIR [--out STEM]`` is :func:`write_report`: it reads only the files the commands
wrote (results.json, config.yaml, bench.yaml, checkpoint metadata) and writes ``STEM.html``
(inline CSS, images as ``data:`` URIs, nothing external), ``STEM.md`` and the ``STEM-*.png``
figures the Markdown references. :func:`build_report` assembles the same content in memory as a
:class:`Report` of blocks, which :func:`render_html` and :func:`render_markdown` turn into text.
"""

from conun.report.build import (
    DEFAULT_STEM,
    ReportPaths,
    ReportSourceError,
    SourceKind,
    build_report,
    detect_source,
    write_report,
)
from conun.report.document import (
    Block,
    BulletList,
    CodeBlock,
    Heading,
    Image,
    Paragraph,
    Report,
    Table,
    blocks_from_markdown,
    image_file_names,
    render_html,
    render_markdown,
)
from conun.report.figures import FIGURES, DrawnFigure, FigureSpec, draw_figures, figure_png

__all__ = [
    "DEFAULT_STEM",
    "FIGURES",
    "Block",
    "BulletList",
    "CodeBlock",
    "DrawnFigure",
    "FigureSpec",
    "Heading",
    "Image",
    "Paragraph",
    "Report",
    "ReportPaths",
    "ReportSourceError",
    "SourceKind",
    "Table",
    "blocks_from_markdown",
    "build_report",
    "detect_source",
    "draw_figures",
    "figure_png",
    "image_file_names",
    "render_html",
    "render_markdown",
    "write_report",
]
