"""run_method resolves the method from the config, runs it on a copy and evaluates it; bad
methods, scenarios and options fail before any data is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from conun.config import ConfigError, TrainConfig, UnlearnConfig
from conun.methods import UnknownMethodError, UnsupportedScenarioError
from conun.workflows import unlearning
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.inputs import validation_of
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel
from conun.workflows.unlearning import resolve_method, run_method, unlearn_checkpoint


def test_resolve_method_names_what_is_wrong() -> None:
    with pytest.raises(UnknownMethodError, match="registered: "):
        resolve_method(UnlearnConfig(method="magic"), "class")
    with pytest.raises(UnsupportedScenarioError, match="lcodec"):
        resolve_method(UnlearnConfig(method="lcodec"), "class")
    with pytest.raises(ConfigError, match="allowed options"):
        resolve_method(UnlearnConfig(method="contrastive", options={"temprature": 1}), "class")
    config = UnlearnConfig(method="contrastive", options={"temperature": 0.5})
    method = resolve_method(config, "sample")
    assert method.name == "contrastive"
    assert method.options.model_dump()["temperature"] == 0.5


def test_run_method_resolves_the_config_and_leaves_the_model(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    _, trained = digits_run
    split = ForgetSpec(fraction=0.02).resolve(trained.data, validation_of(trained.meta), 0)
    config = resolve_unlearn_config(
        "contrastive",
        "sample",
        dataset="digits",
        layers=[("test", {"stopping": {"rule": "none", "max_passes": 1}})],
    ).config
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}

    def run(**method: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        model, record = run_method(
            config,
            trained.model,
            trained.data,
            split,
            train_config=TrainConfig.model_validate(trained.meta.train_config),
            original_seconds=trained.meta.seconds,
            quiet=True,
            **method,
        )
        return model.state_dict(), record.to_dict()

    resolved_weights, resolved = run()
    given_weights, given = run(method=resolve_method(config, "sample"))
    assert resolved["method"] == "contrastive" and resolved["passes"] == 1
    assert resolved["metrics"] == given["metrics"] and resolved["history"] == given["history"]
    for name, tensor in resolved_weights.items():
        assert torch.equal(tensor, given_weights[name]), name
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_unlearn_checkpoint_fails_before_loading_data(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint, _ = digits_run

    def no_loading(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("data were loaded before the request was validated")

    monkeypatch.setattr(unlearning, "load_training_data", no_loading)
    out = tmp_path / "out"
    bad_option = UnlearnConfig(method="contrastive", options={"temprature": 1})
    with pytest.raises(ConfigError, match="allowed options"):
        unlearn_checkpoint(checkpoint, ForgetSpec(classes=(3,)), bad_option, out)
    with pytest.raises(UnsupportedScenarioError):
        unlearn_checkpoint(
            checkpoint, ForgetSpec(classes=(3,)), UnlearnConfig(method="lcodec"), out
        )
    with pytest.raises(UnknownMethodError, match="registered: "):
        unlearn_checkpoint(checkpoint, ForgetSpec(fraction=0.1), UnlearnConfig(method="x"), out)
    assert not out.exists()
