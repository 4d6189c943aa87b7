"""``conun report``: an HTML and Markdown report of a run or bench directory."""

from __future__ import annotations

import click

from conun.cli import summary
from conun.cli.common import handle_errors, output_options
from conun.report import write_report


@click.command(short_help=summary("report"))
@click.argument("directory", type=click.Path())
@click.option(
    "--out",
    type=click.Path(),
    help="Output path without extension: writes OUT.html, OUT.md and OUT-<figure>.png "
    "(default: DIRECTORY/report).",
)
@output_options(bars=False)
@handle_errors
def report(directory: str, out: str | None) -> None:
    """Write a report of a run or bench directory: one self-contained HTML page and Markdown.

    DIRECTORY is a run directory (results.json; conun train, unlearn, evaluate, audit, demo) or
    a bench directory (bench.yaml and cells/; conun bench). The report holds the setting, the
    recorded command and config, versions, the results table, the privacy audit and the figures.
    """
    paths = write_report(directory, out)
    click.echo(f"wrote {paths.html} and {paths.markdown} (+{len(paths.images)} figures)")
