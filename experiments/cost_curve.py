"""Cost curves (issue #14, item 3): how the seconds of contrastive unlearning, retraining and the
cheapest baselines grow with (a) the forget-set size at a fixed training set, and (b) the
training-set size at a fixed forget-set size.

    python experiments/cost_curve.py --dataset fashion-mnist --seed 0 \\
        --out experiments/results/cost-curve --original /tmp/fm-runs/seed0/original

Points. Axis ``forget``: on the original of the full training set, one random request of each
``--forget-sizes`` and one class request (``--forget-class``). Axis ``retain``: for each
``--retain-sizes`` S, an original trained on a seeded random subset of S training samples (the
dataset's recipe with ``max_train_samples=S``; S = the training set's size is the full original),
and one random request of ``--fixed-forget`` samples. Every original carves its validation split
(``validation_fraction`` of its S samples, stratified, seeded) out of its own subset, as
``conun train`` does, so the stopping rules that need held-out data have it; the retain set is
then ``S - validation - forget`` (the exact counts are in rows.json and the README).

At every point retrain and each ``--methods`` run with the config ``conun unlearn`` would use
(the method's shipped defaults for the scenario plus the dataset's layer, seed ``--seed``), on the
same original and split, ``--repeats`` times. The order of the methods rotates by one from point
to point and repeat to repeat, so that drift of the machine's speed hits every method alike.
``seconds`` is each method's own wall clock as ``conun bench`` measures it (training time for
retrain; evaluation excluded). ``OUT/rows.json`` is rewritten after every run and a rerun of the
same command skips the runs already there, so an interrupted benchmark resumes.

Outputs in ``OUT``: rows.json (every run, the fitted slopes), table.md (seconds over the same
point's retrain), cost-curve.png/.pdf (log-log, one line per method, slopes of
``log(seconds) = slope * log(size) + c`` by least squares in the legend) and README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from conun.bench.grid import prepare_original
from conun.config import TrainConfig, UnlearnConfig, build_train_config
from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRetainSplit
from conun.engine.checkpoint import CheckpointMeta, read_checkpoint_meta
from conun.io import atomic_write_text
from conun.methods import available_methods
from conun.models.base import Classifier
from conun.reproducibility import versions
from conun.viz.figure import figure_legend, method_colours, new_figure, save_figure
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.inputs import (
    load_checkpoint_for,
    load_training_data,
    recipe_of,
    validation_indices,
    validation_of,
)
from conun.workflows.requests import ForgetSpec
from conun.workflows.unlearning import run_method

REFERENCE = "retrain"
ROWS_FILE = "rows.json"
ACCEPTED_RETAIN_SLOPE = 0.2  # issue #14: contrastive's slope against the retain-set size


def fit_slope(sizes: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of ``log(seconds)`` against ``log(sizes)``: the exponent ``k`` of
    ``seconds ~ c * size**k`` (1: linear in the size, 0: flat).

    Args:
        sizes: ``(P,)`` positive sizes, at least two distinct.
        seconds: ``(P,)`` positive seconds, one per size.

    Raises:
        ValueError: lengths differ, a value is not positive, or fewer than two distinct sizes.
    """
    if len(sizes) != len(seconds):
        raise ValueError(f"{len(sizes)} sizes but {len(seconds)} seconds: give one per size")
    if any(value <= 0 for value in [*sizes, *seconds]):
        raise ValueError("sizes and seconds must be positive to take their logarithms")
    if len(set(sizes)) < 2:
        raise ValueError(f"a slope needs at least two distinct sizes, got {sorted(set(sizes))}")
    logs = np.log(np.asarray(sizes, dtype=np.float64)), np.log(np.asarray(seconds, np.float64))
    return float(np.polyfit(logs[0], logs[1], 1)[0])


