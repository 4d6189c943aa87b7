"""Fixtures of the report tests: a demo run directory and a smoke bench directory, each made
once per session (seconds on a CPU), and their reports written once."""

from __future__ import annotations

from pathlib import Path

import pytest

from conun.bench import run_bench
from conun.report import ReportPaths, write_report
from conun.workflows.demo import run_demo


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``conun demo`` writes: results.json with original, retrain and contrastive for a
    class and a sample request, and ``original/checkpoint.safetensors``. Read-only."""
    out = tmp_path_factory.mktemp("report-demo") / "demo"
    run_demo(out, quiet=True)
    return out


@pytest.fixture(scope="session")
def smoke_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``conun bench smoke`` writes. Read-only (copy it to change it)."""
    out = tmp_path_factory.mktemp("report-smoke") / "smoke"
    run_bench("smoke", out=out, quiet=True)
    return out


@pytest.fixture(scope="session")
def demo_report(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ReportPaths:
    """The demo's report, written outside the demo directory."""
    return write_report(demo_dir, tmp_path_factory.mktemp("demo-report") / "report")


@pytest.fixture(scope="session")
def smoke_report(smoke_dir: Path) -> ReportPaths:
    """The smoke bench's report, written to its default place (``smoke_dir/report``)."""
    return write_report(smoke_dir)
