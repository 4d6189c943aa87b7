"""The paper's Figure 2: accuracy on the forget set against the forget batches processed.

Every loop-based run (a run whose ``history`` has several checks and that counted its forget
batches) is one line: ``history[i]["batch"]`` on the x axis, ``history[i]["forget_train_acc"]``
on the y axis. The engine records the history at each stopping-rule check on a random subset of
the forget set; the retrained model's accuracy on the whole forget set is the horizontal
reference line (what "forgotten" means), where the results hold a retrain run for that request.

Runs without such a curve are single markers, never lines from batch 0: one-shot methods (no
history, ``forget_batches`` null: fisher, ssd, lcodec), methods that never step on a forget batch
(``forget_batches`` null: finetune, l1_sparse and unsir, whose checks all sit at batch 0, so a
line would be a vertical stroke at 0) and runs with a single check. The marker is the run's final
accuracy on the whole forget set (results.json ``metrics["forget_train_acc"]``, the quantity of
the retrain line) at the forget batches it processed (0 when it counted none).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from conun.viz.figure import (
    FigurePaths,
    figure_legend,
    legend_entries,
    method_colours,
    new_figure,
    save_figure,
)
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
        show_held_out: also draw each curve's ``held_out_acc`` (the stopping rule's accuracy on
            held-out samples; the class scenario's retained classes) as a dashed line.

    Returns:
        The figure. In each panel's Axes, the first solid line of a method carries the method's
        name as its label (further seeds of it are unlabelled); held-out lines are labelled
        ``"<method> (held out)"``; the retrain reference line is labelled ``"retrain"``. A run
        without a curve (see :func:`final_point`) is a marker-only ``Line2D`` (linestyle
        ``"None"``) of one point, labelled like a line. The legend is the figure's, outside
        every panel (``figure.legends[0]``).

    Raises:
        ValueError: no class or sample run of a method other than original and retrain has a
            forget-set accuracy.
    """
    documents = read_results(results)
    panels = [
        panel
        for panel in collect_panels(documents)
        if any(_has_curve(run) or final_point(run) is not None for run in panel.runs)
    ]
    if not panels:
        raise ValueError(
            "no unlearning run in the results: the forgetting curve needs class or sample runs "
            "of a method other than 'original' and 'retrain', with a 'history' or a "
            "'forget_train_acc' metric"
        )
    methods = [
        run["method"]
        for panel in panels
        for run in panel.runs
        if _has_curve(run) or final_point(run) is not None
    ]
    colours = method_colours(methods)

    figure = new_figure(4.8 * len(panels) + 1.6, 3.6)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        labelled: set[str] = set()
        series = [
            history_series(run["history"], "forget_train_acc")[0]
            for run in panel.runs
            if _has_curve(run)
        ]
        ends = [batches[-1] for batches in series if batches and batches[-1] > 0]
        ends += [int(point[0]) for point in map(final_point, panel.runs) if point and point[0]]
        if ends and max(ends) > 10 * min(ends):
            # Runs of very different lengths (a pass over the retain set draws many more forget
            # batches than a pass over the forget set): a log axis keeps the short ones visible.
            ax.set_xscale("symlog", linthresh=1)
        for run in panel.runs:
            method = run["method"]
            if not _has_curve(run):
                point = final_point(run)
                if point is not None:
                    ax.plot(
                        [point[0]],
                        [point[1]],
                        linestyle="None",
                        marker="D",
                        markersize=6,
                        markeredgecolor="black",
                        markeredgewidth=0.6,
                        color=colours[method],
                        label=method if method not in labelled else "_nolegend_",
                        zorder=3,
                    )
                    labelled.add(method)
                continue
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
    entries = legend_entries(axes)
    # Methods first, in order of appearance; the reference line last.
    labels = [label for label in entries if label != RETRAIN] + [RETRAIN] * (RETRAIN in entries)
    figure_legend(figure, handles=[entries[label] for label in labels])
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


def final_point(run: Mapping[str, Any]) -> tuple[int, float] | None:
    """Where a run without a curve is drawn: ``(forget batches, final forget-set accuracy)``.

    Args:
        run: a results.json run.

    Returns:
        ``(forget_batches or 0, metrics["forget_train_acc"])``, the accuracy falling back to the
        last history value where the metric is missing; None for runs drawn as a curve, for
        original and retrain (references, not methods), and for runs with no accuracy at all.
    """
    if run["method"] in (ORIGINAL, RETRAIN) or _has_curve(run):
        return None
    accuracy = run.get("metrics", {}).get("forget_train_acc")
    if not isinstance(accuracy, int | float) or not math.isfinite(accuracy):
        values = history_series(run.get("history") or [], "forget_train_acc")[1]
        if not values:
            return None
        accuracy = values[-1]
    batches = run.get("forget_batches")
    return (int(batches) if isinstance(batches, int) else 0), float(accuracy)


def _has_curve(run: Mapping[str, Any]) -> bool:
    # original and retrain are references, not curves, even if a future engine logs a history.
    # A method that never counted a forget batch (forget_batches null) logs every check at
    # batch 0, and a single check is no curve: both are drawn as a point (final_point). A run
    # without the key (results written by hand) is judged by its history alone.
    if run["method"] in (ORIGINAL, RETRAIN) or (
        "forget_batches" in run and run["forget_batches"] is None
    ):
        return False
    batches = history_series(run.get("history") or [], "forget_train_acc")[0]
    return len(set(batches)) >= 2
