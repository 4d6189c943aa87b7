"""The paper as written vs the authors' release (issue #20, item 3): an ablation of contrastive
unlearning on Fashion-MNIST with ``small_cnn_proj`` (the authors' projection-head variant), one
class request and one random-sample request, against retraining.

    python experiments/paper_vs_release.py --seeds 0 1 2 \\
        --originals runs/paper-vs-release/originals --out experiments/results/paper-vs-release

Variants (:data:`VARIANTS`), each run on ``--class-id`` (class scenario) and on ``--samples``
random training samples (sample scenario):

- ``paper``: ``configs/unlearn/contrastive-paper-{class,sample}.yaml``, the paper's equations and
  loop with the authors' hyperparameters;
- ``release``: ``contrastive-release-{class,sample}.yaml`` on the release's split
  (``ForgetSpec(split_style="release")``): everything the authors' code does;
- ``conun defaults``: contrastive with no config, as ``conun unlearn`` runs it (the method's
  scenario defaults plus the dataset's layer);
- ``+ <behaviour>``: the paper preset with one release behaviour switched on, its value read from
  the release preset of the same scenario (the release's embedding, push weighting, retain
  batches, forget order, stopping cadence/sets/bounds, or split). The paper preset plus all of
  them is the release preset: :func:`uncovered_differences` checks it before any work.

The presets are resolved over the method's defaults alone (no dataset layer): they are complete
specifications, and a layer tuned for conun's defaults must not leak into them (on digits and
Fashion-MNIST the presets override every value those layers set anyway).

For each seed: the original (``--dataset``'s training preset with ``--model``, seed S; trained into
``--originals DIR/seed<S>/original`` unless a complete one of the same recipe is there), then,
per request, retraining on the retain set (once per distinct split: the release split changes
the request, so its variants are compared with a retrain on that split) and every variant, each
followed by conun's audit (its population attacks (a)-(c)). The unlearning seed is S (batch
order, the random request's draw, the attacks' draws). Seconds are each method's own wall clock
(retrain: its training), evaluation excluded.

``OUT/runs.json`` holds every run and is rewritten after each one: a rerun skips the runs
already recorded with the same settings (request, resolved config, training recipe) and runs
again those whose settings changed. ``OUT/README.md`` (command, machine, versions, tables) and
``OUT/ablation.png``/``.pdf`` are rebuilt at the end; ``--report-only`` rebuilds them from
runs.json. Prose in ``OUT/notes.md`` is appended to the README (which release behaviours matter,
in words), so that a rebuilt README keeps it.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from typing import Any, Literal

import torch

from conun.bench.grid import prepare_original
from conun.config import TrainConfig, UnlearnConfig, build_train_config, preset_path, read_yaml
from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRetainSplit, Scenario, SplitStyle
from conun.engine.checkpoint import CHECKPOINT_FILE, CheckpointMeta, read_checkpoint_meta
from conun.engine.training import NonFiniteLossError
from conun.io import atomic_write_json, atomic_write_text
from conun.models.base import Classifier
from conun.reproducibility import versions
from conun.viz.figure import method_colours, new_figure, save_figure
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.evaluation import audit_against
from conun.workflows.inputs import recipe_of, validation_of
from conun.workflows.requests import ForgetSpec
from conun.workflows.unlearning import run_method

RUNS_FILE = "runs.json"
RETRAIN = "retrain"
SCENARIOS: tuple[Scenario, ...] = ("class", "sample")


@dataclass(frozen=True)
class Variant:
    """How one variant of contrastive unlearning is built.

    Attributes:
        preset: ``paper`` / ``release``: the shipped ``contrastive-<preset>-<scenario>.yaml``;
            None: no config (conun's defaults, with the dataset's layer).
        from_release: dotted keys of the release preset of the same scenario laid over
            ``preset`` (``options.embedding``; ``stopping``: the whole section).
        split_style: how the request becomes indices (``release``: the authors' split).
        what: one line for the README.
    """

    preset: Literal["paper", "release"] | None
    from_release: tuple[str, ...] = ()
    split_style: SplitStyle = "conun"
    what: str = ""


# label -> variant. The single switches are the release's departures from the paper that
# docs/method.md lists ("The paper as written vs the code as released"), one at a time.
VARIANTS: dict[str, Variant] = {
    "paper": Variant("paper", what="contrastive-paper-* preset: the paper as written"),
    "release": Variant(
        "release", split_style="release", what="contrastive-release-* preset, release split"
    ),
    "conun defaults": Variant(None, what="no config: conun's defaults + the dataset's layer"),
    "+ relu embedding": Variant(
        "paper", ("options.embedding",), what="paper + L_UL on relu(normalised projection)"
    ),
    "+ release push weighting": Variant(
        "paper", ("options.push_weighting",), what="paper + the release's Loss_v1 push term"
    ),
    "+ first retain batches": Variant(
        "paper", ("options.retain_batches",), what="paper + step k uses the k-th retain batch"
    ),
    "+ fixed forget order": Variant(
        "paper", ("options.forget_order",), what="paper + forget batches in index order"
    ),
    "+ release stopping": Variant(
        "paper",
        ("stopping",),
        what="paper + checks after each pass on the whole sets, at most 1 / 30 passes",
    ),
    "+ release split": Variant(
        "paper", split_style="release", what="paper on the release's split of the request"
    ),
}

# Population attacks of conun's audit shown in the tables (runs.json keeps every audit key).
AUDIT_COLUMNS = (
    ("mia_forget_member_rate", "(a) forget member rate"),
    ("mia_forget_vs_test_auc", "(c) forget-vs-test AUC"),
)


# -- configs ----------------------------------------------------------------------------------


def preset_layer(preset: str, scenario: Scenario) -> dict[str, Any]:
    """The shipped ``configs/unlearn/contrastive-<preset>-<scenario>.yaml``."""
    path = preset_path("unlearn", f"contrastive-{preset}-{scenario}")
    if path is None:
        raise FileNotFoundError(f"no shipped preset contrastive-{preset}-{scenario}.yaml")
    return read_yaml(path)


def pick(layer: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The value at ``dotted`` of ``layer`` as a layer of its own: ``pick(l, "options.a")`` is
    ``{"options": {"a": l["options"]["a"]}}``.

    Raises:
        KeyError: ``layer`` has no value at ``dotted``.
    """
    *parents, leaf = dotted.split(".")
    node: Any = layer
    for key in parents:
        node = node[key]
    picked: dict[str, Any] = {leaf: node[leaf]}
    for key in reversed(parents):
        picked = {key: picked}
    return picked


def variant_config(
    label: str, scenario: Scenario, dataset: str, seed: int, from_release: Sequence[str] = ()
) -> UnlearnConfig:
    """The resolved config of variant ``label`` (plus ``from_release`` keys, for checks) for
    ``scenario``, seed ``seed``."""
    variant = VARIANTS[label]
    layers: list[tuple[str, dict[str, Any] | None]] = []
    if variant.preset is not None:
        name = f"contrastive-{variant.preset}-{scenario}.yaml"
        layers.append((name, preset_layer(variant.preset, scenario)))
        release = preset_layer("release", scenario)
        for key in (*variant.from_release, *from_release):
            layers.append((f"release {key}", pick(release, key)))
    layers.append(("--seed", {"seed": seed}))
    return resolve_unlearn_config(
        "contrastive",
        scenario,
        dataset=dataset if variant.preset is None else None,
        layers=layers,
    ).config


def retrain_config(scenario: Scenario, dataset: str, seed: int) -> UnlearnConfig:
    """What ``conun unlearn --method retrain --seed S`` resolves (the original's recipe trains)."""
    return resolve_unlearn_config(
        RETRAIN, scenario, dataset=dataset, layers=[("--seed", {"seed": seed})]
    ).config


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        found: dict[str, Any] = {}
        for key, value in data.items():
            found.update(_leaves(value, f"{prefix}{key}."))
        return found
    return {prefix[:-1]: data}


def uncovered_differences(scenario: Scenario, dataset: str) -> list[str]:
    """Keys in which the release preset's resolved config differs from the paper preset with
    every single switch of :data:`VARIANTS` on: [] when the switches cover the release."""
    switches = [key for v in VARIANTS.values() if v.preset == "paper" for key in v.from_release]
    combined = variant_config("paper", scenario, dataset, 0, switches).model_dump(mode="json")
    release = variant_config("release", scenario, dataset, 0).model_dump(mode="json")
    ours, theirs = _leaves(combined), _leaves(release)
    return sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))


