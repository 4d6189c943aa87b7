"""experiments/vit_sample_study.py (issue 17): the table it computes from the runs' rows, on
hand-written rows (the study itself needs the ViT grid's originals)."""

from __future__ import annotations

from types import ModuleType

import pytest

from experiment_scripts import load_experiment


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """The script as a module (experiments/ is not a package)."""
    return load_experiment("vit_sample_study")


def test_the_table_compares_each_run_with_its_seeds_retrain(script: ModuleType) -> None:
    def run(seed: int, setting: str, val: float, forget: float, ratio: float) -> dict:
        return {
            "seed": seed,
            "setting": setting,
            "val_acc": val,
            "forget_train_acc": forget,
            "retrain_forget_train_acc": 0.80,
            "stopped_by": "rule",
            "passes": 2.0,
            "seconds": 10 * ratio,
            "x_retrain": ratio,
        }

    rows = [
        {"seed": 0, "setting": "retrain", "val_acc": 0.80, "seconds": 100.0},
        {"seed": 0, "setting": "original", "val_acc": 0.81},
        run(0, "a", 0.79, 0.83, 0.04),
        {"seed": 1, "setting": "retrain", "val_acc": 0.82, "seconds": 100.0},
        run(1, "a", 0.80, 0.78, 0.08),
    ]
    text = script.table(rows, ["a"])
    # Per run: -1.00 and -2.00 points of validation accuracy, forget +3.00 and -2.00 points
    # against retrain's 80%; means -1.50 (worst -2.00), +0.50 (largest in size +3.00), 0.060.
    assert "| 0 | original | 81.00 | +1.00 | – | – |" in text
    assert "| 0 | a | 79.00 | -1.00 | 83.00 | +3.00 | rule | 2.0 | 0.040 |" in text
    assert "| 1 | a | 80.00 | -2.00 | 78.00 | -2.00 | rule | 2.0 | 0.080 |" in text
    assert "| a | -1.50 (-2.00) | +0.50 (+3.00) | 0.060 (0.080) |" in text