@dataclass(frozen=True)
class Point:
    """One request on one original.

    Attributes:
        axis: ``forget`` (forget-set size varies) or ``retain`` (training-set size varies).
        request: ``samples<N>`` or ``class<C>``.
        train_size: the training subset the original was trained on; None: the full set.
        spec: the forget request.
    """

    axis: str
    request: str
    train_size: int | None
    spec: ForgetSpec

    def key(self) -> tuple[str, str, int | None]:
        """What identifies the point in rows.json: (axis, request, train size)."""
        return (self.axis, self.request, self.train_size)


@dataclass
class Original:
    """An original and what its points run on."""

    recipe: TrainConfig
    model: Classifier
    meta: CheckpointMeta
    data: DatasetBundle


def row_key(row: dict[str, Any]) -> tuple[str, str, int | None]:
    """The :meth:`Point.key` of a row of rows.json."""
    return (row["axis"], row["request"], row["train_size"])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, checked: every problem named at once, before any work."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/cost-curve"))
    parser.add_argument("--work", type=Path, default=Path("runs/cost-curve"), help="originals")
    parser.add_argument("--original", type=Path, help="run dir of the full-set original to reuse")
    parser.add_argument("--forget-sizes", type=int, nargs="+", default=[100, 300, 1000, 3000, 6000])
    parser.add_argument("--forget-class", type=int, default=5, help="-1: no class point")
    parser.add_argument("--retain-sizes", type=int, nargs="+", default=[15000, 30000, 60000])
    parser.add_argument("--fixed-forget", type=int, default=1000)
    parser.add_argument(
        "--methods", nargs="+", default=["contrastive", "neggrad", "random_label", "bad_teacher"]
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--train-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the dataset's training recipe (not with --original)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild table, figure and README from rows.json"
    )
    args = parser.parse_args(argv)
    problems = []
    for name in ("forget_sizes", "retain_sizes"):
        values = getattr(args, name)
        if min(values) < 1 or len(set(values)) != len(values):
            problems.append(f"--{name.replace('_', '-')} must be distinct positive counts")
    if args.fixed_forget < 1:
        problems.append("--fixed-forget must be a positive count")
    if args.repeats < 1:
        problems.append("--repeats must be >= 1")
    for method in args.methods:
        if method in (REFERENCE, "original") or method not in available_methods():
            allowed = [m for m in available_methods() if m not in (REFERENCE, "original")]
            problems.append(
                f"--methods: {method!r} is not allowed (retrain always runs); "
                f"allowed: {', '.join(allowed)}"
            )
    if len(set(args.methods)) != len(args.methods):
        problems.append("--methods must not repeat a method")
    if args.original is not None and args.train_set:
        problems.append("--train-set cannot change the recipe of a given --original")
    if problems:
        parser.error("; ".join(problems))
    return args


def full_recipe(args: argparse.Namespace) -> TrainConfig:
    """The recipe of the full-set original: the given original's, or the dataset's."""
    if args.original is None:
        return build_train_config(args.dataset, [{"seed": args.seed}], args.train_set)
    recipe = recipe_of(read_checkpoint_meta(args.original), args.original)
    if (recipe.dataset, recipe.seed) != (args.dataset, args.seed):
        raise SystemExit(
            f"--original {args.original} is a {recipe.dataset} seed {recipe.seed} original; "
            f"this run asks for {args.dataset} seed {args.seed}"
        )
    return recipe


def plan(
    args: argparse.Namespace, recipe: TrainConfig
) -> tuple[list[Point], dict[int | None, TrainConfig]]:
    """Every point, each request resolved on its original's data before any work (a request the
    data cannot honour fails now), and the recipe per training subset."""
    full_size = len(load_training_data(recipe).train)
    recipes: dict[int | None, TrainConfig] = {None: recipe}
    points = [
        Point("forget", f"samples{n}", None, ForgetSpec(num_samples=n)) for n in args.forget_sizes
    ]
    if args.forget_class >= 0:
        spec = ForgetSpec(classes=(args.forget_class,))
        points.append(Point("forget", f"class{args.forget_class}", None, spec))
    for size in sorted(args.retain_sizes):
        if size > full_size:
            raise SystemExit(f"--retain-sizes: {size} > the {full_size} training samples")
        train_size = None if size == full_size else size
        if train_size is not None:
            recipes[size] = recipe.model_copy(update={"max_train_samples": size})
        spec = ForgetSpec(num_samples=args.fixed_forget)
        points.append(Point("retain", f"samples{args.fixed_forget}", train_size, spec))
    for size, each in recipes.items():
        data = load_training_data(each)
        for point in points:
            if point.train_size == size:
                point.spec.resolve(data, validation_indices(data, each), args.seed)
    return points, recipes


