"""Data parallelism under ``torchrun``: every rank holds the whole model, works on its share of
each batch, and the gradients are averaged before every optimizer step.

``torchrun --nproc_per_node N -m conun train|unlearn|evaluate ...`` runs the same command in N
processes (on one or many nodes); nothing else changes. How the work is shared:

- **Batches.** Every rank draws the same global batch from the same seeded generator (all ranks
  run the same seed), then keeps its contiguous share (:func:`shard`). Over an epoch each rank
  sees a disjoint ``1/N`` of the data, as with a ``DistributedSampler``, and the ranks always
  see different retain samples, while the random draws stay exactly those of one process — so a
  run with N ranks follows the same batch order as a run with one.
- **Gradients.** After ``backward`` each rank's gradients are averaged over the ranks in one
  flattened all-reduce (:func:`average_gradients`), which is what ``DistributedDataParallel``
  does; conun does it explicitly because the unlearning objectives call the model's
  ``forward_features`` and ``features`` rather than ``forward``, which DDP's wrapper needs to
  see. BatchNorm buffers are broadcast from rank 0 after each step (DDP's
  ``broadcast_buffers``), so every rank holds identical models at every step.
- **Evaluation.** Each rank predicts a contiguous share of the images, the shares are gathered
  and cut back to their true sizes: no sample is counted twice and no padding is counted.
- **I/O.** Only rank 0 writes checkpoints, results, resumable states and progress bars.

What differs from one process: BatchNorm normalises each rank's share of a batch with that
share's statistics (as DDP without SyncBatchNorm does), and float sums run in another order.
Both are seed-level noise; the test compares metrics with a tolerance for exactly that.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` (1 and 0 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0


def context() -> Context:
    """The current process group's context (a single process if none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return Context(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
        )
    return Context()


def setup_from_environment(device: str) -> Context:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Args:
        device: the run's device; ``cuda`` uses NCCL (one GPU per local rank), anything else
            gloo.

    Returns:
        The context (a single process when ``WORLD_SIZE`` is unset or 1).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or (dist.is_available() and dist.is_initialized()):
        return context()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)  # "cuda" then means this rank's GPU
        backend = "nccl"
    dist.init_process_group(backend=backend)
    found = context()
    logger.info("rank %d of %d (%s)", found.rank, found.world_size, backend)
    return found


def shard(batch: Tensor) -> Tensor:
    """This rank's contiguous share of a global batch (``(B,)`` -> about ``(B/N,)``).

    Shares differ in size by at most one; a rank may get an empty share when ``B < N``.
    """
    found = context()
    if not found.is_distributed:
        return batch
    return torch.tensor_split(batch, found.world_size)[found.rank]


def average_gradients(parameters: list[nn.Parameter]) -> None:
    """Replace every gradient by its mean over the ranks (one flattened all-reduce)."""
    found = context()
    if not found.is_distributed:
        return
    with_grad = [p for p in parameters if p.grad is not None]
    if not with_grad:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in with_grad])  # type: ignore[union-attr]
    dist.all_reduce(flat)
    flat /= found.world_size
    offset = 0
    for parameter in with_grad:
        assert parameter.grad is not None
        count = parameter.grad.numel()
        parameter.grad.copy_(flat[offset : offset + count].view_as(parameter.grad))
        offset += count


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics)."""
    if not context().is_distributed:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def _communication_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo moves CPU tensors."""
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_with_grad(local: Tensor) -> Tensor:
    """Every rank's rows, in rank order, with gradients flowing back to each rank's own rows:
    ``(n_r, ...)`` on each rank -> ``(sum_r n_r, ...)`` on every rank.

    Used for a loss over the global batch: every rank computes the same loss on the gathered
    rows; the all-gather's backward sums the ranks' gradients for each rank's rows (N identical
    copies), and :func:`average_gradients` divides by N: the gradient of the loss computed once
    over the whole batch, as in one process.
    """
    found = context()
    if not found.is_distributed:
        return local
    import torch.distributed.nn.functional as distributed_functional

    size = torch.tensor([local.shape[0]], device=_communication_device())
    sizes = [torch.zeros_like(size) for _ in range(found.world_size)]
    dist.all_gather(sizes, size)
    counts = [int(count.item()) for count in sizes]
    width = max(counts)
    padded = torch.cat([local, local.new_zeros((width - local.shape[0], *local.shape[1:]))])
    parts: list[Tensor] | tuple[Tensor, ...]
    if padded.requires_grad:
        parts = distributed_functional.all_gather(padded)
    else:  # labels, detached embeddings: a plain all-gather
        parts = [torch.empty_like(padded) for _ in range(found.world_size)]
        dist.all_gather(list(parts), padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


def gather_rows(local: Tensor, total: int) -> Tensor:
    """Concatenate every rank's rows in rank order (the inverse of :func:`shard` over ``total``
    rows): ``(n_r, ...)`` on each rank -> ``(total, ...)`` on every rank.

    Ranks send equally sized buffers (collectives need that); each is cut back to its true
    size before concatenation, so the padding never reaches the result.
    """
    found = context()
    if not found.is_distributed:
        return local
    sizes = [part.numel() for part in torch.tensor_split(torch.empty(total), found.world_size)]
    width = max(sizes)
    padded = local.new_zeros((width, *local.shape[1:]), device=_communication_device())
    padded[: local.shape[0]] = local
    received = [torch.empty_like(padded) for _ in range(found.world_size)]
    dist.all_gather(received, padded)
    rows = [part[:size] for part, size in zip(received, sizes, strict=True)]
    return torch.cat(rows).to(local.device)


def all_reduce_sum(value: float) -> float:
    """Sum of ``value`` over the ranks (for logged totals)."""
    if not context().is_distributed:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=_communication_device())
    dist.all_reduce(total)
    return float(total.item())


__all__ = [
    "Context",
    "all_reduce_sum",
    "average_gradients",
    "broadcast_buffers",
    "context",
    "gather_rows",
    "gather_with_grad",
    "setup_from_environment",
    "shard",
]
