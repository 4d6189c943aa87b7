"""Resumed runs continue the same request on the same checkpoint, or refuse (issue 15): the
resume state records SHA-256 digests of the source checkpoint, of the forget ids and of the
resolved split, so that an input replaced or edited under the same path is refused naming what
changed, where comparing paths let the model become a mix of two requests. Temporaries that a
killed write left behind are removed when the next run in that directory starts."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conun.bench import BenchPreset, CellMismatchError, run_bench
from conun.bench import fingerprints as bench_fingerprints
from conun.bench.fingerprints import weights_sha256
from conun.cli import main
from conun.config import TrainConfig
from conun.data.arrays import ArrayDataset, DatasetBundle
from conun.engine.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from conun.engine.resume import RESUME_FILE, Resumable, ResumeError, read_state
from conun.io import RESULTS_FILE, remove_stale_temporaries, sha256_json
from conun.workflows import training as training_workflow
from conun.workflows.inputs import load_training_data, validation_indices
from conun.workflows.outputs import SPLIT_FILE, prepare_output_dir, record_split
from conun.workflows.training import TrainedModel, train_original
from interruptions import SimulatedCrashError


def unlearn_args(checkpoint: Path, ids: Path) -> list[str]:
    """A short fixed-length sample run (8 passes of one batch, one step each: the sample
    default omega is 1) that saves a state every 3 steps."""
    return [
        "unlearn",
        "--checkpoint",
        str(checkpoint),
        "--forget-ids",
        str(ids),
        "--save-every",
        "3",
        "--quiet",
        "--set",
        "stopping.rule=none",
        "--set",
        "stopping.max_passes=8",
    ]


@pytest.fixture
def interrupted(
    digits_run: tuple[Path, TrainedModel],
    tmp_path: Path,
    interrupt_after: Callable[[int], None],
) -> tuple[Path, Path, Path]:
    """An unlearning run of 60 ids on a private copy of the digits original, interrupted after
    7 optimizer steps (a state saved at step 6): (checkpoint copy, ids file, run directory)."""
    checkpoint = tmp_path / "source" / CHECKPOINT_FILE
    checkpoint.parent.mkdir()
    shutil.copy(digits_run[0] / CHECKPOINT_FILE, checkpoint)
    validation = set(digits_run[1].meta.validation)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(str(i) for i in [i for i in range(200) if i not in validation][:60]))
    out = tmp_path / "run"
    interrupt_after(7)
    first = CliRunner().invoke(main, [*unlearn_args(checkpoint, ids), "--out", str(out)])
    assert isinstance(first.exception, SimulatedCrashError), first.output
    assert (out / RESUME_FILE).exists()
    return checkpoint, ids, out


def resume(checkpoint: Path, ids: Path, out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*unlearn_args(checkpoint, ids), "--resume", str(out)])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_an_edited_ids_file_is_refused_on_resume(interrupted: tuple[Path, Path, Path]) -> None:
    checkpoint, ids, out = interrupted
    saved = ids.read_text()
    ids.write_text(saved.replace("\n", "\n#\n", 1) + "\n")  # the same ids, reformatted: fine
    state_before = (out / RESUME_FILE).read_bytes()
    ids.write_text("\n".join(saved.splitlines()[:-1]))  # one id fewer: another request
    code, output = resume(checkpoint, ids, out)
    assert code == 2 and "forget request's ids (SHA-256) changed" in output, output
    assert output.count("\n") == 1
    # Refused before any work: the state is as the interrupted run left it, nothing else written.
    assert (out / RESUME_FILE).read_bytes() == state_before
    assert not (out / RESULTS_FILE).exists() and not (out / SPLIT_FILE).exists()
    ids.write_text(saved.replace("\n", "\n\n", 3))  # the same ids again: continues and finishes
    code, output = resume(checkpoint, ids, out)
    assert code == 0, output
    assert not (out / RESUME_FILE).exists() and (out / RESULTS_FILE).exists()


def test_a_replaced_checkpoint_is_refused_on_resume(interrupted: tuple[Path, Path, Path]) -> None:
    checkpoint, ids, out = interrupted
    model, meta = load_checkpoint(checkpoint)
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] += 1.0  # another model, the same path
    save_checkpoint(checkpoint, model, meta)
    code, output = resume(checkpoint, ids, out)
    assert code == 2 and "source checkpoint's content (SHA-256) changed" in output, output
    assert (out / RESUME_FILE).exists() and not (out / RESULTS_FILE).exists()


def test_a_changed_split_is_refused_after_the_data_is_loaded(tmp_path: Path) -> None:
    split = {"forget": [1, 2], "retain": [0, 3]}
    first = Resumable(tmp_path, 3, "unlearn", {"request": "x"})
    record_split(first, split, tmp_path)
    assert "split_sha256" in first.invocation
    state = _state_with(first.invocation)
    record_split(Resumable(tmp_path, 3, "unlearn", {"request": "x"}, state), split, tmp_path)
    with pytest.raises(ResumeError, match="resolved forget/retain split"):
        record_split(
            Resumable(tmp_path, 3, "unlearn", {"request": "x"}, state),
            {**split, "forget": [1]},
            tmp_path,
        )


def _state_with(invocation: dict[str, Any]) -> Any:
    from conun.engine.resume import LoopState

    return LoopState("unlearn", invocation, {}, {}, {})


def test_the_state_records_the_digests(interrupted: tuple[Path, Path, Path]) -> None:
    _, _, out = interrupted
    invocation = read_state(out, kind="unlearn").invocation
    for key in ("checkpoint_sha256", "request_sha256", "split_sha256"):
        assert len(invocation[key]) == 64, key


def test_stale_temporaries_are_removed_when_the_next_run_starts(
    interrupted: tuple[Path, Path, Path],
) -> None:
    checkpoint, ids, out = interrupted
    stale = [out / ".results.json.k2j4.tmp", out / ".resume.safetensors.x8s1.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    keep = out / "notes.tmp"  # not a temporary of conun's: kept
    keep.write_text("mine")
    code, output = resume(checkpoint, ids, out)
    assert code == 0, output
    assert not any(path.exists() for path in stale) and keep.exists()
    assert not list(out.glob(".*.tmp"))
    load_file(str(out / CHECKPOINT_FILE))  # the finished checkpoint is whole


def test_prepare_output_dir_removes_temporaries_but_nothing_else(tmp_path: Path) -> None:
    (tmp_path / ".checkpoint.safetensors.abc.tmp").write_bytes(b"x")
    (tmp_path / "data.txt").write_text("kept")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".results.json.q.tmp").write_text("{")
    prepare_output_dir(tmp_path, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt", "sub"]
    assert (tmp_path / "sub" / ".results.json.q.tmp").exists()  # only a bench looks deeper
    assert remove_stale_temporaries(tmp_path, recursive=True) == [
        tmp_path / "sub" / ".results.json.q.tmp"
    ]


# --- conun train --resume: the recipe, the data and the validation split, by content ---------


@pytest.fixture
def interrupted_training(
    make_digits_config: Callable[..., TrainConfig],
    tmp_path: Path,
    interrupt_after: Callable[[int], None],
) -> tuple[TrainConfig, Path, bytes]:
    """A 2-epoch digits training interrupted after 8 steps (a state saved at step 7):
    (its config, its run directory, the state's bytes)."""
    config = make_digits_config(epochs=2)
    out = tmp_path / "train"
    interrupt_after(8)
    with pytest.raises(SimulatedCrashError):
        train_original(config, out, quiet=True, save_every=7)
    return config, out, (out / RESUME_FILE).read_bytes()


def _refused(config: TrainConfig, out: Path, state: bytes, match: str) -> None:
    """Resuming is refused with ``match`` in one line, and nothing in ``out`` changed."""
    with pytest.raises(ResumeError, match=match) as refusal:
        train_original(config, out, quiet=True, save_every=7, resume=True)
    assert "\n" not in str(refusal.value)
    assert (out / RESUME_FILE).read_bytes() == state
    assert sorted(path.name for path in out.iterdir()) == [RESUME_FILE]


def test_training_state_records_the_recipe_data_and_split_digests(
    interrupted_training: tuple[TrainConfig, Path, bytes],
) -> None:
    config, out, _ = interrupted_training
    invocation = read_state(out, kind="train").invocation
    assert invocation["config_sha256"] == sha256_json(config.model_dump(mode="json"))
    for key in ("dataset_sha256", "validation_sha256"):
        assert len(invocation[key]) == 64, key


def test_training_resume_refuses_another_recipe_naming_the_field(
    interrupted_training: tuple[TrainConfig, Path, bytes],
) -> None:
    config, out, state = interrupted_training
    _refused(
        config.model_copy(update={"epochs": 3}),
        out,
        state,
        r"resolved training config \(SHA-256\) changed since the run began "
        r"\(config\.epochs: 2 -> 3\)",
    )


def test_training_resume_refuses_other_data_under_the_same_name(
    interrupted_training: tuple[TrainConfig, Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, out, state = interrupted_training
    real = load_training_data

    def edited(config: TrainConfig) -> DatasetBundle:
        data = real(config)
        images = data.train.images.clone()
        images[17, 0, 3, 3] += 0.5  # one pixel of one image: same shapes, same labels
        return dataclasses.replace(data, train=ArrayDataset(images, data.train.labels))

    monkeypatch.setattr(training_workflow, "load_training_data", edited)
    _refused(config, out, state, r"training data's content \(SHA-256 of the train tensors\)")


def test_training_resume_refuses_another_validation_split(
    interrupted_training: tuple[TrainConfig, Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, out, state = interrupted_training
    real = validation_indices
    monkeypatch.setattr(
        training_workflow, "validation_indices", lambda data, config: real(data, config)[1:]
    )
    _refused(config, out, state, r"train/validation split \(SHA-256\) changed")


# --- conun bench: a finished cell is tied to its original's weights and its request's ids ----


@pytest.fixture
def one_cell_bench(tmp_path: Path) -> tuple[BenchPreset, Path]:
    """A one-cell grid (digits, 2 training epochs, the original's row of class 5), finished."""
    preset = BenchPreset.model_validate(
        {
            "name": "one-cell",
            "dataset": "digits",
            "model": "small_cnn",
            "train": {"epochs": 2},
            "requests": [{"class": [5]}],
            "methods": ["original"],
            "seeds": [0],
        }
    )
    out = tmp_path / "bench"
    assert len(run_bench(preset, out=out, quiet=True).ran) == 1
    return preset, out


def _only_original(out: Path) -> Path:
    (original,) = (out / "originals").iterdir()
    return original / CHECKPOINT_FILE


def test_a_bench_cell_records_its_inputs_and_is_reused_while_they_hold(
    one_cell_bench: tuple[BenchPreset, Path],
) -> None:
    preset, out = one_cell_bench
    cell = out / "cells" / "0" / "class5" / "original" / RESULTS_FILE
    inputs = json.loads(cell.read_text())["bench"]["inputs"]
    assert inputs["original_sha256"] == weights_sha256(_only_original(out))
    assert len(inputs["split_sha256"]) == 64
    # The same weights saved again (new metadata, new mtime): the same content, reused.
    model, meta = load_checkpoint(_only_original(out))
    save_checkpoint(_only_original(out), model, dataclasses.replace(meta, seconds=meta.seconds + 1))
    report = run_bench(preset, out=out, quiet=True)
    assert not report.ran and len(report.skipped) == 1


def test_a_bench_cell_of_a_replaced_original_is_refused(
    one_cell_bench: tuple[BenchPreset, Path],
) -> None:
    preset, out = one_cell_bench
    model, meta = load_checkpoint(_only_original(out))
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] += 1.0  # other weights, the same recipe
    save_checkpoint(_only_original(out), model, meta)
    cell = out / "cells" / "0" / "class5" / "original" / RESULTS_FILE
    before = cell.read_bytes()
    with pytest.raises(CellMismatchError, match=r"the original's weights \(SHA-256\) differ"):
        run_bench(preset, out=out, quiet=True)
    assert cell.read_bytes() == before  # refused before any work
    shutil.rmtree(_only_original(out).parent)
    with pytest.raises(CellMismatchError, match="which is gone"):
        run_bench(preset, out=out, quiet=True)


def test_a_bench_cell_for_other_ids_is_refused(
    one_cell_bench: tuple[BenchPreset, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    preset, out = one_cell_bench
    real = load_training_data

    def relabelled(config: TrainConfig) -> DatasetBundle:
        data = real(config)
        labels = data.train.labels.clone()
        first = int(torch.nonzero(labels == 5)[0])
        labels[first] = 4  # one class-5 sample now of class 4: class 5's ids change
        return dataclasses.replace(data, train=ArrayDataset(data.train.images, labels))

    monkeypatch.setattr(bench_fingerprints, "load_training_data", relabelled)
    with pytest.raises(CellMismatchError, match=r"the request's resolved ids \(SHA-256\) differ"):
        run_bench(preset, out=out, quiet=True)
