"""experiments/vit_class_study.py (issue 17): its variant syntax and the table it computes from
the runs' rows, on hand-written rows (the study itself needs the ViT grid's originals)."""

from __future__ import annotations

from types import ModuleType

import pytest

from experiment_scripts import load_experiment


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """The script as a module (experiments/ is not a package)."""
    return load_experiment("vit_class_study")


def test_a_variant_is_a_label_and_set_overrides(script: ModuleType) -> None:
    assert script.parse_variant("preset") == ("preset", [])
    assert script.parse_variant("in-pass: stopping.check_every=auto; options.lambda_ce=8") == (
        "in-pass",
        ["stopping.check_every=auto", "options.lambda_ce=8"],
    )


def test_the_table_compares_each_run_with_its_seeds_retrain(script: ModuleType) -> None:
    def run(seed: int, setting: str, retained: float, forget: float, ratio: float) -> dict:
        return {
            "seed": seed,
            "setting": setting,
            "retained_val_acc": retained,
            "forget_val_acc": 0.0,
            "forget_train_acc": forget,
            "stopped_by": "rule",
            "passes": 1.0,
            "seconds": 10 * ratio,
            "x_retrain": ratio,
        }

    rows = [
        {"seed": 0, "setting": "retrain", "retained_val_acc": 0.80, "forget_val_acc": 0.0},
        {"seed": 0, "setting": "original", "retained_val_acc": 0.81, "forget_val_acc": 0.9},
        run(0, "a", 0.79, 0.001, 0.09),
        {"seed": 1, "setting": "retrain", "retained_val_acc": 0.82, "forget_val_acc": 0.0},
        run(1, "a", 0.78, 0.004, 0.15),
    ]
    text = script.table(rows, ["a"])
    # Per run: -1.00 and -4.00 points; the mean -2.50 with the worst seed's -4.00.
    assert "| 0 | original | 81.00 | +1.00 | 90.00 | – |" in text
    assert "| 0 | a | 79.00 | -1.00 |" in text and "| 1 | a | 78.00 | -4.00 |" in text
    assert "| a | -2.50 (-4.00) | 0.25 (0.40) | 0.120 (0.150) |" in text
