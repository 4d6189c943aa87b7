"""Issue 17, item 5: contrastive unlearning on a small ViT trained from scratch (timm).

The study is the bench preset ``vit-fashion-mnist`` (src/conun/configs/bench/): timm's ViT-small
cut down to patches of 4 (configs/train/fashion-mnist-vit.yaml, no augmentation), made small
enough for a 2-core CPU by the preset's ``train`` section (depth 4, width 64, a seeded
30,000-sample subset of Fashion-MNIST, 10 epochs); class 5 and 500 random samples; contrastive
against retrain and the three baselines with the lowest Avg. Gap of the small_cnn table (salun, fisher, ssd / finetune, bad_teacher, neggrad_plus); 3 seeds. This
script runs that grid (resumably: rerun the same command after an interruption), then writes
into ``--out``, besides the bench's own files (cells/, originals/, table.md, table.csv):

- ``rows.json``: one row per cell (seed, request, method, seconds, metrics);
- ``README.md``: command, machine, versions, wall time, and the issue's acceptance checks per
  seed: class 5 forget train and forget test <= 1%, retained-class test accuracy within 1.5
  points of retrain's, contrastive seconds <= 1/10 of retrain's; and for 500 samples, the sample
  scenario's bounds (the sample-unlearning issue's, on means over seeds): forget train accuracy
  within 2 points of retrain's, test accuracy within 1 point, forget member rate (a) within
  0.05, forget-vs-test AUC (c) within 0.03, contrastive seconds <= 1/20 of retrain's.

    python experiments/vit_fashion_mnist.py --out experiments/results/vit-fashion-mnist

``--time-epoch`` only times one training epoch of the train recipe's own ViT (depth 6, width
192: what a GPU would train) on a 6,000-sample subset (90% of it trained on, the rest held out
as validation) and prints what the full grid would cost with it on this machine; it writes
nothing. Needs ``pip install 'conun[timm]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from conun.bench import load_bench_preset, plan_bench, run_bench
from conun.config import build_train_config
from conun.reproducibility import versions
from conun.workflows.outputs import CELLS_DIR
from conun.workflows.training import train_original

PRESET = "vit-fashion-mnist"
CLASS_REQUEST = "class5"
FORGET_LIMIT = 0.01
"""Class 5's forget train and forget test accuracy must be at most this (1%)."""
RETAIN_GAP = 0.015
"""Retained-class test accuracy within this of retrain's (1.5 points)."""
TIME_RATIO = 0.1
"""Contrastive seconds at most this fraction of retrain's."""
SAMPLE_REQUEST = "samples500"
SAMPLE_BOUNDS = {
    "forget_train_acc": 0.02,
    "test_acc": 0.01,
    "mia_forget_member_rate": 0.05,
    "mia_forget_vs_test_auc": 0.03,
}
"""500 samples: the largest |contrastive - retrain| of each metric (means over seeds)."""
SAMPLE_TIME_RATIO = 0.05
"""500 samples: contrastive seconds at most this fraction of retrain's (mean over seeds)."""


def cell_rows(out: Path, seeds: list[int]) -> list[dict[str, Any]]:
    """One row per finished cell of ``out`` (seed-major), read from its results.json."""
    rows = []
    for seed in seeds:
        for path in sorted((out / CELLS_DIR / str(seed)).glob("*/*/results.json")):
            document = json.loads(path.read_text(encoding="utf-8"))
            (run,) = document["runs"]
            rows.append(
                {
                    "seed": seed,
                    "request": path.parent.parent.name,
                    "method": run["method"],
                    "scenario": run["scenario"],
                    "seconds": run["seconds"],
                    "metrics": run["metrics"],
                }
            )
    return rows


