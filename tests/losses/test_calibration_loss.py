"""The calibration term of sample unlearning: loop references and analytic values."""

from __future__ import annotations

import math

import pytest
import torch

from conun.losses import (
    calibration_loss,
    logit_confidence,
    logit_scale_for_mean_confidence,
    matched_targets,
    neighbour_targets,
    random_targets,
    rank_quantiles,
    targets_by_rank,
)


def test_logit_confidence_is_log_odds_of_the_true_class() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=generator, dtype=torch.float64) * 4
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    expected = []
    for row, label in zip(logits, labels, strict=True):
        p = torch.softmax(row, dim=0)[label].item()
        expected.append(math.log(p) - math.log(1 - p))
    torch.testing.assert_close(logit_confidence(logits, labels), torch.tensor(expected).double())


def test_logit_confidence_is_finite_where_the_probability_rounds_to_one() -> None:
    logits = torch.tensor([[200.0, 0.0, 0.0]])
    # p_y = 1 - 2e-87 rounds to 1 in float32: log(1 - p) would be -inf; phi is 200 - log 2.
    torch.testing.assert_close(
        logit_confidence(logits, torch.tensor([0])), torch.tensor([200.0 - math.log(2)])
    )


def test_matched_targets_follow_the_rank_quantiles() -> None:
    reference = torch.arange(101, dtype=torch.float32)  # quantile q is 100 q
    scores = torch.tensor([3.0, -1.0, 7.0, 5.0])  # ranks 1, 0, 3, 2 of 4
    targets = matched_targets(scores, reference)
    torch.testing.assert_close(targets, torch.tensor([37.5, 12.5, 87.5, 62.5]))


def test_rank_quantile_table_matches_a_quantile_per_sample() -> None:
    # The table is computed once per batch size and placed by one sort; the reference is a
    # quantile of the whole reference set per sample, from its rank by counting.
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(500, generator=generator) * 3 + 5
    scores = torch.randn(37, generator=generator)
    expected = []
    for score in scores:
        rank = int((scores < score).sum())
        level = (rank + 0.5) / scores.numel()
        expected.append(float(torch.quantile(reference.double(), level)))
    table = rank_quantiles(reference, scores.numel())
    torch.testing.assert_close(targets_by_rank(scores, table), torch.tensor(expected))
    torch.testing.assert_close(matched_targets(scores, reference), torch.tensor(expected))
    with pytest.raises(ValueError, match="quantiles"):
        targets_by_rank(scores, table[:-1])


def test_neighbour_targets_match_a_loop_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    forget = torch.randn(7, 3, generator=generator)
    forget_labels = torch.tensor([0, 1, 1, 0, 2, 1, 0])
    reference = torch.randn(12, 3, generator=generator)
    reference_labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1, 0])  # no label 2
    scores = torch.randn(12, generator=generator)
    k = 3
    estimates = []
    for row, label in zip(forget, forget_labels, strict=True):
        candidates = [
            (float(torch.cosine_similarity(row, other, dim=0)), float(score))
            for other, other_label, score in zip(reference, reference_labels, scores, strict=True)
            # label 2 has no reference sample: every reference sample is a candidate
            if other_label == label or label == 2
        ]
        nearest = sorted(candidates, reverse=True)[:k]
        estimates.append(sum(score for _, score in nearest) / k)
    order = sorted(range(7), key=lambda i: estimates[i])
    levels = torch.empty(7, dtype=torch.float64)
    for rank, i in enumerate(order):
        levels[i] = (rank + 0.5) / 7
    expected = torch.quantile(scores.double(), levels).float()
    got = neighbour_targets(
        forget, forget_labels, reference, reference_labels, scores, neighbours=k, chunk=4
    )
    torch.testing.assert_close(got, expected)


def test_neighbour_targets_follow_the_nearest_reference_and_keep_its_distribution() -> None:
    # Two clusters of held-out samples: near (1, 0) confident (scores 8, 9), near (0, 1) not
    # (scores 0, 1). A forget sample near (0, 1) gets the low target, whatever its own score.
    reference = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    scores = torch.tensor([8.0, 9.0, 0.0, 1.0])
    labels = torch.zeros(4, dtype=torch.long)
    forget = torch.tensor([[0.05, 1.0], [1.0, 0.05]])
    targets = neighbour_targets(forget, labels[:2], reference, labels, scores, neighbours=2)
    # ranks 0 and 1 of 2 -> the 0.25 and 0.75 quantiles of the reference scores
    torch.testing.assert_close(targets, torch.tensor([0.75, 8.25]))


