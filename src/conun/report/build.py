"""``conun report``: one HTML page (and its Markdown twin) from a run or a bench directory.

Reads only what the commands wrote (results.json, config.yaml, bench.yaml, checkpoint
metadata), never loads a model's weights, and draws the figures with :mod:`conun.viz`:

* a **run directory** holds ``results.json`` (``conun train | unlearn | evaluate | audit |
  demo``), maybe ``config.yaml`` and checkpoints (``checkpoint.safetensors`` in it or in a
  sub-directory, as the demo's ``original/``);
* a **bench directory** holds ``bench.yaml`` and ``cells/<seed>/<request>/<method>/results.json``
  (``conun bench``); the report covers the grid recorded in ``bench.yaml`` (its seeds and
  requests), like the bench's own ``table.md``.

The report has: the setting (dataset, model, seeds, requests, methods), the recorded command
and configuration, the versions (of this report, of the results, of every checkpoint), the
results table (original and retrain rows included where they ran), the privacy-audit numbers
with their meaning and good direction where an audit ran, and the figures (forgetting curve,
time per method, forgetting against utility). The t-SNE figure of :mod:`conun.viz` is not
part of it: it needs the unlearned models' weights and the data, which no directory layout keeps
together (the demo saves only the original, ``conun unlearn`` only the unlearned model).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml

from conun.evaluation.results import (
    RESULTS_FILE,
    format_audit_table,
    format_table,
    validate_results,
)
from conun.io import atomic_write, atomic_write_text
from conun.report.document import (
    Block,
    BulletList,
    CodeBlock,
    Heading,
    Paragraph,
    Report,
    Table,
    blocks_from_markdown,
    image_file_names,
    render_html,
    render_markdown,
)
from conun.report.embedding import TITLE as EMBEDDING_TITLE
from conun.report.embedding import embedding_image
from conun.report.figures import FIGURES, draw_figures
from conun.reproducibility import versions
from conun.viz.results import request_label

logger = logging.getLogger(__name__)

SourceKind = Literal["run", "bench"]
"""What a directory holds: one run's results, or a bench grid."""

BENCH_FILE = "bench.yaml"
CELLS_DIR = "cells"
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.safetensors"
ERROR_FILE = "error.txt"

DEFAULT_STEM = "report"
"""Without ``out``: ``DIRECTORY/report.html``, ``report.md`` and ``report-<figure>.png``."""

EXPECTED = (
    "a run directory (holding results.json, as written by conun train, unlearn, evaluate, audit "
    "or demo) or a bench directory (holding bench.yaml and cells/, as written by conun bench)"
)

_REFERENCES = ("original", "retrain")

_LEGEND = (
    "Columns: accuracies in % on forget train (the forgotten training samples, D_u_tr), forget "
    "test (the forgotten class's test samples, class requests only), retain train / retain test "
    "(everything else) and test (the whole test set); seconds: the method's own wall-clock "
    "(training, for original and retrain); x retrain: seconds relative to retrain's for the same "
    "request. original is the model before unlearning; retrain, trained from scratch without "
    "the forget set, is the reference every method aims at."
)


class ReportSourceError(ValueError):
    """The directory is neither a run directory nor a bench directory, or its files are
    broken; the message names the file and what was expected."""


@dataclass(frozen=True)
class ReportPaths:
    """The files :func:`write_report` wrote.

    Attributes:
        html: the self-contained page.
        markdown: the Markdown twin.
        images: the PNG files the Markdown references (the HTML embeds the same bytes).
    """

    html: Path
    markdown: Path
    images: tuple[Path, ...]


def detect_source(directory: str | os.PathLike[str]) -> SourceKind:
    """Whether ``directory`` is a bench directory (``bench.yaml``) or a run directory
    (``results.json``).

    Raises:
        FileNotFoundError: it does not exist.
        ReportSourceError: it is a file, or holds neither file.
    """
    path = Path(directory)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; expected {EXPECTED}")
    if not path.is_dir():
        raise ReportSourceError(f"{path} is a file, not a directory; expected {EXPECTED}")
    if (path / BENCH_FILE).is_file():
        return "bench"
    if (path / RESULTS_FILE).is_file():
        return "run"
    raise ReportSourceError(
        f"{path} holds neither results.json nor bench.yaml: it is neither a run directory nor "
        f"a bench directory; expected {EXPECTED}"
    )


