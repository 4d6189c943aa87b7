"""First look at the sample scenario's stopping rules on Fashion-MNIST (issue: sample unlearning
that leaves no trace): contrastive unlearning of 500 random samples stopped by the accuracy rule
(the paper's) and by the ``indistinguishable`` rule, and with anchors matched to held-out losses
(``options.match_held_out``), against retraining, with the population attacks (a) and (c) of
conun's audit. Chosen on nothing: it only measures. The held-out data of both
rules is the validation split carved from train (never the test set).

    python experiments/sample_rule_probe.py --seeds 0 --originals runs/bench-fashion-mnist \
        --out experiments/results/sample-rule-probe

``--originals DIR`` holds ``seed<S>/original`` checkpoints as written by
``experiments/fashion_mnist_contrastive.py`` (trained there if missing).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from conun.config import build_train_config
from conun.engine.checkpoint import CHECKPOINT_FILE, read_checkpoint_meta
from conun.reproducibility import versions
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.inputs import recipe_of
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import train_original
from conun.workflows.unlearning import unlearn_checkpoint

# label -> overrides of conun's sample defaults for contrastive on Fashion-MNIST.
VARIANTS: dict[str, list[str]] = {
    # conun's sample defaults before the calibrated default: the paper's accuracy rule after
    # each pass, omega 4, no matching.
    "accuracy rule": [
        "stopping.sample_rule=accuracy",
        "stopping.check_every=null",
        "stopping.max_passes=20",
        "options.omega=4",
        "options.match_held_out=false",
        "options.lambda_calibration=0",
    ],
    # conun's sample defaults now: matched anchors + calibration 0.3, omega 1, the
    # indistinguishable rule at confidence 0.5, checked inside the pass.
    "calibrated default": [],
    # Each forget sample matched to the held-out quantile of its rank on the original's
    # confidence on its nearest held-out neighbours, fixed before the first step, instead of
    # its rank in the batch on its current confidence.
    "neighbour targets": ["options.match_by=neighbours"],
}
COLUMNS = (
    ("forget_train_acc", "forget train %"),
    ("test_acc", "test %"),
    ("mia_forget_member_rate", "(a) forget member rate"),
    ("mia_forget_vs_test_auc", "(c) forget-vs-test AUC"),
)


def original(originals: Path, seed: int) -> Path:
    directory = originals / f"seed{seed}" / "original"
    if not (directory / CHECKPOINT_FILE).is_file():
        config = build_train_config("fashion-mnist", overrides=[f"seed={seed}"])
        train_original(config, directory, quiet=True, force=True)
    return directory


def run(
    seed: int, originals: Path, work: Path, samples: int, variants: list[str]
) -> list[dict[str, Any]]:
    checkpoint = original(originals, seed)
    model = recipe_of(read_checkpoint_meta(checkpoint), checkpoint).model
    rows: list[dict[str, Any]] = []
    for index, label in enumerate(variants):
        overrides = VARIANTS[label]
        # The defaults as `conun unlearn` resolves them for this original (dataset and model
        # layers included).
        config = resolve_unlearn_config(
            "contrastive",
            "sample",
            dataset="fashion-mnist",
            model=model,
            overrides=[f"seed={seed}", *overrides],
        ).config
        results = unlearn_checkpoint(
            checkpoint,
            ForgetSpec(num_samples=samples),
            config,
            work / f"seed{seed}-{samples}" / label.replace(" ", "-").replace("+", "and"),
            with_reference=index == 0,  # original and retrain once per seed
            audit=True,
            quiet=True,
            force=True,
        )
        for record in results.to_dict()["runs"]:
            name = record["method"]
            name = f"contrastive ({label})" if name == "contrastive" else name
            history = record.get("history") or []
            rows.append(
                {
                    "seed": seed,
                    "method": name,
                    "seconds": record["seconds"],
                    "check_seconds": record.get("check_seconds"),
                    "stopped_by": record.get("stopped_by", ""),
                    "forget_batches": record.get("forget_batches"),
                    "last_member_auc": history[-1].get("member_auc") if history else None,
                    **{key: record["metrics"].get(key) for key, _ in COLUMNS},
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def cell(key: str, value: Any) -> str:
        if value is None:
            return "–"
        if key.endswith("_acc"):
            return f"{100 * value:.2f}"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    header = ["seed", "method", *[label for _, label in COLUMNS], "member AUC at stop"]
    header += ["stopped by", "forget batches", "seconds", "checks % of seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = [str(row["seed"]), row["method"]]
        values += [cell(key, row[key]) for key, _ in COLUMNS]
        values += [cell("auc", row["last_member_auc"]), row["stopped_by"] or "–"]
        values += [cell("n", row["forget_batches"]), f"{row['seconds']:.1f}"]
        checks = row.get("check_seconds")
        values.append(f"{100 * checks / row['seconds']:.1f}" if checks else "–")
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def means(rows: list[dict[str, Any]]) -> str:
    """Mean over seeds per method, with seconds relative to the same seed's retrain."""
    retrain = {row["seed"]: row["seconds"] for row in rows if row["method"] == "retrain"}
    methods: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        methods.setdefault(row["method"], []).append(row)
    header = ["method", *[label for _, label in COLUMNS], "member AUC at stop", "x retrain"]
    header.append("checks % of seconds")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, group in methods.items():
        values = [method]
        for key, _ in COLUMNS:
            mean = statistics.mean(row[key] for row in group)
            values.append(f"{100 * mean:.2f}" if key.endswith("_acc") else f"{mean:.3f}")
        aucs = [row["last_member_auc"] for row in group if row["last_member_auc"] is not None]
        values.append(f"{statistics.mean(aucs):.3f}" if aucs else "–")
        ratios = [row["seconds"] / retrain[row["seed"]] for row in group]
        values.append(f"{statistics.mean(ratios):.3f}" if method != "original" else "–")
        shares = [
            row["check_seconds"] / row["seconds"] for row in group if row.get("check_seconds")
        ]
        values.append(f"{100 * statistics.mean(shares):.1f}" if shares else "–")
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--samples", type=int, default=500, help="random samples to forget")
    parser.add_argument("--originals", type=Path, default=Path("runs/bench-fashion-mnist"))
    parser.add_argument("--work", type=Path, default=Path("runs/sample-rule-probe"))
    parser.add_argument("--out", type=Path, default=Path("experiments/results/sample-rule-probe"))
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="which settings to run (default: all)",
    )
    parser.add_argument(
        "--from-rows",
        action="store_true",
        help="rebuild the tables from OUT/rows.json instead of running",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    if args.from_rows:
        rows = json.loads((args.out / "rows.json").read_text())
    else:
        rows = [
            row
            for seed in args.seeds
            for row in run(seed, args.originals, args.work, args.samples, args.variants)
        ]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rows.json").write_text(json.dumps(rows, indent=2) + "\n")
    notes = args.out / "notes.md"
    seeds = " ".join(str(seed) for seed in args.seeds)
    text = (
        "# Sample stopping rules, first look — Fashion-MNIST, small_cnn, "
        f"{args.samples} random samples\n\n"
        f"Command: `python experiments/sample_rule_probe.py --seeds {seeds} "
        f"--samples {args.samples} --variants {' '.join(repr(v) for v in args.variants)}` "
        f"({time.perf_counter() - started:.0f} s; {platform.machine()}, "
        f"{versions()}). Accuracies in %; attacks from conun's audit (members: held-out retain "
        "samples, non-members: test samples); retrain is the target on every column. "
        "x retrain: the method's seconds over the same seed's retraining, in one run.\n\n"
        "## Mean over seeds\n\n"
        + means(rows)
        + "\n\n## Every run\n\n"
        + table(rows)
        + "\n"
        + ("\n" + notes.read_text() if notes.is_file() else "")
    )
    (args.out / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
