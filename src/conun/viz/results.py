"""Reading results.json files for figures, and grouping their runs into panels.

A figure draws one panel per *forget request*: the scenario plus what was forgotten, ignoring
the request's seed (``class 5``, ``500 samples``). Runs of several results.json files (seeds of
one benchmark, say) that share a request land in the same panel; two class requests for
different classes get two panels. The retrained model is the reference: a run is compared with
the retrain run(s) of its own results file where that file has one for the request (the same
seed and split), else with the mean of the panel's retrain runs; a panel-wide reference (a line
across the panel) is the mean of all its retrain runs.

The schema check reads the schema shipped in the package directly rather than through
``conun.evaluation.results``: importing ``conun.evaluation`` imports the engine, which this
package never does (by design: viz draws from saved files only).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

import jsonschema

from conun.io import RESULTS_FILE

#: Methods that are references rather than unlearning methods.
ORIGINAL = "original"
RETRAIN = "retrain"

#: Scenarios that forget something (``"none"`` is a plain evaluation of a model).
FORGET_SCENARIOS = ("class", "sample")

ResultsSource: TypeAlias = Mapping[str, Any] | str | os.PathLike[str]
"""A parsed results.json document, a path to a results.json, or a run directory holding one."""

ResultsInput: TypeAlias = ResultsSource | Sequence[ResultsSource]
"""One results source or several; several are drawn together, their runs grouped by request."""


@cache
def _schema() -> dict[str, Any]:
    text = (resources.files("conun") / "schema" / "results.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def read_results(results: ResultsInput) -> list[dict[str, Any]]:
    """Load and validate results.json documents.

    Args:
        results: a parsed document (a mapping), a path to a results.json file, a run directory
            holding ``results.json``, or a sequence of these.

    Returns:
        The documents, in the order given, each validated against the shipped JSON Schema.

    Raises:
        FileNotFoundError: a path is neither a results.json file nor a directory holding one.
        jsonschema.ValidationError: a document breaks the results.json schema.
        ValueError: the sequence is empty.
    """
    if isinstance(results, Mapping | str | os.PathLike):
        return [_read_one(results)]
    sources = list(results)
    if not sources:
        raise ValueError("no results given: pass a results.json document, file or run directory")
    return [_read_one(source) for source in sources]


def _read_one(source: ResultsSource) -> dict[str, Any]:
    if isinstance(source, Mapping):
        document = dict(source)
    else:
        path = Path(source)
        if path.is_dir():
            path = path / RESULTS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no results.json here; pass a results.json file or a run directory "
                "that holds one"
            )
        document = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.validate(document, _schema())
    return document


def request_label(scenario: str, forget: Mapping[str, Any] | None) -> str:
    """A short name for a forget request, without its seed.

    Args:
        scenario: ``"class"``, ``"sample"`` or ``"none"``.
        forget: the run's ``forget`` field (``{"classes": [5]}``, ``{"num_samples": 500, ...}``,
            ``{"ids_file": ...}``) or ``None``.

    Returns:
        e.g. ``"class 5"``, ``"classes 0, 5"``, ``"500 samples"``, ``"ids from ids.txt"``, or
        the scenario alone when the request says nothing more.
    """
    if forget:
        classes = forget.get("classes")
        if classes:
            names = ", ".join(str(c) for c in classes)
            return f"class {names}" if len(classes) == 1 else f"classes {names}"
        if forget.get("num_samples") is not None:
            return f"{forget['num_samples']} samples"
        if forget.get("ids_file"):
            return f"ids from {Path(str(forget['ids_file'])).name}"
    return scenario


@dataclass(frozen=True)
class Panel:
    """The runs of one forget request, from one or several results.json documents.

    Attributes:
        scenario: ``"class"`` or ``"sample"``.
        request: :func:`request_label` of the request.
        runs: the run dictionaries, in file order.
        sources: for each run, the index of the results document it came from.
    """

    scenario: str
    request: str
    runs: tuple[dict[str, Any], ...]
    sources: tuple[int, ...]

    @property
    def title(self) -> str:
        """Panel title: the scenario and, when it says more, the request."""
        if self.request == self.scenario:
            return f"{self.scenario} scenario"
        return f"{self.scenario} scenario: {self.request}"

    def methods(self) -> list[str]:
        """Method names in order of first appearance."""
        return list(dict.fromkeys(run["method"] for run in self.runs))

    def runs_of(self, method: str) -> list[dict[str, Any]]:
        """The runs of ``method`` (several when several seeds were merged)."""
        return [run for run in self.runs if run["method"] == method]

    def retrain_metric(self, key: str, *, source: int | None = None) -> float | None:
        """The retrained model's ``metrics[key]``: the mean over the retrain runs of document
        ``source`` when it has any with the metric, else over all the panel's retrain runs.

        Returns:
            The mean, or ``None`` when no retrain run of the panel has the metric.
        """
        pairs = [
            (origin, float(run["metrics"][key]))
            for run, origin in zip(self.runs, self.sources, strict=True)
            if run["method"] == RETRAIN and run["metrics"].get(key) is not None
        ]
        own = [value for origin, value in pairs if origin == source]
        values = own or [value for _, value in pairs]
        return sum(values) / len(values) if values else None

    def retrain_seconds(self) -> float | None:
        """Mean wall-clock seconds of the panel's retrain runs; ``None`` without any."""
        values = [float(run["seconds"]) for run in self.runs_of(RETRAIN)]
        return sum(values) / len(values) if values else None


def collect_panels(documents: Iterable[Mapping[str, Any]]) -> list[Panel]:
    """Group the runs of validated documents by forget request (scenario ``"none"`` dropped).

    Args:
        documents: output of :func:`read_results`.

    Returns:
        One :class:`Panel` per request, in order of first appearance.
    """
    grouped: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for index, document in enumerate(documents):
        for run in document["runs"]:
            scenario = run["scenario"]
            if scenario not in FORGET_SCENARIOS:
                continue
            key = (scenario, request_label(scenario, run.get("forget")))
            grouped.setdefault(key, []).append((index, run))
    return [
        Panel(
            scenario=scenario,
            request=request,
            runs=tuple(run for _, run in entries),
            sources=tuple(index for index, _ in entries),
        )
        for (scenario, request), entries in grouped.items()
    ]


def describe(documents: Sequence[Mapping[str, Any]]) -> str:
    """``"dataset / model"`` when all documents agree on both, else ``""`` (for a suptitle)."""
    pairs = {(str(d["dataset"]), str(d["model"])) for d in documents}
    if len(pairs) != 1:
        return ""
    ((dataset, model),) = pairs
    return f"{dataset} / {model}"
