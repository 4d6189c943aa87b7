"""In-memory image datasets: the one data representation the engine consumes.

Every dataset conun knows (digits, Fashion-MNIST, CIFAR, SVHN, image folders, a user's tensors)
is materialised once into normalised float32 tensors. The datasets of the paper all fit in memory
(CIFAR-10 train is 600 MB as float32), and index-based batching on tensors is several times faster
on a CPU than a per-sample ``DataLoader``; it also makes every batch a pure function of indices,
which is what makes runs reproducible and forget/retain splits cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class ArrayDataset:
    """Images and labels held as tensors.

    Attributes:
        images: ``(N, C, H, W)`` float32, already normalised with the dataset's mean and std.
        labels: ``(N,)`` int64 class indices in ``[0, num_classes)``.
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W); got shape {tuple(self.images.shape)}")
        if self.labels.ndim != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"labels must be (N,) with N = {self.images.shape[0]}; "
                f"got shape {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: Tensor | list[int]) -> ArrayDataset:
        """The samples at ``indices`` (a new dataset; tensors are gathered, not views)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return ArrayDataset(self.images[index], self.labels[index])


@dataclass(frozen=True)
class DatasetBundle:
    """A dataset's train and test sets with what models and methods need to know about it.

    Attributes:
        name: registry name (``"digits"``, ``"fashion-mnist"``, ...).
        train: the full training set; forget/retain/validation index into it.
        test: the test set.
        num_classes: C.
        mean: per-channel mean used to normalise (for un-normalising figures).
        std: per-channel standard deviation used to normalise.
        class_names: human-readable class names, ``len == num_classes``.
    """

    name: str
    train: ArrayDataset
    test: ArrayDataset
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = field(default=())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        _, c, h, w = self.train.images.shape
        return (int(c), int(h), int(w))
