"""Where a bench grid stands, from its files alone: ``conun bench --status OUT``.

Every invocation writes ``OUT/grid.json`` before its first cell: the grid's cells with their
fingerprints, and the executor's settings. With it and the cell directories the state of every
cell can be told on any machine that sees the directory, without the preset, the data, torch
devices or the driver:

- finished: ``results.json`` complete, valid, of this grid's configuration (the same test the
  runner uses to skip a cell);
- running: ``running.json`` is there (written by whichever process runs the cell, removed when it
  ends); on this machine a marker whose process is gone is *interrupted* instead (a killed run),
  and counts as pending;
- failed: ``error.txt`` is there (its last line is the error);
- pending: none of these.

The bench's progress bar shows the same counts (:func:`counts_line`) while the grid runs.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conun.bench.cells import RUNNING_FILE
from conun.bench.plan import BenchPlan, Cell, CellMismatchError, read_cell_document
from conun.io import atomic_write_json
from conun.workflows.outputs import ERROR_FILE

GRID_FILE = "grid.json"
"""The grid of the last invocation (cells, fingerprints, executor), for ``--status``."""

GRID_FORMAT = "conun-bench-grid/1"


class BenchStatusError(ValueError):
    """The directory is not a bench directory that ``--status`` can read."""


def write_grid_file(plan: BenchPlan, out: Path, executor: dict[str, Any]) -> Path:
    """Write ``out/grid.json``: the plan's cells (plan order) with their fingerprints, the
    settings of the executor running them and when the invocation started."""
    return atomic_write_json(
        out / GRID_FILE,
        {
            "format": GRID_FORMAT,
            "preset": plan.name,
            "seeds": plan.seeds,
            "audit": plan.preset.audit,
            "executor": executor,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cells": [
                {
                    "seed": cell.seed,
                    "request": cell.request,
                    "method": cell.method,
                    "scenario": cell.scenario,
                    "fingerprint": plan.fingerprint(cell),
                }
                for cell in plan.cells
            ],
        },
    )


def counts_line(total: int, finished: int, running: int, failed: int) -> str:
    """``"8 cells: 5 finished, 1 running, 1 failed, 1 pending"`` (bar and ``--status``)."""
    pending = total - finished - running - failed
    return (
        f"{total} cells: {finished} finished, {running} running, {failed} failed, {pending} pending"
    )


@dataclass
class GridStatus:
    """The state of every cell of a bench directory's last grid.

    Attributes:
        out: the bench directory.
        preset: the preset's name.
        executor: the executor settings recorded by the last invocation.
        cells: every cell, in plan order.
        finished: finished cells.
        running: running cell -> where and since when (``host``, ``pid``, ``started``).
        failed: failed cell -> the last line of its ``error.txt``.
        interrupted: cells whose running marker's process (on this host) is gone.
        mismatched: cells holding a result of another configuration.
    """

    out: Path
    preset: str
    executor: dict[str, Any]
    cells: list[Cell]
    finished: list[Cell] = field(default_factory=list)
    running: dict[Cell, dict[str, Any]] = field(default_factory=dict)
    failed: dict[Cell, str] = field(default_factory=dict)
    interrupted: list[Cell] = field(default_factory=list)
    mismatched: list[Cell] = field(default_factory=list)

    @property
    def pending(self) -> list[Cell]:
        """Cells neither finished, running nor failed (interrupted and mismatched included)."""
        done = {*self.finished, *self.running, *self.failed}
        return [cell for cell in self.cells if cell not in done]

    def counts(self) -> str:
        """:func:`counts_line` of this status."""
        return counts_line(len(self.cells), len(self.finished), len(self.running), len(self.failed))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _read_marker(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # being replaced, or half-written by a killed process
    return marker if isinstance(marker, dict) else None


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return "(unreadable error.txt)"
    return lines[-1].strip() if lines else "(empty error.txt)"


def grid_status(out: str | Path) -> GridStatus:
    """The state of every cell of the grid last run in ``out``, from its files alone.

    Raises:
        BenchStatusError: ``out`` holds no readable ``grid.json``.
    """
    directory = Path(out)
    path = directory / GRID_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchStatusError(
            f"{directory} is not a bench directory of this conun version: no {GRID_FILE} "
            "(conun bench writes it before its first cell)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BenchStatusError(f"{path} is unreadable: {error}") from None
    if not isinstance(data, dict) or data.get("format") != GRID_FORMAT:
        raise BenchStatusError(f"{path} is not a grid file of format {GRID_FORMAT}")
    audit = bool(data.get("audit"))
    this_host = socket.gethostname()
    status = GridStatus(
        out=directory, preset=str(data.get("preset")), executor=data.get("executor") or {}, cells=[]
    )
    for entry in data.get("cells", []):
        cell = Cell(int(entry["seed"]), entry["request"], entry["method"], entry["scenario"])
        status.cells.append(cell)
        cell_dir = cell.directory(directory)
        try:
            # with_weights=False: a retrain kept without weights is finished for --status
            # (the runner retrains it only if a cell still needs its weights).
            document = read_cell_document(
                cell_dir,
                fingerprint=entry["fingerprint"],
                seed=cell.seed,
                method=cell.method,
                audit=audit,
                with_weights=False,
            )
        except CellMismatchError:
            status.mismatched.append(cell)
            continue
        if document is not None:
            status.finished.append(cell)
            continue
        marker = _read_marker(cell_dir / RUNNING_FILE)
        if marker is not None:
            if marker.get("host") == this_host and not _process_alive(int(marker.get("pid", -1))):
                status.interrupted.append(cell)
            else:
                status.running[cell] = marker
            continue
        if (cell_dir / ERROR_FILE).is_file():
            status.failed[cell] = _last_line(cell_dir / ERROR_FILE)
    return status


def format_status(status: GridStatus) -> str:
    """The status as printed by ``conun bench --status``: the counts, then one line per cell
    that is running, failed, interrupted or of another configuration."""
    executor = status.executor
    how = f" (last run: executor {executor['name']})" if executor.get("name") else ""
    lines = [f"bench {status.preset} in {status.out}{how}: {status.counts()}"]
    for cell, marker in status.running.items():
        lines.append(
            f"  running: {cell} (host {marker.get('host')}, pid {marker.get('pid')}, since "
            f"{marker.get('started')})"
        )
    for cell, error in status.failed.items():
        lines.append(f"  failed: {cell}: {error} (see {cell.directory(status.out) / ERROR_FILE})")
    for cell in status.interrupted:
        lines.append(f"  interrupted: {cell} (its process is gone; rerun to redo it)")
    for cell in status.mismatched:
        lines.append(f"  another configuration's result: {cell}")
    return "\n".join(lines)


__all__ = [
    "GRID_FILE",
    "BenchStatusError",
    "GridStatus",
    "counts_line",
    "format_status",
    "grid_status",
    "write_grid_file",
]
