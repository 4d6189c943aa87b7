"""Checkpoints: round trip, validation on load, no pickle, atomic writes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conun.engine.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from conun.models import build_model


def make_meta(**changes: object) -> CheckpointMeta:
    fields = {
        "model": "small_cnn",
        "dataset": "digits",
        "num_classes": 10,
        "input_shape": (1, 8, 8),
        "train_config": {"dataset": "digits", "model": "small_cnn"},
        "validation": [1, 2, 3],
    }
    fields.update(changes)
    return CheckpointMeta(**fields)  # type: ignore[arg-type]


def test_round_trip_restores_weights_buffers_and_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    model.train()
    model(torch.randn(16, 1, 8, 8))  # moves BatchNorm running statistics away from defaults
    path = save_checkpoint(tmp_path, model, make_meta(metrics={"test_acc": 0.9}))
    assert path.name == "checkpoint.safetensors"
    loaded, meta = load_checkpoint(tmp_path)
    for (name, want), (_, got) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(want, got), name
    assert meta.metrics == {"test_acc": 0.9} and meta.validation == [1, 2, 3]
    assert meta.versions is not None and "torch" in meta.versions
    assert not loaded.training


def test_load_validates_class_count_and_input_shape(tmp_path: Path) -> None:
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    save_checkpoint(tmp_path, model, make_meta())
    with pytest.raises(CheckpointError, match="10 classes but the data has 3"):
        load_checkpoint(tmp_path, expected_num_classes=3)
    with pytest.raises(CheckpointError, match=r"\(1, 8, 8\) but the data has \(1, 28, 28\)"):
        load_checkpoint(tmp_path, expected_input_shape=(1, 28, 28))


def test_weights_that_do_not_fit_the_named_model_are_rejected(tmp_path: Path) -> None:
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    save_checkpoint(tmp_path, model, make_meta(num_classes=5))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path)


def test_foreign_or_pickled_files_are_refused(tmp_path: Path) -> None:
    pickled = tmp_path / "evil.safetensors"
    pickled.write_bytes(pickle.dumps({"weights": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(pickled)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(CheckpointError, match="no conun metadata"):
        read_checkpoint_meta(bare)
    wrong_format = tmp_path / "wrong.safetensors"
    save_file(
        {"w": torch.zeros(2)}, str(wrong_format), metadata={"conun": json.dumps({"format": "x"})}
    )
    with pytest.raises(CheckpointError, match="unsupported checkpoint format"):
        read_checkpoint_meta(wrong_format)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing")
