"""``conun bench`` on the command line: resume a finished grid, exit statuses, clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conun.bench import grid as grid_module
from conun.cli import main


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

    monkeypatch.setattr(grid_module, "run_method", crash)
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
