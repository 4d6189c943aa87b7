"""Starting weights from a user's file (``--init``): a safetensors state dict.

The usual case is a model fine-tuned from a pretrained backbone: the file holds the library's
own keys (``timm_model.state_dict()``, a torchvision or Hugging Face model's), or conun's keys (a
conun checkpoint). Both are accepted: the keys are matched against the model's own names and
against its names without its ``native_prefix`` (see :mod:`conun.models.external`).

Every mismatch is an error listing the first offending keys; only the head may be missing (a
backbone saved without a classifier), in which case it keeps its fresh initialisation.
safetensors holds raw tensors only, so reading a file never runs code from it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from conun.models.base import Classifier

logger = logging.getLogger(__name__)

SHOWN_KEYS = 5
"""How many offending keys an error lists."""


class InitWeightsError(ValueError):
    """Starting weights that cannot be read or do not fit the model; names the keys."""


def _shown(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def _head_keys(model: Classifier) -> set[str]:
    """Names, in ``model.state_dict()``, of the head's tensors (parameters and buffers)."""
    head = getattr(model, "head", None)
    if head is None:
        return set()
    owned = {id(tensor) for tensor in (*head.parameters(), *head.buffers())}
    return {
        name for name, tensor in model.state_dict(keep_vars=True).items() if id(tensor) in owned
    }


def _as_model_keys(state: dict[str, Tensor], model: Classifier) -> dict[str, Tensor]:
    """``state`` with keys in the model's naming: as given, or with the native prefix added,
    whichever names more of the model's keys."""
    own = set(model.state_dict())
    prefix = str(getattr(model, "native_prefix", ""))
    candidates = [state]
    if prefix:
        candidates.append({prefix + key: value for key, value in state.items()})
    return max(candidates, key=lambda candidate: len(own.intersection(candidate)))


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file.

    Raises:
        InitWeightsError: the file is missing or not a safetensors file.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise InitWeightsError(f"init weights {source}: no such file")
    try:
        return load_file(str(source))
    except (SafetensorError, OSError) as error:
        raise InitWeightsError(
            f"init weights {source} are not a readable safetensors file ({error}); save them "
            "with safetensors.torch.save_file(model.state_dict(), path)"
        ) from None


def load_init_weights(model: Classifier, path: str | Path) -> None:
    """Copy the weights of a safetensors file into ``model`` (in place).

    Args:
        model: the freshly built model.
        path: a safetensors file of a state dict in the library's layout (timm, torchvision,
            Hugging Face) or in conun's.

    Raises:
        InitWeightsError: unreadable file, or keys that do not fit: unexpected keys, missing
            keys outside the head, or tensors whose shape differs (the first few listed).
    """
    state = _as_model_keys(read_state_dict(path), model)
    own = model.state_dict()
    head = _head_keys(model)
    problems = []
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        problems.append(f"keys the model does not have: {_shown(unexpected)}")
    missing = sorted(set(own) - set(state))
    if missing and not set(missing) <= head:
        problems.append(f"keys missing from the file: {_shown(missing)}")
    mismatched = [
        f"{key} {tuple(state[key].shape)} in the file vs {tuple(own[key].shape)} in the model"
        for key in own
        if key in state and state[key].shape != own[key].shape
    ]
    if mismatched:
        problems.append(f"shapes differ: {_shown(mismatched)}")
    if problems:
        raise InitWeightsError(
            f"init weights {path} do not fit {type(model).__name__}: " + "; ".join(problems)
        )
    broken = [
        key
        for key, value in state.items()
        if value.is_floating_point() and not bool(value.isfinite().all())
    ]
    if broken:
        raise InitWeightsError(f"init weights {path} hold NaN or Inf in {_shown(sorted(broken))}")
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value)
    if missing:
        logger.info("init weights %s hold no head; the head keeps its initialisation", path)


__all__ = ["InitWeightsError", "load_init_weights", "read_state_dict"]
