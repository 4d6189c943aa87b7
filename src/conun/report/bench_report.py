"""The report of a bench directory: ``bench.yaml`` and the finished cells
``cells/<seed>/<request>/<method>/results.json`` that ``conun bench`` wrote. The report covers
the grid recorded in ``bench.yaml`` (its seeds and requests), like the bench's own ``table.md``;
cells of other seeds or requests, failed cells and broken results are named, not counted."""

from __future__ import annotations

import logging
import shlex
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conun.bench.preset import RequestSpec, available_presets
from conun.bench.tables import aggregate, format_markdown
from conun.engine.checkpoint import CHECKPOINT_FILE
from conun.io import RESULTS_FILE
from conun.report.common import (
    BENCH_FILE,
    CELLS_DIR,
    ERROR_FILE,
    REFERENCES,
    RESULTS_LEGEND,
    ReportSourceError,
    audit_blocks,
    figure_blocks,
    read_checkpoints,
    read_document,
    read_text_file,
    unique,
    versions_blocks,
)
from conun.report.document import (
    Block,
    BulletList,
    CodeBlock,
    Heading,
    Paragraph,
    Report,
    blocks_from_markdown,
)
from conun.report.embedding import TITLE as EMBEDDING_TITLE
from conun.report.embedding import embedding_image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _BenchRecord:
    """What ``bench.yaml`` records: the preset as it ran, the seeds, the requests by label, the
    file's text (quoted in the report) and each seed's original under ``originals/``."""

    preset: dict[str, Any]
    seeds: list[int]
    requests: dict[str, dict[str, Any]]  # label -> the request as recorded
    text: str
    originals: dict[int, str] = field(default_factory=dict)  # seed -> originals/<key>


def _read_bench_yaml(path: Path) -> _BenchRecord:
    file = path / BENCH_FILE
    text = read_text_file(file)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ReportSourceError(f"{file}: not valid YAML: {error}") from None
    preset = data.get("preset") if isinstance(data, dict) else None
    seeds = data.get("seeds") if isinstance(data, dict) else None
    if not isinstance(preset, dict) or not isinstance(seeds, list):
        raise ReportSourceError(
            f"{file}: expected the file conun bench writes, with a `preset` mapping and a "
            "`seeds` list"
        )
    requests: dict[str, dict[str, Any]] = {}
    for entry in preset.get("requests") or []:
        try:
            requests[RequestSpec.model_validate(entry).label] = dict(entry)
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            raise ReportSourceError(f"{file}: a request is invalid: {error}") from None
    originals = data.get("originals") if isinstance(data.get("originals"), dict) else {}
    return _BenchRecord(
        preset,
        [int(seed) for seed in seeds],
        requests,
        text,
        {int(seed): str(key) for seed, key in originals.items()},
    )


def _describe_request(request: Mapping[str, Any]) -> str:
    if request.get("class") is not None:
        classes = ", ".join(str(c) for c in request["class"])
        return f"class scenario: class {classes}"
    if request.get("samples") is not None:
        return f"sample scenario: {request['samples']} random training samples"
    return f"sample scenario: a fraction {request.get('fraction')} of the training samples"


def _bench_cells(path: Path, record: _BenchRecord) -> tuple[list[dict[str, Any]], list[str]]:
    """The finished cells of the recorded grid in grid order, and notes on the others."""
    cells = path / CELLS_DIR
    found: list[tuple[tuple[int, int, int, str], dict[str, Any]]] = []
    notes: list[str] = []
    outside: list[str] = []
    failed: list[str] = []
    preset_methods = record.preset.get("methods")
    order = [*REFERENCES, *(preset_methods if isinstance(preset_methods, list) else [])]
    requests = list(record.requests)
    for directory in sorted(cells.glob("*/*/*")) if cells.is_dir() else []:
        if not directory.is_dir():
            continue
        seed_name, request, method = directory.relative_to(cells).parts
        name = f"{seed_name}/{request}/{method}"
        if (
            not seed_name.isdigit()
            or int(seed_name) not in record.seeds
            or (requests and request not in requests)
        ):
            outside.append(name)
            continue
        results = directory / RESULTS_FILE
        if not results.is_file():
            if (directory / ERROR_FILE).is_file():
                failed.append(name)
            continue
        try:
            document = read_document(results)
        except ReportSourceError as error:
            logger.warning("report: cell %s left out: %s", name, error)
            notes.append(f"Cell {name} left out: {error}")
            continue
        key = (
            record.seeds.index(int(seed_name)),
            requests.index(request) if request in requests else 0,
            order.index(method) if method in order else len(order),
            method,
        )
        found.append((key, document))
    if failed:
        notes.append(
            f"Failed cells (see their {ERROR_FILE}; rerunning conun bench retries them): "
            + ", ".join(failed)
        )
    if outside:
        notes.append(
            f"{len(outside)} cell(s) outside the grid recorded in {BENCH_FILE} (seeds or requests "
            "of an earlier invocation) are left out: "
            + ", ".join(outside[:10])
            + (", ..." if len(outside) > 10 else "")
        )
    found.sort(key=lambda pair: pair[0])
    return [document for _, document in found], notes


