"""Forget requests as a user states them, resolved to a concrete split of a dataset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from conun.data.arrays import DatasetBundle
from conun.data.splits import (
    ForgetRequestError,
    ForgetRetainSplit,
    Scenario,
    SplitStyle,
    read_ids_file,
)
from conun.io import sha256_json


@dataclass(frozen=True)
class ForgetSpec:
    """A forget request as the user gives it (exactly one field set).

    Attributes:
        classes: forget every training sample of these classes (class scenario).
        num_samples: forget this many random training samples (sample scenario, seeded).
        fraction: forget this fraction of the training samples (sample scenario, seeded).
        ids_file: forget the training samples listed in this file (sample scenario).
        split_style: not a request of its own: how ``classes`` / ``num_samples`` /
            ``fraction`` become indices. ``conun`` (default): the whole class, a seeded random
            draw. ``release``: the authors' code's split (its class split keeps the class's
            last sample in the retain set; its sample split takes the first N indices);
            :data:`conun.data.splits.SplitStyle`.

    Raises:
        ForgetRequestError: none or several fields set, an unknown ``split_style``, or
            ``split_style="release"`` with an ids file.
    """

    classes: tuple[int, ...] = ()
    num_samples: int | None = None
    fraction: float | None = None
    ids_file: str | None = None
    split_style: SplitStyle = "conun"

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
        if self.split_style not in ("conun", "release"):
            raise ForgetRequestError(
                f"split_style must be 'conun' or 'release', got {self.split_style!r}"
            )
        if self.split_style == "release" and self.ids_file is not None:
            raise ForgetRequestError(
                "split_style 'release' applies to a class or a number/fraction of samples, "
                "not to an ids file (which names its samples itself)"
            )

    @property
    def scenario(self) -> Scenario:
        """``"class"`` for a class request, else ``"sample"``."""
        return "class" if self.classes else "sample"

    def digest(self) -> str:
        """SHA-256 of what the request asks for: the ids an ids file lists (read now, so that
        an edited file gives another digest), else the request's own fields.

        Raises:
            ForgetRequestError: the ids file is missing or malformed.
        """
        if self.ids_file is not None:
            return sha256_json({"ids": read_ids_file(self.ids_file)})
        fields = dataclasses.asdict(self)
        if self.split_style == "conun":
            # The default leaves the digest of every request made before split styles existed.
            del fields["split_style"]
        return sha256_json(fields)

    def resolve(
        self, data: DatasetBundle, validation: torch.Tensor, seed: int
    ) -> ForgetRetainSplit:
        """The concrete split on ``data``.

        Args:
            data: the dataset the split indexes into.
            validation: ``(N_val,)`` int64 indices into ``data.train`` that are neither
                forgotten nor retained (the original never trained on them).
            seed: the seed of a random request's draw (unused by ``split_style="release"``).
        """
        if self.classes:
            return ForgetRetainSplit.from_classes(
                data.train.labels,
                self.classes,
                num_classes=data.num_classes,
                validation=validation,
                style=self.split_style,
            )
        if self.ids_file is not None:
            return ForgetRetainSplit.from_ids(
                read_ids_file(self.ids_file),
                len(data.train),
                validation=validation,
                ids_file=self.ids_file,
            )
        if self.split_style == "release":
            return ForgetRetainSplit.from_leading(
                len(data.train),
                num_samples=self.num_samples,
                fraction=self.fraction,
                validation=validation,
            )
        return ForgetRetainSplit.from_random(
            len(data.train),
            num_samples=self.num_samples,
            fraction=self.fraction,
            seed=seed,
            validation=validation,
        )


__all__ = ["ForgetSpec"]
