"""The contrastive unlearning loss against a per-anchor loop, analytic values and its direction."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from conun.losses import (
    class_unlearning_objective,
    contrastive_unlearning_loss,
    release_contrastive_unlearning_loss,
    relu_embedding,
)


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


def autograd_reference(
    forget_z: torch.Tensor,
    forget_y: torch.Tensor,
    retain_z: torch.Tensor,
    retain_y: torch.Tensor,
    temperature: float,
    weights: torch.Tensor | None,
) -> torch.Tensor:
    """Eq. 5-6 as plain tensor algebra, differentiated by autograd (the loss's own backward is
    written out by hand)."""
    similarity = forget_z @ retain_z.T / temperature
    same = forget_y[:, None] == retain_y[None, :]
    other_count = (~same).sum(dim=1).clamp(min=1)
    pull = -(similarity * ~same).sum(dim=1) / other_count
    push = torch.stack(
        [
            torch.logsumexp(row[mask], dim=0) if bool(mask.any()) else row.sum() * 0.0
            for row, mask in zip(similarity, same, strict=True)
        ]
    )
    per_anchor = pull + push
    w = torch.ones_like(per_anchor) if weights is None else weights.to(per_anchor.dtype)
    return (per_anchor * w).sum() / per_anchor.shape[0]


def assert_matches_autograd(
    forget_z: torch.Tensor,
    forget_y: torch.Tensor,
    retain_z: torch.Tensor,
    retain_y: torch.Tensor,
    temperature: float,
    weights: torch.Tensor | None,
) -> None:
    """The loss's value and hand-written gradients equal autograd's on the plain formula, and
    pass a finite-difference check (float64 inputs)."""
    got = _value_and_gradients(
        lambda f, r: contrastive_unlearning_loss(
            f, forget_y, r, retain_y, temperature=temperature, anchor_weights=weights
        ),
        forget_z,
        retain_z,
    )
    want = _value_and_gradients(
        lambda f, r: autograd_reference(f, forget_y, r, retain_y, temperature, weights),
        forget_z,
        retain_z,
    )
    for ours, theirs in zip(got, want, strict=True):
        torch.testing.assert_close(ours, theirs)
    assert torch.autograd.gradcheck(
        lambda f, r: contrastive_unlearning_loss(
            f, forget_y, r, retain_y, temperature=temperature, anchor_weights=weights
        ),
        (forget_z.clone().requires_grad_(), retain_z.clone().requires_grad_()),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_hand_written_gradient_matches_autograd(seed: int, weighted: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    forget_z = random_embeddings(10, 8, g).double()
    retain_z = random_embeddings(24, 8, g).double()
    # Anchor 0 has no same-class reference (class 5); the single-anchor case below has no
    # other-class one.
    forget_y = torch.randint(0, 5, (10,), generator=g)
    forget_y[0] = 5
    retain_y = torch.randint(0, 5, (24,), generator=g)
    weights = (torch.rand(10, generator=g) > 0.4).double() if weighted else None
    assert_matches_autograd(forget_z, forget_y, retain_z, retain_y, 0.5, weights)
    # One anchor against a retain batch of its own class only: no pull term, push only.
    single = _value_and_gradients(
        lambda f, r: contrastive_unlearning_loss(
            f[:1], torch.tensor([4]), r[:3], torch.tensor([4, 4, 4]), temperature=0.5
        ),
        forget_z,
        retain_z,
    )
    reference = _value_and_gradients(
        lambda f, r: autograd_reference(
            f[:1], torch.tensor([4]), r[:3], torch.tensor([4, 4, 4]), 0.5, None
        ),
        forget_z,
        retain_z,
    )
    for ours, theirs in zip(single, reference, strict=True):
        torch.testing.assert_close(ours, theirs)


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


def composed_class_objective(
    features: torch.Tensor,
    logits: torch.Tensor,
    forget_y: torch.Tensor,
    retain_y: torch.Tensor,
    lambda_ul: float,
    lambda_ce: float,
) -> torch.Tensor:
    """What the one-node class objective replaces: normalise, slice, the general loss against
    detached references and the retain rows' cross-entropy, all through autograd."""
    z = F.normalize(features, dim=1)
    num_forget = forget_y.shape[0]
    unlearning = contrastive_unlearning_loss(
        z[:num_forget], forget_y, z[num_forget:].detach(), retain_y, temperature=0.7
    )
    return lambda_ul * unlearning + lambda_ce * F.cross_entropy(logits[num_forget:], retain_y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_node_class_objective_is_the_composition_it_replaces(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    num_forget, num_retain = 7, 12
    features = torch.randn(num_forget + num_retain, 5, generator=g, dtype=torch.float64) * 3
    logits = torch.randn(num_forget + num_retain, 4, generator=g, dtype=torch.float64)
    forget_y = torch.full((num_forget,), 3)  # the forgotten class: absent from the retain rows
    retain_y = torch.randint(0, 3, (num_retain,), generator=g)

    def ours(f: torch.Tensor, lg: torch.Tensor) -> torch.Tensor:
        total, _, _ = class_unlearning_objective(
            f, lg, retain_y, num_forget, temperature=0.7, lambda_ul=1.5, lambda_ce=2.0
        )
        return total

    got = _value_and_gradients(ours, features, logits)
    want = _value_and_gradients(
        lambda f, lg: composed_class_objective(f, lg, forget_y, retain_y, 1.5, 2.0),
        features,
        logits,
    )
    for mine, theirs in zip(got, want, strict=True):
        torch.testing.assert_close(mine, theirs)
    # The retain rows' features and the forget rows' logits get no gradient (fixed references,
    # no cross-entropy on the forget rows); the others do.
    assert got[1][num_forget:].abs().max() == 0 and got[1][:num_forget].abs().min() > 0
    assert got[2][:num_forget].abs().max() == 0 and got[2][num_forget:].abs().max() > 0
    # Finite differences over the forget rows' features (the retain rows are references held
    # fixed, as detach() makes them; their numerical derivative would not be zero) and the
    # logits.
    retain_features = features[num_forget:]
    assert torch.autograd.gradcheck(
        lambda f, lg: ours(torch.cat([f, retain_features]), lg),
        (features[:num_forget].clone().requires_grad_(), logits.clone().requires_grad_()),
    )
    # The logged terms are the composition's two terms, without gradient.
    _, unlearning, retain_ce = class_unlearning_objective(
        features, logits, retain_y, num_forget, temperature=0.7, lambda_ul=1.0, lambda_ce=1.0
    )
    torch.testing.assert_close(
        unlearning, composed_class_objective(features, logits, forget_y, retain_y, 1.0, 0.0)
    )
    torch.testing.assert_close(
        retain_ce, composed_class_objective(features, logits, forget_y, retain_y, 0.0, 1.0)
    )
    assert not unlearning.requires_grad and not retain_ce.requires_grad


def test_one_node_class_objective_rejects_bad_inputs() -> None:
    features, logits = torch.randn(6, 4), torch.randn(6, 3)
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="num_forget must be in"):
        class_unlearning_objective(
            features, logits, labels, 0, temperature=0.7, lambda_ul=1.0, lambda_ce=1.0
        )
    with pytest.raises(ValueError, match="retain_labels"):
        class_unlearning_objective(
            features, logits, labels, 3, temperature=0.7, lambda_ul=1.0, lambda_ce=1.0
        )
    with pytest.raises(ValueError, match="same N"):
        class_unlearning_objective(
            features, logits[:5], labels, 2, temperature=0.7, lambda_ul=1.0, lambda_ce=1.0
        )
    with pytest.raises(ValueError, match="temperature"):
        class_unlearning_objective(
            features, logits, labels, 2, temperature=0.0, lambda_ul=1.0, lambda_ce=1.0
        )


@pytest.mark.parametrize("weighted", [False, True])
def test_class_scenario_shortcut_has_the_general_forms_value_and_gradient(weighted: bool) -> None:
    # No anchor has a same-class reference: the loss takes its pull-only form (the retain
    # batch's mean embedding, no (Nf, Nr) matrix); value and gradients must be the general
    # form's, checked against autograd on the plain formula and by finite differences.
    g = torch.Generator().manual_seed(4)
    forget_z = random_embeddings(9, 6, g).double()
    retain_z = random_embeddings(30, 6, g).double()
    forget_y = torch.tensor([7, 8, 7, 8, 7, 7, 8, 7, 8])  # two forgotten classes
    retain_y = torch.randint(0, 7, (30,), generator=g)
    weights = (torch.rand(9, generator=g) > 0.4).double() if weighted else None
    assert_matches_autograd(forget_z, forget_y, retain_z, retain_y, 0.7, weights)
    # Detached references (the method's default): only the anchors get a gradient, autograd's.
    want = _value_and_gradients(
        lambda f, r: autograd_reference(f, forget_y, r, retain_y, 0.7, weights),
        forget_z,
        retain_z,
    )
    f = forget_z.clone().requires_grad_()
    contrastive_unlearning_loss(
        f, forget_y, retain_z, retain_y, temperature=0.7, anchor_weights=weights
    ).backward()
    torch.testing.assert_close(f.grad, want[1])


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


# -- the authors' released code (github.com/Hongkyu-Lee/Contrastive-Unlearning) ---------------


def release_loss_v1(
    u_feat: torch.Tensor,
    rt_feat: torch.Tensor,
    u_label: torch.Tensor,
    rt_label: torch.Tensor,
    temperature: float,
    single_class: bool,
) -> torch.Tensor:
    """A line-by-line transcription of ``UnlearnTrainer.Loss_v1`` (core/trainer/unlearn/
    unlearn.py of the release), with ``temperature == base_temperature`` as there."""
    u_label = u_label.contiguous().view(-1, 1)
    rt_label = rt_label.contiguous().view(-1, 1)
    mask = torch.eq(u_label, rt_label.T)
    neg_mask = (~mask).clone().float()
    pos_mask = mask.clone().float()
    neg_add_mask = (~(pos_mask.sum(1).bool())).int().contiguous().view(-1, 1)
    logits = torch.div(torch.matmul(u_feat, rt_feat.T), temperature)
    logits_max, _ = torch.max(logits, dim=1, keepdim=True)
    logits = logits - logits_max.detach()
    exp_logits = torch.exp(logits) + 1e-20
    neg_logits = logits * neg_mask
    pos_logits = (exp_logits * pos_mask).sum(1, keepdim=True)
    if single_class:
        pos_logits = pos_logits + neg_add_mask
    log_prob = neg_logits - torch.log(pos_logits)
    mean_log_prob = log_prob.sum(1) / neg_mask.sum(1)
    return (-mean_log_prob).mean()


def _value_and_gradients(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    forget_z: torch.Tensor,
    retain_z: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    f, r = forget_z.clone().requires_grad_(), retain_z.clone().requires_grad_()
    value = loss_fn(f, r)
    value.backward()
    assert f.grad is not None and r.grad is not None
    return value.detach(), f.grad, r.grad


@pytest.mark.parametrize("class_scenario", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_release_loss_matches_the_release_on_finite_inputs(class_scenario: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    # 3 classes over 60 retain samples: every anchor has a positive and a negative (finite).
    forget_z, retain_z = random_embeddings(20, 8, g), random_embeddings(60, 8, g)
    forget_y = torch.randint(0, 3, (20,), generator=g)
    retain_y = torch.arange(60) % 3
    if class_scenario:
        forget_y[:5] = 3  # anchors with no positive: the release's single_class branch
    ours = _value_and_gradients(
        lambda f, r: release_contrastive_unlearning_loss(
            f, forget_y, r, retain_y, temperature=0.7, class_scenario=class_scenario
        ),
        forget_z,
        retain_z,
    )
    release = _value_and_gradients(
        lambda f, r: release_loss_v1(f, r, forget_y, retain_y, 0.7, class_scenario),
        forget_z.double(),
        retain_z.double(),
    )
    for got, want in zip(ours, release, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_release_loss_weighs_the_push_term_by_retain_over_other_class() -> None:
    g = torch.Generator().manual_seed(3)
    forget_z, retain_z = random_embeddings(16, 8, g), random_embeddings(40, 8, g)
    forget_y, retain_y = torch.randint(0, 4, (16,), generator=g), torch.arange(40) % 4
    similarity = forget_z.double() @ retain_z.double().T / 0.7
    same = forget_y[:, None] == retain_y[None, :]
    other_mean = (similarity * ~same).sum(1) / (~same).sum(1)
    push = torch.logsumexp(similarity.masked_fill(~same, float("-inf")), dim=1)
    row_max = similarity.max(dim=1).values
    weight = 40 / (~same).sum(1)  # n_retain / |N(i)| = 40 / 30
    want = (-other_mean + weight * push + row_max * (1 - weight)).mean()
    got = release_contrastive_unlearning_loss(forget_z, forget_y, retain_z, retain_y)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    # ... and differs from the paper's unweighted push term.
    paper = contrastive_unlearning_loss(forget_z, forget_y, retain_z, retain_y)
    assert abs(float(got) - float(paper)) > 1e-3


def test_release_class_branch_has_the_papers_gradient_without_positives() -> None:
    g = torch.Generator().manual_seed(4)
    forget_z, retain_z = random_embeddings(10, 8, g), random_embeddings(30, 8, g)
    forget_y, retain_y = torch.full((10,), 5), torch.arange(30) % 5
    release = _value_and_gradients(
        lambda f, r: release_contrastive_unlearning_loss(
            f, forget_y, r, retain_y, class_scenario=True
        ),
        forget_z,
        retain_z,
    )
    paper = _value_and_gradients(
        lambda f, r: contrastive_unlearning_loss(f, forget_y, r, retain_y), forget_z, retain_z
    )
    # No push term: l_i = -mean_N s + m_i, the paper's pull plus the detached row maximum.
    row_max = (forget_z @ retain_z.T / 0.7).max(dim=1).values.mean()
    torch.testing.assert_close(release[0], paper[0] + row_max)
    for got, want in zip(release[1:], paper[1:], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_release_loss_refuses_the_inputs_where_the_release_is_nan() -> None:
    g = torch.Generator().manual_seed(5)
    forget_z, retain_z = random_embeddings(4, 8, g), random_embeddings(6, 8, g)
    retain_y = torch.tensor([0, 0, 1, 1, 2, 2])
    no_positive = torch.tensor([0, 1, 2, 3])
    # The release itself: -inf / NaN.
    assert not torch.isfinite(
        release_loss_v1(forget_z, retain_z, no_positive, retain_y, 0.7, False)
    )
    with pytest.raises(ValueError, match="no retain sample of its own class"):
        release_contrastive_unlearning_loss(forget_z, no_positive, retain_z, retain_y)
    # The class branch puts 1 in the log: finite, and no error.
    assert torch.isfinite(
        release_contrastive_unlearning_loss(
            forget_z, no_positive, retain_z, retain_y, class_scenario=True
        )
    )
    one_class = torch.zeros(6, dtype=torch.long)
    assert not torch.isfinite(
        release_loss_v1(forget_z, retain_z, torch.zeros(4, dtype=torch.long), one_class, 0.7, True)
    )
    for class_scenario in (False, True):
        with pytest.raises(ValueError, match="no retain sample of another class"):
            release_contrastive_unlearning_loss(
                forget_z,
                torch.zeros(4, dtype=torch.long),
                retain_z,
                one_class,
                class_scenario=class_scenario,
            )


class _ReleaseHead(torch.nn.Module):
    """The release's SupConResNet after the encoder (core/model/resnet.py): an MLP projection,
    normalised, then ``fc = Sequential(ReLU(inplace=True), Linear)`` on the same tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Sequential(
            torch.nn.Linear(6, 6), torch.nn.ReLU(inplace=True), torch.nn.Linear(6, 5)
        )
        self.fc = torch.nn.Sequential(torch.nn.ReLU(inplace=True), torch.nn.Linear(5, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = F.normalize(self.head(x), dim=1)
        logit = self.fc(feat)
        return logit, feat


def test_relu_embedding_is_what_the_releases_in_place_head_returns() -> None:
    torch.manual_seed(6)
    model, x = _ReleaseHead(), torch.randn(12, 6)
    labels_f, labels_r = torch.tensor([0, 1, 2, 0]), torch.arange(8) % 3
    # The release: the returned feature tensor, after the head's in-place ReLU.
    _, feat = model(x)
    release_loss = release_contrastive_unlearning_loss(
        feat[:4], labels_f, feat[4:], labels_r, class_scenario=True
    )
    release_grads = torch.autograd.grad(release_loss, list(model.head.parameters()))
    # conun: the normalised projection, then relu_embedding (no in-place op).
    z = F.normalize(model.head(x), dim=1)
    assert (z < 0).any()  # the ReLU changes something
    ours = relu_embedding(z)
    torch.testing.assert_close(ours, feat.detach())
    assert (z < 0).any()  # relu_embedding leaves its input alone
    loss = release_contrastive_unlearning_loss(
        ours[:4], labels_f, ours[4:], labels_r, class_scenario=True
    )
    torch.testing.assert_close(loss, release_loss)
    for got, want in zip(
        torch.autograd.grad(loss, list(model.head.parameters())), release_grads, strict=True
    ):
        torch.testing.assert_close(got, want)