def build_report(directory: str | os.PathLike[str], *, figures: bool = True) -> Report:
    """Read a run or bench directory and assemble its report (figures drawn in memory).

    Args:
        directory: a run directory or a bench directory (:func:`detect_source`).
        figures: draw the figures (most of the time a report takes); without, the report has
            no Figures section.

    Returns:
        The report, ready for :func:`conun.report.render_html` / ``render_markdown``.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
        ReportSourceError: it is neither kind of directory, a results.json or bench.yaml in
            it is broken, or a bench directory has no finished cell.
    """
    path = Path(directory)
    if detect_source(path) == "bench":
        return _bench_report(path, figures=figures)
    return _run_report(path, figures=figures)


def write_report(
    directory: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    figures: bool = True,
) -> ReportPaths:
    """Build the report of ``directory`` and write ``<out>.html``, ``<out>.md`` and the PNGs.

    Every file is written atomically. PNGs of figures an earlier report of the same ``out``
    drew but this one cannot are removed, so the Markdown never sits next to a stale figure.

    Args:
        directory: a run directory or a bench directory.
        out: the output path without extension (default ``DIRECTORY/report``); the figures are
            ``<out>-<figure>.png`` next to it.
        figures: see :func:`build_report`.

    Returns:
        The paths written.

    Raises:
        ValueError: ``out`` has an extension of an output file or is a directory.
        FileNotFoundError, ReportSourceError: see :func:`build_report`.
    """
    stem = Path(out) if out is not None else Path(directory) / DEFAULT_STEM
    if stem.suffix.lower() in (".html", ".htm", ".md", ".png"):
        raise ValueError(
            f"--out is a path without extension (OUT.html, OUT.md and OUT-<figure>.png are "
            f"written); got {stem}"
        )
    if stem.is_dir():
        raise ValueError(
            f"--out {stem} is a directory; give a path without extension, e.g. {stem / 'report'}"
        )
    report = build_report(directory, figures=figures)
    files = image_file_names(report, stem.name)
    images: list[Path] = []
    for image in report.images:
        target = stem.parent / files[image.name]
        atomic_write(target, functools.partial(_write_bytes, data=image.png))
        images.append(target)
    drawn = {image.name for image in report.images}
    for spec in FIGURES:
        if spec.name not in drawn:
            (stem.parent / f"{stem.name}-{spec.name}.png").unlink(missing_ok=True)
    markdown = atomic_write_text(Path(f"{stem}.md"), render_markdown(report, files))
    page = atomic_write_text(Path(f"{stem}.html"), render_html(report))
    return ReportPaths(html=page, markdown=markdown, images=tuple(images))


def _write_bytes(path: Path, *, data: bytes) -> None:
    path.write_bytes(data)


# -- reading ------------------------------------------------------------------------------------


def _read_document(path: Path) -> dict[str, Any]:
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        validate_results(document)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportSourceError(f"{path}: not a readable results.json: {error}") from None
    except jsonschema.ValidationError as error:
        raise ReportSourceError(
            f"{path}: not a valid results.json (schema: {error.message})"
        ) from None
    return document


def _request_text(run: Mapping[str, Any]) -> str:
    scenario = str(run["scenario"])
    if scenario == "none":
        return "no forget request (the model evaluated as it is)"
    forget = run.get("forget") or {}
    text = f"{scenario} scenario: {request_label(scenario, forget)}"
    if forget.get("seed") is not None:
        text += f" (drawn with seed {forget['seed']})"
    return text


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class _Checkpoint:
    path: str
    method: str | None
    dataset: str | None
    versions: dict[str, str] | None
    train_config: dict[str, Any] | None
    error: str = ""


def _checkpoints(root: Path, patterns: Sequence[str]) -> list[_Checkpoint]:
    """Metadata of the checkpoints under ``root`` matching ``patterns`` (header only)."""
    from conun.engine.checkpoint import CheckpointError, read_checkpoint_meta

    found: list[_Checkpoint] = []
    paths = sorted({path for pattern in patterns for path in root.glob(pattern)})
    for path in paths:
        name = _relative(path, root)
        try:
            meta = read_checkpoint_meta(path)
        except CheckpointError as error:
            found.append(_Checkpoint(name, None, None, None, None, error=str(error)))
            continue
        found.append(_Checkpoint(name, meta.method, meta.dataset, meta.versions, meta.train_config))
    return found


