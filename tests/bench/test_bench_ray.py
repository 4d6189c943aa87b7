"""``conun bench --executor ray`` on a local Ray (2 CPUs, started once for this module): the same
table as the local executor, resuming after the driver stopped mid-grid, a failing cell recorded
while the others finish, and ``--status`` on what it wrote. Skipped without Ray (``conun[ray]``).
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conun.bench import BenchFailedError, BenchReport, executors, run_bench
from conun.cli import main
from interruptions import SimulatedCrashError

ray = pytest.importorskip("ray")

TIME_COLUMNS = {"seconds_mean", "seconds_std", "x_retrain_mean", "x_retrain_std"}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[str]:
    """One local Ray with 2 CPUs for the module; yields its address."""
    context = ray.init(
        num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
    )
    yield str(context.address_info["address"])
    ray.shutdown()


def local_threads(out: Path) -> int:
    """The torch threads the cells of a bench directory ran with (all the same)."""
    (threads,) = {
        json.loads(path.read_text())["bench"]["torch_threads"]
        for path in out.glob("cells/*/*/*/results.json")
    }
    return int(threads)


@pytest.fixture(scope="module")
def ray_run(local_ray: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``conun bench smoke --executor ray --workers 2`` into a fresh directory (read-only: tests
    that change it work on a copy); returns the directory and the command's output."""
    out = tmp_path_factory.mktemp("bench-ray") / "smoke"
    args = ["bench", "smoke", "--executor", "ray", "--workers", "2", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


def copy_of(ray_run: tuple[Path, str], tmp_path: Path) -> Path:
    target = tmp_path / "smoke"
    shutil.copytree(ray_run[0], target)
    return target


def cell_dir(out: Path, request: str, method: str) -> Path:
    return out / "cells" / "0" / request / method


def results_mtimes(out: Path) -> dict[Path, int]:
    files = [*out.glob("cells/*/*/*/results.json"), *out.glob("originals/*/*")]
    return {path: path.stat().st_mtime_ns for path in files}


def table_without_times(out: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((out / "table.csv").open()))
    return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in rows]


def cell_numbers(out: Path) -> dict[str, Any]:
    """Every cell's metrics and accuracy history (all but its timings), by cell."""
    numbers = {}
    for path in sorted(out.glob("cells/*/*/*/results.json")):
        (run,) = json.loads(path.read_text())["runs"]
        numbers[str(path.parent.relative_to(out))] = (run["metrics"], run["history"])
    return numbers


def test_ray_grid_gives_the_local_table(
    ray_run: tuple[Path, str], smoke_run: tuple[Path, BenchReport], tmp_path: Path
) -> None:
    out, output = ray_run
    assert "8 cells: 8 run, 0 already finished, 0 failed" in output
    assert "ray: 2 workers, 1 CPU + 0 GPU per cell, 1 torch thread(s) per cell" in output
    assert "driver peak RSS" in output
    local = smoke_run[0]
    if local_threads(local) != 1:
        # The thread count changes the last bits of convolutions: the sequential reference
        # runs with the tasks' one thread. (Not the tasks with the reference's count: two
        # workers of two threads on two cores are several times slower.)
        local = tmp_path / "local"
        run_bench("smoke", out=local, quiet=True, threads=1)
    assert table_without_times(out) == table_without_times(local)
    assert cell_numbers(out) == cell_numbers(local)  # identical, not close
    for path in out.glob("cells/*/*/*/results.json"):
        bench = json.loads(path.read_text())["bench"]
        assert bench["executor"] == "ray" and bench["torch_threads"] == 1
    run = json.loads((out / "run.json").read_text())
    assert run["executor"] == {
        "name": "ray",
        "workers": 2,
        "cpus_per_cell": 1.0,
        "gpus_per_cell": 0.0,
        "torch_threads": 1,
    }
    assert run["ran"] == 8 and run["driver_peak_rss_mib"] > 0
    assert not list(out.glob("cells/*/*/*/running.json"))


