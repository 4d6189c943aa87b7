"""The ``conun`` command line: parse, build a validated config, call one library function.

    conun train    --dataset D --model M [--epochs E] [--seed S] --out DIR
    conun unlearn  --checkpoint CKPT --method NAME (--forget-class C | --forget-samples N |
                   --forget-fraction F | --forget-ids FILE) [--with-reference] --out DIR
    conun evaluate --checkpoint CKPT [forget options] --out DIR
    conun audit    --checkpoint CKPT [forget options] [--reference RETRAIN_CKPT] --out DIR
    conun demo     [--dataset digits] [--out DIR]
    conun bench    PRESET [--seeds 0,1,2] [--out DIR]
    conun report   RUN_OR_BENCH_DIR [--out STEM]

Every command takes ``--config FILE.yaml`` and repeated ``--set key.sub=value`` overrides.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from conun.config import TrainConfig, build_config, build_unlearn_config, preset_path, read_yaml
from conun.engine.resume import DEFAULT_SAVE_EVERY

F = TypeVar("F", bound=Callable[..., Any])


class InputError(click.ClickException):
    """Bad input found before any work: printed as ``Error: ...``, exit status 2."""

    exit_code = 2


def _handle_errors(command: F) -> F:
    """Turn the library's validation errors into one clear line and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (ValueError, FileNotFoundError, FileExistsError) as error:
            raise InputError(str(error)) from None
        except RuntimeError as error:
            from conun.engine.training import NonFiniteLossError

            if isinstance(error, NonFiniteLossError):  # one line, exit status 1
                raise click.ClickException(
                    f"{error}. Nothing was written but the last resumable state, if any."
                ) from None
            raise

    return wrapper  # type: ignore[return-value]


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _join_processes(device: str) -> bool:
    """Under ``torchrun``, join the process group (gloo on CPU, NCCL on GPU); only rank 0
    logs at INFO level and prints. Returns whether this process is rank 0 (True alone)."""
    import atexit

    import torch.distributed as dist

    from conun.distributed.group import setup_from_environment

    ranks = setup_from_environment(device)
    if ranks.is_distributed:

        def leave() -> None:
            if dist.is_initialized():
                dist.destroy_process_group()

        atexit.register(leave)
    if not ranks.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    return ranks.is_main


def _common_options(command: F) -> F:
    for option in reversed(
        [
            click.option(
                "--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file."
            ),
            click.option(
                "--set",
                "overrides",
                multiple=True,
                metavar="KEY=VALUE",
                help="Override a config key (repeatable), e.g. --set optimizer.lr=0.01.",
            ),
            click.option("--quiet", is_flag=True, help="No progress bars, warnings only."),
            click.option("--force", is_flag=True, help="Overwrite an earlier run in --out."),
        ]
    ):
        command = option(command)
    return command


def _resume_options(command: F) -> F:
    for option in reversed(
        [
            click.option(
                "--save-every",
                type=click.IntRange(min=1),
                default=DEFAULT_SAVE_EVERY,
                show_default=True,
                metavar="STEPS",
                help="Write OUT/resume.safetensors every this many optimizer steps (removed "
                "when the run finishes).",
            ),
            click.option(
                "--resume",
                "resume_dir",
                type=click.Path(file_okay=False),
                help="Continue the interrupted run in this directory (give the same options "
                "as the first time; --out defaults to it).",
            ),
        ]
    ):
        command = option(command)
    return command


def _output_directory(out: str | None, resume_dir: str | None) -> str:
    """--out, or the --resume directory; both must agree when both are given."""
    if resume_dir is None:
        if out is None:
            raise InputError("give --out DIR (or --resume DIR to continue an interrupted run)")
        return out
    if out is not None and Path(out).resolve() != Path(resume_dir).resolve():
        raise InputError(f"--out {out} and --resume {resume_dir} name different directories")
    return resume_dir


