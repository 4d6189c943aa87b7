"""The bench's results table: one row per (request, method), mean ± std over seeds.

Reads only what the cells wrote (their results.json documents, as dicts), so a table can be
rebuilt from a finished output directory without any model. Written three ways: Markdown (for
reading, accuracies in %), CSV (for analysis, fractions, mean and std in separate columns) and
LaTeX (for papers, booktabs).

The standard deviation is the sample standard deviation (n - 1 in the denominator); with one
seed there is none and only the mean is printed. ``x retrain`` is each seed's seconds divided by
the retrain cell's seconds of the same seed and request, then averaged, so that machines and
seeds with different speeds do not mix in one ratio.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from conun.io import atomic_write_text

Kind = Literal["accuracy", "seconds", "ratio", "fraction"]


@dataclass(frozen=True)
class Column:
    """One number of the table.

    Attributes:
        key: the metric's key in results.json (``seconds`` and ``x_retrain`` are per run).
        label: the column's heading in Markdown and LaTeX.
        kind: how it is printed: accuracy in %, seconds, a ratio, or a plain fraction.
    """

    key: str
    label: str
    kind: Kind


COLUMNS: tuple[Column, ...] = (
    Column("forget_train_acc", "forget train", "accuracy"),
    Column("forget_test_acc", "forget test", "accuracy"),
    Column("retain_train_acc", "retain train", "accuracy"),
    Column("retain_test_acc", "retain test", "accuracy"),
    Column("test_acc", "test", "accuracy"),
    Column("seconds", "seconds", "seconds"),
    Column("x_retrain", "x retrain", "ratio"),
)
"""Always in the table."""

AUDIT_COLUMNS: tuple[Column, ...] = (
    Column("mia_forget_member_rate", "MIA forget member", "fraction"),
    Column("mia_efficacy", "MIA-efficacy", "fraction"),
    Column("avg_gap", "Avg. Gap", "fraction"),
)
"""In the table when at least one cell was audited (see ``conun audit`` for their meaning)."""


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of one number over seeds.

    Attributes:
        mean: None when no seed has the number (e.g. forget test in the sample scenario).
        std: None with fewer than two values.
        count: how many seeds had the number.
    """

    mean: float | None
    std: float | None
    count: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Summary:
        """Summarise the non-null ``values``."""
        present = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not present:
            return cls(None, None, 0)
        std = statistics.stdev(present) if len(present) > 1 else None
        return cls(statistics.fmean(present), std, len(present))


@dataclass
class TableRow:
    """One (request, method) row.

    Attributes:
        request: the request's name (``class5``, ``samples500``, ...).
        scenario: ``class`` or ``sample``.
        method: the method's registry name.
        seeds: the seeds the row aggregates, in grid order.
        values: column key -> summary over those seeds.
    """

    request: str
    scenario: str
    method: str
    seeds: list[int] = field(default_factory=list)
    values: dict[str, Summary] = field(default_factory=dict)


def _cell_request(cell: Mapping[str, Any]) -> str:
    bench = cell.get("bench")
    if not isinstance(bench, Mapping) or "request" not in bench:
        raise ValueError("a bench cell's results.json needs a `bench.request` entry")
    return str(bench["request"])


def aggregate(cells: Sequence[Mapping[str, Any]]) -> list[TableRow]:
    """Group the cells' results.json documents by (request, method) and summarise each column.

    Args:
        cells: one results.json document per cell, each with exactly one run and a
            ``bench.request`` entry; rows keep the order in which (request, method) first appear.

    Returns:
        The rows; ``x_retrain`` is present when the request has a retrain cell for the seed.
    """
    retrain_seconds: dict[tuple[str, int], float] = {}
    for cell in cells:
        (run,) = cell["runs"]
        if run["method"] == "retrain":
            retrain_seconds[(_cell_request(cell), int(cell["seed"]))] = float(run["seconds"])

    grouped: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    scenarios: dict[tuple[str, str], str] = {}
    for cell in cells:
        (run,) = cell["runs"]
        key = (_cell_request(cell), str(run["method"]))
        grouped.setdefault(key, []).append((int(cell["seed"]), run))
        scenarios[key] = str(run["scenario"])

    rows: list[TableRow] = []
    for (request, method), runs in grouped.items():
        values: dict[str, list[float | None]] = {}
        for seed, run in runs:
            numbers: dict[str, Any] = dict(run["metrics"])
            numbers["seconds"] = run["seconds"]
            reference = retrain_seconds.get((request, seed))
            numbers["x_retrain"] = run["seconds"] / reference if reference else None
            for column in (*COLUMNS, *AUDIT_COLUMNS):
                values.setdefault(column.key, []).append(numbers.get(column.key))
        rows.append(
            TableRow(
                request=request,
                scenario=scenarios[(request, method)],
                method=method,
                seeds=[seed for seed, _ in runs],
                values={key: Summary.of(found) for key, found in values.items()},
            )
        )
    return rows


