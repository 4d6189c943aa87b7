"""``conun bench``: run a preset's grid of seeds x forget requests x methods, resumably.

Output directory layout::

    OUT/bench.yaml                               the preset and seeds of the last invocation
    OUT/grid.json                                its cells, fingerprints and executor
                                                 (what ``conun bench --status`` reads)
    OUT/run.json                                 the last invocation's executor, threads, wall
                                                 time and the driver's peak memory
    OUT/originals/<dataset>-<model>-seed<S>-<hash>/   one trained original per (seed, recipe)
    OUT/cells/<seed>/<request>/<method>/         one cell: results.json (+ results.md,
                                                 config.yaml; retrain also its checkpoint;
                                                 running.json while it runs, error.txt if it
                                                 failed)
    OUT/table.md, table.csv, table.tex           mean ± std over seeds, one row per request x method

Every cell is one :func:`conun.workflows.unlearning.run_method` call on the seed's original,
exactly what ``conun unlearn`` does, and writes its own ``results.json`` atomically (the last
file it writes), tagged with a fingerprint of everything that determines its numbers (training
recipe, unlearning config, request, method). A re-invocation skips every cell whose
``results.json`` is complete, valid and carries the same fingerprint, so an interrupted grid
resumes where it stopped; a cell holding a *different* configuration's result is an error
(before any work), never silently overwritten or mixed into a table. Originals are cached the
same way under the hash of their training recipe, and retrain is a cell like any other, so
nothing is trained twice.

The cells run where the executor puts them (:mod:`conun.bench.executors`): one at a time in
this process (``local``, the default) or as Ray tasks (``ray``), with the same files either way.
A failing cell does not stop the grid: its traceback goes to the log and to ``error.txt`` in its
directory, the other cells run, the table is written from the finished ones, and
:class:`BenchFailedError` names the failed cells at the end (rerunning retries only those).
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conun.bench.cells import RUNNING_FILE, original_is_cached, prepare_original
from conun.bench.executors import (
    EXECUTORS,
    ExecutorSettings,
    check_executor,
    executor_settings,
    grid_progress,
)
from conun.bench.fingerprints import changed_inputs
from conun.bench.plan import (
    BenchPlan,
    Cell,
    CellMismatchError,
    execution_order,
    plan_bench,
    read_finished_cell,
)
from conun.bench.preset import BenchPreset, BenchPresetError, load_bench_preset
from conun.bench.status import write_grid_file
from conun.bench.tables import aggregate, format_markdown, write_tables
from conun.data.splits import ForgetRequestError
from conun.io import (
    RESULTS_FILE,
    atomic_write_json,
    atomic_write_text,
    check_output_path,
    remove_stale_temporaries,
)
from conun.workflows.inputs import check_requests, ensure_dataset
from conun.workflows.outputs import BENCH_FILE, ERROR_FILE

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("runs") / "bench"
"""Where ``run_bench`` writes without ``out``: ``runs/bench/<preset name>``."""

RUN_FILE = "run.json"
"""The last invocation's executor, thread setting, wall time and driver peak memory."""


@dataclass
class BenchReport:
    """What a bench invocation did.

    Attributes:
        out: the output directory.
        cells: every cell of the grid, in run order.
        ran: the cells computed by this invocation (execution order).
        skipped: the cells already finished before it.
        failed: cell -> the error that stopped it.
        tables: ``{"markdown", "csv", "latex"}`` -> written path.
        markdown: the Markdown table, as written.
        executor: how the cells ran.
        seconds: wall-clock of the cells (the executor's part).
        driver_peak_rss_mib: the peak resident memory of this process so far (MiB).
    """

    out: Path
    cells: list[Cell]
    ran: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: dict[Cell, str] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)
    markdown: str = ""
    executor: ExecutorSettings = field(default_factory=lambda: ExecutorSettings("local"))
    seconds: float = 0.0
    driver_peak_rss_mib: float = 0.0

    def summary(self) -> str:
        """One line: how many cells ran, were already finished, failed."""
        return (
            f"{len(self.cells)} cells: {len(self.ran)} run, {len(self.skipped)} already finished, "
            f"{len(self.failed)} failed"
        )


