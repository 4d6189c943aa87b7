"""Contrastive unlearning of class 5 on the ViT of the ``vit-fashion-mnist`` bench preset:
settings compared on the validation split (never the test set).

The preset's first class setting (SGD at lr 1e-3, the class rule at 1%, checked after each pass)
forgot class 5 on every seed of the first grid run, but seed 1 needed three passes where seeds 0
and 2 needed two, and lost 3.9 points of retained-class test accuracy against retrain (the
issue's bound is 1.5) at 0.147 of retraining's time (bound 0.1). For each setting (layers over
the grid's config of the class request's contrastive cell: ``preset`` is that config as it is)
this runs the grid's class request on the grid's originals and reports, on the validation split
carved from train before each original was trained: the retained classes' accuracy against the
grid's retrained model's, class 5's accuracy (validation and training samples), whether the
rule stopped the run, the passes, and the seconds against retrain's.

    python experiments/vit_class_study.py --bench /tmp/vit-fm --seeds 0 1 2 \
        --variant 'preset' --variant 'in-pass checks: stopping.check_every=auto' \
        --out experiments/results/vit-fashion-mnist/class-study.md

``--bench`` is the grid's output directory with each seed's original and its finished
``class5/retrain`` cell (whose weights the grid keeps): ``conun bench`` of the preset, or of a
copy of it that keeps the class request's original and retrain only.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from conun.bench import load_bench_preset
from conun.bench.preset import BenchPreset, RequestSpec
from conun.config import UnlearnConfig
from conun.data.splits import Scenario
from conun.evaluation.accuracy import accuracy
from conun.reproducibility import versions
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.requests import ForgetSpec
from vit_sample_lr_study import grid_seed, unlearn, write_report  # the grid's ViT, on validation

PRESET = "vit-fashion-mnist"
FORGOTTEN = 5


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``'label: a.b=1; c=x'`` -> ``("label", ["a.b=1", "c=x"])`` (conun's ``--set`` syntax)."""
    label, _, body = text.partition(":")
    return label.strip(), [item.strip() for item in body.split(";") if item.strip()]


def grid_config(
    preset: BenchPreset, request: RequestSpec, scenario: Scenario, overrides: list[str]
) -> UnlearnConfig:
    """The config of ``request``'s contrastive cell in the grid (the preset's layers for it),
    then ``overrides`` (conun's ``--set`` syntax)."""
    return resolve_unlearn_config(
        "contrastive",
        scenario,
        dataset=preset.dataset,
        layers=[
            (f"bench preset {PRESET}: unlearn", preset.unlearn),
            (
                f"bench preset {PRESET}: unlearn_per_method.contrastive",
                preset.unlearn_per_method.get("contrastive", {}),
            ),
            (
                f"bench preset {PRESET}: requests.{request.label}.unlearn_per_method",
                request.unlearn_per_method.get("contrastive", {}),
            ),
        ],
        overrides=overrides,
    ).config


