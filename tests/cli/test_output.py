"""The command line's start-up and output: ``conun --help`` imports no command (nor torch), and
the demo prints a short screen, on a terminal and in a pipe; ``-v`` brings the per-epoch lines."""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from conun.cli import COMMANDS, main
from conun.evaluation.results import validate_results
from conun.workflows.training import TrainedModel


def run_conun(*args: str, terminal: bool = False, timeout: float = 300) -> tuple[int, str]:
    """Run ``python -m conun ARGS`` with stdout and stderr together, on a pseudo-terminal (what
    a person sees) or a pipe (what CI and ``| tee`` see); return the exit status and output."""
    command = [sys.executable, "-m", "conun", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not terminal:
        completed = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        return completed.returncode, completed.stdout
    # Unix only: imported here so that the module still loads elsewhere.
    import fcntl
    import pty
    import termios

    primary, secondary = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, where tqdm draws nothing: give it a real size.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        command, stdin=secondary, stdout=secondary, stderr=secondary, env=env, close_fds=True
    )
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO: the child has closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    # The terminal turns "\n" into "\r\n"; the lines a person sees are the "\n".
    return process.returncode, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def test_importing_the_cli_does_not_import_torch() -> None:
    script = "import sys, conun.cli; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_help_lists_every_command_without_importing_any() -> None:
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from conun.cli import main\n"
        "result = CliRunner().invoke(main, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('conun.cli.'))\n"
        "assert not loaded, loaded\n"
        "print(result.output)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    for name, command in COMMANDS.items():
        assert f"  {name}  " in completed.stdout and command.summary in completed.stdout


def test_each_command_loads_with_the_summary_the_group_shows() -> None:
    context = click.Context(main)
    for name, lazy in COMMANDS.items():
        command = main.get_command(context, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(limit=200) == lazy.summary
    assert main.get_command(context, "no-such-command") is None


def test_an_unknown_command_is_one_clear_line() -> None:
    result = CliRunner().invoke(main, ["trian"])
    assert result.exit_code == 2 and "No such command 'trian'" in result.output


def test_quiet_and_verbose_together_are_refused() -> None:
    result = CliRunner().invoke(main, ["demo", "--quiet", "-v", "--out", "unused"])
    assert result.exit_code == 2 and "--quiet or --verbose" in result.output


def test_verbose_brings_back_the_per_epoch_lines(tmp_path: Path) -> None:
    args = ["train", "--dataset", "digits", "--epochs", "2", "--force"]
    code, output = run_conun(*args, "--out", str(tmp_path / "plain"))
    assert code == 0, output
    assert "epoch 1/2" not in output and " INFO " not in output
    code, output = run_conun(*args, "--out", str(tmp_path / "verbose"), "-v")
    assert code == 0, output
    assert "epoch 1/2" in output and "epoch 2/2" in output


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="needs a Unix pseudo-terminal")
def test_the_demo_prints_under_30_lines_and_writes_its_six_runs(tmp_path: Path) -> None:
    # The two demos run at once (each with one torch thread, as run_conun sets): half the wall
    # time of running them one after the other on a 2-core machine.
    command = [sys.executable, "-m", "conun", "demo", "--out", str(tmp_path / "pipe")]
    piped = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        outputs = {True: run_conun("demo", "--out", str(tmp_path / "terminal"), terminal=True)}
        pipe_output, _ = piped.communicate(timeout=300)
    finally:
        if piped.poll() is None:
            piped.kill()
    outputs[False] = (piped.returncode, pipe_output)
    for terminal, (code, output) in outputs.items():
        assert code == 0, output
        lines = output.count("\n")
        assert lines < 30, f"{lines} lines:\n{output}"
        assert "| class | contrastive |" in output and " INFO " not in output
        # Bars are drawn on a terminal only: in a pipe they would be one ever-growing line.
        assert ("unlearn (contrastive)" in output) is terminal
    # What the demo wrote: its six runs, the class forgotten, the original kept.
    results = json.loads((tmp_path / "pipe" / "results.json").read_text())
    validate_results(results)
    cells = [(run["scenario"], run["method"]) for run in results["runs"]]
    assert cells == [
        (scenario, method)
        for scenario in ("class", "sample")
        for method in ("original", "retrain", "contrastive")
    ]
    by_cell = {(run["scenario"], run["method"]): run for run in results["runs"]}
    assert by_cell[("class", "contrastive")]["metrics"]["forget_train_acc"] <= 0.15
    assert by_cell[("class", "retrain")]["metrics"]["forget_test_acc"] == 0.0
    assert (tmp_path / "pipe" / "original" / "checkpoint.safetensors").exists()


def test_print_config_shows_each_value_with_its_source_and_writes_nothing(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path
) -> None:
    checkpoint, _ = digits_run
    out = tmp_path / "out"
    code, output = run_conun(
        "unlearn", "--checkpoint", str(checkpoint), "--forget-class", "3", "--seed", "4",
        "--set", "optimizer.lr=0.02", "--out", str(out), "--print-config",
    )  # fmt: skip
    assert code == 0, output
    assert "# conun unlearn config: method contrastive, class scenario, dataset digits" in output
    assert "# from: --seed" in output and "# from: --set optimizer.lr=0.02" in output
    printed = yaml.safe_load(output)
    assert printed["seed"] == 4 and printed["optimizer"]["lr"] == 0.02
    assert not out.exists()
