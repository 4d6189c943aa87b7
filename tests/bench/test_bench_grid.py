"""The bench runner on the smoke preset: every cell written and valid, the table right, and a
rerun that recomputes only what is missing, broken or failed."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conun.bench import (
    BenchFailedError,
    BenchReport,
    CellMismatchError,
    load_bench_preset,
    run_bench,
)
from conun.bench import cells as cells_module
from conun.engine.checkpoint import CHECKPOINT_FILE
from conun.evaluation.results import validate_results
from conun.workflows.unlearning import run_method as real_run_method

REQUESTS = ("class5", "fraction0.05")
METHODS = ("original", "retrain", "contrastive", "finetune")


def cell_file(out: Path, request: str, method: str, seed: int = 0) -> Path:
    return out / "cells" / str(seed) / request / method / "results.json"


def mtimes(out: Path) -> dict[Path, int]:
    """Modification time of every cell's results.json and every original's checkpoint."""
    files = [*out.glob("cells/*/*/*/results.json"), *out.glob("originals/*/*")]
    return {path: path.stat().st_mtime_ns for path in files}


@pytest.fixture
def count_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record every (scenario, method) the bench computes, and forbid training an original."""
    calls: list[tuple[str, str]] = []
    real = real_run_method

    def counting(config: Any, model: Any, data: Any, split: Any, *args: Any, **kw: Any) -> Any:
        calls.append((split.scenario, config.method))
        return real(config, model, data, split, *args, **kw)

    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the cached original was trained again")

    monkeypatch.setattr(cells_module, "run_method", counting)
    monkeypatch.setattr(cells_module, "train_original", no_training)
    return calls


def test_smoke_grid_end_to_end(smoke_run: tuple[Path, BenchReport]) -> None:
    out, report = smoke_run
    assert len(report.ran) == 8 and not report.skipped and not report.failed
    # keep_weights (default: retrain and Figure 1's panels) decides which cells keep weights.
    kept = {path.parent.name for path in out.glob("cells/*/*/*/" + CHECKPOINT_FILE)}
    assert kept == {"retrain", "contrastive", "finetune"}
    (original,) = (out / "originals").iterdir()
    assert (original / CHECKPOINT_FILE).is_file() and (original / "results.json").is_file()
    for request in REQUESTS:
        for method in METHODS:
            data = json.loads(cell_file(out, request, method).read_text())
            validate_results(data)
            (run,) = data["runs"]
            assert run["method"] == method and data["seed"] == 0
            assert data["bench"]["request"] == request
            assert data["bench"]["original"] == original.name
            assert run["scenario"] == ("class" if request == "class5" else "sample")
        retrain = cell_file(out, request, "retrain").parent
        assert (retrain / CHECKPOINT_FILE).is_file()
    class_run = json.loads(cell_file(out, "class5", "retrain").read_text())["runs"][0]
    assert class_run["forget"] == {"classes": [5]}
    assert class_run["metrics"]["forget_train_acc"] == 0.0  # never saw class 5

    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [(row["request"], row["method"]) for row in rows] == [
        (request, method) for request in REQUESTS for method in METHODS
    ]
    assert all(row["num_seeds"] == "1" and row["seconds_mean"] for row in rows)
    assert {row["x_retrain_mean"] for row in rows if row["method"] == "retrain"} == {"1.0"}
    markdown = (out / "table.md").read_text()
    assert markdown == report.markdown
    assert markdown.count("| class5 | class |") == 4
    assert markdown.count("| fraction0.05 | sample |") == 4
    latex = (out / "table.tex").read_text()
    assert r"\begin{tabular}" in latex and latex.count(r" \\") == 1 + 8
    assert "smoke" in (out / "bench.yaml").read_text()


def test_rerun_recomputes_only_missing_and_broken_cells(
    smoke_copy: Callable[[], Path], count_runs: list[tuple[str, str]]
) -> None:
    out = smoke_copy()
    deleted = cell_file(out, "class5", "contrastive")
    before = json.loads(deleted.read_text())
    for path in deleted.parent.iterdir():
        path.unlink()
    broken = cell_file(out, "fraction0.05", "finetune")
    broken.write_text(broken.read_text()[:100])  # a truncated file is not a finished cell
    untouched = {path: mtime for path, mtime in mtimes(out).items() if path != broken}

    report = run_bench("smoke", out=out, quiet=True)

    assert sorted(count_runs) == [("class", "contrastive"), ("sample", "finetune")]
    assert [str(cell) for cell in report.ran] == [
        "seed 0 / class5 / contrastive",
        "seed 0 / fraction0.05 / finetune",
    ]
    assert len(report.skipped) == 6
    assert {path: mtime for path, mtime in mtimes(out).items() if path in untouched} == untouched
    validate_results(json.loads(broken.read_text()))
    # the cached original gives the recomputed cell the same numbers as the first run
    after = json.loads(deleted.read_text())
    assert after["runs"][0]["metrics"] == before["runs"][0]["metrics"]

    count_runs.clear()
    assert not run_bench("smoke", out=out, quiet=True).ran and not count_runs


