"""U-LiRA (Hayes et al. 2024) of contrastive's sample default on Fashion-MNIST, next to the
original's: K shadow originals trained on random halves of train, each unlearned by the method on
the targets it saw, per seed. Retrain's U-LiRA is the committed one of
``experiments/results/fashion-mnist-privacy`` (same seeds, K and targets: the shadows are seeded
by the seed), and is 0.5 by construction up to noise.

    python experiments/ulira_sample_default.py --seeds 0 1 2 --shadows 8 --targets 100 \
        --out experiments/results/sample-unlearning-ulira
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import yaml

from conun.config import build_train_config
from conun.reproducibility import versions
from conun.workflows.ulira_shadows import ulira_audit

METHODS = ("original", "contrastive")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--shadows", type=int, default=8, help="U-LiRA's K")
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path("runs/ulira-cache"))
    parser.add_argument("--out", type=Path, default=Path("runs/sample-unlearning-ulira"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of contrastive's on top of its sample defaults (YAML value), e.g. "
        "match_by=neighbours; repeatable",
    )
    parser.add_argument("--label", default="", help="suffix of the output files' names")
    args = parser.parse_args()
    options = {
        key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.option)
    }
    layers = {"contrastive": {"options": options}} if options else None
    suffix = "-".join(args.methods) + (f"-{args.label}" if args.label else "")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    found: dict[int, dict[str, dict[str, float]]] = {}
    for seed in args.seeds:
        report = ulira_audit(
            build_train_config("fashion-mnist", [{"seed": seed}]),
            args.methods,
            num_shadows=args.shadows,
            num_targets=args.targets,
            seed=seed,
            jobs=args.jobs,
            cache_dir=args.cache,
            unlearn_layers=layers,
            quiet=True,
        )
        found[seed] = report
        (args.out / f"ulira-seed{seed}-{suffix}.json").write_text(
            json.dumps(report, indent=2) + "\n"
        )
        print(seed, report, flush=True)
    lines = [
        "# U-LiRA of contrastive's sample default"
        + (f" with {', '.join(args.option)}" if args.option else "")
        + " — Fashion-MNIST, small_cnn",
        "",
        f"Command: `python experiments/ulira_sample_default.py --seeds "
        f"{' '.join(map(str, args.seeds))} --shadows {args.shadows} --targets {args.targets}"
        f"{''.join(f' --option {item}' for item in args.option)}"
        f"{f' --label {args.label}' if args.label else ''}` "
        f"({(time.perf_counter() - started) / 60:.1f} min; {platform.machine()}, 2 cores, no GPU; "
        f"{versions()}).",
        "",
        "| seed | method | U-LiRA AUC (0.5 ideal) | U-LiRA acc |",
        "|---|---|---|---|",
    ]
    for seed, report in found.items():
        for method, metrics in report.items():
            lines.append(
                f"| {seed} | {method} | {metrics['auc']:.3f} | {metrics['accuracy']:.3f} |"
            )
    for method in args.methods:
        values = [report[method]["auc"] for report in found.values()]
        spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        lines.append(f"\nMean U-LiRA AUC, {method}: {statistics.mean(values):.3f}{spread}.")
    (args.out / f"README-{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