# -- requests and runs ------------------------------------------------------------------------


def request_name(scenario: Scenario, args: argparse.Namespace) -> str:
    """``class5`` / ``samples500``: the request as runs.json and the tables name it."""
    return f"class{args.class_id}" if scenario == "class" else f"samples{args.samples}"


def request_spec(scenario: Scenario, args: argparse.Namespace, style: SplitStyle) -> ForgetSpec:
    """The forget request of ``scenario`` on split style ``style``."""
    if scenario == "class":
        return ForgetSpec(classes=(args.class_id,), split_style=style)
    return ForgetSpec(num_samples=args.samples, split_style=style)


def run_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a run in runs.json: seed, request, variant (``retrain``), split style."""
    return (row["seed"], row["request"], row["variant"], row["split_style"])


@dataclass
class Original:
    """One seed's original and the data its runs use."""

    recipe: TrainConfig
    model: Classifier
    meta: CheckpointMeta
    data: DatasetBundle


def load_original(recipe: TrainConfig, directory: Path) -> Original:
    """The original of ``recipe`` in ``directory``, trained there unless a complete one is.

    Raises:
        SystemExit: ``directory`` holds an original of another recipe (never overwritten).
    """
    if (directory / CHECKPOINT_FILE).is_file():
        found = read_checkpoint_meta(directory).train_config
        if found != recipe.model_dump(mode="json"):
            raise SystemExit(
                f"{directory} holds an original of another recipe ({found.get('dataset')}, "
                f"{found.get('model')}, ...): give another --originals"
            )
    print(f"original {directory}: trained unless cached", flush=True)
    model, meta, data = prepare_original(recipe, directory, quiet=True)
    return Original(recipe_of(meta, directory), model, meta, data)


