"""Where the built-in datasets' files are, and how they are read.

Every loader returns :class:`~conun.data.pixels.PixelData` (images scaled to ``[0, 1]``); the
registry normalises them. This library often runs on machines without network access, so a
missing dataset raises :class:`DatasetNotFoundError` before anything is read or written, with one
message that says which directories were searched and exactly which files to put where.

Data directories: ``data_dir`` when given, else ``$CONUN_DATA``, else ``~/.cache/conun``
(:func:`default_data_root`). Fashion-MNIST is also looked for in a few more places, including
``/usr/share/datasets/fashion-mnist`` where the Debian package ``dataset-fashion-mnist`` puts it.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.datasets as tv_datasets
from torch import Tensor

from conun.data.errors import DatasetNotFoundError
from conun.data.pixels import PixelData, to_unit_float

logger = logging.getLogger(__name__)

DATA_ENV_VAR = "CONUN_DATA"
"""Environment variable naming the default data directory."""

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the IDX files."""

# The digits split is fixed, independent of any run seed, so that every run and every user
# evaluates on the same 360 test images.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_VALUE = 16.0  # scikit-learn's digits are 8x8 counts of 4x4 blocks: values 0..16

FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_NO_DOWNLOAD = (
    "No download was tried (download=False). Without network access, copy the files there by hand."
)
_CHECK_ONLY = "Only the presence of the files was checked; nothing was downloaded."


def default_data_root(data_dir: str | Path | None = None) -> Path:
    """The directory datasets are read from and downloaded into.

    Args:
        data_dir: an explicit directory; wins when given.

    Returns:
        ``data_dir``, else ``$CONUN_DATA``, else ``~/.cache/conun``.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "conun"


def _not_found_message(
    dataset: str,
    *,
    searched: list[Path],
    fill_dir: Path,
    files: tuple[str, ...],
    origin: str,
    reason: str,
) -> str:
    searched_lines = "\n".join(f"    {directory}" for directory in searched)
    return (
        f"dataset {dataset!r} not found.\n"
        f"  Searched:\n{searched_lines}\n"
        f"  Put these files in {fill_dir}: {', '.join(files)}\n"
        f"  They come from {origin}.\n"
        f"  {reason}"
    )


def _download_failed(root: Path, error: Exception) -> str:
    return (
        f"Downloading into {root} failed ({type(error).__name__}: {error}); this machine probably "
        "has no network access. Copy the files there by hand."
    )


# --- digits (shipped inside scikit-learn) ---------------------------------------------------


def load_digits() -> PixelData:
    """scikit-learn's 8x8 digits with the fixed stratified 1437/360 train/test split.

    Returns:
        Train ``(1437, 1, 8, 8)`` and test ``(360, 1, 8, 8)`` images in ``[0, 1]`` (the raw values
        0..16 divided by 16), labels 0..9.
    """
    # Imported here: scikit-learn's dataset modules take about a second to import, which every
    # `import conun.data` (and so every CLI start) would otherwise pay for one small dataset.
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_load_digits()
    images = torch.from_numpy(digits.images).unsqueeze(1)  # (1797, 1, 8, 8) float64, 0..16
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_index, test_index = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    train_index = torch.from_numpy(train_index)
    test_index = torch.from_numpy(test_index)
    return PixelData(
        train_images=to_unit_float(images[train_index], DIGITS_MAX_VALUE),
        train_labels=labels[train_index],
        test_images=to_unit_float(images[test_index], DIGITS_MAX_VALUE),
        test_labels=labels[test_index],
    )


# --- Fashion-MNIST (IDX files, read with numpy) ---------------------------------------------

_IDX_UNSIGNED_BYTE = 0x08


_FASHION_MNIST_NUM_CLASSES = 10


def read_idx(path: Path) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Read an IDX file of unsigned bytes (the (Fashion-)MNIST format), gzipped or not.

    The header is two zero bytes, a data-type byte (0x08 = unsigned byte), the number of
    dimensions, then one big-endian int32 size per dimension; the values follow.

    Args:
        path: the file; a ``.gz`` suffix means gzip-compressed.

    Returns:
        The array with the shape the header declares, e.g. ``(N, 28, 28)`` or ``(N,)``.

    Raises:
        ValueError: the file is not an IDX file of unsigned bytes, or is truncated.
    """
    raw = path.read_bytes()
    try:
        # A bytearray, not bytes: numpy arrays over immutable bytes are read-only, and torch
        # warns about (and cannot safely wrap) read-only arrays.
        data = bytearray(gzip.decompress(raw) if path.suffix == ".gz" else raw)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path} is not a complete gzip file ({error}): replace it") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file: its first two bytes must be zero")
    if data[2] != _IDX_UNSIGNED_BYTE:
        raise ValueError(
            f"{path}: IDX data type 0x{data[2]:02x} is not supported; only unsigned bytes (0x08)"
        )
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes)")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    values = np.frombuffer(data, dtype=np.uint8, offset=header_size)
    if values.size != math.prod(shape):
        raise ValueError(
            f"{path}: the header declares shape {shape} ({math.prod(shape)} values) but the file "
            f"holds {values.size} values"
        )
    return values.reshape(shape)