def study(bench: Path, seed: int, variants: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    """One row for retrain, one for the original and one per variant, on ``seed``'s original."""
    preset = load_bench_preset(PRESET)
    grid = grid_seed(bench, seed, "class5")
    labels, validation = grid.data.train.labels, grid.validation
    retained_val = grid.data.train.subset(validation[labels[validation] != FORGOTTEN])
    forgotten_val = grid.data.train.subset(validation[labels[validation] == FORGOTTEN])
    retrain_seconds = grid.retrain_seconds

    def measured(unlearned: torch.nn.Module) -> dict[str, float]:
        return {
            "retained_val_acc": accuracy(unlearned, retained_val, batch_size=256),
            "forget_val_acc": accuracy(unlearned, forgotten_val, batch_size=256),
        }

    rows: list[dict[str, Any]] = [
        {
            "seed": seed,
            "setting": "retrain",
            "seconds": retrain_seconds,
            **measured(grid.retrain_model),
        },
        {"seed": seed, "setting": "original", **measured(grid.model)},
    ]
    (request,) = (r for r in preset.requests if r.classes == [FORGOTTEN])
    for label, overrides in variants:
        config = grid_config(preset, request, "class", [f"seed={seed}", *overrides])
        run, unlearned, _ = unlearn(grid.original, ForgetSpec(classes=(FORGOTTEN,)), config)
        rows.append(
            {
                "seed": seed,
                "setting": label,
                **measured(unlearned),
                "forget_train_acc": run["metrics"]["forget_train_acc"],
                "stopped_by": run.get("stopped_by"),
                "passes": run.get("passes"),
                "seconds": run["seconds"],
                "x_retrain": run["seconds"] / retrain_seconds,
            }
        )
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict[str, Any]], settings: list[str]) -> str:
    """Every run, then the mean over seeds of each setting."""
    retrain = {row["seed"]: row for row in rows if row["setting"] == "retrain"}
    lines = [
        "| seed | setting | retained val % | - retrain's | class 5 val % | class 5 train % | "
        "stopped by | passes | x retrain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        gap = 100 * (row["retained_val_acc"] - retrain[row["seed"]]["retained_val_acc"])
        train = row.get("forget_train_acc")
        ratio = row.get("x_retrain")
        lines.append(
            f"| {row['seed']} | {row['setting']} | {100 * row['retained_val_acc']:.2f} | "
            f"{gap:+.2f} | {100 * row['forget_val_acc']:.2f} | "
            f"{'–' if train is None else f'{100 * train:.2f}'} | {row.get('stopped_by') or '–'} | "
            f"{row.get('passes', '–')} | {'–' if ratio is None else f'{ratio:.3f}'} |"
        )
    lines += [
        "",
        "Mean over seeds (worst seed in brackets):",
        "",
        "| setting | retained val - retrain's | class 5 train % | x retrain |",
        "|---|---|---|---|",
    ]
    for setting in settings:
        mine = [row for row in rows if row["setting"] == setting]
        gaps = [
            100 * (row["retained_val_acc"] - retrain[row["seed"]]["retained_val_acc"])
            for row in mine
        ]
        forget = [100 * row["forget_train_acc"] for row in mine]
        ratios = [row["x_retrain"] for row in mine]
        lines.append(
            f"| {setting} | {statistics.mean(gaps):+.2f} ({min(gaps):+.2f}) | "
            f"{statistics.mean(forget):.2f} ({max(forget):.2f}) | "
            f"{statistics.mean(ratios):.3f} ({max(ratios):.3f}) |"
        )
    return "\n".join(lines)


def variant_study_main(
    description: str,
    script: str,
    title: str,
    study: Callable[[Path, int, list[tuple[str, list[str]]]], list[dict[str, Any]]],
    table: Callable[[list[dict[str, Any]], list[str]], str],
) -> None:
    """The command line of a ViT validation study of settings (this one and
    ``vit_sample_study.py``): ``--bench``, ``--seeds``, ``--variant`` (repeatable), ``--out``;
    runs ``study`` per seed and writes ``table`` under ``title`` with the command."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variant",
        action="append",
        required=True,
        help="'label: key=value; key=value' over the preset's contrastive config ('preset': none)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    variants = [parse_variant(text) for text in args.variant]
    started = time.perf_counter()
    rows = [row for seed in args.seeds for row in study(args.bench, seed, variants)]
    settings = "\n".join(
        f"- `{label}`: {', '.join(f'`{o}`' for o in overrides) or 'the preset as it is'}"
        for label, overrides in variants
    )
    variant_args = " ".join(f"--variant '{text}'" for text in args.variant)
    text = "\n".join(
        [
            title,
            "",
            f"Command: `python experiments/{script}.py --bench BENCH --seeds "
            f"{' '.join(map(str, args.seeds))} {variant_args}` "
            f"({time.perf_counter() - started:.0f} s; {platform.machine()}, "
            f"{torch.get_num_threads()} threads; {versions()}).",
            "",
            "Settings (layers over the preset's contrastive config):",
            "",
            settings,
            "",
            table(rows, [label for label, _ in variants]),
            "",
        ]
    )
    write_report(text, rows, args.out)


def main() -> None:
    variant_study_main(
        __doc__ or "",
        "vit_class_study",
        "# Contrastive unlearning of class 5 on the ViT: settings (validation split)",
        study,
        table,
    )


if __name__ == "__main__":
    main()