def measure(original: Original, split: ForgetRetainSplit, config: UnlearnConfig) -> dict[str, Any]:
    """Run ``config`` on ``split`` and audit the result: accuracies, seconds, how it stopped
    and the audit's population attacks. A run the release's loss refuses (-inf/NaN, see
    ``options.push_weighting``) or that diverges is recorded with its ``error``."""
    try:
        model, record = run_method(
            config,
            original.model,
            original.data,
            split,
            train_config=original.recipe,
            original_seconds=original.meta.seconds,
            quiet=True,
        )
    except NonFiniteLossError as error:
        return {"error": f"diverged: {error}"}
    except ValueError as error:
        if not str(error).startswith("release loss"):
            raise
        return {"error": str(error)}
    audit_against(
        model,
        record,
        original.data,
        split,
        seed=config.seed,
        batch_size=config.eval_batch_size,
        channels_last=config.channels_last,
    )
    metrics = record.metrics
    stopped_by = record.extra.get("stopped_by")
    omega = config.options.get("omega")
    return {
        "seconds": record.seconds,
        "passes": record.passes,
        "forget_batches": record.forget_batches,
        "optimizer_steps": (
            record.forget_batches * omega if record.forget_batches is not None and omega else None
        ),
        "stopped_by": stopped_by,
        "stopped_by_rule": None if stopped_by is None else stopped_by == "rule",
        "forget_train_acc": metrics["forget_train_acc"],
        "forget_test_acc": metrics.get("forget_test_acc"),
        "test_acc": metrics["test_acc"],
        "retain_test_acc": metrics.get("retain_test_acc"),
        # Utility: retained-class test accuracy (class; Fan et al.'s TA), test accuracy (sample).
        "utility": metrics["retain_test_acc" if split.scenario == "class" else "test_acc"],
        "audit": {key: value for key, value in metrics.items() if key.startswith("mia_")},
    }


