"""The report of a run directory: one results.json (``conun train | unlearn | evaluate | audit
| demo``), maybe its ``config.yaml`` and checkpoints (``checkpoint.safetensors`` in the directory
or in a sub-directory, as the demo's ``original/``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from conun.engine.checkpoint import CHECKPOINT_FILE
from conun.io import RESULTS_FILE
from conun.report.common import (
    CONFIG_FILE,
    REFERENCES,
    RESULTS_LEGEND,
    audit_blocks,
    figure_blocks,
    read_checkpoints,
    read_document,
    read_text_file,
    request_text,
    results_without_audit,
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


def _group_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    # One audit table per request: the audit's rows are only comparable within a request.
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(request_text(run), []).append(dict(run))
    return groups


def run_report(path: Path, *, figures: bool) -> Report:
    """The report of a run directory.

    Args:
        path: a directory holding ``results.json`` (maybe ``config.yaml`` and checkpoints, in it
            or one level down).
        figures: draw the figures; without, the report has no Figures section.

    Raises:
        ReportSourceError: its results.json is broken.
    """
    data = read_document(path / RESULTS_FILE)
    runs: list[dict[str, Any]] = data["runs"]
    checkpoints = read_checkpoints(path, [CHECKPOINT_FILE, f"*/{CHECKPOINT_FILE}"])
    blocks: list[Block] = [Heading("Setting")]
    items = [
        f"source: run directory {path}",
        f"dataset: {data['dataset']}",
        f"model: {data['model']}",
        f"seed: {data['seed']}",
        f"device: {data['device']}",
        "requests: " + "; ".join(unique([request_text(run) for run in runs])),
        "methods: " + ", ".join(unique([str(run["method"]) for run in runs])),
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
        blocks.append(CodeBlock(read_text_file(config), "yaml"))
    else:
        blocks.append(Paragraph(f"No command and no {CONFIG_FILE} recorded in this directory."))
    for checkpoint in checkpoints:
        if checkpoint.train_config is not None and checkpoint.method == "original":
            blocks.append(Paragraph(f"Training recipe of {checkpoint.path} (from its metadata):"))
            blocks.append(
                CodeBlock(yaml.safe_dump(checkpoint.train_config, sort_keys=False), "yaml")
            )
    blocks += versions_blocks([str(data["conun_version"])], checkpoints)

    blocks.append(Heading("Results"))
    blocks += blocks_from_markdown(results_without_audit(data))
    blocks.append(Paragraph(RESULTS_LEGEND))
    missing = [name for name in REFERENCES if name not in {run["method"] for run in runs}]
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
        table = audit_blocks({**data, "runs": group})
        if table:
            audited += ([Heading(title, level=3)] if len(groups) > 1 else []) + table
    blocks += audited or [
        Paragraph(
            "No privacy audit in these results (add one with conun unlearn --audit, or conun "
            "audit)."
        )
    ]

    if figures:
        blocks += figure_blocks([data])
    title = f"conun report: {data['dataset']} / {data['model']}, seed {data['seed']}"
    return Report(title=title, blocks=blocks)


__all__ = ["run_report"]
