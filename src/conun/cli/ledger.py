"""``conun ledger``: record deletion requests, apply them in sequence, certify and verify.

conun ledger init    LEDGER --checkpoint RUN_OR_FILE
conun ledger request LEDGER (--forget-class C | --forget-ids FILE) [--reference TEXT]
conun ledger apply   LEDGER [--method contrastive] [--audit] [--config FILE] [--set K=V]
conun ledger status  LEDGER
conun ledger verify  LEDGER [--version N]
"""

from __future__ import annotations

import json

import click

from conun.cli import summary
from conun.cli.common import handle_errors, output_options
from conun.config import read_yaml
from conun.workflows.ledger import DEFAULT_TOLERANCE, Ledger

LEDGER_ARGUMENT = click.argument("ledger_path", metavar="LEDGER", type=click.Path(file_okay=False))


@click.group(short_help=summary("ledger"))
def ledger() -> None:
    """Deletion requests as a lifecycle: a ledger records requests as they arrive, applies them
    in sequence (each version unlearned from the previous one) and writes a certificate per
    version that `verify` checks later."""


@ledger.command("init")
@LEDGER_ARGUMENT
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(),
    help="The original model: a checkpoint file or run directory (copied as version 0).",
)
@output_options(bars=False)
@handle_errors
def init(ledger_path: str, checkpoint: str) -> None:
    """Create a ledger whose version 0 is CHECKPOINT."""
    created = Ledger.init(ledger_path, checkpoint=checkpoint)
    status = created.status()
    click.echo(
        f"ledger {ledger_path}: version 0 = {status.meta['model']} on {status.meta['dataset']} "
        f"(sha256 {status.versions[0].checkpoint_sha256})"
    )


@ledger.command("request")
@LEDGER_ARGUMENT
@click.option(
    "--forget-class",
    "forget_classes",
    type=int,
    multiple=True,
    help="Forget every training sample of this class (repeatable).",
)
@click.option(
    "--forget-ids",
    type=click.Path(dir_okay=False),
    help="File of training-set indices to forget: one per line, or a JSON list.",
)
@click.option("--reference", help="Free text kept with the request, e.g. a ticket number.")
@output_options(bars=False)
@handle_errors
def request(
    ledger_path: str,
    forget_classes: tuple[int, ...],
    forget_ids: str | None,
    reference: str | None,
) -> None:
    """Record a pending deletion request; print its id."""
    number = Ledger(ledger_path).request(
        classes=forget_classes, ids_file=forget_ids, reference=reference
    )
    click.echo(number)


@ledger.command("apply")
@LEDGER_ARGUMENT
@click.option("--method", help="Registered unlearning method (default: contrastive).")
@click.option("--audit", is_flag=True, help="Add the membership attacks to the certificates.")
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="YAML unlearning config."
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key (repeatable), e.g. --set optimizer.lr=0.01.",
)
@output_options()
@handle_errors
def apply(
    ledger_path: str,
    method: str | None,
    audit: bool,
    config_file: str | None,
    overrides: tuple[str, ...],
    quiet: bool,
) -> None:
    """Unlearn every pending request from the latest version; write the next version(s)."""
    opened = Ledger(ledger_path)
    layers = [(f"--config {config_file}", read_yaml(config_file))] if config_file else []
    written = opened.apply(method, layers=layers, overrides=overrides, audit=audit, quiet=quiet)
    if not written:
        click.echo("no pending request: nothing to apply")
        return
    for version in written:
        metrics = version.results.get("metrics", {})
        certificate = opened.path / str(version.certificate)
        passed = json.loads(certificate.read_text(encoding="utf-8"))["passed"]
        click.echo(
            f"version {version.number} (from {version.parent}) honours requests "
            f"{', '.join(map(str, version.requests))}: {version.method}, "
            f"{version.seconds:.2f} s, test accuracy {100 * metrics.get('test_acc', 0.0):.2f}%, "
            f"checks {'passed' if passed else 'FAILED'}; "
            f"certificate {certificate}"
        )


@ledger.command("status")
@LEDGER_ARGUMENT
@output_options(bars=False)
@handle_errors
def status(ledger_path: str) -> None:
    """Print the requests and the versions as tables."""
    click.echo(Ledger(ledger_path).status().format())


@ledger.command("verify")
@LEDGER_ARGUMENT
@click.option("--version", "version", type=int, help="Verify this version only.")
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=DEFAULT_TOLERANCE,
    show_default=True,
    help="Largest accepted difference of a recomputed accuracy.",
)
@click.option(
    "--hashes-only", is_flag=True, help="Check the hashes only; do not load models and data."
)
@output_options(bars=False)
@handle_errors
def verify(ledger_path: str, version: int | None, tolerance: float, hashes_only: bool) -> None:
    """Recompute the hashes and the certificates' checks; exit 1 naming what does not match."""
    report = Ledger(ledger_path).verify(version, tolerance=tolerance, recompute=not hashes_only)
    for line in report.checked:
        click.echo(f"ok: {line}")
    for line in report.problems:
        click.echo(f"FAILED: {line}", err=True)
    if not report.ok:
        raise click.ClickException(
            f"{ledger_path} does not verify: {len(report.problems)} problem(s)"
        )
    click.echo(f"{ledger_path} verifies: {len(report.checked)} checks passed")
