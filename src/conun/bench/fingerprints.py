"""Content digests of a bench cell's inputs: the seed's original weights and the request's ids.

A cell's fingerprint (:meth:`conun.bench.grid.BenchPlan.fingerprint`) hashes the *settings*
that determine its numbers (training recipe, unlearning config, request, method). Two inputs are
not settings: the original's weights under ``originals/<key>/`` (a file that can be replaced, or
retrained to other weights on a GPU, under the same recipe hash) and the ids a request resolves
to (a function of the dataset's files as well as of the request and seed). Each finished cell
records their SHA-256 (:func:`cell_inputs`), and a re-invocation compares them with the current
ones before any work (:func:`changed_inputs`): a cell computed from another original or for
other ids is a result of a different configuration, refused like one (DESIGN: never silently
overwritten or mixed into a table), naming what changed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file

from conun.bench.preset import RequestSpec
from conun.config import TrainConfig
from conun.data.splits import ForgetRetainSplit
from conun.engine.checkpoint import CHECKPOINT_FILE, read_checkpoint_meta
from conun.io import RESULTS_FILE, sha256_json
from conun.workflows.inputs import load_training_data, validation_of
from conun.workflows.outputs import ORIGINALS_DIR

logger = logging.getLogger(__name__)

INPUTS_KEY = "inputs"
"""Key, inside a cell results.json's ``bench`` object, of :func:`cell_inputs`'s digests."""


class _Cell(Protocol):
    """What :func:`changed_inputs` needs of a grid cell."""

    @property
    def seed(self) -> int: ...

    @property
    def request(self) -> str: ...

    def directory(self, out: str | Path) -> Path: ...


class _Plan(Protocol):
    """What :func:`changed_inputs` needs of a bench plan."""

    @property
    def train_configs(self) -> dict[int, TrainConfig]: ...

    @property
    def requests(self) -> dict[str, RequestSpec]: ...

    def original_key(self, seed: int) -> str: ...


def weights_sha256(checkpoint: str | Path) -> str:
    """SHA-256 of a checkpoint's weights: every tensor's name, dtype, shape and bytes, in name
    order. The metadata is left out: it holds the training's wall-clock seconds, which differ
    between two trainings that give bit-identical weights.

    Args:
        checkpoint: a ``checkpoint.safetensors`` file or the run directory holding one.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    stat = path.stat()
    # Every cell of a seed records its original's digest: hash each version of the file once.
    return _weights_sha256(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _weights_sha256(path: str, mtime_ns: int, size: int) -> str:
    del mtime_ns, size  # part of the cache key only
    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(path).items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        # As raw bytes: bfloat16 has no NumPy equivalent, uint8 always has.
        digest.update(tensor.contiguous().view(-1).view(dtype=torch.uint8).numpy().data)
    return digest.hexdigest()


def split_sha256(split: ForgetRetainSplit) -> str:
    """SHA-256 of a resolved request: its forget, retain and validation ids, seed and size."""
    return sha256_json(split.to_dict())


def cell_inputs(original: str | Path, split: ForgetRetainSplit) -> dict[str, dict[str, str]]:
    """What a finished cell records of its inputs, under ``bench`` in its results.json.

    Args:
        original: the seed's original (its run directory or checkpoint file).
        split: the request as resolved for the cell.

    Returns:
        ``{"inputs": {"original_sha256": ..., "split_sha256": ...}}`` (64 hex digits each).
    """
    return {
        INPUTS_KEY: {
            "original_sha256": weights_sha256(original),
            "split_sha256": split_sha256(split),
        }
    }


def changed_inputs(
    plan: _Plan, out: str | Path, finished: Mapping[Any, dict[str, Any]]
) -> list[str]:
    """The finished cells whose recorded inputs differ from the current ones, one line each.

    Called before any work: it reads the originals under ``out`` and loads each concerned
    seed's data once to resolve its requests again (no training).

    Args:
        plan: the bench plan (its recipes, requests and original directory names).
        out: the bench directory.
        finished: cell -> its finished results.json, as read back.

    Returns:
        ``<cell's results.json>: <what changed>`` per cell computed from another original (or
        from one no longer there, which a new training would not reproduce on a GPU) or for
        other ids; empty when every recorded digest matches. Cells written before cells
        recorded digests have nothing to compare and are kept.
    """
    recorded: dict[int, list[tuple[_Cell, dict[str, Any]]]] = {}
    unchecked = 0
    for cell, document in finished.items():
        inputs = document.get("bench", {}).get(INPUTS_KEY)
        if isinstance(inputs, dict):
            recorded.setdefault(cell.seed, []).append((cell, inputs))
        else:
            unchecked += 1
    if unchecked:
        logger.info("%d finished cell(s) record no input digests: reused unchecked", unchecked)
    problems: list[str] = []
    for seed, cells in recorded.items():
        original = Path(out) / ORIGINALS_DIR / plan.original_key(seed)
        if not (original / CHECKPOINT_FILE).is_file():
            problems += [
                f"{cell.directory(out) / RESULTS_FILE}: computed from the original in {original}, "
                "which is gone (a new training need not give the same weights)"
                for cell, _ in cells
            ]
            continue
        current = weights_sha256(original)
        kept = []
        for cell, inputs in cells:
            if inputs.get("original_sha256") != current:
                problems.append(
                    f"{cell.directory(out) / RESULTS_FILE}: the original's weights (SHA-256) "
                    f"differ from those it was computed from ({original} was replaced since)"
                )
            else:
                kept.append((cell, inputs))
        if not kept:
            continue
        data = load_training_data(plan.train_configs[seed])
        validation = validation_of(read_checkpoint_meta(original))
        digests: dict[str, str] = {}
        for cell, inputs in kept:
            if cell.request not in digests:
                spec = plan.requests[cell.request].forget_spec()
                digests[cell.request] = split_sha256(spec.resolve(data, validation, seed))
            if inputs.get("split_sha256") != digests[cell.request]:
                problems.append(
                    f"{cell.directory(out) / RESULTS_FILE}: the request's resolved ids (SHA-256) "
                    "differ from those it was computed for (the dataset's files changed since)"
                )
    return problems


__all__ = ["INPUTS_KEY", "cell_inputs", "changed_inputs", "split_sha256", "weights_sha256"]
