"""Random images written in the real on-disk formats of the datasets this machine cannot obtain
(CIFAR-10's Python batches, SVHN's .mat files, Mini-ImageNet's JPEG folders), so that the real
loaders read them: only the pixels and the number of images differ from the real files."""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torchvision
from PIL import Image

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def write_pickle(path: Path, content: dict[str, object]) -> None:
    """``content`` as a protocol-2 pickle with str keys. The real files are Python 2 pickles;
    torchvision reads them with encoding="latin1", which turns their keys into str, so str keys
    give torchvision exactly what it sees there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        pickle.dump(content, file, protocol=2)


def write_cifar10(
    root: Path, *, per_batch: int, test: int, seed: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``root/cifar-10-batches-py``: five training batches of ``per_batch`` images, a test batch
    of ``test``, and ``batches.meta``. Labels cycle through the ten classes after a random
    start, so every class is in every split once there are ten images.

    Returns:
        ``(train_images (5 * per_batch, 3, 32, 32) uint8, train_labels, test_images,
        test_labels)``.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    train_x, train_y = [], []
    for batch in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)  # R, G, B planes
        labels = ((np.arange(per_batch) + rng.integers(10)) % 10).tolist()
        write_pickle(folder / f"data_batch_{batch}", {"data": data, "labels": labels})
        train_x.append(data)
        train_y += labels
    test_x = rng.integers(0, 256, (test, 3072), dtype=np.uint8)
    test_y = ((np.arange(test) + rng.integers(10)) % 10).tolist()
    write_pickle(folder / "test_batch", {"data": test_x, "labels": test_y})
    write_pickle(folder / "batches.meta", {"label_names": list(CIFAR10_CLASSES)})
    return (
        np.concatenate(train_x).reshape(-1, 3, 32, 32),
        np.array(train_y),
        test_x.reshape(-1, 3, 32, 32),
        np.array(test_y),
    )


def write_svhn(root: Path, digits: dict[str, list[int]], *, seed: int = 3) -> dict[str, np.ndarray]:
    """``root/{split}_32x32.mat`` for each split of ``digits`` (the digit of each image): ``X``
    ``(32, 32, 3, N)`` uint8 and ``y`` ``(N, 1)`` with 10 standing for the digit 0, as in the
    real files.

    Returns:
        split -> its images ``(N, 3, 32, 32)`` uint8.
    """
    rng = np.random.default_rng(seed)
    images = {}
    for split, labels in digits.items():
        pixels = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
        file_labels = np.array([[10 if d == 0 else d] for d in labels], dtype=np.uint8)
        scipy.io.savemat(
            root / f"{split}_32x32.mat", {"X": pixels.transpose(2, 3, 1, 0), "y": file_labels}
        )
        images[split] = pixels
    return images


def write_mini_imagenet(
    root: Path, *, train: int, val: int = 1, test: int = 1, size: int = 84, seed: int = 5
) -> Path:
    """``root/mini-imagenet/{train,val,test}/n000000XX/<i>.jpg``: the 100 classes (named as
    ImageNet's WordNet ids are) with ``train``/``val``/``test`` JPEG images of ``size`` x
    ``size`` each, as the usual Mini-ImageNet folders hold them."""
    rng = np.random.default_rng(seed)
    base = root / "mini-imagenet"
    for split, count in (("train", train), ("val", val), ("test", test)):
        for index in range(100):
            folder = base / split / f"n{index:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"n{index:08d}_{i:05d}.jpg", quality=90)
    return base


def file_exists(fpath: str | Path, md5: str | None = None) -> bool:
    """torchvision's ``check_integrity`` without its MD5 check."""
    return os.path.isfile(fpath)


@contextlib.contextmanager
def torchvision_md5_skipped() -> Iterator[None]:
    """torchvision verifies CIFAR and SVHN files against the MD5 sums of the real downloads,
    which synthetic files cannot match; inside this block it checks that they exist. Everything
    else (parsing, layout) is the real code."""

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torchvision.datasets.cifar, "check_integrity", file_exists)
        patch.setattr(torchvision.datasets.svhn, "check_integrity", file_exists)
        yield
