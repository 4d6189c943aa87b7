"""Training: reproducible on the CPU, reaches a useful accuracy, writes a valid run directory."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conun.config import TrainConfig
from conun.engine.training import FrozenModules
from conun.evaluation.results import validate_results
from conun.workflows.training import TrainedModel, train_original


def test_same_seed_gives_identical_weights_and_metrics(
    make_digits_config: Callable[..., TrainConfig],
) -> None:
    digits_config = make_digits_config
    config = digits_config(epochs=2)
    first = train_original(config, None, quiet=True)
    second = train_original(config, None, quiet=True)
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert first.results.runs[0].metrics == second.results.runs[0].metrics
    other = train_original(digits_config(epochs=2, seed=1), None, quiet=True)
    assert not torch.equal(
        next(iter(first.model.state_dict().values())), next(iter(other.model.state_dict().values()))
    )


def test_original_run_directory(digits_run: tuple[Path, TrainedModel]) -> None:
    out, trained = digits_run
    assert {p.name for p in out.iterdir()} >= {
        "checkpoint.safetensors",
        "config.yaml",
        "results.json",
        "results.md",
    }
    results = json.loads((out / "results.json").read_text())
    validate_results(results)
    (run,) = results["runs"]
    assert run["method"] == "original" and run["scenario"] == "none" and run["seconds"] > 0
    assert run["metrics"]["test_acc"] >= 0.95
    assert len(run["epochs"]) == 15
    # The validation split is held out of training and recorded for the stopping rules.
    # (stratified: rounded per class, so within one sample per class of 10%)
    assert abs(len(trained.meta.validation) - 0.1 * len(trained.data.train)) <= 10


@pytest.mark.parametrize("model", ["resnet18", "resnet18_proj"])
def test_resnets_train_end_to_end_on_a_small_subset(
    make_digits_config: Callable[..., TrainConfig], model: str
) -> None:
    config = make_digits_config(
        model=model, epochs=1, max_train_samples=64, augment=True, batch_size=32
    )
    trained = train_original(config, None, quiet=True)
    assert len(trained.data.train) == 64
    assert 0.0 <= trained.results.runs[0].metrics["test_acc"] <= 1.0
    assert trained.meta.model == model


def test_a_set_of_k_batches_plus_one_sample_trains(
    digits_run: tuple[Path, TrainedModel], make_digits_config: Callable[..., TrainConfig]
) -> None:
    """65 samples at batch 64: the lone 65th sample joins the last batch instead of reaching
    BatchNorm alone (which raises in training mode)."""
    from conun.engine.training import train_classifier
    from conun.models import build_model

    _, trained = digits_run
    data = trained.data
    config = make_digits_config(epochs=1, batch_size=64)
    model = build_model(config.model, num_classes=data.num_classes, input_shape=data.input_shape)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model.train()(data.train.images[:1])
    outcome = train_classifier(
        model, data.train.subset(torch.arange(65)), config, generator=torch.Generator(), quiet=True
    )
    assert len(outcome.epochs) == 1 and math.isfinite(outcome.epochs[0]["loss"])


def test_frozen_modules_lose_their_gradients_stay_in_eval_mode_and_come_back() -> None:
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(36, 2))
    model[0].bias.requires_grad_(False)  # a caller's own choice, which restore() keeps
    frozen = FrozenModules()
    frozen.freeze([model[0], model[1], model[0]])  # repeated modules count once
    assert not any(p.requires_grad for p in [*model[0].parameters(), *model[1].parameters()])
    assert frozen.excludes(list(model.parameters())) == list(model[3].parameters())
    model.train()
    frozen.set_eval()
    assert not model[1].training and model[3].training
    running_mean = model[1].running_mean.clone()
    loss = model(torch.randn(3, 1, 5, 5)).sum()
    loss.backward()
    # No gradient reaches the frozen modules and BatchNorm kept its statistics.
    assert model[0].weight.grad is None and model[1].weight.grad is None
    assert model[3].weight.grad is not None
    assert torch.equal(model[1].running_mean, running_mean)
    frozen.restore()
    assert model[0].weight.requires_grad and model[1].weight.requires_grad
    assert not model[0].bias.requires_grad
    assert frozen.excludes(list(model.parameters())) == list(model.parameters())


def test_single_parameters_can_be_frozen_too() -> None:
    # A ViT's position embedding belongs to no submodule: frozen on its own, it gets no
    # gradient while the module holding it stays in train mode.
    holder = torch.nn.Linear(3, 2)
    frozen = FrozenModules()
    frozen.freeze([holder.bias])
    assert frozen.modules == [] and not holder.bias.requires_grad
    assert frozen.excludes(list(holder.parameters())) == [holder.weight]
    holder.train()
    frozen.set_eval()
    assert holder.training
    holder(torch.randn(4, 3)).sum().backward()
    assert holder.bias.grad is None and holder.weight.grad is not None
    frozen.restore()
    assert holder.bias.requires_grad
