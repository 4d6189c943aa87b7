"""What unlearning costs and what it buys: time per method, and forgetting against utility.

* :func:`time_per_method`: each method's wall-clock seconds (results.json ``seconds``: the
  method itself, evaluation excluded) as bars on a log scale, with retraining from scratch as
  the horizontal reference line and each bar labelled with its fraction of retraining time.
* :func:`tradeoff`: per run, how far its forget-set accuracy is from the retrained model's
  (``|forget_train_acc - retrain's|``: 0 is perfect forgetting in the paper's sense, for the
  class and the sample scenario alike) against its utility, coloured by seconds on a log scale;
  one marker shape per method. Utility is the test accuracy on the retained classes
  (``retain_test_acc``) for a class request and on the whole test set (``test_acc``) for a
  sample request: the whole test set of a class request includes the forgotten class, so its
  accuracy falls by that class's share exactly when forgetting succeeds.

A panel holding several runs of one method (several results files merged, one per seed) shows
their mean as the bar and every run as a dot, and every run as a point in the trade-off.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
from matplotlib.axis import Axis
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    PercentFormatter,
)

from conun.viz.figure import (
    FigurePaths,
    figure_legend,
    method_colours,
    new_figure,
    save_figure,
)
from conun.viz.results import (
    ORIGINAL,
    RETRAIN,
    Panel,
    ResultsInput,
    collect_panels,
    describe,
    read_results,
)

logger = logging.getLogger(__name__)

#: Seconds below this are drawn at this value: results.json rounds seconds to 1e-4, and a log
#: axis cannot show 0.
SECONDS_FLOOR = 1e-4

#: Utility metrics the trade-off can put on its y axis, with their axis labels.
UTILITY_METRICS = {
    "test_acc": "test accuracy (whole test set)",
    "retain_test_acc": "test accuracy on the retained classes",
}

#: The trade-off's utility per scenario when none is asked for: a class request's whole test
#: set holds the forgotten class, whose accuracy should fall, so its utility is the retained
#: classes' test accuracy; a sample request forgets no class, so the whole test set is right.
DEFAULT_UTILITY = {"class": "retain_test_acc", "sample": "test_acc"}


@dataclass(frozen=True)
class _Point:
    """One run in the trade-off: its method, gap to retrain, utility and (floored) seconds."""

    method: str
    gap: float
    utility: float
    seconds: float


_MARKERS: tuple[str | tuple[int, Literal[0, 1, 2], int], ...] = (
    "o",
    "s",
    "^",
    "D",
    "v",
    "P",
    "X",
    "*",
    "<",
    ">",
    "h",
    "p",
    "d",
    (4, 1, 0),  # four-pointed star
    (6, 1, 0),  # six-pointed star
    (3, 1, 0),  # three-pointed star
    (8, 1, 0),  # eight-pointed star
    (5, 1, 180),  # five-pointed star, upside down
)
"""Filled marker shapes only (black edges; an unfilled shape such as "1" has no edge), each
clearly unlike the others ("8" and "H", near copies of "o" and "h", are left out), enough for
every shipped method and the two references before a shape repeats."""


def time_per_method_figure(results: ResultsInput, *, include_original: bool = False) -> Figure:
    """Build the time-per-method figure (one panel per forget request).

    Args:
        results: results.json documents, files or run directories.
        include_original: also draw the original's bar (its training time: a reference for
            retraining, not a cost of unlearning, hence off by default).

    Returns:
        The figure. In each panel's Axes, each method is one ``BarContainer`` labelled with its
        name whose bar height is the mean of its runs' seconds; the retrain reference line is
        labelled ``"retrain"``.

    Raises:
        ValueError: no class or sample run other than the references.
    """
    documents = read_results(results)
    excluded = {RETRAIN} if include_original else {RETRAIN, ORIGINAL}
    panels = [
        panel
        for panel in collect_panels(documents)
        if any(m not in excluded for m in panel.methods())
    ]
    if not panels:
        raise ValueError(
            "no unlearning run in the results: time per method needs class or sample runs of a "
            "method other than 'original' and 'retrain'"
        )
    colours = method_colours(m for panel in panels for m in panel.methods() if m not in excluded)

    figure = new_figure(
        max(4.0, 1.0 + 0.7 * max(len(p.methods()) for p in panels)) * len(panels), 3.8
    )
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        methods = [m for m in panel.methods() if m not in excluded]
        reference = panel.retrain_seconds()
        for position, method in enumerate(methods):
            seconds = [max(float(run["seconds"]), SECONDS_FLOOR) for run in panel.runs_of(method)]
            height = float(np.mean(seconds))
            ax.bar(position, height, width=0.6, color=colours[method], label=method)
            if len(seconds) > 1:
                ax.scatter([position] * len(seconds), seconds, color="black", s=8, zorder=3)
            if reference is not None:
                ax.annotate(
                    f"×{height / max(reference, SECONDS_FLOOR):.2g}",
                    (position, height),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    fontsize="small",
                )
        if reference is not None:
            ax.axhline(
                max(reference, SECONDS_FLOOR),
                color="0.25",
                linestyle=":",
                linewidth=1.5,
                label=RETRAIN,
            )
            ax.text(
                1.0,
                max(reference, SECONDS_FLOOR),
                f" retrain\n {reference:.3g} s",
                transform=ax.get_yaxis_transform(),
                va="center",
                fontsize="small",
            )
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        # a lone bar should not fill the panel
        ax.set_xlim(-0.6, max(len(methods), 2) - 0.4)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_ylabel("seconds (log scale)")
        ax.set_title(panel.title)
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.margins(y=0.15)
    suptitle = describe(documents)
    if suptitle:
        figure.suptitle(suptitle)
    return figure


def time_per_method(
    results: ResultsInput, out_stem: str | os.PathLike[str], *, include_original: bool = False
) -> FigurePaths:
    """Draw seconds per method and write ``<out_stem>.png`` and ``<out_stem>.pdf``.

    Args:
        results: results.json documents, files or run directories.
        out_stem: destination path without extension.
        include_original: see :func:`time_per_method_figure`.

    Returns:
        The paths written.
    """
    figure = time_per_method_figure(results, include_original=include_original)
    return save_figure(figure, out_stem)


def tradeoff_figure(results: ResultsInput, *, utility: str | None = None) -> Figure:
    """Build the forgetting-vs-utility figure (one panel per forget request with a retrain run).

    Args:
        results: results.json documents, files or run directories.
        utility: the y axis of every panel, a key of :data:`UTILITY_METRICS`; None (the
            default) takes each panel's from :data:`DEFAULT_UTILITY` (``retain_test_acc`` for a
            class request, ``test_acc`` for a sample request). ``retain_test_acc`` exists in
            the class scenario only; panels whose runs lack the metric are left out.

    Returns:
        The figure. In each panel's Axes, each method is one ``PathCollection`` labelled with
        its name; its offsets are ``(|forget_train_acc - retrain's|, utility)`` per run (retrain's
        from the run's own results file where it has one, see :mod:`conun.viz.results`) and its
        colour array is the runs' seconds (floored at :data:`SECONDS_FLOOR`); the y label is
        the utility's :data:`UTILITY_METRICS` label. The legend (one grey marker per method) is
        the figure's, outside every panel (``figure.legends[0]``).

    Raises:
        ValueError: ``utility`` is not allowed, or no panel has a retrain run and a run with
            both metrics.
    """
    if utility is not None and utility not in UTILITY_METRICS:
        raise ValueError(f"utility must be one of {sorted(UTILITY_METRICS)}; got {utility!r}")
    documents = read_results(results)
    drawn: list[tuple[Panel, str, list[_Point]]] = []
    for panel in collect_panels(documents):
        key = utility or DEFAULT_UTILITY[panel.scenario]
        points = []
        for run, source in zip(panel.runs, panel.sources, strict=True):
            reference = panel.retrain_metric("forget_train_acc", source=source)
            metrics = run["metrics"]
            if (
                reference is not None
                and metrics.get("forget_train_acc") is not None
                and metrics.get(key) is not None
            ):
                points.append(
                    _Point(
                        method=run["method"],
                        gap=abs(float(metrics["forget_train_acc"]) - reference),
                        utility=float(metrics[key]),
                        seconds=max(float(run["seconds"]), SECONDS_FLOOR),
                    )
                )
        if not points:
            logger.info(
                "trade-off: %s left out (no retrain run, or no run with %s)", panel.title, key
            )
            continue
        drawn.append((panel, key, points))
    if not drawn:
        wanted = repr(utility) if utility else "its utility metric"
        raise ValueError(
            "the trade-off needs, for some forget request, a retrain run (the reference) and "
            f"runs with 'forget_train_acc' and {wanted}; none in the results"
        )

    seconds = [point.seconds for _, _, points in drawn for point in points]
    low, high = min(seconds), max(seconds)
    if high <= low:  # one distinct time: give the colour scale some width
        low, high = low / 2, high * 2
    norm = LogNorm(vmin=low, vmax=high)
    cmap = "viridis"
    methods = list(dict.fromkeys(point.method for _, _, points in drawn for point in points))
    markers = {m: _MARKERS[i % len(_MARKERS)] for i, m in enumerate(methods)}

    figure = new_figure(4.6 * len(drawn) + 2.8, 3.8)
    axes = figure.subplots(1, len(drawn), squeeze=False)[0]
    for ax, (panel, key, points) in zip(axes, drawn, strict=True):
        for method in dict.fromkeys(point.method for point in points):
            mine = [point for point in points if point.method == method]
            ax.scatter(
                [point.gap for point in mine],
                [point.utility for point in mine],
                c=[point.seconds for point in mine],
                cmap=cmap,
                norm=norm,
                marker=markers[method],
                s=60,
                edgecolors="black",
                linewidths=0.6,
                label=method,
                zorder=3,
            )
        ax.set_title(panel.title)
        ax.set_xlabel("forgetting gap |forget train acc − retrain's|  (0 = retrain)")
        ax.set_ylabel(UTILITY_METRICS[key])
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        # At most ~6 ticks: percent labels such as "12.5%" collide on a 4-inch axis otherwise.
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        ax.margins(0.15)
        ax.grid(alpha=0.3)
    colorbar = figure.colorbar(
        ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label="seconds (log scale)"
    )
    _plain_log_ticks(colorbar.ax.yaxis)
    # The marker says the method and colour is time, so the legend's markers are grey; one
    # legend for all panels (a method keeps its marker across them).
    handles = [
        Line2D(
            [],
            [],
            marker=markers[m],
            linestyle="",
            markerfacecolor="0.8",
            markeredgecolor="black",
            markersize=7,
            label=m,
        )
        for m in methods
    ]
    figure_legend(figure, handles)
    suptitle = describe(documents)
    if suptitle:
        figure.suptitle(suptitle)
    return figure


def tradeoff(
    results: ResultsInput, out_stem: str | os.PathLike[str], *, utility: str | None = None
) -> FigurePaths:
    """Draw forgetting against utility and write ``<out_stem>.png`` and ``<out_stem>.pdf``.

    Args:
        results: results.json documents, files or run directories.
        out_stem: destination path without extension.
        utility: see :func:`tradeoff_figure`.

    Returns:
        The paths written.
    """
    return save_figure(tradeoff_figure(results, utility=utility), out_stem)


def _plain_log_ticks(axis: Axis) -> None:
    """Ticks at 1, 2, 5 x 10^k written as plain numbers (0.5, 2, 100) instead of 5x10^-1."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())
