"""``conun evaluate``: evaluate a checkpoint on every split."""

from __future__ import annotations

import click

from conun.cli import summary
from conun.cli.common import (
    forget_options,
    forget_spec,
    handle_errors,
    join_processes,
    output_options,
)
from conun.workflows.evaluation import evaluate_checkpoint
from conun.workflows.outputs import describe


@click.command(short_help=summary("evaluate"))
@click.option(
    "--checkpoint", required=True, type=click.Path(), help="Checkpoint file or run directory."
)
@forget_options
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of a random forget draw."
)
@click.option("--audit", is_flag=True, help="Add the membership-inference audit.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--force", is_flag=True, help="Overwrite an earlier results.json in --out.")
@output_options(bars=False)
@handle_errors
def evaluate(
    checkpoint: str,
    forget_classes: tuple[int, ...],
    forget_samples: int | None,
    forget_fraction: float | None,
    forget_ids: str | None,
    seed: int,
    audit: bool,
    out: str,
    force: bool,
) -> None:
    """Evaluate a checkpoint on every split (of the forget request given, or its own)."""
    spec = forget_spec(forget_classes, forget_samples, forget_fraction, forget_ids)
    main_process = join_processes("cpu")  # evaluation runs on the CPU
    results = evaluate_checkpoint(checkpoint, spec, out, seed=seed, audit=audit, force=force)
    if main_process:
        click.echo(describe(results))
