"""One bench cell, run where an executor puts it: load (or train) its seed's original, unlearn,
audit, and write the cell's directory, ``results.json`` last.

:class:`CellRunner` runs cells in one process, keeping one seed's original and data loaded
between its cells (the local executor runs the whole grid through one runner; a Ray task makes
its own for its one cell). :func:`run_recorded` wraps a cell the way the grid needs it whatever
the executor: ``running.json`` in the cell's directory while it runs (what ``conun bench
--status`` reads), and a failure caught and recorded in ``error.txt`` instead of raised.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from conun.bench.fingerprints import cell_inputs
from conun.bench.plan import BenchPlan, Cell, needs_reference, read_finished_cell
from conun.config import TrainConfig, config_to_yaml
from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRetainSplit
from conun.engine.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    CheckpointMeta,
    read_checkpoint_meta,
    save_checkpoint,
)
from conun.evaluation.results import Results, RunRecord
from conun.io import RESULTS_FILE, atomic_write_json, atomic_write_text
from conun.models.base import Classifier
from conun.workflows.evaluation import audit_against
from conun.workflows.inputs import load_checkpoint_for, load_training_data, validation_of
from conun.workflows.outputs import CONFIG_FILE, ERROR_FILE, ORIGINALS_DIR
from conun.workflows.training import train_original
from conun.workflows.unlearning import run_method

logger = logging.getLogger(__name__)

RUNNING_FILE = "running.json"
"""In a cell's directory while the cell runs: where (host, process) and since when."""


def original_is_cached(config: TrainConfig, directory: Path) -> bool:
    """Whether ``directory`` holds a complete original trained on exactly ``config``
    (``train_original`` writes results.json last, so its presence marks completion)."""
    if not (directory / RESULTS_FILE).is_file() or not (directory / CHECKPOINT_FILE).is_file():
        return False
    try:
        meta = read_checkpoint_meta(directory)
    except CheckpointError:
        return False
    return meta.train_config == config.model_dump(mode="json")


def prepare_original(
    config: TrainConfig, directory: Path, *, quiet: bool
) -> tuple[Classifier, CheckpointMeta, DatasetBundle]:
    """The original for ``config``: trained into ``directory`` unless a complete one is there.

    The model is always loaded back from the checkpoint, so that a resumed grid starts its cells
    from bit-identical weights to an uninterrupted one.
    """
    data: DatasetBundle | None = None
    if original_is_cached(config, directory):
        logger.info("original %s: cached", directory.name)
    else:
        data = train_original(config, directory, quiet=quiet, force=True).data
    if data is None:
        data = load_training_data(config)
    model, meta = load_checkpoint_for(directory, data)
    return model, meta, data


def _record_from_dict(run: dict[str, Any]) -> RunRecord:
    """A results.json run back as a :class:`RunRecord` (the audit's reference reads metrics)."""
    return RunRecord(
        scenario=run["scenario"],
        method=run["method"],
        seconds=float(run["seconds"]),
        metrics=dict(run["metrics"]),
        forget=run.get("forget"),
        forget_batches=run.get("forget_batches"),
        passes=run.get("passes"),
        history=list(run.get("history", [])),
    )


@dataclass
class _SeedState:
    """One seed's original and data, loaded on the first cell of the seed that has to run."""

    seed: int
    model: Classifier
    meta: CheckpointMeta
    data: DatasetBundle
    splits: dict[str, ForgetRetainSplit] = field(default_factory=dict)
    references: dict[str, tuple[Classifier, RunRecord]] = field(default_factory=dict)


