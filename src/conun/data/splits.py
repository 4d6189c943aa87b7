"""Forget requests as data: which training samples to forget, which to retain, which to hold out.

A :class:`ForgetRetainSplit` is a pure description of indices into a dataset's training set; it
never touches the dataset. Three index sets partition the training set:

- ``validation``: held out before the original model was trained (never seen by it); the stopping
  rules and tuners use it as unseen data, so the test set stays untouched;
- ``forget``: ``D_u_tr``, the samples to unlearn;
- ``retain``: ``D_r_tr``, everything else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from conun.io import atomic_write_json

Scenario = Literal["class", "sample"]

SplitStyle = Literal["conun", "release"]
"""How a request becomes index sets. ``conun``: a class request forgets every sample of the
class, a random request draws its samples with a seed. ``release``: as the authors' contrastive
unlearning code (github.com/Hongkyu-Lee/Contrastive-Unlearning, core/data/loader.py) does: its
class split slices the class's indices with ``[:-1]`` (meant as "the whole class"), so the
class's last sample stays in the retain set; its "random" sample split takes the first N
indices."""


class ForgetRequestError(ValueError):
    """A forget request that cannot be honoured; the message says why and what is allowed."""


_SPLIT_KEYS = ("scenario", "num_train", "forget", "retain", "validation")
"""The keys a split's JSON must hold (:meth:`ForgetRetainSplit.to_dict`)."""


def _as_index_tensor(indices: Iterable[int] | Tensor) -> Tensor:
    return torch.as_tensor(list(indices) if not isinstance(indices, Tensor) else indices).long()


