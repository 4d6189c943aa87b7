"""Run directories: what a workflow writes where, and when it may write there at all.

A run directory (``conun train``, ``unlearn``, ``evaluate``, ``audit``, ``demo``) holds:

- ``checkpoint.safetensors`` (:data:`conun.engine.checkpoint.CHECKPOINT_FILE`): the model;
- ``results.json`` (:data:`conun.io.RESULTS_FILE`) and ``results.md``: the runs and their table;
- ``config.yaml`` (:data:`CONFIG_FILE`): the resolved config the run used;
- ``split.json`` (:data:`SPLIT_FILE`): the forget request an unlearned checkpoint answers;
- ``resume.safetensors`` (:data:`conun.engine.resume.RESUME_FILE`): the state of an interrupted
  run, removed when it finishes.

A bench directory (``conun bench``) holds ``bench.yaml`` (:data:`BENCH_FILE`), one run directory
per trained original under ``originals/`` (:data:`ORIGINALS_DIR`) and one per cell under
``cells/<seed>/<request>/<method>/`` (:data:`CELLS_DIR`); a failed cell's directory holds
``error.txt`` (:data:`ERROR_FILE`).

Each file name is defined once, in the lowest layer that writes or reads it; the names only the
workflows (the commands, the bench and the report) use are defined here. Workflows check the
directory before any work and write their files only at the end, each atomically, so that a
failed run leaves an existing directory as it was.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from conun.distributed.group import context
from conun.engine.checkpoint import CHECKPOINT_FILE
from conun.engine.resume import (
    DEFAULT_SAVE_EVERY,
    RESUME_FILE,
    Resumable,
    check_invocation,
    read_state,
)
from conun.evaluation.results import Results, format_table
from conun.io import (
    RESULTS_FILE,
    check_output_path,
    remove_stale_temporaries,
    sha256_json,
)

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
"""The resolved config of the run (training or unlearning), as YAML."""

SPLIT_FILE = "split.json"
"""The forget/retain/validation split an unlearned checkpoint was unlearned for."""

BENCH_FILE = "bench.yaml"
"""The preset, seeds and originals of a bench's last invocation, at the top of its directory."""

CELLS_DIR = "cells"
"""A bench's cells: ``<seed>/<request>/<method>/``, one run directory each."""

ORIGINALS_DIR = "originals"
"""A bench's trained originals: one run directory per seed and training recipe."""

ERROR_FILE = "error.txt"
"""Written into a bench cell's directory when it fails; removed when it later succeeds."""


class OutputExistsError(FileExistsError):
    """The output directory already holds results that a run would overwrite."""


def prepare_output_dir(out_dir: str | Path, *, force: bool) -> Path:
    """Check that a run may write into ``out_dir`` (it need not exist yet).

    Raises:
        OutputExistsError: ``out_dir`` is a file, holds an interrupted run, or holds an earlier
            run's results or checkpoint, and ``force`` is not set.
    """
    target = Path(out_dir)
    if os.path.lexists(target) and not target.is_dir():
        raise OutputExistsError(f"--out {target} exists and is not a directory")
    check_output_path(target)  # names that fit, nothing on the way a file, a writable parent
    if (target / RESUME_FILE).exists() and not force:
        raise OutputExistsError(
            f"{target} holds an interrupted run ({RESUME_FILE}): continue it with --resume "
            f"{target}, or pass --force to start afresh"
        )
    existing = [name for name in (RESULTS_FILE, CHECKPOINT_FILE) if (target / name).exists()]
    if existing and not force:
        raise OutputExistsError(
            f"{target} already holds {', '.join(existing)}; choose another --out or pass --force "
            "to overwrite"
        )
    _clean(target)
    return target


def _clean(target: Path) -> None:
    """Remove the temporaries a killed run left in ``target`` (rank 0: the one writer)."""
    if context().is_main:
        for stale in remove_stale_temporaries(target):
            logger.info("removed %s, left by an interrupted write", stale)


def resumable_run(
    out_dir: str | Path | None,
    kind: str,
    invocation: dict[str, Any],
    *,
    save_every: int | None,
    resume: bool,
    force: bool,
) -> Resumable | None:
    """Check ``out_dir`` and build the run's :class:`Resumable`, before any work is done.

    Args:
        out_dir: the run directory; None for a run that writes nothing.
        kind: ``"train"`` or ``"unlearn"``: the loop that saves the state.
        invocation: what the run is asked to do (JSON); a resumed run must match it.
        save_every: save a state every this many optimizer steps; None: no saving (a resumed
            run then saves every :data:`conun.engine.resume.DEFAULT_SAVE_EVERY`).
        resume: continue the interrupted run in ``out_dir``.
        force: start afresh over an earlier run in ``out_dir``.

    Returns:
        The run's :class:`Resumable`, or None when the run saves no state.

    Raises:
        ValueError: ``resume`` or ``save_every`` without an output directory, or ``resume``
            together with ``force``.
        ResumeError: no state to resume, or one saved under another ``invocation``.
        OutputExistsError: see :func:`prepare_output_dir`.
    """
    if out_dir is None:
        if resume or save_every is not None:
            raise ValueError("resumable states need an output directory")
        return None
    if resume:
        if force:
            raise ValueError("--resume continues a run and --force starts it afresh: pick one")
        check_output_path(out_dir)
        state = read_state(out_dir, kind=kind)
        check_invocation(state, invocation, out_dir, later=LATE_KEYS)
        _clean(Path(out_dir))
        every = save_every if save_every is not None else DEFAULT_SAVE_EVERY
        return Resumable(Path(out_dir), every, kind, invocation, state)
    prepare_output_dir(out_dir, force=force)
    if save_every is None:
        return None
    return Resumable(Path(out_dir), save_every, kind, invocation)


LATE_KEYS = ("split_sha256", "dataset_sha256", "validation_sha256")
"""Invocation keys known only once the data is loaded: :func:`resumable_run` does not compare
them yet, :func:`record_digests` does (the split of an unlearning run; the training data and
its validation split for a training run)."""


def record_split(resumable: Resumable | None, split: dict[str, Any], out_dir: str | Path) -> None:
    """Add the resolved split's digest to the run's invocation; on resume, refuse a split that
    differs from the one the interrupted run was unlearning (the dataset's files changed).

    Called after the split is resolved and before the method runs, so that every state saved
    carries the digest.

    Raises:
        ResumeError: the resumed run's split differs from the saved one.
    """
    record_digests(resumable, {"split_sha256": sha256_json(split)}, out_dir)


def record_digests(
    resumable: Resumable | None, digests: dict[str, str], out_dir: str | Path
) -> None:
    """Add digests known only once the data is loaded (:data:`LATE_KEYS`) to the run's
    invocation; on resume, refuse any that differs from the interrupted run's.

    Raises:
        ResumeError: a digest differs from the saved one (named in words).
    """
    if resumable is None:
        return
    resumable.invocation = {**resumable.invocation, **digests}
    if resumable.state is not None:
        check_invocation(resumable.state, resumable.invocation, out_dir)


def describe(results: Results) -> str:
    """The results table as printed at the end of a command."""
    return format_table(results.to_dict())


__all__ = [
    "BENCH_FILE",
    "CELLS_DIR",
    "CONFIG_FILE",
    "ERROR_FILE",
    "ORIGINALS_DIR",
    "SPLIT_FILE",
    "OutputExistsError",
    "describe",
    "prepare_output_dir",
    "record_digests",
    "record_split",
    "resumable_run",
]
