"""The report's figures, drawn with :mod:`conun.viz` from results.json documents into PNG bytes.

A figure that the results cannot support (no loop-based run for the forgetting curve, no
retrain run for the trade-off, ...) is not an error for a report: it is left out with the
reason :mod:`conun.viz` gives, and the report says so.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure

from conun.report.document import Image
from conun.viz import forgetting_curve_figure, time_per_method_figure, tradeoff_figure
from conun.viz.figure import PNG_DPI

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report.

    Attributes:
        name: file-name-safe identifier; the Markdown's PNG is ``<stem>-<name>.png``.
        title: the figure's heading.
        caption: what it shows and how to read it.
        build: draws it from validated results.json documents; raises ``ValueError`` when the
            results cannot support it.
    """

    name: str
    title: str
    caption: str
    build: Callable[[list[dict[str, Any]]], Figure]


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "forgetting_curve",
        "Forgetting curve",
        "Accuracy on the forget set against forget batches processed, one line per loop-based "
        "run; the dotted line is the retrained model's accuracy on the forget set. Diamonds are "
        "runs without a curve, at their final forget-set accuracy: one-shot methods (fisher, "
        "ssd, lcodec) and methods that never step on a forget batch (finetune, l1_sparse, "
        "unsir), drawn at 0 forget batches.",
        forgetting_curve_figure,
    ),
    FigureSpec(
        "time_per_method",
        "Time per method",
        "Wall-clock seconds of each unlearning method (log scale; bars are means over runs, "
        "dots single runs); the dotted line is retraining from scratch, labels are the fraction "
        "of its time.",
        time_per_method_figure,
    ),
    FigureSpec(
        "tradeoff",
        "Forgetting against utility",
        "Per run: |forget-train accuracy − retrain's| (0 = forgets like retraining) against "
        "utility, coloured by seconds (log scale); one marker shape per method. Utility is the "
        "test accuracy on the retained classes for a class request (the forgotten class's test "
        "samples would count successful forgetting as lost utility) and on the whole test set "
        "for a sample request.",
        tradeoff_figure,
    ),
)
"""The figures every report tries to draw, in order."""


def figure_png(figure: Figure) -> bytes:
    """``figure`` encoded as PNG at :data:`conun.viz.figure.PNG_DPI`."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PNG_DPI)
    return buffer.getvalue()


@dataclass(frozen=True)
class DrawnFigure:
    """The outcome of one :class:`FigureSpec`.

    Attributes:
        spec: the figure.
        image: the PNG, or ``None`` when the results cannot support the figure.
        reason: why it was not drawn (``""`` when it was).
    """

    spec: FigureSpec
    image: Image | None
    reason: str = ""


def draw_figures(
    documents: Sequence[Mapping[str, Any]], specs: Sequence[FigureSpec] = FIGURES
) -> list[DrawnFigure]:
    """Draw every figure of ``specs`` that the results support.

    Args:
        documents: results.json documents (validated), drawn together (one panel per request).
        specs: the figures to try.

    Returns:
        One :class:`DrawnFigure` per spec, in order.
    """
    drawn: list[DrawnFigure] = []
    for spec in specs:
        try:
            figure = spec.build([dict(document) for document in documents])
        except ValueError as error:
            logger.info("report: %s not drawn: %s", spec.name, error)
            drawn.append(DrawnFigure(spec, None, str(error)))
            continue
        image = Image(spec.name, spec.title, spec.caption, figure_png(figure))
        drawn.append(DrawnFigure(spec, image))
    return drawn


__all__ = ["FIGURES", "DrawnFigure", "FigureSpec", "draw_figures", "figure_png"]