@dataclass(frozen=True)
class Planned:
    """One run to have in runs.json."""

    seed: int
    scenario: Scenario
    variant: str
    split_style: SplitStyle

    def key(self, args: argparse.Namespace) -> tuple[Any, ...]:
        """Its :func:`run_key`."""
        return (self.seed, request_name(self.scenario, args), self.variant, self.split_style)


def plan(args: argparse.Namespace) -> list[Planned]:
    """Every run of the command, per seed and request: the retrains first (one per split style
    a chosen variant needs), then the variants in :data:`VARIANTS` order."""
    runs = []
    for seed in args.seeds:
        for scenario in SCENARIOS:
            styles = dict.fromkeys(VARIANTS[label].split_style for label in args.variants)
            runs += [Planned(seed, scenario, RETRAIN, style) for style in styles]
            runs += [
                Planned(seed, scenario, label, VARIANTS[label].split_style)
                for label in args.variants
            ]
    return runs


def config_of(run: Planned, args: argparse.Namespace) -> UnlearnConfig:
    """The resolved config of a planned run."""
    if run.variant == RETRAIN:
        return retrain_config(run.scenario, args.dataset, run.seed)
    return variant_config(run.variant, run.scenario, args.dataset, run.seed)


# -- tables -----------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _spread(values: Sequence[float], scale: float, digits: int) -> str:
    """``mean ± std`` (sample std over seeds; the mean alone for one value)."""
    if not values:
        return "–"
    mean = statistics.mean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def _value(row: dict[str, Any], key: str) -> float | None:
    value = row["audit"].get(key) if key.startswith("mia_") else row.get(key)
    return None if value is None else float(value)


