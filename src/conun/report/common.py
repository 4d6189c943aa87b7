"""What the run report and the bench report share: the file names they read, reading and
validating results.json, checkpoint headers, and the versions, audit and figure sections."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from conun.engine.checkpoint import CheckpointError, read_checkpoint_meta
from conun.evaluation.distances import DISTANCE_COLUMNS
from conun.evaluation.privacy import AUDIT_COLUMNS
from conun.evaluation.results import format_audit_table, format_table, validate_results
from conun.report.document import Block, Heading, Paragraph, Table, blocks_from_markdown
from conun.report.figures import draw_figures
from conun.reproducibility import versions
from conun.viz.results import request_label
from conun.workflows.outputs import BENCH_FILE, CELLS_DIR, CONFIG_FILE, ERROR_FILE

EXPECTED = (  # the end of every "not a report source" message
    "a run directory (holding results.json, as written by conun train, unlearn, evaluate, audit "
    "or demo) or a bench directory (holding bench.yaml and cells/, as written by conun bench)"
)

REFERENCES = ("original", "retrain")
"""The reference runs: the model before unlearning and the one retrained without the forget set."""

RESULTS_LEGEND = (
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


def read_document(path: Path) -> dict[str, Any]:
    """A results.json file, parsed and validated against the schema.

    Raises:
        ReportSourceError: it is unreadable, not JSON, or breaks the schema.
    """
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


def request_text(run: Mapping[str, Any]) -> str:
    """A sentence naming the forget request of ``run`` (a results.json run), with its seed."""
    scenario = str(run["scenario"])
    if scenario == "none":
        return "no forget request (the model evaluated as it is)"
    forget = run.get("forget") or {}
    text = f"{scenario} scenario: {request_label(scenario, forget)}"
    if forget.get("seed") is not None:
        text += f" (drawn with seed {forget['seed']})"
    return text


def unique(values: Sequence[str]) -> list[str]:
    """``values`` without repeats, in order of first appearance."""
    return list(dict.fromkeys(values))


def relative_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` where it lies under it, else as given."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a report shows of one checkpoint, read from its header only.

    Attributes:
        path: the checkpoint's path relative to the report's directory.
        method: the method that produced it (``original`` for a trained model).
        dataset: the dataset it was trained on.
        versions: the package versions recorded when it was saved.
        train_config: the training recipe recorded in it.
        error: why the header could not be read (``""`` when it could; the rest is then None).
    """

    path: str
    method: str | None
    dataset: str | None
    versions: dict[str, str] | None
    train_config: dict[str, Any] | None
    error: str = ""


def read_checkpoints(root: Path, patterns: Sequence[str]) -> list[CheckpointInfo]:
    """Metadata of the checkpoints under ``root`` matching ``patterns`` (header only)."""
    found: list[CheckpointInfo] = []
    paths = sorted({path for pattern in patterns for path in root.glob(pattern)})
    for path in paths:
        name = relative_path(path, root)
        try:
            meta = read_checkpoint_meta(path)
        except CheckpointError as error:
            found.append(CheckpointInfo(name, None, None, None, None, error=str(error)))
            continue
        found.append(
            CheckpointInfo(name, meta.method, meta.dataset, meta.versions, meta.train_config)
        )
    return found


def versions_blocks(
    conun_versions: Sequence[str], checkpoints: Sequence[CheckpointInfo]
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


def results_without_audit(data: Mapping[str, Any]) -> str:
    """:func:`format_table` without the audit table it appends (the report shows the audit in
    its own section, one table per request)."""
    text = format_table(dict(data))
    audit = format_audit_table(dict(data))
    suffix = "\n\n" + audit
    return text[: -len(suffix)] if audit and text.endswith(suffix) else text


def audit_blocks(data: Mapping[str, Any]) -> list[Block]:
    """:func:`format_audit_table` as blocks, or ``[]`` when no number is filled in.

    Some meanings contain ``|`` (``mean |Δ| to retrain``), which that Markdown does not escape:
    the values are read from the row's first cells and the meaning and direction are taken
    from the column definitions themselves, so no row loses or gains cells.
    """
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


def figure_blocks(documents: Sequence[Mapping[str, Any]]) -> list[Block]:
    """The Figures section: every figure of :data:`~conun.report.figures.FIGURES`, drawn from
    ``documents`` (validated results.json documents), or the reason it was not."""
    blocks: list[Block] = [Heading("Figures")]
    for drawn in draw_figures(documents):
        blocks.append(Heading(drawn.spec.title, level=3))
        if drawn.image is not None:
            blocks.append(drawn.image)
        else:
            blocks.append(Paragraph(f"Not drawn: {drawn.reason}"))
    return blocks


def read_text_file(path: Path) -> str:
    """The text of a YAML file the report quotes.

    Raises:
        ReportSourceError: it cannot be read as UTF-8 text.
    """
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ReportSourceError(f"{path}: not readable: {error}") from None


__all__ = [
    "BENCH_FILE",
    "CELLS_DIR",
    "CONFIG_FILE",
    "ERROR_FILE",
    "EXPECTED",
    "REFERENCES",
    "RESULTS_LEGEND",
    "CheckpointInfo",
    "ReportSourceError",
    "audit_blocks",
    "figure_blocks",
    "read_checkpoints",
    "read_document",
    "read_text_file",
    "relative_path",
    "request_text",
    "results_without_audit",
    "unique",
    "versions_blocks",
]