def _forget_options(command: F) -> F:
    for option in reversed(
        [
            click.option(
                "--forget-class",
                "forget_classes",
                type=int,
                multiple=True,
                help="Forget every training sample of this class (repeatable).",
            ),
            click.option(
                "--forget-samples",
                type=int,
                help="Forget this many random training samples (seeded).",
            ),
            click.option(
                "--forget-fraction",
                type=float,
                help="Forget this fraction of the training samples (seeded).",
            ),
            click.option(
                "--forget-ids",
                type=click.Path(dir_okay=False),
                help="File of training-set indices to forget: one per line, or a JSON list.",
            ),
        ]
    ):
        command = option(command)
    return command


def _forget_spec(
    forget_classes: tuple[int, ...],
    forget_samples: int | None,
    forget_fraction: float | None,
    forget_ids: str | None,
    *,
    required: bool,
) -> Any:
    from conun.workflows.runs import ForgetSpec

    if not required and not (forget_classes or forget_samples or forget_fraction or forget_ids):
        return None
    return ForgetSpec(
        classes=tuple(forget_classes),
        num_samples=forget_samples,
        fraction=forget_fraction,
        ids_file=forget_ids,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="conun")
def main() -> None:
    """conun: contrastive unlearning for PyTorch classifiers."""


@main.command()
@click.option("--dataset", help="Registered dataset (default: digits).")
@click.option("--model", help="Registered model (default: small_cnn).")
@click.option("--epochs", type=int, help="Training epochs.")
@click.option("--seed", type=int, help="Seed of initialisation, batch order and validation split.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where the dataset's files are.")
@click.option("--out", type=click.Path(file_okay=False), help="Output directory.")
@_resume_options
@_common_options
@_handle_errors
def train(
    dataset: str | None,
    model: str | None,
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
    from conun.workflows.runs import describe, train_original

    out = _output_directory(out, resume_dir)
    _setup_logging(quiet)
    user = read_yaml(config_file) if config_file else {}
    flags = {
        key: value
        for key, value in {
            "dataset": dataset,
            "model": model,
            "epochs": epochs,
            "seed": seed,
            "data_dir": data_dir,
        }.items()
        if value is not None
    }
    chosen_dataset = flags.get("dataset") or user.get("dataset") or "digits"
    preset = preset_path("train", str(chosen_dataset))
    config = build_config(
        TrainConfig, [read_yaml(preset) if preset else None, user, flags], overrides
    )
    main_process = _join_processes(config.device)
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


@main.command()
@click.option(
    "--checkpoint", required=True, type=click.Path(), help="Checkpoint file or run directory."
)
@click.option("--method", help="Registered unlearning method (default: contrastive).")
@_forget_options
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
@_resume_options
@_common_options
@_handle_errors
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
    save_every: int,
    resume_dir: str | None,
    config_file: str | None,
    overrides: tuple[str, ...],
    quiet: bool,
    force: bool,
) -> None:
    """Unlearn a forget request from a checkpoint."""
    from conun.engine.checkpoint import read_checkpoint_meta
    from conun.workflows.runs import describe, unlearn_checkpoint

    out = _output_directory(out, resume_dir)
    _setup_logging(quiet)
    spec = _forget_spec(forget_classes, forget_samples, forget_fraction, forget_ids, required=True)
    flags = {k: v for k, v in {"method": method, "seed": seed}.items() if v is not None}
    user = read_yaml(config_file) if config_file else {}
    chosen = str(flags.get("method") or user.get("method") or "contrastive")
    dataset = read_checkpoint_meta(checkpoint).dataset
    config = build_unlearn_config(chosen, spec.scenario, [user, flags], overrides, dataset=dataset)
    main_process = _join_processes(config.device)
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


