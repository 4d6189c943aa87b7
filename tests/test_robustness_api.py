"""The Python API checks what it is given before any work (issue 15): labels outside the
model's classes, a ``num_classes`` that contradicts the model, integer images whose scale it
cannot know, and weights of a dtype the methods do not compute in are each one clear
``ValueError`` naming the argument and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import conun
from conun.workflows.training import TrainedModel


@pytest.fixture(scope="module")
def parts(
    digits_run: tuple[Path, TrainedModel],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Small forget (class 5), retain and held-out sets of the digits original."""
    data = digits_run[1].data
    images, labels = data.train.images, data.train.labels
    forget = labels == 5
    return {
        "forget": (images[forget][:20], labels[forget][:20]),
        "retain": (images[~forget][:100], labels[~forget][:100]),
        "held_out": (data.test.images[:50], data.test.labels[:50]),
    }


def _unlearn(
    trained: TrainedModel, parts: dict[str, tuple[torch.Tensor, torch.Tensor]], **changes: object
) -> object:
    arguments: dict[str, object] = {**parts, "stop": False, "max_passes": 1}
    arguments.update(changes)
    return conun.unlearn(trained.model, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("part", "label", "expected"),
    [
        (
            "retain",
            15,
            r"retain labels \[15\] are not classes of the model: labels must be in 0..9",
        ),
        ("forget", 12, r"forget labels \[12\] are not classes"),
        ("held_out", 50, r"held_out labels \[50\] are not classes"),
        ("retain", -1, r"retain labels \[-1\]"),
    ],
)
def test_labels_outside_the_models_classes_are_refused(
    digits_run: tuple[Path, TrainedModel],
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]],
    part: str,
    label: int,
    expected: str,
) -> None:
    images, labels = parts[part]
    changed = labels.clone()
    changed[0] = label
    before = {k: v.clone() for k, v in digits_run[1].model.state_dict().items()}
    with pytest.raises(ValueError, match=expected):
        _unlearn(digits_run[1], parts, **{part: (images, changed)})
    after = digits_run[1].model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_num_classes_must_match_the_model(
    digits_run: tuple[Path, TrainedModel], parts: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> None:
    with pytest.raises(ValueError, match="num_classes=3 but the model has 10 classes"):
        _unlearn(digits_run[1], parts, num_classes=3)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_integer_images_are_refused_with_the_conversion_to_use(
    digits_run: tuple[Path, TrainedModel],
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]],
    dtype: torch.dtype,
) -> None:
    images, labels = parts["forget"]
    pixels = (images * 255).clamp(0, 255).to(dtype)
    with pytest.raises(
        ValueError, match=r"forget images are torch\.\w+; .*images\.float\(\) / 255"
    ):
        _unlearn(digits_run[1], parts, forget=(pixels, labels))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_model_that_is_not_float32_is_refused(
    digits_run: tuple[Path, TrainedModel],
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]],
    dtype: torch.dtype,
) -> None:
    import copy

    model = copy.deepcopy(digits_run[1].model).to(dtype)
    with pytest.raises(ValueError, match=r"conun unlearns float32 models: convert it with"):
        conun.unlearn(model, **parts, stop=False, max_passes=1)  # type: ignore[arg-type]


def test_labels_must_be_integers_one_per_image(
    digits_run: tuple[Path, TrainedModel], parts: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> None:
    images, labels = parts["retain"]
    with pytest.raises(ValueError, match="retain labels must be integer class indices"):
        _unlearn(digits_run[1], parts, retain=(images, labels.float()))
    with pytest.raises(ValueError, match=r"retain labels must be \(N,\) with N = 100"):
        _unlearn(digits_run[1], parts, retain=(images, labels[:-1]))