class CellRunner:
    """Runs cells one at a time, holding one seed's state (originals are not all in memory).

    Args:
        plan: the grid.
        out: the bench directory.
        quiet: no progress bars.
        executor: recorded in each cell's results.json (``bench.executor``), with the torch
            threads the cell ran with (``bench.torch_threads``).
    """

    def __init__(self, plan: BenchPlan, out: Path, *, quiet: bool, executor: str = "local") -> None:
        self.plan = plan
        self.out = out
        self.quiet = quiet
        self.executor = executor
        self._state: _SeedState | None = None
        self._seed_error: tuple[int, str] | None = None

    def state(self, seed: int) -> _SeedState:
        """The seed's original and data, loaded (or trained) on first use."""
        if self._state is not None and self._state.seed == seed:
            return self._state
        if self._seed_error is not None and self._seed_error[0] == seed:
            # Do not train a failing original again for every cell of the seed.
            raise RuntimeError(f"the original of seed {seed} failed: {self._seed_error[1]}")
        self._state = None  # free the previous seed's models first
        directory = self.out / ORIGINALS_DIR / self.plan.original_key(seed)
        try:
            model, meta, data = prepare_original(
                self.plan.train_configs[seed], directory, quiet=self.quiet
            )
        except Exception as error:
            self._seed_error = (seed, f"{type(error).__name__}: {error}")
            raise
        self._state = _SeedState(seed, model, meta, data)
        return self._state

    def split(self, state: _SeedState, request: str) -> ForgetRetainSplit:
        """The request's split for the state's seed, resolved once."""
        if request not in state.splits:
            spec = self.plan.requests[request].forget_spec()
            state.splits[request] = spec.resolve(state.data, validation_of(state.meta), state.seed)
        return state.splits[request]

    def reference(self, state: _SeedState, cell: Cell) -> tuple[Classifier, RunRecord] | None:
        """The retrained model and its audited record, for the audit's distances."""
        if not needs_reference(self.plan, cell):
            return None
        if cell.request in state.references:
            return state.references[cell.request]
        retrain = dataclasses.replace(cell, method="retrain")
        finished = read_finished_cell(self.plan, self.out, retrain)
        if finished is None:
            raise RuntimeError(
                f"cell {retrain} is not finished; the audited cells of its request need it as "
                "their reference (see its error above)"
            )
        model, _ = load_checkpoint_for(retrain.directory(self.out), state.data)
        # Where a fresh retrain would be, so that resumed and uninterrupted audits agree.
        model.to(torch.device(self.plan.unlearn_configs[cell].device))
        state.references[cell.request] = (model, _record_from_dict(finished["runs"][0]))
        return state.references[cell.request]

    def run(self, cell: Cell) -> None:
        """Run one cell and write its directory (results.json last)."""
        state = self.state(cell.seed)
        split = self.split(state, cell.request)
        config = self.plan.unlearn_configs[cell]
        reference = self.reference(state, cell)
        model, record = run_method(
            config,
            state.model,
            state.data,
            split,
            train_config=self.plan.train_configs[cell.seed],
            original_seconds=state.meta.seconds,
            quiet=self.quiet,
        )
        if self.plan.preset.audit:
            audit_against(
                model,
                record,
                state.data,
                split,
                seed=config.seed,
                batch_size=config.eval_batch_size,
                channels_last=config.channels_last,
                reference=reference,
            )
        directory = cell.directory(self.out)
        keep = cell.method in self.plan.preset.keep_weights
        if keep or (cell.method == "retrain" and self.plan.preset.audit):
            # retrain's: audited cells of a later invocation measure distances to it; the
            # others': the report's Figure 1 (representations before and after).
            save_checkpoint(
                directory,
                model,
                dataclasses.replace(
                    state.meta,
                    method=cell.method,
                    seconds=record.seconds,
                    split=split.to_dict(),
                    metrics=record.metrics,
                    versions=None,
                ),
            )
        if cell.method == "retrain":
            state.references[cell.request] = (model, record)
        atomic_write_text(directory / CONFIG_FILE, config_to_yaml(config))
        results = Results(
            state.meta.dataset,
            state.meta.model,
            cell.seed,
            config.device,
            [record],
            extra={
                "bench": {
                    "preset": self.plan.name,
                    "request": cell.request,
                    "original": self.plan.original_key(cell.seed),
                    "fingerprint": self.plan.fingerprint(cell),
                    **cell_inputs(
                        self.out / ORIGINALS_DIR / self.plan.original_key(cell.seed), split
                    ),
                    # Outside the fingerprint: how the cell ran changes no setting, but the
                    # thread count can change the last bits of convolutions.
                    "executor": self.executor,
                    "torch_threads": torch.get_num_threads(),
                }
            },
        )
        results.write(directory)
        (directory / ERROR_FILE).unlink(missing_ok=True)


