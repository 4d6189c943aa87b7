"""``conun bench`` on the command line: resume a finished grid, exit statuses, clear errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conun.bench import cells as cells_module
from conun.cli import main
from conun.workflows.ray_runtime import RayNotInstalledError
from conun.workflows.ulira_shadows import run_shadow_jobs


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_bench_resumes_a_finished_grid(smoke_copy: Callable[[], Path]) -> None:
    out = smoke_copy()
    (out / "table.md").unlink()
    code, output = invoke("bench", "smoke", "--out", str(out), "--seeds", "0", "--quiet")
    assert code == 0, output
    assert "8 cells: 0 run, 8 already finished, 0 failed" in output
    assert "| class5 | class | contrastive | 1 |" in output
    assert (out / "table.md").is_file() and (out / "table.tex").is_file()


def test_bench_failed_cells_exit_1_and_keep_the_rest(
    smoke_copy: Callable[[], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = smoke_copy()
    (out / "cells" / "0" / "class5" / "finetune" / "results.json").unlink()

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(cells_module, "run_method", crash)
    code, output = invoke("bench", "smoke", "--out", str(out), "--quiet")
    assert code == 1
    assert "seed 0 / class5 / finetune: RuntimeError: simulated crash" in output
    assert "rerun the same command" in output
    assert "| class5 | class | contrastive | 1 |" in output  # the finished cells' table


@pytest.mark.parametrize(
    "args, expected",
    [
        (["nope"], "unknown bench preset 'nope'"),
        (["smoke", "--seeds", "0,zero"], "--seeds '0,zero'"),
        (["smoke", "--seeds", "1,1"], "distinct integers"),
    ],
)
def test_bench_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    out = tmp_path / "out"
    code, output = invoke("bench", *args, "--out", str(out), "--quiet")
    assert code == 2 and expected in output, output
    assert not out.exists()


def test_bench_preset_file_errors_name_the_key(tmp_path: Path) -> None:
    preset = tmp_path / "mine.yaml"
    preset.write_text("dataset: digits\nrequests: [{class: [5]}]\nseeds: [0]\nmethods: [magic]\n")
    code, output = invoke("bench", str(preset), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "methods: Value error, unknown method(s) magic; registered:" in output


def test_missing_ray_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as without the extra
    out = tmp_path / "out"
    code, output = invoke("bench", "smoke", "--executor", "ray", "--out", str(out), "--quiet")
    assert code == 2
    (line,) = output.strip().splitlines()
    assert line.startswith("Error: --executor ray needs Ray") and "pip install 'conun[ray]'" in line
    assert not out.exists()  # before any work
    with pytest.raises(RayNotInstalledError, match=r"pip install 'conun\[ray\]'"):
        run_shadow_jobs([], executor="ray")  # U-LiRA's shadows, the same error


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--workers", "2"], "--workers: for --executor ray only"),
        (["--executor", "local", "--gpus-per-cell", "1"], "--gpus-per-cell: for --executor ray"),
        (["--executor", "ray", "--workers", "0"], "Invalid value for '--workers'"),
        (["--executor", "ray", "--gpus-per-cell", "1"], "runs on cpu: set `device: cuda`"),
        (["--status", "x"], "--status OUT reads a bench directory only; drop PRESET"),
    ],
)
def test_bad_executor_options_exit_2_before_any_work(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    if "ray" in args and "--gpus-per-cell" in args:
        pytest.importorskip("ray")  # the device check comes after the check that Ray is there
    out = tmp_path / "out"
    code, output = invoke("bench", "smoke", *args, "--out", str(out), "--quiet")
    assert code == 2 and expected in output, output
    assert not out.exists()
