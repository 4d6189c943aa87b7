"""Users' own data: in-memory tensors and image folders, as normalised bundles.

Both end in the same :class:`DatasetBundle` as the registered datasets, with mean and std
computed from the training images, so every model, method and metric works on them unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets as tv_datasets
from torchvision import transforms
from tqdm import tqdm

from conun.data.arrays import DatasetBundle
from conun.data.pixels import PixelData, channel_stats, make_bundle, to_unit_float

logger = logging.getLogger(__name__)


def _images_nchw(images: Tensor | np.ndarray, split: str) -> Tensor:
    """``(N, H, W)`` or ``(N, C, H, W)``, uint8 or float -> a float32 ``(N, C, H, W)`` copy."""
    tensor = torch.as_tensor(images)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    if tensor.ndim != 4:
        raise ValueError(
            f"{split} images must be (N, H, W) or (N, C, H, W); got shape {tuple(tensor.shape)}"
        )
    if tensor.dtype == torch.uint8:
        return to_unit_float(tensor, 255.0)
    if tensor.is_floating_point():
        return to_unit_float(tensor, 1.0)  # floats are taken in the caller's own scale
    raise ValueError(f"{split} images must be uint8 or floating point; got {tensor.dtype}")


def _labels(labels: Tensor | np.ndarray, num_images: int, split: str) -> Tensor:
    tensor = torch.as_tensor(labels)
    if tensor.ndim != 1 or tensor.shape[0] != num_images:
        raise ValueError(
            f"{split} labels must be (N,) with N = {num_images} (one per image); "
            f"got shape {tuple(tensor.shape)}"
        )
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{split} labels must be integer class indices; got {tensor.dtype}")
    return tensor.to(torch.int64, copy=True)


def from_tensors(
    train_images: Tensor | np.ndarray,
    train_labels: Tensor | np.ndarray,
    test_images: Tensor | np.ndarray,
    test_labels: Tensor | np.ndarray,
    *,
    name: str = "tensors",
    num_classes: int | None = None,
    normalize: bool = True,
    class_names: Sequence[str] | None = None,
) -> DatasetBundle:
    """A bundle from a user's in-memory images and labels (the inputs are copied, never changed).

    Args:
        train_images: ``(N, H, W)`` or ``(N, C, H, W)``; uint8 (divided by 255) or float (kept
            in its own scale).
        train_labels: ``(N,)`` integer class indices.
        test_images: ``(M, H, W)`` or ``(M, C, H, W)``, same C, H, W as train.
        test_labels: ``(M,)`` integer class indices.
        name: dataset name recorded in the bundle.
        num_classes: C; default: the largest label in train or test, plus one.
        normalize: normalise with the per-channel mean and std of the training images; if
            False, images are kept as given (mean 0, std 1 recorded).
        class_names: C names; default ``"0"``, ``"1"``, ...

    Returns:
        The bundle.

    Raises:
        ValueError: bad shapes or dtypes, labels outside ``[0, num_classes)``, wrong number of
            class names, or a constant training channel with ``normalize=True``.
    """
    train_x = _images_nchw(train_images, "train")
    test_x = _images_nchw(test_images, "test")
    train_y = _labels(train_labels, train_x.shape[0], "train")
    test_y = _labels(test_labels, test_x.shape[0], "test")
    if train_x.shape[0] == 0:
        raise ValueError("train set is empty; give at least one training image")
    if num_classes is None:
        num_classes = int(torch.cat([train_y, test_y]).max()) + 1
    channels = int(train_x.shape[1])
    if normalize:
        mean, std = channel_stats(train_x)
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
    names = tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
    return make_bundle(
        name,
        PixelData(train_x, train_y, test_x, test_y),
        num_classes=num_classes,
        mean=mean,
        std=std,
        class_names=names,
    )


def _materialise(dataset: tv_datasets.ImageFolder, size: tuple[int, int], split: str) -> Tensor:
    """Decode every image of ``dataset`` into one ``(N, 3, H, W)`` float32 tensor in [0, 1]."""
    images = torch.empty((len(dataset), 3, *size), dtype=torch.float32)
    # Image files must be decoded one by one; filling a preallocated tensor avoids holding a list
    # of N tensors next to the stacked copy.
    for index in tqdm(range(len(dataset)), desc=f"decoding {split} images", leave=False):
        images[index] = dataset[index][0]
    return images


def from_image_folder(
    train_dir: str | Path,
    test_dir: str | Path,
    *,
    image_size: int | tuple[int, int],
    name: str = "image-folder",
) -> DatasetBundle:
    """A bundle from ``train_dir/<class>/<image>`` and ``test_dir/<class>/<image>`` folders.

    Images are read with ``torchvision.datasets.ImageFolder`` (as RGB), resized to
    ``image_size``, held in memory, and normalised with the training set's mean and std. Class
    indices follow the sorted folder names, which become the class names.

    Args:
        train_dir: training folder, one sub-folder per class.
        test_dir: test folder with the same class sub-folders.
        image_size: ``(H, W)``, or one int for square ``(S, S)`` images (never aspect-preserving,
            so that every image gets the same shape).
        name: dataset name recorded in the bundle.

    Returns:
        The bundle; images ``(N, 3, H, W)``.

    Raises:
        FileNotFoundError: a folder is missing or holds no class folder with images.
        ValueError: train and test have different class folders, or a bad ``image_size``.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(side <= 0 for side in size):
        raise ValueError(f"image_size must be a positive int or (H, W); got {image_size!r}")
    height, width = size
    for split, directory in (("train", train_dir), ("test", test_dir)):
        if not Path(directory).is_dir():
            raise FileNotFoundError(f"{split} image folder {directory} does not exist")

    transform = transforms.Compose([transforms.Resize((height, width)), transforms.ToTensor()])
    train = tv_datasets.ImageFolder(str(train_dir), transform=transform)
    test = tv_datasets.ImageFolder(str(test_dir), transform=transform)
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise ValueError(
            f"train and test folders must hold the same class folders; only in {train_dir}: "
            f"{only_train or 'none'}; only in {test_dir}: {only_test or 'none'}"
        )
    logger.info(
        "Reading %d train and %d test images of %d classes from %s and %s",
        len(train),
        len(test),
        len(train.classes),
        train_dir,
        test_dir,
    )
    train_x = _materialise(train, (height, width), "train")
    test_x = _materialise(test, (height, width), "test")
    mean, std = channel_stats(train_x)
    return make_bundle(
        name,
        PixelData(
            train_x,
            torch.as_tensor(train.targets, dtype=torch.int64),
            test_x,
            torch.as_tensor(test.targets, dtype=torch.int64),
        ),
        num_classes=len(train.classes),
        mean=mean,
        std=std,
        class_names=tuple(train.classes),
    )
