"""Stratified, seeded validation hold-out."""

from __future__ import annotations

import pytest
import torch

from conun.data.validation import split_validation

# Class sizes 100, 50, 10, 3, 1: big, small, and too small to lose a sample.
LABELS = torch.cat([torch.full((size,), label) for label, size in enumerate([100, 50, 10, 3, 1])])
LABELS = LABELS[torch.randperm(len(LABELS), generator=torch.Generator().manual_seed(0))]


def test_stratified_counts_disjoint_covering_sorted() -> None:
    split = split_validation(len(LABELS), LABELS, fraction=0.2, seed=0)
    held_out = LABELS[split.validation_indices].bincount(minlength=5).tolist()
    assert held_out == [20, 10, 2, 1, 0]  # round(0.2 * size), never a class's last sample
    fit, validation = split.fit_indices, split.validation_indices
    assert fit.dtype == validation.dtype == torch.int64
    assert torch.equal(fit, fit.sort().values) and torch.equal(validation, validation.sort().values)
    assert not set(fit.tolist()) & set(validation.tolist())
    assert torch.equal(torch.cat([fit, validation]).sort().values, torch.arange(len(LABELS)))


def test_same_seed_same_split() -> None:
    first = split_validation(len(LABELS), LABELS, fraction=0.3, seed=5)
    again = split_validation(len(LABELS), LABELS, fraction=0.3, seed=5)
    other = split_validation(len(LABELS), LABELS, fraction=0.3, seed=6)
    assert torch.equal(first.validation_indices, again.validation_indices)
    assert not torch.equal(first.validation_indices, other.validation_indices)


def test_zero_fraction_gives_an_empty_validation_set() -> None:
    split = split_validation(len(LABELS), LABELS, fraction=0.0, seed=0)
    assert split.validation_indices.numel() == 0
    assert torch.equal(split.fit_indices, torch.arange(len(LABELS)))


def test_half_keeps_every_class_in_the_fit_set() -> None:
    split = split_validation(len(LABELS), LABELS, fraction=0.5, seed=0)
    assert LABELS[split.fit_indices].unique().tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("fraction", [-0.1, 0.51, 1.0])
def test_fraction_outside_range_is_an_error(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"must be in \[0, 0.5\]"):
        split_validation(len(LABELS), LABELS, fraction=fraction, seed=0)


def test_labels_must_match_num_train() -> None:
    with pytest.raises(ValueError, match=r"labels must be \(num_train,\)"):
        split_validation(10, LABELS, fraction=0.1, seed=0)
