"""Shared fixtures: a digits original trained once per session (seconds on a CPU)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conun.config import TrainConfig, build_config, preset_path, read_yaml
from conun.engine.runs import TrainedModel, train_original


def digits_config(**changes: object) -> TrainConfig:
    """The digits preset with a shorter schedule: enough for >= 95% test accuracy."""
    return build_config(
        TrainConfig, [read_yaml(preset_path("train", "digits")), {"epochs": 15, **changes}]
    )


@pytest.fixture(scope="session")
def make_digits_config() -> Callable[..., TrainConfig]:
    """:func:`digits_config` as a fixture, for tests that vary the recipe."""
    return digits_config


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainedModel]:
    """An original small_cnn trained on digits, written to a run directory."""
    out = tmp_path_factory.mktemp("digits-original")
    return out, train_original(digits_config(), out, quiet=True)
