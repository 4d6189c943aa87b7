"""results.json (docs/protocol.md): built here, validated against the shipped JSON Schema, written
atomically, and rendered as a human-readable table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from conun.evaluation.distances import DISTANCE_COLUMNS
from conun.evaluation.privacy import AUDIT_COLUMNS
from conun.io import RESULTS_FILE, atomic_write_json, atomic_write_text
from conun.version import __version__

TABLE_FILE = "results.md"


@cache
def results_schema() -> dict[str, Any]:
    """The JSON Schema of results.json shipped inside the package."""
    text = (resources.files("conun") / "schema" / "results.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_results(data: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``data`` breaks the results.json schema."""
    jsonschema.validate(data, results_schema())


@dataclass
class RunRecord:
    """One row of results.json's ``runs``."""

    scenario: str
    method: str
    seconds: float
    metrics: dict[str, Any]
    forget: dict[str, Any] | None = None
    forget_batches: int | None = None
    passes: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "forget": self.forget,
            "method": self.method,
            "seconds": round(self.seconds, 4),
            "forget_batches": self.forget_batches,
            "passes": self.passes,
            "metrics": self.metrics,
            "history": self.history,
            **self.extra,
        }


@dataclass
class Results:
    """A results.json document."""

    dataset: str
    model: str
    seed: int
    device: str
    runs: list[RunRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "conun_version": __version__,
            "dataset": self.dataset,
            "model": self.model,
            "seed": self.seed,
            "device": self.device,
            **self.extra,
            "runs": [run.to_dict() for run in self.runs],
        }

    def write(self, directory: str | Path) -> Path:
        """Validate, then atomically write ``results.json`` and ``results.md`` into it."""
        data = self.to_dict()
        validate_results(data)
        target = Path(directory)
        atomic_write_text(target / TABLE_FILE, format_table(data) + "\n")
        return atomic_write_json(target / RESULTS_FILE, data)


_COLUMNS = (
    ("forget_train_acc", "forget train"),
    ("forget_test_acc", "forget test"),
    ("retain_train_acc", "retain train"),
    ("retain_test_acc", "retain test"),
    ("test_acc", "test"),
)


def format_table(data: dict[str, Any]) -> str:
    """A Markdown table of every run: accuracies in %, seconds, and seconds relative to the
    retrain run of the same scenario (when there is one)."""
    retrain_seconds = {
        run["scenario"]: run["seconds"] for run in data["runs"] if run["method"] == "retrain"
    }
    header = [
        "scenario",
        "method",
        *(label for _, label in _COLUMNS),
        "seconds",
        "x retrain",
        "passes",
    ]
    lines = [
        f"{data['dataset']} / {data['model']} / seed {data['seed']} (accuracy in %)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for run in data["runs"]:
        metrics = run["metrics"]
        cells = [run["scenario"], run["method"]]
        cells += [
            "–" if metrics.get(key) is None else f"{100 * metrics[key]:.2f}" for key, _ in _COLUMNS
        ]
        cells.append(f"{run['seconds']:.2f}")
        reference = retrain_seconds.get(run["scenario"])
        cells.append(f"{run['seconds'] / reference:.3f}" if reference else "–")
        cells.append("–" if run.get("passes") is None else f"{run['passes']:g}")
        lines.append("| " + " | ".join(cells) + " |")
    audit = format_audit_table(data)
    return "\n".join(lines) + ("\n\n" + audit if audit else "")


def format_audit_table(data: dict[str, Any]) -> str:
    """The membership-inference and distance numbers of every run that has them, one row per
    number with its meaning and good direction ("closer to retrain": compare with the retrain
    column); empty when no run was audited."""
    columns = {**AUDIT_COLUMNS, **DISTANCE_COLUMNS}
    runs = [
        run
        for run in data["runs"]
        if any(run["metrics"].get(key) is not None for key in columns)  # audit keys may be null
    ]
    if not runs:
        return ""
    several_scenarios = len({run.get("scenario") for run in runs}) > 1
    names = [
        f"{run['method']} ({run.get('scenario')})" if several_scenarios else run["method"]
        for run in runs
    ]
    header = ["number", *names, "meaning", "good direction"]
    lines = [
        "Privacy audit (fractions; population attacks: members = D_r_tr, non-members = test)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for key, (meaning, direction) in columns.items():
        values = [run["metrics"].get(key) for run in runs]
        if all(value is None for value in values):
            continue
        cells = ["–" if value is None else f"{value:.4g}" for value in values]
        # A "|" inside a cell (|Δ| in the meanings) would split it: escape it for Markdown.
        meaning, direction = meaning.replace("|", "\\|"), direction.replace("|", "\\|")
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {meaning} | {direction} |")
    return "\n".join(lines)
