"""Resumable state of a training or unlearning loop: one safetensors file, never a pickle.

A loop that is given a :class:`Resumable` writes ``resume.safetensors`` into its run directory
every ``every`` optimizer steps (atomically: a kill leaves the previous state or the new one,
never half of one) and removes it when the run has finished. Training, the shared unlearning
loop, SCRUB and UNSIR count optimizer steps; L-CODEC, which takes none, saves after every removal
batch. The file holds everything the rest of the run depends on:

- tensors: the model's state dict (``model.*``), the optimizer's per-parameter state
  (``optim.<param>.<key>``; none for L-CODEC), the seeded generator and the global torch RNG
  (``rng.*``), and the loop's own tensors (``loop.*``: the current pass's batch order, the retain
  stream's permutation, UNSIR's learned noise);
- JSON in the header: the optimizer's hyperparameters and scalar state, the learning-rate
  scheduler's state, the Python and NumPy RNG states, the loop's counters and history, and the
  ``invocation`` — what the run was asked to do — which ``--resume`` compares with the command
  line so that a state is never continued under different settings.

Continuing from it on the same machine (CPU, same thread count) gives bit-identical weights to
an uninterrupted run with the same seed: every random draw after the save point comes from the
restored generators, in the same order (tested by killing a subprocess mid-run).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from conun.distributed.group import context
from conun.io import atomic_write

logger = logging.getLogger(__name__)

RESUME_FILE = "resume.safetensors"
DEFAULT_SAVE_EVERY = 200
"""Optimizer steps between two saves unless told otherwise (a few milliseconds per save for
small_cnn; tens of milliseconds for a ResNet-18)."""
FORMAT = "conun-resume/1"
_META_KEY = "conun-resume"


class ResumeError(ValueError):
    """A resume state that is missing, corrupt, or belongs to a different run."""


@dataclass
class LoopState:
    """A loop's saved state, as read back from ``resume.safetensors``.

    Attributes:
        kind: ``"train"`` or ``"unlearn"``: the loop that wrote it.
        invocation: what the run was asked to do (config, request, checkpoint), as JSON.
        loop: the loop's counters, history and anything else it saved as JSON.
        tensors: every tensor of the state (model, optimizer, RNG, index orders), by name.
        meta: optimizer, scheduler and Python/NumPy RNG state (JSON).
    """

    kind: str
    invocation: dict[str, Any]
    loop: dict[str, Any]
    tensors: dict[str, Tensor]
    meta: dict[str, Any]

    def loop_tensor(self, name: str) -> Tensor:
        """A tensor the loop saved under ``loop.<name>``."""
        return self.tensors[f"loop.{name}"]


@dataclass
class Resumable:
    """How a loop saves and continues: handed to ``train_classifier`` / the unlearning loop.

    Attributes:
        directory: the run directory; the state goes to ``directory/resume.safetensors``.
        every: optimizer steps between two saves (>= 1).
        kind: ``"train"`` or ``"unlearn"``.
        invocation: JSON description of the run, saved with every state.
        state: the state to continue from (None: start from the beginning).
        save_seconds: wall-clock spent writing states (loops subtract it from their timing).
    """

    directory: Path
    every: int
    kind: str
    invocation: dict[str, Any]
    state: LoopState | None = None
    save_seconds: float = field(default=0.0)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"save_every must be >= 1 optimizer steps, got {self.every}")

    @property
    def path(self) -> Path:
        return Path(self.directory) / RESUME_FILE

    def due(self, step: int) -> bool:
        """Whether a state is saved after optimizer step ``step`` (1-based)."""
        return step % self.every == 0

    def save(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        generator: torch.Generator,
        loop: dict[str, Any],
        loop_tensors: dict[str, Tensor],
        scheduler: Any = None,
    ) -> None:
        """Atomically write the current state (replacing the previous one); rank 0 only, and
        never a state whose weights are not finite (the previous one is kept).

        ``optimizer`` is None for a loop that takes no optimizer steps (L-CODEC's Newton steps
        edit the weights directly)."""
        started = time.perf_counter()
        tensors: dict[str, Tensor] = {
            f"model.{name}": tensor for name, tensor in model.state_dict().items()
        }
        floating = [tensor for tensor in tensors.values() if tensor.is_floating_point()]
        if not all(torch.isfinite(tensor).all() for tensor in floating):
            # The previous state is the last good one: keep it. The loop's own check on the
            # loss stops the run at the next step.
            step = loop.get("step", loop.get("steps"))
            logger.warning("weights are not finite at step %s: no state saved", step)
            return
        if not context().is_main:
            return  # every rank holds the same state (see conun.distributed.group)
        optimizer_meta = (
            _optimizer_to_parts(optimizer.state_dict(), tensors) if optimizer is not None else None
        )
        tensors["rng.generator"] = generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        for name, tensor in loop_tensors.items():
            tensors[f"loop.{name}"] = tensor
        meta = {
            "format": FORMAT,
            "kind": self.kind,
            "invocation": self.invocation,
            "loop": loop,
            "optimizer": optimizer_meta,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "python_random": _python_random_state(),
            "numpy_random": _numpy_random_state(),
        }
        payload = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
        header = {_META_KEY: json.dumps(meta)}
        atomic_write(self.path, lambda tmp: save_file(payload, str(tmp), metadata=header))
        self.save_seconds += time.perf_counter() - started

    def restore(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        generator: torch.Generator,
        scheduler: Any = None,
    ) -> LoopState:
        """Load ``self.state`` into the model, optimizer (if the loop has one), scheduler and
        every RNG; return it."""
        state = self.state
        if state is None:
            raise ResumeError("nothing to resume from")
        prefix = "model."
        weights = {k[len(prefix) :]: v for k, v in state.tensors.items() if k.startswith(prefix)}
        device = next(iter(model.parameters())).device
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            raise ResumeError(
                f"{self.path}: the saved weights do not fit the model: {error}"
            ) from None
        if (optimizer is None) != (state.meta["optimizer"] is None):
            raise ResumeError(f"{self.path}: the saved optimizer state does not fit this loop")
        if optimizer is not None:
            optimizer.load_state_dict(_optimizer_from_parts(state.meta["optimizer"], state.tensors))
            for group_state in optimizer.state.values():
                for key, value in group_state.items():
                    if isinstance(value, Tensor) and key != "step":
                        group_state[key] = value.to(device)
        if scheduler is not None and state.meta.get("scheduler") is not None:
            scheduler.load_state_dict(state.meta["scheduler"])
        generator.set_state(state.tensors["rng.generator"])
        torch.set_rng_state(state.tensors["rng.torch"])
        _set_python_random_state(state.meta["python_random"])
        _set_numpy_random_state(state.meta["numpy_random"])
        return state

    def finish(self) -> None:
        """The run ended: its state is no longer needed."""
        if context().is_main:
            self.path.unlink(missing_ok=True)


def read_state(directory: str | Path, *, kind: str) -> LoopState:
    """Read ``directory/resume.safetensors`` (no unpickling).

    Raises:
        ResumeError: no state there, not a conun resume state, or one written by another loop.
    """
    from safetensors import safe_open

    path = Path(directory) / RESUME_FILE
    if not path.is_file():
        raise ResumeError(
            f"no {RESUME_FILE} in {directory}: nothing to resume (a finished run removes it; "
            "a run saves one every save_every optimizer steps)"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
        meta = json.loads(header[_META_KEY])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as error:
        raise ResumeError(f"{path} is not a conun resume state: {error}") from None
    if meta.get("format") != FORMAT:
        raise ResumeError(f"{path}: unsupported format {meta.get('format')!r}; expected {FORMAT}")
    if meta.get("kind") != kind:
        raise ResumeError(f"{path} is the state of a {meta.get('kind')} run, not of a {kind} run")
    return LoopState(meta["kind"], meta["invocation"], meta["loop"], tensors, meta)


CONTENT_KEYS = {
    "checkpoint_sha256": "the source checkpoint's content (SHA-256) changed since the run began",
    "request_sha256": "the forget request's ids (SHA-256) changed since the run began",
    "split_sha256": "the resolved forget/retain split (SHA-256) changed since the run began",
    "config_sha256": "the resolved training config (SHA-256) changed since the run began",
    "dataset_sha256": "the training data's content (SHA-256 of the train tensors) changed since "
    "the run began",
    "validation_sha256": "the train/validation split (SHA-256) changed since the run began",
}
"""Invocation keys that hold the digest of an input's content rather than a setting: a
difference there means a file was replaced or edited under the same path, which
:func:`check_invocation` says in words."""


def check_invocation(
    state: LoopState,
    invocation: dict[str, Any],
    directory: str | Path,
    *,
    later: tuple[str, ...] = (),
) -> None:
    """Refuse to continue a state under settings other than those it was saved with.

    Inputs are compared by content where the invocation holds their digests
    (:data:`CONTENT_KEYS`): a checkpoint or ids file replaced under the same path is refused,
    naming what changed, so that a resumed model never mixes two requests or two originals.

    Args:
        state: the saved state.
        invocation: what the run is asked to do now.
        directory: the run directory (named in the error).
        later: keys the caller adds to ``invocation`` only once its data is loaded (the split's
            digest); absent from ``invocation``, they are not compared yet.
    """
    saved = json.loads(json.dumps(state.invocation))
    given = json.loads(json.dumps(invocation))
    for key in later:
        if key not in given:
            saved.pop(key, None)
    if saved != given:
        differing = sorted(
            key for key in set(saved) | set(given) if saved.get(key) != given.get(key)
        )
        settings = [key for key in differing if key not in CONTENT_KEYS]
        parts = []
        for key in (key for key in differing if key in CONTENT_KEYS):
            # A digest whose input is saved beside it (the config next to config_sha256): name
            # the fields that differ, once, instead of a bare "config differ" as well.
            plain = key.removesuffix("_sha256")
            if plain in settings:
                settings.remove(plain)
                fields = _differing_fields(saved.get(plain), given.get(plain), plain)
                parts.append(f"{CONTENT_KEYS[key]} ({', '.join(fields)})")
            else:
                parts.append(CONTENT_KEYS[key])
        if settings:
            parts.append(f"other settings ({', '.join(settings)} differ)")
        raise ResumeError(
            f"cannot resume the run in {directory}: {'; '.join(parts)}: give the same inputs "
            "and options as the first time, or start afresh with --force"
        )


def _differing_fields(saved: Any, given: Any, path: str, *, limit: int = 4) -> list[str]:
    """``path.key: saved -> given`` for the first ``limit`` leaves where two JSON values differ
    (dicts are compared key by key; anything else as a whole)."""
    if isinstance(saved, dict) and isinstance(given, dict):
        found: list[str] = []
        for key in sorted(set(saved) | set(given)):
            if saved.get(key) != given.get(key):
                found += _differing_fields(saved.get(key), given.get(key), f"{path}.{key}")
        if len(found) > limit:
            found = [*found[:limit], f"{len(found) - limit} more"]
        return found
    return [f"{path}: {_short(saved)} -> {_short(given)}"]


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _optimizer_to_parts(state_dict: dict[str, Any], tensors: dict[str, Tensor]) -> dict[str, Any]:
    """Split an optimizer state dict into tensors (added to ``tensors``) and JSON."""
    scalars: dict[str, dict[str, Any]] = {}
    for param, values in state_dict["state"].items():
        scalars[str(param)] = {}
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{param}.{key}"] = value
            else:
                scalars[str(param)][key] = value
    return {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _optimizer_from_parts(parts: dict[str, Any], tensors: dict[str, Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {
        int(param): dict(values) for param, values in parts["scalars"].items()
    }
    for name, tensor in tensors.items():
        if name.startswith("optim."):
            _, param, key = name.split(".", 2)
            state.setdefault(int(param), {})[key] = tensor
    return {"state": state, "param_groups": parts["param_groups"]}


def _python_random_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_random_state(saved: list[Any]) -> None:
    version, internal, gauss = saved
    random.setstate((version, tuple(internal), gauss))


def _numpy_random_state() -> dict[str, Any]:
    name, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "name": name,
        "keys": np.asarray(keys).tolist(),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _set_numpy_random_state(saved: dict[str, Any]) -> None:
    np.random.set_state(
        (
            saved["name"],
            np.asarray(saved["keys"], dtype=np.uint32),
            saved["position"],
            saved["has_gauss"],
            saved["cached"],
        )
    )


__all__ = [
    "CONTENT_KEYS",
    "DEFAULT_SAVE_EVERY",
    "RESUME_FILE",
    "LoopState",
    "Resumable",
    "ResumeError",
    "check_invocation",
    "read_state",
]
