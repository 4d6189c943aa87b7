"""Issue #5's table: membership-inference audits of sample unlearning on Fashion-MNIST.

small_cnn trained in the paper's regime, 500 random training samples forgotten. The population
attacks (a)-(c) and the distances to retrain come from the audited cells of
``conun bench fashion-mnist`` (original, retrain, contrastive, finetune, neggrad of its
``samples500`` request, one row per seed found); this script adds U-LiRA (K shadow originals on
random halves, each unlearned by the method on the targets it saw) for ``--ulira-seeds`` and
writes the combined table.

    conun bench fashion-mnist --seeds 0 --out experiments/results/fashion-mnist
    python experiments/privacy_fashion_mnist.py --bench experiments/results/fashion-mnist --ulira-seeds 0 --shadows 8

U-LiRA's trained shadows are cached in ``runs/ulira-cache`` (shared by the methods). With
``--executor ray`` the shadows are Ray tasks (``pip install 'conun[ray]'``; on a cluster the
cache and the data must be on storage every worker sees), with the same cache and numbers:

    python experiments/privacy_fashion_mnist.py --bench experiments/results/fashion-mnist --ulira-seeds 0 --shadows 8 --executor ray --jobs 8
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from conun.config import build_train_config
from conun.evaluation.distances import DISTANCE_COLUMNS
from conun.evaluation.privacy import AUDIT_COLUMNS
from conun.reproducibility import versions
from conun.workflows.ulira_shadows import SHADOW_EXECUTORS, ulira_audit

METHODS = ("original", "retrain", "contrastive", "finetune", "neggrad")
REQUEST = "samples500"  # the request's name in the fashion-mnist bench preset

# Columns of the summary table: key -> short header. Meanings and directions come from the
# library's own column dictionaries, so the README cannot drift from results.md.
COLUMNS = {
    "forget_train_acc": "forget acc (→ retrain)",
    "test_acc": "test acc (↑)",
    "mia_forget_member_rate": "(a) forget member rate (→ retrain)",
    "mia_retain_member_rate": "(a) retain member rate (→ retrain)",
    "mia_auc": "(a) AUC (→ retrain; 0.5 = no leak)",
    "mia_efficacy": "(b) MIA-efficacy (→ retrain)",
    "mia_forget_vs_test_accuracy": "(c) forget-vs-test acc (0.5 ideal)",
    "mia_forget_vs_test_auc": "(c) forget-vs-test AUC (0.5 ideal)",
    "avg_gap": "Avg. Gap (↓, 0 = retrain)",
}
ACCURACY_MEANINGS = {
    "forget_train_acc": ("accuracy on the 500 forgotten samples", "closer to retrain"),
    "test_acc": ("test accuracy", "higher; close to retrain"),
}
ULIRA_MEANING = (
    "U-LiRA: per-example likelihood-ratio attack, unlearned vs never seen (Hayes et al. 2024)",
    "0.5 is ideal (retrain's by construction); higher = the unlearned examples are recognisable",
)


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def population_audits(bench: Path) -> dict[int, dict[str, dict[str, Any]]]:
    """seed -> method -> that cell's run (metrics with the audit) for the sample request."""
    found: dict[int, dict[str, dict[str, Any]]] = {}
    for seed_dir in sorted((bench / "cells").iterdir()):
        for method in METHODS:
            path = seed_dir / REQUEST / method / "results.json"
            if path.exists():
                (run,) = json.loads(path.read_text())["runs"]
                found.setdefault(int(seed_dir.name), {})[method] = run
    if not found:
        raise SystemExit(f"no {REQUEST} cell in {bench}/cells: run `conun bench fashion-mnist`")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bench", type=Path, default=Path("experiments/results/fashion-mnist"))
    parser.add_argument("--ulira-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--shadows", type=int, default=8, help="U-LiRA's K")
    parser.add_argument("--targets", type=int, default=100, help="U-LiRA's target examples")
    parser.add_argument(
        "--jobs", type=int, default=2, help="shadow worker processes (Ray: tasks at once)"
    )
    parser.add_argument(
        "--executor",
        choices=SHADOW_EXECUTORS,
        default="local",
        help="local: a process pool here; ray: Ray tasks (one torch thread each)",
    )
    parser.add_argument("--gpus-per-job", type=float, default=0.0, help="ray: GPUs per shadow task")
    parser.add_argument("--cache", type=Path, default=Path("runs/ulira-cache"))
    parser.add_argument(
        "--out", type=Path, default=Path("experiments/results/fashion-mnist-privacy")
    )
    parser.add_argument(
        "--reuse-ulira",
        action="store_true",
        help="read U-LiRA's numbers from OUT/ulira-seed<S>.json instead of recomputing them",
    )
    parser.add_argument(
        "--recompute",
        nargs="+",
        choices=METHODS,
        default=None,
        metavar="METHOD",
        help="with --reuse-ulira: recompute U-LiRA for these methods only (e.g. after one "
        "method's defaults changed) and keep the others' saved numbers",
    )
    args = parser.parse_args()
    if args.recompute and not args.reuse_ulira:
        parser.error("--recompute needs --reuse-ulira (the others' numbers are read back)")
    started = time.perf_counter()

    population = population_audits(args.bench)
    ulira: dict[int, dict[str, dict[str, float]]] = {}
    for seed in args.ulira_seeds:
        saved = args.out / f"ulira-seed{seed}.json"
        if args.reuse_ulira:
            ulira[seed] = json.loads(saved.read_text())
            if not args.recompute:
                continue
        train_config = build_train_config("fashion-mnist", [{"seed": seed}])
        recomputed = ulira_audit(
            train_config,
            args.recompute or METHODS,
            num_shadows=args.shadows,
            num_targets=args.targets,
            seed=seed,
            jobs=args.jobs,
            cache_dir=args.cache,
            quiet=True,
            executor=args.executor,
            gpus_per_job=args.gpus_per_job,
        )
        ulira[seed] = {**ulira.get(seed, {}), **recomputed}
        print(f"seed {seed} U-LiRA: {ulira[seed]}", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"ulira-seed{seed}.json").write_text(json.dumps(ulira[seed], indent=2) + "\n")
    write_readme(args, population, ulira, time.perf_counter() - started)


