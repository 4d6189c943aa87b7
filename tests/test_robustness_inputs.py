"""Hostile and careless inputs (issue 15): each is refused with exit status 2 and one line
naming the file or flag and what is allowed, before any work (quickly, nothing written), and
never with a Python traceback; the few inputs that have a documented meaning behave so."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import conun.cli
from conun.cli import main
from conun.config import ConfigError, read_yaml
from conun.data.errors import DatasetNotFoundError
from conun.data.registry import load_dataset
from conun.data.sources import FASHION_MNIST_FILES, read_idx
from conun.data.splits import ForgetRequestError, read_ids_file
from conun.engine.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_meta,
)
from conun.io import OutputPathError, check_output_path
from conun.workflows.training import TrainedModel

SECONDS_BEFORE_ERROR = 15.0
"""Refusals come before any training or unlearning (those take far longer on digits); the
bound leaves room for a loaded 2-core machine and the dataset load some checks need."""


def refused(*args: str, within: float = SECONDS_BEFORE_ERROR) -> str:
    """Run ``conun ARGS``; assert exit status 2, a one-line ``Error:`` message (a config's
    problems indented below it), no traceback, and that it came within ``within`` seconds.
    Returns the message on one line."""
    started = time.perf_counter()
    result = CliRunner().invoke(main, list(args))
    elapsed = time.perf_counter() - started
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("Error: "), result.output
    # One line; a config's validation lists its problems below it, one indented line each.
    assert all(line.startswith("  ") for line in lines[1:]), result.output
    assert elapsed < within, f"refused after {elapsed:.1f} s: {result.output}"
    return " ".join(line.strip() for line in lines)


def nothing_written(path: Path) -> bool:
    return not path.exists() or not any(path.iterdir())


@pytest.fixture(scope="module")
def checkpoint(digits_run: tuple[Path, TrainedModel]) -> Path:
    return digits_run[0] / CHECKPOINT_FILE


def tampered(
    source: Path,
    target: Path,
    *,
    meta: Callable[[dict[str, Any]], None] | None = None,
    weights: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> Path:
    """A copy of checkpoint ``source`` at ``target`` with its metadata JSON and/or weights
    edited in place by the given functions (what a hand-edited or corrupted file holds)."""
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as handle:
        header = dict(handle.metadata() or {})
    state = load_file(str(source))
    document = json.loads(header["conun"])
    if meta is not None:
        meta(document)
    if weights is not None:
        weights(state)
    header["conun"] = json.dumps(document)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(target), metadata=header)
    return target


# -- checkpoints ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused_by_unlearn_and_evaluate(
    checkpoint: Path, tmp_path: Path, value: float
) -> None:
    def poison(state: dict[str, torch.Tensor]) -> None:
        name = next(name for name, tensor in state.items() if tensor.is_floating_point())
        state[name] = state[name].clone()
        state[name].view(-1)[0] = value

    bad = tampered(checkpoint, tmp_path / "bad.safetensors", weights=poison)
    out = tmp_path / "out"
    message = refused(
        "unlearn", "--checkpoint", str(bad), "--forget-class", "5", "--out", str(out), "--quiet"
    )
    assert "non-finite weights" in message and "bad.safetensors" in message
    message = refused("evaluate", "--checkpoint", str(bad), "--out", str(out))
    assert "non-finite weights" in message
    assert nothing_written(out)
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        load_checkpoint(bad)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: m.update(validation=[0, 10**6]), "validation ids reach 1000000"),
        (lambda m: m.update(validation=[-1, 3]), "validation ids must be distinct non-negative"),
        (lambda m: m.update(split={"scenario": "class"}), "split: the split lacks num_train"),
        (lambda m: m.update(split=[1, 2, 3]), "split: a split must be a JSON object"),
        (lambda m: m.update(dataset="fashion-mnist"), "names dataset 'fashion-mnist'"),
        (lambda m: m.update(dataset="nosuch"), "names dataset 'nosuch'"),
        (lambda m: m.update(num_classes=0), "num_classes is 0"),
        (lambda m: m.update(input_shape=[1, 8]), "input_shape [1, 8]"),
        (lambda m: m["train_config"].update(colour="red"), "train_config.colour: unknown key"),
        (lambda m: m.update(model=["a"]), "train_config"),
    ],
    ids=[
        "validation-out-of-range",
        "validation-negative",
        "split-missing-keys",
        "split-a-list",
        "dataset-inconsistent",
        "dataset-unknown",
        "no-classes",
        "input-shape",
        "unknown-recipe-key",
        "model-not-a-name",
    ],
)
def test_malformed_checkpoint_metadata_is_refused_in_one_line(
    checkpoint: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None], expected: str
) -> None:
    bad = tampered(checkpoint, tmp_path / "edited" / CHECKPOINT_FILE, meta=edit)
    out = tmp_path / "out"
    for command in (
        ["unlearn", "--checkpoint", str(bad), "--forget-class", "5", "--quiet"],
        ["evaluate", "--checkpoint", str(bad)],
    ):
        message = refused(*command, "--out", str(out))
        assert expected in message, message
        assert "errors.pydantic.dev" not in message
    assert nothing_written(out)


def test_metadata_that_is_not_an_object_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as handle:
        header = dict(handle.metadata() or {})
    for document in ("[1, 2]", "[" * 100_000 + "]" * 100_000):
        header["conun"] = document
        target = tmp_path / CHECKPOINT_FILE
        save_file(load_file(str(checkpoint)), str(target), metadata=header)
        with pytest.raises(CheckpointError, match=CHECKPOINT_FILE):
            read_checkpoint_meta(target)


# -- output paths ---------------------------------------------------------------------------------


def test_an_out_under_a_file_is_refused_by_every_command_before_work(
    checkpoint: Path, digits_run: tuple[Path, TrainedModel], tmp_path: Path
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory\n")
    out = str(blocker / "sub")
    common = ["--checkpoint", str(checkpoint)]
    for command in (
        ["unlearn", *common, "--forget-class", "5", "--quiet"],
        ["evaluate", *common],
        ["audit", *common, "--forget-class", "5"],
        ["bench", "smoke", "--quiet"],
        ["report", str(digits_run[0])],
        ["demo", "--quiet"],
        ["train", "--epochs", "1", "--quiet"],
    ):
        message = refused(*command, "--out", out)
        assert "a_file" in message and "not a directory" in message, message
    assert blocker.read_text() == "not a directory\n"


def test_too_long_names_are_refused_before_work(checkpoint: Path, tmp_path: Path) -> None:
    long_name = str(tmp_path / ("x" * 300))
    message = refused(
        "unlearn",
        "--checkpoint",
        str(checkpoint),
        "--forget-class",
        "5",
        "--out",
        long_name,
        "--quiet",
    )
    assert "300 bytes long" in message and "at most 255" in message
    assert "300 bytes long" in refused(
        "evaluate", "--checkpoint", str(checkpoint), "--out", long_name
    )
    assert "at most" in refused(
        "report", str(checkpoint.parent), "--out", str(tmp_path / ("r" * 230))
    )
    deep = tmp_path.joinpath(*(["d" * 200] * 25))
    with pytest.raises(OutputPathError, match="the path is"):
        check_output_path(deep)
    assert not list(tmp_path.iterdir())


def test_an_unwritable_parent_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root (as in CI) writes through permission bits, so the kernel's answer is stood in for:
    # the parent directory reports no write access.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if Path(str(path)) == locked:
            return False
        return real_access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(OutputPathError, match="not writable"):
        check_output_path(locked / "run")
    assert not (locked / "run").exists()


# -- requests checked against the dataset before training -----------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--forget-class", "99"], "--forget-class: forget class [99] is not in the data"),
        (["--forget-fraction", "2"], "--forget-fraction: forget fraction must be in (0, 1)"),
    ],
)
def test_demo_requests_are_checked_before_training(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    out = tmp_path / "demo"
    message = refused("demo", *args, "--out", str(out), "--quiet", within=10)
    assert expected in message, message
    assert nothing_written(out)


def test_a_bench_request_larger_than_the_dataset_is_refused_before_training(
    tmp_path: Path,
) -> None:
    preset = tmp_path / "big.yaml"
    preset.write_text(
        "dataset: digits\ntrain: {epochs: 1}\nrequests:\n  - samples: 100000\n"
        "methods: [original, contrastive]\nseeds: [0]\n"
    )
    out = tmp_path / "bench"
    message = refused("bench", str(preset), "--out", str(out), "--quiet", within=10)
    assert "request samples100000" in message and "cannot forget 100000 samples" in message
    assert nothing_written(out)


@pytest.mark.parametrize(
    "flag", [["--forget-samples", "0"], ["--forget-fraction", "0"]], ids=["samples", "fraction"]
)
def test_a_zero_request_is_refused_not_dropped(
    checkpoint: Path, tmp_path: Path, flag: list[str]
) -> None:
    out = tmp_path / "out"
    message = refused("evaluate", "--checkpoint", str(checkpoint), *flag, "--out", str(out))
    assert "cannot forget 0 samples" in message or "fraction must be in (0, 1)" in message
    assert nothing_written(out)


def test_a_seed_beyond_64_bits_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    message = refused(
        "unlearn",
        "--checkpoint",
        str(checkpoint),
        "--forget-class",
        "5",
        "--seed",
        str(2**70),
        "--out",
        str(tmp_path / "out"),
    )
    assert "seed" in message
    assert "distinct integers >= 0" in refused("bench", "smoke", "--seeds", str(2**64))


# -- configs --------------------------------------------------------------------------------------

ALIAS_BOMB = """\
a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ALIAS_BOMB, "aliases (*a) are not allowed"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 32 levels"),
        ("a: " + "{b: " * 3000 + "1" + "}" * 3000 + "\n", "nested more than 32 levels"),
        ("method: finetune\nmethod: contrastive\n", "key 'method' is given twice"),
        ("device: ${oc.env:HOME}\n", "is an interpolation"),
        ("\x00\x01\xff\xfe binary", "not UTF-8 text"),
    ],
    ids=["alias-bomb", "deep-lists", "deep-mappings", "duplicate-key", "env", "binary"],
)
def test_hostile_configs_are_refused_fast(
    checkpoint: Path, tmp_path: Path, text: str, expected: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode("utf-8"))
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="config.yaml") as raised:
        read_yaml(config)
    assert expected in str(raised.value)
    assert time.perf_counter() - started < 2
    message = refused(
        "unlearn",
        "--checkpoint",
        str(checkpoint),
        "--forget-class",
        "5",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "out"),
        within=5,
    )
    assert expected in message and "config.yaml" in message


