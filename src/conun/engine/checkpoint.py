"""Checkpoints: one safetensors file holding the weights and, in its header, JSON metadata.

One file means one atomic rename: a checkpoint is either complete or absent. safetensors stores
raw tensors only, so loading never unpickles anything (no code can run from a checkpoint).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from conun.data.splits import ForgetRequestError, ForgetRetainSplit
from conun.io import atomic_write
from conun.models.base import Classifier
from conun.models.registry import build_model
from conun.reproducibility import versions

CHECKPOINT_FILE = "checkpoint.safetensors"
FORMAT = "conun-checkpoint/1"
_META_KEY = "conun"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not match what it is used with."""


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself.

    Attributes:
        model: registry name of the architecture.
        dataset: registry name of the dataset it was trained on.
        num_classes: C.
        input_shape: ``(C, H, W)`` of its inputs.
        train_config: the resolved training recipe (a TrainConfig as a dict).
        validation: training-set indices held out from its training (may be empty).
        method: "original", "retrain", or the unlearning method that produced it.
        seconds: wall-clock of that method.
        split: the forget request it was unlearned for (ForgetRetainSplit.to_dict), or None.
        metrics: accuracies measured when it was saved.
        versions: library versions that wrote it.
    """

    model: str
    dataset: str
    num_classes: int
    input_shape: tuple[int, int, int]
    train_config: dict[str, Any]
    validation: list[int]
    method: str = "original"
    seconds: float = 0.0
    split: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    versions: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "dataset": self.dataset,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "train_config": self.train_config,
            "validation": self.validation,
            "method": self.method,
            "seconds": self.seconds,
            "split": self.split,
            "metrics": self.metrics,
            "versions": self.versions or versions(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMeta:
        if data.get("format") != FORMAT:
            raise CheckpointError(
                f"unsupported checkpoint format {data.get('format')!r}; expected {FORMAT}"
            )
        try:
            return cls(
                model=str(data["model"]),
                dataset=str(data["dataset"]),
                num_classes=int(data["num_classes"]),
                input_shape=tuple(int(v) for v in data["input_shape"]),  # type: ignore[arg-type]
                train_config=dict(data["train_config"]),
                validation=[int(v) for v in data["validation"]],
                method=str(data.get("method", "original")),
                seconds=float(data.get("seconds", 0.0)),
                split=data.get("split"),
                metrics=data.get("metrics"),
                versions=data.get("versions"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"checkpoint metadata is incomplete or malformed: {error}"
            ) from None

    def check(self) -> None:
        """Raise :class:`CheckpointError` unless the metadata is consistent in itself: at least
        two classes, a ``(C, H, W)`` input shape, non-negative distinct validation ids, the
        dataset and model the training recipe names, and a well-formed split (or none)."""
        if self.num_classes < 2:
            raise CheckpointError(
                f"checkpoint metadata: num_classes is {self.num_classes}; a classifier has at "
                "least 2 classes"
            )
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise CheckpointError(
                f"checkpoint metadata: input_shape {list(self.input_shape)} is not a positive "
                "(channels, height, width)"
            )
        if self.validation and (
            min(self.validation) < 0 or len(set(self.validation)) != len(self.validation)
        ):
            raise CheckpointError(
                "checkpoint metadata: validation ids must be distinct non-negative indices"
            )
        for key, value in (("dataset", self.dataset), ("model", self.model)):
            recipe = self.train_config.get(key)
            if recipe is not None and recipe != value:
                raise CheckpointError(
                    f"checkpoint metadata names {key} {value!r} but its training recipe "
                    f"(train_config.{key}) says {recipe!r}: the metadata was edited or is corrupt"
                )
        if self.split is not None:
            try:
                ForgetRetainSplit.from_dict(self.split)
            except ForgetRequestError as error:
                raise CheckpointError(f"checkpoint metadata: split: {error}") from None


def resolve_checkpoint_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path/checkpoint.safetensors``."""
    candidate = Path(path)
    if candidate.is_dir():
        candidate = candidate / CHECKPOINT_FILE
    if not candidate.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: give a {CHECKPOINT_FILE} file or a directory holding one"
        )
    return candidate


def save_checkpoint(path: str | Path, model: Classifier, meta: CheckpointMeta) -> Path:
    """Atomically write ``model``'s weights and ``meta`` to ``path`` (a file or a directory)."""
    destination = Path(path)
    if destination.suffix != ".safetensors":
        destination = destination / CHECKPOINT_FILE
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    header = {_META_KEY: json.dumps(meta.to_dict())}
    return atomic_write(destination, lambda tmp: save_file(state, str(tmp), metadata=header))


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """Read only the metadata (cheap: the weights are not loaded)."""
    from safetensors import safe_open

    source = resolve_checkpoint_path(path)
    try:
        with safe_open(str(source), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{source} is not a readable safetensors file: {error}") from None
    if _META_KEY not in header:
        raise CheckpointError(f"{source} has no conun metadata; was it written by conun?")
    try:
        loaded = json.loads(header[_META_KEY])
    except (json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(f"{source}: metadata is not valid JSON: {error}") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(
            f"{source}: metadata must be a JSON object, got {type(loaded).__name__}"
        )
    try:
        meta = CheckpointMeta.from_dict(loaded)
        meta.check()
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None
    return meta


def load_checkpoint(
    path: str | Path,
    *,
    expected_num_classes: int | None = None,
    expected_input_shape: tuple[int, int, int] | None = None,
) -> tuple[Classifier, CheckpointMeta]:
    """Rebuild the model a checkpoint describes and load its weights (no unpickling).

    Args:
        path: a checkpoint file or a directory holding ``checkpoint.safetensors``.
        expected_num_classes: if given, the checkpoint must have this many classes.
        expected_input_shape: if given, the checkpoint must take inputs of this ``(C, H, W)``.

    Returns:
        The model in eval mode on the CPU, and its metadata.

    Raises:
        CheckpointError: missing file, foreign or corrupt content, or a mismatch.
    """
    meta = read_checkpoint_meta(path)
    if expected_num_classes is not None and meta.num_classes != expected_num_classes:
        raise CheckpointError(
            f"checkpoint has {meta.num_classes} classes but the data has {expected_num_classes}"
        )
    if expected_input_shape is not None and tuple(meta.input_shape) != tuple(expected_input_shape):
        raise CheckpointError(
            f"checkpoint takes inputs of shape {tuple(meta.input_shape)} but the data has "
            f"{tuple(expected_input_shape)}"
        )
    model_args = meta.train_config.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise CheckpointError(
            f"metadata: train_config.model_args must be a mapping, got {model_args!r}"
        )
    model = build_model(
        meta.model,
        num_classes=meta.num_classes,
        input_shape=meta.input_shape,
        model_args=model_args,
    )
    source = resolve_checkpoint_path(path)
    try:
        state = load_file(str(source))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{source}: the weights cannot be read: {error}") from None
    # A NaN or Inf weight makes every output meaningless: unlearning would "stop" at once and
    # an evaluation would report chance accuracy as if it were the model's.
    broken = [
        name
        for name, tensor in state.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if broken:
        shown = ", ".join(broken[:3]) + (f" and {len(broken) - 3} more" if len(broken) > 3 else "")
        raise CheckpointError(
            f"{source} holds non-finite weights (NaN or Inf) in {shown}: a checkpoint must hold "
            "finite weights only"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"weights do not fit model {meta.model!r}: {error}") from None
    model.eval()
    return model, meta
