"""What the ``conun`` commands share: options, output settings and the error handling.

Output: by default a progress bar per phase (on a terminal) and the final table; ``-v`` adds the
INFO lines (per epoch, per run), ``-vv`` conun's DEBUG ones; ``--quiet`` leaves warnings only.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import torch.distributed as dist
from tqdm.contrib.logging import logging_redirect_tqdm

from conun.distributed.group import setup_from_environment
from conun.engine.resume import DEFAULT_SAVE_EVERY
from conun.engine.training import NonFiniteLossError
from conun.workflows.requests import ForgetSpec

F = TypeVar("F", bound=Callable[..., Any])

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class InputError(click.ClickException):
    """Bad input found before any work: printed as ``Error: ...``, exit status 2."""

    exit_code = 2


def handle_errors(command: F) -> F:
    """Turn the library's validation errors into one clear line and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (
            ValueError,
            FileNotFoundError,
            FileExistsError,
            PermissionError,
            IsADirectoryError,
            NotADirectoryError,
        ) as error:
            raise InputError(_one_line(str(error))) from None
        except NonFiniteLossError as error:  # one line, exit status 1
            raise click.ClickException(
                f"{error}. Nothing was written but the last resumable state, if any."
            ) from None

    return wrapper  # type: ignore[return-value]


def _one_line(message: str) -> str:
    """``message`` as printed: pydantic's trailing documentation links dropped (they point at
    pydantic, not at what the user can change)."""
    kept = [line for line in message.splitlines() if "https://errors.pydantic.dev" not in line]
    return "\n".join(kept) if kept else message


def setup_logging(verbose: int) -> None:
    """Log warnings only (``verbose`` 0), INFO lines too (1) or conun's DEBUG lines as well (2
    or more; other libraries stay at INFO, as their DEBUG output would bury conun's)."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S")
    if verbose >= 2:
        logging.getLogger("conun").setLevel(logging.DEBUG)


def _stderr_is_terminal() -> bool:
    # Bars redraw one line with carriage returns: on a terminal that is a bar, in a pipe or a
    # CI log it is one ever-growing line, so they show on a terminal only (as tqdm's disable=None).
    return sys.stderr.isatty()


def output_options(*, bars: bool = True) -> Callable[[F], F]:
    """Add ``--quiet`` and ``-v/--verbose`` to a command and set up its output.

    Args:
        bars: the command draws progress bars. It then receives ``quiet=True`` when none are
            to be drawn: ``--quiet``, or stderr is not a terminal. The log level is set here,
            before the command runs.
    """

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, quiet: bool, verbose: int, **kwargs: Any) -> Any:
            if quiet and verbose:
                raise InputError("give --quiet or --verbose, not both")
            setup_logging(verbose)
            if not bars:
                return command(*args, **kwargs)
            drawn = not quiet and _stderr_is_terminal()
            with _logs_above_bars(drawn and verbose > 0):
                return command(*args, quiet=not drawn, **kwargs)

        options = [
            click.option(
                "--quiet",
                is_flag=True,
                help="No progress bars, warnings only." if bars else "Warnings only.",
            ),
            click.option(
                "-v",
                "--verbose",
                count=True,
                help="Log each epoch and run (INFO); -vv adds conun's DEBUG lines.",
            ),
        ]
        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return decorated  # type: ignore[no-any-return]

    return decorate


@contextlib.contextmanager
def _logs_above_bars(redirect: bool) -> Iterator[None]:
    """Print log lines through tqdm while bars are drawn, so that a line never cuts a bar."""
    if not redirect:
        yield
        return
    with logging_redirect_tqdm():
        yield


def join_processes(device: str) -> bool:
    """Under ``torchrun``, join the process group (gloo on CPU, NCCL on GPU); only rank 0
    logs at INFO level and prints. Returns whether this process is rank 0 (True alone)."""
    ranks = setup_from_environment(device)
    if ranks.is_distributed:

        def leave() -> None:
            if dist.is_initialized():
                dist.destroy_process_group()

        atexit.register(leave)
    if not ranks.is_main:
        for name in ("", "conun"):  # the root, and conun's own level under -vv
            logging.getLogger(name).setLevel(logging.WARNING)
    return ranks.is_main


def config_options(command: F) -> F:
    """``--config FILE`` and repeated ``--set KEY=VALUE``; ``--force``."""
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
            click.option("--force", is_flag=True, help="Overwrite an earlier run in --out."),
        ]
    ):
        command = option(command)
    return command


def resume_options(command: F) -> F:
    """``--save-every STEPS`` and ``--resume DIR``."""
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


def output_directory(out: str | None, resume_dir: str | None) -> str:
    """--out, or the --resume directory; both must agree when both are given."""
    if resume_dir is None:
        if out is None:
            raise InputError("give --out DIR (or --resume DIR to continue an interrupted run)")
        return out
    if out is not None and Path(out).resolve() != Path(resume_dir).resolve():
        raise InputError(f"--out {out} and --resume {resume_dir} name different directories")
    return resume_dir


def forget_options(command: F) -> F:
    """The four ways of naming a forget request."""
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


def forget_spec(
    forget_classes: tuple[int, ...],
    forget_samples: int | None,
    forget_fraction: float | None,
    forget_ids: str | None,
) -> ForgetSpec | None:
    """The forget request of the options, or None where none was given.

    ``--forget-samples 0`` or ``--forget-fraction 0`` is a request (refused by the split as
    empty), never the absence of one."""
    given = (forget_samples, forget_fraction, forget_ids)
    if not forget_classes and all(value is None for value in given):
        return None
    return required_forget_spec(forget_classes, forget_samples, forget_fraction, forget_ids)


def required_forget_spec(
    forget_classes: tuple[int, ...],
    forget_samples: int | None,
    forget_fraction: float | None,
    forget_ids: str | None,
) -> ForgetSpec:
    """The forget request of the options; ForgetSpec says what is wrong when it is not one."""
    return ForgetSpec(
        classes=tuple(forget_classes),
        num_samples=forget_samples,
        fraction=forget_fraction,
        ids_file=forget_ids,
    )