def _versions_blocks(
    conun_versions: Sequence[str], checkpoints: Sequence[_Checkpoint]
) -> list[Block]:
    """The versions table: this report's, the results', and each distinct checkpoint set's."""
    rows: list[tuple[str, dict[str, str]]] = [("this report (now)", versions())]
    if conun_versions:
        rows.append(("results.json (conun_version)", {"conun": ", ".join(conun_versions)}))
    groups: dict[str, list[str]] = {}
    recorded: dict[str, dict[str, str]] = {}
    for checkpoint in checkpoints:
        if checkpoint.versions is None:
            continue
        key = json.dumps(checkpoint.versions, sort_keys=True)
        groups.setdefault(key, []).append(checkpoint.path)
        recorded[key] = checkpoint.versions
    for key, paths in groups.items():
        label = ", ".join(paths) if len(paths) <= 3 else f"{paths[0]}, ... ({len(paths)} in all)"
        rows.append(
            (f"checkpoint {label}" if len(paths) == 1 else f"checkpoints {label}", recorded[key])
        )
    keys = ["conun", "torch", "torchvision", "python"]
    keys += sorted({k for _, found in rows for k in found} - set(keys))
    table = Table(
        ("recorded by", *keys),
        tuple((label, *(found.get(k, "–") for k in keys)) for label, found in rows),
    )
    blocks: list[Block] = [Heading("Versions"), table]
    broken = [c for c in checkpoints if c.error]
    if broken:
        blocks.append(
            Paragraph(
                "Unreadable checkpoints: " + "; ".join(f"{c.path}: {c.error}" for c in broken)
            )
        )
    return blocks


def _split_audit(data: Mapping[str, Any]) -> str:
    """:func:`format_table` without the audit table it appends (the report shows the audit in
    its own section, one table per request)."""
    text = format_table(dict(data))
    audit = format_audit_table(dict(data))
    suffix = "\n\n" + audit
    return text[: -len(suffix)] if audit and text.endswith(suffix) else text


def _audit_blocks(data: Mapping[str, Any]) -> list[Block]:
    """:func:`format_audit_table` as blocks, or ``[]`` when no number is filled in.

    Some meanings contain ``|`` (``mean |Δ| to retrain``), which that Markdown does not escape:
    the values are read from the row's first cells and the meaning and direction are taken
    from the column definitions themselves, so no row loses or gains cells.
    """
    from conun.evaluation.distances import DISTANCE_COLUMNS
    from conun.evaluation.privacy import AUDIT_COLUMNS

    columns = {**AUDIT_COLUMNS, **DISTANCE_COLUMNS}
    blocks: list[Block] = []
    for block in blocks_from_markdown(format_audit_table(dict(data))):
        if not isinstance(block, Table):
            blocks.append(block)
            continue
        if not block.rows:
            return []
        values = len(block.header) - 3  # number, one column per run, meaning, good direction
        rows = tuple(
            (row[0], *row[1 : 1 + values], *columns.get(row[0], tuple(row[1 + values :])))
            for row in block.rows
        )
        blocks.append(Table(block.header, rows))
    return blocks if any(isinstance(block, Table) for block in blocks) else []


def _figure_blocks(documents: Sequence[Mapping[str, Any]]) -> list[Block]:
    blocks: list[Block] = [Heading("Figures")]
    for drawn in draw_figures(documents):
        blocks.append(Heading(drawn.spec.title, level=3))
        if drawn.image is not None:
            blocks.append(drawn.image)
        else:
            blocks.append(Paragraph(f"Not drawn: {drawn.reason}"))
    return blocks


def _yaml_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ReportSourceError(f"{path}: not readable: {error}") from None


# -- a run directory ----------------------------------------------------------------------------


def _group_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(_request_text(run), []).append(dict(run))
    return groups


def _run_report(path: Path, *, figures: bool) -> Report:
    data = _read_document(path / RESULTS_FILE)
    runs: list[dict[str, Any]] = data["runs"]
    checkpoints = _checkpoints(path, [CHECKPOINT_FILE, f"*/{CHECKPOINT_FILE}"])
    blocks: list[Block] = [Heading("Setting")]
    items = [
        f"source: run directory {path}",
        f"dataset: {data['dataset']}",
        f"model: {data['model']}",
        f"seed: {data['seed']}",
        f"device: {data['device']}",
        "requests: " + "; ".join(_unique([_request_text(run) for run in runs])),
        "methods: " + ", ".join(_unique([str(run["method"]) for run in runs])),
    ]
    if checkpoints:
        items.append(
            "checkpoints: "
            + "; ".join(
                f"{c.path} ({c.method}, trained on {c.dataset})" if not c.error else c.path
                for c in checkpoints
            )
        )
    blocks.append(BulletList(tuple(items)))

    blocks.append(Heading("Command and configuration"))
    config = path / CONFIG_FILE
    if config.is_file():
        blocks.append(Paragraph(f"Recorded configuration ({CONFIG_FILE}, the resolved config):"))
        blocks.append(CodeBlock(_yaml_text(config), "yaml"))
    else:
        blocks.append(Paragraph(f"No command and no {CONFIG_FILE} recorded in this directory."))
    for checkpoint in checkpoints:
        if checkpoint.train_config is not None and checkpoint.method == "original":
            blocks.append(Paragraph(f"Training recipe of {checkpoint.path} (from its metadata):"))
            blocks.append(
                CodeBlock(yaml.safe_dump(checkpoint.train_config, sort_keys=False), "yaml")
            )
    blocks += _versions_blocks([str(data["conun_version"])], checkpoints)

    blocks.append(Heading("Results"))
    blocks += blocks_from_markdown(_split_audit(data))
    blocks.append(Paragraph(_LEGEND))
    missing = [name for name in _REFERENCES if name not in {run["method"] for run in runs}]
    if missing and any(run["scenario"] != "none" for run in runs):
        blocks.append(
            Paragraph(
                f"No {' and no '.join(missing)} run in these results (conun unlearn adds both "
                "with --with-reference)."
            )
        )

    blocks.append(Heading("Privacy audit"))
    audited: list[Block] = []
    groups = _group_runs(runs)
    for title, group in groups.items():
        table = _audit_blocks({**data, "runs": group})
        if table:
            audited += ([Heading(title, level=3)] if len(groups) > 1 else []) + table
    blocks += audited or [
        Paragraph(
            "No privacy audit in these results (add one with conun unlearn --audit, or conun "
            "audit)."
        )
    ]

    if figures:
        blocks += _figure_blocks([data])
    title = f"conun report: {data['dataset']} / {data['model']}, seed {data['seed']}"
    return Report(title=title, blocks=blocks)


