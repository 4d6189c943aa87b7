"""Dataset registry, loaders and users' own data.

Every file-based loader is tested on tiny files in the real formats, written here; no test
touches the network (download=False, or torchvision's download patched to fail).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image

from conun.data import registry, sources
from conun.data.custom import from_image_folder, from_tensors
from conun.data.errors import DatasetNotFoundError, UnknownDatasetError
from conun.data.pixels import PixelData
from conun.data.registry import (
    DatasetInfo,
    available_datasets,
    check_dataset_available,
    dataset_info,
    load_dataset,
    register_dataset,
)
from synthetic_datasets import file_exists, write_cifar10, write_pickle, write_svhn

BUILT_IN = ["cifar10", "cifar100", "digits", "fashion-mnist", "mnist", "svhn"]


@pytest.fixture(autouse=True)
def isolated_data_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the real ~/.cache/conun, $CONUN_DATA or /usr/share/datasets."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(sources.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system-datasets")


def _skip_md5_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", file_exists)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", file_exists)


def _normalised(pixels: np.ndarray, dataset: str) -> torch.Tensor:
    """Expected images: uint8 (N, C, H, W) -> [0, 1] -> (x - mean) / std per channel."""
    info = dataset_info(dataset)
    mean = torch.tensor(info.mean).view(-1, 1, 1)
    std = torch.tensor(info.std).view(-1, 1, 1)
    return (torch.from_numpy(pixels).float() / 255 - mean) / std


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: two zero bytes, type 0x08 (ubyte), ndim, big-endian int32 sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def _tiny_mnist_like(
    directory: Path, *, gz: bool, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = (
        rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 5, dtype=np.uint8),
        rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 3, dtype=np.uint8),
    )
    suffix = ".gz" if gz else ""
    for name, array in zip(sources.FASHION_MNIST_FILES, arrays, strict=True):
        _write_idx(directory / f"{name}{suffix}", array)
    return arrays


def _assert_loaded(
    bundle_name: str,
    data_dir: Path | None,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
) -> None:
    """load_dataset gives exactly the given uint8 (N, C, H, W) pixels, normalised, and labels."""
    bundle = load_dataset(bundle_name, data_dir=data_dir, download=False)
    info = dataset_info(bundle_name)
    assert bundle.name == bundle_name
    assert bundle.input_shape == info.input_shape
    assert bundle.num_classes == info.num_classes
    assert bundle.class_names == info.class_names
    assert bundle.train.images.dtype == torch.float32
    assert bundle.train.images.is_contiguous()
    torch.testing.assert_close(bundle.train.images, _normalised(train_x, bundle_name))
    torch.testing.assert_close(bundle.test.images, _normalised(test_x, bundle_name))
    assert bundle.train.labels.dtype == torch.int64
    assert bundle.train.labels.tolist() == train_y.tolist()
    assert bundle.test.labels.tolist() == test_y.tolist()


# --- registry ----------------------------------------------------------------------------


def test_registry_lists_the_built_in_datasets() -> None:
    # mini-imagenet is an image folder found under the data directory (test_folder_dataset.py).
    assert available_datasets() == sorted([*BUILT_IN, "mini-imagenet"])
    for name in BUILT_IN:
        info = dataset_info(name)
        assert len(info.class_names) == info.num_classes
        assert len(info.mean) == len(info.std) == info.input_shape[0]
    assert dataset_info("cifar100").num_classes == 100
    assert dataset_info("fashion-mnist").input_shape == (1, 28, 28)
    assert dataset_info("digits").input_shape == (1, 8, 8)


@pytest.mark.parametrize(
    "call",
    [
        lambda: load_dataset("imagenet", download=False),
        lambda: dataset_info("imagenet"),
        lambda: check_dataset_available("imagenet"),
    ],
)
def test_unknown_dataset_names_the_registered_ones(call: Callable[[], object]) -> None:
    with pytest.raises(UnknownDatasetError) as raised:
        call()
    assert isinstance(raised.value, ValueError)
    message = str(raised.value)
    assert "'imagenet'" in message
    for name in BUILT_IN:
        assert name in message


def test_register_dataset_adds_a_loader_and_refuses_duplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))
    info = DatasetInfo(
        num_classes=2, input_shape=(1, 2, 2), mean=(0.5,), std=(0.25,), class_names=("a", "b")
    )

    @register_dataset("toy", info=info)
    def load_toy(data_dir: Path | None, download: bool) -> PixelData:
        return PixelData(
            torch.full((2, 1, 2, 2), 0.75), torch.tensor([0, 1]),
            torch.full((1, 1, 2, 2), 0.25), torch.tensor([1]),
        )  # fmt: skip

    bundle = load_dataset("toy")
    assert bundle.train.images.eq(1.0).all() and bundle.test.images.eq(-1.0).all()
    assert "toy" in available_datasets()
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy", info=info)(load_toy)


# --- digits --------------------------------------------------------------------------------


def test_digits_loads_normalised_with_the_fixed_split() -> None:
    bundle = load_dataset("digits", download=False)
    assert bundle.train.images.shape == (1437, 1, 8, 8)
    assert bundle.test.images.shape == (360, 1, 8, 8)
    assert bundle.num_classes == 10
    assert bundle.train.labels.unique().tolist() == list(range(10))
    assert abs(float(bundle.train.images.mean())) < 1e-3
    assert abs(float(bundle.train.images.std()) - 1.0) < 1e-3
    again = load_dataset("digits")
    assert torch.equal(bundle.train.images, again.train.images)
    assert torch.equal(bundle.test.labels, again.test.labels)
    check_dataset_available("digits")  # nothing to check: ships with scikit-learn


# --- Fashion-MNIST -------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_fashion_mnist_reads_idx_files_from_data_dir(tmp_path: Path, gz: bool) -> None:
    arrays = _tiny_mnist_like(tmp_path / "data", gz=gz)
    train_x, train_y, test_x, test_y = arrays
    check_dataset_available("fashion-mnist", data_dir=tmp_path / "data")
    _assert_loaded(
        "fashion-mnist", tmp_path / "data", train_x[:, None], train_y, test_x[:, None], test_y
    )


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_fashion_mnist_is_found_through_conun_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool
) -> None:
    train_x, train_y, test_x, test_y = _tiny_mnist_like(tmp_path / "env" / "fashion-mnist", gz=gz)
    monkeypatch.setenv(sources.DATA_ENV_VAR, str(tmp_path / "env"))
    assert sources.locate_fashion_mnist() == tmp_path / "env" / "fashion-mnist"
    _assert_loaded("fashion-mnist", None, train_x[:, None], train_y, test_x[:, None], test_y)


def test_fashion_mnist_missing_names_every_searched_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sources.DATA_ENV_VAR, str(tmp_path / "env"))
    data_dir = tmp_path / "data"
    for call in (
        lambda: load_dataset("fashion-mnist", data_dir=data_dir, download=False),
        lambda: check_dataset_available("fashion-mnist", data_dir=data_dir),
    ):
        with pytest.raises(DatasetNotFoundError) as raised:
            call()
        message = str(raised.value)
        for directory in sources.fashion_mnist_search_dirs(data_dir):
            assert str(directory) in message
        assert str(tmp_path / "system-datasets") in message
        assert f"Put these files in {data_dir / 'fashion-mnist'}" in message
        for name in sources.FASHION_MNIST_FILES:
            assert name in message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_fashion_mnist_failed_download_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(self: object) -> None:
        raise URLError("no network in tests")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", no_network)
    with pytest.raises(DatasetNotFoundError, match=r"failed.*no network in tests"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "data", download=True)


def test_read_idx_rejects_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    _write_idx(path, np.zeros((2, 4, 4), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="declares shape"):
        sources.read_idx(path)
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        sources.read_idx(path)


REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def test_real_fashion_mnist_from_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not skipped when absent: `make test` installs the package (tools/install-system-packages).
    assert REAL_FASHION_MNIST.is_dir(), (
        f"{REAL_FASHION_MNIST} is absent: install Debian's dataset-fashion-mnist "
        "(`make test` does it through tools/install-system-packages)"
    )
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", REAL_FASHION_MNIST)
    check_dataset_available("fashion-mnist")
    bundle = load_dataset("fashion-mnist", download=False)
    assert bundle.train.images.shape == (60000, 1, 28, 28)
    assert bundle.test.images.shape == (10000, 1, 28, 28)
    assert bundle.train.labels.bincount().tolist() == [6000] * 10
    assert bundle.class_names[0] == "T-shirt/top" and bundle.class_names[9] == "Ankle boot"
    # The registered constants are this data's own statistics.
    assert abs(float(bundle.train.images.mean())) < 1e-3
    assert abs(float(bundle.train.images.std()) - 1.0) < 1e-3


# --- torchvision formats: MNIST, CIFAR-10, CIFAR-100, SVHN -------------------------------------


def test_mnist_reads_torchvision_raw_layout(tmp_path: Path) -> None:
    # torchvision 0.29 reads the uncompressed IDX files from <root>/MNIST/raw.
    train_x, train_y, test_x, test_y = _tiny_mnist_like(tmp_path / "MNIST" / "raw", gz=False)
    check_dataset_available("mnist", data_dir=tmp_path)
    _assert_loaded("mnist", tmp_path, train_x[:, None], train_y, test_x[:, None], test_y)


def _write_cifar10(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return write_cifar10(root, per_batch=2, test=3)


def test_cifar10_reads_the_python_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_md5_checks(monkeypatch)
    train_x, train_y, test_x, test_y = _write_cifar10(tmp_path)
    check_dataset_available("cifar10", data_dir=tmp_path)
    _assert_loaded("cifar10", tmp_path, train_x, train_y, test_x, test_y)


def test_cifar100_reads_fine_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_md5_checks(monkeypatch)
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    splits = {}
    for split, n in (("train", 4), ("test", 2)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        coarse = rng.integers(0, 20, n).tolist()
        write_pickle(folder / split, {"data": data, "fine_labels": fine, "coarse_labels": coarse})
        splits[split] = (data.reshape(-1, 3, 32, 32), np.array(fine))
    names = list(dataset_info("cifar100").class_names)
    write_pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": ["c"] * 20})
    _assert_loaded("cifar100", tmp_path, *splits["train"], *splits["test"])


def test_svhn_reads_mat_files_and_maps_label_10_to_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _skip_md5_checks(monkeypatch)
    digits = {"train": [0, 1, 9, 0], "test": [5, 0]}
    images = write_svhn(tmp_path, digits)
    expected = {split: (images[split], np.array(labels)) for split, labels in digits.items()}
    _assert_loaded("svhn", tmp_path, *expected["train"], *expected["test"])


def test_torchvision_md5_failure_is_a_clear_error(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)  # present, but not the real bytes: torchvision's MD5 check fails
    with pytest.raises(DatasetNotFoundError, match="corrupted") as raised:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert str(tmp_path / "cifar-10-batches-py") in str(raised.value)


EXPECTED_FILES = {
    "mnist": ("MNIST/raw", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "cifar10": ("cifar-10-batches-py", ["data_batch_1", "data_batch_5", "test_batch",
                                        "batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
    "svhn": ("", ["train_32x32.mat", "test_32x32.mat"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_missing_files_name_directory_and_files_and_write_nothing(
    tmp_path: Path, name: str
) -> None:
    folder, files = EXPECTED_FILES[name]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.raises(DatasetNotFoundError) as from_load:
        load_dataset(name, data_dir=data_dir, download=False)
    with pytest.raises(DatasetNotFoundError) as from_check:
        check_dataset_available(name, data_dir=data_dir)
    for message in (str(from_load.value), str(from_check.value)):
        assert f"'{name}'" in message
        assert f"Put these files in {data_dir / folder}" in message
        for file in files:
            assert file in message
    assert "No download was tried (download=False)" in str(from_load.value)
    assert list(data_dir.iterdir()) == []  # nothing written


def test_missing_files_default_to_conun_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sources.DATA_ENV_VAR, str(tmp_path / "env"))
    expected_dir = tmp_path / "env" / "cifar-10-batches-py"
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(expected_dir))):
        check_dataset_available("cifar10")


def test_failed_download_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(self: object) -> None:
        raise URLError("no network in tests")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", no_network)
    with pytest.raises(DatasetNotFoundError) as raised:
        load_dataset("cifar10", data_dir=tmp_path, download=True)
    message = str(raised.value)
    assert "failed" in message and "no network in tests" in message
    assert "batches.meta" in message


# --- users' own data -------------------------------------------------------------------------


def test_from_tensors_uint8_hw_images() -> None:
    generator = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (20, 6, 6), dtype=torch.uint8, generator=generator)
    test = torch.randint(0, 256, (5, 6, 6), dtype=torch.uint8, generator=generator)
    train_copy = train.clone()
    bundle = from_tensors(train, torch.arange(20) % 4, test, torch.tensor([0, 1, 2, 3, 3]))
    assert bundle.name == "tensors"
    assert bundle.train.images.shape == (20, 1, 6, 6) and bundle.test.images.shape == (5, 1, 6, 6)
    assert bundle.num_classes == 4 and bundle.class_names == ("0", "1", "2", "3")
    assert abs(float(bundle.train.images.mean())) < 1e-5
    assert abs(float(bundle.train.images.std(correction=0)) - 1.0) < 1e-5
    expected = (train.float() / 255 - bundle.mean[0]) / bundle.std[0]
    torch.testing.assert_close(bundle.train.images[:, 0], expected)
    assert torch.equal(train, train_copy)  # the caller's tensors are not modified


def test_from_tensors_float_nchw_without_normalisation() -> None:
    train = torch.rand(8, 3, 4, 4)
    bundle = from_tensors(
        train, torch.zeros(8, dtype=torch.int64), train[:2], torch.ones(2, dtype=torch.int64),
        name="mine", num_classes=5, normalize=False,
    )  # fmt: skip
    assert torch.equal(bundle.train.images, train)
    assert bundle.train.images.data_ptr() != train.data_ptr()
    assert bundle.mean == (0.0, 0.0, 0.0) and bundle.std == (1.0, 1.0, 1.0)
    assert bundle.num_classes == 5 and bundle.name == "mine"


def test_from_tensors_rejects_bad_input() -> None:
    images = torch.rand(4, 1, 3, 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        from_tensors(images, torch.tensor([0, 1, 2, 1]), images, torch.tensor([0, 1, 0, 1]),
                     num_classes=2)  # fmt: skip
    with pytest.raises(ValueError, match="one per image"):
        from_tensors(images, torch.tensor([0, 1]), images, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, C, H, W\)"):
        from_tensors(torch.rand(4, 9), torch.zeros(4, dtype=torch.int64), images,
                     torch.zeros(4, dtype=torch.int64))  # fmt: skip


def _write_pngs(root: Path, counts: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for class_name, count in counts.items():
        (root / class_name).mkdir(parents=True)
        for index in range(count):
            pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / class_name / f"{index}.png")


def test_from_image_folder(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", {"cat": 3, "dog": 2}, seed=0)
    _write_pngs(tmp_path / "test", {"cat": 1, "dog": 1}, seed=1)
    bundle = from_image_folder(tmp_path / "train", tmp_path / "test", image_size=8)
    assert bundle.name == "image-folder"
    assert bundle.class_names == ("cat", "dog") and bundle.num_classes == 2
    assert bundle.train.images.shape == (5, 3, 8, 8) and bundle.test.images.shape == (2, 3, 8, 8)
    assert bundle.train.labels.tolist() == [0, 0, 0, 1, 1]
    assert bundle.test.labels.tolist() == [0, 1]
    per_channel = bundle.train.images.mean(dim=(0, 2, 3))
    torch.testing.assert_close(per_channel, torch.zeros(3), atol=1e-5, rtol=0)
    rectangular = from_image_folder(tmp_path / "train", tmp_path / "test", image_size=(6, 4))
    assert rectangular.input_shape == (3, 6, 4)


def test_from_image_folder_requires_the_same_classes(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "train", {"cat": 1, "dog": 1}, seed=0)
    _write_pngs(tmp_path / "test", {"cat": 1, "emu": 1}, seed=1)
    with pytest.raises(ValueError, match=r"only in .*train: \['dog'\].*only in .*test: \['emu'\]"):
        from_image_folder(tmp_path / "train", tmp_path / "test", image_size=8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_image_folder(tmp_path / "train", tmp_path / "nowhere", image_size=8)
