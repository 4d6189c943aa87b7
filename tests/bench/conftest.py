"""Shared fixtures of the bench tests: the smoke grid, run once per session (seconds on a CPU)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from conun.bench import BenchReport, run_bench


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BenchReport]:
    """The shipped ``smoke`` preset run into a fresh directory. Read-only: tests that rerun or
    damage it work on a copy (:func:`smoke_copy`)."""
    out = tmp_path_factory.mktemp("bench-smoke")
    return out, run_bench("smoke", out=out, quiet=True)


@pytest.fixture
def smoke_copy(smoke_run: tuple[Path, BenchReport], tmp_path: Path) -> Callable[[], Path]:
    """Returns a function making a private copy of the finished smoke directory."""

    def copy() -> Path:
        target = tmp_path / "smoke"
        shutil.copytree(smoke_run[0], target)
        return target

    return copy
