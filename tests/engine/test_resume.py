"""Resumable runs: an interrupted training or unlearning run (the shared loop, and SCRUB, UNSIR
and L-CODEC with their own schedules), continued from its last saved state, ends with exactly the
weights and history of an uninterrupted run with the same seed; a NaN stops a run with the step
named and keeps the last good state; a killed CLI run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conun.cli import main
from conun.config import TrainConfig
from conun.engine.checkpoint import CHECKPOINT_FILE
from conun.engine.resume import RESUME_FILE, Resumable, ResumeError, read_state
from conun.engine.training import NonFiniteLossError
from conun.evaluation.results import RESULTS_FILE
from conun.methods import get_method
from conun.methods.lcodec import LCodec
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel, train_original
from conun.workflows.unlearning import run_method
from interruptions import SimulatedCrashError


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def test_training_resumes_to_the_uninterrupted_weights(
    make_digits_config: Callable[..., TrainConfig],
    tmp_path: Path,
    interrupt_after: Callable[[int], None],
) -> None:
    # Augmentation on, so that the generator's state mid-epoch matters too.
    config = make_digits_config(epochs=3, augment=True)
    whole = train_original(config, tmp_path / "whole", quiet=True)

    out = tmp_path / "interrupted"
    interrupt_after(30)  # 21 steps per epoch: inside epoch 2, after the save at step 28
    with pytest.raises(SimulatedCrashError):
        train_original(config, out, quiet=True, save_every=7)
    state = read_state(out, kind="train")
    assert state.loop["step"] == 28 and state.loop["epoch"] == 2
    assert not (out / CHECKPOINT_FILE).exists() and not (out / RESULTS_FILE).exists()

    resumed = train_original(config, out, quiet=True, save_every=7, resume=True)
    assert_same_weights(whole.model.state_dict(), resumed.model.state_dict())
    assert resumed.results.runs[0].extra["epochs"] == whole.results.runs[0].extra["epochs"]
    assert not (out / RESUME_FILE).exists()  # a finished run leaves no state behind


@pytest.mark.parametrize(
    ("method", "options", "scenario"),
    [
        ("contrastive", {}, "class"),  # omega retain draws per forget batch (a batch stream)
        ("l1_sparse", {}, "sample"),  # passes over retain; the l1 weight decays with the step
        ("salun", {}, "class"),  # a saliency mask rebuilt from the original on resume
    ],
)
def test_unlearning_resumes_to_the_uninterrupted_weights(
    digits_run: tuple[Path, TrainedModel],
    tmp_path: Path,
    interrupt_after: Callable[[int], None],
    method: str,
    options: dict[str, Any],
    scenario: str,
) -> None:
    _, trained = digits_run
    spec = ForgetSpec(classes=(5,)) if scenario == "class" else ForgetSpec(fraction=0.05)
    split = spec.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    # A fixed number of passes with a check every 2 batches: the run is long enough to be
    # interrupted mid-pass, and the history (checks) must continue where it stopped.
    layer = {"stopping": {"rule": "none", "max_passes": 3, "check_every": 2}, "options": options}
    config = resolve_unlearn_config(
        method, scenario, dataset="digits", layers=[("test", layer)]
    ).config
    runner = get_method(method).for_scenario(scenario, config.options)
    train_config = TrainConfig.model_validate(trained.meta.train_config)

    def run(resume: Resumable | None) -> tuple[dict[str, torch.Tensor], Any]:
        model, record = run_method(
            config,
            trained.model,
            trained.data,
            split,
            method=runner,
            train_config=train_config,
            original_seconds=None,
            quiet=True,
            resume=resume,
        )
        return model.state_dict(), record

    whole, whole_record = run(None)
    interrupt_after(11)
    with pytest.raises(SimulatedCrashError):
        run(Resumable(tmp_path, 4, "unlearn", {"test": method}))
    state = read_state(tmp_path, kind="unlearn")
    assert 4 <= state.loop["steps"] < 11
    resumed, record = run(Resumable(tmp_path, 4, "unlearn", {"test": method}, state))
    assert_same_weights(whole, resumed)
    assert record.history == whole_record.history
    assert record.forget_batches == whole_record.forget_batches


def _run_digits(
    trained: TrainedModel,
    spec: ForgetSpec,
    method: str,
    config: dict[str, Any],
    resume: Resumable | None = None,
) -> tuple[dict[str, torch.Tensor], Any]:
    """``method`` on the digits original with ``config`` over its presets: weights and record."""
    split = spec.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    unlearn_config = resolve_unlearn_config(
        method, split.scenario, dataset="digits", layers=[("test", config)]
    ).config
    model, record = run_method(
        unlearn_config,
        trained.model,
        trained.data,
        split,
        train_config=TrainConfig.model_validate(trained.meta.train_config),
        original_seconds=None,
        quiet=True,
        resume=resume,
    )
    return model.state_dict(), record


def assert_same_run(record: Any, whole: Any) -> None:
    """Same history, counters and method numbers (all but the timings)."""
    assert record.history == whole.history
    assert (record.forget_batches, record.passes) == (whole.forget_batches, whole.passes)
    untimed = {k: v for k, v in whole.extra.items() if k != "check_seconds"}
    assert {k: v for k, v in record.extra.items() if k != "check_seconds"} == untimed


# Class 5 of digits: 130 forget and 1162 retain samples.
SCRUB_SMALL = {
    "batch_size": 16,  # 9 max-steps per max pass
    "options": {"epochs": 3, "msteps": 2, "retain_batch_size": 64},  # 19 min-steps per epoch
}
# 900 retain (100 per class) + 2 x 64 noise: 17 impair steps, then 2 x 15 repair steps; the
# 5 noise steps per class are Adam steps too (the crash counts them; resume.every does not).
UNSIR_SMALL = {
    "batch_size": 64,
    "options": {
        "noise_steps": 5,
        "noise_batch_size": 64,
        "noise_repeats": 2,
        "retain_per_class": 100,
        "repair_epochs": 2,
    },
}


@pytest.mark.parametrize(
    ("method", "config", "every", "crash", "saved"),
    [
        ("scrub", SCRUB_SMALL, 4, 6, {"steps": 4, "epoch": 1, "phase": "max"}),
        ("scrub", SCRUB_SMALL, 20, 45, {"steps": 40, "epoch": 2, "phase": "min"}),
        ("unsir", UNSIR_SMALL, 5, 5 + 8, {"steps": 5, "phase": 1}),  # impair
        ("unsir", UNSIR_SMALL, 20, 5 + 30, {"steps": 20, "phase": 2, "epoch": 0}),  # repair
    ],
)
def test_scrub_and_unsir_resume_mid_phase_to_the_uninterrupted_run(
    digits_run: tuple[Path, TrainedModel],
    tmp_path: Path,
    interrupt_after: Callable[[int], None],
    method: str,
    config: dict[str, Any],
    every: int,
    crash: int,
    saved: dict[str, Any],
) -> None:
    _, trained = digits_run
    spec = ForgetSpec(classes=(5,))
    config = {**config, "stopping": {"rule": "none"}}
    whole, whole_record = _run_digits(trained, spec, method, config)
    interrupt_after(crash)
    with pytest.raises(SimulatedCrashError):
        _run_digits(trained, spec, method, config, Resumable(tmp_path, every, "unlearn", {}))
    state = read_state(tmp_path, kind="unlearn")
    assert {key: state.loop[key] for key in saved} == saved
    resumed, record = _run_digits(
        trained, spec, method, config, Resumable(tmp_path, every, "unlearn", {}, state)
    )
    assert_same_weights(whole, resumed)
    assert_same_run(record, whole_record)


def test_lcodec_resumes_after_its_last_removal_batch(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, trained = digits_run
    spec = ForgetSpec(fraction=0.05)  # 65 samples: 5 removal batches of <= 16
    config = {"batch_size": 16, "options": {"perturbations": 200, "hessian_samples": 16}}
    whole, whole_record = _run_digits(trained, spec, "lcodec", config)

    remove_batch = LCodec.remove_batch
    calls = 0

    def crash_on_the_third(self: LCodec, *args: Any, **kwargs: Any) -> dict[str, float]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise SimulatedCrashError("interrupted in removal batch 3")
        return remove_batch(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(LCodec, "remove_batch", crash_on_the_third)
        with pytest.raises(SimulatedCrashError):
            _run_digits(trained, spec, "lcodec", config, Resumable(tmp_path, 1, "unlearn", {}))
    state = read_state(tmp_path, kind="unlearn")
    assert state.loop["position"] == 2 and len(state.loop["removals"]) == 2
    resumed, record = _run_digits(
        trained, spec, "lcodec", config, Resumable(tmp_path, 1, "unlearn", {}, state)
    )
    assert_same_weights(whole, resumed)
    assert record.extra == whole_record.extra and len(record.extra["removals"]) == 5


def test_a_state_is_only_continued_under_the_settings_it_was_saved_with(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path, interrupt_after: Callable[[int], None]
) -> None:
    run_dir, _ = digits_run
    out = tmp_path / "run"
    base = [
        "unlearn",
        "--checkpoint",
        str(run_dir),
        "--forget-class",
        "5",
        "--save-every",
        "3",
        "--quiet",
        "--set",
        "stopping.rule=none",
    ]
    interrupt_after(5)
    first = CliRunner().invoke(main, [*base, "--out", str(out)])
    assert isinstance(first.exception, SimulatedCrashError), first.output
    # Without --resume the interrupted run is neither overwritten nor silently continued.
    again = CliRunner().invoke(main, [*base, "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output, again.output
    other = CliRunner().invoke(main, [*base, "--seed", "3", "--resume", str(out)])
    assert other.exit_code == 2 and "config differ" in other.output, other.output
    assert (out / RESUME_FILE).exists()
    with pytest.raises(ResumeError, match="not of a train run"):
        read_state(out, kind="train")
    nothing = CliRunner().invoke(main, [*base, "--resume", str(tmp_path / "empty")])
    assert nothing.exit_code == 2 and "nothing to resume" in nothing.output, nothing.output


def test_a_nan_stops_training_naming_the_step_and_keeps_the_last_state(
    make_digits_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    # A learning rate that overflows within the first epoch.
    config = make_digits_config(epochs=2, optimizer={"name": "sgd", "lr": 1.0e6, "momentum": 0.9})
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 1, batch \d+ \(step \d+\)"):
        train_original(config, tmp_path, quiet=True, save_every=1)
    # Only the last good state is there, with finite weights; no checkpoint, no results.
    state = read_state(tmp_path, kind="train")
    weights = [
        t for k, t in state.tensors.items() if k.startswith("model.") and t.is_floating_point()
    ]
    assert weights and all(torch.isfinite(t).all() for t in weights)
    assert not (tmp_path / CHECKPOINT_FILE).exists() and not (tmp_path / RESULTS_FILE).exists()


def test_cli_reports_a_nan_in_one_line(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path
) -> None:
    run_dir, _ = digits_run
    result = CliRunner().invoke(
        main,
        [
            "unlearn",
            "--checkpoint",
            str(run_dir),
            "--forget-class",
            "5",
            "--set",
            "optimizer.lr=1e12",
            "--quiet",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "contrastive: loss is" in result.output and "step" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / CHECKPOINT_FILE).exists() and not (tmp_path / RESULTS_FILE).exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "conun", *args]


def _kill_after_the_second_save(
    args: list[str], out: Path, environment: dict[str, str], *, progress: str
) -> int:
    """Start ``conun ARGS --out OUT``, SIGKILL it once it has saved a second state (the loop's
    ``progress`` counter moved past the first save's) and return the saved ``progress``."""
    process = subprocess.Popen(
        _cli(*args, "--out", str(out)), env=environment, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not (out / RESUME_FILE).exists():
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "no resumable state was written in 120 s"
        time.sleep(0.02)
    # Let it run past the first save, then kill it without warning.
    first = read_state(out, kind="unlearn").loop[progress]
    while read_state(out, kind="unlearn").loop[progress] == first:
        assert process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    saved: int = read_state(out, kind="unlearn").loop[progress]
    assert not (out / CHECKPOINT_FILE).exists(), "the run finished before it was killed"
    return saved


def test_a_killed_unlearning_run_resumes_to_the_same_weights(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path
) -> None:
    """SIGKILL a real ``conun unlearn`` process mid-run, resume it, compare with a whole run."""
    run_dir, _ = digits_run
    args = [
        "unlearn",
        "--checkpoint",
        str(run_dir),
        "--forget-class",
        "5",
        "--quiet",
        "--save-every",
        "10",
        # A fixed run of about 360 steps on digits (a few seconds): killed right after its
        # second save (step 20), with ~340 steps of margin.
        "--set",
        "stopping.rule=none",
        "--set",
        "stopping.max_passes=30",
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    killed = tmp_path / "killed"
    saved = _kill_after_the_second_save(args, killed, environment, progress="steps")

    subprocess.run(_cli(*args, "--resume", str(killed)), env=environment, check=True)
    whole = tmp_path / "whole"
    subprocess.run(_cli(*args, "--out", str(whole)), env=environment, check=True)
    assert_same_weights(
        load_file(str(whole / CHECKPOINT_FILE)), load_file(str(killed / CHECKPOINT_FILE))
    )
    assert 10 <= saved < 360
    assert not (killed / RESUME_FILE).exists()


def _untimed_runs(directory: Path) -> list[dict[str, Any]]:
    """results.json's runs without their timings."""
    runs = json.loads((directory / RESULTS_FILE).read_text())["runs"]
    for run in runs:
        run.pop("seconds")
        run.pop("check_seconds", None)
    return list(runs)


@pytest.mark.parametrize(
    ("method", "request_args", "settings", "progress"),
    [
        # 2 x 9 max-steps and 4 x 73 min-steps: ~310 steps (about a second), a state every 10.
        (
            "scrub",
            ["--forget-class", "5"],
            ["batch_size=16", "options.retain_batch_size=16", "options.epochs=4"],
            "steps",
        ),
        # 65 impair steps, then 4 x 57 repair steps: ~290 steps, a state every 10.
        (
            "unsir",
            ["--forget-class", "5"],
            [
                "batch_size=16",
                "options.noise_steps=5",
                "options.noise_batch_size=64",
                "options.retain_per_class=100",
                "options.repair_epochs=4",
            ],
            "steps",
        ),
        # 9 removal batches of <= 8 samples (about 0.15 s each), a state after each.
        (
            "lcodec",
            ["--forget-fraction", "0.05"],
            ["batch_size=8", "options.perturbations=50", "options.hessian_samples=16"],
            "position",
        ),
    ],
)
def test_a_killed_run_of_a_method_with_its_own_schedule_resumes_to_the_same_run(
    digits_run: tuple[Path, TrainedModel],
    tmp_path: Path,
    method: str,
    request_args: list[str],
    settings: list[str],
    progress: str,
) -> None:
    """As above for SCRUB, UNSIR and L-CODEC: same weights, same history and numbers."""
    run_dir, _ = digits_run
    args = ["unlearn", "--checkpoint", str(run_dir), "--method", method, *request_args]
    args += ["--quiet", "--save-every", "10", "--set", "stopping.rule=none"]
    for setting in settings:
        args += ["--set", setting]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    killed = tmp_path / "killed"
    saved = _kill_after_the_second_save(args, killed, environment, progress=progress)
    assert saved >= 2

    subprocess.run(_cli(*args, "--resume", str(killed)), env=environment, check=True)
    whole = tmp_path / "whole"
    subprocess.run(_cli(*args, "--out", str(whole)), env=environment, check=True)
    assert_same_weights(
        load_file(str(whole / CHECKPOINT_FILE)), load_file(str(killed / CHECKPOINT_FILE))
    )
    assert _untimed_runs(killed) == _untimed_runs(whole)
    assert not (killed / RESUME_FILE).exists()
