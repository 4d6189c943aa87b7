"""``conun bench``: run a bench grid and write its tables."""

from __future__ import annotations

import click

from conun.bench import BenchFailedError, parse_seeds, run_bench
from conun.cli import summary
from conun.cli.common import handle_errors, output_options


@click.command(short_help=summary("bench"))
@click.argument("preset")
@click.option("--seeds", help="Seeds replacing the preset's, comma-separated (e.g. 0,1,2).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Output directory (default: runs/bench/PRESET); rerun with it to resume.",
)
@output_options()
@handle_errors
def bench(preset: str, seeds: str | None, out: str | None, quiet: bool) -> None:
    """Run a bench grid (seeds x requests x methods) and write its tables.

    PRESET is a shipped preset (smoke, fashion-mnist, paper-cifar10, paper-svhn; see
    conun/configs/bench/) or a YAML file. Finished cells in --out are skipped, so an interrupted
    run resumes; OUT/table.md, table.csv and table.tex hold mean ± std over seeds.
    """
    chosen = parse_seeds(seeds) if seeds is not None else None
    try:
        report = run_bench(preset, out=out, seeds=chosen, quiet=quiet)
    except BenchFailedError as error:
        # Exit status 1 (not 2): the input was fine, some cells failed; the rest is written.
        click.echo(error.report.markdown)
        raise click.ClickException(str(error)) from None
    click.echo(report.markdown)
    click.echo(report.summary())
    click.echo(f"wrote {', '.join(str(path) for path in report.tables.values())}")
