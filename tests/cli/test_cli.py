"""The command line end to end on digits, and its errors: clear, early, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conun.cli import main
from conun.engine.checkpoint import CheckpointMeta, read_checkpoint_meta, save_checkpoint
from conun.evaluation.results import validate_results
from conun.models import build_model
from conun.workflows.training import TrainedModel


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_train_unlearn_evaluate_end_to_end(tmp_path: Path) -> None:
    original = tmp_path / "original"
    code, output = invoke(
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "3",
        "--out",
        str(original),
        "--quiet",
        "--set",
        "optimizer.lr=0.1",
    )
    assert code == 0, output
    assert "original" in output
    config_text = (original / "config.yaml").read_text()
    assert "epochs: 3" in config_text and "lr: 0.1" in config_text

    unlearned = tmp_path / "class3"
    code, output = invoke(
        "unlearn",
        "--checkpoint",
        str(original),
        "--method",
        "contrastive",
        "--forget-class",
        "3",
        "--with-reference",
        "--out",
        str(unlearned),
        "--quiet",
    )
    assert code == 0, output
    results = json.loads((unlearned / "results.json").read_text())
    validate_results(results)
    assert [run["method"] for run in results["runs"]] == ["original", "retrain", "contrastive"]
    assert all(run["forget"] == {"classes": [3]} for run in results["runs"])
    assert {p.name for p in unlearned.iterdir()} >= {
        "checkpoint.safetensors",
        "split.json",
        "config.yaml",
        "results.json",
        "results.md",
    }
    assert "x retrain" in output

    evaluated = tmp_path / "eval"
    code, output = invoke("evaluate", "--checkpoint", str(unlearned), "--out", str(evaluated))
    assert code == 0, output
    (run,) = json.loads((evaluated / "results.json").read_text())["runs"]
    assert run["method"] == "contrastive" and run["forget"] == {"classes": [3]}
    assert run["metrics"]["forget_train_acc"] == results["runs"][-1]["metrics"]["forget_train_acc"]

    ids = tmp_path / "ids.txt"
    held_out = set(read_checkpoint_meta(original).validation)
    chosen = [i for i in range(200) if i not in held_out][:40]
    ids.write_text("\n".join(str(i) for i in chosen))
    code, output = invoke(
        "unlearn",
        "--checkpoint",
        str(original / "checkpoint.safetensors"),
        "--forget-ids",
        str(ids),
        "--out",
        str(tmp_path / "ids"),
        "--quiet",
        "--set",
        "stopping.max_passes=2",
    )
    assert code == 0, output
    (run,) = json.loads((tmp_path / "ids" / "results.json").read_text())["runs"]
    assert run["scenario"] == "sample" and run["forget"]["num_samples"] == 40


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--forget-class", "12"], "classes are 0..9"),
        (["--forget-class", "3", "--method", "magic"], "'magic'; registered: bad_teacher"),
        (["--forget-samples", "0"], "between 1 and"),
        (["--forget-samples", "100000"], "between 1 and"),
        ([], "give exactly one forget request"),
        (["--forget-class", "1", "--forget-samples", "5"], "give exactly one forget request"),
        (["--forget-class", "1", "--set", "options.omega=0"], "omega"),
        (["--forget-class", "1", "--set", "stopping.eval_set=train"], "'validation' or 'test'"),
    ],
)
def test_unlearn_rejects_bad_requests_before_writing(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path, args: list[str], message: str
) -> None:
    checkpoint, _ = digits_run
    out = tmp_path / "out"
    code, output = invoke("unlearn", "--checkpoint", str(checkpoint), "--out", str(out), *args)
    assert code == 2, output
    assert message in output
    assert not out.exists()


@pytest.mark.parametrize("content", ["5\n5\n", "99999\n", "-3\n", "1.5\n", "# nothing\n"])
def test_bad_ids_files(digits_run: tuple[Path, TrainedModel], tmp_path: Path, content: str) -> None:
    checkpoint, _ = digits_run
    ids = tmp_path / "ids.txt"
    ids.write_text(content)
    out = tmp_path / "out"
    code, output = invoke(
        "unlearn", "--checkpoint", str(checkpoint), "--forget-ids", str(ids), "--out", str(out)
    )
    assert code == 2 and not out.exists(), output
    assert any(word in output for word in ("duplicated", "out of range", "not an integer", "empty"))


def test_checkpoint_dataset_mismatch(tmp_path: Path) -> None:
    # Weights for 3 classes claiming to be a digits model: refused before any work.
    model = build_model("small_cnn", num_classes=3, input_shape=(1, 8, 8))
    meta = CheckpointMeta("small_cnn", "digits", 3, (1, 8, 8), {"dataset": "digits"}, [])
    save_checkpoint(tmp_path / "bad", model, meta)
    out = tmp_path / "out"
    code, output = invoke(
        "unlearn", "--checkpoint", str(tmp_path / "bad"), "--forget-class", "1", "--out", str(out)
    )
    assert code == 2 and "3 classes but the data has 10" in output
    assert not out.exists()
    wide = build_model("small_cnn", num_classes=10, input_shape=(1, 28, 28))
    save_checkpoint(
        tmp_path / "wide",
        wide,
        CheckpointMeta("small_cnn", "digits", 10, (1, 28, 28), {"dataset": "digits"}, []),
    )
    code, output = invoke(
        "unlearn", "--checkpoint", str(tmp_path / "wide"), "--forget-class", "1", "--out", str(out)
    )
    assert code == 2 and "(1, 28, 28) but the data has (1, 8, 8)" in output


def test_existing_results_are_not_overwritten(digits_run: tuple[Path, TrainedModel]) -> None:
    checkpoint, _ = digits_run
    before = (checkpoint / "results.json").read_bytes()
    code, output = invoke("train", "--dataset", "digits", "--epochs", "1", "--out", str(checkpoint))
    assert code == 2 and "--force" in output
    assert (checkpoint / "results.json").read_bytes() == before


def test_missing_cifar10_names_directory_and_files_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "CONUN_DATA": str(tmp_path / "data"), "HOME": str(tmp_path / "home")}
    completed = subprocess.run(
        [sys.executable, "-m", "conun", "train", "--dataset", "cifar10", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert completed.returncode != 0
    assert "cifar-10-batches-py" in completed.stderr and "data_batch_1" in completed.stderr
    assert str(tmp_path / "data") in completed.stderr
    assert not out.exists()
    assert not (tmp_path / "data").exists()
