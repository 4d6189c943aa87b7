"""Datasets stored as image folders: ``folder:<dir>`` and ``mini-imagenet``.

The layout is torchvision's ``ImageFolder`` per split::

    <root>/train/<class>/<image>      required
    <root>/test/<class>/<image>       required, the same class folders
    <root>/val/<class>/<image>        optional, the same class folders

Class indices follow the sorted class folder names, which become the class names. Images are
read as RGB, resized to a square ``image_size`` (never aspect-preserving, so that every image
gets the same shape), held in memory and normalised with ImageNet's mean and std: the statistics
the pretrained backbones that such datasets are usually fine-tuned from expect, and known before
any image is read. ``val/`` is checked but not read: conun holds out its own seeded validation
split from ``train/`` (``validation_fraction``), recorded with every model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torchvision import datasets as tv_datasets
from torchvision import transforms
from tqdm import tqdm

from conun.data.errors import DatasetNotFoundError
from conun.data.pixels import PixelData

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_IMAGE_SIZE = 32
"""Side of the square images of a ``folder:<dir>`` dataset when no ``image_size`` is given."""

MINI_IMAGENET_DIR = "mini-imagenet"
MINI_IMAGENET_CLASSES = 100
MINI_IMAGENET_SIZE = 84

LAYOUT = (
    "{root}/train/<class>/<image> and {root}/test/<class>/<image> (the same class folders in "
    "both; {root}/val/<class>/<image> optional), images in any format PIL reads (JPEG, PNG, ...)"
)


@dataclass(frozen=True)
class FolderLayout:
    """An image-folder dataset found on disk (listed, not read).

    Attributes:
        root: the dataset directory.
        classes: the sorted class folder names.
        has_val: whether ``root/val`` exists.
    """

    root: Path
    classes: tuple[str, ...]
    has_val: bool


def _classes(directory: Path) -> tuple[str, ...]:
    return tuple(sorted(entry.name for entry in directory.iterdir() if entry.is_dir()))


def read_layout(root: Path, name: str, *, expected_classes: int | None = None) -> FolderLayout:
    """Check the folder layout of ``root`` by listing directories (no image is read).

    Args:
        root: the dataset directory.
        name: the dataset's name, for messages.
        expected_classes: the number of class folders the dataset must have, if fixed.

    Raises:
        DatasetNotFoundError: a split folder is missing or empty, the splits' class folders
            differ, or the number of classes is not ``expected_classes``; the message shows the
            expected layout.
    """
    layout = LAYOUT.format(root=root)

    def fail(problem: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(f"dataset {name!r}: {problem}.\n  Expected layout: {layout}")

    splits = {}
    for split in ("train", "test", "val"):
        directory = root / split
        if not directory.is_dir():
            if split == "val":
                continue
            raise fail(f"no folder {directory}")
        classes = _classes(directory)
        if not classes:
            raise fail(f"{directory} holds no class folders")
        splits[split] = classes
    for split, classes in splits.items():
        if classes != splits["train"]:
            only_split = sorted(set(classes) - set(splits["train"]))[:5]
            only_train = sorted(set(splits["train"]) - set(classes))[:5]
            raise fail(
                f"{split}/ and train/ must hold the same class folders; only in {split}/: "
                f"{only_split or 'none'}; only in train/: {only_train or 'none'}"
            )
    classes = splits["train"]
    if expected_classes is not None and len(classes) != expected_classes:
        raise fail(f"{root / 'train'} holds {len(classes)} class folders, not {expected_classes}")
    return FolderLayout(root=root, classes=classes, has_val="val" in splits)


def _decode(directory: Path, size: int, split: str) -> tuple[Tensor, Tensor]:
    """``(N, 3, size, size)`` float32 images in ``[0, 1]`` and ``(N,)`` int64 labels."""
    transform = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])
    try:
        dataset = tv_datasets.ImageFolder(str(directory), transform=transform)
    except FileNotFoundError as error:  # a class folder without images
        raise DatasetNotFoundError(f"{directory}: {error}") from None
    images = torch.empty((len(dataset), 3, size, size), dtype=torch.float32)
    # Files decode one by one; a preallocated tensor avoids holding N tensors and their stack.
    for index in tqdm(range(len(dataset)), desc=f"decoding {split} images", leave=False):
        images[index] = dataset[index][0]
    return images, torch.as_tensor(dataset.targets, dtype=torch.int64)


def load_folder_pixels(layout: FolderLayout, size: int) -> PixelData:
    """Read and resize every image of the train and test folders.

    Args:
        layout: the checked layout (:func:`read_layout`).
        size: side of the square images.

    Returns:
        Images ``(N, 3, size, size)`` in ``[0, 1]``; labels index ``layout.classes``.
    """
    logger.info("Reading images of %d classes from %s", len(layout.classes), layout.root)
    if layout.has_val:
        logger.info(
            "%s/val is not read: the validation split is held out from train/ (seeded)",
            layout.root,
        )
    train_images, train_labels = _decode(layout.root / "train", size, "train")
    test_images, test_labels = _decode(layout.root / "test", size, "test")
    return PixelData(train_images, train_labels, test_images, test_labels)


__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MINI_IMAGENET_CLASSES",
    "MINI_IMAGENET_DIR",
    "MINI_IMAGENET_SIZE",
    "FolderLayout",
    "load_folder_pixels",
    "read_layout",
]
