"""The one unlearning loop (PAPER.md, Algorithm 1), shared by every loop-based method.

until the stopping rule holds (checked after each pass, optionally every k forget batches):
    for each forget batch (a fresh random order each pass):
        repeat method.steps_per_forget_batch() times (omega):
            draw a fresh random retain batch
            loss = method.loss(model, batch); one optimiser step
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from conun.data.batching import RandomBatchStream, shuffled_batches
from conun.engine.device import prepare_model, to_device
from conun.engine.stopping import RuleCheck, build_evaluation_sets, check_rule
from conun.engine.training import make_optimizer, set_batchnorm_eval

if TYPE_CHECKING:
    from conun.methods.base import LoopMethod, MethodOutcome, UnlearningTask

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The objective became NaN or infinite; the message names the step."""


def run_unlearning_loop(method: LoopMethod, task: UnlearningTask) -> MethodOutcome:
    """Run ``method``'s objective over the forget set until the stopping rule holds.

    Args:
        method: supplies the per-batch loss and how many steps/retain samples per forget batch.
        task: model, data, split, config and the seeded generator.

    Returns:
        The unlearned model (``task.model``, modified in place), the wall-clock time, the number
        of forget batches and passes, and the history of forget-set accuracy.
    """
    from conun.methods.base import MethodOutcome, UnlearningBatch

    config, split, data = task.config, task.split, task.data
    device = torch.device(config.device)
    model = task.model
    prepare_model(model, device, channels_last=config.channels_last)
    forget_batch_size = method.batch_size(config, split.scenario)
    retain_stream = RandomBatchStream(
        split.retain, method.retain_batch_size(forget_batch_size), generator=task.generator
    )
    stopping = config.stopping
    evaluation_sets = build_evaluation_sets(data, split, stopping, generator=task.generator)

    history: list[dict[str, float]] = []
    check_seconds = 0.0
    forget_batches = 0
    passes = 0

    def check() -> RuleCheck:
        nonlocal check_seconds
        started = time.perf_counter()
        result = check_rule(
            model,
            evaluation_sets,
            split,
            data.num_classes,
            batch_size=config.eval_batch_size,
            channels_last=config.channels_last,
        )
        check_seconds += time.perf_counter() - started
        history.append(
            {
                "batch": forget_batches,
                "pass": passes,
                "forget_train_acc": result.forget_acc,
                "held_out_acc": result.held_out_acc,
            }
        )
        return result

    def train_mode() -> None:
        model.train()
        if method.freeze_batchnorm():
            set_batchnorm_eval(model)

    started = time.perf_counter()
    method.prepare(model, task)  # timed: masks and teachers are part of the method's cost
    optimiser = make_optimizer(method.trainable_parameters(model), config.optimizer)
    last = check()  # batch 0: where the model starts
    stopped_by = "rule" if stopping.rule == "auto" and last.stop else ""
    steps = method.steps_per_forget_batch()
    progress = tqdm(desc=f"unlearn ({method.name})", unit="batch", disable=task.quiet, leave=False)
    while not stopped_by and passes < stopping.max_passes:
        train_mode()
        for forget_index in shuffled_batches(
            split.forget, forget_batch_size, generator=task.generator
        ):
            forget_images = to_device(
                data.train.images[forget_index], device, channels_last=config.channels_last
            )
            forget_labels = data.train.labels[forget_index].to(device)
            for _ in range(steps):
                retain_images = retain_labels = None
                if method.uses_retain:
                    retain_index = retain_stream.next()
                    retain_images = to_device(
                        data.train.images[retain_index], device, channels_last=config.channels_last
                    )
                    retain_labels = data.train.labels[retain_index].to(device)
                terms = method.loss(
                    model,
                    UnlearningBatch(
                        forget_images if method.uses_forget else None,
                        forget_labels if method.uses_forget else None,
                        retain_images,
                        retain_labels,
                    ),
                )
                if not torch.isfinite(terms.total):
                    raise NonFiniteLossError(
                        f"{method.name}: loss is {terms.total.item()} at forget batch "
                        f"{forget_batches + 1} (pass {passes + 1}); lower the learning rate "
                        "or check the inputs"
                    )
                optimiser.zero_grad(set_to_none=True)
                terms.total.backward()
                optimiser.step()
                method.after_step(model)
            forget_batches += 1
            progress.update()
            if stopping.check_every and forget_batches % stopping.check_every == 0:
                last = check()
                train_mode()
                if stopping.rule == "auto" and last.stop:
                    stopped_by = "rule"
                    break
        passes += 1
        if not stopped_by and not (
            stopping.check_every and forget_batches % stopping.check_every == 0
        ):
            last = check()
            if stopping.rule == "auto" and last.stop:
                stopped_by = "rule"
    progress.close()
    seconds = time.perf_counter() - started
    model.eval()
    if not stopped_by:
        stopped_by = "max_passes"
        if stopping.rule == "auto":
            logger.warning(
                "%s: the stopping rule did not hold after %d passes (forget acc %.4f vs held-out "
                "%.4f); raise stopping.max_passes or the learning rate",
                method.name,
                passes,
                last.forget_acc,
                last.held_out_acc,
            )
    logger.info(
        "%s: %d forget batches, %d passes, %.2fs (checks %.2fs), stopped by %s",
        method.name,
        forget_batches,
        passes,
        seconds,
        check_seconds,
        stopped_by,
    )
    fractional_passes = forget_batches / max(1, -(-split.forget.numel() // forget_batch_size))
    return MethodOutcome(
        model=model,
        seconds=seconds,
        forget_batches=forget_batches,
        passes=round(fractional_passes, 4),
        history=history,
        extra={"check_seconds": check_seconds, "stopped_by": stopped_by},
    )
