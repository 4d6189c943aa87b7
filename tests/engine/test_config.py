"""Config layering and validation: unknown keys and bad values are errors naming what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from conun.config import (
    ConfigError,
    TrainConfig,
    UnlearnConfig,
    build_config,
    preset_path,
    read_yaml,
)
from conun.workflows.names import check_method_name, check_train_names


def test_layers_apply_in_order_and_overrides_win(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("epochs: 3\noptimizer:\n  lr: 0.2\n")
    config = build_config(
        TrainConfig,
        [read_yaml(preset_path("train", "digits")), read_yaml(user), {"seed": 4}],
        ["optimizer.momentum=0.5", "augment=true"],
    )
    assert config.epochs == 3 and config.optimizer.lr == 0.2 and config.seed == 4
    assert config.optimizer.momentum == 0.5 and config.augment is True
    assert config.batch_size == 64  # from the digits preset


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("epoch=3", "epoch: unknown key"),
        ("optimizer.lrate=1", "optimizer.lrate: unknown key"),
        ("optimizer.name=rmsprop", "'sgd', 'adam' or 'adamw'"),
        ("epochs=0", "greater than or equal to 1"),
        ("validation_fraction=0.9", "less than or equal to 0.5"),
        ("device=tpu", "allowed: cpu, cuda"),
    ],
)
def test_bad_training_config_names_the_key_and_allowed_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(TrainConfig, [], [override])
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("override", "message"), [("dataset=imagenet", "allowed: "), ("model=vit", "allowed: ")]
)
def test_unknown_dataset_or_model_names_the_allowed_ones(override: str, message: str) -> None:
    # Config holds plain strings (the registries sit above it); workflows check the names.
    with pytest.raises(ConfigError) as caught:
        check_train_names(build_config(TrainConfig, [], [override]))
    assert message in str(caught.value)


def test_unknown_method_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        check_method_name(build_config(UnlearnConfig, [{"method": "magic"}]).method)
    assert "registered: " in str(caught.value) and "contrastive" in str(caught.value)


def test_malformed_override_and_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key.sub=value"):
        build_config(TrainConfig, [], ["epochs"])
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_yaml(listing)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("epochs: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception, match="python/object/apply"):
        read_yaml(evil)
