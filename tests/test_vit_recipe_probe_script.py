"""experiments/vit_recipe_probe.py (issue 17): its recipe syntax and the table it writes, on
hand-written rows (the probe itself trains ViTs for minutes each)."""

from __future__ import annotations

import argparse
from types import ModuleType

import pytest

from experiment_scripts import load_experiment


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """The script as a module (experiments/ is not a package)."""
    return load_experiment("vit_recipe_probe")


def test_a_recipe_is_samples_x_epochs(script: ModuleType) -> None:
    assert script.parse_recipe("6000x20") == (6000, 20)
    assert script.parse_recipe("60000X2") == (60000, 2)
    for bad in ("6000", "6000x", "ax2", "0x20", "6000x20x1"):
        with pytest.raises(argparse.ArgumentTypeError, match="6000x20|>= 1"):
            script.parse_recipe(bad)


def test_the_table_reports_the_budget_and_the_train_validation_gap(script: ModuleType) -> None:
    row = {
        "samples": 6000,
        "epochs": 20,
        "trained_on": 5400,
        "validation_size": 600,
        "seconds": 171.4,
        "train_acc": 0.875,
        "val_acc": 0.79,
        "test_acc": 0.8061,
    }
    text = script.table([row])
    # 5,400 samples x 20 epochs = 108,000 images; 87.50 - 79.00 = +8.50 points.
    assert "| 6000x20 | 5,400 | 20 | 108,000 | 171 | 87.50 | 79.00 (n = 600) | 80.61 | +8.50 |" in (
        text
    )


def test_a_model_argument_is_key_equals_integer(script: ModuleType) -> None:
    assert script.parse_model_arg("embed_dim=64") == ("embed_dim", 64)
    for bad in ("embed_dim", "embed_dim=", "=64", "embed_dim=6.4", "embed_dim=-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="KEY=INT"):
            script.parse_model_arg(bad)
