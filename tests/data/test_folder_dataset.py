"""Image-folder datasets: ``folder:<dir>`` and ``mini-imagenet``, on PNG trees written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conun.cli import main
from conun.data import DatasetNotFoundError
from conun.data.folders import IMAGENET_MEAN, IMAGENET_STD
from conun.data.registry import (
    available_datasets,
    check_dataset_available,
    dataset_info,
    is_dataset_name,
    load_dataset,
)
from conun.evaluation.results import validate_results

CLASSES = ("cat", "dog", "fox")
COLOURS = {"cat": (220, 30, 30), "dog": (30, 220, 30), "fox": (30, 30, 220)}


def write_tree(
    root: Path,
    classes: tuple[str, ...] = CLASSES,
    counts: dict[str, int] | None = None,
    size: tuple[int, int] = (12, 10),
) -> Path:
    """``root/<split>/<class>/<i>.png``: one colour per class plus noise, PNG files."""
    counts = counts or {"train": 8, "test": 3}
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            colour = np.array(COLOURS.get(name, (40 * (index % 6), 90, 200 - index)))
            for i in range(count):
                noise = rng.integers(-20, 20, size=(size[1], size[0], 3))
                pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_folder_dataset_loads_resized_and_normalised(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "pets")
    name = f"folder:{root}"
    assert is_dataset_name(name) and not is_dataset_name("folder:")
    info = dataset_info(name, image_size=8)
    assert info.class_names == CLASSES and info.input_shape == (3, 8, 8)
    bundle = load_dataset(name, image_size=8)
    assert bundle.train.images.shape == (24, 3, 8, 8) and bundle.test.images.shape == (9, 3, 8, 8)
    assert bundle.class_names == CLASSES and bundle.num_classes == 3
    assert bundle.train.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    # Normalised with ImageNet's statistics: un-normalising gives the PNGs' colours back.
    pixels = bundle.train.images * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels += torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    red = pixels[bundle.train.labels == 0].mean(dim=(0, 2, 3))
    assert red[0] > 0.8 and red[1] < 0.2
    assert load_dataset(name).train.images.shape[-1] == 32  # the default size


def test_folder_layout_errors_name_the_expected_layout(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    with pytest.raises(
        DatasetNotFoundError, match=r"(?s)no folder .*nothing/train.*Expected layout"
    ):
        check_dataset_available(f"folder:{missing}")
    only_train = write_tree(tmp_path / "only-train", counts={"train": 1})
    with pytest.raises(DatasetNotFoundError, match=r"only-train/test"):
        dataset_info(f"folder:{only_train}")
    odd_val = write_tree(tmp_path / "odd", counts={"train": 1, "test": 1})
    (odd_val / "val" / "wolf").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"only in val/: \['wolf'\]"):
        dataset_info(f"folder:{odd_val}")
    with pytest.raises(ValueError, match="image_size resizes image-folder datasets only"):
        load_dataset("digits", image_size=16)


def test_mini_imagenet_is_found_under_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONUN_DATA", str(tmp_path))
    assert "mini-imagenet" in available_datasets()
    with pytest.raises(DatasetNotFoundError, match=r"mini-imagenet/train/<class>/<image>"):
        check_dataset_available("mini-imagenet")
    classes = tuple(f"n{index:08d}" for index in range(100))
    write_tree(
        tmp_path / "mini-imagenet",
        classes,
        counts={"train": 1, "val": 1, "test": 1},
        size=(4, 4),
    )
    info = dataset_info("mini-imagenet")
    assert info.num_classes == 100 and info.input_shape == (3, 84, 84)
    assert info.class_names == classes
    bundle = load_dataset("mini-imagenet", image_size=8)  # val/ is not read
    assert bundle.train.images.shape == (100, 3, 8, 8) and len(bundle.test) == 100
    (tmp_path / "mini-imagenet" / "train" / "n00000099").rename(
        tmp_path / "mini-imagenet" / "train" / "extra"
    )
    with pytest.raises(DatasetNotFoundError, match="same class folders"):
        dataset_info("mini-imagenet")


def test_cli_trains_and_unlearns_on_a_folder_dataset(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "pets")
    original = tmp_path / "original"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            *("train", "--dataset", f"folder:{root}", "--epochs", "3"),
            *("--out", str(original), "--quiet", "--set", "image_size=8"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    results = json.loads((original / "results.json").read_text())
    validate_results(results)
    assert results["dataset"] == f"folder:{root}"
    forgotten = tmp_path / "forgotten"
    result = runner.invoke(
        main,
        [
            *("unlearn", "--checkpoint", str(original), "--forget-class", "1"),
            *("--out", str(forgotten), "--quiet"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    validate_results(json.loads((forgotten / "results.json").read_text()))
