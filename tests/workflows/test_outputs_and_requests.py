"""Run-directory policy, forget requests and the training-config builder: cheap, no training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conun.config import (
    ConfigError,
    TrainConfig,
    build_config,
    build_train_config,
    preset_path,
    read_yaml,
)
from conun.data.splits import ForgetRequestError
from conun.engine.checkpoint import CHECKPOINT_FILE
from conun.engine.resume import RESUME_FILE
from conun.io import RESULTS_FILE
from conun.workflows.inputs import ensure_dataset, load_training_data, validation_indices
from conun.workflows.outputs import OutputExistsError, prepare_output_dir, resumable_run
from conun.workflows.requests import ForgetSpec


@pytest.mark.parametrize("name", [RESULTS_FILE, CHECKPOINT_FILE, RESUME_FILE])
def test_an_earlier_run_is_kept_unless_forced(tmp_path: Path, name: str) -> None:
    assert prepare_output_dir(tmp_path / "new", force=False) == tmp_path / "new"
    (tmp_path / name).write_text("earlier")
    with pytest.raises(OutputExistsError, match=name):
        prepare_output_dir(tmp_path, force=False)
    assert prepare_output_dir(tmp_path, force=True) == tmp_path
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputExistsError, match="not a directory"):
        prepare_output_dir(tmp_path / "file", force=True)


def test_resumable_run_checks_its_arguments(tmp_path: Path) -> None:
    assert resumable_run(None, "train", {}, save_every=None, resume=False, force=False) is None
    with pytest.raises(ValueError, match="output directory"):
        resumable_run(None, "train", {}, save_every=5, resume=False, force=False)
    with pytest.raises(ValueError, match="pick one"):
        resumable_run(tmp_path, "train", {}, save_every=None, resume=True, force=True)
    assert resumable_run(tmp_path, "train", {}, save_every=None, resume=False, force=False) is None
    saving = resumable_run(tmp_path, "train", {"a": 1}, save_every=7, resume=False, force=False)
    assert saving is not None and saving.every == 7 and saving.directory == tmp_path


def test_forget_spec_takes_exactly_one_request() -> None:
    with pytest.raises(ForgetRequestError, match="exactly one"):
        ForgetSpec()
    with pytest.raises(ForgetRequestError, match="exactly one"):
        ForgetSpec(classes=(1,), num_samples=3)
    assert ForgetSpec(classes=(1,)).scenario == "class"
    assert ForgetSpec(fraction=0.1).scenario == "sample"


def test_forget_spec_resolves_on_the_data_without_the_validation_split() -> None:
    config = build_train_config("digits")
    ensure_dataset(config)
    data = load_training_data(config)
    validation = validation_indices(data, config)
    by_class = ForgetSpec(classes=(3,)).resolve(data, validation, seed=0)
    assert bool((data.train.labels[by_class.forget] == 3).all())
    assert not torch.isin(by_class.forget, validation).any()
    assert not torch.isin(by_class.retain, validation).any()
    drawn = ForgetSpec(num_samples=20).resolve(data, validation, seed=0)
    assert drawn.forget.numel() == 20 and not torch.isin(drawn.forget, validation).any()
    assert torch.equal(drawn.forget, ForgetSpec(num_samples=20).resolve(data, validation, 0).forget)


def test_build_train_config_layers_the_dataset_preset() -> None:
    preset = preset_path("train", "fashion-mnist")
    assert preset is not None
    composed = build_config(TrainConfig, [read_yaml(preset), {"seed": 3}])
    assert build_train_config("fashion-mnist", [{"seed": 3}]) == composed
    # Later layers and overrides win.
    built = build_train_config("digits", [{"epochs": 2}], ["optimizer.lr=0.5"])
    assert (built.dataset, built.epochs, built.optimizer.lr) == ("digits", 2, 0.5)
    # Another dataset's recipe, by name.
    other = build_train_config("mnist", preset="fashion-mnist")
    assert other.dataset == "mnist" and other.epochs == composed.epochs
    with pytest.raises(ConfigError, match="unknown train preset"):
        build_train_config("digits", preset="no-such-preset")
