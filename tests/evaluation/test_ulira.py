"""U-LiRA against ground truth: the attack math on synthetic scores with a known answer, the
planning invariants, and real shadows on digits, where the original model must leak membership
and retraining must not.

Tolerances. An AUC of n1 positives vs n0 negatives under the null has the Mann-Whitney standard
deviation σ = sqrt((n1 + n0 + 1) / (12 n1 n0)) for independent scores; a balanced accuracy has
σ = 0.5 sqrt(1/n1 + 1/n0). U-LiRA pools leave-one-shadow-out pairs, and the K pairs of one
example share that example's fitted Gaussians, so they are positively correlated: on 300
synthetic null seeds the standard deviation of the pooled AUC was 1.3-1.6 times σ (K = 8..32).
Every check therefore uses 3 × DESIGN_EFFECT × σ with DESIGN_EFFECT = 2. Everything is seeded,
so each check is deterministic; 3σ fails by bad luck for ~0.3% of seeds, not of runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from conun.config import ConfigError, TrainConfig
from conun.evaluation.ulira import (
    MIN_SHADOWS,
    ShadowResult,
    ULiraError,
    load_shadow_results,
    logit_scaled_confidence,
    save_shadow_results,
    ulira_attack,
    ulira_scores,
)
from conun.methods.base import UnknownMethodError
from conun.workflows.inputs import load_training_data, validation_indices
from conun.workflows.ulira_shadows import (
    ShadowJob,
    plan_shadow_jobs,
    run_shadow,
    run_shadow_jobs,
    run_ulira,
)

DESIGN_EFFECT = 2.0


def auc_sigma(num_positive: float, num_negative: float) -> float:
    """Mann-Whitney null standard deviation of an AUC, inflated by the design effect."""
    n1, n0 = num_positive, num_negative
    return DESIGN_EFFECT * math.sqrt((n1 + n0 + 1) / (12 * n1 * n0))


def accuracy_sigma(num_positive: float, num_negative: float) -> float:
    """Null standard deviation of a balanced accuracy, inflated by the design effect."""
    return DESIGN_EFFECT * 0.5 * math.sqrt(1 / num_positive + 1 / num_negative)


def synthetic_results(
    num_shadows: int, num_targets: int, *, shift: float, seed: int = 0, spread: float = 3.0
) -> tuple[list[ShadowResult], np.ndarray, np.ndarray]:
    """Shadow results whose scores follow a known model.

    Example t has its own level μ_t ~ N(0, spread²) (examples differ in difficulty); its score
    under shadow k is μ_t + shift·[seen] + N(0, 1); memberships are fair coins, as in the real
    plan. Returns the results, the ``(K, T)`` scores and the ``(K, T)`` memberships.
    """
    rng = np.random.default_rng(seed)
    level = rng.normal(0.0, spread, num_targets)
    seen = rng.random((num_shadows, num_targets)) < 0.5
    scores = level + rng.normal(0.0, 1.0, (num_shadows, num_targets)) + shift * seen
    targets = np.arange(100, 100 + num_targets, dtype=np.int64)
    results = [
        ShadowResult(shadow, shadow, "synthetic", targets, seen[shadow], scores[shadow])
        for shadow in range(num_shadows)
    ]
    return results, scores, seen


# -- the attack math -----------------------------------------------------------------------------


def test_separable_gaussians_are_found() -> None:
    results, _, _ = synthetic_results(16, 200, shift=10.0)
    attack = ulira_attack(results)
    assert attack["auc"] > 0.99
    assert attack["accuracy"] > 0.98
    # 16 x 200 pairs, ~1600 never seen: 1% FPR allows 16 false positives (reported), 0.1% not.
    assert attack["tpr_at_1pct_fpr"] > 0.95
    assert "tpr_at_0p1pct_fpr" not in attack


@pytest.mark.parametrize("variance", ["per_example", "pooled"])
def test_identical_distributions_are_at_chance(variance: str) -> None:
    results, _, _ = synthetic_results(16, 200, shift=0.0, seed=1)
    attack = ulira_attack(results, variance=variance)  # type: ignore[arg-type]
    n1, n0 = attack["num_unlearned"], attack["num_never_seen"]
    assert n1 + n0 > 0.99 * 16 * 200  # 2^(2-16) of the pairs lack a fit
    assert abs(attack["auc"] - 0.5) <= 3 * auc_sigma(n1, n0)
    assert abs(attack["accuracy"] - 0.5) <= 3 * accuracy_sigma(n1, n0)


def test_known_shift_reaches_the_optimal_test_per_example() -> None:
    """With many shadows the fitted per-example test approaches the Neyman-Pearson optimum for
    N(μ_t + δ, 1) vs N(μ_t, 1): AUC = Φ(δ / √2). A population threshold on the raw score cannot,
    since the examples' levels (spread 3) swamp the shift: its AUC is Φ(δ / √(2 (1 + 9)))."""
    shift = 1.0
    results, scores, seen = synthetic_results(64, 200, shift=shift, seed=2)
    attack = ulira_attack(results)
    optimum = float(norm.cdf(shift / math.sqrt(2)))
    # Fitting 4 parameters per example from ~31 scores each costs ~0.01 AUC (measured on 20
    # seeds: 0.750 ± 0.005 against the optimum 0.760).
    fitting_loss = 0.01
    tolerance = 3 * auc_sigma(attack["num_unlearned"], attack["num_never_seen"])
    assert optimum - fitting_loss - tolerance <= attack["auc"] <= optimum + tolerance
    population = roc_auc_score(seen.ravel(), scores.ravel())
    assert abs(population - norm.cdf(shift / math.sqrt(20))) <= 3 * auc_sigma(
        seen.sum(), (~seen).sum()
    )
    assert attack["auc"] > population + 0.1


