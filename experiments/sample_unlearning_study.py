"""Study of sample unlearning that lands on unseen data's behaviour, on the validation split only.

For each original (``--originals DIR/seed<S>/original``, trained there if missing), each forget
size and each variant (overrides of conun's sample defaults for contrastive), unlearn a random
forget set and measure, on data the original never trained on — the validation split carved
from train, never the test set:

- ``gap``: forget-set accuracy minus validation accuracy, in points (retraining puts the forget
  set at unseen data's accuracy: target 0);
- ``auc``: AUC of "lower loss = member" between the forget set and the validation set (target
  0.5, below = past unseen data);
- ``val``: validation accuracy (utility), and its change from the original's;
- ``seconds``, ``checks``: the run's time and its checks' share; ``stop``: rule or pass limit.

The rule's own evaluation subsets are 512 samples of the validation split; the numbers here use
all of it (6,000 samples), so they are not the rule's estimate of itself.

    python experiments/sample_unlearning_study.py --seeds 0 1 2 --samples 500 1000 3000 \
        --originals /tmp/fm-runs --out experiments/results/sample-unlearning-study
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from conun.engine.checkpoint import read_checkpoint_meta
from conun.engine.stopping import member_auc
from conun.evaluation.accuracy import gathered_logits
from conun.models.base import Classifier
from conun.reproducibility import versions
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.inputs import load_checkpoint_for, load_training_data, recipe_of, validation_of
from conun.workflows.requests import ForgetSpec
from conun.workflows.unlearning import run_method
from sample_rule_probe import original  # the same originals (trained there if missing)

# label -> overrides of conun's sample defaults for contrastive on Fashion-MNIST.
VARIANTS: dict[str, list[str]] = {
    "default": [],
    # Cheaper steps: the first convolution block frozen (no weight gradient, its BatchNorm
    # statistics kept), or a smaller retain batch per step.
    "frozen block 1": ["options.frozen_modules=[encoder.0]"],
    "retain 64": ["options.retain_batch_size=64"],
    "frozen block 1, retain 64": [
        "options.frozen_modules=[encoder.0]",
        "options.retain_batch_size=64",
    ],
    "paper rule": ["stopping.sample_rule=accuracy", "stopping.check_every=null"],
    "matched, paper rule": [
        "stopping.sample_rule=accuracy",
        "stopping.check_every=null",
        "options.match_held_out=true",
    ],
    "matched+cal1, indist95": [
        "stopping.sample_rule=indistinguishable",
        "options.match_held_out=true",
        "options.lambda_calibration=1",
    ],
}


def measure(
    model: Classifier, images: torch.Tensor, labels: torch.Tensor
) -> tuple[float, torch.Tensor]:
    logits = gathered_logits(model, images, batch_size=1024, channels_last=True)
    accuracy = float((logits.argmax(1) == labels).double().mean())
    return accuracy, F.cross_entropy(logits.float(), labels, reduction="none")


def run(
    seed: int, originals: Path, sizes: list[int], variants: dict[str, list[str]]
) -> list[dict[str, Any]]:
    checkpoint = original(originals, seed)
    train_config = recipe_of(read_checkpoint_meta(checkpoint), checkpoint)
    data = load_training_data(train_config)
    model, meta = load_checkpoint_for(checkpoint, data)
    validation = validation_of(meta)
    val_images, val_labels = data.train.images[validation], data.train.labels[validation]
    base_val_acc, val_losses = measure(model, val_images, val_labels)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        split = ForgetSpec(num_samples=size).resolve(data, validation, seed)
        forget_images, forget_labels = (
            data.train.images[split.forget],
            data.train.labels[split.forget],
        )
        acc, losses = measure(model, forget_images, forget_labels)
        rows.append(
            {
                "seed": seed,
                "samples": size,
                "variant": "original",
                "gap": 100 * (acc - base_val_acc),
                "auc": member_auc(losses, val_losses),
                "val": 100 * base_val_acc,
                "val_change": 0.0,
            }
        )
        for label, overrides in variants.items():
            config = resolve_unlearn_config(
                "contrastive",
                "sample",
                dataset="fashion-mnist",
                overrides=[f"seed={seed}", *overrides],
            ).config
            unlearned, record = run_method(
                config, model, data, split, train_config=None, original_seconds=None, quiet=True
            )
            forget_acc, forget_losses = measure(unlearned, forget_images, forget_labels)
            val_acc, held_losses = measure(unlearned, val_images, val_labels)
            row = {
                "seed": seed,
                "samples": size,
                "variant": label,
                "gap": 100 * (forget_acc - val_acc),
                "auc": member_auc(forget_losses, held_losses),
                "val": 100 * val_acc,
                "val_change": 100 * (val_acc - base_val_acc),
                "seconds": record.seconds,
                "checks": record.extra["check_seconds"] / record.seconds,
                "checks_n": len(record.history),
                "passes": record.passes,
                "stop": record.extra["stopped_by"],
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| samples | variant | gap (pts) | auc | val % | val change | seconds | checks | passes | stopped by rule |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys: list[tuple[int, str]] = []
    for row in rows:
        key = (row["samples"], row["variant"])
        if key not in keys:
            keys.append(key)
    for samples, variant in keys:
        group = [r for r in rows if r["samples"] == samples and r["variant"] == variant]

        def mean(name: str, digits: int = 2, group: list[dict[str, Any]] = group) -> str:
            values = [r[name] for r in group if r.get(name) is not None]
            if not values:
                return "–"
            spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.{digits}f}{spread}"

        by_rule = sum(r.get("stop") == "rule" for r in group)
        stops = f"{by_rule}/{len(group)}" if "stop" in group[0] else "–"
        lines.append(
            f"| {samples} | {variant} | {mean('gap')} | {mean('auc', 3)} | {mean('val')} | "
            f"{mean('val_change')} | {mean('seconds')} | {mean('checks', 3)} | {mean('passes')} | {stops} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[500])
    parser.add_argument("--originals", type=Path, default=Path("runs/bench-fashion-mnist"))
    parser.add_argument("--variants", nargs="*", help="labels of VARIANTS to run (default all)")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        help="an extra variant: LABEL=override,override,...",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/sample-unlearning-study"))
    args = parser.parse_args()
    variants = {k: v for k, v in VARIANTS.items() if not args.variants or k in args.variants}
    for extra in args.extra:
        label, _, overrides = extra.partition("=")
        variants[label] = overrides.split(",")
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        rows += run(seed, args.originals, args.samples, variants)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "versions": versions(),
                "variants": variants,
                "rows": rows,
            },
            indent=1,
        )
    )
    table = summary(rows)
    (args.out / "summary.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
