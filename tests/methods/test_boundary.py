"""Boundary Unlearning: the adversarial nearest-wrong-class search against an analytic answer,
no attack gradient in the model's gradients, a reference that stays bit-identical, the shadow
unit's expand/prune bookkeeping, and the behaviour on digits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from conun.evaluation.results import RunRecord
from conun.methods.base import UnlearningBatch, UnsupportedScenarioError
from conun.methods.boundary import (
    BoundaryExpanding,
    BoundaryShrink,
    nearest_wrong_labels,
)
from conun.models import build_model
from conun.models.base import Classifier
from conun.models.heads import final_linear
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel
from digits_runs import batchnorm_statistics, run_keeping_model

CLASS_5 = ForgetSpec(classes=(5,))


class TwoPixelLinear(nn.Module):
    """``logits = W p + b`` on two-pixel images ``(B, 1, 1, 2)``, with ``p = x * std + mean`` the
    pixels of the normalised input ``x``. Class 0 holds ``p1 < 0.5, p2 < 0.5``; class 1 takes
    over when ``p1`` crosses 0.5, class 2 when ``p2`` does."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std
        self.weight = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
        self.bias = torch.tensor([0.0, -10.0, -10.0])

    def forward(self, x: Tensor) -> Tensor:
        pixels = (x * self.std + self.mean).flatten(1)  # (B, 2)
        return F.linear(pixels, self.weight, self.bias)  # (B, 3)


@pytest.mark.parametrize(("mean", "std"), [(0.0, 1.0), (0.5, 0.25)])
def test_fgsm_finds_the_nearest_wrong_class_of_a_linear_model(mean: float, std: float) -> None:
    # For class 0, grad_p CE = W^T (softmax - e_0) = (20 s_1, 20 s_2) > 0: FGSM moves both pixels
    # up by the bound (0.1), so the coordinate within 0.1 of 0.5 decides the class. Pixels are
    # multiples of 1/255 so that the 8-bit rounding keeps them exact.
    pixels = torch.tensor([[115, 77], [77, 115], [26, 26], [120, 122]]) / 255.0  # (4, 2)
    expected = torch.tensor([1, 2, 0, 2])  # p1 + 0.1 > 0.5 / p2 + 0.1 > 0.5 / neither / p2 wins
    model = TwoPixelLinear(mean, std)
    images = ((pixels - mean) / std).view(4, 1, 1, 2)
    labels = torch.zeros(4, dtype=torch.long)
    assert torch.equal(model(images).argmax(dim=1), labels)  # all start in class 0
    stats = torch.full((1, 1, 1, 1), mean), torch.full((1, 1, 1, 1), std)
    found = nearest_wrong_labels(model, images, labels, bound=0.1, mean=stats[0], std=stats[1])
    assert torch.equal(found, expected)
    # A bound too small to reach 0.5 from the nearest sample changes nothing.
    none = nearest_wrong_labels(model, images, labels, bound=0.01, mean=stats[0], std=stats[1])
    assert torch.equal(none, labels)
    # PGD with 5 steps of 0.02 inside the same 0.1 ball reaches the same classes.
    pgd = nearest_wrong_labels(
        model, images, labels, bound=0.1, mean=stats[0], std=stats[1], step=0.02, iterations=5
    )
    assert torch.equal(pgd, expected)


def fake_task(model: Classifier, *, seed: int = 0) -> Any:
    """The few fields of an UnlearningTask that prepare() reads."""
    data = SimpleNamespace(mean=(0.3,), std=(0.4,))
    return SimpleNamespace(model=model, data=data, generator=torch.Generator().manual_seed(seed))


def test_the_attack_leaves_no_gradient_in_the_model_and_the_reference_stays_fixed() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8)).eval()
    original = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    method = BoundaryShrink.for_scenario("class", {"bound": 0.3})
    method.prepare(model, fake_task(model))
    images, labels = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    targets = method.nearest_labels(images, labels)
    assert all(p.grad is None for p in model.parameters())  # the attack wrote no .grad
    terms = method.loss(model, UnlearningBatch(images, labels, None, None))
    terms.total.backward()
    got = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    # Exactly the gradient of CE toward the attack's labels, nothing from the attack itself.
    expected = torch.autograd.grad(
        F.cross_entropy(model(images), targets), list(model.parameters())
    )
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    # SGD with momentum and weight decay moves the model, never the attack's reference.
    optimizer = torch.optim.SGD(
        method.trainable_parameters(model), lr=0.1, momentum=0.9, weight_decay=5e-4
    )
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        method.loss(model, UnlearningBatch(images, labels, None, None)).total.backward()
        optimizer.step()
    assert method.reference is not None
    assert all(torch.equal(t, original[n]) for n, t in method.reference.state_dict().items())
    assert all(p.grad is None for p in method.reference.parameters())
    assert not torch.equal(model.state_dict()["head.weight"], original["head.weight"])


