"""Every registered method runs on real digits data through the shared engine, writes valid
results, and (unless it is the untouched original) halves the forgotten class's accuracy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conun.evaluation.results import Results, RunRecord
from conun.methods import METHODS
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel

# Only the scenarios each method is meant for: nothing is skipped.
CASES = [
    (name, scenario) for name, method in sorted(METHODS.items()) for scenario in method.scenarios
]
REQUESTS = {"class": ForgetSpec(classes=(5,)), "sample": ForgetSpec(fraction=0.05)}


@pytest.mark.parametrize(("method", "scenario"), CASES)
def test_method_runs_and_writes_valid_results(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
    tmp_path: Path,
    method: str,
    scenario: str,
) -> None:
    _, trained = digits_run
    record = run_on_digits(trained, REQUESTS[scenario], method)
    Results("digits", "small_cnn", 0, "cpu", [record]).write(tmp_path)  # validates the schema
    assert record.method == method and record.seconds >= 0
    if scenario == "class" and method != "original":
        before = run_on_digits(trained, REQUESTS[scenario], "original").metrics
        assert record.metrics["forget_train_acc"] <= before["forget_train_acc"] / 2, (
            method,
            record.metrics,
        )