@main.command()
@click.option(
    "--checkpoint", required=True, type=click.Path(), help="Checkpoint file or run directory."
)
@_forget_options
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of a random forget draw."
)
@click.option("--audit", is_flag=True, help="Add the membership-inference audit.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--quiet", is_flag=True, help="Warnings only.")
@click.option("--force", is_flag=True, help="Overwrite an earlier results.json in --out.")
@_handle_errors
def evaluate(
    checkpoint: str,
    forget_classes: tuple[int, ...],
    forget_samples: int | None,
    forget_fraction: float | None,
    forget_ids: str | None,
    seed: int,
    audit: bool,
    out: str,
    quiet: bool,
    force: bool,
) -> None:
    """Evaluate a checkpoint on every split (of the forget request given, or its own)."""
    from conun.workflows.runs import describe, evaluate_checkpoint

    _setup_logging(quiet)
    spec = _forget_spec(forget_classes, forget_samples, forget_fraction, forget_ids, required=False)
    main_process = _join_processes("cpu")  # evaluation runs on the CPU
    results = evaluate_checkpoint(checkpoint, spec, out, seed=seed, audit=audit, force=force)
    if main_process:
        click.echo(describe(results))


@main.command()
@click.option(
    "--checkpoint", required=True, type=click.Path(), help="Checkpoint file or run directory."
)
@_forget_options
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
@click.option("--quiet", is_flag=True, help="Warnings only.")
@click.option("--force", is_flag=True, help="Overwrite an earlier results.json in --out.")
@_handle_errors
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
    quiet: bool,
    force: bool,
) -> None:
    """Privacy audit of a checkpoint: membership attacks, and distances to --reference.

    Every number is printed with its meaning and good direction; "closer to retrain" means
    compare with the --reference column.
    """
    from conun.workflows.runs import audit_checkpoint, describe

    _setup_logging(quiet)
    spec = _forget_spec(forget_classes, forget_samples, forget_fraction, forget_ids, required=False)
    results = audit_checkpoint(
        checkpoint, spec, out, reference=reference, seed=seed, attack=attack, force=force
    )
    click.echo(describe(results))


@main.command()
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
@click.option("--quiet", is_flag=True, help="No progress bars, warnings only.")
@click.option("--force", is_flag=True, help="Overwrite an earlier demo in --out.")
@_handle_errors
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
    from conun.workflows.demo import run_demo
    from conun.workflows.runs import describe

    _setup_logging(quiet)
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


@main.command()
@click.argument("preset")
@click.option("--seeds", help="Seeds replacing the preset's, comma-separated (e.g. 0,1,2).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Output directory (default: runs/bench/PRESET); rerun with it to resume.",
)
@click.option("--quiet", is_flag=True, help="No progress bars, warnings only.")
@_handle_errors
def bench(preset: str, seeds: str | None, out: str | None, quiet: bool) -> None:
    """Run a bench grid (seeds x requests x methods) and write its tables.

    PRESET is a shipped preset (smoke, fashion-mnist, paper-cifar10, paper-svhn; see
    conun/configs/bench/) or a YAML file. Finished cells in --out are skipped, so an interrupted
    run resumes; OUT/table.md, table.csv and table.tex hold mean ± std over seeds.
    """
    from conun.bench import BenchFailedError, parse_seeds, run_bench

    _setup_logging(quiet)
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


@main.command()
@click.argument("directory", type=click.Path())
@click.option(
    "--out",
    type=click.Path(),
    help="Output path without extension: writes OUT.html, OUT.md and OUT-<figure>.png "
    "(default: DIRECTORY/report).",
)
@click.option("--quiet", is_flag=True, help="Warnings only.")
@_handle_errors
def report(directory: str, out: str | None, quiet: bool) -> None:
    """Write a report of a run or bench directory: one self-contained HTML page and Markdown.

    DIRECTORY is a run directory (results.json; conun train, unlearn, evaluate, audit, demo) or
    a bench directory (bench.yaml and cells/; conun bench). The report holds the setting, the
    recorded command and config, versions, the results table, the privacy audit and the figures.
    """
    from conun.report import write_report

    _setup_logging(quiet)
    paths = write_report(directory, out)
    click.echo(f"wrote {paths.html} and {paths.markdown} (+{len(paths.images)} figures)")


if __name__ == "__main__":
    main()
