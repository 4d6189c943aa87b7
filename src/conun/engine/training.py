"""The training loop: originals, retrained references and fine-tuning all go through here."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from conun.config import OptimizerConfig, TrainConfig
from conun.data.arrays import ArrayDataset
from conun.data.augment import augment_batch, default_pad
from conun.data.batching import shuffled_batches
from conun.distributed.device import prepare_model, to_device
from conun.distributed.group import (
    all_reduce_sum,
    average_gradients,
    broadcast_buffers,
    context,
    shard,
)
from conun.engine.resume import Resumable
from conun.evaluation.accuracy import accuracy
from conun.models.base import Classifier

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The objective became NaN or infinite; the message names the step. The run's last
    resumable state (if it saved any) is left in place: it holds finite weights only."""


def take_step(
    loss: Tensor,
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    *,
    parameters: list[nn.Parameter] | None = None,
    failure: str,
) -> None:
    """One optimizer step of every loop (training, the unlearning loop, SCRUB, UNSIR), the same
    under ``torchrun``: stop on a non-finite loss, backward, average the gradients over the
    processes, step, and give every process rank 0's BatchNorm buffers.

    Args:
        loss: the scalar to minimise.
        optimizer: updates ``parameters``.
        model: whose buffers are broadcast.
        parameters: the parameters whose gradients are averaged (default: all of ``model``'s).
        failure: the error message for a non-finite loss; ``{loss}`` in it becomes this
            process's loss value.

    Raises:
        NonFiniteLossError: the loss is NaN or infinite on any process (every process raises
            together, so that none is left waiting in a collective).
    """
    value = loss.item()
    if not math.isfinite(all_reduce_sum(value)):
        raise NonFiniteLossError(failure.replace("{loss}", str(value)))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(parameters if parameters is not None else list(model.parameters()))
    optimizer.step()
    broadcast_buffers(model)


