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
a retain subset) that is neither. It plugs into the engine's pieces (:mod:`conun.engine.monitor`:
the stopping-rule checks for the history, batch loading, timing, resumable states; seeded batch
orders, ``make_optimizer``) and reports ``seconds`` as the wall-clock of all three phases,
history checks included as in the engine. With ``task.resume`` it saves a state every
``resume.every`` impair or repair steps (the learned noise and the retain subset with it) and
continues from one to the uninterrupted run's weights.

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
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from tqdm.auto import tqdm

from conun.config import OptimizerConfig, StoppingConfig, StrictModel
from conun.data.batching import shuffled_batches
from conun.data.splits import Scenario
from conun.distributed.device import prepare_model
from conun.distributed.group import context, shard
from conun.engine.monitor import (
    BatchLoader,
    LoopResume,
    RunClock,
    StoppingMonitor,
    order_parts,
    split_order,
)
from conun.engine.training import make_optimizer, take_step
from conun.methods.base import (
    MethodDefaults,
    MethodOutcome,
    UnlearningMethod,
    UnlearningTask,
    register_method,
)

logger = logging.getLogger(__name__)


class UnsirOptions(StrictModel):
    """UNSIR's hyperparameters; defaults are the official notebook's (CIFAR-10, ResNet-18):
    Tarun et al. (IEEE TNNLS 2023), vikram2000b/Fast-Machine-Unlearning "Machine
    Unlearning.ipynb"."""

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


@dataclass
class _UnsirPosition:
    """Where UNSIR's impair/repair schedule is; all of it but ``order`` goes into a resumable
    state as JSON.

    Attributes:
        phase: 1 impair, 2 repair (the noise phase comes before any optimizer step).
        epoch: epochs of the phase completed.
        position: the next batch of ``order``.
        steps: optimizer steps taken (the unit of ``resume.every``).
        loss_sum: the current epoch's summed per-sample loss so far.
        seen: samples the current epoch has stepped on.
        losses: each phase's mean loss over its last epoch, by name.
        order: the current epoch's ``(B,)`` batches of positions (None: not drawn yet).
    """

    phase: int = 1
    epoch: int = 0
    position: int = 0
    steps: int = 0
    loss_sum: float = 0.0
    seen: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    order: list[Tensor] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "order"}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> _UnsirPosition:
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name != "order"})


