"""Where the cells of a bench grid run: ``local`` (one at a time, in this process) or ``ray``
(tasks on a Ray cluster, or on a local Ray instance over this machine's CPUs and GPUs).

Both run the same code on each cell (:func:`conun.bench.cells.run_recorded`) and write the same
files into the same directory, so resuming, the tables and ``conun report`` do not depend on the
executor. Under Ray:

- each seed's original is a task; each cell is a task that depends on its seed's original (its
  outcome is an argument) and, when its audit measures distances to retrain, on its request's
  retrain cell; a task is handed to Ray once what it depends on has ended, originals first, then
  retrains, then the rest in grid order, at most ``workers`` at a time;
- each task asks Ray for ``cpus_per_cell`` CPUs and ``gpus_per_cell`` GPUs and runs with
  ``threads`` torch threads (default: one per whole CPU it asked for);
- tasks load their seed's original and data from the bench directory and return only a small
  outcome: the driver never holds a model. The directory must therefore be one that every
  worker sees at the same absolute path (a shared file system on a cluster);
- a failed cell is recorded in its ``error.txt`` (by the task, or by the driver when the worker
  itself died) and the other cells go on, as with ``local``. Ray does not retry a task: the
  next invocation does, like any failed cell.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from conun.bench.cells import (
    CellOutcome,
    CellRunner,
    OriginalOutcome,
    ensure_original,
    record_failure,
    run_recorded,
)
from conun.bench.plan import BenchPlan, Cell, needs_reference
from conun.bench.status import counts_line
from conun.workflows.ray_runtime import import_ray, ray_session, set_task_threads, threads_for

logger = logging.getLogger(__name__)


class ExecutorError(ValueError):
    """Executor options that cannot work (found before any work); the message says why."""


@dataclass(frozen=True)
class ExecutorSettings:
    """How a grid's cells are run.

    Attributes:
        name: ``local`` or ``ray``.
        workers: ray: the most cells (and originals) handed to Ray at once; None: as many as
            are ready (the cluster's resources then bound how many run).
        cpus_per_cell: ray: the CPUs each task asks for.
        gpus_per_cell: ray: the GPUs each task asks for (fractions share a GPU).
        threads: torch threads per cell; None: torch's default (local), one per whole CPU of
            the task (ray).
    """

    name: str
    workers: int | None = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0
    threads: int | None = None

    @property
    def task_threads(self) -> int:
        """The torch threads a Ray task runs with."""
        return self.threads if self.threads is not None else threads_for(self.cpus_per_cell)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the thread count that the cells run with (grid.json, run.json)."""
        if self.name == "local":
            threads = self.threads if self.threads is not None else torch.get_num_threads()
            return {"name": "local", "torch_threads": threads}
        return {
            "name": self.name,
            "workers": self.workers,
            "cpus_per_cell": self.cpus_per_cell,
            "gpus_per_cell": self.gpus_per_cell,
            "torch_threads": self.task_threads,
        }

    def describe(self) -> str:
        """One line, e.g. ``ray: 2 workers, 1 CPU + 0 GPU per cell, 1 torch thread per cell``."""
        settings = self.to_dict()
        threads = f"{settings['torch_threads']} torch thread(s) per cell"
        if self.name == "local":
            return f"local: one cell at a time in this process, {threads}"
        workers = "as many workers as ready" if self.workers is None else f"{self.workers} workers"
        return (
            f"ray: {workers}, {self.cpus_per_cell:g} CPU + {self.gpus_per_cell:g} GPU per cell, "
            f"{threads}"
        )


def executor_settings(
    name: str = "local",
    *,
    workers: int | None = None,
    cpus_per_cell: float | None = None,
    gpus_per_cell: float | None = None,
    threads: int | None = None,
) -> ExecutorSettings:
    """Validated executor settings (see :class:`ExecutorSettings`).

    Raises:
        ExecutorError: an unknown executor, a value out of range, or a Ray option given to the
            local executor.
    """
    if name not in EXECUTORS:
        raise ExecutorError(f"unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise ExecutorError(f"--workers must be >= 1, got {workers}")
    if cpus_per_cell is not None and not (math.isfinite(cpus_per_cell) and cpus_per_cell > 0):
        raise ExecutorError(f"--cpus-per-cell must be > 0, got {cpus_per_cell}")
    if gpus_per_cell is not None and not (math.isfinite(gpus_per_cell) and gpus_per_cell >= 0):
        raise ExecutorError(f"--gpus-per-cell must be >= 0, got {gpus_per_cell}")
    if threads is not None and threads < 1:
        raise ExecutorError(f"--threads must be >= 1, got {threads}")
    if name == "local":
        given = [
            flag
            for flag, value in (
                ("--workers", workers),
                ("--cpus-per-cell", cpus_per_cell),
                ("--gpus-per-cell", gpus_per_cell),
            )
            if value is not None
        ]
        if given:
            raise ExecutorError(
                f"{', '.join(given)}: for --executor ray only (local runs one cell at a time "
                "in this process; --threads sets its torch threads)"
            )
        return ExecutorSettings("local", threads=threads)
    return ExecutorSettings(
        name,
        workers=workers,
        cpus_per_cell=1.0 if cpus_per_cell is None else float(cpus_per_cell),
        gpus_per_cell=0.0 if gpus_per_cell is None else float(gpus_per_cell),
        threads=threads,
    )


def check_executor(settings: ExecutorSettings, plan: BenchPlan) -> None:
    """Before any work: Ray is installed, and the GPUs asked for fit the preset's device.

    Under Ray each task sees only the GPUs it was given (as ``cuda:0``...), so a CUDA grid needs
    ``gpus_per_cell`` > 0 and device ``cuda``, and GPUs asked for by a CPU grid would sit idle.

    Raises:
        RayNotInstalledError: ray is not installed.
        ExecutorError: the device and the GPUs per cell do not fit.
    """
    if settings.name != "ray":
        return
    import_ray()
    device = plan.preset.device
    if device.startswith("cuda") and settings.gpus_per_cell == 0:
        raise ExecutorError(
            f"bench preset {plan.name} runs on {device}: give --gpus-per-cell (e.g. 1), so "
            "that Ray gives each cell a GPU"
        )
    if device.startswith("cuda:"):
        raise ExecutorError(
            f"bench preset {plan.name} runs on {device}: under Ray use device cuda (each task "
            "sees the GPUs Ray gave it, from cuda:0)"
        )
    if settings.gpus_per_cell > 0 and not device.startswith("cuda"):
        raise ExecutorError(
            f"--gpus-per-cell {settings.gpus_per_cell:g}, but bench preset {plan.name} runs on "
            f"{device}: set `device: cuda` (or auto) in the preset, or leave out --gpus-per-cell"
        )


class GridProgress:
    """One bar over the grid's cells: finished (already, or by this run) / running / failed.

    Args:
        total: the grid's cells.
        finished: cells already finished before this run.
        desc: the bar's label.
        quiet: no bar (the counts are still kept).
    """

    def __init__(self, total: int, finished: int, *, desc: str, quiet: bool) -> None:
        self.total = total
        self.finished = finished
        self.failed = 0
        self.running: set[Cell] = set()
        self._bar = tqdm(total=total, initial=finished, desc=desc, unit="cell", disable=quiet)
        self._show()

    def _show(self) -> None:
        self._bar.set_postfix_str(
            counts_line(self.total, self.finished, len(self.running), self.failed)
        )

    def start(self, cell: Cell) -> None:
        """``cell`` is handed to its executor."""
        self.running.add(cell)
        self._show()

    def end(self, outcome: CellOutcome) -> None:
        """``outcome``'s cell ended (finished or failed)."""
        self.running.discard(outcome.cell)
        if outcome.error is None:
            self.finished += 1
        else:
            self.failed += 1
        self._bar.update()
        self._show()

    def close(self) -> None:
        """Close the bar."""
        self._bar.close()


@contextmanager
def grid_progress(total: int, finished: int, *, desc: str, quiet: bool) -> Iterator[GridProgress]:
    """A :class:`GridProgress`, with log lines printed above the bar while it is shown."""
    with logging_redirect_tqdm():
        progress = GridProgress(total, finished, desc=desc, quiet=quiet)
        try:
            yield progress
        finally:
            progress.close()


Executor = Callable[
    [BenchPlan, Path, Sequence[Cell], ExecutorSettings, GridProgress, bool], list[CellOutcome]
]
"""Runs ``cells`` (execution order) of ``plan`` into ``out``; returns every cell's outcome."""


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """``threads`` torch threads in this process for the block (None: unchanged)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_local(
    plan: BenchPlan,
    out: Path,
    cells: Sequence[Cell],
    settings: ExecutorSettings,
    progress: GridProgress,
    quiet: bool,
) -> list[CellOutcome]:
    """Run ``cells`` one at a time in this process, keeping one seed's original loaded."""
    runner = CellRunner(plan, out, quiet=quiet, executor="local")
    outcomes: list[CellOutcome] = []
    with _torch_threads(settings.threads):
        for cell in cells:
            progress.start(cell)
            outcome = run_recorded(runner, cell)
            outcomes.append(outcome)
            progress.end(outcome)
    return outcomes


# -- Ray ------------------------------------------------------------------------------------------


def _original_task(plan: BenchPlan, out: str, seed: int, threads: int) -> OriginalOutcome:
    """A Ray task: the seed's original, trained into the shared directory unless cached."""
    set_task_threads(threads)
    return ensure_original(plan, Path(out), seed, quiet=True)


def _cell_task(
    plan: BenchPlan,
    out: str,
    cell: Cell,
    original: OriginalOutcome,
    retrain: CellOutcome | None,
    threads: int,
) -> CellOutcome:
    """A Ray task: one cell. ``original`` and ``retrain`` are the outcomes it depends on (Ray
    passes them once their tasks ended); a failed retrain shows up when the audit looks for its
    checkpoint, with the same message as under the local executor."""
    del retrain  # a dependency only: the cell reads retrain's result from its directory
    set_task_threads(threads)
    runner = CellRunner(plan, Path(out), quiet=True, executor="ray")
    return run_recorded(runner, cell, original_error=original.error)


_CANCEL_WAIT_SECONDS = 60.0
"""How long an interrupted driver waits for its cancelled tasks to end (each gets a
KeyboardInterrupt; a task in a long native call sees it when the call returns)."""


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


@dataclass
class _RayGrid:
    """The driver's side of a Ray grid: what is waiting, in flight and done."""

    plan: BenchPlan
    out: Path
    settings: ExecutorSettings
    progress: GridProgress
    waiting: list[Cell]
    retrains: dict[tuple[int, str], Cell]  # (seed, request) -> its retrain cell, if it runs
    originals: dict[int, OriginalOutcome] = field(default_factory=dict)
    original_refs: dict[int, Any] = field(default_factory=dict)
    cell_refs: dict[Cell, Any] = field(default_factory=dict)
    ended: dict[Cell, CellOutcome] = field(default_factory=dict)
    in_flight: dict[Any, int | Cell] = field(default_factory=dict)

    def retrain_of(self, cell: Cell) -> Cell | None:
        """The retrain cell ``cell`` waits for, when that one runs in this invocation."""
        if not needs_reference(self.plan, cell):
            return None
        return self.retrains.get((cell.seed, cell.request))

    def ready(self, cell: Cell) -> bool:
        """Whether everything ``cell`` depends on has ended."""
        if cell.seed not in self.originals:
            return False
        retrain = self.retrain_of(cell)
        return retrain is None or retrain in self.ended

    def has_room(self) -> bool:
        """Whether another task may be handed to Ray (``workers``)."""
        workers = self.settings.workers
        return workers is None or len(self.in_flight) < workers


def run_ray(
    plan: BenchPlan,
    out: Path,
    cells: Sequence[Cell],
    settings: ExecutorSettings,
    progress: GridProgress,
    quiet: bool,
) -> list[CellOutcome]:
    """Run ``cells`` as Ray tasks (module docstring); returns when every one has ended."""
    # Retrains first among the ready cells: the audited cells of their request wait for them.
    order = sorted(cells, key=lambda cell: (cell.seed, cell.method != "retrain"))
    with ray_session(quiet=quiet) as ray:
        options: dict[str, Any] = {
            "num_cpus": settings.cpus_per_cell,
            "num_gpus": settings.gpus_per_cell,
            "max_retries": 0,
        }
        original_task = ray.remote(_original_task)
        cell_task = ray.remote(_cell_task)
        shared_out = str(out.resolve())  # workers may start in another directory
        plan_ref = ray.put(plan)
        threads = settings.task_threads
        grid = _RayGrid(
            plan,
            out,
            settings,
            progress,
            waiting=list(order),
            retrains={
                (cell.seed, cell.request): cell for cell in order if cell.method == "retrain"
            },
        )
        pending_seeds = list(dict.fromkeys(cell.seed for cell in order))
        try:
            while grid.waiting or grid.in_flight or pending_seeds:
                while pending_seeds and grid.has_room():
                    seed = pending_seeds.pop(0)
                    ref = original_task.options(name=f"original seed {seed}", **options).remote(
                        plan_ref, shared_out, seed, threads
                    )
                    grid.original_refs[seed] = ref
                    grid.in_flight[ref] = seed
                for cell in list(grid.waiting):
                    if not grid.has_room():
                        break
                    if not grid.ready(cell):
                        continue
                    retrain = grid.retrain_of(cell)
                    ref = cell_task.options(name=str(cell), **options).remote(
                        plan_ref,
                        shared_out,
                        cell,
                        grid.original_refs[cell.seed],
                        None if retrain is None else grid.cell_refs[retrain],
                        threads,
                    )
                    grid.waiting.remove(cell)
                    grid.cell_refs[cell] = ref
                    grid.in_flight[ref] = cell
                    progress.start(cell)
                if not grid.in_flight:
                    raise RuntimeError(f"bench grid stuck with {len(grid.waiting)} cells waiting")
                done, _ = ray.wait(list(grid.in_flight), num_returns=1)
                for ref in done:
                    _collect(ray, grid, ref)
        except BaseException:
            # Interrupted (Ctrl-C, an error here): stop the tasks still running rather than
            # leave them writing into the directory behind a later invocation. A killed driver
            # needs no such care: Ray ends the tasks of a job whose driver is gone.
            running = list(grid.in_flight)
            for ref in running:
                ray.cancel(ref)
            if running:  # the cancelled tasks end before the caller sees the interruption
                ray.wait(running, num_returns=len(running), timeout=_CANCEL_WAIT_SECONDS)
            raise
    return list(grid.ended.values())


def _collect(ray: Any, grid: _RayGrid, ref: Any) -> None:
    """Record the outcome of a finished task; a task that died (worker crash, out of memory)
    is a failure like any other, recorded by the driver."""
    job = grid.in_flight.pop(ref)
    try:
        outcome = ray.get(ref)
    except Exception as error:
        label = f"the original of seed {job}" if isinstance(job, int) else f"cell {job}"
        logger.error("bench: the Ray task of %s died: %s", label, error)
        if isinstance(job, int):
            outcome = OriginalOutcome(job, _first_line(error), 0.0)
        else:
            record_failure(grid.out, job, f"the Ray task of this cell died:\n{error}\n")
            outcome = CellOutcome(job, _first_line(error), 0.0)
    if isinstance(outcome, OriginalOutcome):
        grid.originals[outcome.seed] = outcome
        return
    grid.ended[outcome.cell] = outcome
    grid.progress.end(outcome)


EXECUTORS: dict[str, Executor] = {"local": run_local, "ray": run_ray}
"""Executor name -> the function running a grid's cells."""


__all__ = [
    "EXECUTORS",
    "ExecutorError",
    "ExecutorSettings",
    "GridProgress",
    "check_executor",
    "executor_settings",
    "grid_progress",
    "run_local",
    "run_ray",
]