class BenchFailedError(RuntimeError):
    """Some cells failed; the others finished and the table holds them. Rerun to retry."""

    def __init__(self, report: BenchReport) -> None:
        self.report = report
        lines = [f"{len(report.failed)} bench cell(s) failed ({report.summary()}):"]
        lines += [
            f"  {cell}: {error} (traceback in {cell.directory(report.out) / ERROR_FILE})"
            for cell, error in report.failed.items()
        ]
        lines.append("rerun the same command to retry them; finished cells are kept")
        super().__init__("\n".join(lines))


def _peak_rss_mib() -> float:
    """This process's peak resident memory (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _finished_cells(plan: BenchPlan, target: Path) -> dict[Cell, dict[str, Any]]:
    """The finished cells in ``target`` (before any work).

    Raises:
        CellMismatchError: some cells hold a different configuration's result.
    """
    finished: dict[Cell, dict[str, Any]] = {}
    mismatched: list[str] = []
    for cell in plan.cells:
        try:
            document = read_finished_cell(plan, target, cell, with_weights=False)
        except CellMismatchError as error:
            mismatched.append(str(error))
            continue
        if document is not None:
            finished[cell] = document
    # A finished retrain cell without its weights (bench weights are not committed) is kept
    # unless a cell of its request still has to run and needs it as the audit's reference:
    # retraining it then would change its row under the finished cells' distances.
    for cell in plan.cells:
        if cell.method == "retrain" and cell in finished:
            waiting = any(
                other not in finished
                for other in plan.cells
                if (other.seed, other.request) == (cell.seed, cell.request)
            )
            if waiting and read_finished_cell(plan, target, cell) is None:
                del finished[cell]
    mismatched += changed_inputs(plan, target, finished)  # the original's weights, the ids
    if mismatched:
        shown = "\n  ".join(mismatched[:5])
        more = f"\n  ... and {len(mismatched) - 5} more" if len(mismatched) > 5 else ""
        raise CellMismatchError(
            f"{target} holds {len(mismatched)} cell(s) of a different configuration:\n  {shown}"
            f"{more}\nchoose another --out, or delete those cell directories to recompute them"
        )
    return finished


def run_bench(
    preset: str | Path | BenchPreset,
    *,
    out: str | Path | None = None,
    seeds: Sequence[int] | None = None,
    quiet: bool = False,
    executor: str = "local",
    workers: int | None = None,
    cpus_per_cell: float | None = None,
    gpus_per_cell: float | None = None,
    threads: int | None = None,
) -> BenchReport:
    """Run (or resume) a bench grid and write its tables.

    Args:
        preset: a shipped preset's name (``smoke``), a YAML file, or a validated preset.
        out: output directory; default ``runs/bench/<preset name>``. Under Ray, every worker
            must see it at the same absolute path (a shared file system on a cluster).
        seeds: replace the preset's seeds.
        quiet: no progress bars.
        executor: ``local`` (one cell at a time in this process) or ``ray`` (Ray tasks;
            :mod:`conun.bench.executors`).
        workers: ray: the most tasks at once (default: as many as ready).
        cpus_per_cell: ray: CPUs per task (default 1).
        gpus_per_cell: ray: GPUs per task (default 0; needs a CUDA preset when > 0).
        threads: torch threads per cell (default: torch's own locally, one per whole CPU of a
            Ray task); recorded in each cell's results.json and in ``run.json``.

    Returns:
        The report; the tables are in ``out/table.{md,csv,tex}``.

    Raises:
        BenchPresetError: an invalid preset (before any work).
        ExecutorError, RayNotInstalledError: executor options that cannot work, or Ray asked
            for but not installed (before any work).
        CellMismatchError: ``out`` holds cells of a different configuration (before any work).
        DatasetNotFoundError: the dataset's files are missing (before any work).
        BenchFailedError: some cells failed (after every other cell ran and the tables were
            written).
    """
    loaded = preset if isinstance(preset, BenchPreset) else load_bench_preset(preset)
    plan = plan_bench(loaded, seeds)
    settings = executor_settings(
        executor,
        workers=workers,
        cpus_per_cell=cpus_per_cell,
        gpus_per_cell=gpus_per_cell,
        threads=threads,
    )
    check_executor(settings, plan)
    target = Path(out) if out is not None else DEFAULT_OUT / plan.name
    check_output_path(target)  # a file there, names too long, nothing writable: refused
    for config in {config.dataset: config for config in plan.train_configs.values()}.values():
        ensure_dataset(config)
    specs = {f"request {label}": spec.forget_spec() for label, spec in plan.requests.items()}
    for seed, config in plan.train_configs.items():  # cheap: no training, data loads only
        try:
            check_requests(config, specs)
        except ForgetRequestError as error:
            raise BenchPresetError(f"bench preset {plan.name}, seed {seed}: {error}") from None
    finished = _finished_cells(plan, target)

    for stale in remove_stale_temporaries(target, recursive=True):
        logger.info("removed %s, left by an interrupted write", stale)
    for cell in plan.cells:  # markers of a killed invocation: no cell of this one runs yet
        if cell not in finished:
            (cell.directory(target) / RUNNING_FILE).unlink(missing_ok=True)
    atomic_write_text(
        target / BENCH_FILE,
        yaml.safe_dump(
            {
                "preset": loaded.model_dump(mode="json", by_alias=True, exclude_none=True),
                "seeds": plan.seeds,
                "originals": {seed: plan.original_key(seed) for seed in plan.seeds},
            },
            sort_keys=False,
            allow_unicode=True,
        ),
    )
    write_grid_file(plan, target, settings.to_dict())
    report = BenchReport(out=target, cells=list(plan.cells), executor=settings)
    ordered = execution_order(plan.cells)
    report.skipped = [cell for cell in ordered if cell in finished]
    todo = [cell for cell in ordered if cell not in finished]
    started = time.perf_counter()
    logger.info("bench %s: %d cells to run, %s", plan.name, len(todo), settings.describe())
    with grid_progress(
        len(plan.cells), len(report.skipped), desc=f"bench {plan.name}", quiet=quiet
    ) as progress:
        outcomes = EXECUTORS[settings.name](plan, target, todo, settings, progress, quiet)
    report.seconds = time.perf_counter() - started
    ended = {outcome.cell: outcome for outcome in outcomes}
    for cell in todo:  # execution order, whatever order the executor finished them in
        failure = ended[cell].error
        if failure is None:
            report.ran.append(cell)
        else:
            report.failed[cell] = failure

    documents = [
        json.loads((cell.directory(target) / RESULTS_FILE).read_text(encoding="utf-8"))
        for cell in plan.cells
        if cell not in report.failed
    ]
    rows = aggregate(documents)
    report.tables = write_tables(rows, target, title=plan.title())
    report.markdown = format_markdown(rows, title=plan.title())
    report.driver_peak_rss_mib = _peak_rss_mib()
    atomic_write_json(
        target / RUN_FILE,
        {
            "preset": plan.name,
            "seeds": plan.seeds,
            "executor": settings.to_dict(),
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "host": platform.node(),
            "wall_seconds": round(report.seconds, 3),
            "driver_peak_rss_mib": round(report.driver_peak_rss_mib, 1),
            "cells": len(plan.cells),
            "ran": len(report.ran),
            "skipped": len(report.skipped),
            "failed": len(report.failed),
        },
    )
    logger.info(
        "bench %s: %s in %.1f s (%s); driver peak RSS %.0f MiB; tables in %s",
        plan.name,
        report.summary(),
        report.seconds,
        settings.describe(),
        report.driver_peak_rss_mib,
        target,
    )
    if report.failed:
        raise BenchFailedError(report)
    return report


__all__ = [
    "DEFAULT_OUT",
    "RUN_FILE",
    "BenchFailedError",
    "BenchPlan",
    "BenchReport",
    "Cell",
    "CellMismatchError",
    "original_is_cached",
    "plan_bench",
    "prepare_original",
    "read_finished_cell",
    "run_bench",
]
