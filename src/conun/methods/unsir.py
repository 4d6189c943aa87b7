"""UNSIR: error-maximising noise, then impair and repair (class scenario).

Tarun, Chundawat, Mandal and Kankanhalli, "Fast Yet Effective Machine Unlearning", IEEE
Transactions on Neural Networks and Learning Systems (TNNLS), 2023 (arXiv:2111.08947); official
code vikram2000b/Fast-Machine-Unlearning, ``Machine Unlearning.ipynb``. Three phases:

1. **Noise.** For each forgotten class ``c``, a noise batch ``N`` ``(B_n, C_in, H, W)``
   (``B_n`` = 256, initialised ``N(0, 1)`` in the model's normalised input space) *maximises*
   the model's loss on it labelled ``c``: Adam (lr 0.1) minimises
   ``-CE(f(N), c) + lambda * mean_i ||N_i||_2^2`` (``lambda`` = 0.1) for 5 x 8 = 40 steps; the
   model is not updated.
2. **Impair.** One epoch, Adam lr 0.02, batches of 256 drawn from the shuffled union of
   ``noise_repeats`` (20) copies of each noise batch labelled with its class and a retain subset
   (``retain_per_class`` = 1000 samples of each retained class): the noise pushes the weights
   away from what identifies the forgotten class.
3. **Repair.** One epoch, Adam lr 0.01, batches of 256 of the retain subset alone: the retained
   classes recover.

UNSIR needs the forgotten *classes* only, never the forget samples themselves.

:meth:`Unsir.run` implements the three phases itself rather than through the shared engine: the
algorithm is not a loop over the forget set or the retain set under one objective. The noise
phase optimises an input, not the model, and the impair epoch goes over a set (noise copies plus
a retain subset) that is neither. It reuses the engine's helpers (device placement, seeded batch
orders, ``make_optimizer``, the stopping-rule check for the history) and reports ``seconds`` as
the wall-clock of all three phases, history checks included as in the engine.

The schedule is fixed (one impair and one repair epoch, as in the paper); ``stopping`` only
chooses the held-out set of the history's checks (before impair, after impair, after repair), and
``stopping.rule`` / ``max_passes`` are not used. ``optimizer`` is the impair optimizer (Adam,
lr 0.02 in the preset); the repair epoch uses the same optimizer type with ``repair_lr``.

Departures from their notebook:

- The noise is learned against the model in eval mode (BatchNorm on its running statistics,
  which are left untouched) with the gradient taken for the noise alone; their freshly built
  ResNet was in train mode, so the noise phase also overwrote BatchNorm's running statistics
  with noise statistics.
- Each class's noise is labelled with that class; their impair cell labels every noise batch
  ``class_num = 0`` (correct only when class 0 is the single forgotten class).
- The retain subset is a seeded random draw of ``retain_per_class`` samples per retained class
  (fewer if the class has fewer), not the first ones in dataset order; all randomness (noise
  initialisation, subset, batch orders) comes from ``task.generator``.
- The noise copies are not materialised: a batch index past the retain subset points at
  ``noise[index mod B_n]``, which is the same set as their list of copies.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from tqdm.auto import tqdm

from conun.config import StrictModel
from conun.data.batching import shuffled_batches
from conun.data.splits import Scenario
from conun.distributed.device import prepare_model, to_device
from conun.distributed.group import context, shard
from conun.engine.stopping import build_evaluation_sets, check_rule
from conun.engine.training import make_optimizer, take_step
from conun.methods.base import MethodOutcome, UnlearningMethod, UnlearningTask, register_method

logger = logging.getLogger(__name__)


class UnsirOptions(StrictModel):
    """UNSIR's hyperparameters; defaults are the official notebook's (CIFAR-10, ResNet-18)."""

    noise_batch_size: int = Field(256, ge=1)
    """``B_n``: noise images learned per forgotten class."""
    noise_lr: float = Field(0.1, gt=0)
    """Adam learning rate of the noise."""
    noise_steps: int = Field(40, ge=1)
    """Adam steps on the noise (their 5 epochs x 8 steps)."""
    noise_l2_weight: float = Field(0.1, ge=0)
    """``lambda`` of the regulariser ``mean_i ||N_i||_2^2``."""
    noise_repeats: int = Field(20, ge=1)
    """Copies of each noise batch in the impair set (their ``num_batches``)."""
    retain_per_class: int = Field(1000, ge=1)
    """Retain samples per retained class in the impair and repair sets."""
    impair_epochs: int = Field(1, ge=1)
    repair_epochs: int = Field(1, ge=1)
    repair_lr: float = Field(0.01, gt=0)
    """Learning rate of the repair epochs (the impair epochs use ``optimizer.lr``)."""


@dataclass(frozen=True)
class LearnedNoise:
    """The outcome of the noise phase for one class.

    Attributes:
        noise: ``(B_n, C_in, H, W)`` error-maximising inputs (no gradient).
        label: the class the noise is labelled with.
        cross_entropy: ``(steps + 1,)`` mean CE of the model on the noise before each step and
            after the last one (rises as the noise learns).
    """

    noise: Tensor
    label: int
    cross_entropy: Tensor


def learn_error_maximizing_noise(
    model: nn.Module,
    label: int,
    shape: tuple[int, ...],
    *,
    steps: int,
    lr: float,
    l2_weight: float,
    generator: torch.Generator,
    device: torch.device,
) -> LearnedNoise:
    """Noise that maximises ``model``'s cross-entropy for ``label`` (UNSIR phase 1).

    Adam on ``N`` minimising ``-CE(model(N), label) + l2_weight * mean_i sum_chw N_i^2``. The
    model is used in its current mode (the caller puts it in eval mode) and is not changed: the
    gradient is taken for ``N`` alone with :func:`torch.autograd.grad`.

    Args:
        model: ``(B, C_in, H, W)`` -> ``(B, C)`` logits.
        label: the class the noise is labelled with.
        shape: ``(B_n, C_in, H, W)``.
        steps: Adam steps.
        lr: Adam learning rate.
        l2_weight: weight of the squared-norm regulariser.
        generator: source of the ``N(0, 1)`` initialisation (CPU generator; drawn on the CPU).
        device: where the noise lives.

    Returns:
        The noise and the CE trace (``steps + 1`` values).
    """
    noise = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([noise], lr=lr)
    labels = torch.full((shape[0],), label, dtype=torch.long, device=device)
    trace: list[Tensor] = []
    for _ in range(steps):
        cross_entropy = F.cross_entropy(model(noise), labels)
        squared_norm = noise.square().sum(dim=tuple(range(1, noise.dim()))).mean()
        objective = -cross_entropy + l2_weight * squared_norm
        (gradient,) = torch.autograd.grad(objective, noise)
        noise.grad = gradient
        optimizer.step()
        trace.append(cross_entropy.detach())
    with torch.no_grad():
        trace.append(F.cross_entropy(model(noise), labels))
    return LearnedNoise(noise.detach(), label, torch.stack(trace).cpu())


def retain_subset(
    labels: Tensor, retain: Tensor, per_class: int, *, generator: torch.Generator
) -> Tensor:
    """A seeded random draw of up to ``per_class`` retain indices of every retained class.

    Args:
        labels: ``(N,)`` training labels.
        retain: ``(Nr,)`` retain indices into ``labels``.
        per_class: samples kept per class (all of a class that has fewer).

    Returns:
        ``(M,)`` sorted int64 indices, a subset of ``retain``.
    """
    chosen: list[Tensor] = []
    retain_labels = labels[retain]
    for cls in torch.unique(retain_labels).tolist():
        members = retain[retain_labels == cls]
        order = torch.randperm(members.numel(), generator=generator)[:per_class]
        chosen.append(members[order])
    return torch.sort(torch.cat(chosen)).values


@register_method("unsir")
class Unsir(UnlearningMethod):
    """Learn error-maximising noise for the forgotten classes, impair with it, then repair."""

    Options: ClassVar[type[StrictModel]] = UnsirOptions
    scenarios: ClassVar[tuple[Scenario, ...]] = ("class",)
    # Impair and repair batches of 256 (their DataLoaders).
    default_batch_size: ClassVar[dict[str, int]] = {"class": 256}

    @property
    def settings(self) -> UnsirOptions:
        assert isinstance(self.options, UnsirOptions)
        return self.options

    def run(self, task: UnlearningTask) -> MethodOutcome:
        config, split, data = task.config, task.split, task.data
        settings = self.settings
        device = torch.device(config.device)
        model = task.model
        prepare_model(model, device, channels_last=config.channels_last)
        batch_size = self.batch_size(config, split.scenario)
        evaluation_sets = build_evaluation_sets(
            data, split, config.stopping, generator=task.generator
        )
        history: list[dict[str, float]] = []
        check_seconds = 0.0

        def check(phase: float) -> None:
            nonlocal check_seconds
            started_check = time.perf_counter()
            result = check_rule(
                model,
                evaluation_sets,
                split,
                data.num_classes,
                batch_size=config.eval_batch_size,
                channels_last=config.channels_last,
                checks_forget=config.stopping.class_checks_forget,
            )
            check_seconds += time.perf_counter() - started_check
            history.append(
                {
                    "batch": 0,  # UNSIR never processes a forget batch
                    "phase": phase,  # 0 start, 1 after impair, 2 after repair
                    "forget_train_acc": result.forget_acc,
                    "held_out_acc": result.held_out_acc,
                }
            )

        started = time.perf_counter()
        check(0)
        # Phase 1: one noise batch per forgotten class, against the deployed (eval-mode) model.
        model.eval()
        _, channels, height, width = data.train.images.shape
        noises = [
            learn_error_maximizing_noise(
                model,
                cls,
                (settings.noise_batch_size, channels, height, width),
                steps=settings.noise_steps,
                lr=settings.noise_lr,
                l2_weight=settings.noise_l2_weight,
                generator=task.generator,
                device=device,
            )
            for cls in split.classes
        ]
        noise_images = torch.cat([learned.noise for learned in noises])  # (K * B_n, C_in, H, W)
        noise_labels = torch.cat(
            [
                torch.full((settings.noise_batch_size,), learned.label, dtype=torch.long)
                for learned in noises
            ]
        ).to(device)  # (K * B_n,)
        subset = retain_subset(
            data.train.labels, split.retain, settings.retain_per_class, generator=task.generator
        )
        num_retain = subset.numel()
        num_noise = noise_images.shape[0] * settings.noise_repeats

        def load(positions: Tensor) -> tuple[Tensor, Tensor]:
            # Positions < num_retain index the retain subset; the rest index the noise copies
            # (position - num_retain) mod (K * B_n), i.e. the copies without materialising them.
            positions = shard(positions)  # this process's share under torchrun
            is_retain = positions < num_retain
            retain_index = subset[positions[is_retain]]
            noise_index = ((positions[~is_retain] - num_retain) % noise_images.shape[0]).to(device)
            images = torch.cat(
                [
                    to_device(
                        data.train.images[retain_index], device, channels_last=config.channels_last
                    ),
                    to_device(
                        noise_images[noise_index], device, channels_last=config.channels_last
                    ),
                ]
            )
            labels = torch.cat(
                [data.train.labels[retain_index].to(device), noise_labels[noise_index]]
            )
            return images, labels

        def epoch(size: int, optimizer: torch.optim.Optimizer, name: str) -> float:
            model.train()
            loss_sum, seen = 0.0, 0
            world = context().world_size
            for positions in shuffled_batches(
                torch.arange(size),
                batch_size,
                generator=task.generator,
                min_last=2 * world if world > 1 else 1,
            ):
                images, labels = load(positions)
                loss = F.cross_entropy(model(images), labels)
                take_step(
                    loss,
                    optimizer,
                    model,
                    failure=f"unsir: {name} loss is {{loss}}; lower the learning rate",
                )
                loss_sum += float(loss.detach()) * labels.shape[0]
                seen += labels.shape[0]
            return loss_sum / max(1, seen)

        progress = tqdm(
            total=settings.impair_epochs + settings.repair_epochs,
            desc="unlearn (unsir)",
            unit="epoch",
            disable=task.quiet,
            leave=False,
        )
        # Phase 2: impair on the noise copies mixed with the retain subset.
        impair = make_optimizer(model.parameters(), config.optimizer)
        impair_loss = 0.0
        for _ in range(settings.impair_epochs):
            impair_loss = epoch(num_retain + num_noise, impair, "impair")
            progress.update()
        check(1)
        # Phase 3: repair on the retain subset alone, with a fresh optimizer (as theirs).
        repair = make_optimizer(
            model.parameters(), config.optimizer.model_copy(update={"lr": settings.repair_lr})
        )
        repair_loss = 0.0
        for _ in range(settings.repair_epochs):
            repair_loss = epoch(num_retain, repair, "repair")
            progress.update()
        check(2)
        progress.close()
        seconds = time.perf_counter() - started
        model.eval()
        logger.info(
            "unsir: noise for classes %s, impair on %d retain + %d noise samples, repair on %d; "
            "%.2fs (checks %.2fs)",
            list(split.classes),
            num_retain,
            num_noise,
            num_retain,
            seconds,
            check_seconds,
        )
        return MethodOutcome(
            model=model,
            seconds=seconds,
            history=history,
            extra={
                "check_seconds": check_seconds,
                "stopped_by": "schedule",
                "noise_cross_entropy": {
                    str(learned.label): [
                        float(learned.cross_entropy[0]),
                        float(learned.cross_entropy[-1]),
                    ]
                    for learned in noises
                },
                "impair_loss": impair_loss,
                "repair_loss": repair_loss,
                "retain_subset_size": num_retain,
            },
        )
