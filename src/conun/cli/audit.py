"""``conun audit``: the privacy audit of a checkpoint."""

from __future__ import annotations

from typing import Literal

import click

from conun.cli import summary
from conun.cli.common import forget_options, forget_spec, handle_errors, output_options
from conun.workflows.evaluation import audit_checkpoint
from conun.workflows.outputs import describe


@click.command(short_help=summary("audit"))
@click.option(
    "--checkpoint", required=True, type=click.Path(), help="Checkpoint file or run directory."
)
@forget_options
@click.option(
    "--reference",
    type=click.Path(),
    help="The retrained model's checkpoint: adds distances to it and the summary scores.",
)
@click.option(
    "--attack",
    type=click.Choice(["logistic", "svc", "gradient_boosting"]),
    default="logistic",
    show_default=True,
    help="Classifier of the paper's membership attack.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of every draw of the audit."
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--force", is_flag=True, help="Overwrite an earlier results.json in --out.")
@output_options(bars=False)
@handle_errors
def audit(
    checkpoint: str,
    forget_classes: tuple[int, ...],
    forget_samples: int | None,
    forget_fraction: float | None,
    forget_ids: str | None,
    reference: str | None,
    attack: Literal["logistic", "svc", "gradient_boosting"],
    seed: int,
    out: str,
    force: bool,
) -> None:
    """Privacy audit of a checkpoint: membership attacks, and distances to --reference.

    Every number is printed with its meaning and good direction; "closer to retrain" means
    compare with the --reference column.
    """
    spec = forget_spec(forget_classes, forget_samples, forget_fraction, forget_ids)
    results = audit_checkpoint(
        checkpoint, spec, out, reference=reference, seed=seed, attack=attack, force=force
    )
    click.echo(describe(results))
