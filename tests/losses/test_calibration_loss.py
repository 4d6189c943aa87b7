"""The calibration term of sample unlearning: loop references and analytic values."""

from __future__ import annotations

import math

import pytest
import torch

from conun.losses import calibration_loss, logit_confidence, matched_targets


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
