"""The paper presets on CIFAR-10 run end to end on synthetic CIFAR-10 batches (paper_presets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from paper_presets import PAPER_PRESETS, check_preset_runs_to_a_table, presets_of

from synthetic_datasets import write_cifar10


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 training images (five batches of 40) and 60 test images: 6 of class 5, as the
    audit's forget-vs-test attack needs at least 5."""
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar10(root, per_batch=40, test=60)
    return root


def test_every_paper_preset_has_a_dataset_file() -> None:
    covered = {"cifar10", "svhn", "mini-imagenet"}  # test_paper_presets_<dataset>.py
    assert sorted(n for d in covered for n in presets_of(d)) == PAPER_PRESETS
    assert len(PAPER_PRESETS) == 12  # 2 datasets x (ResNet-18 + 4 projection ResNets) + 2


@pytest.mark.parametrize("name", presets_of("cifar10"))
def test_paper_preset_runs_to_a_table(
    name: str, cifar10: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_preset_runs_to_a_table(name, cifar10, tmp_path, monkeypatch)
