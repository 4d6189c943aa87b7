"""What one ledger version forgets and retains: every request's samples, the samples forgotten
by earlier versions, and the training data the method sees without them.

Shared by ``apply``, which unlearns with it, and ``verify``, which rebuilds it from the database
to recompute a certificate's sets and checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRetainSplit, Scenario
from conun.workflows.ledger_certificate import RequestForget
from conun.workflows.ledger_store import RequestRow, canonical_ids, request_samples


def data_fingerprint(data: DatasetBundle) -> str:
    """SHA-256 of the training and test images and labels, exactly as the models see them."""
    digest = hashlib.sha256()
    for tensor in (data.train.images, data.train.labels, data.test.images, data.test.labels):
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def set_hash(indices: Tensor) -> dict[str, Any]:
    """A set of training indices in a certificate: its size and its SHA-256."""
    return {
        "samples": int(indices.numel()),
        "sha256": hashlib.sha256(canonical_ids(indices.tolist())).hexdigest(),
    }


@dataclass(frozen=True)
class Plan:
    """What one version forgets and retains (indices into the training set but ``split``'s).

    Attributes:
        honoured: every request honoured up to this version, with its samples.
        before: samples forgotten by earlier versions.
        forget: this version's forget set (none forgotten before).
        validation: the original's validation split.
        frame: the training data the method sees.
        split: ``forget`` / retain / held-out in ``frame``'s indices.
    """

    honoured: list[RequestForget]
    before: Tensor
    forget: Tensor
    validation: Tensor
    frame: Frame
    split: ForgetRetainSplit

    @property
    def retain(self) -> Tensor:
        """``(Nr,)`` training indices retained: neither forgotten so far nor held out."""
        return self.frame.original_index(self.split.retain)

    def sets(self) -> dict[str, Any]:
        """The certificate's ``sets``: count and SHA-256 of each index set."""
        return {
            "forget": set_hash(self.forget),
            "forgotten_so_far": set_hash(union([self.before, self.forget])),
            "retain": set_hash(self.retain),
        }


class Frame:
    """The training data an apply's method sees: without the samples forgotten by earlier
    versions (and the held-out samples of classes they forgot), re-indexed; and the way back
    to the training set's indices.

    Args:
        data: the ledger's dataset.
        validation: ``(Nv,)`` training indices held out before the original's training.
        before: ``(Nb,)`` training indices forgotten by earlier versions.
        forgotten_classes: the classes forgotten by earlier versions.
    """

    def __init__(
        self,
        data: DatasetBundle,
        validation: Tensor,
        before: Tensor,
        forgotten_classes: Sequence[int] = (),
    ) -> None:
        keep = torch.ones(len(data.train), dtype=torch.bool)
        keep[before] = False
        # Held-out samples of classes forgotten earlier are no unseen data for the stopping
        # rule to match (the retrained model is at chance on them): out of the frame too.
        in_forgotten = torch.isin(data.train.labels, torch.tensor(forgotten_classes).long())
        keep[validation[in_forgotten[validation]]] = False
        self.kept = torch.nonzero(keep).flatten()
        self.position = torch.full((len(data.train),), -1, dtype=torch.long)
        self.position[self.kept] = torch.arange(self.kept.numel())
        self.validation = validation[keep[validation]]
        self.data = dataclasses.replace(data, train=data.train.subset(self.kept))

    def split(
        self, forget: Tensor, scenario: Scenario, classes: tuple[int, ...]
    ) -> ForgetRetainSplit:
        """The split of ``forget`` (training indices, none forgotten before) in this frame.

        Raises:
            ForgetRequestError: nothing to forget, or nothing left to retain.
        """
        in_frame = torch.zeros(self.kept.numel(), dtype=torch.bool)
        held_out = self.position[self.validation]
        forget_here = self.position[forget]
        in_frame[forget_here] = True
        in_frame[held_out] = True
        return ForgetRetainSplit(
            scenario,
            int(self.kept.numel()),
            torch.sort(forget_here).values,
            torch.nonzero(~in_frame).flatten(),
            torch.sort(held_out).values,
            classes=classes if scenario == "class" else (),
        )

    def original_index(self, indices: Tensor) -> Tensor:
        """``indices`` of this frame as training-set indices."""
        return self.kept[indices]


def union(parts: Sequence[Tensor]) -> Tensor:
    """Sorted unique int64 indices of every part."""
    tensors = [p.long() for p in parts if p.numel()]
    return torch.unique(torch.cat(tensors)) if tensors else torch.empty(0, dtype=torch.long)


def scenario_of(group: Sequence[RequestRow]) -> Scenario:
    return "class" if group[0].kind == "class" else "sample"


def request_entry(request: RequestRow) -> dict[str, Any]:
    """A request as its certificate lists it (no ids: their hash)."""
    return {
        "id": request.id,
        "received_at": request.received_at,
        "kind": request.kind,
        "classes": list(request.classes),
        "num_samples": request.num_samples,
        "reference": request.reference,
        "ids_sha256": request.ids_sha256,
    }


def forget_of(
    connection: sqlite3.Connection, request: RequestRow, data: DatasetBundle, validation: Tensor
) -> Tensor:
    """``(N,)`` sorted training indices ``request`` forgets (validation excluded)."""
    if request.kind == "samples":
        return torch.tensor(request_samples(connection, request.id), dtype=torch.long)
    held_out = torch.zeros(len(data.train), dtype=torch.bool)
    held_out[validation] = True
    in_classes = torch.isin(data.train.labels, torch.tensor(request.classes))
    return torch.nonzero(in_classes & ~held_out).flatten()


def build_plan(
    connection: sqlite3.Connection,
    data: DatasetBundle,
    validation: Tensor,
    earlier: Sequence[RequestRow],
    current: Sequence[RequestRow],
) -> Plan:
    """What a version honouring ``current`` after ``earlier`` forgets and retains.

    Args:
        connection: the ledger's database (a sample request's ids).
        data: the ledger's dataset.
        validation: ``(Nv,)`` the original's validation split (training indices).
        earlier: the requests honoured by earlier versions.
        current: the requests this version honours (one kind).

    Raises:
        ForgetRequestError: nothing left to forget or to retain.
    """
    honoured = [
        RequestForget(r, forget_of(connection, r, data, validation), False) for r in earlier
    ]
    honoured += [
        RequestForget(r, forget_of(connection, r, data, validation), True) for r in current
    ]
    before = union([h.forget for h in honoured if not h.current])
    now_forgotten = union([h.forget for h in honoured if h.current])
    forget = now_forgotten[~torch.isin(now_forgotten, before)]
    forgotten_classes = sorted({c for r in earlier for c in r.classes})
    frame = Frame(data, validation, before, forgotten_classes)
    classes = tuple(sorted({c for r in current for c in r.classes}))
    split = frame.split(forget, scenario_of(current), classes)
    return Plan(honoured, before, forget, validation, frame, split)


__all__ = [
    "Frame",
    "Plan",
    "build_plan",
    "data_fingerprint",
    "forget_of",
    "request_entry",
    "scenario_of",
    "set_hash",
    "union",
]
