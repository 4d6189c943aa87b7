"""Shared fixtures: a digits original trained once per session (seconds on a CPU)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from conun.config import TrainConfig, build_train_config
from conun.evaluation.results import RunRecord
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel, train_original
from conun.workflows.unlearning import run_method
from interruptions import SimulatedCrashError


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread per test process, and in the processes the tests start: ``make test``
    runs one pytest-xdist worker per core, and two workers of two threads each on two cores
    slow every test several-fold. Serial runs use one thread too, so that a test's numbers do
    not depend on how it was run (the digits originals differ in their last bits between one
    and two threads)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def digits_config(**changes: object) -> TrainConfig:
    """The digits preset with a shorter schedule: enough for >= 95% test accuracy."""
    return build_train_config("digits", [{"epochs": 15, **changes}])


@pytest.fixture(scope="session")
def make_digits_config() -> Callable[..., TrainConfig]:
    """:func:`digits_config` as a fixture, for tests that vary the recipe."""
    return digits_config


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainedModel]:
    """An original small_cnn trained on digits, written to a run directory."""
    out = tmp_path_factory.mktemp("digits-original")
    return out, train_original(digits_config(), out, quiet=True)


def unlearn_on_digits(
    trained: TrainedModel, spec: ForgetSpec, method: str = "contrastive", **config: object
) -> RunRecord:
    """Run ``method`` on a digits original with the shipped presets (plus ``config`` layered on
    top) and return its results row; the original itself is left untouched."""
    split = spec.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    unlearn_config = resolve_unlearn_config(
        method, split.scenario, dataset="digits", layers=[("test", config)]
    ).config
    _, record = run_method(
        unlearn_config,
        trained.model,
        trained.data,
        split,
        train_config=TrainConfig.model_validate(trained.meta.train_config),
        original_seconds=trained.meta.seconds,
        quiet=True,
    )
    return record


@pytest.fixture(scope="session")
def run_on_digits() -> Callable[..., RunRecord]:
    """:func:`unlearn_on_digits` as a fixture."""
    return unlearn_on_digits


@pytest.fixture
def interrupt_after() -> Iterator[Callable[[int], None]]:
    """``interrupt_after(k)``: optimizers raise :class:`SimulatedCrashError` after the k-th
    step (counted over all optimizers from the call on)."""
    handles: list[Any] = []

    def arm(steps: int) -> None:
        count = 0

        def hook(*_: Any) -> None:
            nonlocal count
            count += 1
            if count == steps:
                raise SimulatedCrashError(f"interrupted after step {steps}")

        handles.append(register_optimizer_step_post_hook(hook))

    yield arm
    for handle in handles:
        handle.remove()
