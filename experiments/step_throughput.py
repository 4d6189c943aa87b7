"""Throughput of one contrastive-unlearning step against a plain cross-entropy step.

Both steps see the same total batch (forget + retain images), run forward + backward + SGD
step on the same model, and alternate step by step, each timed on its own; the script reports
each kind's images per median step time and, per round, the ratio of the two median step times,
with its median over rounds (issue #14: contrastive >= 95% of cross-entropy).

    python experiments/step_throughput.py --model small_cnn --input 1x28x28 --forget 128 --retain 128
    python experiments/step_throughput.py --scenario class --forget 64 --retain 64

``--scenario class`` runs the class default's step on class unlearning's labels (every forget
sample of one class, absent from the retain batch); ``sample`` (default) the sample default's
on random labels.

``--frozen encoder.0 encoder.1 encoder.2`` freezes those modules (``options.frozen_modules``: no
gradient, eval mode) for both steps (a like-for-like ratio), or with ``--frozen-steps
contrastive`` for the contrastive step only (the ratio is then the shipped class step's speed
against a cross-entropy step that trains every layer, as retraining's do):

    python experiments/step_throughput.py --scenario class --forget 64 --retain 64 \
        --frozen encoder.0 encoder.1 encoder.2 --frozen-steps contrastive

Writes a JSON record with the machine, settings and numbers when --out is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from conun.distributed.device import prepare_model, to_device
from conun.engine.training import FrozenModules
from conun.methods.base import UnlearningBatch
from conun.methods.contrastive import ContrastiveUnlearning
from conun.models import build_model
from conun.reproducibility import versions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--input", default="1x28x28", help="C x H x W")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--forget", type=int, default=128)
    parser.add_argument("--retain", type=int, default=128)
    parser.add_argument(
        "--scenario",
        choices=("sample", "class"),
        default="sample",
        help="the scenario's defaults and labels: 'class' gives every forget sample class 0 and "
        "the retain samples the other classes (no anchor has a same-class reference, as in "
        "class unlearning); 'sample' draws every label at random",
    )
    parser.add_argument("--steps", type=int, default=20, help="steps per timing round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--matched",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the sample default's matched anchors and calibration term (reference scores "
        "drawn at random: their values do not change the cost); default: on for --scenario "
        "sample, off for class (the class default has none)",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="torch.compile the model's forward passes (both steps)",
    )
    parser.add_argument(
        "--frozen", nargs="+", default=[], help="module names to freeze (model.named_modules())"
    )
    parser.add_argument(
        "--frozen-steps",
        choices=("both", "contrastive"),
        default="both",
        help="which steps --frozen applies to",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.matched is None:
        args.matched = args.scenario == "sample"

    shape = tuple(int(v) for v in args.input.split("x"))
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=args.classes, input_shape=shape)  # type: ignore[arg-type]
    prepare_model(model, torch.device("cpu"), channels_last=args.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    total = args.forget + args.retain
    images = to_device(
        torch.randn(total, *shape), torch.device("cpu"), channels_last=args.channels_last
    )
    labels = torch.randint(0, args.classes, (total,))
    if args.scenario == "class":
        labels[: args.forget] = 0
        labels[args.forget :] = torch.randint(1, args.classes, (args.retain,))
    method = ContrastiveUnlearning.for_scenario(args.scenario, {})
    if args.matched:
        method.reference_scores = torch.randn(4096) * 3 + 5
    if args.compile:
        model.forward = torch.compile(model.forward)  # type: ignore[method-assign]
        model.forward_features = torch.compile(model.forward_features)  # type: ignore[method-assign]
    batch = UnlearningBatch(
        images[: args.forget], labels[: args.forget], images[args.forget :], labels[args.forget :]
    )

    modules = dict(model.named_modules())
    frozen = FrozenModules()

    def freeze(step: str) -> None:
        if args.frozen and args.frozen_steps in ("both", step):
            frozen.freeze([modules[name] for name in args.frozen])
            frozen.set_eval()

    def unfreeze() -> None:
        frozen.restore()
        model.train()

    def cross_entropy_step() -> None:
        freeze("cross_entropy")
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        unfreeze()

    def contrastive_step() -> None:
        freeze("contrastive")
        loss = method.loss(model, batch).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        unfreeze()

    def seconds(step) -> float:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        step()
        return time.perf_counter() - started

    for _ in range(args.steps):  # warm-up
        seconds(cross_entropy_step)
        seconds(contrastive_step)
    # The two steps alternate one by one, so that the machine's drift and bursts (other
    # processes, frequency changes) hit both alike; each step is timed on its own and the median
    # step time is robust to the occasional slow one.
    times: dict[str, list[float]] = {"cross_entropy": [], "contrastive": []}
    ratios = []
    for _ in range(args.rounds):
        pairs = [
            (seconds(cross_entropy_step), seconds(contrastive_step)) for _ in range(args.steps)
        ]
        times["cross_entropy"] += [ce for ce, _ in pairs]
        times["contrastive"] += [co for _, co in pairs]
        ratios.append(
            statistics.median(ce for ce, _ in pairs) / statistics.median(co for _, co in pairs)
        )
    medians = {name: total / statistics.median(values) for name, values in times.items()}
    record = {
        "command": "python experiments/step_throughput.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k != "out" and v is not None and k not in ("frozen", "frozen_steps")
        )
        + (
            f" --frozen {' '.join(args.frozen)} --frozen-steps {args.frozen_steps}"
            if args.frozen
            else ""
        ),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "versions": versions(),
        # images / median step time, over every step of every round
        "images_per_second_median": medians,
        # contrastive / cross-entropy throughput: median over rounds of each round's ratio of
        # median step times
        "ratio_median": statistics.median(ratios),
        "ratio_per_round": ratios,
    }
    print(json.dumps(record, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