def reference_of(rows: Sequence[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The retrain run of ``row``'s seed, request and split style (None: not run / failed)."""
    for other in rows:
        same = (other["seed"], other["request"], other["split_style"]) == (
            row["seed"],
            row["request"],
            row["split_style"],
        )
        if same and other["variant"] == RETRAIN and "error" not in other:
            return other
    return None


def _gaps(rows: Sequence[dict[str, Any]], group: Sequence[dict[str, Any]], key: str) -> list[float]:
    """Per run of ``group``: its ``key`` minus its retrain's (paired by seed and split)."""
    gaps = []
    for row in group:
        reference = reference_of(rows, row)
        mine = _value(row, key)
        theirs = None if reference is None else _value(reference, key)
        if mine is not None and theirs is not None:
            gaps.append(mine - theirs)
    return gaps


def _ratios(rows: Sequence[dict[str, Any]], group: Sequence[dict[str, Any]]) -> list[float]:
    ratios = []
    for row in group:
        reference = reference_of(rows, row)
        if reference is not None and reference["seconds"] > 0:
            ratios.append(row["seconds"] / reference["seconds"])
    return ratios


def groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Runs per (request, variant, split style), in the order they first appear."""
    found: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault((row["request"], row["variant"], row["split_style"]), []).append(row)
    return found


def _label(variant: str, style: str) -> str:
    return f"{variant} (release split)" if variant == RETRAIN and style == "release" else variant


def _columns(
    rows: Sequence[dict[str, Any]],
    done: Sequence[dict[str, Any]],
    key: str,
    scale: float,
    digits: int,
    gap: bool | None,
) -> list[str]:
    """``key``'s mean ± std over ``done``; with ``gap`` not None also its difference to retrain
    (``–`` where ``gap`` is False: the retrain rows themselves)."""
    values = [v for v in (_value(row, key) for row in done) if v is not None]
    cells = [_spread(values, scale, digits)]
    if gap is not None:
        cells.append(_spread(_gaps(rows, done, key), scale, digits) if gap else "–")
    return cells


def mean_table(rows: Sequence[dict[str, Any]], request: str) -> str:
    """Mean ± std over seeds per variant of ``request``; Δ: the mean of the per-seed differences
    to the retrain on the same split (points for accuracies)."""
    is_class = request.startswith("class")
    utility = "retained-class test %" if is_class else "test %"
    header = ["variant", "runs", "forget train %", "Δ forget train"]
    header += ["forget test %"] if is_class else []
    header += [utility, "Δ utility"]
    for _, name in AUDIT_COLUMNS:
        header += [name, f"Δ {name.split(' ')[0]}"]
    header += ["passes", "stopped by rule", "seconds", "x retrain"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (req, variant, style), group in groups(rows).items():
        if req != request:
            continue
        done = [row for row in group if "error" not in row]
        reference = variant == RETRAIN
        cells = [_label(variant, style), f"{len(done)}/{len(group)}"]
        cells += _columns(rows, done, "forget_train_acc", 100, 2, not reference)
        if is_class:
            cells += _columns(rows, done, "forget_test_acc", 100, 2, None)
        cells += _columns(rows, done, "utility", 100, 2, not reference)
        for key, _ in AUDIT_COLUMNS:
            cells += _columns(rows, done, key, 1, 3, not reference)
        cells += _columns(rows, done, "passes", 1, 1, None)
        rule = [row["stopped_by_rule"] for row in done if row.get("stopped_by_rule") is not None]
        cells.append(f"{sum(rule)}/{len(rule)}" if rule else "–")
        cells += _columns(rows, done, "seconds", 1, 1, None)
        cells.append("–" if reference else _spread(_ratios(rows, done), 1, 4))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def effects_table(rows: Sequence[dict[str, Any]], request: str) -> str | None:
    """Each variant against ``paper`` on ``request``, paired by seed: the change of its
    differences to retrain (so that a variant on another split is compared through its own
    retrain) and its seconds over paper's. None when paper did not run."""
    paper = {
        row["seed"]: row
        for row in rows
        if (row["request"], row["variant"]) == (request, "paper") and "error" not in row
    }
    if not paper:
        return None
    header = ["variant", "Δ forget train gap (points)", "Δ utility gap (points)"]
    header += [f"Δ {name.split(' ')[0]} gap" for _, name in AUDIT_COLUMNS]
    header += ["seconds / paper's"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (req, variant, _), group in groups(rows).items():
        if req != request or variant in (RETRAIN, "paper"):
            continue
        pairs = [(row, paper[row["seed"]]) for row in group if row["seed"] in paper]
        pairs = [(mine, base) for mine, base in pairs if "error" not in mine]
        cells = [variant]
        for key, scale, digits in [
            ("forget_train_acc", 100, 2),
            ("utility", 100, 2),
            *((key, 1, 3) for key, _ in AUDIT_COLUMNS),
        ]:
            changes = []
            for mine, base in pairs:
                ours, theirs = _gaps(rows, [mine], key), _gaps(rows, [base], key)
                if ours and theirs:
                    changes.append(ours[0] - theirs[0])
            cells.append(_spread(changes, scale, digits))
        ratios = [m["seconds"] / b["seconds"] for m, b in pairs if b["seconds"] > 0]
        cells.append(_spread(ratios, 1, 3))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_table(rows: Sequence[dict[str, Any]]) -> str:
    """Every run, per seed."""
    header = ["seed", "request", "variant", "forget train %", "forget test %", "utility %"]
    header += ["test %", *(name for _, name in AUDIT_COLUMNS), "passes", "steps", "stopped by"]
    header += ["seconds", "x retrain"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in sorted(rows, key=lambda r: (r["seed"], r["request"])):
        cells = [str(row["seed"]), row["request"], _label(row["variant"], row["split_style"])]
        if "error" in row:
            cells += [f"failed: {row['error']}"] + ["–"] * (len(header) - 4)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells += [_pct(row[k]) for k in ("forget_train_acc", "forget_test_acc", "utility")]
        cells.append(_pct(row["test_acc"]))
        cells += [f"{row['audit'][key]:.3f}" for key, _ in AUDIT_COLUMNS]
        cells.append("–" if row["passes"] is None else f"{row['passes']:g}")
        cells.append("–" if row["optimizer_steps"] is None else str(row["optimizer_steps"]))
        cells += [row["stopped_by"] or "–", f"{row['seconds']:.2f}"]
        ratios = _ratios(rows, [row])
        cells.append("–" if row["variant"] == RETRAIN or not ratios else f"{ratios[0]:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- figure -----------------------------------------------------------------------------------


def figure(rows: Sequence[dict[str, Any]], out: Path) -> None:
    """Per request (a row of panels), each variant's utility and forget train accuracy as
    differences to retrain, in points: horizontal bars (mean over seeds, whiskers: std), so
    that variants with the same numbers stay apart (they would cover each other in a scatter)."""
    requests = list(dict.fromkeys(row["request"] for row in rows))
    variants = [label for label in VARIANTS if any(r["variant"] == label for r in rows)]
    colours = method_colours(variants)
    fig = new_figure(11, 0.6 + (0.9 + 0.32 * len(variants)) * len(requests))
    axes = fig.subplots(len(requests), 2, squeeze=False)
    metrics = (("utility", "utility"), ("forget_train_acc", "forget train accuracy"))
    for (utility_ax, forget_ax), request in zip(axes, requests, strict=True):
        seeds = len({row["seed"] for row in rows if row["request"] == request})
        for ax, (key, name) in zip((utility_ax, forget_ax), metrics, strict=True):
            for position, label in enumerate(variants):
                done = [
                    row
                    for row in rows
                    if (row["request"], row["variant"]) == (request, label) and "error" not in row
                ]
                gaps = [100 * gap for gap in _gaps(rows, done, key)]
                if not gaps:
                    continue  # failed or not run: no bar
                ax.barh(
                    position,
                    statistics.mean(gaps),
                    xerr=statistics.stdev(gaps) if len(gaps) > 1 else None,
                    color=colours[label],
                    capsize=3,
                )
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_yticks(
                range(len(variants)), variants if ax is utility_ax else [""] * len(variants)
            )
            ax.invert_yaxis()  # VARIANTS order from the top
            if key == "utility" and request.startswith("class"):
                name = "retained-class test accuracy"
            elif key == "utility":
                name = "test accuracy"
            ax.set_xlabel(f"{name} − retrain's (points)")
            ax.set_title(f"{request}: {name} ({seeds} seed{'s' * (seeds > 1)})", fontsize=10)
            ax.grid(True, axis="x", alpha=0.3)
    save_figure(fig, out / "ablation")


# -- outputs ----------------------------------------------------------------------------------


def readme(state: dict[str, Any], rows: Sequence[dict[str, Any]], notes: str) -> str:
    """README.md: command, machine, versions, what each variant is, the tables."""
    setup = state["setup"]
    requests = list(dict.fromkeys(row["request"] for row in rows))
    variants = list(dict.fromkeys(row["variant"] for row in rows if row["variant"] != RETRAIN))
    lines = [
        "# The paper as written vs the authors' release: contrastive unlearning ablation",
        "",
        f"Command: `{state['command']}`",
        "",
        f"Machine: {state['machine']}. Versions: {state['versions']}. Wall time "
        f"{state['wall_seconds'] / 60:.1f} min over all invocations ({state['runs_made']} runs "
        "made by the last one; the others read back from runs.json).",
        "",
        f"{setup['dataset']}, `{setup['model']}` originals of the dataset's training preset "
        f"(recipe in runs.json), seeds {', '.join(map(str, setup['seeds']))}; requests: class "
        f"{setup['class_id']} and {setup['samples']} random training samples. Accuracies in %; "
        "utility: retained-class test accuracy (class), test accuracy (sample). Δ: the mean over "
        "seeds of each run's difference to the retrain of the same seed and split (the release "
        "split changes the request, so its runs are compared with a retrain on that split). "
        "Attacks: conun's audit, (a) the paper's attack (share of the forget set predicted "
        "member), (c) forget set vs test set on losses (0.5: indistinguishable); every audit key "
        "is in runs.json. Seconds: the method's own wall clock (retrain: its training), "
        "evaluation excluded; x retrain: over the same seed's retrain.",
        "",
        "| variant | what it is |",
        "|---|---|",
        *(f"| {label} | {VARIANTS[label].what} |" for label in variants if label in VARIANTS),
        "",
        "The paper preset with every single switch on resolves to the release preset's config "
        "(checked before the runs), so the switches cover every release behaviour.",
        "",
        "![ablation](ablation.png)",
        "",
    ]
    for request in requests:
        lines += [f"## {request}: mean ± std over seeds", "", mean_table(rows, request), ""]
        effects = effects_table(rows, request)
        if effects is not None:
            lines += [
                f"### {request}: each variant against paper (paired by seed)",
                "",
                "The variant's difference to retrain minus paper's, per seed (signed, in points "
                "for accuracies; 0: switching the behaviour on changes nothing), and its seconds "
                "over paper's.",
                "",
                effects,
                "",
            ]
    lines += ["## Every run", "", runs_table(rows), ""]
    if notes:
        lines += [notes.rstrip(), ""]
    return "\n".join(lines)


def processor() -> str:
    """The CPU's model name (``platform.processor()`` is empty on most Linux systems)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU, cores, torch threads, GPU and platform, for the README."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{processor()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"{gpu}, {platform.platform()}"
    )


def write_report(out: Path, state: dict[str, Any], keys: Sequence[tuple[Any, ...]] | None) -> None:
    """README.md and ablation.png/.pdf from the runs of ``keys`` (None: every run)."""
    rows = [r for r in state["runs"] if keys is None or run_key(r) in set(keys)]
    notes_path = out / "notes.md"
    notes = notes_path.read_text() if notes_path.is_file() else ""
    if rows:
        figure(rows, out)
    atomic_write_text(out / "README.md", readme(state, rows, notes))


# -- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, checked before any work."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--model", default="small_cnn_proj")
    parser.add_argument("--class-id", type=int, default=5, help="the class request's class")
    parser.add_argument("--samples", type=int, default=500, help="the sample request's size")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="which variants to run (default: all); retrain always runs",
    )
    parser.add_argument(
        "--originals",
        type=Path,
        default=Path("runs/paper-vs-release/originals"),
        help="originals in DIR/seed<S>/original (trained there if absent)",
    )
    parser.add_argument("--out", type=Path, default=Path("experiments/results/paper-vs-release"))
    parser.add_argument(
        "--train-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the dataset's training recipe (e.g. epochs=3); repeatable",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild README and figure from runs.json"
    )
    args = parser.parse_args(argv)
    problems = []
    if len(set(args.seeds)) != len(args.seeds):
        problems.append("--seeds must not repeat a seed")
    if len(set(args.variants)) != len(args.variants):
        problems.append("--variants must not repeat a variant")
    if args.samples < 1:
        problems.append("--samples must be >= 1")
    if args.class_id < 0:
        problems.append("--class-id must be >= 0")
    if args.report_only and not (args.out / RUNS_FILE).is_file():
        problems.append(f"--report-only needs {args.out / RUNS_FILE}")
    if problems:
        parser.error("; ".join(problems))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run (or resume) the ablation and write its outputs; ``argv``: the command's arguments."""
    started = time.perf_counter()
    args = parse_args(argv)
    out: Path = args.out
    runs_path = out / RUNS_FILE
    if args.report_only:
        write_report(out, json.loads(runs_path.read_text()), None)
        return
    for scenario in SCENARIOS:
        # A release behaviour no switch covers would make the ablation silently incomplete.
        missing = uncovered_differences(scenario, args.dataset)
        if missing:
            raise SystemExit(
                f"the {scenario} release preset differs from paper + every switch in "
                f"{', '.join(missing)}: add a variant for it to VARIANTS"
            )
    state: dict[str, Any] = {"runs": [], "wall_seconds": 0.0}
    if runs_path.is_file():
        state = json.loads(runs_path.read_text())
    command = ["python", "experiments/paper_vs_release.py"]
    command += sys.argv[1:] if argv is None else list(argv)
    state["command"] = shlex.join(command)
    state["machine"] = machine()
    state["versions"] = versions()
    state["setup"] = {
        "dataset": args.dataset,
        "model": args.model,
        "seeds": args.seeds,
        "class_id": args.class_id,
        "samples": args.samples,
        "train_set": args.train_set,
    }
    wall_before = state["wall_seconds"]
    planned = plan(args)
    recorded = {run_key(row): row for row in state["runs"]}
    made = 0
    for seed in args.seeds:
        recipe = build_train_config(
            args.dataset, [{"seed": seed, "model": args.model}], args.train_set
        )
        original: Original | None = None  # loaded (trained) on the seed's first run to make
        splits: dict[tuple[Scenario, SplitStyle], ForgetRetainSplit] = {}
        for run in (r for r in planned if r.seed == seed):
            spec = request_spec(run.scenario, args, run.split_style)
            config = config_of(run, args)
            # Through JSON, so that it compares equal to the recorded one (tuples become lists).
            settings = json.loads(
                json.dumps(
                    {
                        "request": dataclasses.asdict(spec),
                        "config": config.model_dump(mode="json"),
                        "recipe": recipe.model_dump(mode="json"),
                    }
                )
            )
            old = recorded.get(run.key(args))
            if old is not None and old["settings"] == settings:
                continue
            if original is None:
                original = load_original(recipe, args.originals / f"seed{seed}" / "original")
            split = splits.get((run.scenario, run.split_style))
            if split is None:
                split = spec.resolve(original.data, validation_of(original.meta), seed)
                splits[(run.scenario, run.split_style)] = split
            row = {
                "seed": seed,
                "request": request_name(run.scenario, args),
                "scenario": run.scenario,
                "variant": run.variant,
                "split_style": run.split_style,
                "forget_size": int(split.forget.numel()),
                "retain_size": int(split.retain.numel()),
                "validation_size": int(split.validation.numel()),
                **measure(original, split, config),
                "settings": settings,
            }
            if old is not None:
                state["runs"].remove(old)
            state["runs"].append(row)
            recorded[run.key(args)] = row
            made += 1
            state["runs_made"] = made
            state["wall_seconds"] = wall_before + time.perf_counter() - started
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(runs_path, state)
            summary = {k: row.get(k) for k in ("seed", "request", "variant", "split_style")}
            shown = row.get("error") or {
                "forget_train_acc": row["forget_train_acc"],
                "utility": row["utility"],
                "seconds": round(row["seconds"], 2),
            }
            print(json.dumps(summary), json.dumps(shown), flush=True)
    state["runs_made"] = made
    state["wall_seconds"] = wall_before + time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(runs_path, state)
    write_report(out, state, [run.key(args) for run in planned])
    print((out / "README.md").read_text())


if __name__ == "__main__":
    main()