def test_a_config_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    config = tmp_path / "bom.yaml"
    config.write_bytes("\ufeffseed: 3\n".encode())
    assert read_yaml(config) == {"seed": 3}


def test_environment_interpolation_in_set_is_refused_not_resolved(
    checkpoint: Path, tmp_path: Path
) -> None:
    home = os.environ.get("HOME", "/root")
    for command in (
        ["unlearn", "--checkpoint", str(checkpoint), "--forget-class", "5"],
        ["train", "--epochs", "1"],
    ):
        message = refused(
            *command, "--set", "device=${oc.env:HOME}", "--out", str(tmp_path / "out")
        )
        assert "interpolation" in message and f"'{home}'" not in message


def test_an_oversized_config_is_refused_without_parsing(tmp_path: Path) -> None:
    config = tmp_path / "big.yaml"
    config.write_text("# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="at most 1048576"):
        read_yaml(config)


# -- ids files ------------------------------------------------------------------------------------


def test_ids_files_name_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\xff\xfe\x80")
    with pytest.raises(ForgetRequestError, match=r"binary.txt is not UTF-8 text"):
        read_ids_file(binary)
    huge = tmp_path / "huge.txt"
    huge.write_text(f"1\n{2**70}\n")
    with pytest.raises(ForgetRequestError, match=r"huge.txt, line 2: .* out of range"):
        read_ids_file(huge)
    huge_json = tmp_path / "huge.json"
    huge_json.write_text(f"[1, {2**70}]")
    with pytest.raises(ForgetRequestError, match=r"huge.json: id .* out of range"):
        read_ids_file(huge_json)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ForgetRequestError, match="deep.json is not valid JSON"):
        read_ids_file(deep)
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeff3\n4\n".encode())
    assert read_ids_file(bom) == [3, 4]
    if sys.platform != "win32":
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        with pytest.raises(ForgetRequestError, match="fifo is not a regular file"):
            read_ids_file(fifo)