def acceptance(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's checks on the class-5 request, per seed that has both contrastive and
    retrain rows.

    Returns:
        Per seed: the numbers checked, each check's verdict and ``passed`` (all of them).
    """
    found: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row["request"] == CLASS_REQUEST and row["method"] in ("contrastive", "retrain"):
            found.setdefault(row["seed"], {})[row["method"]] = row
    checks = []
    for seed, methods in sorted(found.items()):
        if set(methods) != {"contrastive", "retrain"}:
            continue
        ours, retrain = methods["contrastive"], methods["retrain"]
        metrics = ours["metrics"]
        gap = metrics["retain_test_acc"] - retrain["metrics"]["retain_test_acc"]
        ratio = ours["seconds"] / retrain["seconds"]
        verdicts = {
            "forget_train": metrics["forget_train_acc"] <= FORGET_LIMIT,
            "forget_test": metrics["forget_test_acc"] <= FORGET_LIMIT,
            "retain_test_gap": abs(gap) <= RETAIN_GAP,
            "time_ratio": ratio <= TIME_RATIO,
        }
        checks.append(
            {
                "seed": seed,
                "forget_train_acc": metrics["forget_train_acc"],
                "forget_test_acc": metrics["forget_test_acc"],
                "retain_test_gap": gap,
                "time_ratio": ratio,
                "verdicts": verdicts,
                "passed": all(verdicts.values()),
            }
        )
    return checks


def sample_acceptance(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The sample scenario's bounds on the 500-sample request: means over the seeds that have
    both contrastive and retrain rows, and each bound's verdict; None without such a seed.

    Returns:
        ``seeds``, ``contrastive`` and ``retrain`` (metric -> mean, with ``x_retrain``: the mean
        of the per-seed ratios of seconds), ``verdicts`` (bound -> passed) and ``passed``.
    """
    found: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row["request"] == SAMPLE_REQUEST and row["method"] in ("contrastive", "retrain"):
            found.setdefault(row["seed"], {})[row["method"]] = row
    pairs = [methods for _, methods in sorted(found.items()) if len(methods) == 2]
    if not pairs:
        return None

    def mean(method: str, key: str) -> float:
        return statistics.fmean(float(pair[method]["metrics"][key]) for pair in pairs)

    ours = {key: mean("contrastive", key) for key in SAMPLE_BOUNDS}
    retrain = {key: mean("retrain", key) for key in SAMPLE_BOUNDS}
    ours["x_retrain"] = statistics.fmean(
        pair["contrastive"]["seconds"] / pair["retrain"]["seconds"] for pair in pairs
    )
    verdicts = {key: abs(ours[key] - retrain[key]) <= bound for key, bound in SAMPLE_BOUNDS.items()}
    verdicts["x_retrain"] = ours["x_retrain"] <= SAMPLE_TIME_RATIO
    return {
        "seeds": [pair["contrastive"]["seed"] for pair in pairs],
        "contrastive": ours,
        "retrain": retrain,
        "verdicts": verdicts,
        "passed": all(verdicts.values()),
    }


def machine() -> str:
    """CPU or GPU, cores and threads, in one line."""
    if torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        device = f"no GPU, {platform.processor() or platform.machine()}"
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {device}; "
        f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )


def sample_lines(check: dict[str, Any] | None) -> list[str]:
    """The README's section on the 500-sample request (empty without its cells)."""
    if check is None:
        return []
    labels = {
        "forget_train_acc": ("forget train accuracy, %", "points", 100, 2),
        "test_acc": ("test accuracy, %", "points", 100, 2),
        "mia_forget_member_rate": ("forget member rate (a)", "", 1, 3),
        "mia_forget_vs_test_auc": ("forget-vs-test AUC (c)", "", 1, 3),
    }
    lines = [
        f"## Acceptance (500 samples, mean over seeds {', '.join(map(str, check['seeds']))})",
        "",
        "| metric | contrastive | retrain | bound on the difference | passed |",
        "|---|---|---|---|---|",
    ]
    for key, (label, unit, scale, digits) in labels.items():
        ours, theirs = scale * check["contrastive"][key], scale * check["retrain"][key]
        bound = f"{scale * SAMPLE_BOUNDS[key]:g} {unit}".strip()
        lines.append(
            f"| {label} | {ours:.{digits}f} | {theirs:.{digits}f} | {bound} | "
            f"{'yes' if check['verdicts'][key] else 'NO'} |"
        )
    lines.append(
        f"| seconds / retrain's | {check['contrastive']['x_retrain']:.3f} | 1 | "
        f"<= {SAMPLE_TIME_RATIO:g} | {'yes' if check['verdicts']['x_retrain'] else 'NO'} |"
    )
    verdict = "passes" if check["passed"] else "FAILS"
    lines += ["", f"The sample scenario's bounds: **{verdict}**.", ""]
    return lines


