"""Building and saving figures without pyplot.

Figures are plain :class:`matplotlib.figure.Figure` objects on an Agg canvas: no pyplot state,
no GUI backend, nothing to close, and the same inputs give the same files (the PDF's creation
date is left out so that two saves are byte-identical).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend

from conun.io import atomic_write

#: Resolution of the PNG files.
PNG_DPI = 150

Colour = tuple[float, float, float, float]


@dataclass(frozen=True)
class FigurePaths:
    """The files one figure was written to.

    Attributes:
        png: raster version, for READMEs and quick looks.
        pdf: vector version, for papers.
    """

    png: Path
    pdf: Path

    @property
    def paths(self) -> tuple[Path, Path]:
        """Both paths, PNG first."""
        return (self.png, self.pdf)


def new_figure(width: float, height: float) -> Figure:
    """A figure with constrained layout on an Agg canvas.

    Args:
        width: inches.
        height: inches.
    """
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, out_stem: str | os.PathLike[str]) -> FigurePaths:
    """Write ``figure`` as ``<out_stem>.png`` and ``<out_stem>.pdf`` (atomically each).

    Args:
        figure: the figure to save.
        out_stem: destination without extension; missing parent directories are created.

    Returns:
        The two paths written.

    Raises:
        ValueError: ``out_stem`` already ends in ``.png`` or ``.pdf``.
    """
    stem = Path(out_stem)
    if stem.suffix.lower() in (".png", ".pdf"):
        raise ValueError(
            f"out_stem must have no extension (both .png and .pdf are written); got {stem}"
        )
    png = Path(f"{stem}.png")
    pdf = Path(f"{stem}.pdf")
    atomic_write(png, lambda tmp: figure.savefig(tmp, format="png", dpi=PNG_DPI))
    # No creation date: the same figure gives the same bytes.
    atomic_write(
        pdf, lambda tmp: figure.savefig(tmp, format="pdf", metadata={"CreationDate": None})
    )
    return FigurePaths(png=png, pdf=pdf)


def method_colours(methods: Iterable[str]) -> dict[str, Colour]:
    """A colour per method, assigned in the order given, so one method keeps its colour across
    the panels of a figure.

    Args:
        methods: method names; duplicates are ignored.

    Returns:
        ``{method: RGBA}``; ``tab10`` for up to 10 methods, ``tab20`` for up to 20, then evenly
        spaced ``turbo`` colours.
    """
    names = list(dict.fromkeys(methods))
    if len(names) <= 10:
        palette = matplotlib.colormaps["tab10"]
        return {name: palette(i) for i, name in enumerate(names)}
    if len(names) <= 20:
        palette = matplotlib.colormaps["tab20"]
        return {name: palette(i) for i, name in enumerate(names)}
    palette = matplotlib.colormaps["turbo"]
    return {name: palette(i / (len(names) - 1)) for i, name in enumerate(names)}


def legend_entries(axes: Iterable[Axes]) -> dict[str, Artist]:
    """The labelled artists of ``axes``, one per label, in order of first appearance.

    A method drawn in several panels keeps its colour (:func:`method_colours`), so one legend
    entry serves them all.

    Args:
        axes: the panels.

    Returns:
        ``{label: the first artist with it}``; labels starting with ``_`` are left out.
    """
    entries: dict[str, Artist] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    return entries


def figure_legend(figure: Figure, handles: Sequence[Artist]) -> Legend | None:
    """One legend for the whole figure, to the right of every panel, never over the data.

    A legend inside an Axes hides the points that fall under it (the trade-off's cloud of
    methods fills whole panels); constrained layout makes room for an "outside" legend instead.

    Args:
        figure: a figure from :func:`new_figure` (constrained layout).
        handles: the entries, each with its label, in order.

    Returns:
        The legend, or None when there is no entry.
    """
    if not handles:
        return None
    return figure.legend(handles=list(handles), loc="outside right upper", fontsize="small")
