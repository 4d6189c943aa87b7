"""experiments/paper_vs_release.py (issue #20's ablation) on digits with a tiny recipe."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from experiment_scripts import load_experiment


@pytest.fixture(scope="module")
def ablation() -> ModuleType:
    """The script as a module (experiments/ is not a package)."""
    return load_experiment("paper_vs_release")


def test_each_switch_changes_one_release_behaviour_and_all_make_the_release(
    ablation: ModuleType,
) -> None:
    for scenario in ("class", "sample"):
        assert ablation.uncovered_differences(scenario, "fashion-mnist") == []
        paper = ablation.variant_config("paper", scenario, "fashion-mnist", 0)
        embedding = ablation.variant_config("+ relu embedding", scenario, "fashion-mnist", 0)
        assert embedding.options == {**paper.options, "embedding": "relu_normalized"}
        assert embedding.model_dump(exclude={"options"}) == paper.model_dump(exclude={"options"})
        stopping = ablation.variant_config("+ release stopping", scenario, "fashion-mnist", 0)
        assert stopping.options == paper.options
        assert stopping.stopping.max_passes == (1 if scenario == "class" else 30)
        assert stopping.stopping.eval_size == 1_000_000


def test_ablation_on_digits(
    ablation: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, originals = tmp_path / "out", tmp_path / "originals"
    argv = ["--dataset", "digits", "--seeds", "0", "--samples", "60", "--out", str(out)]
    argv += ["--originals", str(originals), "--train-set", "epochs=3"]
    ablation.main([*argv, "--variants", "paper", "release"])

    state = json.loads((out / "runs.json").read_text())
    runs = state["runs"]
    keys = {(r["request"], r["variant"], r["split_style"]) for r in runs}
    # One retrain per request and split; the release split needs its own.
    assert keys == {
        (request, variant, style)
        for request in ("class5", "samples60")
        for variant, style in [
            ("retrain", "conun"),
            ("retrain", "release"),
            ("paper", "conun"),
            ("release", "release"),
        ]
    }
    for run in runs:
        assert "error" not in run, run
        for key in ("forget_train_acc", "test_acc", "utility"):
            assert 0 <= run[key] <= 1 and math.isfinite(run[key]), (key, run)
        assert run["seconds"] > 0
        assert 0 <= run["audit"]["mia_forget_vs_test_auc"] <= 1
    by_key = {(r["request"], r["variant"]): r for r in runs if r["variant"] != "retrain"}
    # The release's class split keeps the class's last sample; its sample split is other samples.
    assert by_key[("class5", "release")]["forget_size"] == (
        by_key[("class5", "paper")]["forget_size"] - 1
    )
    assert by_key[("class5", "release")]["passes"] <= 1  # the release's one epoch
    retrain_class = next(r for r in runs if r["variant"] == "retrain" and r["scenario"] == "class")
    assert retrain_class["forget_test_acc"] == 0.0  # never saw the class
    readme = (out / "README.md").read_text()
    assert state["command"] in readme and "Machine:" in readme
    for label in ("| paper |", "| release |", "| retrain |", "| retrain (release split) |"):
        assert label in readme
    assert (out / "ablation.png").stat().st_size > 0

    # A rerun with one more variant makes only that variant's two runs: the original, the
    # retrains and the finished variants are reused.
    checkpoint = originals / "seed0" / "original" / "checkpoint.safetensors"
    trained_at = checkpoint.stat().st_mtime_ns
    made: list[Any] = []
    measure = ablation.measure

    def counting(*args: Any) -> dict[str, Any]:
        made.append((args[2].method, args[2].options.get("forget_order")))
        result: dict[str, Any] = measure(*args)
        return result

    monkeypatch.setattr(ablation, "measure", counting)
    ablation.main([*argv, "--variants", "paper", "release", "+ fixed forget order"])
    assert made == [("contrastive", "fixed")] * 2
    assert checkpoint.stat().st_mtime_ns == trained_at
    again = json.loads((out / "runs.json").read_text())["runs"]
    assert again[: len(runs)] == runs and len(again) == len(runs) + 2
    assert "| + fixed forget order |" in (out / "README.md").read_text()
