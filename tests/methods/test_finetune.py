"""finetune and l1_sparse: the l1 schedule and penalty against their formulas, pruned weights
that stay exactly zero, and the behaviour on digits against the original."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conun.config import ConfigError
from conun.evaluation.results import RunRecord
from conun.methods.base import UnlearningBatch
from conun.methods.finetune import (
    Finetune,
    L1Sparse,
    l1_weight,
    magnitude_prune,
    prunable_weights,
)
from conun.models import build_model
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel
from digits_runs import run_keeping_model

CLASS_5 = ForgetSpec(classes=(5,))


def test_l1_weight_decays_linearly_per_epoch() -> None:
    alpha = 5e-4
    assert [l1_weight(alpha, e, 10, 0) for e in range(10)] == pytest.approx(
        [alpha * (10 - e) / 10 for e in range(10)]
    )
    # With two penalty-free final epochs the decay runs over the first eight.
    schedule = [l1_weight(alpha, e, 10, 2) for e in range(10)]
    assert schedule[:8] == pytest.approx([alpha * (8 - e) / 8 for e in range(8)])
    assert schedule[8:] == [0.0, 0.0]


def test_l1_sparse_loss_is_retain_ce_plus_gamma_times_l1_norm() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    method = L1Sparse.for_scenario("class", {"alpha": 1e-3})
    assert isinstance(method, L1Sparse)
    method._epochs, method._steps_per_epoch, method._step = 4, 3, 7  # epoch 2 of 4
    images, labels = torch.randn(6, 1, 8, 8), torch.arange(6)
    terms = method.loss(model, UnlearningBatch(None, None, images, labels))
    gamma = 1e-3 * (1 - 2 / 4)
    # Reference: the l1 norm entry by entry, over every parameter (biases, BatchNorm too).
    reference_l1 = sum(
        float(value.abs())
        for parameter in model.parameters()
        for value in parameter.detach().flatten()
    )
    expected = F.cross_entropy(model(images), labels).item() + gamma * reference_l1
    assert terms.total.item() == pytest.approx(expected, rel=1e-5)
    assert terms.parts["l1"].item() == pytest.approx(reference_l1, rel=1e-5)
    # The penalty's gradient is gamma * sign(theta) on top of the cross-entropy's.
    model.zero_grad()
    F.cross_entropy(model(images), labels).backward()
    ce_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    method.loss(model, UnlearningBatch(None, None, images, labels)).total.backward()
    for parameter, ce_grad in zip(model.parameters(), ce_grads, strict=True):
        assert parameter.grad is not None
        torch.testing.assert_close(parameter.grad, ce_grad + gamma * parameter.detach().sign())


def test_magnitude_pruning_is_global_over_conv_and_linear_weights() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        model[0].weight.fill_(0.01)  # 18 small conv weights
        model[3].weight.copy_(torch.arange(1, 33, dtype=torch.float32).view(4, 8))
    weights = prunable_weights(model)
    assert [w.shape for w in weights] == [model[0].weight.shape, model[3].weight.shape]
    magnitude_prune(weights, 0.5)  # 25 of the 50 weights go: every conv weight + 7 linear ones
    assert bool((model[0].weight == 0).all())
    assert torch.equal(model[3].weight.flatten()[:7], torch.zeros(7)) and bool(
        (model[3].weight.flatten()[7:] != 0).all()
    )
    assert model[0].bias is not None and bool((model[0].bias != 0).any())  # biases untouched


def test_pruned_weights_stay_exactly_zero_under_momentum_and_weight_decay(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    _, trained = digits_run
    model, record, method = run_keeping_model(
        trained,
        CLASS_5,
        "l1_sparse",
        options={"prune_ratio": 0.6},
        optimizer={"momentum": 0.9, "weight_decay": 5e-4},
        stopping={"rule": "none", "max_passes": 2},
    )
    masks = method._zero_masks
    weights = prunable_weights(model)
    assert len(masks) == len(weights) > 0
    total = sum(w.numel() for w in weights)
    assert sum(int(zero.sum()) for _, zero in masks) >= int(0.6 * total)
    for weight, (_, zero) in zip(weights, masks, strict=True):
        assert torch.equal(weight[zero], torch.zeros_like(weight[zero]))
        assert bool((weight[~zero] != 0).all())  # the surviving weights did train
    # the mask did not stop unlearning from running on the rest
    assert record.passes == pytest.approx(2.0)


def test_l1_sparse_without_pruning_has_no_mask(digits_run: tuple[Path, TrainedModel]) -> None:
    _, trained = digits_run
    _, _, method = run_keeping_model(
        trained, CLASS_5, "l1_sparse", stopping={"rule": "none", "max_passes": 1}
    )
    assert method._zero_masks == []
    assert method._step == method._steps_per_epoch  # one pass, counted in steps


def test_finetune_uses_only_the_retain_set() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    method = Finetune.for_scenario("sample", {})
    assert not Finetune.uses_forget and Finetune.pass_over == "retain"
    images, labels = torch.randn(5, 1, 8, 8), torch.arange(5)
    terms = method.loss(model, UnlearningBatch(None, None, images, labels))
    torch.testing.assert_close(terms.total, F.cross_entropy(model(images), labels))
    with pytest.raises(ConfigError, match="allowed options: none"):
        Finetune.for_scenario("class", {"alpha": 1.0})
    with pytest.raises(ConfigError, match="less than 1"):
        L1Sparse.for_scenario("class", {"prune_ratio": 1.0})


@pytest.mark.parametrize("method", ["finetune", "l1_sparse"])
def test_class_forgotten_on_digits_with_utility_kept(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
    method: str,
) -> None:
    _, trained = digits_run
    original = run_on_digits(trained, CLASS_5, "original").metrics
    record = run_on_digits(trained, CLASS_5, method)
    metrics = record.metrics
    assert record.extra["stopped_by"] == "max_passes" and record.passes == pytest.approx(10.0)
    assert record.forget_batches is None  # the forget set is never touched
    assert metrics["forget_train_acc"] <= 0.1 and metrics["forget_test_acc"] <= 0.15
    assert metrics["retain_test_acc"] >= original["retain_test_acc"] - 0.03


@pytest.mark.parametrize("method", ["finetune", "l1_sparse"])
def test_sample_scenario_keeps_test_accuracy(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
    method: str,
) -> None:
    _, trained = digits_run
    original = run_on_digits(trained, ForgetSpec(fraction=0.05), "original").metrics
    record = run_on_digits(trained, ForgetSpec(fraction=0.05), method)
    assert record.metrics["test_acc"] >= original["test_acc"] - 0.02
    assert record.metrics["retain_train_acc"] >= 0.98
