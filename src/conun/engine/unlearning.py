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
    """Run ``method``'s objective until the stopping rule holds.

    A pass goes over the forget set (``method.pass_over == "forget"``: contrastive, neggrad, ...;
    each forget batch gets ``steps_per_forget_batch`` steps, each with a fresh random retain
    batch) or over the retain set (``"retain"``: finetune, l1_sparse, salun, ...; each retain
    batch gets one step, with a fresh random forget batch if the method uses one).

    Args:
        method: supplies the per-batch loss and how many steps/samples per batch.
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
    over_forget = method.pass_over == "forget"
    batch_size = method.batch_size(config, split.scenario)
    driver = split.forget if over_forget else split.retain
    # Streams draw nothing until asked, so an unused one costs no random numbers.
    retain_stream = RandomBatchStream(
        split.retain, method.retain_batch_size(batch_size), generator=task.generator
    )
    forget_stream = RandomBatchStream(
        split.forget, method.forget_batch_size(batch_size), generator=task.generator
    )
    stopping = config.stopping
    evaluation_sets = build_evaluation_sets(data, split, stopping, generator=task.generator)

    history: list[dict[str, float]] = []
    check_seconds = 0.0
    batches = 0  # batches of the set a pass goes over
    forget_batches = 0  # forget batches processed (the x axis of the paper's Figure 2)
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
            checks_forget=config.stopping.class_checks_forget,
        )
        check_seconds += time.perf_counter() - started
        history.append(
            {
                "batch": forget_batches,
                "step_batch": batches,
                "pass": passes,
                "forget_train_acc": result.forget_acc,
                "held_out_acc": result.held_out_acc,
            }
        )
        return result

    def load(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = to_device(data.train.images[index], device, channels_last=config.channels_last)
        return images, data.train.labels[index].to(device)

    def train_mode() -> None:
        model.train()
        if method.freeze_batchnorm():
            set_batchnorm_eval(model)

    started = time.perf_counter()
    method.prepare(model, task)  # timed: masks and teachers are part of the method's cost
    optimiser = make_optimizer(method.trainable_parameters(model), config.optimizer)
    last = check()  # batch 0: where the model starts
    stopped_by = "rule" if stopping.rule == "auto" and last.stop else ""
    steps = method.steps_per_forget_batch() if over_forget else 1
    progress = tqdm(desc=f"unlearn ({method.name})", unit="batch", disable=task.quiet, leave=False)
    while not stopped_by and passes < stopping.max_passes:
        train_mode()
        for driver_index in shuffled_batches(driver, batch_size, generator=task.generator):
            forget: tuple[torch.Tensor, torch.Tensor] | None = None
            retain: tuple[torch.Tensor, torch.Tensor] | None = None
            if over_forget:
                forget = load(driver_index)
            else:
                retain = load(driver_index)
            for _ in range(steps):
                if over_forget and method.uses_retain:
                    retain = load(retain_stream.next())
                if not over_forget and method.uses_forget:
                    forget = load(forget_stream.next())
                terms = method.loss(
                    model,
                    UnlearningBatch(
                        forget[0] if forget is not None and method.uses_forget else None,
                        forget[1] if forget is not None and method.uses_forget else None,
                        retain[0] if retain is not None and method.uses_retain else None,
                        retain[1] if retain is not None and method.uses_retain else None,
                    ),
                )
                if not torch.isfinite(terms.total):
                    raise NonFiniteLossError(
                        f"{method.name}: loss is {terms.total.item()} at batch {batches + 1} "
                        f"(pass {passes + 1}); lower the learning rate or check the inputs"
                    )
                optimiser.zero_grad(set_to_none=True)
                terms.total.backward()
                optimiser.step()
                method.after_step(model)
                if not over_forget and method.uses_forget:
                    forget_batches += 1
            batches += 1
            if over_forget:
                forget_batches += 1
            progress.update()
            if stopping.check_every and batches % stopping.check_every == 0:
                last = check()
                train_mode()
                if stopping.rule == "auto" and last.stop:
                    stopped_by = "rule"
                    break
        passes += 1
        if not stopped_by and not (stopping.check_every and batches % stopping.check_every == 0):
            last = check()
            if stopping.rule == "auto" and last.stop:
                stopped_by = "rule"
    progress.close()
    model = method.finish(model)
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
        "%s: %d batches (%d forget), %d passes, %.2fs (checks %.2fs), stopped by %s",
        method.name,
        batches,
        forget_batches,
        passes,
        seconds,
        check_seconds,
        stopped_by,
    )
    fractional_passes = batches / max(1, -(-driver.numel() // batch_size))
    return MethodOutcome(
        model=model,
        seconds=seconds,
        forget_batches=forget_batches if method.uses_forget else None,
        passes=round(fractional_passes, 4),
        history=history,
        extra={
            "check_seconds": check_seconds,
            "stopped_by": stopped_by,
            "pass_over": method.pass_over,
        },
    )