@pytest.mark.parametrize("name", ["small_cnn", "small_cnn_proj"])
def test_shadow_unit_expands_then_prunes_without_touching_the_head(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, input_shape=(1, 8, 8)).eval()
    before = {key: tensor.clone() for key, tensor in model.state_dict().items()}
    method = BoundaryExpanding.for_scenario("class", {})
    method.prepare(model, fake_task(model, seed=3))
    shadow = method.shadow
    assert shadow is not None and shadow.attached
    layer = final_linear(model, purpose="a test reads it")
    # The shadow row: Xavier-normal over the widened (D, C + 1) layer, from the task's generator.
    std = (2.0 / (layer.in_features + 11)) ** 0.5
    draw = torch.randn(1, layer.in_features, generator=torch.Generator().manual_seed(3)) * std
    assert torch.equal(shadow.weight.detach(), draw) and torch.equal(
        shadow.bias.detach(), torch.zeros(1)
    )
    images = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        wide = method.expanded_logits(model, images)  # (5, 11)
        head_input = model.features(images)
        if name == "small_cnn_proj":
            head_input = F.relu(head_input)  # the projection head is ReLU + Linear
        shadow_logit = head_input @ shadow.weight.T + shadow.bias
        assert wide.shape == (5, 11)
        assert torch.equal(wide[:, :10], model(images))  # the C original rows, unchanged
        torch.testing.assert_close(wide[:, 10:], shadow_logit)
    # The trainable set is the widened layer's: every model parameter plus the shadow row.
    trainable = method.trainable_parameters(model)
    assert len(trainable) == len(list(model.parameters())) + 2
    pruned = method.finish(model)
    assert pruned is model and not shadow.attached
    assert not layer._forward_hooks
    assert pruned(images).shape == (5, 10)
    after = pruned.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[key], before[key]) for key in before)


def test_only_the_class_scenario_is_supported() -> None:
    for method in (BoundaryShrink, BoundaryExpanding):
        with pytest.raises(UnsupportedScenarioError, match="class"):
            method.for_scenario("sample", {})
    with pytest.raises(ValueError, match="attack"):
        BoundaryShrink.for_scenario("class", {"attack": "cw"})


def test_a_head_without_a_linear_output_layer_is_a_clear_error() -> None:
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    model.head = nn.Identity()  # type: ignore[assignment]
    with pytest.raises(TypeError, match="no nn.Linear"):
        final_linear(model, purpose="a test reads it")


@pytest.mark.parametrize("method", ["boundary_shrink", "boundary_expanding"])
def test_both_forget_class_5_on_digits_with_the_paper_settings(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
    method: str,
) -> None:
    _, trained = digits_run
    original = run_on_digits(trained, CLASS_5, "original").metrics
    record = run_on_digits(trained, CLASS_5, method)
    metrics = record.metrics
    assert original["forget_train_acc"] > 0.9
    assert metrics["forget_train_acc"] <= 0.3 and metrics["forget_test_acc"] <= 0.3
    assert metrics["retain_test_acc"] >= original["retain_test_acc"] - 0.05
    # The paper's fixed schedule: 10 passes over the forget set.
    assert record.extra["stopped_by"] == "max_passes" and record.passes == 10
    assert record.history[0]["forget_train_acc"] > 0.9


@pytest.mark.parametrize("freeze", [False, True])
def test_expanding_freeze_batchnorm_keeps_the_running_statistics(
    digits_run: tuple[Path, TrainedModel], freeze: bool
) -> None:
    # Their boundary_expanding fine-tunes in train mode on batches of the forgotten class alone,
    # so BatchNorm re-estimates its statistics on them (the default); freeze_batchnorm keeps the
    # original's, separating that from the shadow-class fine-tuning itself.
    _, trained = digits_run
    before = batchnorm_statistics(trained.model)
    model, record, method = run_keeping_model(
        trained,
        CLASS_5,
        "boundary_expanding",
        options={"freeze_batchnorm": freeze},
        stopping={"max_passes": 1},
    )
    assert isinstance(method, BoundaryExpanding) and method.freeze_batchnorm() is freeze
    assert record.passes == 1 and before
    same = all(torch.equal(a, b) for a, b in zip(batchnorm_statistics(model), before, strict=True))
    assert same is freeze
