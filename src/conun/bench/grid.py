"""``conun bench``: run a preset's grid of seeds x forget requests x methods, resumably.

Output directory layout::

    OUT/bench.yaml                               the preset and seeds of the last invocation
    OUT/originals/<dataset>-<model>-seed<S>-<hash>/   one trained original per (seed, recipe)
    OUT/cells/<seed>/<request>/<method>/         one cell: results.json (+ results.md,
                                                 config.yaml; retrain also its checkpoint)
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

A failing cell does not stop the grid: its traceback goes to the log and to ``error.txt`` in its
directory, the other cells run, the table is written from the finished ones, and
:class:`BenchFailedError` names the failed cells at the end (rerunning retries only those).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import torch
import yaml
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from conun.bench.preset import (
    BenchPreset,
    BenchPresetError,
    RequestSpec,
    check_seeds,
    load_bench_preset,
)
from conun.bench.tables import aggregate, format_markdown, write_tables
from conun.config import (
    ConfigError,
    TrainConfig,
    UnlearnConfig,
    build_train_config,
    config_to_yaml,
)
from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRequestError, ForgetRetainSplit, Scenario
from conun.engine.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    CheckpointMeta,
    read_checkpoint_meta,
    save_checkpoint,
)
from conun.evaluation.results import Results, RunRecord, validate_results
from conun.io import (
    RESULTS_FILE,
    atomic_write_text,
    check_output_path,
    remove_stale_temporaries,
)
from conun.methods import METHODS, get_method
from conun.models.base import Classifier
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.evaluation import audit_against
from conun.workflows.inputs import (
    check_requests,
    ensure_dataset,
    load_checkpoint_for,
    load_training_data,
    validation_of,
)
from conun.workflows.outputs import (
    BENCH_FILE,
    CELLS_DIR,
    CONFIG_FILE,
    ERROR_FILE,
    ORIGINALS_DIR,
    OutputExistsError,
)
from conun.workflows.training import train_original
from conun.workflows.unlearning import REFERENCE_METHODS, resolve_method, run_method

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("runs") / "bench"
"""Where ``run_bench`` writes without ``out``: ``runs/bench/<preset name>``."""


class CellMismatchError(OutputExistsError):
    """The output directory holds finished cells of a different configuration."""


@dataclass(frozen=True)
class Cell:
    """One (seed, request, method) of the grid.

    Attributes:
        seed: the seed of the original, of random requests and of the method's draws.
        request: the request's name (its directory).
        method: the method's registry name.
        scenario: ``class`` or ``sample``.
    """

    seed: int
    request: str
    method: str
    scenario: Scenario

    def directory(self, out: str | Path) -> Path:
        """``out/cells/<seed>/<request>/<method>``."""
        return Path(out) / CELLS_DIR / str(self.seed) / self.request / self.method

    def __str__(self) -> str:
        return f"seed {self.seed} / {self.request} / {self.method}"


@dataclass
class BenchPlan:
    """A validated grid: every config resolved, every cell listed in run order.

    Attributes:
        preset: the preset it came from.
        seeds: the seeds (the preset's, or those given on the command line).
        train_configs: the original's recipe per seed.
        requests: request name -> request, in preset order.
        methods: request name -> its methods in run order (original, retrain, then the rest).
        unlearn_configs: the resolved unlearning config of every cell.
        cells: seed-major, then request, then method.
    """

    preset: BenchPreset
    seeds: list[int]
    train_configs: dict[int, TrainConfig]
    requests: dict[str, RequestSpec]
    methods: dict[str, list[str]]
    unlearn_configs: dict[Cell, UnlearnConfig]
    cells: list[Cell]

    @property
    def name(self) -> str:
        """The preset's name."""
        return self.preset.name

    def original_key(self, seed: int) -> str:
        """The directory name of ``seed``'s original: readable prefix, hash of the recipe."""
        config = self.train_configs[seed]
        return (
            f"{config.dataset}-{config.model}-seed{seed}-{_digest(config.model_dump(mode='json'))}"
        )

    def fingerprint(self, cell: Cell) -> str:
        """A hash of everything that determines a cell's numbers."""
        request = self.requests[cell.request]
        return _digest(
            {
                "train": self.train_configs[cell.seed].model_dump(mode="json"),
                "unlearn": self.unlearn_configs[cell].model_dump(mode="json"),
                "request": request.model_dump(
                    mode="json", by_alias=True, exclude={"name", "methods"}
                ),
                "method": cell.method,
            }
        )

    def title(self) -> str:
        """The tables' title."""
        config = self.train_configs[self.seeds[0]]
        seeds = ", ".join(str(seed) for seed in self.seeds)
        text = f"conun bench {self.name}: {config.dataset}, {config.model}, seeds {seeds}"
        return f"{text} — {self.preset.description}" if self.preset.description else text


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _train_config(preset: BenchPreset, seed: int) -> TrainConfig:
    grid: dict[str, Any] = {"seed": seed, "device": preset.device}
    if preset.model is not None:
        grid["model"] = preset.model
    return build_train_config(preset.dataset, [preset.train, grid], preset=preset.train_preset)


def _request_methods(preset: BenchPreset, request: RequestSpec) -> list[str]:
    """The request's methods in run order; explicit per-request lists must fit its scenario."""
    chosen = request.methods if request.methods is not None else preset.methods
    scenario = request.scenario
    if chosen == "all":
        names = [name for name in sorted(METHODS) if scenario in METHODS[name].scenarios]
    elif request.methods is not None:
        unfit = [name for name in chosen if scenario not in get_method(name).scenarios]
        if unfit:
            fitting = [name for name in sorted(METHODS) if scenario in METHODS[name].scenarios]
            raise BenchPresetError(
                f"bench preset {preset.name}: request {request.label} is a {scenario} request, "
                f"but {_supports(unfit)}; methods for the {scenario} scenario: "
                f"{', '.join(fitting)} (or `all`)"
            )
        names = list(chosen)
    else:
        # The grid-wide list applies to every request; a method meant only for the other
        # scenario has no cell here (a method fitting no request at all is an error, below).
        names = [name for name in chosen if scenario in get_method(name).scenarios]
    first = [name for name in REFERENCE_METHODS if name in names]
    return first + [name for name in names if name not in REFERENCE_METHODS]


def _execution_order(cells: Sequence[Cell]) -> list[Cell]:
    """``cells`` with each (seed, request)'s retrain moved to the front of its group: the audit
    of every other cell, original included, measures distances to it. Tables keep the plan's
    order (original, retrain, methods)."""
    groups: dict[tuple[int, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.seed, cell.request), []).append(cell)
    return [
        cell
        for group in groups.values()
        for cell in sorted(group, key=lambda cell: cell.method != "retrain")  # stable
    ]


def _supports(names: Sequence[str]) -> str:
    """``"lcodec supports only sample"``, for error messages."""
    return ", ".join(
        f"{name} supports only {' and '.join(get_method(name).scenarios)}" for name in names
    )


def plan_bench(preset: BenchPreset, seeds: Sequence[int] | None = None) -> BenchPlan:
    """Resolve and validate every config of the grid, before any work.

    Args:
        preset: the validated preset.
        seeds: replace the preset's seeds (e.g. from ``--seeds``).

    Raises:
        BenchPresetError: an invalid training recipe, a method that does not fit a request's
            scenario, or an unlearning preset/options that do not validate for a cell; the
            message names the preset, the cell and what is allowed.
    """
    try:
        chosen_seeds = check_seeds(list(seeds)) if seeds is not None else list(preset.seeds)
    except ValueError as error:
        raise BenchPresetError(f"seeds: {error}") from None
    try:
        train_configs = {seed: _train_config(preset, seed) for seed in chosen_seeds}
    except ConfigError as error:
        raise BenchPresetError(f"bench preset {preset.name}, train section: {error}") from None

    requests = {request.label: request for request in preset.requests}
    methods = {label: _request_methods(preset, request) for label, request in requests.items()}
    if preset.methods != "all":
        shared = [label for label, request in requests.items() if request.methods is None]
        scenarios = {requests[label].scenario for label in shared}
        idle = [
            name
            for name in preset.methods
            if shared and not scenarios & set(get_method(name).scenarios)
        ]
        if idle:
            raise BenchPresetError(
                f"bench preset {preset.name}: the requests are {' and '.join(sorted(scenarios))} "
                f"requests, but {_supports(idle)}: remove them, or give them a request of "
                "their own scenario"
            )
    if preset.audit and any("retrain" not in names for names in methods.values()):
        logger.warning(
            "audit without retrain in a request: its cells get the membership attacks but no "
            "distances to retrain"
        )

    unlearn_configs: dict[Cell, UnlearnConfig] = {}
    cells: list[Cell] = []
    for seed in chosen_seeds:
        for label, request in requests.items():
            for name in methods[label]:
                cell = Cell(seed, label, name, request.scenario)
                try:
                    config = resolve_unlearn_config(
                        name,
                        request.scenario,
                        dataset=preset.dataset,
                        layers=[
                            (f"bench preset {preset.name}: unlearn", preset.unlearn),
                            ("bench seed and device", {"seed": seed, "device": preset.device}),
                        ],
                    ).config
                    resolve_method(config, request.scenario)
                except ConfigError as error:
                    raise BenchPresetError(
                        f"bench preset {preset.name}, cell {cell}: {error}"
                    ) from None
                unlearn_configs[cell] = config
                cells.append(cell)
    return BenchPlan(
        preset=preset,
        seeds=chosen_seeds,
        train_configs=train_configs,
        requests=requests,
        methods=methods,
        unlearn_configs=unlearn_configs,
        cells=cells,
    )


def read_finished_cell(
    plan: BenchPlan, out: str | Path, cell: Cell, *, with_weights: bool = True
) -> dict[str, Any] | None:
    """The cell's results.json if the cell is finished for ``plan``, else None.

    Finished means: the file parses, validates against the results.json schema, holds this
    cell's one run and this plan's fingerprint, is audited when the plan audits, and (retrain
    under audit, ``with_weights``) its checkpoint is there for the others' distances. A missing
    or broken file is not finished (the cell is recomputed).

    Raises:
        CellMismatchError: the file is a finished result of a different configuration.
    """
    directory = cell.directory(out)
    path = directory / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        validate_results(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, jsonschema.ValidationError):
        logger.warning("%s is incomplete or invalid: cell %s is recomputed", path, cell)
        return None
    bench = data.get("bench")
    runs = data["runs"]
    if (
        not isinstance(bench, dict)
        or bench.get("fingerprint") != plan.fingerprint(cell)
        or data.get("seed") != cell.seed
        or len(runs) != 1
        or runs[0].get("method") != cell.method
    ):
        raise CellMismatchError(
            f"{path} holds a result of a different configuration (the preset, or a shipped "
            "training/unlearning preset, changed since it ran)"
        )
    if plan.preset.audit and runs[0]["metrics"].get("mia_forget_member_rate") is None:
        return None
    if (
        with_weights
        and plan.preset.audit
        and cell.method == "retrain"
        and not (directory / CHECKPOINT_FILE).is_file()
    ):
        return None
    return data


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


class _GridRun:
    """Runs cells one at a time, holding one seed's state (originals are not all in memory)."""

    def __init__(self, plan: BenchPlan, out: Path, *, quiet: bool) -> None:
        self.plan = plan
        self.out = out
        self.quiet = quiet
        self._state: _SeedState | None = None
        self._seed_error: tuple[int, str] | None = None

    def state(self, seed: int) -> _SeedState:
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
        if request not in state.splits:
            spec = self.plan.requests[request].forget_spec()
            state.splits[request] = spec.resolve(state.data, validation_of(state.meta), state.seed)
        return state.splits[request]

    def reference(self, state: _SeedState, cell: Cell) -> tuple[Classifier, RunRecord] | None:
        """The retrained model and its audited record, for the audit's distances."""
        if (
            not self.plan.preset.audit
            or cell.method == "retrain"
            or "retrain" not in self.plan.methods[cell.request]
        ):
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
                }
            },
        )
        results.write(directory)
        (directory / ERROR_FILE).unlink(missing_ok=True)