def test_leave_one_out_uses_only_the_other_shadows() -> None:
    """Row k's Gaussians are fitted on the other shadows only: row 0 equals a direct fit of
    shadows 1..K-1 (unbiased stds), evaluated at shadow 0's score."""
    results, scores, seen = synthetic_results(6, 5, shift=2.0, seed=3)
    fitted = ulira_scores(results, variance="per_example", min_std=1e-6)
    for t in range(5):
        inside = scores[1:, t][seen[1:, t]]
        outside = scores[1:, t][~seen[1:, t]]
        if inside.size < 2 or outside.size < 2:
            continue
        x = scores[0, t]
        expected = norm.logpdf(x, inside.mean(), inside.std(ddof=1)) - norm.logpdf(
            x, outside.mean(), outside.std(ddof=1)
        )
        assert fitted.llr[0, t] == pytest.approx(expected, rel=1e-9)


def test_pairs_without_both_groups_are_left_out() -> None:
    results, _, seen = synthetic_results(4, 30, shift=0.0, seed=4)
    fitted = ulira_scores(results)
    for k in range(4):
        others = np.delete(seen, k, axis=0)
        has_both = others.any(axis=0) & (~others).any(axis=0)
        assert np.array_equal(fitted.valid[k], has_both)


def test_attack_rejects_bad_input() -> None:
    results, _, _ = synthetic_results(5, 10, shift=0.0)
    with pytest.raises(ULiraError, match="at least 4 shadows"):
        ulira_attack(results[: MIN_SHADOWS - 1])
    other = ShadowResult(
        9, 9, "synthetic", results[0].targets + 1, results[0].seen, results[0].scores
    )
    with pytest.raises(ULiraError, match="share the targets"):
        ulira_attack([*results, other])
    with pytest.raises(ULiraError, match="variance"):
        ulira_attack(results, variance="global")  # type: ignore[arg-type]
    with pytest.raises(ULiraError, match="min_std"):
        ulira_attack(results, min_std=0.0)


def test_logit_scaled_confidence_matches_probabilities_and_stays_finite() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0], [500.0, 0.0, 0.0]])

    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return logits[x.flatten(1)[:, 0].long()] + self.weight

    images = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1)
    labels = torch.tensor([0, 2, 0])
    scores = logit_scaled_confidence(Fixed(), images, labels)  # type: ignore[arg-type]
    p = torch.softmax(logits.double(), dim=1)[torch.arange(3), labels]
    assert scores[:2].tolist() == pytest.approx(torch.log(p / (1 - p))[:2].tolist(), rel=1e-9)
    # p_y rounds to 1 in float64 here; the logit form still gives the exact 500 - log 2.
    assert scores[2].item() == pytest.approx(500 - math.log(2), rel=1e-12)


def test_results_round_trip_through_json(tmp_path: Path) -> None:
    results, _, _ = synthetic_results(4, 7, shift=1.0)
    path = save_shadow_results(tmp_path / "ulira.json", results)
    loaded = load_shadow_results(path)
    for before, after in zip(results, loaded, strict=True):
        assert np.array_equal(before.scores, after.scores)  # bit for bit
        assert np.array_equal(before.seen, after.seen)
        assert np.array_equal(before.targets, after.targets)
    job = ShadowJob({"dataset": "digits"}, 1, 2, (3, 4), (4,), "retrain", {"stopping": {}})
    assert ShadowJob.from_dict(job.to_dict()) == job


# -- planning ------------------------------------------------------------------------------------