@register_method("unsir")
class Unsir(UnlearningMethod):
    """Learn error-maximising noise for the forgotten classes, impair with it, then repair."""

    Options: ClassVar[type[StrictModel]] = UnsirOptions
    scenarios: ClassVar[tuple[Scenario, ...]] = ("class",)
    # Tarun et al. (IEEE TNNLS 2023), vikram2000b/Fast-Machine-Unlearning "Machine
    # Unlearning.ipynb": noise batch 256, Adam lr 0.1, 5x8 steps, L2 weight 0.1; impair: 20 noise
    # copies + 1000 retain samples per class, batch 256 (impair and repair DataLoaders), Adam lr
    # 0.02, 1 epoch; repair: Adam lr 0.01, 1 epoch. A fixed schedule: no stopping rule.
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        "class": MethodDefaults(
            batch_size=256,
            optimizer=OptimizerConfig(name="adam", lr=0.02, momentum=0.0, weight_decay=0.0),
            stopping=StoppingConfig(rule="none", eval_set="validation"),
        )
    }

    @property
    def settings(self) -> UnsirOptions:
        assert isinstance(self.options, UnsirOptions)
        return self.options

    def learn_noise(
        self, model: nn.Module, task: UnlearningTask, device: torch.device
    ) -> tuple[Tensor, Tensor, dict[str, list[float]]]:
        """Phase 1: one noise batch per forgotten class, against ``model`` in eval mode.

        Returns:
            ``images`` ``(K * B_n, C_in, H, W)`` and ``labels`` ``(K * B_n,)`` on ``device``,
            and per class the model's cross-entropy on its noise before and after learning it.
        """
        settings = self.settings
        model.eval()
        _, channels, height, width = task.data.train.images.shape
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
            for cls in task.split.classes
        ]
        images = torch.cat([learned.noise for learned in noises])
        labels = torch.cat(
            [
                torch.full((settings.noise_batch_size,), learned.label, dtype=torch.long)
                for learned in noises
            ]
        ).to(device)
        cross_entropy = {
            str(learned.label): [float(learned.cross_entropy[0]), float(learned.cross_entropy[-1])]
            for learned in noises
        }
        return images, labels, cross_entropy

    def run(self, task: UnlearningTask) -> MethodOutcome:
        config, split = task.config, task.split
        settings = self.settings
        device = torch.device(config.device)
        model = task.model
        prepare_model(model, device, channels_last=config.channels_last)
        batch_size = self.batch_size(config, split.scenario)
        monitor = StoppingMonitor.for_task(task, model)
        train = BatchLoader.training_set(task)
        clock = RunClock(task.resume)
        saves = LoopResume(task, monitor, clock)
        at = _UnsirPosition()

        clock.start()
        saved = saves.state
        if saved is None:
            # UNSIR never processes a forget batch; screened: the model is the original.
            monitor.check({"batch": 0, "phase": 0}, screen=True)
            noise_images, noise_labels, noise_cross_entropy = self.learn_noise(model, task, device)
            subset = retain_subset(
                train.labels, split.retain, settings.retain_per_class, generator=task.generator
            )
        else:
            # The noise and the retain subset were drawn before the save: they come from it.
            noise_images = saved.loop_tensor("noise_images").to(device)
            noise_labels = saved.loop_tensor("noise_labels").to(device)
            noise_cross_entropy = saved.loop["noise_cross_entropy"]
            subset = saved.loop_tensor("retain_subset")
        noise = BatchLoader(noise_images, noise_labels, device, config.channels_last)
        num_retain = subset.numel()
        num_noise = noise_images.shape[0] * settings.noise_repeats

        def load(positions: Tensor) -> tuple[Tensor, Tensor]:
            # Positions < num_retain index the retain subset; the rest index the noise copies
            # (position - num_retain) mod (K * B_n), i.e. the copies without materialising them.
            positions = shard(positions)  # this process's share under torchrun
            is_retain = positions < num_retain
            retain_images, retain_labels = train.whole(subset[positions[is_retain]])
            copies = (positions[~is_retain] - num_retain) % noise_images.shape[0]
            copy_images, copy_labels = noise.whole(copies)
            return torch.cat([retain_images, copy_images]), torch.cat([retain_labels, copy_labels])

        def save(optimizer: torch.optim.Optimizer) -> None:
            assert at.order is not None
            flat, sizes = order_parts(at.order)
            saves.save(
                model=model,
                optimizer=optimizer,
                loop={**at.to_dict(), "sizes": sizes, "noise_cross_entropy": noise_cross_entropy},
                loop_tensors={
                    "order": flat,
                    "noise_images": noise_images,
                    "noise_labels": noise_labels,
                    "retain_subset": subset,
                },
            )

        # Phase 2 impairs on the noise copies mixed with the retain subset; phase 3 repairs on
        # the retain subset alone, with a fresh optimizer (as theirs).
        phases = [
            ("impair", settings.impair_epochs, num_retain + num_noise, config.optimizer),
            (
                "repair",
                settings.repair_epochs,
                num_retain,
                config.optimizer.model_copy(update={"lr": settings.repair_lr}),
            ),
        ]
        world = context().world_size
        progress = tqdm(
            total=settings.impair_epochs + settings.repair_epochs,
            desc="unlearn (unsir)",
            unit="epoch",
            disable=task.quiet,
            leave=False,
        )
        for number, (name, epochs, size, optimizer_config) in enumerate(phases, start=1):
            optimizer = make_optimizer(model.parameters(), optimizer_config)
            if saved is not None:
                if number < saved.loop["phase"]:
                    progress.update(epochs)
                    continue  # finished before the save (its check is in the history)
                state = saves.restore(model=model, optimizer=optimizer)
                at = _UnsirPosition.from_dict(state.loop)
                at.order = split_order(state.loop_tensor("order"), state.loop["sizes"])
                progress.update(at.epoch)
                logger.info("unsir: resumed at step %d (%s)", at.steps, name)
                saved = None
            while at.epoch < epochs:
                model.train()
                if at.order is None:
                    at.order = list(
                        shuffled_batches(
                            torch.arange(size),
                            batch_size,
                            generator=task.generator,
                            min_last=2 * world if world > 1 else 1,
                        )
                    )
                while at.position < len(at.order):
                    images, labels = load(at.order[at.position])
                    at.position += 1
                    loss = F.cross_entropy(model(images), labels)
                    take_step(
                        loss,
                        optimizer,
                        model,
                        failure=f"unsir: {name} loss is {{loss}} (step {at.steps + 1}); lower "
                        "the learning rate",
                    )
                    at.loss_sum += float(loss.detach()) * labels.shape[0]
                    at.seen += labels.shape[0]
                    at.steps += 1
                    # Each batch is one step, so a state is saved exactly every `every` steps.
                    if saves.due(at.steps - 1, at.steps):
                        save(optimizer)
                at.losses[name] = at.loss_sum / max(1, at.seen)
                at.epoch, at.order, at.position = at.epoch + 1, None, 0
                at.loss_sum, at.seen = 0.0, 0
                progress.update()
            at.phase, at.epoch = number + 1, 0
            monitor.check({"batch": 0, "phase": number})
        progress.close()
        seconds = clock.seconds()
        model.eval()
        logger.info(
            "unsir: noise for classes %s, impair on %d retain + %d noise samples, repair on %d; "
            "%.2fs (checks %.2fs)",
            list(split.classes),
            num_retain,
            num_noise,
            num_retain,
            seconds,
            monitor.check_seconds,
        )
        return MethodOutcome(
            model=model,
            seconds=seconds,
            history=monitor.history,
            extra={
                "check_seconds": monitor.check_seconds,
                "stopped_by": "schedule",
                "noise_cross_entropy": noise_cross_entropy,
                "impair_loss": at.losses.get("impair", 0.0),
                "repair_loss": at.losses.get("repair", 0.0),
                "retain_subset_size": num_retain,
            },
        )
