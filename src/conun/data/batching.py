"""Batches as index draws: epochs over a set, and an endless stream of random retain batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def shuffled_batches(
    indices: Tensor,
    batch_size: int,
    *,
    generator: torch.Generator,
    drop_last: bool = False,
    no_singleton: bool = False,
    min_last: int = 1,
    shuffle: bool = True,
) -> Iterator[Tensor]:
    """One epoch: ``indices`` in a random order, cut into batches.

    Args:
        indices: ``(N,)`` int64 indices to visit once each.
        batch_size: samples per batch; the last batch may be smaller unless ``drop_last``.
        generator: the source of the order (seeded by the caller).
        no_singleton: a trailing batch of one sample joins the batch before it (``batch_size +
            1`` samples): BatchNorm cannot normalise a single sample in training mode, and
            dropping it would leave a sample out of the epoch.
        min_last: more generally, a trailing batch of fewer samples joins the batch before it
            (``no_singleton`` is ``min_last=2``); data parallelism asks for two samples per
            process.
        shuffle: False: ``indices`` in their given order (a sequential data loader's batches),
            and no random number drawn.

    Yields:
        ``(B,)`` int64 index batches.
    """
    order = indices[torch.randperm(indices.numel(), generator=generator)] if shuffle else indices
    stop = order.numel() - (order.numel() % batch_size if drop_last else 0)
    starts = list(range(0, stop, batch_size))
    smallest = max(min_last, 2 if no_singleton else 1)
    if len(starts) > 1 and stop - starts[-1] < smallest:
        starts.pop()
    for position, start in enumerate(starts):
        end = starts[position + 1] if position + 1 < len(starts) else stop
        yield order[start:end]


class RandomBatchStream:
    """An endless stream of random batches from ``indices`` (Lee et al. 2025, Algorithm 1).

    Each call to :meth:`next` returns a batch of distinct samples. Samples are drawn without
    replacement from a random permutation that is renewed whenever it runs out, so over a long run
    every retain sample is used about equally often, and no two consecutive forget batches see the
    same retain batch (unlike the authors' code, which reuses its first omega batches).
    """

    def __init__(self, indices: Tensor, batch_size: int, *, generator: torch.Generator) -> None:
        if indices.numel() == 0:
            raise ValueError("cannot draw batches from an empty index set")
        self._indices = indices
        self._batch_size = min(batch_size, indices.numel())
        self._generator = generator
        self._order = torch.empty(0, dtype=torch.long)
        self._position = 0

    @property
    def order(self) -> Tensor:
        """``(M,)`` the current permutation (saved with a resumable state)."""
        return self._order

    @property
    def position(self) -> int:
        """Where the next batch starts in :attr:`order`."""
        return self._position

    def load_state(self, order: Tensor, position: int) -> None:
        """Continue from a saved :attr:`order` and :attr:`position`."""
        if not 0 <= position <= order.numel():
            raise ValueError(f"position {position} is outside an order of {order.numel()}")
        self._order, self._position = order.to(torch.long), int(position)

    def next(self) -> Tensor:
        """The next ``(B,)`` batch of indices."""
        if self._position + self._batch_size > self._order.numel():
            # Carry the unused tail over to the front of the next permutation (so no sample is
            # skipped), and move its repeats in the new permutation to the back (so a batch
            # never holds the same sample twice).
            rest = self._order[self._position :]
            fresh = self._indices[torch.randperm(self._indices.numel(), generator=self._generator)]
            repeated = torch.isin(fresh, rest)
            self._order = torch.cat([rest, fresh[~repeated], fresh[repeated]])
            self._position = 0
        batch = self._order[self._position : self._position + self._batch_size]
        self._position += self._batch_size
        return batch


def leading_batch(indices: Tensor, batch_size: int, step: int, size: int) -> Tensor:
    """The ``step``-th batch of ``indices`` in their given order, cut to ``size`` samples.

    What the authors' contrastive unlearning code feeds step ``step`` of every forget batch: it
    restarts a sequential retain loader for each forget batch, so the same first omega batches
    come back each time, each cut to the forget batch's size.

    Args:
        indices: ``(N,)`` int64 indices in loader order.
        batch_size: the loader's batch size.
        step: which batch (0-based).
        size: keep the first ``size`` samples of it.

    Returns:
        ``(min(size, batch),)`` int64 indices.

    Raises:
        ValueError: the loader has no batch ``step`` (the release stops with StopIteration).
    """
    start = step * batch_size
    if start >= indices.numel():
        raise ValueError(
            f"retain_batches=first_batches: step {step} needs retain batch {step + 1} of "
            f"{batch_size}, but the retain set has only {indices.numel()} samples; lower omega"
        )
    return indices[start : start + batch_size][:size]
