"""From pixels in ``[0, 1]`` to a normalised :class:`DatasetBundle`.

Every source (the built-in datasets, a user's tensors, an image folder) first produces
:class:`PixelData`; this module checks it and normalises it the same way for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from conun.data.arrays import ArrayDataset, DatasetBundle


@dataclass(frozen=True)
class PixelData:
    """Train and test images scaled to ``[0, 1]``, before normalisation.

    The tensors belong to this object: :func:`make_bundle` normalises them in place, which keeps
    the peak memory of a CIFAR-sized dataset at one float32 copy.

    Attributes:
        train_images: ``(N, C, H, W)`` float32 in ``[0, 1]``.
        train_labels: ``(N,)`` int64.
        test_images: ``(M, C, H, W)`` float32 in ``[0, 1]``.
        test_labels: ``(M,)`` int64.
    """

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


def to_unit_float(images: Tensor, max_value: float) -> Tensor:
    """A contiguous float32 copy of ``images`` divided by ``max_value``.

    Args:
        images: any shape, any real dtype (uint8 pixels, digits' 0..16 values, ...).
        max_value: the value that maps to 1.0 (255 for 8-bit images).

    Returns:
        Same shape as ``images``, float32, a new tensor (never a view of the input).
    """
    # .contiguous() first: torchvision hands out permuted (N, H, W, C) views, and channel-last
    # strides would otherwise survive into every batch gathered from the dataset.
    scaled = images.contiguous().to(torch.float32, copy=True)
    return scaled.div_(max_value)


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation.

    Args:
        images: ``(N, C, H, W)`` float.

    Returns:
        ``(mean, std)``, each a tuple of C floats.

    Raises:
        ValueError: a channel is constant over the whole set (normalising would divide by zero).
    """
    std, mean = torch.std_mean(images.to(torch.float64), dim=(0, 2, 3), correction=0)
    constant = [channel for channel, value in enumerate(std.tolist()) if value == 0.0]
    if constant:
        raise ValueError(
            f"channel(s) {constant} have the same value in every training image, so they cannot "
            "be normalised; drop them or pass normalize=False"
        )
    return tuple(mean.tolist()), tuple(std.tolist())


def make_bundle(
    name: str,
    pixels: PixelData,
    *,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str],
) -> DatasetBundle:
    """Check ``pixels`` and normalise it (in place) into a :class:`DatasetBundle`.

    Args:
        name: dataset name recorded in the bundle.
        pixels: images in ``[0, 1]``; normalised in place, do not reuse it afterwards.
        num_classes: C; every label must lie in ``[0, C)``.
        mean: per-channel mean, one value per image channel.
        std: per-channel standard deviation, one positive value per image channel.
        class_names: C names.

    Returns:
        The bundle with ``images = (pixels - mean) / std`` per channel.

    Raises:
        ValueError: inconsistent shapes, labels out of range, or wrong mean/std/class name counts.
    """
    train, test = pixels.train_images, pixels.test_images
    if train.ndim != 4 or test.ndim != 4 or train.shape[1:] != test.shape[1:]:
        raise ValueError(
            f"{name}: train and test images must both be (N, C, H, W) with the same C, H, W; got "
            f"{tuple(train.shape)} and {tuple(test.shape)}"
        )
    if train.dtype != torch.float32 or test.dtype != torch.float32:
        raise ValueError(f"{name}: images must be float32; got {train.dtype} and {test.dtype}")
    channels = int(train.shape[1])
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"{name}: images have {channels} channel(s) but mean has {len(mean)} and std has "
            f"{len(std)} values; give one per channel"
        )
    if any(value <= 0 for value in std):
        raise ValueError(f"{name}: std must be positive per channel; got {tuple(std)}")
    if len(class_names) != num_classes:
        raise ValueError(
            f"{name}: {len(class_names)} class names for num_classes={num_classes}; give one each"
        )
    for split, labels in (("train", pixels.train_labels), ("test", pixels.test_labels)):
        if labels.dtype != torch.int64:
            raise ValueError(f"{name}: {split} labels must be int64; got {labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"{name}: {split} labels must lie in [0, {num_classes}); got values from "
                f"{int(labels.min())} to {int(labels.max())}"
            )

    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    for images in (train, test):
        images.sub_(mean_t).div_(std_t)
    return DatasetBundle(
        name=name,
        train=ArrayDataset(train, pixels.train_labels),
        test=ArrayDataset(test, pixels.test_labels),
        num_classes=num_classes,
        mean=tuple(float(value) for value in mean),
        std=tuple(float(value) for value in std),
        class_names=tuple(class_names),
    )
