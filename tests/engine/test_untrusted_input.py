"""Untrusted input cannot execute code: crafted files whose loading would run a payload (a
pickle's ``__reduce__``, a YAML Python tag, an expression in an ids file) are refused with a
clear error, and the payload never runs (it would create a marker file)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conun.cli import main
from conun.config import read_yaml
from conun.data.splits import ForgetRequestError, read_ids_file
from conun.engine.checkpoint import CheckpointError, load_checkpoint
from conun.engine.resume import RESUME_FILE, ResumeError, read_state
from conun.workflows.training import TrainedModel


class Payload:
    """Unpickling this creates ``marker``: what an attacker's checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def _malicious_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"weights": torch.zeros(2), "payload": Payload(marker)}))
    # The payload is real: unpickling it does create the marker (then it is removed again).
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()


def test_a_pickled_checkpoint_is_refused_without_running_its_payload(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    checkpoint = tmp_path / "checkpoint.safetensors"
    _malicious_pickle(checkpoint, marker)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(checkpoint)
    torch_file = tmp_path / "model.pt"  # the usual torch.save name: refused just the same
    _malicious_pickle(torch_file, marker)
    with pytest.raises(CheckpointError):
        load_checkpoint(torch_file)
    assert not marker.exists()


def test_a_pickled_resume_state_is_refused_without_running_its_payload(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    _malicious_pickle(tmp_path / RESUME_FILE, marker)
    with pytest.raises(ResumeError, match="not a conun resume state"):
        read_state(tmp_path, kind="unlearn")
    assert not marker.exists()


def test_a_yaml_config_with_a_python_tag_is_refused(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path
) -> None:
    marker = tmp_path / "PWNED"
    config = tmp_path / "evil.yaml"
    config.write_text(f'method: !!python/object/apply:pathlib.Path.touch ["{marker}"]\n')
    with pytest.raises(ValueError, match="evil.yaml"):
        read_yaml(config)
    run_dir, _ = digits_run
    result = CliRunner().invoke(
        main,
        [
            "unlearn",
            "--checkpoint",
            str(run_dir),
            "--forget-class",
            "5",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 2 and "evil.yaml" in result.output, result.output
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_an_ids_file_is_parsed_as_integers_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    ids = tmp_path / "ids.txt"
    ids.write_text(f"3\n__import__('pathlib').Path('{marker}').touch()\n")
    with pytest.raises(ForgetRequestError, match="line 2"):
        read_ids_file(ids)
    assert not marker.exists()
