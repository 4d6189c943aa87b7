"""Where contrastive unlearning's U-LiRA gap comes from, per example (issue #13: U-LiRA within
0.04 of retrain's), and which settings of the sample default move it.

U-LiRA (Hayes et al. 2024) fits, for every target example, one Gaussian to its logit-scaled
confidence under the shadows that *unlearned* it and one under the shadows that never saw it; a
method leaves no trace when the two coincide for every example, not only on average. Each shadow
of conun's audit unlearns the targets it saw (about T/2 of them: a request of ~50 samples), with
the method's sample defaults and everything outside its half as held-out data. This script runs
the audit of ``original`` (the per-example membership signal before unlearning) and of each
contrastive setting on the same cached shadows, keeps every shadow's per-target scores, and
reports, beside the attack's AUC:

* ``bias``: mean over targets of ``mu_unlearned(x) - mu_never_seen(x)`` (logit-scaled
  confidence; > 0: the forgotten examples stay more confident than unseen ones);
* ``|bias|``: mean over targets of ``|mu_unlearned(x) - mu_never_seen(x)|`` (two-sided: what a
  per-example attack reads even when the average is right);
* ``kept``: the slope of ``mu_unlearned(x) - mu_never_seen(x)`` on the original's memorisation
  ``mu_member(x) - mu_never_seen(x)`` across targets (0: the memorisation is gone; 1: untouched);
* ``sd ratio``: median over targets of sd_unlearned(x) / sd_never_seen(x);
* the unlearned shadows' forget/test accuracy and unlearning seconds.

Targets come from the training pool; the held-out data of every rule is the shadow's never-seen
half of the training pool: nothing here looks at the test set.

    python experiments/ulira_sample_study.py --seeds 0 1 2 --shadows 8 --targets 100 \
        --cache /tmp/ulira-cache --out experiments/results/sample-unlearning-ulira-study \
        --variant 'default' --variant 'confidence 0.2: stopping.confidence=0.2'
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from conun.config import build_train_config
from conun.evaluation.ulira import (
    ShadowResult,
    load_shadow_results,
    save_shadow_results,
    ulira_attack,
)
from conun.reproducibility import versions
from conun.workflows.ulira_shadows import run_ulira


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``'label: a.b=1, c=x'`` -> ``(label, {"a": {"b": 1}, "c": "x"})`` (values as YAML; a
    comma inside brackets belongs to a list value: ``'l: options.frozen_modules=[a, b]'``)."""
    label, _, body = text.partition(":")
    layer: dict[str, Any] = {}
    items = re.split(r",(?![^\[]*\])", body)
    for item in filter(None, (part.strip() for part in items)):
        key, _, value = item.partition("=")
        node = layer
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = yaml.safe_load(value)
    return label.strip(), layer


def per_example(results: list[ShadowResult]) -> dict[str, np.ndarray]:
    """``(T,)`` mean and sd of each target's score over the shadows that saw it and over those
    that did not (NaN where fewer than two shadows of a kind)."""
    scores = np.stack([r.scores for r in results])  # (K, T)
    seen = np.stack([r.seen for r in results])
    out: dict[str, np.ndarray] = {}
    for name, mask in (("in", seen), ("out", ~seen)):
        count = mask.sum(axis=0)
        total = np.where(mask, scores, 0.0).sum(axis=0)
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        square = np.where(mask, (scores - mean) ** 2, 0.0).sum(axis=0)
        out[f"mu_{name}"] = mean
        out[f"sd_{name}"] = np.where(count > 1, np.sqrt(square / np.maximum(count - 1, 1)), np.nan)
    return out