def test_an_ids_file_out_of_int64_is_refused_on_the_command_line(
    checkpoint: Path, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{2**64}\n")
    message = refused(
        "unlearn",
        "--checkpoint",
        str(checkpoint),
        "--forget-ids",
        str(ids),
        "--out",
        str(tmp_path / "o"),
    )
    assert "ids.txt, line 1" in message


# -- dataset files --------------------------------------------------------------------------------


def test_corrupt_idx_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]))[:20])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is not a complete gzip"):
        read_idx(images)
    empty = tmp_path / "t10k-labels-idx1-ubyte"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte is not an IDX file"):
        read_idx(empty)
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match="declares shape"):
        read_idx(short)


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x08\x03\x00"], ids=["empty", "truncated"])
def test_corrupt_mnist_files_are_a_clear_error_naming_the_folder(
    tmp_path: Path, content: bytes
) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FASHION_MNIST_FILES:
        (raw / name).write_bytes(content)
    with pytest.raises(DatasetNotFoundError, match=r"present but torchvision rejected them"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


# -- internal errors ------------------------------------------------------------------------------


def test_an_internal_error_says_it_is_a_bug_and_where_the_trace_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def broken() -> None:
        raise KeyError("deep inside")

    monkeypatch.setattr(conun.cli, "main", broken)
    monkeypatch.setattr(sys, "argv", ["conun", "unlearn"])
    monkeypatch.delenv(conun.cli.TRACEBACK_ENV, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with pytest.raises(SystemExit) as exited:
        conun.cli.entry()
    assert exited.value.code == 1
    message = capsys.readouterr().err
    assert "Traceback" not in message and len(message.strip().splitlines()) == 1
    assert "This is a bug in conun" in message
    (written,) = tmp_path.glob("conun-error-*.txt")
    assert str(written) in message
    assert "Traceback" in written.read_text() and "deep inside" in written.read_text()
    monkeypatch.setenv(conun.cli.TRACEBACK_ENV, "1")
    with pytest.raises(KeyError):
        conun.cli.entry()


def test_user_errors_keep_their_one_line_through_the_entry_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(
        sys,
        "argv",
        ["conun", "evaluate", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path)],
    )
    with pytest.raises(SystemExit) as exited:
        conun.cli.entry()
    assert exited.value.code == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_the_checkpoint_meta_check_accepts_what_training_writes(checkpoint: Path) -> None:
    meta = read_checkpoint_meta(checkpoint)
    meta.check()
    assert dataclasses.replace(meta, split=None).split is None