@dataclass(frozen=True)
class CellOutcome:
    """How one cell ended (small: what a Ray task sends back to the driver).

    Attributes:
        cell: the cell.
        error: ``"<ExceptionType>: <message>"``, or None when it finished.
        seconds: wall-clock of the cell, loading included.
    """

    cell: Cell
    error: str | None
    seconds: float


@dataclass(frozen=True)
class OriginalOutcome:
    """How the training (or cache check) of a seed's original ended.

    Attributes:
        seed: the seed.
        error: ``"<ExceptionType>: <message>"``, or None when the original is there.
        seconds: wall-clock.
    """

    seed: int
    error: str | None
    seconds: float


def _running_marker(executor: str) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "executor": executor,
    }


def record_failure(out: Path, cell: Cell, text: str) -> None:
    """Write ``text`` (a traceback) to the cell's ``error.txt`` and drop its running marker."""
    directory = cell.directory(out)
    atomic_write_text(directory / ERROR_FILE, text)
    (directory / RUNNING_FILE).unlink(missing_ok=True)


def run_recorded(
    runner: CellRunner, cell: Cell, *, original_error: str | None = None
) -> CellOutcome:
    """Run ``cell`` through ``runner``; a failure is recorded, not raised.

    While the cell runs, its directory holds ``running.json`` (host, process id, start time).
    A failure's traceback goes to the log and to ``error.txt``: one broken cell must not cost
    the rest of a long grid, and the next invocation retries it.

    Args:
        runner: the runner (its plan and output directory).
        cell: the cell.
        original_error: the failure of the seed's original, when it was trained elsewhere (a Ray
            task): the cell then fails with it, as a local cell would.

    Returns:
        The outcome: ``error`` None when the cell's results.json is written.
    """
    started = time.perf_counter()
    directory = cell.directory(runner.out)
    atomic_write_json(directory / RUNNING_FILE, _running_marker(runner.executor))
    try:
        if original_error is not None:
            raise RuntimeError(f"the original of seed {cell.seed} failed: {original_error}")
        runner.run(cell)
    except Exception as error:
        logger.exception("bench cell %s failed", cell)
        record_failure(runner.out, cell, traceback.format_exc())
        return CellOutcome(cell, f"{type(error).__name__}: {error}", time.perf_counter() - started)
    finally:
        (directory / RUNNING_FILE).unlink(missing_ok=True)
    return CellOutcome(cell, None, time.perf_counter() - started)


def ensure_original(plan: BenchPlan, out: Path, seed: int, *, quiet: bool) -> OriginalOutcome:
    """Train ``seed``'s original into ``out/originals/`` unless a complete one is there; a
    failure is logged and returned, not raised (its cells fail with it)."""
    started = time.perf_counter()
    config = plan.train_configs[seed]
    directory = out / ORIGINALS_DIR / plan.original_key(seed)
    try:
        if original_is_cached(config, directory):
            logger.info("original %s: cached", directory.name)
        else:
            train_original(config, directory, quiet=quiet, force=True)
    except Exception as error:
        logger.exception("the original of seed %d failed", seed)
        message = f"{type(error).__name__}: {error}"
        return OriginalOutcome(seed, message, time.perf_counter() - started)
    return OriginalOutcome(seed, None, time.perf_counter() - started)


__all__ = [
    "RUNNING_FILE",
    "CellOutcome",
    "CellRunner",
    "OriginalOutcome",
    "ensure_original",
    "original_is_cached",
    "prepare_original",
    "record_failure",
    "run_recorded",
]
