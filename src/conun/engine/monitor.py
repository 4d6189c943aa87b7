"""What every unlearning loop shares, whatever its shape.

The shared loop (:func:`conun.engine.unlearning.run_unlearning_loop`) and the methods with a
schedule of their own (SCRUB's max/min epochs, UNSIR's noise/impair/repair phases, L-CODEC's
Newton step per removal batch) are built from the same four pieces:

- :class:`StoppingMonitor`: the stopping rule's evaluation sets, a timed check that appends one
  history entry, the accumulated check time, and whether the rule holds;
- :class:`BatchLoader`: this rank's share of a global batch of indices, on the device, in the
  run's memory format;
- :class:`RunClock`: the method's wall-clock, without the time spent writing resumable states
  and continuing the interrupted run's time when it resumes;
- :class:`LoopResume`: saving a loop's state every ``resume.every`` optimizer steps with the
  monitor's history and the clock in it, and restoring all of it on resume.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from conun.config import StoppingConfig
from conun.data.arrays import ArrayDataset
from conun.data.splits import ForgetRetainSplit
from conun.distributed.device import to_device
from conun.distributed.group import shard
from conun.engine.resume import LoopState, Resumable
from conun.engine.stopping import (
    EvaluationSets,
    RuleCheck,
    build_evaluation_sets,
    decide_rule,
    screen_fails,
    screen_predictions,
    subset_logits,
)
from conun.engine.task import HeldOutLogits, UnlearningTask
from conun.models.base import Classifier


@dataclass(frozen=True)
class _Screened:
    """A screened check's result, and whether the screen ended it (the leading samples only)."""

    check: RuleCheck
    screened: bool


