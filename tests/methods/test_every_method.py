"""Every registered method runs on real digits data through the shared engine, writes valid
results, and (unless it is the untouched original) halves the forgotten class's accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conun.config import TrainConfig, build_unlearn_config
from conun.engine.runs import ForgetSpec, TrainedModel, run_method
from conun.evaluation.results import Results
from conun.methods import available_methods, get_method


@pytest.mark.parametrize("method", available_methods())
@pytest.mark.parametrize("scenario", ["class", "sample"])
def test_method_runs_and_writes_valid_results(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path, method: str, scenario: str
) -> None:
    _, trained = digits_run
    registered = get_method(method)
    if scenario not in registered.scenarios:
        pytest.skip(
            f"{method} is not meant for the {scenario} scenario"
        )  # by design, not a failure
    spec = ForgetSpec(classes=(5,)) if scenario == "class" else ForgetSpec(fraction=0.05)
    split = spec.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    config = build_unlearn_config(method, scenario, dataset="digits")
    runner = registered.for_scenario(split.scenario, config.options)
    train_config = TrainConfig.model_validate(trained.meta.train_config)
    _, record = run_method(
        runner,
        trained.model,
        trained.data,
        split,
        config,
        train_config=train_config,
        original_seconds=trained.meta.seconds,
        quiet=True,
    )
    Results("digits", "small_cnn", 0, "cpu", [record]).write(tmp_path)  # validates the schema
    assert record.method == method and record.seconds >= 0
    if scenario == "class" and method != "original":
        before = run_method(
            get_method("original").for_scenario("class", {}),
            trained.model,
            trained.data,
            split,
            config,
            train_config=train_config,
            original_seconds=0.0,
            quiet=True,
        )[1].metrics["forget_train_acc"]
        assert record.metrics["forget_train_acc"] <= before / 2, (method, record.metrics)