def unlearn_configs(args: argparse.Namespace, model: str) -> dict[tuple[str, str], UnlearnConfig]:
    """What ``conun unlearn --method M --seed S`` resolves, per method and scenario, on a
    checkpoint of ``model``."""
    return {
        (method, scenario): resolve_unlearn_config(
            method,
            scenario,
            dataset=args.dataset,
            model=model,
            layers=[("--seed", {"seed": args.seed})],
        ).config
        for method in [REFERENCE, *args.methods]
        for scenario in ("class", "sample")
        if scenario == "sample" or args.forget_class >= 0
    }


def load_original(args: argparse.Namespace, recipe: TrainConfig, size: int | None) -> Original:
    """The original of a training subset (None: the full set, ``--original`` if given), trained
    into ``--work`` unless a complete one of the same recipe is there."""
    if size is None and args.original is not None:
        data = load_training_data(recipe)
        model, meta = load_checkpoint_for(args.original, data)
        return Original(recipe, model, meta, data)
    name = f"{recipe.dataset}-{recipe.model}-seed{recipe.seed}-train{size or 'full'}"
    print(f"original {name}: trained unless cached in {args.work}", flush=True)
    model, meta, data = prepare_original(recipe, args.work / "originals" / name, quiet=True)
    return Original(recipe, model, meta, data)


def run_point(
    original: Original,
    split: ForgetRetainSplit,
    config: UnlearnConfig,
) -> dict[str, Any]:
    """One method on one point: its seconds, how it stopped and its accuracies."""
    _, record = run_method(
        config,
        original.model,
        original.data,
        split,
        train_config=original.recipe,
        original_seconds=original.meta.seconds,
        quiet=True,
    )
    stopped_by = record.extra.get("stopped_by")
    return {
        "seconds": record.seconds,
        "stopped_by": stopped_by,
        "stopped_by_rule": None if stopped_by is None else stopped_by == "rule",
        "passes": record.passes,
        "forget_batches": record.forget_batches,
        "forget_train_acc": record.metrics.get("forget_train_acc"),
        "test_acc": record.metrics.get("test_acc"),
    }


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with ``ratio_to_retrain``: its seconds over the median retrain seconds of the
    same point (None while that retrain has not run)."""
    retrain: dict[Any, list[float]] = {}
    for row in rows:
        if row["method"] == REFERENCE:
            retrain.setdefault(row_key(row), []).append(row["seconds"])
    for row in rows:
        times = retrain.get(row_key(row))
        row["ratio_to_retrain"] = row["seconds"] / statistics.median(times) if times else None
    return rows


def point_seconds(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], float]:
    """Median seconds over repeats per (axis, request, train size, method)."""
    groups: dict[tuple[Any, ...], list[float]] = {}
    for row in rows:
        groups.setdefault((*row_key(row), row["method"]), []).append(row["seconds"])
    return {key: statistics.median(values) for key, values in groups.items()}


def series(rows: list[dict[str, Any]], method: str, axis: str) -> list[tuple[int, float]]:
    """(size, median seconds) of ``method``'s sample points on ``axis``, by size: the forget-set
    size on ``forget``, the retain-set size on ``retain``."""
    medians = point_seconds(rows)
    found = {}
    for row in rows:
        if row["method"] == method and row["axis"] == axis and row["scenario"] == "sample":
            size = row["forget_size"] if axis == "forget" else row["retain_size"]
            found[size] = medians[(*row_key(row), method)]
    return sorted(found.items())


def slopes(rows: list[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method and axis, the fitted slope over the sample points (None: < 2 sizes)."""
    fitted: dict[str, dict[str, Any]] = {}
    for method in methods:
        fitted[method] = {}
        for axis in ("forget", "retain"):
            points = series(rows, method, axis)
            sizes = [size for size, _ in points]
            enough = len(set(sizes)) >= 2
            fitted[method][axis] = fit_slope(sizes, [s for _, s in points]) if enough else None
    return fitted