def write_readme(
    args: argparse.Namespace,
    population: dict[int, dict[str, dict[str, Any]]],
    ulira: dict[int, dict[str, dict[str, float]]],
    seconds: float,
) -> None:
    meanings = {**ACCURACY_MEANINGS, **AUDIT_COLUMNS, **DISTANCE_COLUMNS}
    command = (
        f"python experiments/privacy_fashion_mnist.py --bench {args.bench} "
        f"--ulira-seeds {' '.join(map(str, args.ulira_seeds))} --shadows {args.shadows} "
        f"--targets {args.targets}"
        + (" --reuse-ulira" if args.reuse_ulira else "")
        + (f" --recompute {' '.join(args.recompute)}" if args.recompute else "")
    )
    lines = [
        "# Privacy audit of sample unlearning — Fashion-MNIST, small_cnn, 500 random samples",
        "",
        f"Command: `{command}`.",
        f"Machine: {platform.machine()}, 2 cores, no GPU; versions {versions()}.",
        (
            "Wall time: not measured here: U-LiRA's numbers were read back from "
            "`ulira-seed<S>.json` (`--reuse-ulira`; each method's `seconds` are in them)."
            if args.reuse_ulira and not args.recompute
            else f"Wall time: {seconds / 60:.1f} min"
            + (
                f" (U-LiRA recomputed for {', '.join(args.recompute)}; the other methods' "
                "read back from `ulira-seed<S>.json`, computed before)."
                if args.recompute
                else "."
            )
        )
        + " Original: paper regime (no augmentation, >= 99% train",
        f"accuracy). Population attacks: the audited cells of `{args.bench}` (every number in",
        "their results.json).",
        "",
        "How much the population attacks see on originals that overfit less: `low-overfit.md`.",
        "",
        "Columns (fractions):",
        "",
    ]
    for key, header in COLUMNS.items():
        meaning, direction = meanings[key]
        lines.append(f"- **{header}** (`{key}`): {meaning}. Good: {direction}.")
    lines += [
        f"- **U-LiRA AUC / acc**: {ULIRA_MEANING[0]}. Good: {ULIRA_MEANING[1]}.",
        "",
        "In the headers: → retrain = the closer to the retrained model's value the better; "
        "↑ / ↓ = higher / lower is better.",
        "",
    ]
    header = [
        "seed",
        "method",
        *COLUMNS.values(),
        "U-LiRA AUC (0.5 ideal)",
        "U-LiRA acc (0.5 ideal)",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for seed, runs in population.items():
        for run in runs.values():
            metrics = run["metrics"]
            attack = ulira.get(seed, {}).get(run["method"], {})
            cells = [fmt(metrics.get(key)) for key in COLUMNS]
            cells += [fmt(attack.get("auc")), fmt(attack.get("accuracy"))]
            lines.append(f"| {seed} | {run['method']} | " + " | ".join(cells) + " |")
    if ulira:
        lines += [
            "",
            f"U-LiRA: K = {args.shadows} shadows, {args.targets} target examples, seeds "
            f"{', '.join(map(str, ulira))}; raw numbers (TPR at low FPR, seconds) in "
            "`ulira-seed<S>.json`.",
        ]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
