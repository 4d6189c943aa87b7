"""What a workflow reads: the dataset exactly as the original saw it, the validation split the
original was trained without, and checkpoints checked against that dataset.

Every workflow calls :func:`ensure_dataset` first, so that an unknown name or a missing dataset
is an error before any work.
"""

from __future__ import annotations

from pathlib import Path

import torch

from conun.config import TrainConfig
from conun.data.arrays import DatasetBundle
from conun.data.registry import check_dataset_available, load_dataset
from conun.data.validation import split_validation
from conun.engine.checkpoint import CheckpointMeta, load_checkpoint
from conun.models.base import Classifier
from conun.workflows.names import check_train_names


def ensure_dataset(config: TrainConfig) -> None:
    """Fail before any work when the dataset or model name is unknown, or the dataset's files
    are missing and downloads are off.

    Raises:
        ConfigError: an unknown dataset or model name (the allowed ones listed).
        DatasetNotFoundError: the dataset's files are missing and ``config.download`` is off.
    """
    check_train_names(config)
    if not config.download:
        check_dataset_available(config.dataset, config.data_dir)


def load_training_data(config: TrainConfig) -> DatasetBundle:
    """The dataset exactly as the original saw it (``max_train_samples`` applied, seeded)."""
    data = load_dataset(config.dataset, data_dir=config.data_dir, download=config.download)
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


def load_checkpoint_for(
    checkpoint: str | Path, data: DatasetBundle
) -> tuple[Classifier, CheckpointMeta]:
    """The model of ``checkpoint`` and its metadata, checked to fit ``data``.

    Raises:
        CheckpointError: no readable checkpoint there, or one for another number of classes
            or input shape than ``data``'s.
    """
    return load_checkpoint(
        checkpoint, expected_num_classes=data.num_classes, expected_input_shape=data.input_shape
    )


def validation_of(meta: CheckpointMeta) -> torch.Tensor:
    """``(N_val,)`` int64: the validation indices a checkpoint's original was trained without."""
    return torch.tensor(meta.validation, dtype=torch.long)


__all__ = [
    "ensure_dataset",
    "load_checkpoint_for",
    "load_training_data",
    "validation_indices",
    "validation_of",
]