class StoppingMonitor:
    """The stopping rule of one run: its evaluation sets, its checks and their history.

    Attributes:
        history: one entry per check: the loop's position (the keyword arguments of
            :meth:`check`, in their order) followed by ``forget_train_acc`` and ``held_out_acc``
            (and, in the sample scenario, ``member_auc``: see :class:`RuleCheck`).
        check_seconds: wall-clock spent in checks (part of the method's time).
        last: the latest check, None before the first.
    """

    def __init__(
        self,
        model: Classifier,
        sets: EvaluationSets,
        split: ForgetRetainSplit,
        num_classes: int,
        stopping: StoppingConfig,
        *,
        batch_size: int,
        channels_last: bool,
    ) -> None:
        self.model = model
        self.sets = sets
        self.split = split
        self.num_classes = num_classes
        self.stopping = stopping
        self.batch_size = batch_size
        self.channels_last = channels_last
        self.history: list[dict[str, float]] = []
        self.check_seconds = 0.0
        self.last: RuleCheck | None = None
        # ``(Nh, C)`` the held-out subset's logits at the latest check that evaluated them.
        self._held_out_logits: Tensor | None = None
        #: Whether the latest check reused the held-out logits of an earlier one.
        self.held_out_reused = False

    @classmethod
    def for_task(cls, task: UnlearningTask, model: Classifier) -> StoppingMonitor:
        """The monitor of ``task``'s run on ``model``; draws the evaluation subsets from
        ``task.generator`` (so a loop builds it at the same point of every run)."""
        config = task.config
        sets = build_evaluation_sets(
            task.data, task.split, config.stopping, generator=task.generator
        )
        return cls(
            model,
            sets,
            task.split,
            task.data.num_classes,
            config.stopping,
            batch_size=config.eval_batch_size,
            channels_last=config.channels_last,
        )

    def check(
        self,
        position: Mapping[str, float],
        *,
        reuse_held_out: bool = False,
        known: HeldOutLogits | None = None,
        screen: bool = False,
    ) -> RuleCheck:
        """Evaluate the rule now (timed) and append ``{**position, accuracies}`` to the history.

        Args:
            position: where the loop is (e.g. ``batch``, ``pass``, ``epoch``), recorded first,
                in its order.
            reuse_held_out: a cheaper check, for a loop that checks early on a guess: the
                held-out subset's logits of the latest check stand in for fresh ones (the
                held-out data is never trained on and moves far less than the forget set), so
                that a check that fails costs one forward pass over the forget subset only. A
                check that would stop is evaluated again on fresh held-out logits, so that a
                stop is always decided on the model as it is, and so is a sample-scenario one
                whose forget accuracy is within its bound: its failure then rests on the
                loss-rank AUC, whose held-out losses move with the model's logit scale, which
                stale logits cannot decide. The history records the fresh one,
                and ``held_out_reused: 1`` on a failed check that reused them.
            known: logits of the model *as it is now* on held-out pool samples, computed by the
                method (:meth:`conun.engine.task.LoopHooks.held_out_logits`): the held-out
                samples among them are read, not evaluated again; the others are evaluated.
            screen: a check expected to fail (the one before the first step): the leading
                ``stopping.screen_size`` samples of the forget subset (a random draw, like the
                subset) are evaluated first, against the whole held-out subset, and the rest
                only if they do not already show the rule failing
                (:func:`conun.engine.stopping.screen_fails`). A check that ends there is
                recorded with ``screen: 1`` and its forget accuracy on those samples.
        """
        started = time.perf_counter()
        size = self.stopping.screen_size
        if screen and size is not None and size < len(self.sets.forget):
            screened = self._screened_check(size, known)
            self.check_seconds += time.perf_counter() - started
            self._record(position, screened.check, reused=False, screen=screened.screened)
            return screened.check
        forget_logits = subset_logits(
            self.model,
            self.sets.forget,
            batch_size=self.batch_size,
            channels_last=self.channels_last,
        )
        reused = reuse_held_out and self._held_out_logits is not None
        if reused:
            assert self._held_out_logits is not None
            result = self._decide(forget_logits, self._held_out_logits)
            # In the sample scenario stale held-out logits decide a failure of the accuracy
            # criterion only: held-out accuracy moves little between checks, but the held-out
            # *losses* move with the model's logit scale, which unlearning shrinks, so a
            # loss-rank AUC against stale losses reads the forget set as more member-like than
            # it is (measured: 0.55 against stale logits, 0.50 on fresh ones, a few batches
            # apart). The class rule reads accuracies only, and its held-out side (the
            # forgotten classes) falls as the run goes on: stale logits there delay a stop,
            # and the ledger's class re-forget relies on that margin (see its per-class check).
            auc_decides = result.member_auc is not None and result.forget_acc <= result.threshold
            reused = not result.stop and not auc_decides
        if not reused:
            self._held_out_logits = self._fresh_held_out_logits(known)
            result = self._decide(forget_logits, self._held_out_logits)
        self.check_seconds += time.perf_counter() - started
        self._record(position, result, reused=reused, screen=False)
        return result

    def screen_step(
        self, position: Mapping[str, float], forget_correct: Tensor, known: HeldOutLogits | None
    ) -> RuleCheck | None:
        """The check before the first step, read from that step's own forward pass: whether its
        forget batch, as the model classified it before the step (``forget_correct``, training
        mode), already shows that the rule cannot hold (:func:`conun.engine.stopping.
        accuracies_fail`, the screen's wider band). The forget side costs nothing; the held-out
        side is read from ``known`` where it has it. Timed and recorded (``screen: 1``, the
        forget accuracy of that batch) when it decides; None when it does not, and the caller
        runs the real first check (:meth:`check` with ``screen``) before the step.

        Args:
            position: where the loop is (batch 0).
            forget_correct: ``(B,)`` bool, which samples of the first forget batch the model
                classified correctly (:attr:`conun.engine.task.LossTerms.forget_correct`).
            known: the method's logits of the model as it is on held-out pool samples.
        """
        started = time.perf_counter()
        held_out_logits = self._fresh_held_out_logits(known)
        decided = screen_predictions(
            forget_correct.flatten(),
            held_out_logits,
            self.sets,
            self.split,
            self.num_classes,
            **self._rule_options(),
        )
        self.check_seconds += time.perf_counter() - started
        if decided is not None:
            self._held_out_logits = held_out_logits
            self._record(position, decided, reused=False, screen=True)
        return decided

    def _screened_check(self, size: int, known: HeldOutLogits | None) -> _Screened:
        """:meth:`check` with ``screen``: the leading ``size`` forget samples first."""
        forget = self.sets.forget
        leading = torch.arange(size)
        forget_logits = self._logits(forget.subset(leading))
        self._held_out_logits = self._fresh_held_out_logits(known)
        sets = EvaluationSets(forget.subset(leading), self.sets.held_out)
        failed = screen_fails(
            forget_logits,
            self._held_out_logits,
            sets,
            self.split,
            self.num_classes,
            checks_forget=self.stopping.class_checks_forget,
            class_accuracy=self.stopping.class_accuracy,
        )
        if failed:
            # A screen fails only past a wider band than the rule's: the rule fails there too
            # (were it to hold on these samples, the whole subsets decide).
            check = self._decide(forget_logits, self._held_out_logits, sets)
            if not check.stop:
                return _Screened(check, screened=True)
        rest = self._logits(forget.subset(torch.arange(size, len(forget))))
        whole = torch.cat([forget_logits, rest])
        return _Screened(self._decide(whole, self._held_out_logits), screened=False)

    def _logits(self, subset: ArrayDataset) -> Tensor:
        return subset_logits(
            self.model, subset, batch_size=self.batch_size, channels_last=self.channels_last
        )

    def _record(
        self, position: Mapping[str, float], result: RuleCheck, *, reused: bool, screen: bool
    ) -> None:
        """Append the history entry of ``result`` and make it :attr:`last`."""
        entry = {
            **position,
            "forget_train_acc": result.forget_acc,
            "held_out_acc": result.held_out_acc,
        }
        self.held_out_reused = reused
        if reused:
            entry["held_out_reused"] = 1
        if screen:
            entry["screen"] = 1
        if result.member_auc is not None:
            entry["member_auc"] = result.member_auc
        self.history.append(entry)
        self.last = result

    def _fresh_held_out_logits(self, known: HeldOutLogits | None) -> Tensor:
        """``(Nh, C)`` the held-out subset's logits now: read from ``known`` where it has them,
        evaluated for the rest."""
        subset, wanted = self.sets.held_out, self.sets.held_out_indices
        found = torch.zeros(len(subset), dtype=torch.bool)
        rows = torch.zeros(len(subset), dtype=torch.long)
        if known is not None and wanted is not None and known.indices.numel():
            ordered, order = torch.sort(known.indices)
            at = torch.searchsorted(ordered, wanted).clamp(max=ordered.numel() - 1)
            found = ordered[at] == wanted
            rows = order[at]
        if bool(found.all()):
            assert known is not None
            return known.logits[rows].float()
        missing = subset_logits(
            self.model,
            subset.subset(torch.nonzero(~found).flatten()),
            batch_size=self.batch_size,
            channels_last=self.channels_last,
        )
        if not bool(found.any()):
            return missing
        assert known is not None
        logits = torch.empty(len(subset), missing.shape[1], dtype=missing.dtype)
        logits[~found] = missing
        logits[found] = known.logits[rows[found]].to(missing.dtype)
        return logits

    def _rule_options(self) -> dict[str, Any]:
        """The rule's settings, as :func:`conun.engine.stopping.decide_rule` and
        :func:`conun.engine.stopping.screen_predictions` take them."""
        return {
            "checks_forget": self.stopping.class_checks_forget,
            "sample_rule": self.stopping.sample_rule,
            "confidence": self.stopping.confidence,
            "class_accuracy": self.stopping.class_accuracy,
        }

    def _decide(
        self, forget_logits: Tensor, held_out_logits: Tensor, sets: EvaluationSets | None = None
    ) -> RuleCheck:
        return decide_rule(
            forget_logits,
            held_out_logits,
            self.sets if sets is None else sets,
            self.split,
            self.num_classes,
            **self._rule_options(),
        )

    def interval(self, images_per_batch: int) -> int | None:
        """Batches between two checks inside a pass; None: after each pass only.

        With ``check_every = auto``, the smallest interval whose checks cost at most
        ``check_budget`` of the steps between them, estimated from images: a check runs one
        forward pass over its two subsets, a batch trains on ``images_per_batch`` images at
        about three forward passes each (forward and backward).

        Args:
            images_per_batch: images one batch of the loop trains on (all its steps).
        """
        every = self.stopping.check_every
        if every != "auto":
            return every
        check_images = len(self.sets.forget) + len(self.sets.held_out)
        budget = 3 * self.stopping.check_budget * max(1, images_per_batch)
        return max(1, math.ceil(check_images / budget))

    @property
    def holds(self) -> bool:
        """Whether the run stops here: ``stopping.rule`` is ``auto`` and the last check met it."""
        return self.stopping.rule == "auto" and self.last is not None and self.last.stop

    def state_dict(self) -> dict[str, Any]:
        """The history, the check time and the last check, as JSON (for a resumable state)."""
        return {
            "history": self.history,
            "check_seconds": self.check_seconds,
            "last": self.last.to_dict() if self.last is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what :meth:`state_dict` returned."""
        self.history = list(state["history"])
        self.check_seconds = float(state["check_seconds"])
        last = state.get("last")
        self.last = RuleCheck(**last) if last is not None else None

    #: Names of the tensors of :meth:`state_tensors`.
    TENSORS = ("monitor_held_out_logits",)

    def state_tensors(self) -> dict[str, Tensor]:
        """The held-out logits a cheaper check reuses (none before the first check), so that a
        resumed run decides its checks as the uninterrupted one does."""
        if self._held_out_logits is None:
            return {}
        return {"monitor_held_out_logits": self._held_out_logits}

    def load_state_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        """Continue from what :meth:`state_tensors` returned."""
        self._held_out_logits = tensors.get("monitor_held_out_logits")


class ForgetAccuracyEstimate:
    """The forget accuracy over the latest ``window`` forget samples the loop trained on, read
    from its own forward passes (:attr:`conun.engine.task.LossTerms.forget_correct`): free, but
    measured before each step and in training mode, so it only says when a real check of the
    rule is worth its cost, never whether the rule holds."""

    def __init__(self, window: int) -> None:
        self.window = max(1, window)
        self._batches: list[Tensor] = []

    def add(self, correct: Tensor) -> None:
        """Record one forward pass's ``(B,)`` bool ``correct`` (kept on its device)."""
        self._batches.append(correct.detach().flatten())
        while self._batches and sum(b.numel() for b in self._batches[1:]) >= self.window:
            self._batches.pop(0)

    def value(self) -> float | None:
        """The estimate (one host sync), None before any batch."""
        if not self._batches:
            return None
        return float(torch.cat(self._batches).double().mean())

    def state(self) -> tuple[Tensor, list[int]]:
        """The window as one ``(N,)`` bool tensor (on the CPU) and its batch sizes."""
        return order_parts([b.cpu() for b in self._batches])

    def load_state(self, flat: Tensor, sizes: list[int]) -> None:
        """Continue from :meth:`state`."""
        self._batches = split_order(flat.bool(), sizes)


@dataclass(frozen=True)
class BatchLoader:
    """Batches of a set of images, by index, on the device.

    Attributes:
        images: ``(N, C_in, H, W)`` (any device).
        labels: ``(N,)``.
        device: where batches go.
        channels_last: batches in channels_last format.
    """

    images: Tensor
    labels: Tensor
    device: torch.device
    channels_last: bool

    @classmethod
    def training_set(cls, task: UnlearningTask) -> BatchLoader:
        """Batches of ``task``'s training set on the configured device."""
        return cls(
            task.data.train.images,
            task.data.train.labels,
            torch.device(task.config.device),
            task.config.channels_last,
        )

    def __call__(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """This rank's share of a global batch ``(B,)`` of indices (all of it in one process).

        Returns:
            ``images`` ``(B', C_in, H, W)`` and ``labels`` ``(B',)`` on the device.
        """
        return self.whole(shard(index))

    def whole(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """The batch ``(B,)`` itself, on every rank (already sharded, or not data-parallel).

        Returns:
            ``images`` ``(B, C_in, H, W)`` and ``labels`` ``(B,)`` on the device.
        """
        images = to_device(self.images[index], self.device, channels_last=self.channels_last)
        return images, self.labels[index].to(self.device)


class RunClock:
    """A method's wall-clock: from :meth:`start`, less the time its :class:`Resumable` spent
    writing states; a resumed run continues the interrupted run's time."""

    def __init__(self, resume: Resumable | None) -> None:
        self._resume = resume
        self._started = time.perf_counter()

    def start(self) -> None:
        """Start (again) from zero now."""
        self._started = time.perf_counter()

    def continue_from(self, seconds: float) -> None:
        """Count ``seconds`` (the interrupted run's time) as already spent."""
        self._started -= seconds

    def seconds(self) -> float:
        """Seconds so far, saving time excluded."""
        saving = self._resume.save_seconds if self._resume is not None else 0.0
        return time.perf_counter() - self._started - saving


class LoopResume:
    """A loop's resumable states: saved every ``resume.every`` optimizer steps together with the
    monitor's history and the clock, and restored with them (a no-op without a ``Resumable``).

    The loop's own position (counters as JSON, index orders as tensors) is what it passes to
    :meth:`save`; :meth:`restore` hands it back in the returned :class:`LoopState`.
    """

    def __init__(
        self, task: UnlearningTask, monitor: StoppingMonitor | None, clock: RunClock
    ) -> None:
        self.resume = task.resume
        self.generator = task.generator
        self.monitor = monitor
        self.clock = clock

    @property
    def state(self) -> LoopState | None:
        """The state to continue from (None: the run starts from the beginning)."""
        return self.resume.state if self.resume is not None else None

    @property
    def saving(self) -> bool:
        """Whether the run saves resumable states at all."""
        return self.resume is not None

    def due(self, steps_before: int, steps_after: int) -> bool:
        """Whether a save point (a multiple of ``every`` steps) lies in ``(before, after]``:
        a loop that saves only between units of several steps rounds up to the unit."""
        if self.resume is None:
            return False
        every = self.resume.every
        return steps_after // every > steps_before // every

    def save(
        self,
        *,
        model: Classifier,
        optimizer: torch.optim.Optimizer | None,
        loop: dict[str, Any],
        loop_tensors: dict[str, Tensor],
    ) -> None:
        """Write ``loop`` (JSON) and ``loop_tensors`` with the weights, optimizer, RNGs, the
        monitor's state and the run's time so far."""
        if self.resume is None:
            raise RuntimeError("this run was given no Resumable: it saves no states")
        monitored = self.monitor.state_dict() if self.monitor is not None else {}
        monitor_tensors = self.monitor.state_tensors() if self.monitor is not None else {}
        self.resume.save(
            model=model,
            optimizer=optimizer,
            generator=self.generator,
            loop={**loop, **monitored, "seconds": self.clock.seconds()},
            loop_tensors={**loop_tensors, **monitor_tensors},
        )

    def restore(self, *, model: Classifier, optimizer: torch.optim.Optimizer | None) -> LoopState:
        """Load the saved weights, optimizer, RNGs, history and time; return the state."""
        if self.resume is None:
            raise RuntimeError("this run was given no Resumable: there is no state to restore")
        state = self.resume.restore(model=model, optimizer=optimizer, generator=self.generator)
        if self.monitor is not None:
            self.monitor.load_state_dict(state.loop)
            self.monitor.load_state_tensors(
                {
                    name: state.loop_tensor(name)
                    for name in StoppingMonitor.TENSORS
                    if f"loop.{name}" in state.tensors
                }
            )
        self.clock.continue_from(state.loop["seconds"])
        return state


def split_order(flat: Tensor, sizes: list[int]) -> list[Tensor]:
    """A saved batch order (``(N,)`` concatenated batches and their sizes) as ``(B,)`` batches."""
    return list(torch.split(flat, sizes))


def order_parts(order: list[Tensor]) -> tuple[Tensor, list[int]]:
    """A batch order as one ``(N,)`` tensor and the batch sizes (inverse of :func:`split_order`)."""
    flat = torch.cat(order) if order else torch.empty(0, dtype=torch.long)
    return flat, [int(batch.numel()) for batch in order]


__all__ = [
    "BatchLoader",
    "ForgetAccuracyEstimate",
    "LoopResume",
    "RunClock",
    "StoppingMonitor",
    "order_parts",
    "split_order",
]
