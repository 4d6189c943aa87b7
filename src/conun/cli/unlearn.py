"""``conun unlearn``: unlearn a forget request from a checkpoint."""

from __future__ import annotations

import click

from conun.cli import summary
from conun.cli.common import (
    config_options,
    forget_options,
    handle_errors,
    join_processes,
    output_directory,
    output_options,
    required_forget_spec,
    resume_options,
)
from conun.config import read_yaml
from conun.engine.checkpoint import read_checkpoint_meta
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.outputs import describe
from conun.workflows.unlearning import unlearn_checkpoint


@click.command(short_help=summary("unlearn"))
@click.option(
    "--checkpoint", required=True, type=click.Path(), help="Checkpoint file or run directory."
)
@click.option("--method", help="Registered unlearning method (default: contrastive).")
@forget_options
@click.option("--seed", type=int, help="Seed of the random draws of the run.")
@click.option(
    "--with-reference",
    is_flag=True,
    help="Also run original and retrain into the same results.json.",
)
@click.option(
    "--audit",
    is_flag=True,
    help="Add the privacy audit (membership attacks; distances to retrain with --with-reference).",
)
@click.option("--out", type=click.Path(file_okay=False), help="Output directory.")
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the resolved config, each value with where it came from, and exit (no data is "
    "loaded, nothing is written, --out is not needed).",
)
@resume_options
@config_options
@output_options()
@handle_errors
def unlearn(
    checkpoint: str,
    method: str | None,
    forget_classes: tuple[int, ...],
    forget_samples: int | None,
    forget_fraction: float | None,
    forget_ids: str | None,
    seed: int | None,
    with_reference: bool,
    audit: bool,
    out: str | None,
    print_config: bool,
    save_every: int,
    resume_dir: str | None,
    config_file: str | None,
    overrides: tuple[str, ...],
    quiet: bool,
    force: bool,
) -> None:
    """Unlearn a forget request from a checkpoint."""
    spec = required_forget_spec(forget_classes, forget_samples, forget_fraction, forget_ids)
    user = read_yaml(config_file) if config_file else {}
    chosen = str(method or user.get("method") or "contrastive")
    # The checkpoint's metadata names its dataset and model (whose config layers apply); no data
    # is read.
    meta = read_checkpoint_meta(checkpoint)
    # One resolution for printing and running: what --print-config shows is what runs.
    resolved = resolve_unlearn_config(
        chosen,
        spec.scenario,
        dataset=meta.dataset,
        model=meta.model,
        layers=[
            (f"--config {config_file}", user),
            ("--method", {"method": method} if method is not None else None),
            ("--seed", {"seed": seed} if seed is not None else None),
        ],
        overrides=overrides,
    )
    if print_config:
        click.echo(resolved.to_yaml_with_sources(), nl=False)
        return
    out = output_directory(out, resume_dir)
    config = resolved.config
    main_process = join_processes(config.device)
    results = unlearn_checkpoint(
        checkpoint,
        spec,
        config,
        out,
        with_reference=with_reference,
        audit=audit,
        quiet=quiet or not main_process,
        force=force,
        save_every=save_every,
        resume=resume_dir is not None,
    )
    if main_process:
        click.echo(describe(results))
