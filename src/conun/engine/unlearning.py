"""The one unlearning loop (Algorithm 1 of contrastive unlearning, Lee et al., IJCAI 2025),
shared by every loop-based method.

until the stopping rule holds (checked every k batches, k chosen so that checks stay a small
share of the run; or after each pass, as the paper):
    for each forget batch (a fresh random order each pass; index order if
    method.forget_order() == "fixed"):
        repeat method.steps_per_forget_batch() times (omega):
            draw a fresh random retain batch (or, if method.retain_batches() == "first_batches",
            the step's batch of the retain set in index order, as the authors' code)
            loss = method.loss(model, batch); one optimizer step

The stopping checks and history, the batch loading, the timing and the resumable states are
those of :mod:`conun.engine.monitor`, which the methods with a schedule of their own (SCRUB,
UNSIR, L-CODEC) use too.
"""

from __future__ import annotations

import logging
import math

import torch
from tqdm.auto import tqdm

from conun.config import ConfigError
from conun.data.batching import RandomBatchStream, leading_batch, shuffled_batches
from conun.distributed.device import prepare_model
from conun.distributed.group import context, shard
from conun.engine.monitor import (
    BatchLoader,
    ForgetAccuracyEstimate,
    LoopResume,
    RunClock,
    StoppingMonitor,
    order_parts,
    split_order,
)
from conun.engine.task import (
    LoopHooks,
    LossTerms,
    MethodOutcome,
    UnlearningBatch,
    UnlearningTask,
)
from conun.engine.training import FrozenModules, make_optimizer, set_batchnorm_eval, take_step

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
    frozen = FrozenModules()
    try:
        return _run_loop(method, task, frozen)
    finally:
        frozen.restore()  # method.frozen_modules() come back trainable, even after a failure


