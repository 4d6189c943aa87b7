"""The dataset registry: names -> loaders, and what is known about each dataset up front.

Loading goes ``name -> registered loader -> PixelData (images in [0, 1]) -> normalised bundle``.
:func:`dataset_info` answers shape and class questions without touching any file, so configs and
checkpoints can be validated before any work; :func:`check_dataset_available` checks that the
files are in place, cheaply, before a model is built or anything is written.

A new dataset is one decorated function::

    @register_dataset("my-data", info=DatasetInfo(num_classes=3, input_shape=(1, 16, 16), ...))
    def load_my_data(data_dir: Path | None, download: bool) -> PixelData: ...

Image folders are datasets too: ``folder:<dir>`` names any directory in the ImageFolder layout,
and ``mini-imagenet`` is one under the data directory (:mod:`conun.data.folders`). Their entries
are made when asked for, from a listing of the folders, since their classes live on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conun.data import folders, sources
from conun.data.arrays import DatasetBundle
from conun.data.errors import UnknownDatasetError
from conun.data.pixels import PixelData, make_bundle

logger = logging.getLogger(__name__)

Loader = Callable[[Path | None, bool], PixelData]
"""``(data_dir, download) -> PixelData``; raises DatasetNotFoundError when files are missing."""

AvailabilityCheck = Callable[[Path | None], None]
"""``(data_dir) -> None``; raises DatasetNotFoundError when files are missing, reads nothing."""


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset without loading it.

    Attributes:
        num_classes: C.
        input_shape: ``(C_in, H, W)`` of one image.
        mean: per-channel mean used to normalise the ``[0, 1]`` pixels.
        std: per-channel standard deviation used to normalise.
        class_names: C human-readable names.
    """

    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        channels = self.input_shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(
                f"mean and std need one value per channel ({channels}); "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for num_classes={self.num_classes}"
            )


def _always_available(data_dir: Path | None) -> None:
    """For datasets shipped inside a dependency: there are no files to check."""


@dataclass(frozen=True)
class RegisteredDataset:
    """A registry entry.

    Attributes:
        name: the registry name.
        info: shapes, classes and normalisation constants.
        load: reads the pixels (may download).
        check_available: cheap presence check of the files (never downloads).
    """

    name: str
    info: DatasetInfo
    load: Loader
    check_available: AvailabilityCheck


DATASETS: dict[str, RegisteredDataset] = {}
"""Every registered dataset by name; filled by :func:`register_dataset`."""

FolderResolver = Callable[[str, Path | None, int | None], RegisteredDataset]
"""``(argument, data_dir, image_size) -> entry`` of an image-folder dataset; raises
DatasetNotFoundError when the folders are not in place."""

FOLDER_PREFIX = "folder:"
"""``folder:<dir>`` names the image-folder dataset in ``<dir>``."""