def table_columns(rows: Sequence[TableRow]) -> list[Column]:
    """The columns to print: the fixed ones, plus the audit ones that some row has."""
    audited = [
        column
        for column in AUDIT_COLUMNS
        if any(row.values.get(column.key, Summary(None, None, 0)).count for row in rows)
    ]
    return [*COLUMNS, *audited]


def _number(value: float, kind: Kind) -> str:
    if kind == "accuracy":
        return f"{100 * value:.2f}"
    if kind == "seconds":
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_summary(summary: Summary | None, kind: Kind, *, plus_minus: str = " ± ") -> str:
    """``mean ± std`` in the column's units, ``mean`` alone with one seed, ``–`` with none."""
    if summary is None or summary.mean is None:
        return "–"
    text = _number(summary.mean, kind)
    if summary.std is not None:
        text += plus_minus + _number(summary.std, kind)
    return text


def format_markdown(rows: Sequence[TableRow], *, title: str) -> str:
    """The table in Markdown, with ``title`` and a line on the units above it."""
    columns = table_columns(rows)
    header = ["request", "scenario", "method", "seeds", *(column.label for column in columns)]
    lines = [
        f"# {title}",
        "",
        "Accuracies in %, mean ± sample std over seeds; seconds: the method's own wall-clock "
        "(training for original and retrain); x retrain: seconds / retrain's seconds per seed.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        cells = [row.request, row.scenario, row.method, str(len(row.seeds))]
        cells += [format_summary(row.values.get(column.key), column.kind) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_csv(rows: Sequence[TableRow]) -> str:
    """The table as CSV: fractions and seconds unrounded, ``<key>_mean``/``<key>_std`` columns,
    empty where a number does not exist."""
    columns = table_columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["request", "scenario", "method", "num_seeds", "seeds"]
    for column in columns:
        header += [f"{column.key}_mean", f"{column.key}_std"]
    writer.writerow(header)
    for row in rows:
        line: list[Any] = [
            row.request,
            row.scenario,
            row.method,
            len(row.seeds),
            " ".join(str(seed) for seed in row.seeds),
        ]
        for column in columns:
            summary = row.values.get(column.key)
            line += [
                "" if summary is None or summary.mean is None else repr(summary.mean),
                "" if summary is None or summary.std is None else repr(summary.std),
            ]
        writer.writerow(line)
    return buffer.getvalue()


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (method names hold underscores)."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def format_latex(rows: Sequence[TableRow], *, caption: str) -> str:
    """The table as a LaTeX ``table`` with a booktabs ``tabular``, one rule between requests."""
    columns = table_columns(rows)
    header = ["request", "method", *(column.label for column in columns)]
    lines = [
        r"% written by `conun bench`; needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{"
        + latex_escape(caption)
        + r". Accuracies in \%, mean $\pm$ sample std over seeds; x retrain: seconds relative "
        + r"to retrain's, per seed.}",
        r"\begin{tabular}{ll" + "r" * len(columns) + "}",
        r"\toprule",
        " & ".join(latex_escape(cell) for cell in header) + r" \\",
        r"\midrule",
    ]
    previous: str | None = None
    for row in rows:
        if previous is not None and row.request != previous:
            lines.append(r"\midrule")
        previous = row.request
        cells = [latex_escape(row.request), latex_escape(row.method)]
        for column in columns:
            text = format_summary(row.values.get(column.key), column.kind, plus_minus=r" \pm ")
            cells.append("--" if text == "–" else f"${text}$")
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


TABLE_FILES = {"markdown": "table.md", "csv": "table.csv", "latex": "table.tex"}
"""File names of the three renderings inside the bench's output directory."""


def write_tables(rows: Sequence[TableRow], directory: str | Path, *, title: str) -> dict[str, Path]:
    """Atomically write ``table.md``, ``table.csv`` and ``table.tex`` into ``directory``.

    Returns:
        ``{"markdown": path, "csv": path, "latex": path}``.
    """
    target = Path(directory)
    texts = {
        "markdown": format_markdown(rows, title=title),
        "csv": format_csv(rows),
        "latex": format_latex(rows, caption=title),
    }
    return {
        kind: atomic_write_text(target / TABLE_FILES[kind], text) for kind, text in texts.items()
    }


__all__ = [
    "AUDIT_COLUMNS",
    "COLUMNS",
    "TABLE_FILES",
    "Column",
    "Summary",
    "TableRow",
    "aggregate",
    "format_csv",
    "format_latex",
    "format_markdown",
    "write_tables",
]
