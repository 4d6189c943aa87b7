"""The bench grid's plan: every cell of a preset, its resolved configs and its fingerprint, and
what counts as a finished cell on disk. Pure planning, no training: :mod:`conun.bench.grid`
runs the plan, :mod:`conun.bench.cells` runs one cell, :mod:`conun.bench.executors` decides
where (in this process, or as Ray tasks).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from conun.bench.preset import BenchPreset, BenchPresetError, RequestSpec, check_seeds
from conun.config import ConfigError, TrainConfig, UnlearnConfig, build_train_config
from conun.data.splits import Scenario
from conun.engine.checkpoint import CHECKPOINT_FILE
from conun.evaluation.results import validate_results
from conun.io import RESULTS_FILE
from conun.methods import METHODS, get_method
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.outputs import CELLS_DIR, OutputExistsError
from conun.workflows.unlearning import REFERENCE_METHODS, resolve_method

logger = logging.getLogger(__name__)


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
                # What the request forgets; its methods and per-method settings reach the
                # cell through ``method`` and the unlearning config (so that a request's own
                # setting for one method leaves its other cells, and older grids, as they are).
                "request": request.model_dump(
                    mode="json", by_alias=True, exclude={"name", "methods", "unlearn_per_method"}
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


def execution_order(cells: Sequence[Cell]) -> list[Cell]:
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
    for label, request in requests.items():
        unused = sorted(set(request.unlearn_per_method) - set(methods[label]))
        if unused:
            raise BenchPresetError(
                f"bench preset {preset.name}, request {label}: unlearn_per_method names "
                f"{', '.join(unused)}, which the request does not run (its methods: "
                f"{', '.join(methods[label])})"
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
                        model=train_configs[seed].model,
                        layers=[
                            (f"bench preset {preset.name}: unlearn", preset.unlearn),
                            (
                                f"bench preset {preset.name}: unlearn_per_method.{name}",
                                preset.unlearn_per_method.get(name, {}),
                            ),
                            (
                                f"bench preset {preset.name}: requests.{label}."
                                f"unlearn_per_method.{name}",
                                request.unlearn_per_method.get(name, {}),
                            ),
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


def needs_reference(plan: BenchPlan, cell: Cell) -> bool:
    """Whether ``cell``'s audit measures distances to its request's retrain cell (so that cell
    has to finish first)."""
    return (
        plan.preset.audit and cell.method != "retrain" and "retrain" in plan.methods[cell.request]
    )


def read_cell_document(
    directory: Path,
    *,
    fingerprint: str,
    seed: int,
    method: str,
    audit: bool,
    with_weights: bool = True,
) -> dict[str, Any] | None:
    """The cell's results.json if the cell in ``directory`` is finished, else None.

    Finished means: the file parses, validates against the results.json schema, holds this
    cell's one run and ``fingerprint``, is audited when ``audit``, and (retrain under audit,
    ``with_weights``) its checkpoint is there for the others' distances. A missing or broken
    file is not finished (the cell is recomputed). Needs no plan, so that ``conun bench
    --status`` can tell from the files alone.

    Raises:
        CellMismatchError: the file is a finished result of a different configuration.
    """
    path = directory / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        validate_results(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, jsonschema.ValidationError):
        logger.warning("%s is incomplete or invalid: its cell is recomputed", path)
        return None
    bench = data.get("bench")
    runs = data["runs"]
    if (
        not isinstance(bench, dict)
        or bench.get("fingerprint") != fingerprint
        or data.get("seed") != seed
        or len(runs) != 1
        or runs[0].get("method") != method
    ):
        raise CellMismatchError(
            f"{path} holds a result of a different configuration (the preset, or a shipped "
            "training/unlearning preset, changed since it ran)"
        )
    if audit and runs[0]["metrics"].get("mia_forget_member_rate") is None:
        return None
    if (
        with_weights
        and audit
        and method == "retrain"
        and not (directory / CHECKPOINT_FILE).is_file()
    ):
        return None
    return data


def read_finished_cell(
    plan: BenchPlan, out: str | Path, cell: Cell, *, with_weights: bool = True
) -> dict[str, Any] | None:
    """The cell's results.json if the cell is finished for ``plan``, else None
    (:func:`read_cell_document` with the plan's fingerprint and audit).

    Raises:
        CellMismatchError: the file is a finished result of a different configuration.
    """
    return read_cell_document(
        cell.directory(out),
        fingerprint=plan.fingerprint(cell),
        seed=cell.seed,
        method=cell.method,
        audit=plan.preset.audit,
        with_weights=with_weights,
    )


__all__ = [
    "BenchPlan",
    "Cell",
    "CellMismatchError",
    "execution_order",
    "needs_reference",
    "plan_bench",
    "read_cell_document",
    "read_finished_cell",
]
