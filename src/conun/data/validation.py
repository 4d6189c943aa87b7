"""A seeded, stratified hold-out of the training set for model selection and early stopping."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MAX_VALIDATION_FRACTION = 0.5


@dataclass(frozen=True)
class ValidationSplit:
    """Indices into the training set.

    Attributes:
        fit_indices: ``(N_fit,)`` int64, sorted: samples the model is trained on.
        validation_indices: ``(N_val,)`` int64, sorted: held-out samples; disjoint from
            ``fit_indices``, and together they cover ``range(num_train)``.
    """

    fit_indices: Tensor
    validation_indices: Tensor


def split_validation(
    num_train: int, labels: Tensor, *, fraction: float, seed: int
) -> ValidationSplit:
    """Hold out ``fraction`` of every class of the training set, chosen at random with ``seed``.

    Each class contributes ``round(fraction * class_size)`` samples (rounding half up), but never
    its last one, so every class stays in the fit set. The same inputs give the same split on
    every machine.

    Args:
        num_train: N, the size of the training set.
        labels: ``(N,)`` integer class labels of the training set.
        fraction: share held out for validation, in ``[0, 0.5]``; 0 gives an empty validation set.
        seed: seed of the random choice within each class.

    Returns:
        The split.

    Raises:
        ValueError: ``fraction`` outside ``[0, 0.5]``, or ``labels`` not ``(num_train,)`` integers.
    """
    if not 0.0 <= fraction <= MAX_VALIDATION_FRACTION:
        raise ValueError(
            f"validation fraction must be in [0, {MAX_VALIDATION_FRACTION}]; got {fraction}"
        )
    if labels.ndim != 1 or labels.shape[0] != num_train:
        raise ValueError(
            f"labels must be (num_train,) = ({num_train},); got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices; got {labels.dtype}")

    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    held_out = []
    # Sorted classes and a CPU generator: the draw does not depend on label order or device.
    for label in torch.unique(labels, sorted=True).tolist():
        members = torch.nonzero(labels == label).flatten()
        count = min(int(fraction * len(members) + 0.5), len(members) - 1)
        order = torch.randperm(len(members), generator=generator)
        held_out.append(members[order[:count]])

    validation = torch.zeros(num_train, dtype=torch.bool)
    if held_out:
        validation[torch.cat(held_out)] = True
    return ValidationSplit(
        fit_indices=torch.nonzero(~validation).flatten(),
        validation_indices=torch.nonzero(validation).flatten(),
    )
