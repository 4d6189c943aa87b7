"""The one unlearning loop (PAPER.md, Algorithm 1), shared by every loop-based method.

until the stopping rule holds (checked after each pass, optionally every k forget batches):
    for each forget batch (a fresh random order each pass):
        repeat method.steps_per_forget_batch() times (omega):
            draw a fresh random retain batch
            loss = method.loss(model, batch); one optimizer step
"""

from __future__ import annotations

import logging
import time

import torch
from tqdm.auto import tqdm

from conun.data.batching import RandomBatchStream, shuffled_batches
from conun.distributed.device import prepare_model, to_device
from conun.distributed.group import context, shard
from conun.engine.stopping import RuleCheck, build_evaluation_sets, check_rule
from conun.engine.task import LoopHooks, MethodOutcome, UnlearningBatch, UnlearningTask
from conun.engine.training import make_optimizer, set_batchnorm_eval, take_step

logger = logging.getLogger(__name__)


def run_unlearning_loop(method: LoopHooks, task: UnlearningTask) -> MethodOutcome:
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
    ranks = context()
    # bf16 autocast on a GPU (the master weights stay float32); the CPU runs in float32.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    evaluation_sets = build_evaluation_sets(data, split, stopping, generator=task.generator)

    history: list[dict[str, float]] = []
    check_seconds = 0.0
    batches = 0  # batches of the set a pass goes over
    forget_batches = 0  # forget batches processed (the x axis of the paper's Figure 2)
    passes = 0
    steps_done = 0  # optimizer steps (the unit of resume.every)
    resume = task.resume

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
        """This rank's share of a global batch of training indices, on the device."""
        index = shard(index)
        images = to_device(data.train.images[index], device, channels_last=config.channels_last)
        return images, data.train.labels[index].to(device)

    def train_mode() -> None:
        model.train()
        if method.freeze_batchnorm():
            set_batchnorm_eval(model)

    started = time.perf_counter()
    method.prepare(model, task)  # timed: masks and teachers are part of the method's cost
    # Fixed once prepare() has run: built once, not on each of the run's steps.
    trainable = method.trainable_parameters(model)
    optimizer = make_optimizer(trainable, config.optimizer)
    # The current pass's batch order and the position of its next batch (None: a new pass).
    order: list[torch.Tensor] | None = None
    position = 0
    if resume is not None and resume.state is not None:
        # prepare() ran on the original model, as in the first run (masks and teachers come
        # from it); now the weights, optimizer, generators and counters move to the save point.
        state = resume.restore(model=model, optimizer=optimizer, generator=task.generator)
        saved = state.loop
        batches, forget_batches, passes = saved["batches"], saved["forget_batches"], saved["passes"]
        steps_done, position = saved["steps"], saved["position"]
        history, check_seconds = saved["history"], saved["check_seconds"]
        order = list(torch.split(state.loop_tensor("order"), saved["sizes"]))
        retain_stream.load_state(state.loop_tensor("retain_order"), saved["retain_position"])
        forget_stream.load_state(state.loop_tensor("forget_order"), saved["forget_position"])
        method.load_state_dict(saved["method"])
        started -= saved["seconds"]  # this run's time continues the first run's
        last = RuleCheck(**saved["last"])
        stopped_by = ""
        logger.info("%s: resumed at step %d (pass %d)", method.name, steps_done, passes + 1)
    else:
        last = check()  # batch 0: where the model starts
        stopped_by = "rule" if stopping.rule == "auto" and last.stop else ""

    def save_state() -> None:
        assert resume is not None and order is not None
        resume.save(
            model=model,
            optimizer=optimizer,
            generator=task.generator,
            loop={
                "batches": batches,
                "forget_batches": forget_batches,
                "passes": passes,
                "steps": steps_done,
                "position": position,
                "sizes": [int(batch.numel()) for batch in order],
                "history": history,
                "check_seconds": check_seconds,
                "retain_position": retain_stream.position,
                "forget_position": forget_stream.position,
                "method": method.state_dict(),
                "seconds": time.perf_counter() - started - resume.save_seconds,
                "last": last.to_dict(),
            },
            loop_tensors={
                "order": torch.cat(order),
                "retain_order": retain_stream.order,
                "forget_order": forget_stream.order,
            },
        )

    saved_at = steps_done // resume.every if resume is not None else 0
    steps = method.steps_per_forget_batch() if over_forget else 1
    progress = tqdm(
        desc=f"unlearn ({method.name})",
        unit="batch",
        disable=task.quiet or not ranks.is_main,
        leave=False,
    )
    while not stopped_by and passes < stopping.max_passes:
        train_mode()
        if order is None:
            # Under torchrun a trailing batch too small to give every rank a sample joins
            # the batch before it; one process keeps the plain order.
            order = list(
                shuffled_batches(
                    driver, batch_size, generator=task.generator, min_last=ranks.world_size
                )
            )
            position = 0
        while position < len(order):
            driver_index = order[position]
            position += 1
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
                with autocast:
                    terms = method.loss(
                        model,
                        UnlearningBatch(
                            forget[0] if forget is not None and method.uses_forget else None,
                            forget[1] if forget is not None and method.uses_forget else None,
                            retain[0] if retain is not None and method.uses_retain else None,
                            retain[1] if retain is not None and method.uses_retain else None,
                        ),
                    )
                take_step(
                    terms.total,
                    optimizer,
                    model,
                    parameters=trainable,
                    failure=f"{method.name}: loss is {{loss}} at batch {batches + 1} "
                    f"(pass {passes + 1}, step {steps_done + 1}); lower the learning rate "
                    "or check the inputs",
                )
                method.after_step(model)
                steps_done += 1
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
            # Saved between batches (every `every` steps, rounded up to the batch), so that a
            # batch's omega steps are never split between two runs.
            if resume is not None and (steps_done // resume.every) > saved_at:
                saved_at = steps_done // resume.every
                save_state()
        passes += 1
        order = None
        if not stopped_by and not (stopping.check_every and batches % stopping.check_every == 0):
            last = check()
            if stopping.rule == "auto" and last.stop:
                stopped_by = "rule"
    progress.close()
    model = method.finish(model)
    seconds = time.perf_counter() - started - (resume.save_seconds if resume is not None else 0.0)
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