def _run_loop(method: LoopHooks, task: UnlearningTask, frozen: FrozenModules) -> MethodOutcome:
    """:func:`run_unlearning_loop`, with ``method.frozen_modules()`` frozen into ``frozen``."""
    config, split = task.config, task.split
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
    monitor = StoppingMonitor.for_task(task, model)
    load = BatchLoader.training_set(task)
    clock = RunClock(task.resume)
    saves = LoopResume(task, monitor, clock)

    batches = 0  # batches of the set a pass goes over
    forget_batches = 0  # forget batches processed (the x axis of the paper's Figure 2)
    passes = 0
    steps_done = 0  # optimizer steps (the unit of resume.every)

    since_check = 0  # batches since the latest check
    # Batches since the held-out subset was last evaluated: an early check that fails reuses
    # its logits, so the interval's checks count from the latest check that did not.
    since_fresh = 0
    early_failures = 0  # early checks in a row that did not hold (each doubles the wait)
    previous_estimate: float | None = None  # the estimate at the previous probe

    def check(early: bool = False, first: bool = False) -> None:
        nonlocal since_check, since_fresh, early_failures
        # An early check is a guess of the free estimate: its held-out side is reused when it
        # fails (StoppingMonitor.check), so that guesses cost half a check.
        monitor.check(
            {"batch": forget_batches, "step_batch": batches, "pass": passes},
            reuse_held_out=early,
            # The first check, on the model as it comes, nearly always fails: screened on a few
            # forget samples, its held-out side read from what prepare() computed, if anything.
            known=method.held_out_logits() if first else None,
            screen=first,
        )
        since_check = 0
        if not monitor.held_out_reused:
            since_fresh = 0
        early_failures = early_failures + 1 if early and not monitor.holds else 0

    def probably_holds() -> bool:
        # The free estimate, one probe ahead, against the latest check's bound on the forget
        # accuracy. The estimate lags: it is read before each step, over the latest window of
        # forget samples; extrapolating its latest change one probe ahead keeps a fast fall
        # (a small forget set loses several points a step near the end) from being seen only
        # one probe past the bound.
        nonlocal previous_estimate
        if stopping.rule != "auto":
            return False
        value = estimate.value()
        last = monitor.last
        if value is None or last is None:
            return False
        ahead = value
        if previous_estimate is not None:
            ahead -= max(0.0, previous_estimate - value)
        previous_estimate = value
        return ahead <= last.threshold

    def train_mode() -> None:
        model.train()
        if method.freeze_batchnorm():
            set_batchnorm_eval(model)
        frozen.set_eval()

    clock.start()
    method.prepare(model, task)  # timed: masks and teachers are part of the method's cost
    # Fixed once prepare() has run: built once, not on each of the run's steps.
    frozen.freeze(method.frozen_modules(model))
    trainable = frozen.excludes(method.trainable_parameters(model))
    if frozen and not trainable:
        raise ConfigError(
            f"{method.name}: the frozen modules hold every parameter the method would train; "
            "leave at least one layer (e.g. the head) out of them"
        )
    optimizer = make_optimizer(trainable, config.optimizer)
    # The current pass's batch order and the position of its next batch (None: a new pass).
    order: list[torch.Tensor] | None = None
    position = 0
    steps = method.steps_per_forget_batch() if over_forget else 1
    # The authors' code's retain stream (method.retain_batches() == "first_batches").
    leading_retain = over_forget and method.retain_batches() == "first_batches"
    # Images one batch trains on: its driver batch and the other set's batch of each step.
    retain_images = method.retain_batch_size(batch_size) if method.uses_retain else 0
    forget_images = method.forget_batch_size(batch_size) if method.uses_forget else 0
    images_per_batch = (
        steps * ((batch_size if method.uses_forget else 0) + retain_images)
        if over_forget
        else batch_size + forget_images
    )
    every = monitor.interval(images_per_batch)
    # check_every=auto checks on the interval (counted from the latest check that evaluated
    # the held-out subset), and earlier when the loop's own forward passes suggest the rule
    # holds: probed every quarter interval (one host sync), or after each pass when a pass is
    # shorter than that (a small forget set is otherwise pushed for several passes past the
    # point the probe would have seen); after k early checks in a row that failed, the next
    # early one waits 2^k probes (at most a quarter interval), which bounds their cost; an early
    # check that fails reuses the held-out logits of the check before it (half the cost).
    # Otherwise: at multiples of the interval and after each pass.
    auto = stopping.check_every == "auto"
    checks_at_pass_end = not auto
    estimate = ForgetAccuracyEstimate(len(monitor.sets.forget))
    quarter = max(1, (every or 1) // 4)
    probe = min(quarter, max(1, math.ceil(len(driver) / batch_size)))
    if saves.state is not None:
        # prepare() ran on the original model, as in the first run (masks and teachers come
        # from it); now the weights, optimizer, generators, counters, history and time move to
        # the save point.
        state = saves.restore(model=model, optimizer=optimizer)
        saved = state.loop
        batches, forget_batches, passes = saved["batches"], saved["forget_batches"], saved["passes"]
        steps_done, position = saved["steps"], saved["position"]
        order = split_order(state.loop_tensor("order"), saved["sizes"])
        retain_stream.load_state(state.loop_tensor("retain_order"), saved["retain_position"])
        forget_stream.load_state(state.loop_tensor("forget_order"), saved["forget_position"])
        method.load_state_dict(saved["method"])
        since_check = saved.get("since_check", 0)
        since_fresh = saved.get("since_fresh", since_check)
        early_failures = saved.get("early_failures", 0)
        previous_estimate = saved.get("previous_estimate")
        estimate.load_state(state.loop_tensor("forget_correct"), saved.get("correct_sizes", []))
        stopped_by = ""
        logger.info("%s: resumed at step %d (pass %d)", method.name, steps_done, passes + 1)
    else:
        stopped_by = ""
    # The check before the first step (batch 0: where the model starts). In the sample scenario,
    # for a method that reports its forget batch's predictions, it waits for the first step's
    # forward pass: those predictions (training mode, before the step) screen it for free, and
    # the real check runs, still before the step, only where they do not already show the rule
    # failing; on a sub-second request the first check was a third of the checks' cost. The
    # class scenario keeps the evaluated first check (its history starts from the model's
    # eval-mode accuracy on the class; there a forward pass in training mode can read 20 points
    # lower). Under torchrun a rank sees its share of the batch only: the evaluated check.
    awaiting_first_check = (
        saves.state is None
        and split.scenario == "sample"
        and method.reports_forget_correct
        and ranks.world_size == 1
    )
    if saves.state is None and not awaiting_first_check:
        check(first=True)
        stopped_by = "rule" if monitor.holds else ""

    # The model's buffers (BatchNorm statistics) before the first forward pass, which updates
    # them: the real first check, where it runs, sees the model as it came.
    buffers_before = (
        {name: buffer.clone() for name, buffer in model.named_buffers()}
        if awaiting_first_check
        else {}
    )

    def swap_buffers(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Put ``values`` in place of the model's buffers of those names and return the ones
        they replace. By object, not written in place: the forward pass's autograd graph holds
        the current ones (BatchNorm saves its running statistics for the backward)."""
        replaced: dict[str, torch.Tensor] = {}
        for prefix, module in model.named_modules():
            for key, buffer in module._buffers.items():
                name = f"{prefix}.{key}" if prefix else key
                if buffer is not None and name in values:
                    replaced[name] = buffer
                    module._buffers[key] = values[name]
        return replaced

    def first_check(terms: LossTerms) -> bool:
        """Batch 0's check, on the model before the first step; True: the rule holds there."""
        if terms.forget_correct is not None:
            position = {"batch": 0, "step_batch": 0, "pass": 0}
            if monitor.screen_step(position, terms.forget_correct, method.held_out_logits()):
                return False
        after_forward = swap_buffers(buffers_before)
        check(first=True)
        train_mode()
        if not monitor.holds:  # the step goes on from its forward pass's buffers
            swap_buffers(after_forward)
        buffers_before.clear()
        return monitor.holds

    def save_state() -> None:
        assert order is not None
        flat, sizes = order_parts(order)
        correct_flat, correct_sizes = estimate.state()
        saves.save(
            model=model,
            optimizer=optimizer,
            loop={
                "batches": batches,
                "forget_batches": forget_batches,
                "passes": passes,
                "steps": steps_done,
                "position": position,
                "sizes": sizes,
                "retain_position": retain_stream.position,
                "forget_position": forget_stream.position,
                "method": method.state_dict(),
                "since_check": since_check,
                "since_fresh": since_fresh,
                "early_failures": early_failures,
                "previous_estimate": previous_estimate,
                "correct_sizes": correct_sizes,
            },
            loop_tensors={
                "forget_correct": correct_flat,
                "order": flat,
                "retain_order": retain_stream.order,
                "forget_order": forget_stream.order,
            },
        )

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
                    driver,
                    batch_size,
                    generator=task.generator,
                    min_last=ranks.world_size,
                    shuffle=method.forget_order() == "shuffled",
                )
            )
            position = 0
        while position < len(order):
            driver_index = order[position]
            position += 1
            steps_before = steps_done
            forget: tuple[torch.Tensor, torch.Tensor] | None = None
            retain: tuple[torch.Tensor, torch.Tensor] | None = None
            forget_index: torch.Tensor | None = None  # this rank's share, for the method
            if over_forget:
                forget_index = shard(driver_index)
                forget = load.whole(forget_index)
            else:
                retain = load(driver_index)
            for step in range(steps):
                if over_forget and method.uses_retain:
                    retain = load(
                        leading_batch(
                            split.retain,
                            method.retain_batch_size(batch_size),
                            step,
                            driver_index.numel(),
                        )
                        if leading_retain
                        else retain_stream.next()
                    )
                if not over_forget and method.uses_forget:
                    forget_index = shard(forget_stream.next())
                    forget = load.whole(forget_index)
                with autocast:
                    terms = method.loss(
                        model,
                        UnlearningBatch(
                            forget[0] if forget is not None and method.uses_forget else None,
                            forget[1] if forget is not None and method.uses_forget else None,
                            retain[0] if retain is not None and method.uses_retain else None,
                            retain[1] if retain is not None and method.uses_retain else None,
                            forget_index if method.uses_forget else None,
                        ),
                    )
                if awaiting_first_check:
                    awaiting_first_check = False
                    if first_check(terms):
                        stopped_by = "rule"  # before any step: the model as it came
                        break
                take_step(
                    terms.total,
                    optimizer,
                    model,
                    parameters=trainable,
                    failure=f"{method.name}: loss is {{loss}} at batch {batches + 1} "
                    f"(pass {passes + 1}, step {steps_done + 1}); lower the learning rate "
                    "or check the inputs",
                )
                if auto and step == 0 and terms.forget_correct is not None:
                    estimate.add(terms.forget_correct)
                method.after_step(model)
                steps_done += 1
                if not over_forget and method.uses_forget:
                    forget_batches += 1
            if stopped_by:
                break
            batches += 1
            if over_forget:
                forget_batches += 1
            progress.update()
            since_check += 1
            since_fresh += 1
            scheduled = bool(every and (since_fresh >= every if auto else batches % every == 0))
            # The estimate is read at every probe (so that it extrapolates from the previous
            # probe), acted on once the wait after failed early checks is over.
            near = auto and since_check % probe == 0 and probably_holds()
            early = (
                near and not scheduled and since_check >= min(quarter, probe * 2**early_failures)
            )
            if scheduled or early:
                check(early=early)
                train_mode()
                if monitor.holds:
                    stopped_by = "rule"
                    break
            # Saved between batches (every `every` steps, rounded up to the batch), so that a
            # batch's omega steps are never split between two runs.
            if saves.due(steps_before, steps_done):
                save_state()
        if stopped_by and not steps_done:
            break  # the rule held before the first step: no pass was made
        passes += 1
        order = None
        if not stopped_by and checks_at_pass_end and not (every and batches % every == 0):
            check()
            if monitor.holds:
                stopped_by = "rule"
    progress.close()
    if awaiting_first_check:  # no step ran (an empty pass): the check the loop did not make
        check(first=True)
        stopped_by = stopped_by or ("rule" if monitor.holds else "")
    model = method.finish(model)
    seconds = clock.seconds()
    model.eval()
    last = monitor.last
    assert last is not None  # the run starts with a check, or resumes after one
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
        monitor.check_seconds,
        stopped_by,
    )
    fractional_passes = batches / max(1, -(-driver.numel() // batch_size))
    return MethodOutcome(
        model=model,
        seconds=seconds,
        forget_batches=forget_batches if method.uses_forget else None,
        passes=round(fractional_passes, 4),
        history=monitor.history,
        extra={
            "check_seconds": monitor.check_seconds,
            "stopped_by": stopped_by,
            "pass_over": method.pass_over,
            **method.outcome_extra(),
        },
    )
