"""The ViT grid's training recipe at a fixed budget: training-set size against epochs (issue 17).

The ``vit-fashion-mnist`` bench preset trains its small ViT (depth 4, width 64, 2 heads) on a
seeded 30,000-sample subset for 10 epochs. This probe asks what a budget of images x epochs buys
spread over more samples and fewer epochs, and at other widths (``--model-arg``): the original's
accuracy on its own validation split (carved from its training samples, never seen by it), on
the samples it trained on and on the test set, and its training seconds. It trains with ``conun
train`` (the recipe ``fashion-mnist-vit`` and the preset's model arguments, with the overrides);
a recipe whose checkpoint is already in ``--work`` is read back, not retrained.

    python experiments/vit_recipe_probe.py --recipes 60000x6 30000x10 15000x20 --seed 0 \
        --work /tmp/vitprobe64 --out experiments/results/vit-fashion-mnist/recipe-probe-width64.md

The first grid's probe (width 128, the budget of 6,000 x 20):

    python experiments/vit_recipe_probe.py --recipes 6000x20 12000x10 30000x4 60000x2 \
        --model-arg embed_dim=128 --seed 0 --work /tmp/vitprobe \
        --out experiments/results/vit-fashion-mnist/width128/recipe-probe.md
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conun.bench import load_bench_preset
from conun.engine.checkpoint import CHECKPOINT_FILE, load_checkpoint
from conun.evaluation.accuracy import accuracy
from conun.reproducibility import versions
from conun.workflows.inputs import load_training_data, recipe_of, validation_of
from vit_sample_lr_study import write_report

#: The bench preset's model arguments (src/conun/configs/bench/vit-fashion-mnist.yaml).
MODEL_ARGS: dict[str, int] = dict(load_bench_preset("vit-fashion-mnist").train["model_args"])
RECIPE = Path(__file__).resolve().parents[1] / "src/conun/configs/train/fashion-mnist-vit.yaml"


def parse_recipe(text: str) -> tuple[int, int]:
    """``'SAMPLESxEPOCHS'`` -> ``(samples, epochs)``, e.g. ``'6000x20'`` -> ``(6000, 20)``."""
    try:
        samples, epochs = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a recipe is SAMPLESxEPOCHS, e.g. 6000x20; got {text!r}"
        ) from None
    if samples < 1 or epochs < 1:
        raise argparse.ArgumentTypeError(f"samples and epochs must be >= 1; got {text!r}")
    return samples, epochs


def train(samples: int, epochs: int, seed: int, out: Path, model_args: dict[str, int]) -> None:
    """``conun train`` of the ViT recipe on ``samples`` training samples for ``epochs``."""
    command = [
        sys.executable, "-m", "conun", "train",
        "--config", str(RECIPE),
        "--set", f"max_train_samples={samples}",
        "--epochs", str(epochs),
        "--seed", str(seed),
        "--out", str(out),
        "--quiet",
    ]  # fmt: skip
    for key, value in model_args.items():
        command += ["--set", f"model_args.{key}={value}"]
    subprocess.run(command, check=True)


def measure(run: Path, samples: int, epochs: int) -> dict[str, Any]:
    """The trained original in ``run``: its accuracies (fractions) and training seconds."""
    model, meta = load_checkpoint(run / CHECKPOINT_FILE)
    data = load_training_data(recipe_of(meta, run))
    validation = validation_of(meta)
    (record,) = json.loads((run / "results.json").read_text())["runs"]
    return {
        "samples": samples,
        "epochs": epochs,
        "trained_on": len(data.train) - len(validation),
        "validation_size": len(validation),
        "seconds": record["seconds"],
        "train_acc": record["metrics"]["retain_train_acc"],
        "val_acc": accuracy(model, data.train.subset(validation), batch_size=256),
        "test_acc": accuracy(model, data.test, batch_size=256),
    }


def parse_model_arg(text: str) -> tuple[str, int]:
    """``'embed_dim=64'`` -> ``('embed_dim', 64)``."""
    key, sep, value = text.partition("=")
    if not sep or not key or not value.isdigit():
        raise argparse.ArgumentTypeError(
            f"a model argument is KEY=INT, e.g. embed_dim=64; got {text!r}"
        )
    return key, int(value)


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the probe's rows, one per recipe, accuracies in %."""
    lines = [
        "| recipe | trained on | epochs | images x epochs | seconds | train % | validation % "
        "| test % | train - validation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['samples']}x{row['epochs']} | {row['trained_on']:,} | {row['epochs']} "
            f"| {row['trained_on'] * row['epochs']:,} | {row['seconds']:.0f} "
            f"| {100 * row['train_acc']:.2f} | {100 * row['val_acc']:.2f} "
            f"(n = {row['validation_size']:,}) | {100 * row['test_acc']:.2f} "
            f"| {100 * (row['train_acc'] - row['val_acc']):+.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", nargs="+", type=parse_recipe, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, required=True, help="the trained originals")
    parser.add_argument("--out", type=Path, help="write the report here (and rows as JSON)")
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        type=parse_model_arg,
        metavar="KEY=INT",
        help="override one of the preset's model arguments, e.g. embed_dim=64 (repeatable)",
    )
    args = parser.parse_args()
    model_args = {**MODEL_ARGS, **dict(args.model_arg)}
    # Every model argument names the run, so that a checkpoint of another width is never read
    # back as this one's.
    tag = "".join(f"-{key}{value}" for key, value in sorted(model_args.items()))
    started = time.perf_counter()
    rows = []
    for samples, epochs in args.recipes:
        run = args.work / f"n{samples}-e{epochs}{tag}"
        if not (run / CHECKPOINT_FILE).exists():
            train(samples, epochs, args.seed, run, model_args)
        rows.append(measure(run, samples, epochs))
    recipes = " ".join(f"{row['samples']}x{row['epochs']}" for row in rows)
    text = "\n".join(
        [
            f"# The ViT's training recipe at a fixed budget (seed {args.seed}, Fashion-MNIST)",
            "",
            f"Command: `python experiments/vit_recipe_probe.py --recipes {recipes} "
            f"--seed {args.seed} --work {args.work}"
            + "".join(f" --model-arg {key}={value}" for key, value in args.model_arg)
            + "`",
            "",
            f"Model arguments: {model_args}.",
            "",
            f"Machine: {platform.machine()}, 2-core CPU; versions {versions()}; wall time of "
            f"this invocation {time.perf_counter() - started:.0f} s (originals already in "
            "--work are read back). Seconds: each training's own wall clock.",
            "",
            table(rows),
            "",
        ]
    )
    write_report(text, rows, args.out)


if __name__ == "__main__":
    main()
