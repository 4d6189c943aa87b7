"""``conun demo``: the whole story on one small dataset in about a minute."""

from __future__ import annotations

from pathlib import Path

import click

from conun.cli import summary
from conun.cli.common import handle_errors, output_options
from conun.workflows.demo import run_demo
from conun.workflows.outputs import describe


@click.command(short_help=summary("demo"))
@click.option("--dataset", default="digits", show_default=True, help="Registered dataset.")
@click.option("--forget-class", default=5, show_default=True, help="Class for the class request.")
@click.option(
    "--forget-fraction", default=0.05, show_default=True, help="Fraction for the sample request."
)
@click.option("--seed", default=0, show_default=True, help="Seed of everything.")
@click.option(
    "--out",
    default="runs/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output directory.",
)
@click.option("--force", is_flag=True, help="Overwrite an earlier demo in --out.")
@output_options()
@handle_errors
def demo(
    dataset: str,
    forget_class: int,
    forget_fraction: float,
    seed: int,
    out: str,
    quiet: bool,
    force: bool,
) -> None:
    """Train, retrain and contrastively unlearn a class and 5% of samples; print the table."""
    results = run_demo(
        out,
        dataset=dataset,
        forget_class=forget_class,
        forget_fraction=forget_fraction,
        seed=seed,
        quiet=quiet,
        force=force,
    )
    click.echo(describe(results))
    click.echo(f"wrote {Path(out) / 'results.json'}")
