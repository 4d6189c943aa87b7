"""Forget requests as a user states them, resolved to a concrete split of a dataset."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRequestError, ForgetRetainSplit, Scenario, read_ids_file


@dataclass(frozen=True)
class ForgetSpec:
    """A forget request as the user gives it (exactly one field set).

    Attributes:
        classes: forget every training sample of these classes (class scenario).
        num_samples: forget this many random training samples (sample scenario, seeded).
        fraction: forget this fraction of the training samples (sample scenario, seeded).
        ids_file: forget the training samples listed in this file (sample scenario).

    Raises:
        ForgetRequestError: none or several fields set.
    """

    classes: tuple[int, ...] = ()
    num_samples: int | None = None
    fraction: float | None = None
    ids_file: str | None = None

    def __post_init__(self) -> None:
        given = sum(
            [
                bool(self.classes),
                self.num_samples is not None,
                self.fraction is not None,
                self.ids_file is not None,
            ]
        )
        if given != 1:
            raise ForgetRequestError(
                "give exactly one forget request: --forget-class C, --forget-samples N, "
                "--forget-fraction F or --forget-ids FILE"
            )

    @property
    def scenario(self) -> Scenario:
        """``"class"`` for a class request, else ``"sample"``."""
        return "class" if self.classes else "sample"

    def resolve(
        self, data: DatasetBundle, validation: torch.Tensor, seed: int
    ) -> ForgetRetainSplit:
        """The concrete split on ``data``.

        Args:
            data: the dataset the split indexes into.
            validation: ``(N_val,)`` int64 indices into ``data.train`` that are neither
                forgotten nor retained (the original never trained on them).
            seed: the seed of a random request's draw.
        """
        if self.classes:
            return ForgetRetainSplit.from_classes(
                data.train.labels, self.classes, num_classes=data.num_classes, validation=validation
            )
        if self.ids_file is not None:
            return ForgetRetainSplit.from_ids(
                read_ids_file(self.ids_file),
                len(data.train),
                validation=validation,
                ids_file=self.ids_file,
            )
        return ForgetRetainSplit.from_random(
            len(data.train),
            num_samples=self.num_samples,
            fraction=self.fraction,
            seed=seed,
            validation=validation,
        )


__all__ = ["ForgetSpec"]