def methods_of(rows: list[dict[str, Any]]) -> list[str]:
    """Retrain, then the methods in the order they first appear."""
    return list(dict.fromkeys([REFERENCE, *(row["method"] for row in rows)]))


def table(rows: list[dict[str, Any]]) -> str:
    """table.md: per point, each method's seconds over retrain's; then every run."""
    medians = point_seconds(rows)
    methods = [m for m in methods_of(rows) if m != REFERENCE]
    header = ["axis", "request", "train set", "forget", "retain", "retrain s", *methods]
    lines = [
        "Each method's median seconds over the same point's retrain seconds (its seconds in "
        "brackets); the forget and retain columns are the exact sample counts.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    seen = []
    for row in rows:
        if row_key(row) not in seen:
            seen.append(row_key(row))
    for key in seen:
        first = next(row for row in rows if row_key(row) == key)
        retrain = medians.get((*key, REFERENCE))
        cells = [key[0], key[1], str(first["train_total"]), str(first["forget_size"])]
        cells += [str(first["retain_size"]), f"{retrain:.2f}" if retrain else "–"]
        for method in methods:
            seconds = medians.get((*key, method))
            if seconds is None:
                cells.append("–")
            elif retrain:
                cells.append(f"{seconds / retrain:.4f} ({seconds:.2f} s)")
            else:
                cells.append(f"({seconds:.2f} s)")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every run",
        "",
        "| axis | request | train set | method | repeat | seconds | x retrain | stopped by "
        "| forget train % | test % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row["ratio_to_retrain"]
        lines.append(
            f"| {row['axis']} | {row['request']} | {row['train_total']} | {row['method']} | "
            f"{row['repeat']} | {row['seconds']:.3f} | "
            f"{'–' if ratio is None else f'{ratio:.4f}'} | {row['stopped_by'] or '–'} | "
            f"{100 * row['forget_train_acc']:.2f} | {100 * row['test_acc']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def figure(rows: list[dict[str, Any]], fitted: dict[str, dict[str, Any]], out: Path) -> None:
    """Two log-log panels, one line per method, the slopes in one legend outside them."""
    methods = methods_of(rows)
    colours = method_colours(methods)
    fig = new_figure(11, 4.2)
    forget_ax, retain_ax = fig.subplots(1, 2)
    medians = point_seconds(rows)
    handles: list[Any] = []
    for method in methods:
        lines = []
        for ax, axis in ((forget_ax, "forget"), (retain_ax, "retain")):
            points = series(rows, method, axis)
            if points:
                sizes, seconds = zip(*points, strict=True)
                lines += ax.plot(sizes, seconds, marker="o", color=colours[method])
        for row in rows:
            if row["method"] == method and row["axis"] == "forget" and row["scenario"] == "class":
                star = forget_ax.plot(
                    row["forget_size"],
                    medians[(*row_key(row), method)],
                    marker="*",
                    markersize=13,
                    linestyle="none",
                    color=colours[method],
                )
                lines = lines or star
        if lines:  # one legend entry per method, on its first artist
            slope = {
                axis: "–" if value is None else f"{value:.2f}"
                for axis, value in fitted[method].items()
            }
            lines[0].set_label(
                f"{method}: slope {slope['forget']} vs forget, {slope['retain']} vs retain"
            )
            handles.append(lines[0])
    classes = sorted({r["request"] for r in rows if r["scenario"] == "class"})
    if classes:
        handles.append(
            Line2D(
                [],
                [],
                marker="*",
                markersize=11,
                linestyle="none",
                color="grey",
                label=f"{', '.join(classes)} request, at its sample count (not in the fit)",
            )
        )
    retain_counts = sorted({r["retain_size"] for r in rows if r["axis"] == "forget"})
    forget_counts = sorted({r["forget_size"] for r in rows if r["axis"] == "retain"})
    forget_ax.set_title(
        f"vs forget-set size (retain {retain_counts[0]}–{retain_counts[-1]})"
        if retain_counts
        else "vs forget-set size"
    )
    retain_ax.set_title(
        f"vs retain-set size (forget {', '.join(map(str, forget_counts))})"
        if forget_counts
        else "vs retain-set size"
    )
    forget_ax.set_xlabel("forget-set samples")
    retain_ax.set_xlabel("retain-set samples")
    for ax, axis in ((forget_ax, "forget"), (retain_ax, "retain")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Ticks at the measured sizes: a retain axis within one decade gets no labelled default.
        ticks = sorted({row[f"{axis}_size"] for row in rows if row["axis"] == axis})
        ax.set_xticks(ticks, [f"{size:,}" for size in ticks], rotation=45)
        ax.xaxis.set_minor_formatter(NullFormatter())
        # Plain numbers (0.4, 20); minor ticks labelled only where no decade tick may show.
        low, high = ax.get_ylim()
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain if high / low < 10 else NullFormatter())
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
    figure_legend(fig, handles)
    save_figure(fig, out / "cost-curve")


def readme(state: dict[str, Any], fitted: dict[str, dict[str, Any]]) -> str:
    """README.md: command, machine, versions, wall time, slopes, acceptance, exact counts."""
    rows = state["rows"]
    setup = state["setup"]
    slope_lines = [
        "| method | slope vs forget-set size | slope vs retain-set size |",
        "|---|---|---|",
    ]
    for method, values in fitted.items():
        cells = ["–" if v is None else f"{v:.3f}" for v in (values["forget"], values["retain"])]
        slope_lines.append(f"| {method} | {cells[0]} | {cells[1]} |")
    contrastive = fitted.get("contrastive", {}).get("retain")
    verdict = (
        "not measured (contrastive did not run on two retain-set sizes)"
        if contrastive is None
        else f"{contrastive:.3f} {'<=' if contrastive <= ACCEPTED_RETAIN_SLOPE else '>'} "
        f"{ACCEPTED_RETAIN_SLOPE}: {'met' if contrastive <= ACCEPTED_RETAIN_SLOPE else 'NOT met'}"
    )
    counts = [
        f"{row['axis']} {row['request']}: train set {row['train_total']}, validation "
        f"{row['validation_size']}, forget {row['forget_size']}, retain {row['retain_size']}"
        for row in rows
        if row["method"] == REFERENCE and row["repeat"] == 0
    ]
    return "\n".join(
        [
            f"# Cost curves — {setup['dataset']}, {setup['recipe']['model']}, seed {setup['seed']}",
            "",
            f"Command: `{state['command']}`",
            "",
            f"Machine: {state['machine']}. Versions: {state['versions']}. Wall time "
            f"{state['wall_seconds'] / 60:.1f} min (all invocations, originals' training included).",
            "",
            "Seconds: each method's own wall clock (retrain: its training), median over "
            f"{setup['repeats']} repeat(s); methods interleaved within each point, their order "
            "rotated from point to point. Each method ran with the config `conun unlearn` resolves "
            "for it (shipped defaults of the scenario + the dataset's layer).",
            "",
            "![cost curves](cost-curve.png)",
            "",
            "## Fitted slopes",
            "",
            "Least-squares slope of log(seconds) against log(size) over the sample requests of "
            "each axis (`numpy.polyfit` on the logs): 1 means seconds grow in proportion to the "
            "size, 0 means they do not depend on it, a negative slope that they fall. The class "
            "request (a star in the figure, at its sample count) is left out of the fit: it runs "
            "the class scenario's defaults, another stopping rule than the sample requests'.",
            "",
            *slope_lines,
            "",
            f"Acceptance (issue #14): contrastive's slope against the retain-set size {verdict}.",
            "",
            "## Exact counts",
            "",
            "Train set: the samples the original saw plus its validation split (a seeded random "
            "subset of the training set for the retain axis; the whole of it otherwise). The "
            "validation split is carved from it; retain = train set - validation - forget.",
            "",
            *[f"- {line}" for line in counts],
            "",
            "The ratio of every method to the same point's retrain: [table.md](table.md); every "
            "run: [rows.json](rows.json).",
            "",
        ]
    )


def write_outputs(out: Path, state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rewrite rows.json (with ratios and slopes) and table.md; returns the slopes."""
    rows = with_ratios(state["rows"])
    fitted = slopes(rows, methods_of(rows))
    state["slopes"] = fitted
    atomic_write_text(out / ROWS_FILE, json.dumps(state, indent=1) + "\n")
    atomic_write_text(out / "table.md", table(rows))
    return fitted


def processor() -> str:
    """The CPU's model name (``platform.processor()`` is empty on most Linux systems)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> None:
    """Run (or resume) the benchmark and write its outputs; ``argv``: the command's arguments."""
    started = time.perf_counter()
    args = parse_args(argv)
    out: Path = args.out
    rows_path = out / ROWS_FILE
    state: dict[str, Any]
    if args.report_only:
        if not rows_path.is_file():
            raise SystemExit(f"--report-only: no {rows_path} to rebuild from (run without it)")
        state = json.loads(rows_path.read_text())
        fitted = write_outputs(out, state)
        figure(state["rows"], fitted, out)
        atomic_write_text(out / "README.md", readme(state, fitted))
        return
    recipe = full_recipe(args)
    points, recipes = plan(args, recipe)
    configs = unlearn_configs(args, recipe.model)
    setup = {
        "dataset": args.dataset,
        "seed": args.seed,
        "recipe": recipe.model_dump(mode="json"),
        "repeats": args.repeats,
    }
    state = {"setup": setup, "rows": [], "wall_seconds": 0.0}
    if rows_path.is_file():
        state = json.loads(rows_path.read_text())
        if state["setup"] != setup:
            raise SystemExit(
                f"{rows_path} holds runs of another setup ({state['setup']['dataset']}, seed "
                f"{state['setup']['seed']}, its recipe and repeats); use another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    command = ["python", "experiments/cost_curve.py", *(sys.argv[1:] if argv is None else argv)]
    state["command"] = shlex.join(command)
    state["machine"] = f"{processor()}, {os.cpu_count()} CPUs, {platform.platform()}"
    state["versions"] = versions()
    done = {(*row_key(r), r["method"], r["repeat"]) for r in state["rows"]}
    wall_before = state["wall_seconds"]
    methods = [REFERENCE, *args.methods]
    turn = 0
    for size, each_recipe in recipes.items():
        original: Original | None = None
        for point in (p for p in points if p.train_size == size):
            for repeat in range(args.repeats):
                turn += 1
                order = methods[turn % len(methods) :] + methods[: turn % len(methods)]
                for method in order:
                    if (*point.key(), method, repeat) in done:
                        continue
                    if original is None:
                        original = load_original(args, each_recipe, size)
                    split = point.spec.resolve(
                        original.data, validation_of(original.meta), args.seed
                    )
                    measured = run_point(original, split, configs[(method, split.scenario)])
                    row = {
                        "axis": point.axis,
                        "request": point.request,
                        "scenario": split.scenario,
                        "train_size": point.train_size,
                        "train_total": len(original.data.train),
                        "validation_size": len(split.validation),
                        "forget_size": len(split.forget),
                        "retain_size": len(split.retain),
                        "method": method,
                        "repeat": repeat,
                        **measured,
                    }
                    state["rows"].append(row)
                    state["wall_seconds"] = wall_before + time.perf_counter() - started
                    write_outputs(out, state)
                    print(json.dumps(row), flush=True)
    state["wall_seconds"] = wall_before + time.perf_counter() - started
    fitted = write_outputs(out, state)
    figure(state["rows"], fitted, out)
    atomic_write_text(out / "README.md", readme(state, fitted))
    print(readme(state, fitted))


if __name__ == "__main__":
    main()
