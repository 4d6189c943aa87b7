"""The ``conun`` command line: parse, build a validated config, call one library function.

    conun train    --dataset D --model M [--epochs E] [--seed S] --out DIR
    conun unlearn  --checkpoint CKPT --method NAME (--forget-class C | --forget-samples N |
                   --forget-fraction F | --forget-ids FILE) [--with-reference] --out DIR
    conun evaluate --checkpoint CKPT [forget options] --out DIR
    conun audit    --checkpoint CKPT [forget options] [--reference RETRAIN_CKPT] --out DIR
    conun demo     [--dataset digits] [--out DIR]
    conun bench    PRESET [--seeds 0,1,2] [--out DIR]
    conun report   RUN_OR_BENCH_DIR [--out STEM]
    conun ledger   init | request | apply | status | verify LEDGER ...

Every command that trains or unlearns takes ``--config FILE.yaml`` and repeated
``--set key.sub=value`` overrides; every command takes ``--quiet`` and ``-v/--verbose``.

Each command lives in its own module (``conun.cli.train`` ...), imported only when that command
runs or its own ``--help`` is asked: they pull in torch and the whole library, which takes
seconds, while ``conun --help`` needs nothing but the one-line summaries below.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True)
class LazyCommand:
    """Where a subcommand is defined, and its one-line summary for the group's help."""

    module: str
    summary: str


COMMANDS: Mapping[str, LazyCommand] = {
    "train": LazyCommand("conun.cli.train", "Train an original model."),
    "unlearn": LazyCommand("conun.cli.unlearn", "Unlearn a forget request from a checkpoint."),
    "evaluate": LazyCommand("conun.cli.evaluate", "Evaluate a checkpoint on every split."),
    "audit": LazyCommand(
        "conun.cli.audit", "Privacy audit of a checkpoint: membership attacks, distances."
    ),
    "demo": LazyCommand(
        "conun.cli.demo", "Train, retrain and unlearn on digits in a minute; print the table."
    ),
    "bench": LazyCommand(
        "conun.cli.bench", "Run a bench grid (seeds x requests x methods); write its tables."
    ),
    "report": LazyCommand(
        "conun.cli.report", "Write an HTML and Markdown report of a run or bench directory."
    ),
    "ledger": LazyCommand("conun.cli.ledger", "Record deletion requests, apply them, certify."),
}


def summary(name: str) -> str:
    """The one-line help of command ``name``; its module passes it to ``click.command`` as
    ``short_help``, so that the group's help reads the same before and after loading it."""
    return COMMANDS[name].summary


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use (click's LazyGroup pattern).

    The group's own help lists the commands from :data:`COMMANDS` without importing them.
    """

    def __init__(self, *args: Any, lazy_commands: Mapping[str, LazyCommand], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.lazy_commands:
            return super().get_command(ctx, cmd_name)
        module_name = self.lazy_commands[cmd_name].module
        # importlib, not an import statement: loading the command's module is the point.
        command = getattr(importlib.import_module(module_name), cmd_name, None)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{cmd_name} is not a click command")
        self.add_command(command, cmd_name)  # loaded once
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            loaded = self.commands.get(name)
            if loaded is not None:
                if loaded.hidden:
                    continue
                rows.append((name, loaded.get_short_help_str(limit=formatter.width)))
            else:
                rows.append((name, self.lazy_commands[name].summary))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="conun")
def main() -> None:
    """conun: contrastive unlearning for PyTorch classifiers.

    Progress bars show on a terminal; -v adds the per-epoch lines, --quiet leaves warnings only.
    """


TRACEBACK_ENV = "CONUN_TRACEBACK"
"""Set to 1 to let an internal error end in its Python traceback (for developers)."""


def entry() -> None:
    """The ``conun`` executable and ``python -m conun``: :func:`main`, and for an unexpected
    internal error (a bug, never a user's mistake: those are one-line errors) one line saying
    so and naming the file that holds the full traceback, exit status 1."""
    try:
        main()
    except Exception as error:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        handle, name = tempfile.mkstemp(prefix="conun-error-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as report:
            report.write(f"conun {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
        click.echo(
            f"Error: internal error ({type(error).__name__}: {str(error)[:200]}). This is a bug "
            f"in conun, not in your input; the full traceback is in {name} (set "
            f"{TRACEBACK_ENV}=1 to print it)",
            err=True,
        )
        sys.exit(1)


__all__ = ["COMMANDS", "TRACEBACK_ENV", "LazyCommand", "LazyGroup", "entry", "main", "summary"]
