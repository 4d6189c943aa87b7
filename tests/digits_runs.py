"""Running one unlearning method on a digits original and keeping what the tests inspect."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from conun.config import TrainConfig
from conun.engine.task import UnlearningTask
from conun.evaluation.results import RunRecord
from conun.methods import get_method
from conun.methods.base import UnlearningMethod
from conun.models.base import Classifier
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel
from conun.workflows.unlearning import run_method


def digits_task(
    trained: TrainedModel, spec: ForgetSpec | None = None, **changes: object
) -> UnlearningTask:
    """Unlearning ``spec`` (default: class 4) from the digits original with contrastive's
    settings for its scenario (and ``changes`` layered on top), seed 0, on a copy of the model."""
    spec = spec if spec is not None else ForgetSpec(classes=(4,))
    split = spec.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    layers = [("test", dict(changes))]
    config = resolve_unlearn_config(
        "contrastive", split.scenario, dataset="digits", layers=layers
    ).config
    return UnlearningTask(
        model=copy.deepcopy(trained.model),
        data=trained.data,
        split=split,
        config=config,
        train_config=None,
        original_seconds=None,
        generator=torch.Generator().manual_seed(0),
    )


def run_keeping_model(
    trained: TrainedModel, spec: ForgetSpec, method: UnlearningMethod | str, **config: Any
) -> tuple[Classifier, RunRecord, UnlearningMethod]:
    """Like the ``run_on_digits`` fixture (``method``'s digits presets plus ``config``), but
    also return the unlearned model and the method object (whose state the tests inspect).

    ``method``: a registered name (built from its digits preset's options), or a method object
    built by the test (e.g. a subclass that records its state), run as it is."""
    name = method if isinstance(method, str) else method.name
    split = spec.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    unlearn_config = resolve_unlearn_config(
        name, split.scenario, dataset="digits", layers=[("test", config)]
    ).config
    runner = (
        get_method(method).for_scenario(split.scenario, unlearn_config.options)
        if isinstance(method, str)
        else method
    )
    model, record = run_method(
        unlearn_config,
        trained.model,
        trained.data,
        split,
        method=runner,
        train_config=TrainConfig.model_validate(trained.meta.train_config),
        original_seconds=trained.meta.seconds,
        quiet=True,
    )
    return model, record, runner


def batchnorm_statistics(model: nn.Module) -> list[torch.Tensor]:
    """Every BatchNorm layer's running mean and variance, cloned."""
    return [
        buffer.detach().clone()
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for buffer in (module.running_mean, module.running_var)
        if buffer is not None
    ]
