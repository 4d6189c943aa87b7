"""``conun bench``: run a bench grid and write its tables, or print where a grid stands."""

from __future__ import annotations

import click

from conun.bench import BenchFailedError, parse_seeds, run_bench
from conun.bench.executors import EXECUTORS
from conun.bench.status import format_status, grid_status
from conun.cli import summary
from conun.cli.common import InputError, handle_errors, output_options


@click.command(short_help=summary("bench"))
@click.argument("preset", required=False)
@click.option("--seeds", help="Seeds replacing the preset's, comma-separated (e.g. 0,1,2).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Output directory (default: runs/bench/PRESET); rerun with it to resume.",
)
@click.option(
    "--executor",
    type=click.Choice(list(EXECUTORS)),
    help="Where cells run: local (default; one at a time, in this process) or ray (Ray tasks; "
    "pip install 'conun[ray]').",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="ray: the most cells at once (default: as many as the cluster's resources allow).",
)
@click.option(
    "--cpus-per-cell",
    type=click.FloatRange(min=0, min_open=True),
    help="ray: CPUs each cell asks for (default 1).",
)
@click.option(
    "--gpus-per-cell",
    type=click.FloatRange(min=0),
    help="ray: GPUs each cell asks for (default 0; a CUDA preset needs > 0).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Torch threads per cell (default: local: torch's default; ray: one per CPU of a cell).",
)
@click.option(
    "--status",
    "status_dir",
    type=click.Path(file_okay=False),
    help="Print how far the grid in this bench directory is (from its files alone) and exit.",
)
@output_options()
@handle_errors
def bench(
    preset: str | None,
    seeds: str | None,
    out: str | None,
    executor: str | None,
    workers: int | None,
    cpus_per_cell: float | None,
    gpus_per_cell: float | None,
    threads: int | None,
    status_dir: str | None,
    quiet: bool,
) -> None:
    """Run a bench grid (seeds x requests x methods) and write its tables.

    PRESET is a shipped preset (smoke, fashion-mnist, paper-cifar10, paper-svhn; see
    conun/configs/bench/) or a YAML file. Finished cells in --out are skipped, so an interrupted
    run resumes; OUT/table.md, table.csv and table.tex hold mean ± std over seeds.

    `conun bench --status OUT` prints the cells finished, running, failed and pending in OUT.
    """
    if status_dir is not None:
        given = [
            name
            for name, value in (
                ("PRESET", preset),
                ("--seeds", seeds),
                ("--out", out),
                ("--executor", executor),
                ("--workers", workers),
                ("--cpus-per-cell", cpus_per_cell),
                ("--gpus-per-cell", gpus_per_cell),
                ("--threads", threads),
            )
            if value is not None
        ]
        if given:
            raise InputError(f"--status OUT reads a bench directory only; drop {', '.join(given)}")
        click.echo(format_status(grid_status(status_dir)))
        return
    if preset is None:
        raise InputError("missing PRESET (a shipped preset or a YAML file), or --status OUT")
    chosen = parse_seeds(seeds) if seeds is not None else None
    try:
        report = run_bench(
            preset,
            out=out,
            seeds=chosen,
            quiet=quiet,
            executor=executor or "local",
            workers=workers,
            cpus_per_cell=cpus_per_cell,
            gpus_per_cell=gpus_per_cell,
            threads=threads,
        )
    except BenchFailedError as error:
        # Exit status 1 (not 2): the input was fine, some cells failed; the rest is written.
        click.echo(error.report.markdown)
        raise click.ClickException(str(error)) from None
    click.echo(report.markdown)
    click.echo(report.summary())
    click.echo(
        f"{report.executor.describe()}; cells {report.seconds:.1f} s; driver peak RSS "
        f"{report.driver_peak_rss_mib:.0f} MiB"
    )
    click.echo(f"wrote {', '.join(str(path) for path in report.tables.values())}")