def readme(command: str, seconds: float, rows: list[dict[str, Any]], table: str) -> str:
    """README.md of the results directory."""
    try:
        timm_version = metadata.version("timm")
    except metadata.PackageNotFoundError:
        timm_version = "not installed"
    found = {**versions(), "timm": timm_version}
    checks = acceptance(rows)
    lines = [
        "# Contrastive unlearning on a small ViT (timm) trained from scratch, Fashion-MNIST",
        "",
        f"```bash\n{command}\n```",
        "",
        f"- Machine: {machine()}.",
        f"- Versions: {', '.join(f'{key} {value}' for key, value in found.items())}.",
        f"- Wall time of this invocation: {seconds:,.0f} s = {seconds / 60:.1f} min "
        "(cells finished by an earlier invocation are not recomputed).",
        "- Setting: bench preset `vit-fashion-mnist` and train recipe `fashion-mnist-vit` "
        "(src/conun/configs/): their comments say where each number comes from.",
        "",
        "## Acceptance (class 5, per seed)",
        "",
        "| seed | forget train | forget test | retain test - retrain's | x retrain | passed |",
        "|---|---|---|---|---|---|",
    ]
    for check in checks:
        failed = [name for name, ok in check["verdicts"].items() if not ok]
        lines.append(
            f"| {check['seed']} | {100 * check['forget_train_acc']:.2f} % | "
            f"{100 * check['forget_test_acc']:.2f} % | "
            f"{100 * check['retain_test_gap']:+.2f} points | {check['time_ratio']:.3f} | "
            f"{'NO: ' + ', '.join(failed) if failed else 'yes'} |"
        )
    verdict = "every seed passes" if checks and all(c["passed"] for c in checks) else "FAILS"
    lines += [
        "",
        f"Checks: forget train and forget test <= {100 * FORGET_LIMIT:g}%, retained-class test "
        f"within {100 * RETAIN_GAP:g} points of retrain's, contrastive <= {TIME_RATIO:g} x "
        f"retrain's seconds: **{verdict}**.",
        "",
        *sample_lines(sample_acceptance(rows)),
        "## Table (from the cells)",
        "",
        table,
    ]
    return "\n".join(lines) + "\n"


def time_epoch(samples: int) -> None:
    """Time one training epoch on ``samples`` samples; print the grid's projected cost."""
    recipe = build_train_config("fashion-mnist", preset="fashion-mnist-vit")
    config = build_train_config(
        "fashion-mnist", [{"max_train_samples": samples, "epochs": 1}], preset="fashion-mnist-vit"
    )
    trained = train_original(config, None, quiet=True)
    seconds = trained.results.runs[0].seconds
    fit = len(trained.data.train) - len(trained.meta.validation)
    per_image = seconds / fit
    total = min(recipe.max_train_samples or 60_000, 60_000)
    per_training = per_image * round(total * (1 - recipe.validation_fraction)) * recipe.epochs
    plan = plan_bench(load_bench_preset(PRESET))
    trainings = len(plan.seeds) * (1 + len(plan.requests))  # each seed: original, a retrain each
    print(f"{machine()}")
    print(f"one epoch on {fit} images: {seconds:.1f} s ({1000 * per_image:.1f} ms per image)")
    print(
        f"recipe ({total} samples, {recipe.epochs} epochs): {per_training / 60:.0f} min per "
        f"training; {trainings} trainings in the grid: {trainings * per_training / 3600:.1f} h "
        "before the unlearning methods and audits"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("experiments/results/vit-fashion-mnist"))
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--time-epoch",
        type=int,
        metavar="N",
        nargs="?",
        const=6000,
        help="only time one epoch on an N-sample subset (default 6000) and print the estimate",
    )
    args = parser.parse_args()
    if args.time_epoch is not None:
        time_epoch(args.time_epoch)
        return
    command = "python " + " ".join(sys.argv)
    started = time.perf_counter()
    run_bench(PRESET, out=args.out, seeds=args.seeds, quiet=args.quiet)
    seconds = time.perf_counter() - started
    rows = cell_rows(args.out, args.seeds)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    table = (args.out / "table.md").read_text(encoding="utf-8")
    (args.out / "README.md").write_text(readme(command, seconds, rows, table), encoding="utf-8")
    for check in acceptance(rows):
        print(f"seed {check['seed']}: {'passed' if check['passed'] else check['verdicts']}")
    sample = sample_acceptance(rows)
    if sample is not None:
        print(f"500 samples: {'passed' if sample['passed'] else sample['verdicts']}")


if __name__ == "__main__":
    main()