@dataclass(frozen=True, eq=False)
class ForgetRetainSplit:
    """Disjoint forget / retain / validation indices covering a training set of ``num_train``.

    Attributes:
        scenario: ``"class"`` (whole classes) or ``"sample"`` (arbitrary samples).
        num_train: size of the full training set the indices point into.
        forget: ``(Nf,)`` sorted int64 indices of ``D_u_tr``.
        retain: ``(Nr,)`` sorted int64 indices of ``D_r_tr``.
        validation: ``(Nv,)`` sorted int64 held-out indices (may be empty).
        classes: the forgotten classes (class scenario), else ``()``.
        seed: the seed that drew random samples (sample scenario with random draw), else None.
        ids_file: the file the ids came from, if any.
    """

    scenario: Scenario
    num_train: int
    forget: Tensor
    retain: Tensor
    validation: Tensor
    classes: tuple[int, ...] = ()
    seed: int | None = None
    ids_file: str | None = None

    def __post_init__(self) -> None:
        self.check()

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_classes(
        cls,
        labels: Tensor,
        classes: Sequence[int],
        *,
        num_classes: int,
        validation: Tensor | None = None,
        style: SplitStyle = "conun",
    ) -> ForgetRetainSplit:
        """Forget every (non-validation) training sample of ``classes``.

        Args:
            labels: ``(N,)`` training labels.
            classes: the classes to forget.
            num_classes: C, to validate ``classes``.
            validation: held-out indices excluded from forget and retain.
            style: ``release``: one class only, whose last (highest-index, non-validation)
                sample stays in the retain set, as in the authors' code (:data:`SplitStyle`).
        """
        if style not in ("conun", "release"):
            raise ForgetRequestError(f"split style must be 'conun' or 'release', got {style!r}")
        wanted = sorted({int(c) for c in classes})
        if not wanted:
            raise ForgetRequestError("forget request names no class")
        bad = [c for c in wanted if not 0 <= c < num_classes]
        if bad:
            raise ForgetRequestError(
                f"forget class {bad} is not in the data: classes are 0..{num_classes - 1}"
            )
        if len(wanted) >= num_classes:
            raise ForgetRequestError(
                f"cannot forget all {num_classes} classes: nothing would be retained"
            )
        held_out = _validation_mask(labels.shape[0], validation)
        in_classes = torch.isin(labels, torch.tensor(wanted))
        forget = torch.nonzero(in_classes & ~held_out).flatten()
        retain = torch.nonzero(~in_classes & ~held_out).flatten()
        if forget.numel() == 0:
            raise ForgetRequestError(f"the training set has no sample of class {wanted}")
        if style == "release":
            if len(wanted) != 1 or forget.numel() < 2:
                raise ForgetRequestError(
                    "split style 'release' forgets one class with at least 2 samples (the "
                    f"authors' code keeps its last sample); got classes {wanted} with "
                    f"{forget.numel()} samples"
                )
            # The release's unlearn_idx[:-1]: the class's last sample is retained.
            retain = torch.sort(torch.cat([retain, forget[-1:]])).values
            forget = forget[:-1]
        return cls(
            "class",
            int(labels.shape[0]),
            forget,
            retain,
            torch.nonzero(held_out).flatten(),
            classes=tuple(wanted),
        )

    @classmethod
    def from_random(
        cls,
        num_train: int,
        *,
        num_samples: int | None = None,
        fraction: float | None = None,
        seed: int,
        validation: Tensor | None = None,
    ) -> ForgetRetainSplit:
        """Forget ``num_samples`` (or ``fraction`` of the) non-validation samples drawn at random.

        The draw depends on ``seed`` only, through its own generator.
        """
        held_out, pool, count = _sample_pool(num_train, num_samples, fraction, validation)
        generator = torch.Generator().manual_seed(seed)
        chosen = pool[torch.randperm(pool.numel(), generator=generator)[:count]]
        return cls._from_forget_indices(num_train, chosen, held_out, seed=seed)

    @classmethod
    def from_leading(
        cls,
        num_train: int,
        *,
        num_samples: int | None = None,
        fraction: float | None = None,
        validation: Tensor | None = None,
    ) -> ForgetRetainSplit:
        """Forget the first ``num_samples`` (or ``fraction`` of the) non-validation samples in
        index order: the authors' code's "random" sample split (split style ``release``).
        """
        held_out, pool, count = _sample_pool(num_train, num_samples, fraction, validation)
        return cls._from_forget_indices(num_train, pool[:count], held_out)

    @classmethod
    def from_ids(
        cls,
        ids: Sequence[int] | Tensor,
        num_train: int,
        *,
        validation: Tensor | None = None,
        ids_file: str | None = None,
    ) -> ForgetRetainSplit:
        """Forget exactly the training samples ``ids`` (indices into the training set)."""
        index = _as_index_tensor(ids)
        if index.numel() == 0:
            raise ForgetRequestError("the forget set is empty: give at least one id")
        out_of_range = index[(index < 0) | (index >= num_train)]
        if out_of_range.numel():
            raise ForgetRequestError(
                f"forget ids out of range: {out_of_range[:10].tolist()}; ids must be in "
                f"0..{num_train - 1}"
            )
        unique, counts = torch.unique(index, return_counts=True)
        if (counts > 1).any():
            raise ForgetRequestError(
                f"duplicated forget ids: {unique[counts > 1][:10].tolist()}; each id at most once"
            )
        held_out = _validation_mask(num_train, validation)
        in_validation = index[held_out[index]]
        if in_validation.numel():
            raise ForgetRequestError(
                f"forget ids {in_validation[:10].tolist()} are in the validation split, which the "
                "model never trained on; train with validation_fraction=0 to forget them"
            )
        if unique.numel() >= int((~held_out).sum()):
            raise ForgetRequestError("the forget set is all the training data: nothing to retain")
        return cls._from_forget_indices(num_train, unique, held_out, ids_file=ids_file)

    @classmethod
    def _from_forget_indices(
        cls,
        num_train: int,
        forget: Tensor,
        held_out: Tensor,
        *,
        seed: int | None = None,
        ids_file: str | None = None,
    ) -> ForgetRetainSplit:
        in_forget = torch.zeros(num_train, dtype=torch.bool)
        in_forget[forget] = True
        return cls(
            "sample",
            num_train,
            torch.nonzero(in_forget).flatten(),
            torch.nonzero(~in_forget & ~held_out).flatten(),
            torch.nonzero(held_out).flatten(),
            seed=seed,
            ids_file=ids_file,
        )

    # -- invariants -----------------------------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`ForgetRequestError` unless the sets partition ``range(num_train)``."""
        if self.forget.numel() == 0:
            raise ForgetRequestError("the forget set is empty")
        if self.retain.numel() == 0:
            raise ForgetRequestError("the retain set is empty: cannot forget all the data")
        everything = torch.cat([self.forget, self.retain, self.validation])
        if everything.numel() != self.num_train or not torch.equal(
            torch.sort(everything).values, torch.arange(self.num_train)
        ):
            raise ForgetRequestError(
                "forget, retain and validation indices must be disjoint and cover "
                f"0..{self.num_train - 1}"
            )

    # -- views ----------------------------------------------------------------------------------

    def request(self) -> dict[str, Any]:
        """The ``forget`` object of results.json."""
        if self.scenario == "class":
            return {"classes": list(self.classes)}
        if self.ids_file is not None:
            return {"ids_file": self.ids_file, "num_samples": int(self.forget.numel())}
        if self.seed is None:
            # Drawn by no seed: the leading samples (the release's split) or ids given in code.
            return {"num_samples": int(self.forget.numel())}
        return {"num_samples": int(self.forget.numel()), "seed": self.seed}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description; :meth:`from_dict` inverts it exactly."""
        return {
            "scenario": self.scenario,
            "num_train": self.num_train,
            "classes": list(self.classes),
            "seed": self.seed,
            "ids_file": self.ids_file,
            "forget": self.forget.tolist(),
            "retain": self.retain.tolist(),
            "validation": self.validation.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForgetRetainSplit:
        """Rebuild a split written by :meth:`to_dict`, re-checking every invariant.

        Raises:
            ForgetRequestError: ``data`` is not such a description (not a mapping, a key
                missing, an index that is not an integer, sets that do not partition).
        """
        if not isinstance(data, dict):
            raise ForgetRequestError(
                f"a split must be a JSON object with {', '.join(_SPLIT_KEYS)}, "
                f"got {type(data).__name__}"
            )
        missing = [key for key in _SPLIT_KEYS if key not in data]
        if missing:
            raise ForgetRequestError(f"the split lacks {', '.join(missing)}")
        scenario = data.get("scenario")
        if scenario not in ("class", "sample"):
            raise ForgetRequestError(
                f"split scenario must be 'class' or 'sample', got {scenario!r}"
            )
        indices = {}
        for key in ("forget", "retain", "validation"):
            values = data[key]
            if not isinstance(values, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in values
            ):
                raise ForgetRequestError(f"the split's {key} must be a list of integer indices")
            indices[key] = _as_index_tensor(values)
        num_train, classes, seed = data["num_train"], data.get("classes", []), data.get("seed")
        ids_file = data.get("ids_file")
        if not isinstance(num_train, int) or isinstance(num_train, bool) or num_train < 1:
            raise ForgetRequestError("the split's num_train must be a positive integer")
        if not isinstance(classes, list) or not all(isinstance(c, int) for c in classes):
            raise ForgetRequestError("the split's classes must be a list of integers")
        if seed is not None and not isinstance(seed, int):
            raise ForgetRequestError("the split's seed must be an integer or null")
        if ids_file is not None and not isinstance(ids_file, str):
            raise ForgetRequestError("the split's ids_file must be a path or null")
        for key, index in indices.items():
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_train):
                raise ForgetRequestError(
                    f"the split's {key} indices are outside 0..{num_train - 1}"
                )
        return cls(
            scenario,
            num_train,
            indices["forget"],
            indices["retain"],
            indices["validation"],
            classes=tuple(classes),
            seed=seed,
            ids_file=ids_file,
        )

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ForgetRetainSplit:
        """Read a split saved by :meth:`save`.

        Raises:
            ForgetRequestError: not a readable JSON split, naming the file.
        """
        try:
            loaded = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(loaded)
        except (OSError, UnicodeDecodeError, RecursionError, ValueError) as error:
            raise ForgetRequestError(f"split file {path}: {error}") from None


def read_ids_file(path: str | Path) -> list[int]:
    """Read forget ids: a JSON list (or ``{"ids": [...]}``), or one integer per line.

    Blank lines and ``#`` comments are ignored in the line format. Anything that is not an
    integer is an error naming the line; nothing is evaluated.
    """
    source = Path(path)
    if not source.exists():
        raise ForgetRequestError(f"ids file {source} does not exist")
    if not source.is_file():
        # A FIFO or /dev/stdin would be read once and differ on a resume: a regular file only.
        raise ForgetRequestError(f"ids file {source} is not a regular file")
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first id.
        text = source.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError as error:
        raise ForgetRequestError(
            f"ids file {source} is not UTF-8 text (byte {error.start} cannot be decoded)"
        ) from None
    except OSError as error:
        raise ForgetRequestError(f"ids file {source} cannot be read: {error.strerror}") from None
    if text.startswith(("[", "{")):
        try:
            loaded = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:
            raise ForgetRequestError(f"ids file {source} is not valid JSON: {error}") from None
        values = loaded.get("ids") if isinstance(loaded, dict) else loaded
        if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise ForgetRequestError(
                f'ids file {source}: JSON must be a list of integers or {{"ids": [...]}}'
            )
        too_large = [v for v in values if not _MIN_ID <= v <= _MAX_ID]
        if too_large:
            raise ForgetRequestError(
                f"ids file {source}: id {too_large[0]} is out of range (ids are training-set "
                "indices, 0 to the training set's size - 1)"
            )
        return list(values)
    ids = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        try:
            value = int(content)
        except ValueError:
            raise ForgetRequestError(
                f"ids file {source}, line {number}: {content[:40]!r} is not an integer index"
            ) from None
        if not _MIN_ID <= value <= _MAX_ID:
            raise ForgetRequestError(
                f"ids file {source}, line {number}: {content[:40]} is out of range (ids are "
                "training-set indices, 0 to the training set's size - 1)"
            )
        ids.append(value)
    return ids


_MAX_ID = 2**63 - 1
_MIN_ID = -(2**63)
"""Ids outside int64 cannot even be compared with the training set's size as tensors; they are
refused when read (ids inside it but out of the set's range are refused by the split)."""


def _sample_pool(
    num_train: int, num_samples: int | None, fraction: float | None, validation: Tensor | None
) -> tuple[Tensor, Tensor, int]:
    """A sample request's checked size: ``(held_out (num_train,) bool, pool (P,) indices outside
    the validation split, count)`` with ``0 < count < P``."""
    if (num_samples is None) == (fraction is None):
        raise ForgetRequestError("give exactly one of num_samples or fraction")
    held_out = _validation_mask(num_train, validation)
    pool = torch.nonzero(~held_out).flatten()
    if fraction is not None:
        if not 0 < fraction < 1:
            raise ForgetRequestError(f"forget fraction must be in (0, 1), got {fraction}")
        num_samples = max(1, round(fraction * pool.numel()))
    assert num_samples is not None
    if not 0 < num_samples < pool.numel():
        raise ForgetRequestError(
            f"cannot forget {num_samples} samples: must be between 1 and "
            f"{pool.numel() - 1} (the training set has {pool.numel()} samples outside the "
            "validation split, and at least one must be retained)"
        )
    return held_out, pool, num_samples


def _validation_mask(num_train: int, validation: Tensor | None) -> Tensor:
    mask = torch.zeros(num_train, dtype=torch.bool)
    if validation is not None and validation.numel():
        mask[validation.long()] = True
    return mask
