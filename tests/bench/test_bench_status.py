"""``conun bench --status OUT`` from the files alone, and the progress bar's counts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from conun.bench.cells import CellOutcome
from conun.bench.executors import GridProgress
from conun.bench.plan import Cell
from conun.bench.status import grid_status
from conun.cli import main


def status_output(out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["bench", "--status", str(out)], catch_exceptions=False)
    return result.exit_code, result.output


def make_pending(out: Path, request: str, method: str) -> Path:
    directory = out / "cells" / "0" / request / method
    shutil.rmtree(directory)
    directory.mkdir()
    return directory


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_status_from_the_files_alone(smoke_copy: Callable[[], Path]) -> None:
    out = smoke_copy()
    code, output = status_output(out)
    assert code == 0, output
    assert "bench smoke in" in output and "(last run: executor local)" in output
    assert "8 cells: 8 finished, 0 running, 0 failed, 0 pending" in output

    host = socket.gethostname()
    running = make_pending(out, "class5", "finetune")
    (running / "running.json").write_text(
        json.dumps({"host": host, "pid": os.getpid(), "started": "2026-01-01T00:00:00+00:00"})
    )
    elsewhere = make_pending(out, "class5", "contrastive")  # another machine: not checkable
    (elsewhere / "running.json").write_text(json.dumps({"host": "node-7", "pid": 1}))
    killed = make_pending(out, "fraction0.05", "original")  # its process is gone
    (killed / "running.json").write_text(json.dumps({"host": host, "pid": dead_pid()}))
    failed = make_pending(out, "fraction0.05", "finetune")
    (failed / "error.txt").write_text("Traceback (most recent call last):\nRuntimeError: boom\n")
    make_pending(out, "fraction0.05", "contrastive")

    code, output = status_output(out)
    assert code == 0, output
    assert "8 cells: 3 finished, 2 running, 1 failed, 2 pending" in output
    assert f"running: seed 0 / class5 / finetune (host {host}, pid {os.getpid()}" in output
    assert "running: seed 0 / class5 / contrastive (host node-7" in output
    assert "failed: seed 0 / fraction0.05 / finetune: RuntimeError: boom" in output
    assert "interrupted: seed 0 / fraction0.05 / original" in output
    status = grid_status(out)
    assert [str(cell) for cell in status.pending] == [
        "seed 0 / fraction0.05 / original",
        "seed 0 / fraction0.05 / contrastive",
    ]


def test_status_of_a_directory_without_a_grid_is_an_error(tmp_path: Path) -> None:
    code, output = status_output(tmp_path)
    assert code == 2 and "no grid.json" in output, output


def test_progress_counts_finished_running_failed() -> None:
    cells = [Cell(0, "class5", method, "class") for method in ("original", "retrain", "finetune")]
    progress = GridProgress(4, 1, desc="bench", quiet=True)  # 1 finished before this run
    for cell in cells:
        progress.start(cell)
    progress.end(CellOutcome(cells[0], None, 1.0))
    progress.end(CellOutcome(cells[1], "RuntimeError: boom", 1.0))
    assert (progress.finished, len(progress.running), progress.failed) == (2, 1, 1)
    assert progress.running == {cells[2]}
    progress.close()
