"""UNSIR: the noise objective against its analytic gradient, noise that raises the model's loss
on the forgotten class without changing the model, the per-class retain subset, and the
impair-repair behaviour on digits."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_pre_hook

import conun.methods.unsir as unsir_module
from conun.config import OptimizerConfig
from conun.engine.training import make_optimizer
from conun.evaluation.results import RunRecord
from conun.methods.base import UnsupportedScenarioError
from conun.methods.unsir import Unsir, learn_error_maximizing_noise, retain_subset
from conun.models.base import Classifier
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel

CLASS_5 = ForgetSpec(classes=(5,))


def test_one_noise_step_follows_the_analytic_gradient() -> None:
    # A linear model on (B, 1, 2, 2) inputs: logits = W vec(N) + b. With CE's batch mean and
    # the regulariser's batch mean, the gradient of -CE(f(N), c) + lam * mean_i ||N_i||^2 for
    # sample i is  -(1/B) W^T (softmax_i - e_c) + (2 lam / B) N_i, and Adam's first step is
    # -lr * g / (|g| + eps) (bias-corrected moments m = g, v = g^2).
    torch.manual_seed(0)
    linear = nn.Linear(4, 3)
    model = nn.Sequential(nn.Flatten(), linear)
    shape, label, lam, lr = (5, 1, 2, 2), 2, 0.1, 0.1
    start = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    learned = learn_error_maximizing_noise(
        model,
        label,
        shape,
        steps=1,
        lr=lr,
        l2_weight=lam,
        generator=torch.Generator().manual_seed(7),
        device=torch.device("cpu"),
    )
    flat = start.flatten(1)  # (B, 4)
    with torch.no_grad():
        probabilities = F.softmax(linear(flat), dim=1)  # (B, 3)
        residual = probabilities - F.one_hot(torch.tensor(label), 3).float()
        gradient = -(residual @ linear.weight) / 5 + 2 * lam * flat / 5  # (B, 4)
        expected = flat - lr * gradient / (gradient.abs() + 1e-8)
    torch.testing.assert_close(learned.noise.flatten(1), expected)
    assert learned.label == label and learned.cross_entropy.shape == (2,)
    assert all(p.grad is None for p in model.parameters())


def test_noise_raises_the_forget_class_loss_and_leaves_the_model_alone(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    _, trained = digits_run
    model = copy.deepcopy(trained.model).eval()  # the session's original stays untouched
    for parameter in model.parameters():
        parameter.grad = None  # training left gradients behind; the noise must add none
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    learned = learn_error_maximizing_noise(
        model,
        5,
        (64, 1, 8, 8),
        steps=40,
        lr=0.1,
        l2_weight=0.1,
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
    )
    trace: Tensor = learned.cross_entropy  # (41,)
    assert trace.shape == (41,)
    assert float(trace[-1]) > float(trace[0]) + 1.0
    # Not a lucky end point: the loss rises over the run (second half above the first).
    assert float(trace[20:].mean()) > float(trace[:20].mean())
    with torch.no_grad():
        predictions = model(learned.noise).argmax(dim=1)
    assert float((predictions == 5).float().mean()) < 0.05  # nothing the model calls a 5
    after = model.state_dict()
    assert all(torch.equal(after[name], before[name]) for name in before)  # BN stats included
    assert all(p.grad is None for p in model.parameters())


def test_retain_subset_draws_up_to_k_per_retained_class() -> None:
    labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 5 + [3] * 4)
    retain = torch.nonzero(labels != 3).squeeze(1)  # class 3 forgotten
    subset = retain_subset(labels, retain, 3, generator=torch.Generator().manual_seed(0))
    assert torch.isin(subset, retain).all() and subset.unique().numel() == subset.numel()
    assert torch.bincount(labels[subset], minlength=4).tolist() == [3, 2, 3, 0]
    again = retain_subset(labels, retain, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(subset, again)


def test_only_the_class_scenario_is_supported() -> None:
    with pytest.raises(UnsupportedScenarioError, match="class"):
        Unsir.for_scenario("sample", {})
    with pytest.raises(ValueError, match="allowed options"):
        Unsir.for_scenario("class", {"noise_step": 3})


def test_unsir_forgets_class_5_on_digits_and_repair_restores_utility(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
) -> None:
    _, trained = digits_run
    original = run_on_digits(trained, CLASS_5, "original").metrics
    # The digits preset (2 noise copies, 5 repair epochs; see its comment) is layered on the
    # notebook's defaults. Measured drops of retain test accuracy on seeds 0-4: 0.3-2.8 points.
    record = run_on_digits(trained, CLASS_5, "unsir")
    digits = resolve_unlearn_config("unsir", "class", dataset="digits").config.options
    assert (digits["noise_repeats"], digits["repair_epochs"]) == (2, 5)
    metrics = record.metrics
    assert metrics["forget_train_acc"] <= 0.1 and metrics["forget_test_acc"] <= 0.1
    assert metrics["retain_test_acc"] >= original["retain_test_acc"] - 0.05
    # History: at the start, after impair, after repair.
    assert [h["phase"] for h in record.history] == [0, 1, 2]
    assert record.history[0]["forget_train_acc"] > 0.9
    assert record.forget_batches is None and record.extra["stopped_by"] == "schedule"
    noise_ce = record.extra["noise_cross_entropy"]["5"]
    assert noise_ce[1] > noise_ce[0]


def test_impair_mixes_noise_and_repair_steps_on_the_retain_subset_alone(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Their notebook: impair = one epoch of Adam (lr 0.02) over the shuffled union of the noise
    # copies and the retain subset; repair = a fresh Adam (lr 0.01) over the retain subset alone.
    _, trained = digits_run
    # A fingerprint per image (a fixed random projection, rounded) tells training images from
    # noise without comparing every pair of images.
    projection = torch.randn(
        trained.data.train.images[0].numel(), generator=torch.Generator().manual_seed(0)
    ).double()

    def fingerprint(images: Tensor) -> Tensor:
        return (images.detach().flatten(1).double() @ projection * 1e6).round().long()

    train_keys = fingerprint(trained.data.train.images)
    optimizers: list[tuple[str, float]] = []
    batches: list[torch.Tensor] = []  # per train-mode forward: is each image a training image?

    def record_optimizer(parameters: object, config: OptimizerConfig) -> torch.optim.Optimizer:
        optimizers.append((config.name, config.lr))
        return make_optimizer(parameters, config)

    def record_batch(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        # The classifier's own forward in train mode: the impair and repair steps (the noise is
        # learned and the checks are made in eval mode).
        if isinstance(module, Classifier) and module.training:
            batches.append(torch.isin(fingerprint(inputs[0]), train_keys))  # (B,)

    monkeypatch.setattr(unsir_module, "make_optimizer", record_optimizer)
    handle = register_module_forward_pre_hook(record_batch)
    try:
        record = run_on_digits(trained, CLASS_5, "unsir", options={"repair_lr": 0.005})
    finally:
        handle.remove()
    options = resolve_unlearn_config("unsir", "class", dataset="digits").config
    assert optimizers == [("adam", options.optimizer.lr), ("adam", 0.005)]
    subset = record.extra["retain_subset_size"]
    repair_steps = options.options["repair_epochs"] * -(-subset // 256)
    impair, repair = batches[:-repair_steps], batches[-repair_steps:]
    assert all(bool(known.all()) for known in repair)  # retain subset only
    # Impair: every noise copy (one class, B_n = 256) and every retain-subset sample, once.
    assert sum(int((~known).sum()) for known in impair) == 256 * options.options["noise_repeats"]
    assert sum(int(known.sum()) for known in impair) == subset
