"""The paper presets on SVHN run end to end on synthetic SVHN .mat files (paper_presets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from paper_presets import check_preset_runs_to_a_table, presets_of

from synthetic_datasets import write_svhn


@pytest.fixture(scope="module")
def svhn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 training and 60 test images, every digit in turn (0 stored as 10, as in the real
    files)."""
    root = tmp_path_factory.mktemp("svhn")
    write_svhn(root, {"train": [i % 10 for i in range(200)], "test": [i % 10 for i in range(60)]})
    return root


@pytest.mark.parametrize("name", presets_of("svhn"))
def test_paper_preset_runs_to_a_table(
    name: str, svhn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_preset_runs_to_a_table(name, svhn, tmp_path, monkeypatch)
