"""Acceptance run of issue #3: contrastive unlearning against retraining on Fashion-MNIST.

For each seed: train the original small_cnn (the fashion-mnist preset: paper regime, no
augmentation, >= 99% train accuracy), then for class 0, class 5 and 500 random samples run
original, retrain (the original's own recipe) and contrastive (conun's defaults) into one
results.json per request, and summarise every check of the issue in one Markdown table.

    python experiments/fashion_mnist_contrastive.py --seeds 0 1 2 --out experiments/results/fashion-mnist-contrastive
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from conun.config import build_train_config
from conun.engine.checkpoint import CHECKPOINT_FILE
from conun.reproducibility import versions
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import train_original
from conun.workflows.unlearning import unlearn_checkpoint

REQUESTS = {
    "class0": ForgetSpec(classes=(0,)),
    "class5": ForgetSpec(classes=(5,)),
    "sample500": ForgetSpec(num_samples=500),
}


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--out", type=Path, default=Path("experiments/results/fashion-mnist-contrastive")
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("runs/bench-fashion-mnist"),
        help="checkpoints (not committed)",
    )
    parser.add_argument(
        "--requests",
        nargs="*",
        default=list(REQUESTS),
        choices=list(REQUESTS),
        help="requests to run (none: only rebuild the summary from --out)",
    )
    parser.add_argument(
        "--reuse-originals",
        action="store_true",
        help="load an original already trained in --runs instead of training it again",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for seed in args.seeds if args.requests else []:
        train_config = build_train_config("fashion-mnist", [{"seed": seed}])
        original_dir = args.runs / f"seed{seed}" / "original"
        if not (args.reuse_originals and (original_dir / CHECKPOINT_FILE).exists()):
            trained = train_original(train_config, original_dir, quiet=True, force=True)
            print(
                f"seed {seed}: original {trained.results.runs[0].metrics} in {trained.meta.seconds:.1f}s",
                flush=True,
            )
        for name in args.requests:
            spec = REQUESTS[name]
            config = resolve_unlearn_config(
                "contrastive",
                spec.scenario,
                dataset="fashion-mnist",
                model=train_config.model,
                layers=[("--seed", {"seed": seed})],
            ).config
            results = unlearn_checkpoint(
                original_dir,
                spec,
                config,
                args.runs / f"seed{seed}" / name,
                with_reference=True,
                quiet=True,
                force=True,
            )
            data = results.to_dict()
            target = args.out / f"seed{seed}" / name
            target.mkdir(parents=True, exist_ok=True)
            (target / "results.json").write_text(json.dumps(data, indent=2) + "\n")
            print(
                seed,
                name,
                {r["method"]: (r["metrics"], round(r["seconds"], 2)) for r in data["runs"]},
                flush=True,
            )

    # The summary covers every cell under --out (earlier invocations' too), in a fixed order.
    for seed_dir in sorted(args.out.glob("seed*")):
        for name in REQUESTS:
            path = seed_dir / name / "results.json"
            if path.exists():
                data = json.loads(path.read_text())
                runs = {run["method"]: run for run in data["runs"]}
                rows.append((data["seed"], name, REQUESTS[name].scenario, runs))

    lines = [
        "# Contrastive unlearning vs retraining — Fashion-MNIST, small_cnn",
        "",
        # The invocation that wrote this file; rows run by earlier invocations into the same
        # --out were timed then: compare seconds within a request (its three runs ran back to back).
        f"Command (the last invocation): `python experiments/fashion_mnist_contrastive.py "
        f"{' '.join(sys.argv[1:])}`; every request with the defaults of the day "
        "(each run's config is in its results.json).",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, 2 cores, no GPU; versions {versions()}.",
        (
            f"Wall time of the last invocation: {(time.perf_counter() - started) / 60:.1f} min."
            if args.requests
            else "The last invocation only rebuilt this summary (`--requests` with none); each run's"
            " seconds are in the table."
        ),
        "",
        "Accuracies in %. Checks of issue #3: class — forget test and forget train <= 10% (1/C), retain test within",
        "1 point of retrain's; sample — test within 2 points of retrain's and |forget train - retrain's| <= 3",
        "points; both — contrastive seconds <= 1/15 of retrain's (x retrain <= 0.067).",
        "",
        "| seed | request | method | forget train | forget test | retain test | test | seconds | x retrain | forget batches | checks s | pass |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, list[float]] = {"class": [], "sample": []}
    verdicts = []
    for seed, name, scenario, runs in rows:
        retrain, ours = runs["retrain"], runs["contrastive"]
        r, c = retrain["metrics"], ours["metrics"]
        ratio = ours["seconds"] / retrain["seconds"]
        ratios[scenario].append(ratio)
        if scenario == "class":
            ok = (
                c["forget_test_acc"] <= 0.1
                and c["forget_train_acc"] <= 0.1
                and abs(c["retain_test_acc"] - r["retain_test_acc"]) <= 0.01
                and ratio <= 1 / 15
            )
        else:
            ok = (
                abs(c["test_acc"] - r["test_acc"]) <= 0.02
                and abs(c["forget_train_acc"] - r["forget_train_acc"]) <= 0.03
                and ratio <= 1 / 15
            )
        verdicts.append(ok)
        for method in ("original", "retrain", "contrastive"):
            run = runs[method]
            m = run["metrics"]
            lines.append(
                f"| {seed} | {name} | {method} | {pct(m['forget_train_acc'])} | {pct(m['forget_test_acc'])} | "
                f"{pct(m['retain_test_acc'])} | {pct(m['test_acc'])} | {run['seconds']:.2f} | "
                f"{run['seconds'] / retrain['seconds']:.3f} | {run.get('forget_batches') or '–'} | "
                f"{run.get('check_seconds', 0):.2f} | {('yes' if ok else 'NO') if method == 'contrastive' else ''} |"
            )
    lines += [
        "",
        "Median contrastive/retrain time ratio: "
        + ", ".join(
            f"{scenario} {statistics.median(values):.3f}"
            for scenario, values in ratios.items()
            if values  # a scenario without requests in --out has no ratio
        )
        + ".",
        f"Requests meeting every check: {sum(verdicts)} of {len(verdicts)}.",
    ]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