def fashion_mnist_search_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Directories searched for the Fashion-MNIST IDX files, in order.

    For each root (``data_dir``, ``$CONUN_DATA``, ``~/.cache/conun``): the root itself,
    ``root/fashion-mnist``, and ``root/FashionMNIST/raw`` (where torchvision downloads to); then
    ``/usr/share/datasets/fashion-mnist``.
    """
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    from_env = os.environ.get(DATA_ENV_VAR)
    if from_env:
        roots.append(Path(from_env).expanduser())
    roots.append(Path.home() / ".cache" / "conun")
    candidates = [
        directory
        for root in roots
        for directory in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw")
    ]
    candidates.append(FASHION_MNIST_SYSTEM_DIR)
    return list(dict.fromkeys(candidates))  # drop repeats, keep order


def _idx_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate_fashion_mnist(data_dir: str | Path | None = None) -> Path | None:
    """The first searched directory holding all four Fashion-MNIST files, or None."""
    for directory in fashion_mnist_search_dirs(data_dir):
        if all(_idx_file(directory, name) is not None for name in FASHION_MNIST_FILES):
            return directory
    return None


def _fashion_mnist_not_found(data_dir: str | Path | None, reason: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        _not_found_message(
            "fashion-mnist",
            searched=fashion_mnist_search_dirs(data_dir),
            fill_dir=default_data_root(data_dir) / "fashion-mnist",
            files=FASHION_MNIST_FILES,
            origin=(
                "https://github.com/zalandoresearch/fashion-mnist (raw or .gz), or the Debian "
                "package dataset-fashion-mnist"
            ),
            reason=reason,
        )
    )


def check_fashion_mnist(data_dir: str | Path | None = None) -> None:
    """Raise :class:`DatasetNotFoundError` unless the Fashion-MNIST files are somewhere searched."""
    if locate_fashion_mnist(data_dir) is None:
        raise _fashion_mnist_not_found(data_dir, _CHECK_ONLY)


def load_fashion_mnist(data_dir: str | Path | None = None, *, download: bool = True) -> PixelData:
    """Fashion-MNIST from IDX files (raw or ``.gz``), downloading only when allowed and needed.

    Args:
        data_dir: searched first (see :func:`fashion_mnist_search_dirs`); also the download root.
        download: when the files are nowhere, try torchvision's download into
            :func:`default_data_root`.

    Returns:
        Train ``(60000, 1, 28, 28)`` and test ``(10000, 1, 28, 28)`` images in ``[0, 1]``.

    Raises:
        DatasetNotFoundError: the files are missing and were not (or could not be) downloaded.
        ValueError: a file is not a valid IDX file, or images and labels disagree in count.
    """
    directory = locate_fashion_mnist(data_dir)
    if directory is None:
        if not download:
            raise _fashion_mnist_not_found(data_dir, _NO_DOWNLOAD)
        root = default_data_root(data_dir)
        logger.info("Fashion-MNIST not found; downloading it into %s", root)
        try:
            for train in (True, False):
                tv_datasets.FashionMNIST(str(root), train=train, download=True)
        except Exception as error:  # URLError, RuntimeError, OSError...: all mean "no data"
            raise _fashion_mnist_not_found(data_dir, _download_failed(root, error)) from error
        directory = locate_fashion_mnist(data_dir)
        if directory is None:
            raise _fashion_mnist_not_found(data_dir, f"A download into {root} left files missing.")

    logger.info("Reading Fashion-MNIST from %s", directory)
    arrays = []
    for name in FASHION_MNIST_FILES:
        path = _idx_file(directory, name)
        assert path is not None  # locate_fashion_mnist checked all four
        arrays.append(read_idx(path))
    train_images, train_labels, test_images, test_labels = arrays
    for split, images, labels in (
        ("train", train_images, train_labels),
        ("t10k", test_images, test_labels),
    ):
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"Fashion-MNIST in {directory}: {split} images must be (N, H, W) and labels (N,) "
                f"with the same N; got {images.shape} and {labels.shape}"
            )
        if labels.size == 0 or int(labels.max()) >= _FASHION_MNIST_NUM_CLASSES:
            raise ValueError(
                f"Fashion-MNIST in {directory}: {split} labels must be 0..."
                f"{_FASHION_MNIST_NUM_CLASSES - 1}, at least one; the files are corrupt"
            )
    return PixelData(
        train_images=to_unit_float(torch.from_numpy(train_images).unsqueeze(1), 255.0),
        train_labels=torch.from_numpy(train_labels.astype(np.int64)),
        test_images=to_unit_float(torch.from_numpy(test_images).unsqueeze(1), 255.0),
        test_labels=torch.from_numpy(test_labels.astype(np.int64)),
    )


# --- datasets read by torchvision from one data directory -----------------------------------


@dataclass(frozen=True)
class TorchvisionSource:
    """A dataset read by a ``torchvision.datasets`` class from one data directory.

    Attributes:
        name: registry name, for messages.
        folder: where torchvision expects the files, relative to the data directory.
        files: the files torchvision needs in ``folder``.
        origin: where to get them, for the error message.
        open_split: ``(root, train, download) -> torchvision dataset``.
        to_tensors: torchvision dataset -> ``(images (N, C, H, W) uint8, labels (N,) int64)``,
            from its whole-dataset arrays, never sample by sample.
    """

    name: str
    folder: str
    files: tuple[str, ...]
    origin: str
    open_split: Callable[[Path, bool, bool], Any]
    to_tensors: Callable[[Any], tuple[Tensor, Tensor]]

    def missing_files(self, root: Path) -> list[str]:
        """The expected files absent from ``root / folder`` (a cheap presence check)."""
        return [name for name in self.files if not (root / self.folder / name).is_file()]

    def _not_found(self, root: Path, reason: str) -> DatasetNotFoundError:
        message = _not_found_message(
            self.name,
            searched=[root],
            fill_dir=root / self.folder,
            files=self.files,
            origin=self.origin,
            reason=reason,
        )
        missing = self.missing_files(root)
        if len(missing) < len(self.files):
            message += f"\n  Present but incomplete; missing: {', '.join(missing)}"
        return DatasetNotFoundError(message)

    def check_available(self, data_dir: str | Path | None = None) -> None:
        """Raise :class:`DatasetNotFoundError` unless every expected file is present."""
        root = default_data_root(data_dir)
        if self.missing_files(root):
            raise self._not_found(root, _CHECK_ONLY)

    def load(self, data_dir: str | Path | None = None, *, download: bool = True) -> PixelData:
        """Read train and test sets, downloading first only when files are missing and allowed.

        Args:
            data_dir: the data directory (default: :func:`default_data_root`).
            download: when files are missing, let torchvision download them into it.

        Returns:
            Images in ``[0, 1]``, ``(N, C, H, W)``; labels ``(N,)`` int64.

        Raises:
            DatasetNotFoundError: files missing and not downloaded, or rejected by torchvision.
        """
        root = default_data_root(data_dir)
        if self.missing_files(root):
            if not download:
                raise self._not_found(root, _NO_DOWNLOAD)
            logger.info("%s not found in %s; downloading it", self.name, root)
            try:
                for train in (True, False):
                    self.open_split(root, train, True)
            except Exception as error:  # URLError, RuntimeError, OSError...: all mean "no data"
                raise self._not_found(root, _download_failed(root, error)) from error

        logger.info("Reading %s from %s", self.name, root / self.folder)
        train_images, train_labels = self._read(root, train=True)
        test_images, test_labels = self._read(root, train=False)
        return PixelData(
            train_images=to_unit_float(train_images, 255.0),
            train_labels=train_labels,
            test_images=to_unit_float(test_images, 255.0),
            test_labels=test_labels,
        )

    def _read(self, root: Path, *, train: bool) -> tuple[Tensor, Tensor]:
        try:
            dataset = self.open_split(root, train, False)
        except (RuntimeError, AssertionError, ValueError, IndexError, OSError, EOFError) as error:
            # The files exist (checked above), so torchvision rejected their content: CIFAR and
            # SVHN are verified against MD5 sums.
            raise DatasetNotFoundError(
                f"dataset {self.name!r}: the files in {root / self.folder} are present but "
                f"torchvision rejected them ({error}). They are probably incomplete or corrupted: "
                f"replace them with the original files from {self.origin}."
            ) from error
        return self.to_tensors(dataset)


def _mnist_tensors(dataset: Any) -> tuple[Tensor, Tensor]:
    # torchvision keeps MNIST as (N, 28, 28) uint8 and (N,) int64 tensors.
    return dataset.data.unsqueeze(1), dataset.targets.to(torch.int64)


def _cifar_tensors(dataset: Any) -> tuple[Tensor, Tensor]:
    # torchvision keeps CIFAR as an (N, 32, 32, 3) uint8 array and a list of ints.
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)
    return images, torch.as_tensor(dataset.targets, dtype=torch.int64)


def _svhn_tensors(dataset: Any) -> tuple[Tensor, Tensor]:
    # torchvision keeps SVHN as an (N, 3, 32, 32) uint8 array and int64 labels, with the file's
    # label 10 for the digit 0 already mapped to 0.
    labels = np.asarray(dataset.labels, dtype=np.int64).reshape(-1)
    return torch.from_numpy(dataset.data), torch.from_numpy(labels)


MNIST = TorchvisionSource(
    name="mnist",
    folder="MNIST/raw",
    files=FASHION_MNIST_FILES,  # MNIST uses the same four IDX file names
    origin="https://ossci-datasets.s3.amazonaws.com/mnist/ (gunzip the four .gz files)",
    open_split=lambda root, train, download: tv_datasets.MNIST(
        str(root), train=train, download=download
    ),
    to_tensors=_mnist_tensors,
)

CIFAR10 = TorchvisionSource(
    name="cifar10",
    folder="cifar-10-batches-py",
    files=(*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
    origin=(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract it in the data directory)"
    ),
    open_split=lambda root, train, download: tv_datasets.CIFAR10(
        str(root), train=train, download=download
    ),
    to_tensors=_cifar_tensors,
)

CIFAR100 = TorchvisionSource(
    name="cifar100",
    folder="cifar-100-python",
    files=("train", "test", "meta"),
    origin=(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz "
        "(extract it in the data directory)"
    ),
    open_split=lambda root, train, download: tv_datasets.CIFAR100(
        str(root), train=train, download=download
    ),
    to_tensors=_cifar_tensors,
)

SVHN = TorchvisionSource(
    name="svhn",
    folder="",
    files=("train_32x32.mat", "test_32x32.mat"),
    origin="http://ufldl.stanford.edu/housenumbers/ (format 2, cropped digits)",
    open_split=lambda root, train, download: tv_datasets.SVHN(
        str(root), split="train" if train else "test", download=download
    ),
    to_tensors=_svhn_tensors,
)