def make_optimizer(parameters: Any, config: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimizer a config names (no if-ladder: a table of constructors)."""
    constructors = {
        "sgd": lambda: torch.optim.SGD(
            parameters,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.nesterov and config.momentum > 0,
        ),
        "adam": lambda: torch.optim.Adam(
            parameters, lr=config.lr, weight_decay=config.weight_decay
        ),
        "adamw": lambda: torch.optim.AdamW(
            parameters, lr=config.lr, weight_decay=config.weight_decay
        ),
    }
    return constructors[config.name]()


def augmentation_for(input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """Standard augmentation per image size: random crops with the usual padding; flips only
    for natural (3-channel) images, since a mirrored digit or garment glyph is another shape."""
    channels, height, _ = input_shape
    return {"pad": default_pad(height), "flip": channels == 3}


@dataclass
class TrainOutcome:
    """What training produced besides the weights.

    Attributes:
        seconds: wall-clock of the optimisation itself (per-epoch evaluation excluded).
        epochs: per-epoch log: epoch, loss, train_acc (running), test_acc (if a test set was given).
    """

    seconds: float
    epochs: list[dict[str, float]] = field(default_factory=list)


def train_classifier(
    model: Classifier,
    train: ArrayDataset,
    config: TrainConfig,
    *,
    generator: torch.Generator,
    test: ArrayDataset | None = None,
    quiet: bool = False,
    description: str = "train",
    resume: Resumable | None = None,
) -> TrainOutcome:
    """Train ``model`` with cross-entropy on ``train`` following ``config``'s recipe.

    SGD (or Adam) with a cosine or constant schedule over ``config.epochs`` epochs, batches in a
    seeded random order, optional augmentation. The same call trains the original on the
    training set and the retrained reference on the retain set.

    Args:
        model: the classifier, trained in place.
        train: the training samples (already restricted to fit/retain indices by the caller).
        config: epochs, batch size, optimizer, schedule, augmentation, device, memory format.
        generator: the seeded source of batch orders and augmentations.
        test: evaluated after each epoch for the log only (not counted in ``seconds``).
        quiet: no progress bar.
        description: progress-bar label.
        resume: save a resumable state every ``resume.every`` steps, and continue from
            ``resume.state`` if it holds one (the same final weights as an uninterrupted run).

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (the message names the step).

    Returns:
        The training time and per-epoch log.
    """
    device = torch.device(config.device)
    prepare_model(model, device, channels_last=config.channels_last)
    optimizer = make_optimizer(model.parameters(), config.optimizer)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        if config.schedule == "cosine"
        else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    )
    _, channels, height, width = train.images.shape
    augmentation = augmentation_for((channels, height, width))
    indices = torch.arange(len(train))
    outcome = TrainOutcome(seconds=0.0)
    ranks = context()
    if config.batch_size < 2 * ranks.world_size:
        raise ValueError(
            f"batch_size {config.batch_size} is below 2 samples per process for "
            f"{ranks.world_size} processes (BatchNorm needs 2): raise batch_size"
        )
    # bf16 autocast on a GPU (the master weights stay float32); the CPU runs in float32.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    # Where the loop is: epoch (1-based), the epoch's batch order and the next batch's position.
    first_epoch, position, step = 1, 0, 0
    order: list[Tensor] | None = None
    running = {"loss_sum": 0.0, "correct": 0, "seen": 0}
    if resume is not None and resume.state is not None:
        state = resume.restore(
            model=model, optimizer=optimizer, generator=generator, scheduler=scheduler
        )
        first_epoch, position, step = (state.loop[key] for key in ("epoch", "position", "step"))
        order = _split_order(state.loop_tensor("order"), state.loop_tensor("sizes"))
        # The saved sums are over every rank: rank 0 carries them on, the others restart at 0.
        running = state.loop["running"] if ranks.is_main else running
        outcome = TrainOutcome(seconds=state.loop["seconds"], epochs=state.loop["epochs"])
        logger.info("%s: resumed at epoch %d, step %d", description, first_epoch, step)
    progress = tqdm(
        total=total_steps,
        initial=step,
        desc=description,
        disable=quiet or not ranks.is_main,
        leave=False,
    )
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        if order is None:
            order = list(
                shuffled_batches(
                    indices,
                    config.batch_size,
                    generator=generator,
                    no_singleton=True,
                    min_last=2 * ranks.world_size,
                )
            )
            position = 0
            running = {"loss_sum": 0.0, "correct": 0, "seen": 0}
        # Running sums as tensors (one float32 accumulation, as before resuming existed).
        loss_sum = torch.tensor(running["loss_sum"], dtype=torch.float32)
        correct = torch.tensor(running["correct"], dtype=torch.long)
        seen = int(running["seen"])
        while position < len(order):
            batch = order[position]
            position += 1
            images = train.images[batch]
            if config.augment:
                # The whole batch on every rank, so that the generator stays in step.
                images = augment_batch(images, generator=generator, **augmentation)
            mine = shard(torch.arange(batch.numel()))  # this rank's share (all of it alone)
            images = to_device(images[mine], device, channels_last=config.channels_last)
            labels = train.labels[batch][mine].to(device)
            with autocast:
                logits = model(images)
                loss = F.cross_entropy(logits.float(), labels)
            take_step(
                loss,
                optimizer,
                model,
                failure=f"{description}: loss is {{loss}} at epoch {epoch}, batch {position} "
                f"(step {step + 1}); lower the learning rate or check the inputs",
            )
            scheduler.step()
            step += 1
            loss_sum += loss.detach().cpu() * labels.shape[0]
            correct += (logits.detach().argmax(dim=1) == labels).sum().cpu()
            seen += labels.shape[0]
            progress.update()
            if resume is not None and resume.due(step):
                saving = time.perf_counter()
                totals = [all_reduce_sum(float(v)) for v in (loss_sum, correct, seen)]
                resume.save(
                    model=model,
                    optimizer=optimizer,
                    generator=generator,
                    scheduler=scheduler,
                    loop={
                        "epoch": epoch,
                        "position": position,
                        "step": step,
                        "running": {
                            "loss_sum": totals[0],
                            "correct": int(totals[1]),
                            "seen": int(totals[2]),
                        },
                        # Time so far, this epoch's included, the save itself excluded.
                        "seconds": outcome.seconds + (saving - started),
                        "epochs": outcome.epochs,
                    },
                    loop_tensors={
                        "order": torch.cat(order),
                        "sizes": torch.tensor([len(b) for b in order], dtype=torch.long),
                    },
                )
                started += time.perf_counter() - saving
        order = None
        outcome.seconds += time.perf_counter() - started
        totals = [all_reduce_sum(float(v)) for v in (loss_sum, correct, seen)]
        entry = {
            "epoch": float(epoch),
            "loss": totals[0] / totals[2],
            "train_acc": totals[1] / totals[2],
        }
        if test is not None:
            test_acc = accuracy(
                model, test, batch_size=config.eval_batch_size, channels_last=config.channels_last
            )
            entry["test_acc"] = float(test_acc) if test_acc is not None else float("nan")
        outcome.epochs.append(entry)
        logger.info(
            "%s epoch %d/%d: loss %.4f, train acc %.4f%s",
            description,
            epoch,
            config.epochs,
            entry["loss"],
            entry["train_acc"],
            f", test acc {entry['test_acc']:.4f}" if "test_acc" in entry else "",
        )
    progress.close()
    return outcome


def set_batchnorm_eval(model: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode (running statistics frozen, used for normalising)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class FrozenModules:
    """Submodules a run leaves as they are: their parameters stop requiring gradients (autograd
    then skips their backward pass entirely when they come first in the network) and they stay
    in eval mode (BatchNorm normalises with, and keeps, its running statistics).

    :meth:`restore` puts every parameter's ``requires_grad`` back as it was, whether the run
    finished or failed, so that a model handed in by a caller comes back trainable.
    """

    def __init__(self) -> None:
        self.modules: list[nn.Module] = []
        self._saved: list[tuple[nn.Parameter, bool]] = []

    def freeze(self, modules: list[nn.Module | nn.Parameter]) -> None:
        """Freeze ``modules``: submodules (their parameters, and eval mode) or single
        parameters (a ViT's position embedding or class token, which belong to no submodule);
        nested or repeated ones count once."""
        self.modules = [module for module in modules if isinstance(module, nn.Module)]
        seen: set[int] = set()
        for module in modules:
            parameters = [module] if isinstance(module, nn.Parameter) else module.parameters()
            for parameter in parameters:
                if id(parameter) not in seen:
                    seen.add(id(parameter))
                    self._saved.append((parameter, parameter.requires_grad))
                    parameter.requires_grad_(False)

    def __bool__(self) -> bool:
        """Whether any parameter is frozen (by a module or on its own)."""
        return bool(self._saved)

    def excludes(self, parameters: list[nn.Parameter]) -> list[nn.Parameter]:
        """``parameters`` without the frozen ones (what the optimizer may update)."""
        frozen = {id(parameter) for parameter, _ in self._saved}
        return [parameter for parameter in parameters if id(parameter) not in frozen]

    def set_eval(self) -> None:
        """Put the frozen modules in eval mode (after ``model.train()``)."""
        for module in self.modules:
            module.eval()

    def restore(self) -> None:
        """Give every frozen parameter its ``requires_grad`` back."""
        for parameter, requires_grad in self._saved:
            parameter.requires_grad_(requires_grad)
        self._saved = []
        self.modules = []


def _split_order(order: Tensor, sizes: Tensor) -> list[Tensor]:
    """Undo ``torch.cat`` of an epoch's batches: ``(N,)`` indices and ``(B,)`` sizes."""
    return list(torch.split(order, sizes.tolist()))
