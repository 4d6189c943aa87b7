"""``conun train``: train an original model."""

from __future__ import annotations

from pathlib import Path

import click

from conun.cli import summary
from conun.cli.common import (
    config_options,
    handle_errors,
    join_processes,
    output_directory,
    output_options,
    resume_options,
)
from conun.config import build_train_config, read_yaml
from conun.workflows.outputs import describe
from conun.workflows.training import train_original


@click.command(short_help=summary("train"))
@click.option("--dataset", help="Registered dataset (default: digits).")
@click.option(
    "--model",
    help="Registered model (default: small_cnn), or timm:<name>, torchvision:<name>, "
    "hf:<directory>; constructor arguments with --set model_args.<key>=<value>.",
)
@click.option(
    "--init",
    type=click.Path(dir_okay=False, exists=True),
    help="Start from these weights: a safetensors state dict (timm, torchvision, Hugging Face "
    "or conun keys).",
)
@click.option("--epochs", type=int, help="Training epochs.")
@click.option("--seed", type=int, help="Seed of initialisation, batch order and validation split.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where the dataset's files are.")
@click.option("--out", type=click.Path(file_okay=False), help="Output directory.")
@resume_options
@config_options
@output_options()
@handle_errors
def train(
    dataset: str | None,
    model: str | None,
    init: str | None,
    epochs: int | None,
    seed: int | None,
    data_dir: str | None,
    out: str | None,
    save_every: int,
    resume_dir: str | None,
    config_file: str | None,
    overrides: tuple[str, ...],
    quiet: bool,
    force: bool,
) -> None:
    """Train an original model: writes OUT/checkpoint.safetensors, config.yaml, results.json."""
    out = output_directory(out, resume_dir)
    user = read_yaml(config_file) if config_file else {}
    flags = {
        key: value
        for key, value in {
            "dataset": dataset,
            "model": model,
            # Absolute: the retrain reference of a later `conun unlearn` starts from it too.
            "init": None if init is None else str(Path(init).resolve()),
            "epochs": epochs,
            "seed": seed,
            "data_dir": data_dir,
        }.items()
        if value is not None
    }
    chosen_dataset = str(flags.get("dataset") or user.get("dataset") or "digits")
    config = build_train_config(chosen_dataset, [user, flags], overrides)
    main_process = join_processes(config.device)
    trained = train_original(
        config,
        out,
        quiet=quiet or not main_process,
        force=force,
        save_every=save_every,
        resume=resume_dir is not None,
    )
    if main_process:
        click.echo(describe(trained.results))
        click.echo(f"wrote {Path(out) / 'checkpoint.safetensors'}")