def test_calibration_loss_is_a_hinge_with_unit_slope() -> None:
    scores = torch.tensor([2.0, 0.5, -1.0], requires_grad=True)
    targets = torch.tensor([1.0, 1.0, -3.0])
    loss = calibration_loss(scores, targets)
    assert loss.item() == pytest.approx((1.0 + 0.0 + 2.0) / 3)
    loss.backward()
    assert scores.grad is not None
    torch.testing.assert_close(scores.grad, torch.tensor([1 / 3, 0.0, 1 / 3]))


def test_bad_shapes_are_errors() -> None:
    with pytest.raises(ValueError, match="C >= 2"):
        logit_confidence(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty"):
        matched_targets(torch.zeros(3), torch.zeros(0))
    with pytest.raises(ValueError, match="differ"):
        calibration_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="neighbours must be >= 1"):
        neighbour_targets(
            torch.zeros(2, 3),
            torch.zeros(2),
            torch.ones(2, 3),
            torch.zeros(2),
            torch.zeros(2),
            neighbours=0,
        )


def test_logit_scale_with_two_classes_is_the_ratio_of_mean_margins() -> None:
    # Two classes: phi(s z) = s (z_y - z_other) exactly, so the factor that takes the mean phi
    # to a target is target / mean margin.
    logits = torch.tensor([[3.0, 1.0], [0.5, 2.5], [4.0, -1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 1])
    margins = torch.tensor([2.0, 2.0, 5.0, -1.0])  # mean 2.0
    assert logit_confidence(logits, labels).tolist() == margins.tolist()
    for target in (1.0, 3.0, 7.5):
        scale = logit_scale_for_mean_confidence(logits, labels, target)
        assert scale == pytest.approx(target / 2.0, rel=1e-12)


def test_logit_scale_reaches_the_target_on_many_classes_and_clamps_outside_its_bounds() -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (200,), generator=generator)
    logits = torch.randn(200, 10, generator=generator)
    logits[torch.arange(200), labels] += 4.0  # mostly correct: the mean phi rises with s
    before = float(logit_confidence(logits, labels).mean())
    target = before + 1.5
    scale = logit_scale_for_mean_confidence(logits, labels, target)
    assert scale > 1
    assert float(logit_confidence(logits.double() * scale, labels).mean()) == pytest.approx(
        target, abs=1e-9
    )
    # Out of reach: the nearest bound.
    assert logit_scale_for_mean_confidence(logits, labels, 1e6) == 16.0
    assert logit_scale_for_mean_confidence(logits, labels, -1e6) == 0.0625
    assert logit_scale_for_mean_confidence(logits, labels, 1e6, bounds=(0.5, 2.0)) == 2.0


def test_random_targets_are_reference_scores_drawn_independently_of_the_samples() -> None:
    reference = torch.tensor([-2.0, 0.5, 3.0, 7.0])
    targets = random_targets(reference, 4000, generator=torch.Generator().manual_seed(0))
    assert targets.shape == (4000,)
    assert set(targets.tolist()) <= set(reference.tolist())
    # Uniform over the four scores: each drawn ~1000 times (a binomial sd of ~27).
    counts = torch.stack([(targets == value).sum() for value in reference])
    assert (counts - 1000).abs().max() < 120
    again = random_targets(reference, 4000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(targets, again)  # seeded
    assert random_targets(reference, 0, generator=torch.Generator()).shape == (0,)


@pytest.mark.parametrize(
    ("reference", "count"), [(torch.empty(0), 3), (torch.zeros(2, 2), 3), (torch.zeros(3), -1)]
)
def test_random_targets_reject_bad_inputs(reference: torch.Tensor, count: int) -> None:
    with pytest.raises(ValueError, match="need non-empty"):
        random_targets(reference, count, generator=torch.Generator())
