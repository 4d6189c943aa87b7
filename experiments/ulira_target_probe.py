"""Can one model estimate how confident a model that never saw an example would be? (issue #13)

Contrastive unlearning matches each forget sample to a held-out quantile by its rank in the batch
on its *current* confidence. A per-example attack (U-LiRA) compares each example's confidence
with the one it has under models that never saw it, so the best per-sample target is the
statistic of the member model that ranks examples most like the never-seen models do. This probe
reads the cached trained shadows of a U-LiRA audit (K models, each on a random half of the
training pool) and, for N pool examples, compares a member model's logit-scaled confidence on
transformed copies of the example (1- and 2-pixel shifts averaged over 4 directions, Gaussian
noise, a horizontal flip) with the mean clean confidence of the shadows that never saw it.

    python experiments/ulira_target_probe.py --seed 0 --examples 3000 --cache /tmp/ulira-cache

Reads the shadows only (run ``experiments/ulira_sample_study.py`` or any U-LiRA audit with the
same seed, K and cache first); nothing is trained.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor

from conun.config import TrainConfig, build_train_config
from conun.evaluation.ulira import logit_scaled_confidence
from conun.workflows.inputs import load_training_data

# _train_shadow loads a trained shadow from the audit's cache (there is no public loader: the
# audit itself never needs the trained, not-yet-unlearned model outside a job).
from conun.workflows.ulira_shadows import _train_shadow, plan_shadow_jobs


def shifts(pixels: int) -> Callable[[Tensor], list[Tensor]]:
    def shifted(x: Tensor) -> list[Tensor]:
        moves = ((pixels, 0), (-pixels, 0), (0, pixels), (0, -pixels))
        return [torch.roll(x, shifts=(dy, dx), dims=(2, 3)) for dx, dy in moves]

    return shifted


def masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(N,)`` mean over the rows where ``mask`` (NaN where none)."""
    count = mask.sum(axis=0)
    return np.where(count > 0, (values * mask).sum(axis=0) / np.maximum(count, 1), np.nan)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shadows", type=int, default=8)
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--cache", type=Path, default=Path("runs/ulira-cache"))
    args = parser.parse_args()
    config = build_train_config("fashion-mnist", [{"seed": args.seed}])
    jobs = plan_shadow_jobs(
        config, "original", num_shadows=args.shadows, seed=args.seed, cache_dir=args.cache
    )
    recipe = TrainConfig.model_validate(jobs[0].train_config)
    data = load_training_data(recipe)
    pool = np.array(sorted(set().union(*(set(job.half) for job in jobs))))
    chosen = np.sort(np.random.default_rng(0).choice(pool, args.examples, replace=False))
    index = torch.tensor(chosen)
    images, labels = data.train.images[index], data.train.labels[index]
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    transforms: dict[str, Callable[[Tensor], Tensor | list[Tensor]]] = {
        "identity": lambda x: x,
        "shift 1 px": shifts(1),
        "shift 2 px": shifts(2),
        "noise 0.3": lambda x: x + 0.3 * noise,
        "noise 0.6": lambda x: x + 0.6 * noise,
        "horizontal flip": lambda x: torch.flip(x, dims=(3,)),
    }
    seen = np.zeros((len(jobs), len(chosen)), dtype=bool)
    scores = {name: np.zeros((len(jobs), len(chosen))) for name in transforms}
    for k, job in enumerate(jobs):
        model, _, cached = _train_shadow(job, recipe, data)
        if not cached:
            raise SystemExit(f"shadow {k} was not in {args.cache}: run a U-LiRA audit first")
        seen[k] = np.isin(chosen, np.array(job.half))
        for name, transform in transforms.items():
            copies = transform(images)
            batches = copies if isinstance(copies, list) else [copies]
            scores[name][k] = np.mean(
                [
                    logit_scaled_confidence(model, x, labels, batch_size=1024).numpy()
                    for x in batches
                ],
                axis=0,
            )
    never_seen = masked_mean(scores["identity"], ~seen)
    print(
        f"seed {args.seed}, K {len(jobs)}, {len(chosen)} pool examples; member statistic vs the "
        "never-seen shadows' mean clean confidence"
    )
    print("| member statistic | mean(member - never seen) | Spearman, per member model |")
    print("|---|---|---|")
    for name in transforms:
        member = masked_mean(scores[name], seen)
        ok = np.isfinite(member) & np.isfinite(never_seen)
        rhos = []
        for k in range(len(jobs)):
            others = [j for j in range(len(jobs)) if j != k]
            reference = masked_mean(scores["identity"][others], ~seen[others])
            rows = seen[k] & np.isfinite(reference)
            rhos.append(spearmanr(scores[name][k][rows], reference[rows]).correlation)
        gap = float(np.mean(member[ok] - never_seen[ok]))
        print(f"| {name} | {gap:+.2f} | {np.mean(rhos):.3f} |")


if __name__ == "__main__":
    main()
