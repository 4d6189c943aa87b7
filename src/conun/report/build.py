"""``conun report``: one HTML page (and its Markdown twin) from a run or a bench directory.

Reads only what the commands wrote (results.json, config.yaml, bench.yaml, checkpoint
metadata) and draws the figures with :mod:`conun.viz`:

* a **run directory** holds ``results.json`` (``conun train | unlearn | evaluate | audit |
  demo``), maybe ``config.yaml`` and checkpoints (``checkpoint.safetensors`` in it or in a
  sub-directory, as the demo's ``original/``): :mod:`conun.report.run_report`;
* a **bench directory** holds ``bench.yaml`` and ``cells/<seed>/<request>/<method>/results.json``
  (``conun bench``): :mod:`conun.report.bench_report`.

The report has: the setting (dataset, model, seeds, requests, methods), the recorded command
and configuration, the versions (of this report, of the results, of every checkpoint), the
results table (original and retrain rows included where they ran), the privacy-audit numbers
with their meaning and good direction where an audit ran, and the figures (forgetting curve,
time per method, forgetting against utility). A bench report adds the t-SNE of the
representations before and after unlearning where the bench's checkpoints are on disk
(:mod:`conun.report.embedding`; the only part that loads weights). A run directory gets no t-SNE:
no run directory keeps the original and the unlearned models together (the demo saves only the
original, ``conun unlearn`` only the unlearned model).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from conun.io import RESULTS_FILE, atomic_write, atomic_write_text, check_output_path
from conun.report.bench_report import bench_report
from conun.report.common import BENCH_FILE, EXPECTED, ReportSourceError
from conun.report.document import Report, image_file_names, render_html, render_markdown
from conun.report.figures import FIGURES
from conun.report.run_report import run_report

SourceKind = Literal["run", "bench"]
"""What a directory holds: one run's results, or a bench grid."""

DEFAULT_STEM = "report"
"""Without ``out``: ``DIRECTORY/report.html``, ``report.md`` and ``report-<figure>.png``."""


@dataclass(frozen=True)
class ReportPaths:
    """The files :func:`write_report` wrote.

    Attributes:
        html: the self-contained page.
        markdown: the Markdown twin.
        images: the PNG files the Markdown references (the HTML embeds the same bytes).
    """

    html: Path
    markdown: Path
    images: tuple[Path, ...]


def detect_source(directory: str | os.PathLike[str]) -> SourceKind:
    """Whether ``directory`` is a bench directory (``bench.yaml``) or a run directory
    (``results.json``).

    Raises:
        FileNotFoundError: it does not exist.
        ReportSourceError: it is a file, or holds neither file.
    """
    path = Path(directory)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; expected {EXPECTED}")
    if not path.is_dir():
        raise ReportSourceError(f"{path} is a file, not a directory; expected {EXPECTED}")
    if (path / BENCH_FILE).is_file():
        return "bench"
    if (path / RESULTS_FILE).is_file():
        return "run"
    raise ReportSourceError(
        f"{path} holds neither results.json nor bench.yaml: it is neither a run directory nor "
        f"a bench directory; expected {EXPECTED}"
    )


def build_report(directory: str | os.PathLike[str], *, figures: bool = True) -> Report:
    """Read a run or bench directory and assemble its report (figures drawn in memory).

    Args:
        directory: a run directory or a bench directory (:func:`detect_source`).
        figures: draw the figures (most of the time a report takes); without, the report has
            no Figures section.

    Returns:
        The report, ready for :func:`conun.report.render_html` / ``render_markdown``.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
        ReportSourceError: it is neither kind of directory, a results.json or bench.yaml in
            it is broken, or a bench directory has no finished cell.
    """
    path = Path(directory)
    if detect_source(path) == "bench":
        return bench_report(path, figures=figures)
    return run_report(path, figures=figures)


_LONGEST_STEM = 200
"""Bytes in the name of ``--out``: the longest figure file adds ``-<figure>.png`` to it."""


def write_report(
    directory: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    figures: bool = True,
) -> ReportPaths:
    """Build the report of ``directory`` and write ``<out>.html``, ``<out>.md`` and the PNGs.

    Every file is written atomically. PNGs of figures an earlier report of the same ``out``
    drew but this one cannot are removed, so the Markdown never sits next to a stale figure.

    Args:
        directory: a run directory or a bench directory.
        out: the output path without extension (default ``DIRECTORY/report``); the figures are
            ``<out>-<figure>.png`` next to it.
        figures: see :func:`build_report`.

    Returns:
        The paths written.

    Raises:
        ValueError: ``out`` has an extension of an output file or is a directory.
        FileNotFoundError, ReportSourceError: see :func:`build_report`.
    """
    stem = Path(out) if out is not None else Path(directory) / DEFAULT_STEM
    if stem.suffix.lower() in (".html", ".htm", ".md", ".png"):
        raise ValueError(
            f"--out is a path without extension (OUT.html, OUT.md and OUT-<figure>.png are "
            f"written); got {stem}"
        )
    if stem.is_dir():
        raise ValueError(
            f"--out {stem} is a directory; give a path without extension, e.g. {stem / 'report'}"
        )
    check_output_path(stem, directory=False)
    if len(os.fsencode(stem.name)) > _LONGEST_STEM:  # room for ``<stem>-<figure>.png``
        raise ValueError(
            f"--out {stem.name[:40]}...: the name is {len(os.fsencode(stem.name))} bytes long; "
            f"at most {_LONGEST_STEM} are allowed (the figures add -<figure>.png to it)"
        )
    report = build_report(directory, figures=figures)
    files = image_file_names(report, stem.name)
    images: list[Path] = []
    for image in report.images:
        target = stem.parent / files[image.name]
        atomic_write(target, functools.partial(_write_bytes, data=image.png))
        images.append(target)
    drawn = {image.name for image in report.images}
    for spec in FIGURES:
        if spec.name not in drawn:
            (stem.parent / f"{stem.name}-{spec.name}.png").unlink(missing_ok=True)
    markdown = atomic_write_text(Path(f"{stem}.md"), render_markdown(report, files))
    page = atomic_write_text(Path(f"{stem}.html"), render_html(report))
    return ReportPaths(html=page, markdown=markdown, images=tuple(images))


def _write_bytes(path: Path, *, data: bytes) -> None:
    path.write_bytes(data)


__all__ = [
    "DEFAULT_STEM",
    "ReportPaths",
    "ReportSourceError",
    "SourceKind",
    "build_report",
    "detect_source",
    "write_report",
]
