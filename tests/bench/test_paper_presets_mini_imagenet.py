"""The paper presets on Mini-ImageNet run end to end on synthetic JPEG folders (paper_presets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from paper_presets import check_preset_runs_to_a_table, presets_of

from synthetic_datasets import write_mini_imagenet


@pytest.fixture(scope="module")
def mini_imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 training, 1 validation and 5 test 84x84 JPEGs of each of the 100 classes: the audit's
    forget-vs-test attack needs 5 training and 5 test images of the forgotten class, and the
    stopping rules a validation split carved from the training images of every class."""
    root = tmp_path_factory.mktemp("mini-imagenet")
    write_mini_imagenet(root, train=6, val=1, test=5)
    return root


@pytest.mark.parametrize("name", presets_of("mini-imagenet"))
def test_paper_preset_runs_to_a_table(
    name: str, mini_imagenet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_preset_runs_to_a_table(name, mini_imagenet, tmp_path, monkeypatch)
