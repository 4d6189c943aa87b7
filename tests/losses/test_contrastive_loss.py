"""The contrastive unlearning loss against a per-anchor loop, analytic values and its direction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conun.losses import contrastive_unlearning_loss


def loop_reference(
    forget_z: torch.Tensor,
    forget_y: torch.Tensor,
    retain_z: torch.Tensor,
    retain_y: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """The per-anchor formula of Lee et al. 2025 (Eq. 5-6) as plain loops, in float64."""
    losses = []
    for i in range(forget_z.shape[0]):
        pulls, pushes = [], []
        for a in range(retain_z.shape[0]):
            s = float(forget_z[i].double() @ retain_z[a].double()) / temperature
            (pushes if int(retain_y[a]) == int(forget_y[i]) else pulls).append(s)
        loss = -sum(pulls) / len(pulls) if pulls else 0.0
        if pushes:
            loss += math.log(sum(math.exp(s) for s in pushes))
        losses.append(loss)
    return torch.tensor(sum(losses) / len(losses), dtype=torch.float64)


def random_embeddings(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=generator), dim=1)


@pytest.mark.parametrize("temperature", [0.07, 0.5, 0.7, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_per_anchor_loop(temperature: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    forget_z, retain_z = random_embeddings(12, 16, g), random_embeddings(40, 16, g)
    # Labels 0..5 in the forget set, 0..4 in the retain set: anchors of class 5 have no
    # same-class reference, so both kinds of anchor are covered.
    forget_y = torch.randint(0, 6, (12,), generator=g)
    forget_y[0] = 5
    retain_y = torch.randint(0, 5, (40,), generator=g)
    got = contrastive_unlearning_loss(
        forget_z, forget_y, retain_z, retain_y, temperature=temperature
    )
    want = loop_reference(forget_z, forget_y, retain_z, retain_y, temperature)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_analytic_value_on_hand_built_embeddings() -> None:
    # Retain: (1,0) class 0, (0,1) class 1, (-1,0) class 2; tau = 1.
    retain_z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    retain_y = torch.tensor([0, 1, 2])
    # Anchor 0 = (1,0), class 0: pull = -mean(0, -1) = 0.5; push = log(exp(1)) = 1.
    # Anchor 1 = (0,1), class 3 (no same-class reference): pull = -mean(0, 1, 0) = -1/3.
    forget_z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    forget_y = torch.tensor([0, 3])
    got = contrastive_unlearning_loss(forget_z, forget_y, retain_z, retain_y, temperature=1.0)
    assert got.item() == pytest.approx((1.5 - 1.0 / 3.0) / 2.0, abs=1e-6)
    # Halving tau doubles every similarity: push = log(exp(2)) = 2, pull = 1, and -2/3.
    got_half = contrastive_unlearning_loss(forget_z, forget_y, retain_z, retain_y, temperature=0.5)
    assert got_half.item() == pytest.approx((3.0 - 2.0 / 3.0) / 2.0, abs=1e-6)


def test_class_scenario_is_pull_only_with_finite_gradients() -> None:
    g = torch.Generator().manual_seed(3)
    forget_z = random_embeddings(8, 4, g).requires_grad_(True)
    retain_z = random_embeddings(20, 4, g).requires_grad_(True)
    forget_y = torch.full((8,), 7)  # the forgotten class: absent from the retain batch
    retain_y = torch.randint(0, 7, (20,), generator=g)
    loss = contrastive_unlearning_loss(forget_z, forget_y, retain_z, retain_y, temperature=0.7)
    pull_only = -(forget_z @ retain_z.T / 0.7).mean()
    torch.testing.assert_close(loss, pull_only)
    loss.backward()
    assert forget_z.grad is not None and retain_z.grad is not None
    assert torch.isfinite(forget_z.grad).all() and torch.isfinite(retain_z.grad).all()
    assert forget_z.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("n_forget", "n_retain", "retain_label"),
    [(0, 5, 1), (5, 0, 1), (4, 6, 2)],  # no anchors; no references; all references same class
)
def test_degenerate_inputs_are_finite_and_differentiable(
    n_forget: int, n_retain: int, retain_label: int
) -> None:
    forget_z = F.normalize(torch.randn(n_forget, 3), dim=1).requires_grad_(True)
    retain_z = F.normalize(torch.randn(n_retain, 3), dim=1).requires_grad_(True)
    loss = contrastive_unlearning_loss(
        forget_z,
        torch.full((n_forget,), 2),
        retain_z,
        torch.full((n_retain,), retain_label),
    )
    loss.backward()
    assert torch.isfinite(loss)
    for grad in (forget_z.grad, retain_z.grad):
        assert grad is not None and torch.isfinite(grad).all()


def test_descent_pushes_anchors_from_own_class_toward_others() -> None:
    g = torch.Generator().manual_seed(0)
    # Three tight retain clusters; the forget anchors start inside cluster 0.
    centres = F.normalize(torch.randn(3, 8, generator=g), dim=1)
    retain_y = torch.arange(3).repeat_interleave(10)
    retain_z = F.normalize(centres[retain_y] + 0.05 * torch.randn(30, 8, generator=g), dim=1)
    forget_y = torch.zeros(6, dtype=torch.long)
    free = (centres[forget_y] + 0.05 * torch.randn(6, 8, generator=g)).requires_grad_(True)

    def mean_cosine(z: torch.Tensor, cls: torch.Tensor) -> float:
        return float((F.normalize(z, dim=1) @ retain_z[cls].T).mean())

    own, others = retain_y == 0, retain_y != 0
    before = (mean_cosine(free.detach(), own), mean_cosine(free.detach(), others))
    optimizer = torch.optim.SGD([free], lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        loss = contrastive_unlearning_loss(F.normalize(free, dim=1), forget_y, retain_z, retain_y)
        loss.backward()
        optimizer.step()
    after = (mean_cosine(free.detach(), own), mean_cosine(free.detach(), others))
    assert after[0] < before[0] - 0.2, (before, after)
    assert after[1] > before[1] + 0.2, (before, after)


def test_bfloat16_matches_float32() -> None:
    g = torch.Generator().manual_seed(5)
    forget_z, retain_z = random_embeddings(32, 64, g), random_embeddings(128, 64, g)
    forget_y = torch.randint(0, 10, (32,), generator=g)
    retain_y = torch.randint(0, 10, (128,), generator=g)
    full = contrastive_unlearning_loss(forget_z, forget_y, retain_z, retain_y)
    half = contrastive_unlearning_loss(forget_z.bfloat16(), forget_y, retain_z.bfloat16(), retain_y)
    assert half.dtype == torch.bfloat16
    # bfloat16 keeps 8 mantissa bits: relative error ~ 2^-8 per term; the mean stays within 2%.
    torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=2e-2)


def test_rejects_bad_shapes_and_temperature() -> None:
    z = F.normalize(torch.randn(4, 3), dim=1)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        contrastive_unlearning_loss(z, y, z, y, temperature=0.0)
    with pytest.raises(ValueError, match="same D"):
        contrastive_unlearning_loss(z, y, torch.randn(4, 5), y)
    with pytest.raises(ValueError, match="labels"):
        contrastive_unlearning_loss(z, y[:3], z, y)


def test_anchor_weights_scale_each_anchors_term_over_all_anchors() -> None:
    g = torch.Generator().manual_seed(3)
    forget_z, retain_z = random_embeddings(10, 8, g), random_embeddings(30, 8, g)
    forget_y, retain_y = (
        torch.randint(0, 4, (10,), generator=g),
        torch.randint(0, 4, (30,), generator=g),
    )
    weights = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 2.0, 1.0, 0.0, 1.0, 0.25])
    got = contrastive_unlearning_loss(
        forget_z, forget_y, retain_z, retain_y, temperature=0.7, anchor_weights=weights
    )
    # sum_i w_i l_i / Nf, each l_i from the per-anchor loop on a one-anchor batch.
    per_anchor = [
        loop_reference(forget_z[i : i + 1], forget_y[i : i + 1], retain_z, retain_y, 0.7)
        for i in range(10)
    ]
    want = sum(w * term for w, term in zip(weights.double(), per_anchor, strict=True)) / 10
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    ones = contrastive_unlearning_loss(
        forget_z, forget_y, retain_z, retain_y, anchor_weights=torch.ones(10)
    )
    torch.testing.assert_close(
        ones, contrastive_unlearning_loss(forget_z, forget_y, retain_z, retain_y)
    )
    with pytest.raises(ValueError, match="anchor_weights must be"):
        contrastive_unlearning_loss(
            forget_z, forget_y, retain_z, retain_y, anchor_weights=torch.ones(3)
        )
