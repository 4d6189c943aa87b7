"""Batch augmentation: random crop with padding and horizontal flip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conun.data.augment import augment_batch, default_pad


def _batch(n: int = 16, channels: int = 2, size: int = 8) -> torch.Tensor:
    # Distinct random values, so every crop of every image is unique and can be identified.
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(0))


def _reference_candidates(image: torch.Tensor, pad: int, flip: bool) -> list[torch.Tensor]:
    """Every image augment_batch may produce from ``image``: a per-sample loop, no tricks."""
    _, height, width = image.shape
    padded = F.pad(image, (pad, pad, pad, pad))
    candidates = []
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            crop = padded[:, top : top + height, left : left + width]
            candidates.append(crop)
            if flip:
                candidates.append(crop.flip(-1))
    return candidates


def _which(output: torch.Tensor, candidates: list[torch.Tensor]) -> int:
    matches = [index for index, crop in enumerate(candidates) if torch.equal(output, crop)]
    assert len(matches) == 1, "output is not exactly one of the reference crops"
    return matches[0]


@pytest.mark.parametrize(("pad", "flip"), [(2, False), (1, True), (4, True)])
def test_every_output_is_a_reference_crop_of_its_own_input(pad: int, flip: bool) -> None:
    images = _batch(n=32)
    out = augment_batch(images, generator=torch.Generator().manual_seed(1), pad=pad, flip=flip)
    assert out.shape == images.shape and out.dtype == images.dtype
    chosen = {_which(out[i], _reference_candidates(images[i], pad, flip)) for i in range(32)}
    assert len(chosen) > 1  # offsets differ between samples


def test_same_seed_same_output_and_input_untouched() -> None:
    images = _batch()
    before = images.clone()
    first = augment_batch(images, generator=torch.Generator().manual_seed(7), pad=2, flip=True)
    second = augment_batch(images, generator=torch.Generator().manual_seed(7), pad=2, flip=True)
    other = augment_batch(images, generator=torch.Generator().manual_seed(8), pad=2, flip=True)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert torch.equal(images, before)


def test_no_pad_no_flip_is_identity() -> None:
    images = _batch()
    out = augment_batch(images, generator=torch.Generator().manual_seed(0), pad=0, flip=False)
    assert torch.equal(out, images)


def test_flip_only_mirrors_about_half() -> None:
    images = _batch(n=64)
    out = augment_batch(images, generator=torch.Generator().manual_seed(3), pad=0, flip=True)
    mirrored = [torch.equal(out[i], images[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(out[i], images[i]) for i in range(64)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))
    assert 16 < sum(mirrored) < 48


def test_bad_arguments() -> None:
    generator = torch.Generator()
    with pytest.raises(ValueError, match="pad must be >= 0"):
        augment_batch(_batch(), generator=generator, pad=-1, flip=False)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        augment_batch(torch.zeros(3, 8, 8), generator=generator, pad=1, flip=False)


def test_default_pad() -> None:
    assert [default_pad(side) for side in (32, 28, 8, 64)] == [4, 2, 1, 8]
