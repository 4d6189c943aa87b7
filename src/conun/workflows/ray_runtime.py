"""Ray, for the jobs that conun spreads over processes and machines: bench cells
(:mod:`conun.bench.executors`) and U-LiRA's shadows (:mod:`conun.workflows.ulira_shadows`).

Ray is optional (``pip install 'conun[ray]'``): it is imported here, when a run asks for it,
and a missing install is a one-line error naming that command, raised before any work.

:func:`ray_session` connects to a running cluster when there is one (``RAY_ADDRESS``, or the
cluster that ``ray start`` left on this machine), starts a local one otherwise, and shuts down
only what it started; a Ray that the caller already initialised (a test, a notebook) is used
as it is. Tasks set their own torch thread count (:func:`set_task_threads`), because a
worker's default depends on the machine, not on the resources Ray gave the task, and the count
changes the last bits of convolutions.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch

from conun.models.external import MissingExtraError

logger = logging.getLogger(__name__)

RAY_EXTRA_COMMAND = "pip install 'conun[ray]'"
"""What installs Ray for conun (named in the error when it is missing)."""


class RayNotInstalledError(MissingExtraError, ValueError):
    """Ray was asked for but is not installed. A ValueError too: bad input, found before any
    work (the command line turns it into one line and exit status 2)."""


def import_ray(purpose: str = "--executor ray") -> ModuleType:
    """The ``ray`` module, or a one-line error naming the command that installs it.

    Args:
        purpose: what asked for Ray, for the message.

    Raises:
        RayNotInstalledError: ray is not installed.
    """
    try:
        return importlib.import_module("ray")
    except ImportError as error:
        raise RayNotInstalledError(
            f"{purpose} needs Ray, which is not installed ({error}): {RAY_EXTRA_COMMAND}"
        ) from None


def threads_for(cpus: float) -> int:
    """The torch threads of a task that Ray gave ``cpus`` CPUs: one per whole CPU, at least 1."""
    return max(1, math.floor(cpus))


def set_task_threads(threads: int) -> None:
    """Inside a task: use ``threads`` torch threads (the task's CPUs, not the machine's)."""
    torch.set_num_threads(threads)


@contextmanager
def ray_session(*, quiet: bool = False) -> Iterator[ModuleType]:
    """Ray, initialised for the duration of the block.

    Already initialised: used as it is, left running. Otherwise ``ray.init()``: it connects to
    the cluster named by ``RAY_ADDRESS`` or started on this machine by ``ray start``, or starts
    a local instance with this machine's CPUs and GPUs, which is shut down at the end.

    Args:
        quiet: Ray's own start-up lines at WARNING instead of INFO.

    Raises:
        RayNotInstalledError: ray is not installed.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        # No dashboard: it is a web server that a batch job does not need (and it slows the
        # start of a local instance by seconds).
        ray.init(include_dashboard=False, logging_level=logging.WARNING if quiet else logging.INFO)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


__all__ = [
    "RAY_EXTRA_COMMAND",
    "RayNotInstalledError",
    "import_ray",
    "ray_session",
    "set_task_threads",
    "threads_for",
]