def register_dataset(
    name: str,
    *,
    info: DatasetInfo,
    check_available: AvailabilityCheck = _always_available,
) -> Callable[[Loader], Loader]:
    """Register the decorated loader under ``name``.

    Args:
        name: registry name (lowercase, as users type it in configs).
        info: the dataset's shapes, classes and normalisation constants.
        check_available: presence check of the loader's files; default: nothing to check.

    Returns:
        A decorator that registers the loader and returns it unchanged.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(load: Loader) -> Loader:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = RegisteredDataset(name, info, load, check_available)
        return load

    return decorator


def _folder_dataset(
    name: str, root: Path, image_size: int, expected_classes: int | None = None
) -> RegisteredDataset:
    layout = folders.read_layout(root, name, expected_classes=expected_classes)
    info = DatasetInfo(
        num_classes=len(layout.classes),
        input_shape=(3, image_size, image_size),
        mean=folders.IMAGENET_MEAN,
        std=folders.IMAGENET_STD,
        class_names=layout.classes,
    )
    return RegisteredDataset(
        name,
        info,
        load=lambda data_dir, download: folders.load_folder_pixels(layout, image_size),
        check_available=_always_available,  # read_layout has checked the folders
    )


def _folder_source(
    argument: str, data_dir: Path | None, image_size: int | None
) -> RegisteredDataset:
    return _folder_dataset(
        FOLDER_PREFIX + argument,
        Path(argument).expanduser(),
        image_size or folders.DEFAULT_IMAGE_SIZE,
    )


def _mini_imagenet(
    argument: str, data_dir: Path | None, image_size: int | None
) -> RegisteredDataset:
    # 100 classes of ImageNet at 84x84 (Vinyals et al.), split per class into train/val/test.
    return _folder_dataset(
        "mini-imagenet",
        sources.default_data_root(data_dir) / folders.MINI_IMAGENET_DIR,
        image_size or folders.MINI_IMAGENET_SIZE,
        expected_classes=folders.MINI_IMAGENET_CLASSES,
    )


FOLDER_DATASETS: dict[str, FolderResolver] = {"mini-imagenet": _mini_imagenet}
"""Image-folder datasets with a name, found under the data directory."""


def available_datasets() -> list[str]:
    """The registered dataset names, sorted (``folder:<dir>`` is accepted besides these)."""
    return sorted([*DATASETS, *FOLDER_DATASETS])


def is_dataset_name(name: str) -> bool:
    """Whether ``name`` is a registered dataset or ``folder:<dir>`` (not checking the files)."""
    if name.startswith(FOLDER_PREFIX):
        return bool(name[len(FOLDER_PREFIX) :].strip())
    return name in DATASETS or name in FOLDER_DATASETS


def _entry(
    name: str, data_dir: Path | None = None, image_size: int | None = None
) -> RegisteredDataset:
    if name.startswith(FOLDER_PREFIX) and name[len(FOLDER_PREFIX) :].strip():
        return _folder_source(name[len(FOLDER_PREFIX) :], data_dir, image_size)
    if name in FOLDER_DATASETS:
        return FOLDER_DATASETS[name]("", data_dir, image_size)
    try:
        entry = DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; registered datasets: {', '.join(available_datasets())}, "
            "or folder:<dir> for an image folder. For your own data in memory use "
            "from_tensors()."
        ) from None
    if image_size is not None and image_size != entry.info.input_shape[1]:
        raise ValueError(
            f"image_size={image_size}: dataset {name!r} comes in "
            f"{entry.info.input_shape[1]}x{entry.info.input_shape[2]} images; image_size "
            "resizes image-folder datasets only (folder:<dir>, " + ", ".join(FOLDER_DATASETS) + ")"
        )
    return entry


def _as_path(data_dir: str | Path | None) -> Path | None:
    return None if data_dir is None else Path(data_dir)


def dataset_info(
    name: str, *, data_dir: str | Path | None = None, image_size: int | None = None
) -> DatasetInfo:
    """Shapes, classes and normalisation constants of ``name``, without loading anything
    (an image-folder dataset lists its class folders).

    Args:
        name: a registered name or ``folder:<dir>``.
        data_dir: where a named image-folder dataset is looked for.
        image_size: side an image-folder dataset is resized to.

    Raises:
        UnknownDatasetError: ``name`` is not registered.
        DatasetNotFoundError: an image-folder dataset's folders are not in place.
    """
    return _entry(name, _as_path(data_dir), image_size).info


def check_dataset_available(
    name: str, data_dir: str | Path | None = None, image_size: int | None = None
) -> None:
    """Check cheaply that the files of ``name`` are in place; reads and writes nothing.

    Call it before building models or creating run directories. It never downloads, so with
    downloads allowed a missing dataset may still be fetched by :func:`load_dataset`.

    Raises:
        UnknownDatasetError: ``name`` is not registered.
        DatasetNotFoundError: files are missing; the message says which, and where to put them.
    """
    _entry(name, _as_path(data_dir), image_size).check_available(_as_path(data_dir))


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    image_size: int | None = None,
) -> DatasetBundle:
    """Load a registered dataset into memory as normalised float32 tensors.

    Args:
        name: a name from :func:`available_datasets`.
        data_dir: where the files are (default: ``$CONUN_DATA``, else ``~/.cache/conun``).
        download: when files are missing, try to download them (needs network access).
        image_size: side of the square images an image-folder dataset is resized to (default:
            32 for ``folder:<dir>``, 84 for ``mini-imagenet``); other datasets take None only.

    Returns:
        The bundle; images ``(N, C, H, W)`` float32 normalised with the dataset's mean and std.

    Raises:
        UnknownDatasetError: ``name`` is not registered.
        DatasetNotFoundError: files are missing and could not be downloaded.
    """
    entry = _entry(name, _as_path(data_dir), image_size)
    pixels = entry.load(_as_path(data_dir), download)
    info = entry.info
    shape = tuple(pixels.train_images.shape[1:])
    if shape != info.input_shape:
        raise ValueError(
            f"dataset {name!r}: the loader produced images of shape {shape}, but the registry "
            f"declares {info.input_shape}"
        )
    bundle = make_bundle(
        name,
        pixels,
        num_classes=info.num_classes,
        mean=info.mean,
        std=info.std,
        class_names=info.class_names,
    )
    logger.info("Loaded %s: %d train, %d test images", name, len(bundle.train), len(bundle.test))
    return bundle


# --- built-in datasets ----------------------------------------------------------------------

_DIGIT_NAMES = tuple(str(digit) for digit in range(10))

_FASHION_MNIST_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

# CIFAR-100's fine labels in the order of the dataset's ``meta`` file (alphabetical).
_CIFAR100_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip


@register_dataset(
    "digits",
    info=DatasetInfo(
        num_classes=10,
        input_shape=(1, 8, 8),
        # Pixels scaled 0..16 -> [0, 1]; mean and population std of the fixed 1437-image train
        # split (0.30538, 0.37612).
        mean=(0.3054,),
        std=(0.3761,),
        class_names=_DIGIT_NAMES,
    ),
)
def _load_digits(data_dir: Path | None, download: bool) -> PixelData:
    return sources.load_digits()  # ships inside scikit-learn: no directory, no download


@register_dataset(
    "fashion-mnist",
    info=DatasetInfo(
        num_classes=10,
        input_shape=(1, 28, 28),
        mean=(0.2860,),
        std=(0.3530,),
        class_names=_FASHION_MNIST_NAMES,
    ),
    check_available=sources.check_fashion_mnist,
)
def _load_fashion_mnist(data_dir: Path | None, download: bool) -> PixelData:
    return sources.load_fashion_mnist(data_dir, download=download)


@register_dataset(
    "mnist",
    info=DatasetInfo(
        num_classes=10,
        input_shape=(1, 28, 28),
        mean=(0.1307,),
        std=(0.3081,),
        class_names=_DIGIT_NAMES,
    ),
    check_available=sources.MNIST.check_available,
)
def _load_mnist(data_dir: Path | None, download: bool) -> PixelData:
    return sources.MNIST.load(data_dir, download=download)


@register_dataset(
    "cifar10",
    info=DatasetInfo(
        num_classes=10,
        input_shape=(3, 32, 32),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        class_names=_CIFAR10_NAMES,
    ),
    check_available=sources.CIFAR10.check_available,
)
def _load_cifar10(data_dir: Path | None, download: bool) -> PixelData:
    return sources.CIFAR10.load(data_dir, download=download)


@register_dataset(
    "cifar100",
    info=DatasetInfo(
        num_classes=100,
        input_shape=(3, 32, 32),
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        class_names=_CIFAR100_NAMES,
    ),
    check_available=sources.CIFAR100.check_available,
)
def _load_cifar100(data_dir: Path | None, download: bool) -> PixelData:
    return sources.CIFAR100.load(data_dir, download=download)


@register_dataset(
    "svhn",
    info=DatasetInfo(
        num_classes=10,
        input_shape=(3, 32, 32),
        mean=(0.4377, 0.4438, 0.4728),
        std=(0.1980, 0.2010, 0.1970),
        class_names=_DIGIT_NAMES,
    ),
    check_available=sources.SVHN.check_available,
)
def _load_svhn(data_dir: Path | None, download: bool) -> PixelData:
    return sources.SVHN.load(data_dir, download=download)