def test_plan_draws_seeded_halves_of_the_pool(
    make_digits_config: Callable[..., TrainConfig],
) -> None:
    config = make_digits_config(epochs=1)
    jobs = plan_shadow_jobs(config, "original", num_shadows=6, num_targets=20, seed=3)
    again = plan_shadow_jobs(config, "retrain", num_shadows=6, num_targets=20, seed=3)
    other_seed = plan_shadow_jobs(config, "original", num_shadows=6, num_targets=20, seed=4)
    # Halves depend on the seed only, not on the method: that is what lets the cache share them.
    assert [j.cache_key() for j in jobs] == [j.cache_key() for j in again]
    assert [j.half for j in jobs] != [j.half for j in other_seed]
    assert len({j.seed for j in jobs}) == 6
    data = load_training_data(config)
    validation = set(validation_indices(data, config).tolist())
    pool = set(range(len(data.train))) - validation
    targets = set(jobs[0].targets)
    assert len(targets) == 20 and targets <= pool
    for job in jobs:
        assert set(job.half) <= pool
        assert 0.4 < len(job.half) / len(pool) < 0.6
        assert job.targets == jobs[0].targets
    seen = np.array([[t in set(job.half) for t in sorted(targets)] for job in jobs])
    assert 0.3 < seen.mean() < 0.7


def test_plan_rejects_bad_requests(make_digits_config: Callable[..., TrainConfig]) -> None:
    config = make_digits_config(epochs=1)
    with pytest.raises(ULiraError, match="at least 4 shadows"):
        plan_shadow_jobs(config, "original", num_shadows=3)
    with pytest.raises(ULiraError, match="num_targets"):
        plan_shadow_jobs(config, "original", num_shadows=4, num_targets=10**6)
    with pytest.raises((UnknownMethodError, ConfigError), match="no_such_method"):
        plan_shadow_jobs(config, "no_such_method", num_shadows=4)
    with pytest.raises(ConfigError, match="bogus"):
        plan_shadow_jobs(
            config, "contrastive", num_shadows=4, unlearn_layer={"options": {"bogus": 1}}
        )


# -- real shadows on digits ----------------------------------------------------------------------


def test_original_leaks_and_retrain_does_not(
    make_digits_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    """A recipe that overfits (~90 training samples per shadow, 30 epochs, no augmentation): the
    un-unlearned original must be clearly attackable, retraining from scratch must not be. The
    second method and the repeated original reuse the cached shadows. (Measured: original AUC
    0.70, retrain 0.50, with ~1000 pairs; the one-sided bound below is 0.61.)"""
    config = make_digits_config(epochs=30, max_train_samples=200)
    assert not config.augment
    cache = tmp_path / "shadows"
    run = {"num_shadows": 16, "num_targets": 64, "seed": 0, "cache_dir": cache, "quiet": True}
    original = run_ulira(config, "original", **run)  # type: ignore[arg-type]
    assert not any(result.from_cache for result in original)
    assert len(list(cache.glob("shadow-*.safetensors"))) == 16
    retrain = run_ulira(config, "retrain", **run)  # type: ignore[arg-type]
    assert all(result.from_cache for result in retrain)
    repeated = run_ulira(config, "original", **run)  # type: ignore[arg-type]
    for first, cached in zip(original, repeated, strict=True):
        assert np.array_equal(first.scores, cached.scores)  # a cache hit changes nothing

    leak = ulira_attack(original)
    ideal = ulira_attack(retrain)
    sigma = auc_sigma(leak["num_unlearned"], leak["num_never_seen"])
    assert leak["auc"] > 0.5 + 3 * sigma
    assert leak["unlearned_score_mean"] > leak["never_seen_score_mean"]  # members: confident
    assert abs(ideal["auc"] - 0.5) <= 3 * sigma
    assert leak["auc"] > ideal["auc"]
    # retrain really dropped the targets: they are classified like unseen data, not memorised
    forget_acc = [
        [result.metrics["forget_train_acc"] or 0.0 for result in run] for run in (original, retrain)
    ]
    assert np.mean(forget_acc[1]) < np.mean(forget_acc[0])


def test_process_pool_gives_the_serial_numbers(
    make_digits_config: Callable[..., TrainConfig],
) -> None:
    config = make_digits_config(epochs=2, max_train_samples=120)
    jobs = plan_shadow_jobs(config, "finetune", num_shadows=4, num_targets=8, seed=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' setting, so that reductions run in the same order
    try:
        serial = [run_shadow(job) for job in jobs]
    finally:
        torch.set_num_threads(threads)
    parallel = run_shadow_jobs(jobs, workers=2)
    for one, other in zip(serial, parallel, strict=True):
        assert one.shadow == other.shadow
        assert np.array_equal(one.targets, other.targets)
        assert np.array_equal(one.seen, other.seen)
        assert np.array_equal(one.scores, other.scores)
    # the scores are not trivially equal: shadows differ
    assert not np.array_equal(serial[0].scores, serial[1].scores)