def _bench_audit_blocks(documents: Sequence[Mapping[str, Any]]) -> list[Block]:
    """Per request, the mean over seeds of every audit number, as :func:`format_audit_table`."""
    by_request: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for document in documents:
        (run,) = document["runs"]
        by_request.setdefault(str(document["bench"]["request"]), {}).setdefault(
            str(run["method"]), []
        ).append(run["metrics"])
    blocks: list[Block] = []
    for request, methods in by_request.items():
        runs = []
        for method, metrics in methods.items():
            keys = unique([key for found in metrics for key in found])
            means: dict[str, float | None] = {}
            for key in keys:
                values = [
                    float(found[key])
                    for found in metrics
                    if isinstance(found.get(key), int | float) and not isinstance(found[key], bool)
                ]
                means[key] = statistics.fmean(values) if values else None
            runs.append({"method": method, "metrics": means})
        table = audit_blocks({"runs": runs})
        if table:
            seeds = max(len(metrics) for metrics in methods.values())
            blocks.append(Heading(f"{request} (mean over {seeds} seed(s))", level=3))
            blocks += table
    return blocks


def bench_report(path: Path, *, figures: bool) -> Report:
    """The report of a bench directory, over the grid recorded in its ``bench.yaml``.

    Args:
        path: a directory holding ``bench.yaml`` and ``cells/<seed>/<request>/<method>/``.
        figures: draw the figures (and the t-SNE of the representations, where the bench's
            checkpoints are on disk); without, the report has no Figures section.

    Raises:
        ReportSourceError: its bench.yaml is broken, or no cell of its grid has finished.
    """
    record = _read_bench_yaml(path)
    documents, notes = _bench_cells(path, record)
    if not documents:
        raise ReportSourceError(
            f"{path} is a bench directory without any finished cell of its grid (expected "
            f"{CELLS_DIR}/<seed>/<request>/<method>/results.json); run conun bench into it first"
            + (": " + " ".join(notes) if notes else "")
        )
    preset = record.preset
    name = str(preset.get("name", "bench"))
    datasets = unique([str(document["dataset"]) for document in documents])
    models = unique([str(document["model"]) for document in documents])
    seeds = ", ".join(str(seed) for seed in record.seeds)
    title = f"conun bench {name}: {', '.join(datasets)}, {', '.join(models)}, seeds {seeds}"
    if preset.get("description"):
        title += f" — {preset['description']}"
    checkpoints = read_checkpoints(
        path, [f"originals/*/{CHECKPOINT_FILE}", f"{CELLS_DIR}/*/*/*/{CHECKPOINT_FILE}"]
    )

    blocks: list[Block] = [Heading("Setting")]
    methods = unique([str(document["runs"][0]["method"]) for document in documents])
    items = [
        f"source: bench directory {path}",
        f"preset: {name}" + (f" — {preset['description']}" if preset.get("description") else ""),
        f"dataset: {', '.join(datasets)}",
        f"model: {', '.join(models)}",
        f"device: {preset.get('device', 'cpu')}",
        f"seeds: {seeds}",
        "requests: "
        + "; ".join(
            f"{label} ({_describe_request(request)})" for label, request in record.requests.items()
        ),
        f"methods: {', '.join(methods)}",
        f"privacy audit: {'yes' if preset.get('audit') else 'no'}",
        f"finished cells: {len(documents)}",
    ]
    blocks.append(BulletList(tuple(items)))
    blocks += [Paragraph(note) for note in notes]

    blocks.append(Heading("Command and configuration"))
    command = ["conun", "bench"]
    if name in available_presets("bench"):
        command.append(name)
        blocks.append(Paragraph("Rerun or resume (finished cells are skipped):"))
    else:
        command.append("PRESET.yaml")
        blocks.append(
            Paragraph(
                f"The preset {name!r} is not a shipped one: it came from a YAML file, whose "
                f"content is recorded in {BENCH_FILE} below. Rerun or resume with that file:"
            )
        )
    command += ["--seeds", ",".join(str(seed) for seed in record.seeds), "--out", str(path)]
    blocks.append(CodeBlock(shlex.join(command), "console"))
    blocks.append(Paragraph(f"The grid as it ran ({BENCH_FILE}):"))
    blocks.append(CodeBlock(record.text, "yaml"))
    blocks += versions_blocks(
        unique([str(document["conun_version"]) for document in documents]), checkpoints
    )

    blocks.append(Heading("Results"))
    table = blocks_from_markdown(format_markdown(aggregate(documents), title=title))
    blocks += [block for block in table if not isinstance(block, Heading)]
    blocks.append(Paragraph(RESULTS_LEGEND))

    blocks.append(Heading("Privacy audit"))
    blocks += _bench_audit_blocks(documents) or [
        Paragraph("No privacy audit in these results (set audit: true in the bench preset).")
    ]

    if figures:
        blocks += figure_blocks(documents)
        blocks.append(Heading(EMBEDDING_TITLE, level=3))
        image, reason = embedding_image(
            path, record.seeds, record.requests, original_keys=record.originals
        )
        blocks.append(image if image is not None else Paragraph(f"Not drawn: {reason}"))
    return Report(title=title, blocks=blocks)


__all__ = ["bench_report"]