# -- a bench directory --------------------------------------------------------------------------


@dataclass(frozen=True)
class _BenchRecord:
    preset: dict[str, Any]
    seeds: list[int]
    requests: dict[str, dict[str, Any]]  # label -> the request as recorded
    text: str
    originals: dict[int, str] = field(default_factory=dict)  # seed -> originals/<key>


def _read_bench_yaml(path: Path) -> _BenchRecord:
    from conun.bench.preset import RequestSpec

    file = path / BENCH_FILE
    text = _yaml_text(file)
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
    order = [*_REFERENCES, *(preset_methods if isinstance(preset_methods, list) else [])]
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
            document = _read_document(results)
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
            keys = _unique([key for found in metrics for key in found])
            means: dict[str, float | None] = {}
            for key in keys:
                values = [
                    float(found[key])
                    for found in metrics
                    if isinstance(found.get(key), int | float) and not isinstance(found[key], bool)
                ]
                means[key] = statistics.fmean(values) if values else None
            runs.append({"method": method, "metrics": means})
        table = _audit_blocks({"runs": runs})
        if table:
            seeds = max(len(metrics) for metrics in methods.values())
            blocks.append(Heading(f"{request} (mean over {seeds} seed(s))", level=3))
            blocks += table
    return blocks


def _bench_report(path: Path, *, figures: bool) -> Report:
    from conun.bench.preset import available_presets
    from conun.bench.tables import aggregate, format_markdown

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
    datasets = _unique([str(document["dataset"]) for document in documents])
    models = _unique([str(document["model"]) for document in documents])
    seeds = ", ".join(str(seed) for seed in record.seeds)
    title = f"conun bench {name}: {', '.join(datasets)}, {', '.join(models)}, seeds {seeds}"
    if preset.get("description"):
        title += f" — {preset['description']}"
    checkpoints = _checkpoints(
        path, [f"originals/*/{CHECKPOINT_FILE}", f"{CELLS_DIR}/*/*/*/{CHECKPOINT_FILE}"]
    )

    blocks: list[Block] = [Heading("Setting")]
    methods = _unique([str(document["runs"][0]["method"]) for document in documents])
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
    blocks += _versions_blocks(
        _unique([str(document["conun_version"]) for document in documents]), checkpoints
    )

    blocks.append(Heading("Results"))
    table = blocks_from_markdown(format_markdown(aggregate(documents), title=title))
    blocks += [block for block in table if not isinstance(block, Heading)]
    blocks.append(Paragraph(_LEGEND))

    blocks.append(Heading("Privacy audit"))
    blocks += _bench_audit_blocks(documents) or [
        Paragraph("No privacy audit in these results (set audit: true in the bench preset).")
    ]

    if figures:
        blocks += _figure_blocks(documents)
        blocks.append(Heading(EMBEDDING_TITLE, level=3))
        image, reason = embedding_image(
            path, record.seeds, record.requests, original_keys=record.originals
        )
        blocks.append(image if image is not None else Paragraph(f"Not drawn: {reason}"))
    return Report(title=title, blocks=blocks)


__all__ = [
    "DEFAULT_STEM",
    "ReportPaths",
    "ReportSourceError",
    "SourceKind",
    "build_report",
    "detect_source",
    "write_report",
]
