"""What a workflow reads: the dataset exactly as the original saw it, the validation split the
original was trained without, and checkpoints checked against that dataset.

Every workflow calls :func:`ensure_dataset` first, so that an unknown name or a missing dataset
is an error before any work.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from pydantic import ValidationError

from conun.config import TrainConfig, format_validation_error
from conun.data.arrays import DatasetBundle
from conun.data.registry import check_dataset_available, load_dataset
from conun.data.splits import ForgetRequestError
from conun.data.validation import split_validation
from conun.engine.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint
from conun.models.base import Classifier
from conun.workflows.names import check_train_names
from conun.workflows.requests import ForgetSpec


def ensure_dataset(config: TrainConfig) -> None:
    """Fail before any work when the dataset or model name is unknown, or the dataset's files
    are missing and downloads are off.

    Raises:
        ConfigError: an unknown dataset or model name (the allowed ones listed).
        DatasetNotFoundError: the dataset's files are missing and ``config.download`` is off.
    """
    check_train_names(config)
    if not config.download:
        check_dataset_available(config.dataset, config.data_dir, config.image_size)


def load_training_data(config: TrainConfig) -> DatasetBundle:
    """The dataset exactly as the original saw it (``max_train_samples`` applied, seeded)."""
    data = load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        download=config.download,
        image_size=config.image_size,
    )
    if config.max_train_samples is not None and config.max_train_samples < len(data.train):
        generator = torch.Generator().manual_seed(config.seed)
        keep = torch.randperm(len(data.train), generator=generator)[: config.max_train_samples]
        data = DatasetBundle(
            data.name,
            data.train.subset(torch.sort(keep).values),
            data.test,
            data.num_classes,
            data.mean,
            data.std,
            data.class_names,
        )
    return data


def validation_indices(data: DatasetBundle, config: TrainConfig) -> torch.Tensor:
    """``(N_val,)`` int64: the seeded, stratified validation split the original is trained
    without (indices into ``data.train``)."""
    return split_validation(
        len(data.train), data.train.labels, fraction=config.validation_fraction, seed=config.seed
    ).validation_indices


def check_requests(config: TrainConfig, specs: Mapping[str, ForgetSpec]) -> None:
    """Resolve each forget request on the data an original of ``config`` trains on, before it
    is trained: a request the dataset cannot honour (a class it lacks, more samples than it
    holds, a fraction outside (0, 1)) is an error before any work, not after the training.

    Args:
        config: the original's recipe (its dataset, ``max_train_samples``, validation split and
            seed, which also draws the random requests).
        specs: the requests by the label that names them in errors (``--forget-class``).

    Raises:
        ForgetRequestError: ``<label>: <what is wrong>`` for the first request that fails.
    """
    data = load_training_data(config)
    validation = validation_indices(data, config)
    for label, spec in specs.items():
        try:
            spec.resolve(data, validation, config.seed)
        except ForgetRequestError as error:
            raise ForgetRequestError(f"{label}: {error}") from None


def load_checkpoint_for(
    checkpoint: str | Path, data: DatasetBundle
) -> tuple[Classifier, CheckpointMeta]:
    """The model of ``checkpoint`` and its metadata, checked to fit ``data``.

    Raises:
        CheckpointError: no readable checkpoint there, or one for another number of classes
            or input shape than ``data``'s.
    """
    model, meta = load_checkpoint(
        checkpoint, expected_num_classes=data.num_classes, expected_input_shape=data.input_shape
    )
    num_train = len(data.train)
    if meta.validation and max(meta.validation) >= num_train:
        raise CheckpointError(
            f"{checkpoint}: its validation ids reach {max(meta.validation)} but the training set "
            f"of {meta.dataset} has {num_train} samples (0..{num_train - 1})"
        )
    if meta.split is not None and meta.split["num_train"] != num_train:
        raise CheckpointError(
            f"{checkpoint}: its split indexes a training set of {meta.split['num_train']} "
            f"samples but {meta.dataset}'s has {num_train}"
        )
    return model, meta


def recipe_of(meta: CheckpointMeta, checkpoint: str | Path) -> TrainConfig:
    """The training recipe a checkpoint's metadata records, validated.

    Raises:
        CheckpointError: the recipe does not validate (naming the checkpoint and the keys).
    """
    try:
        return TrainConfig.model_validate(meta.train_config)
    except ValidationError as error:
        lines = format_validation_error("train_config", error).splitlines()[1:]
        problems = "; ".join(f"train_config.{line.strip()}" for line in lines)
        raise CheckpointError(f"{checkpoint}: metadata: {problems}") from None


def validation_of(meta: CheckpointMeta) -> torch.Tensor:
    """``(N_val,)`` int64: the validation indices a checkpoint's original was trained without."""
    return torch.tensor(meta.validation, dtype=torch.long)


__all__ = [
    "check_requests",
    "ensure_dataset",
    "load_checkpoint_for",
    "load_training_data",
    "recipe_of",
    "validation_indices",
    "validation_of",
]