def test_interrupted_driver_then_rerun_redoes_no_finished_cell(
    local_ray: str, ray_run: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = copy_of(ray_run, tmp_path)
    redo = {("class5", "finetune"), ("fraction0.05", "original"), ("fraction0.05", "contrastive")}
    redo.add(("fraction0.05", "finetune"))
    for request, method in redo:
        shutil.rmtree(cell_dir(out, request, method))
    kept = results_mtimes(out)
    real_end = executors.GridProgress.end

    def dies_after_one_cell(self: executors.GridProgress, outcome: Any) -> None:
        real_end(self, outcome)
        raise SimulatedCrashError("the driver dies with cells in flight")

    # The driver stops mid-grid (here: an exception in its loop, as a Ctrl-C would): it
    # cancels the cells in flight and ends.
    monkeypatch.setattr(executors.GridProgress, "end", dies_after_one_cell)
    with pytest.raises(SimulatedCrashError):
        run_bench("smoke", out=out, quiet=True, executor="ray", workers=2)
    monkeypatch.undo()
    done = {cell for cell in redo if (cell_dir(out, *cell) / "results.json").is_file()}
    assert 1 <= len(done) < len(redo)  # (a cell about to end may beat its cancellation)
    assert not list(out.glob("cells/*/*/*/running.json"))  # the cancelled cells' markers went
    finished = results_mtimes(out)

    report = run_bench("smoke", out=out, quiet=True, executor="ray", workers=2)
    assert {(cell.request, cell.method) for cell in report.ran} == redo - done
    # The smoke grid's 8 cells: the 4 never removed and those of `redo` that beat the
    # cancellation are skipped (1 or 2 of them, depending on which in-flight cell ends first).
    assert len(report.skipped) == 8 - len(redo - done)
    # nothing finished before the rerun was written again (originals included)
    assert {path: results_mtimes(out)[path] for path in finished} == finished
    assert set(kept) <= set(finished)


def test_a_failing_cell_is_recorded_and_the_others_finish(
    local_ray: str, ray_run: tuple[Path, str], tmp_path: Path
) -> None:
    out = copy_of(ray_run, tmp_path)
    for method in ("contrastive", "finetune"):
        shutil.rmtree(cell_dir(out, "fraction0.05", method))
    # contrastive keeps its weights (keep_weights): a directory where its checkpoint goes makes
    # the cell raise after it has run, in the worker, from a genuine error.
    blocker = cell_dir(out, "fraction0.05", "contrastive") / "checkpoint.safetensors"
    (blocker / "in-the-way").mkdir(parents=True)

    with pytest.raises(BenchFailedError, match="seed 0 / fraction0.05 / contrastive") as caught:
        run_bench("smoke", out=out, quiet=True, executor="ray", workers=2)
    report = caught.value.report
    assert [str(cell) for cell in report.ran] == ["seed 0 / fraction0.05 / finetune"]
    (failure,) = report.failed.values()
    assert failure.startswith("IsADirectoryError")
    error = (cell_dir(out, "fraction0.05", "contrastive") / "error.txt").read_text()
    assert "Traceback" in error and "IsADirectoryError" in error
    assert (cell_dir(out, "fraction0.05", "finetune") / "results.json").is_file()
    assert len(list(csv.DictReader((out / "table.csv").open()))) == 7

    result = CliRunner().invoke(main, ["bench", "--status", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "8 cells: 7 finished, 0 running, 1 failed, 0 pending" in result.output
    assert "failed: seed 0 / fraction0.05 / contrastive: IsADirectoryError" in result.output


def test_ray_finishes_a_grid_the_local_executor_started(
    local_ray: str, smoke_run: tuple[Path, BenchReport], tmp_path: Path
) -> None:
    out = tmp_path / "smoke"
    shutil.copytree(smoke_run[0], out)
    shutil.rmtree(cell_dir(out, "class5", "finetune"))
    kept = results_mtimes(out)
    report = run_bench("smoke", out=out, quiet=True, executor="ray", workers=2)
    assert [str(cell) for cell in report.ran] == ["seed 0 / class5 / finetune"]
    assert {path: results_mtimes(out)[path] for path in kept} == kept
    bench = json.loads((cell_dir(out, "class5", "finetune") / "results.json").read_text())
    assert bench["bench"]["executor"] == "ray"
