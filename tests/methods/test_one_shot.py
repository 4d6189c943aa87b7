"""Fisher forgetting and SSD: the vectorised Fisher against a per-sample loop, the posterior and
the dampening rule against hand-computed values, untouched weights that stay bit-identical, and
the behaviour on digits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from conun.evaluation.results import RunRecord
from conun.methods import UnsupportedScenarioError
from conun.methods.one_shot import (
    FisherForgetting,
    SelectiveSynapticDampening,
    batch_gradient_importance,
    dampen_,
    diagonal_fisher,
    fisher_posterior,
    output_layer_names,
)
from conun.models import build_model
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel

CLASS_5 = ForgetSpec(classes=(5,))
SAMPLES = ForgetSpec(fraction=0.05)


def tiny_model() -> nn.Module:
    """Conv + BatchNorm (eval) + in-place ReLU + linear head: every kind of layer small_cnn has."""
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(3)
    assert norm.running_mean is not None and norm.running_var is not None
    with torch.no_grad():  # non-trivial running statistics
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, bias=False),
        norm,
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 4),
    )
    return model.eval()


def test_vectorised_fisher_matches_a_per_sample_per_class_loop() -> None:
    model = tiny_model()
    images = torch.randn(7, 1, 6, 6)
    fisher = diagonal_fisher(model, images, chunk_size=3)  # chunks 3, 3, 1
    # Reference `hessian`: batch size 1; for each class y, p(y|x) * (d CE(x, y) / d theta)^2.
    parameters = list(model.named_parameters())
    reference = {name: torch.zeros_like(p) for name, p in parameters}
    for image in images:
        logits = model(image.unsqueeze(0))
        probabilities = F.softmax(logits, dim=1).detach()[0]
        for y in range(logits.shape[1]):
            loss = F.cross_entropy(logits, torch.tensor([y]))
            grads = torch.autograd.grad(loss, [p for _, p in parameters], retain_graph=True)
            for (name, _), grad in zip(parameters, grads, strict=True):
                reference[name] += probabilities[y] * grad.pow(2)
    assert fisher.keys() == reference.keys()
    for name, total in reference.items():
        torch.testing.assert_close(fisher[name], total / len(images), rtol=1e-4, atol=1e-9)
    assert all(bool((f >= 0).all()) for f in fisher.values())
    assert not model.training  # used as given, BatchNorm statistics untouched


def test_fisher_posterior_matches_hand_computed_values() -> None:
    alpha = 1e-6
    # 1-D (BatchNorm/bias): var = alpha * min(1/(F + 1e-8), 1e3) * 10.
    bias = torch.tensor([1.0, -2.0, 3.0])
    mean, var = fisher_posterior(
        bias, torch.tensor([0.0, 1e-2, 1.0]), alpha=alpha, output_layer=False
    )
    assert torch.equal(mean, bias)
    torch.testing.assert_close(var, torch.tensor([1e-2, 1e-3, 1e-5]), rtol=1e-5, atol=0)
    # 2-D hidden: clamp, then the mean over dimension 1 for each row; no x10.
    weight = torch.ones(2, 2)
    fisher = torch.tensor([[1.0, 0.5], [0.0, 1e-4]])  # 1/F: [1, 2], [1e3 (clamped), 1e4 -> 1e3]
    _, var = fisher_posterior(weight, fisher, alpha=alpha, output_layer=False)
    torch.testing.assert_close(var, torch.tensor([[1.5e-6, 1.5e-6], [1e-3, 1e-3]]))
    # Output layer: clamp at 1e2, forgotten row -> N(0, 1e-4), then x10 for the whole layer.
    head = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    fisher = torch.tensor([[1.0, 1.0], [1e-4, 1e-4], [1.0, 1.0]])
    mean, var = fisher_posterior(head, fisher, alpha=alpha, output_layer=True, forget_classes=(2,))
    torch.testing.assert_close(mean, torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]]))
    torch.testing.assert_close(var, torch.tensor([[1e-5] * 2, [1e-3] * 2, [1e-3] * 2]))
    head_bias = torch.tensor([1.0, 2.0, 3.0])
    mean, var = fisher_posterior(
        head_bias, torch.ones(3), alpha=alpha, output_layer=True, forget_classes=(0,)
    )
    torch.testing.assert_close(mean, torch.tensor([0.0, 2.0, 3.0]))
    torch.testing.assert_close(var, torch.tensor([1e-3, 1e-5, 1e-5]))


def test_output_layer_is_the_heads_class_rows() -> None:
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    assert output_layer_names(model) == {"head.weight", "head.bias"}
    projection = build_model("small_cnn_proj", num_classes=10, input_shape=(1, 8, 8))
    assert output_layer_names(projection) == {"head.1.weight", "head.1.bias"}
    with pytest.raises(ValueError, match="no `head`"):
        output_layer_names(tiny_model())  # type: ignore[arg-type]


def test_ssd_importance_is_the_mean_of_squared_batch_gradients() -> None:
    model = tiny_model()
    images, labels = torch.randn(10, 1, 6, 6), torch.randint(0, 4, (10,))
    indices = torch.tensor([0, 2, 3, 5, 6, 8, 9])
    importance = batch_gradient_importance(
        model,
        images,
        labels,
        indices,
        batch_size=3,
        generator=torch.Generator().manual_seed(1),
        channels_last=False,
    )
    # Same order as the function draws it: one permutation, cut into 3 + 3 + 1.
    order = indices[torch.randperm(7, generator=torch.Generator().manual_seed(1))]
    parameters = list(model.named_parameters())
    reference = {name: torch.zeros_like(p) for name, p in parameters}
    for batch in order.split(3):
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        grads = torch.autograd.grad(loss, [p for _, p in parameters])
        for (name, _), grad in zip(parameters, grads, strict=True):
            reference[name] += grad.pow(2) / 3  # three batches
    for name, expected in reference.items():
        torch.testing.assert_close(importance[name], expected, rtol=1e-5, atol=1e-10)


def test_dampening_rule_matches_hand_computed_values_and_spares_the_rest() -> None:
    weight = torch.tensor([2.0, -4.0, 1.0, 3.0, 5.0, -1.5, 0.7])
    original = weight.clone()
    forget = torch.tensor([10.0, 50.0, 0.5, 0.0, 20.0, 1.0, 3.0])
    full = torch.tensor([0.5, 1.0, 0.5, 0.0, 0.0, 0.1, 0.29])
    # alpha = 10: selected where forget > 10 * full -> entries 0, 1, 4, 6 (not 2: equal ratio
    # fails; not 3: 0 > 0 fails; not 5: 1.0 > 1.0 fails).
    # beta = min(lambda * full / forget, 1) with lambda = 2: [0.1, 0.04, -, -, 0, -, 0.19333].
    selected = dampen_(
        {"w": weight},
        {"w": forget},
        {"w": full},
        selection_weighting=10.0,
        dampening_constant=2.0,
    )
    assert selected == 4
    expected = torch.tensor([0.2, -0.16, 1.0, 3.0, 0.0, -1.5, 0.7 * 2 * 0.29 / 3.0])
    torch.testing.assert_close(weight, expected)
    for i in (2, 3, 5):  # not selected: the very same bits
        assert torch.equal(weight[i], original[i])
    # A large lambda gives beta > 1, clamped to 1: selected entries keep their value exactly.
    kept = original.clone()
    dampen_(
        {"w": kept},
        {"w": forget},
        {"w": full},
        selection_weighting=10.0,
        dampening_constant=1e6,
    )
    assert torch.equal(kept[torch.tensor([0, 1, 6])], original[torch.tensor([0, 1, 6])])
    assert kept[4] == 0  # I_D = 0: beta = 0 whatever lambda


def ssd_weights_only_shrink(before: nn.Module, after: nn.Module) -> tuple[int, int]:
    """Checks every entry is either bit-identical or ``beta * w`` with ``beta`` in [0, 1);
    returns (changed, total)."""
    changed = total = 0
    for (name, old), (_, new) in zip(
        before.named_parameters(), after.named_parameters(), strict=True
    ):
        same = new == old
        ratio = new[~same] / old[~same]
        assert bool(((ratio >= 0) & (ratio < 1)).all()), name
        changed += int((~same).sum())
        total += old.numel()
    for (name, old_buffer), (_, new_buffer) in zip(
        before.named_buffers(), after.named_buffers(), strict=True
    ):
        assert torch.equal(old_buffer, new_buffer), name
    return changed, total


def test_ssd_forgets_a_digits_class_by_shrinking_few_weights(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
) -> None:
    _, trained = digits_run
    original = run_on_digits(trained, CLASS_5, "original").metrics
    record = run_on_digits(trained, CLASS_5, "ssd", seed=1)
    assert record.metrics["forget_train_acc"] <= 0.1
    assert record.metrics["retain_test_acc"] >= original["retain_test_acc"] - 0.05
    assert 0 < record.extra["dampened_fraction"] < 0.2
    assert record.forget_batches is None and record.passes is None


def test_ssd_edits_only_selected_weights_on_digits(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    from conun.workflows.unlearning import run_method

    _, trained = digits_run
    split = SAMPLES.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    config = resolve_unlearn_config(
        "ssd", "sample", dataset="digits", layers=[("test", {"seed": 1})]
    ).config
    method = SelectiveSynapticDampening.for_scenario("sample", config.options)
    edited, record = run_method(
        config,
        trained.model,
        trained.data,
        split,
        method=method,
        train_config=None,
        original_seconds=None,
        quiet=True,
    )
    changed, total = ssd_weights_only_shrink(trained.model, edited)
    assert changed == record.extra["dampened_weights"] > 0
    assert changed < total
    assert record.metrics["test_acc"] >= 0.85


def test_fisher_forgets_a_digits_class_and_keeps_the_rest(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
) -> None:
    _, trained = digits_run
    original = run_on_digits(trained, CLASS_5, "original").metrics
    options = {"max_samples": 200}  # a subset keeps the test fast; the estimate is a mean
    first = run_on_digits(trained, CLASS_5, "fisher", options=options)
    assert first.metrics["forget_train_acc"] <= 0.1
    assert first.metrics["retain_test_acc"] >= original["retain_test_acc"] - 0.05
    assert first.extra["fisher_samples"] == 200
    # The noise comes from the run's seed: same seed, same numbers; another seed, others.
    again = run_on_digits(trained, CLASS_5, "fisher", options=options)
    assert again.metrics == first.metrics
    other = run_on_digits(trained, CLASS_5, "fisher", options=options, seed=3)
    assert other.metrics != first.metrics or other.extra != first.extra


def test_fisher_noise_follows_the_posterior(digits_run: tuple[Path, TrainedModel]) -> None:
    """On the real model: weight - mean, divided by the posterior's standard deviation, is
    standard normal, and the forgotten class's head row is noise around 0."""
    from conun.workflows.unlearning import run_method

    _, trained = digits_run
    split = CLASS_5.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    config = resolve_unlearn_config(
        "fisher", "class", dataset="digits", layers=[("test", {"options": {"max_samples": 200}})]
    ).config
    method = FisherForgetting.for_scenario("class", config.options)
    edited, _ = run_method(
        config,
        trained.model,
        trained.data,
        split,
        method=method,
        train_config=None,
        original_seconds=None,
        quiet=True,
    )
    head = edited.get_submodule("head")
    assert isinstance(head, nn.Linear)
    # Row 5: N(0, 1e-4 * 10) for every entry.
    row: Tensor = head.weight[5].detach()
    assert abs(float(row.mean())) < 0.02 and 0.02 < float(row.std()) < 0.045
    # Elsewhere the edit is small next to the weights (alpha = 1e-6, variance <= 1e-3 * 10).
    for (name, old), (_, new) in zip(
        trained.model.named_parameters(), edited.named_parameters(), strict=True
    ):
        delta = (new - old).detach().abs()
        if name.startswith("head."):
            delta = delta[torch.arange(10) != 5]  # the forgotten row was reset to 0
        assert float(delta.max()) < 0.6, name


def test_both_methods_refuse_unknown_options_and_scenarios() -> None:
    from conun.config import ConfigError

    with pytest.raises(ConfigError, match="allowed options: alpha, max_samples"):
        FisherForgetting.for_scenario("class", {"lr": 1.0})
    with pytest.raises(ConfigError, match="selection_weighting"):
        SelectiveSynapticDampening.for_scenario("sample", {"selection_weighting": -1.0})
    with pytest.raises(UnsupportedScenarioError):
        FisherForgetting.for_scenario("subclass", {})  # type: ignore[arg-type]
