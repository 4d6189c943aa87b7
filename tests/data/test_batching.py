"""Batch draws: epochs visit everything once; the retain stream keeps drawing fresh batches."""

from __future__ import annotations

import torch

from conun.data.batching import RandomBatchStream, shuffled_batches


def test_shuffled_batches_visit_each_index_once() -> None:
    indices = torch.arange(10, 33)
    batches = list(shuffled_batches(indices, 5, generator=torch.Generator().manual_seed(0)))
    assert [b.numel() for b in batches] == [5, 5, 5, 5, 3]
    assert torch.equal(torch.sort(torch.cat(batches)).values, indices)
    dropped = list(
        shuffled_batches(indices, 5, generator=torch.Generator().manual_seed(0), drop_last=True)
    )
    assert [b.numel() for b in dropped] == [5, 5, 5, 5]


def test_a_trailing_single_sample_joins_the_batch_before_it() -> None:
    # 21 = 4 x 5 + 1: BatchNorm cannot train on the lone sample, and dropping it loses data.
    indices = torch.arange(21)
    generator = torch.Generator().manual_seed(0)
    batches = list(shuffled_batches(indices, 5, generator=generator, no_singleton=True))
    assert [b.numel() for b in batches] == [5, 5, 5, 6]
    assert torch.equal(torch.sort(torch.cat(batches)).values, indices)
    # Same order as without the option: only the cut changes.
    plain = list(shuffled_batches(indices, 5, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(torch.cat(batches), torch.cat(plain))
    # A set of one sample stays one batch; other remainders are untouched.
    one = list(shuffled_batches(torch.arange(1), 5, generator=generator, no_singleton=True))
    assert [b.numel() for b in one] == [1]
    rest = list(shuffled_batches(torch.arange(22), 5, generator=generator, no_singleton=True))
    assert [b.numel() for b in rest] == [5, 5, 5, 5, 2]


def test_retain_stream_draws_fresh_distinct_batches_and_balances_use() -> None:
    indices = torch.arange(100, 150)
    stream = RandomBatchStream(indices, 8, generator=torch.Generator().manual_seed(1))
    batches = [stream.next() for _ in range(60)]
    for batch in batches:
        assert batch.numel() == 8 and batch.unique().numel() == 8
        assert torch.isin(batch, indices).all()
    # Not the same few batches reused (the authors' code reuses its first omega batches).
    assert len({tuple(sorted(b.tolist())) for b in batches}) == len(batches)
    counts = torch.bincount(torch.cat(batches) - 100, minlength=50)
    assert counts.max() - counts.min() <= 2  # 480 draws over 50 samples: ~9.6 each


def test_retain_stream_is_seeded() -> None:
    a = RandomBatchStream(torch.arange(30), 4, generator=torch.Generator().manual_seed(3))
    b = RandomBatchStream(torch.arange(30), 4, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a.next(), b.next()) for _ in range(20))


def test_retain_stream_caps_batch_at_set_size() -> None:
    stream = RandomBatchStream(torch.arange(3), 8, generator=torch.Generator().manual_seed(0))
    assert stream.next().numel() == 3