def diagnostics(results: list[ShadowResult], original: list[ShadowResult]) -> dict[str, float]:
    """The per-example numbers of the module docstring, for one seed."""
    now, before = per_example(results), per_example(original)
    residual = now["mu_in"] - now["mu_out"]
    memorised = before["mu_in"] - before["mu_out"]
    ok = np.isfinite(residual) & np.isfinite(memorised)
    slope = float(np.polyfit(memorised[ok], residual[ok], 1)[0]) if ok.sum() > 2 else float("nan")
    ratio = now["sd_in"] / now["sd_out"]
    seen = [r for r in results if r.metrics]
    metric = lambda key: statistics.mean(  # noqa: E731
        float(r.metrics[key]) for r in seen if r.metrics.get(key) is not None
    )
    return {
        **{key: float(value) for key, value in ulira_attack(results).items()},
        "bias": float(np.nanmean(residual)),
        "abs_bias": float(np.nanmean(np.abs(residual))),
        "kept": slope,
        "sd_ratio": float(np.nanmedian(ratio)),
        "forget_train_acc": 100 * metric("forget_train_acc") if seen else float("nan"),
        "test_acc": 100 * metric("test_acc") if seen else float("nan"),
        "unlearn_seconds": statistics.mean(r.unlearn_seconds for r in seen) if seen else 0.0,
    }


def audit(
    seed: int, method: str, layer: dict[str, Any], args: argparse.Namespace, path: Path
) -> list[ShadowResult]:
    """The shadows' results of one (seed, setting), read back when ``path`` exists."""
    if path.exists():
        return load_shadow_results(path)
    results = run_ulira(
        build_train_config("fashion-mnist", [{"seed": seed}]),
        method,
        num_shadows=args.shadows,
        num_targets=args.targets,
        seed=seed,
        unlearn_layer=layer or None,
        cache_dir=args.cache,
        quiet=True,
    )
    save_shadow_results(path, results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--shadows", type=int, default=8, help="U-LiRA's K")
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--cache", type=Path, default=Path("runs/ulira-cache"))
    parser.add_argument("--out", type=Path, default=Path("runs/sample-unlearning-ulira-study"))
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="'LABEL: KEY=VALUE, ...'",
        help="a contrastive setting over its sample defaults (dotted config keys, YAML "
        "values), e.g. 'calibration 1: options.lambda_calibration=1'; repeatable; "
        "'default' alone = the shipped default",
    )
    args = parser.parse_args()
    variants = dict(parse_variant(text) for text in (args.variant or ["default"]))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for seed in args.seeds:
        stem = f"seed{seed}-K{args.shadows}-T{args.targets}"
        original = audit(seed, "original", {}, args, args.out / f"{stem}-original.json")
        rows.setdefault("original", {})[seed] = diagnostics(original, original)
        for label, layer in variants.items():
            slug = label.replace(" ", "_").replace("/", "-")
            results = audit(seed, "contrastive", layer, args, args.out / f"{stem}-{slug}.json")
            rows.setdefault(label, {})[seed] = diagnostics(results, original)
            print(seed, label, json.dumps(rows[label][seed]), flush=True)
    (args.out / "study.json").write_text(
        json.dumps({"variants": variants, "rows": rows}, indent=2) + "\n"
    )
    columns = (
        ("auc", "U-LiRA AUC", 3),
        ("bias", "bias", 2),
        ("abs_bias", "|bias|", 2),
        ("kept", "kept", 2),
        ("sd_ratio", "sd ratio", 2),
        ("forget_train_acc", "forget acc %", 1),
        ("test_acc", "test acc %", 1),
        ("unlearn_seconds", "s / shadow", 2),
    )
    command = " ".join(
        [f"python experiments/ulira_sample_study.py --seeds {' '.join(map(str, args.seeds))}"]
        + [f"--shadows {args.shadows} --targets {args.targets}"]
        + [f"--variant '{text}'" for text in args.variant]
    )
    lines = [
        "# U-LiRA of contrastive's sample settings, per example — Fashion-MNIST, small_cnn",
        "",
        f"Command: `{command}` ({(time.perf_counter() - started) / 60:.1f} min this invocation, "
        "shadows' results already in OUT read back; "
        f"{platform.machine()}, 2 cores, no GPU; {versions()}).",
        "",
        "Mean ± std over seeds; settings are layers over contrastive's sample defaults:",
        "",
    ]
    lines += [f"- `{label}`: `{json.dumps(layer)}`" for label, layer in variants.items()]
    lines += ["", "| setting | " + " | ".join(title for _, title, _ in columns) + " |"]
    lines += ["|---|" + "---|" * len(columns)]
    for label, per_seed in rows.items():
        cells = []
        for key, _, digits in columns:
            values = [row[key] for row in per_seed.values()]
            spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.{digits}f}{spread}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
