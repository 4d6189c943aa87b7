"""ForgetRetainSplit invariants: disjoint, covering, whole class, ids validated, JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conun.data.splits import ForgetRequestError, ForgetRetainSplit, read_ids_file

LABELS = torch.arange(10).repeat(20)  # 200 samples, 20 per class
VALIDATION = torch.tensor([0, 1, 2, 13, 50, 199])


def assert_partition(split: ForgetRetainSplit) -> None:
    everything = torch.cat([split.forget, split.retain, split.validation])
    assert torch.equal(torch.sort(everything).values, torch.arange(split.num_train))
    for part in (split.forget, split.retain, split.validation):
        assert torch.equal(part, torch.sort(part).values)
    assert split.forget.numel() > 0 and split.retain.numel() > 0


def test_class_split_takes_the_whole_class_outside_validation() -> None:
    split = ForgetRetainSplit.from_classes(LABELS, [3], num_classes=10, validation=VALIDATION)
    assert_partition(split)
    assert split.scenario == "class" and split.classes == (3,)
    assert (LABELS[split.forget] == 3).all()
    assert not (LABELS[split.retain] == 3).any()
    # Every class-3 sample is forgotten unless it is held out (index 13 is class 3).
    assert split.forget.numel() == 20 - 1
    assert torch.equal(split.validation, VALIDATION)


def test_several_classes_and_bad_classes() -> None:
    split = ForgetRetainSplit.from_classes(LABELS, [1, 4], num_classes=10)
    assert set(LABELS[split.forget].tolist()) == {1, 4}
    with pytest.raises(ForgetRequestError, match=r"classes are 0\.\.9"):
        ForgetRetainSplit.from_classes(LABELS, [10], num_classes=10)
    with pytest.raises(ForgetRequestError, match="all 10 classes"):
        ForgetRetainSplit.from_classes(LABELS, list(range(10)), num_classes=10)
    with pytest.raises(ForgetRequestError, match="no sample of class"):
        ForgetRetainSplit.from_classes(torch.zeros(5, dtype=torch.long), [1], num_classes=3)


def test_random_split_is_seeded_and_avoids_validation() -> None:
    a = ForgetRetainSplit.from_random(200, num_samples=30, seed=7, validation=VALIDATION)
    b = ForgetRetainSplit.from_random(200, num_samples=30, seed=7, validation=VALIDATION)
    c = ForgetRetainSplit.from_random(200, num_samples=30, seed=8, validation=VALIDATION)
    assert_partition(a)
    assert torch.equal(a.forget, b.forget) and not torch.equal(a.forget, c.forget)
    assert a.forget.numel() == 30
    assert not torch.isin(a.forget, VALIDATION).any()
    by_fraction = ForgetRetainSplit.from_random(200, fraction=0.1, seed=0, validation=VALIDATION)
    assert by_fraction.forget.numel() == round(0.1 * (200 - VALIDATION.numel()))


@pytest.mark.parametrize("num_samples", [0, 194, 500])
def test_random_split_bounds(num_samples: int) -> None:
    with pytest.raises(ForgetRequestError, match="between 1 and 193"):
        ForgetRetainSplit.from_random(200, num_samples=num_samples, seed=0, validation=VALIDATION)


def test_ids_split_and_its_errors() -> None:
    split = ForgetRetainSplit.from_ids([5, 7, 100], 200, validation=VALIDATION)
    assert_partition(split)
    assert split.forget.tolist() == [5, 7, 100]
    with pytest.raises(ForgetRequestError, match="out of range"):
        ForgetRetainSplit.from_ids([5, 200], 200)
    with pytest.raises(ForgetRequestError, match="out of range"):
        ForgetRetainSplit.from_ids([-1], 200)
    with pytest.raises(ForgetRequestError, match="duplicated"):
        ForgetRetainSplit.from_ids([5, 5], 200)
    with pytest.raises(ForgetRequestError, match="empty"):
        ForgetRetainSplit.from_ids([], 200)
    with pytest.raises(ForgetRequestError, match="validation split"):
        ForgetRetainSplit.from_ids([13], 200, validation=VALIDATION)
    with pytest.raises(ForgetRequestError, match="all the training data"):
        ForgetRetainSplit.from_ids(list(range(10)), 10)


def test_direct_construction_checks_invariants() -> None:
    with pytest.raises(ForgetRequestError, match="disjoint"):
        ForgetRetainSplit(
            "sample",
            4,
            torch.tensor([0, 1]),
            torch.tensor([1, 2, 3]),
            torch.tensor([], dtype=torch.long),
        )
    with pytest.raises(ForgetRequestError, match="cover"):
        ForgetRetainSplit(
            "sample", 5, torch.tensor([0]), torch.tensor([1, 2]), torch.tensor([], dtype=torch.long)
        )


def test_json_round_trip(tmp_path: Path) -> None:
    split = ForgetRetainSplit.from_classes(LABELS, [2], num_classes=10, validation=VALIDATION)
    path = split.save(tmp_path / "split.json")
    loaded = ForgetRetainSplit.load(path)
    assert loaded.to_dict() == split.to_dict()
    assert loaded.request() == {"classes": [2]}
    tampered = json.loads(path.read_text())
    tampered["retain"].append(tampered["forget"][0])
    with pytest.raises(ForgetRequestError):
        ForgetRetainSplit.from_dict(tampered)


def test_ids_file_formats(tmp_path: Path) -> None:
    lines = tmp_path / "ids.txt"
    lines.write_text("# forget these\n3\n 8 \n\n42  # trailing comment\n")
    assert read_ids_file(lines) == [3, 8, 42]
    as_json = tmp_path / "ids.json"
    as_json.write_text("[1, 2, 3]")
    assert read_ids_file(as_json) == [1, 2, 3]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text('{"ids": [9]}')
    assert read_ids_file(wrapped) == [9]


@pytest.mark.parametrize(
    "content",
    ["3\nfour\n", "[1, 2.5]", '{"ids": "1,2"}', "[true]", "__import__('os').system('echo hi')"],
)
def test_ids_file_rejects_anything_but_integers(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ForgetRequestError):
        read_ids_file(path)