def test_failed_cell_is_reported_and_retried(
    smoke_copy: Callable[[], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = smoke_copy()
    for method in ("contrastive", "finetune"):
        cell_file(out, "fraction0.05", method).unlink()
    real = real_run_method

    def failing(config: Any, *args: Any, **kwargs: Any) -> Any:
        if config.method == "contrastive":
            raise RuntimeError("simulated crash")
        return real(config, *args, **kwargs)

    monkeypatch.setattr(cells_module, "run_method", failing)
    with pytest.raises(BenchFailedError, match="seed 0 / fraction0.05 / contrastive") as caught:
        run_bench("smoke", out=out, quiet=True)
    report = caught.value.report
    assert [str(cell) for cell in report.ran] == ["seed 0 / fraction0.05 / finetune"]
    error_file = cell_file(out, "fraction0.05", "contrastive").with_name("error.txt")
    assert "simulated crash" in error_file.read_text()
    # the table holds every cell that finished
    assert len(list(csv.DictReader((out / "table.csv").open()))) == 7

    monkeypatch.setattr(cells_module, "run_method", real)
    report = run_bench("smoke", out=out, quiet=True)
    assert [str(cell) for cell in report.ran] == ["seed 0 / fraction0.05 / contrastive"]
    assert not error_file.exists()
    assert len(list(csv.DictReader((out / "table.csv").open()))) == 8


def test_cells_of_another_configuration_are_an_error_before_any_work(
    smoke_copy: Callable[[], Path], count_runs: list[tuple[str, str]]
) -> None:
    out = smoke_copy()
    table = (out / "table.md").read_text()
    changed = load_bench_preset("smoke").model_copy(update={"unlearn": {"eval_batch_size": 7}})
    with pytest.raises(CellMismatchError, match="8 cell.*different configuration"):
        run_bench(changed, out=out, quiet=True)
    assert not count_runs and (out / "table.md").read_text() == table


def test_audited_grid_resumes_with_retrain_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = tmp_path / "audited.yaml"
    preset.write_text(
        "dataset: digits\ntrain: {epochs: 4}\nrequests: [{fraction: 0.05}]\n"
        "methods: [original, retrain, contrastive]\nseeds: [0]\naudit: true\n"
    )
    out = tmp_path / "out"
    report = run_bench(preset, out=out, quiet=True)
    # original comes first in the table but runs after retrain, whose model its audit needs
    assert not report.failed
    assert [cell.method for cell in report.ran] == ["retrain", "original", "contrastive"]
    original = json.loads(cell_file(out, "fraction0.05", "original").read_text())["runs"][0]
    assert original["metrics"]["avg_gap"] is not None
    contrastive = cell_file(out, "fraction0.05", "contrastive")
    first = json.loads(contrastive.read_text())["runs"][0]["metrics"]
    assert first["mia_forget_member_rate"] is not None and first["avg_gap"] is not None
    assert "MIA-efficacy" in (out / "table.md").read_text()

    contrastive.unlink()
    report = run_bench(preset, out=out, quiet=True)
    assert [cell.method for cell in report.ran] == ["contrastive"]
    again = json.loads(contrastive.read_text())["runs"][0]["metrics"]
    # distances to the retrained model read back from its cell's checkpoint: the same numbers
    assert again["avg_gap"] == pytest.approx(first["avg_gap"])
    assert again["js_divergence"] == pytest.approx(first["js_divergence"])

    # Bench weights are not committed: a clone holds the cells without checkpoints. A finished
    # grid then reruns nothing (retrain's weights are needed only by cells still to run) ...
    for checkpoint in out.glob("cells/*/*/*/" + CHECKPOINT_FILE):
        checkpoint.unlink()
    retrain = cell_file(out, "fraction0.05", "retrain")
    kept = retrain.read_text()
    report = run_bench(preset, out=out, quiet=True)
    assert not report.ran and retrain.read_text() == kept
    # ... and a missing cell of the request brings retrain back for its distances.
    contrastive.unlink()
    report = run_bench(preset, out=out, quiet=True)
    assert [cell.method for cell in report.ran] == ["retrain", "contrastive"]
