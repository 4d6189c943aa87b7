"""``conun bench``: a preset's grid of seeds x forget requests x methods, cached, resumable,
summarised as one table (mean ± std over seeds) in Markdown, CSV and LaTeX.

Presets are YAML in ``conun/configs/bench/`` (:mod:`conun.bench.preset`); the plan and what a
finished cell is, :mod:`conun.bench.plan`; the runner is :func:`run_bench`
(:mod:`conun.bench.grid`), one cell :mod:`conun.bench.cells`, run in this process or as Ray tasks
(:mod:`conun.bench.executors`); ``--status`` is :mod:`conun.bench.status`; the tables are
:mod:`conun.bench.tables`.
"""

from conun.bench.grid import (
    BenchFailedError,
    BenchPlan,
    BenchReport,
    Cell,
    CellMismatchError,
    plan_bench,
    run_bench,
)
from conun.bench.preset import (
    BenchPreset,
    BenchPresetError,
    RequestSpec,
    available_presets,
    load_bench_preset,
    parse_seeds,
)

__all__ = [
    "BenchFailedError",
    "BenchPlan",
    "BenchPreset",
    "BenchPresetError",
    "BenchReport",
    "Cell",
    "CellMismatchError",
    "RequestSpec",
    "available_presets",
    "load_bench_preset",
    "parse_seeds",
    "plan_bench",
    "run_bench",
]
