"""The paper's Figure 2: accuracy on the forget set against the forget batches processed.

Every loop-based run (a run with a ``history``) is one line: ``history[i]["batch"]`` on the x
axis, ``history[i]["forget_train_acc"]`` on the y axis. The engine records the history at each
stopping-rule check on a random subset of the forget set; the retrained model's accuracy on the
whole forget set is the horizontal reference line (what "forgotten" means), where the results
hold a retrain run for that request.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from conun.viz.figure import FigurePaths, method_colours, new_figure, save_figure
from conun.viz.results import (
    ORIGINAL,
    RETRAIN,
    ResultsInput,
    collect_panels,
    describe,
    read_results,
)

#: History keys a curve can show.
CURVE_METRICS = ("forget_train_acc", "held_out_acc")


def forgetting_curve_figure(results: ResultsInput, *, show_held_out: bool = False) -> Figure:
    """Build the forgetting-curve figure (one panel per forget request).

    Args:
        results: results.json documents, files or run directories (see
            :func:`conun.viz.results.read_results`).
        show_held_out: also draw each run's ``held_out_acc`` (the stopping rule's accuracy on
            held-out samples; the class scenario's retained classes) as a dashed line.

    Returns:
        The figure. In each panel's Axes, the first solid line of a method carries the method's
        name as its label (further seeds of it are unlabelled); held-out lines are labelled
        ``"<method> (held out)"``; the retrain reference line is labelled ``"retrain"``.

    Raises:
        ValueError: no run of a class or sample scenario has a history.
    """
    documents = read_results(results)
    panels = [
        panel for panel in collect_panels(documents) if any(_has_curve(run) for run in panel.runs)
    ]
    if not panels:
        raise ValueError(
            "no loop-based run in the results: the forgetting curve needs runs with a non-empty "
            "'history' in a class or sample scenario (one-shot methods, original and retrain "
            "have none)"
        )
    methods = [run["method"] for panel in panels for run in panel.runs if _has_curve(run)]
    colours = method_colours(methods)

    figure = new_figure(4.8 * len(panels), 3.6)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        labelled: set[str] = set()
        series = [history_series(run["history"], "forget_train_acc")[0] for run in panel.runs]
        ends = [batches[-1] for batches in series if batches and batches[-1] > 0]
        if ends and max(ends) > 10 * min(ends):
            # Runs of very different lengths (a pass over the retain set draws many more forget
            # batches than a pass over the forget set): a log axis keeps the short ones visible.
            ax.set_xscale("symlog", linthresh=1)
        for run in panel.runs:
            if not _has_curve(run):
                continue
            method = run["method"]
            batches, accuracies = history_series(run["history"], "forget_train_acc")
            ax.plot(
                batches,
                accuracies,
                marker="o",
                markersize=3,
                color=colours[method],
                label=method if method not in labelled else "_nolegend_",
            )
            if show_held_out:
                held_batches, held = history_series(run["history"], "held_out_acc")
                ax.plot(
                    held_batches,
                    held,
                    linestyle="--",
                    color=colours[method],
                    alpha=0.7,
                    label=f"{method} (held out)" if method not in labelled else "_nolegend_",
                )
            labelled.add(method)
        reference = panel.retrain_metric("forget_train_acc")
        if reference is not None:
            ax.axhline(reference, color="0.25", linestyle=":", linewidth=1.5, label=RETRAIN)
        ax.set_title(panel.title)
        ax.set_xlabel(
            "forget batches processed" + (" (log scale)" if ax.get_xscale() == "symlog" else "")
        )
        ax.set_ylabel("accuracy on the forget set")
        ax.set_ylim(-0.03, 1.03)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    suptitle = describe(documents)
    if suptitle:
        figure.suptitle(suptitle)
    return figure


def forgetting_curve(
    results: ResultsInput, out_stem: str | os.PathLike[str], *, show_held_out: bool = False
) -> FigurePaths:
    """Draw the forgetting curve and write it as ``<out_stem>.png`` and ``<out_stem>.pdf``.

    Args:
        results: results.json documents, files or run directories.
        out_stem: destination path without extension.
        show_held_out: see :func:`forgetting_curve_figure`.

    Returns:
        The paths written.
    """
    return save_figure(forgetting_curve_figure(results, show_held_out=show_held_out), out_stem)


def history_series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """The ``(batch, value)`` series of one history key, skipping entries without a value.

    Args:
        history: a run's ``history``.
        key: one of :data:`CURVE_METRICS` (or any numeric history field).

    Returns:
        Forget batches processed and the values, in recorded order.
    """
    batches: list[int] = []
    values: list[float] = []
    for entry in history:
        value = entry.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            batches.append(int(entry["batch"]))
            values.append(float(value))
    return batches, values


def _has_curve(run: Mapping[str, Any]) -> bool:
    # original and retrain are references, not curves, even if a future engine logs a history.
    return bool(run.get("history")) and run["method"] not in (ORIGINAL, RETRAIN)