@dataclass
class BenchReport:
    """What a bench invocation did.

    Attributes:
        out: the output directory.
        cells: every cell of the grid, in run order.
        ran: the cells computed by this invocation.
        skipped: the cells already finished before it.
        failed: cell -> the error that stopped it.
        tables: ``{"markdown", "csv", "latex"}`` -> written path.
        markdown: the Markdown table, as written.
    """

    out: Path
    cells: list[Cell]
    ran: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: dict[Cell, str] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)
    markdown: str = ""

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


def run_bench(
    preset: str | Path | BenchPreset,
    *,
    out: str | Path | None = None,
    seeds: Sequence[int] | None = None,
    quiet: bool = False,
) -> BenchReport:
    """Run (or resume) a bench grid and write its tables.

    Args:
        preset: a shipped preset's name (``smoke``), a YAML file, or a validated preset.
        out: output directory; default ``runs/bench/<preset name>``.
        seeds: replace the preset's seeds.
        quiet: no progress bars.

    Returns:
        The report; the tables are in ``out/table.{md,csv,tex}``.

    Raises:
        BenchPresetError: an invalid preset (before any work).
        CellMismatchError: ``out`` holds cells of a different configuration (before any work).
        DatasetNotFoundError: the dataset's files are missing (before any work).
        BenchFailedError: some cells failed (after every other cell ran and the tables were
            written).
    """
    loaded = preset if isinstance(preset, BenchPreset) else load_bench_preset(preset)
    plan = plan_bench(loaded, seeds)
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
    if mismatched:
        shown = "\n  ".join(mismatched[:5])
        more = f"\n  ... and {len(mismatched) - 5} more" if len(mismatched) > 5 else ""
        raise CellMismatchError(
            f"{target} holds {len(mismatched)} cell(s) of a different configuration:\n  {shown}"
            f"{more}\nchoose another --out, or delete those cell directories to recompute them"
        )

    for stale in remove_stale_temporaries(target, recursive=True):
        logger.info("removed %s, left by an interrupted write", stale)
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
    report = BenchReport(out=target, cells=list(plan.cells))
    runner = _GridRun(plan, target, quiet=quiet)
    with (
        logging_redirect_tqdm(),
        tqdm(total=len(plan.cells), desc=f"bench {plan.name}", unit="cell", disable=quiet) as bar,
    ):
        for cell in _execution_order(plan.cells):
            bar.set_postfix_str(str(cell))
            if cell in finished:
                report.skipped.append(cell)
            else:
                try:
                    runner.run(cell)
                except Exception as error:
                    # One broken cell must not cost the rest of a long grid; it is reported
                    # at the end and retried by the next invocation.
                    logger.exception("bench cell %s failed", cell)
                    report.failed[cell] = f"{type(error).__name__}: {error}"
                    atomic_write_text(cell.directory(target) / ERROR_FILE, traceback.format_exc())
                else:
                    report.ran.append(cell)
            bar.update()

    documents = [
        json.loads((cell.directory(target) / RESULTS_FILE).read_text(encoding="utf-8"))
        for cell in plan.cells
        if cell not in report.failed
    ]
    rows = aggregate(documents)
    report.tables = write_tables(rows, target, title=plan.title())
    report.markdown = format_markdown(rows, title=plan.title())
    logger.info("bench %s: %s; tables in %s", plan.name, report.summary(), target)
    if report.failed:
        raise BenchFailedError(report)
    return report


__all__ = [
    "DEFAULT_OUT",
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
