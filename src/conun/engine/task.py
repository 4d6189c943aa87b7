"""The contract between the unlearning loop and the methods it runs.

The engine owns these types: what a method is given (:class:`UnlearningTask`), the data of one
step (:class:`UnlearningBatch`), a step's objective (:class:`LossTerms`), what a method returns
(:class:`MethodOutcome`), and the hooks the loop calls (:class:`LoopHooks`). ``conun.methods``
implements them and re-exports the types, so imports only ever point down: methods -> engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import Tensor

from conun.config import TrainConfig, UnlearnConfig
from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRetainSplit, Scenario
from conun.engine.resume import Resumable
from conun.models.base import Classifier

StoppedBy = Literal["rule", "max_passes", "done"]
"""Why a method stopped: its stopping rule held, it hit ``stopping.max_passes``, or it is not a
loop and simply finished (one-shot edits, retraining)."""


@dataclass
class UnlearningTask:
    """Everything a method needs to unlearn.

    Attributes:
        model: the trained classifier (methods may modify it in place or return a new one).
        data: the dataset that ``split`` indexes into.
        split: the forget request.
        config: unlearning settings (optimizer, batch size, stopping rule, method options).
        train_config: the recipe that trained ``model`` (retrain reuses it); None if unknown.
        original_seconds: training time of ``model``, reported by the ``original`` method.
        generator: seeded source of every random draw of the run.
        quiet: no progress bars.
        resume: where loop-based methods save resumable states, and the state to continue
            from (None: no saving).
    """

    model: Classifier
    data: DatasetBundle
    split: ForgetRetainSplit
    config: UnlearnConfig
    train_config: TrainConfig | None
    original_seconds: float | None
    generator: torch.Generator
    quiet: bool = False
    resume: Resumable | None = None


@dataclass(frozen=True)
class HeldOutLogits:
    """A model's logits on held-out samples, computed by a method before its first step, so
    that the loop's first check of the stopping rule reads them instead of evaluating the same
    samples again.

    Attributes:
        indices: ``(M,)`` indices into the held-out pool
            (:func:`conun.engine.stopping.held_out_pool`'s dataset).
        logits: ``(M, K)`` the model's logits on them, as it came to the method.
    """

    indices: Tensor
    logits: Tensor


@dataclass
class MethodOutcome:
    """What a method returns.

    Attributes:
        model: the unlearned classifier.
        seconds: wall-clock of the method itself (stopping-rule checks included; final
            evaluation excluded).
        forget_batches: forget batches processed (loop methods), else None.
        passes: passes over the forget set (loop methods), else None.
        history: forget-set accuracy against forget batches processed.
        extra: further method-specific numbers recorded in results.json (e.g. check_seconds).
    """

    model: Classifier
    seconds: float
    forget_batches: int | None = None
    passes: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UnlearningBatch:
    """One step's data on the model's device. Either half may be absent for a method that
    does not use it.

    Attributes:
        forget_images: ``(Bf, C, H, W)`` or None.
        forget_labels: ``(Bf,)`` or None.
        retain_images: ``(Br, C, H, W)`` or None.
        retain_labels: ``(Br,)`` or None.
        forget_indices: ``(Bf,)`` the forget samples' indices into the training set (this
            process's share), for a method that keeps per-sample state; None where the loop
            does not give them.
    """

    forget_images: Tensor | None
    forget_labels: Tensor | None
    retain_images: Tensor | None
    retain_labels: Tensor | None
    forget_indices: Tensor | None = None


@dataclass(frozen=True)
class LossTerms:
    """A step's objective and its named parts (logged, never used for control flow).

    Attributes:
        total: the scalar to minimise.
        parts: named 0-dim parts, for the logs.
        forget_correct: optional ``(B,)`` bool, which forget samples of this step's batch the
            model classified correctly in this forward pass (before the step): a free, rough
            estimate of the forget accuracy, with which the loop (``stopping.check_every =
            auto``) checks the stopping rule early when it probably holds, and (sample
            scenario, methods with ``reports_forget_correct``) screens its first check.
    """

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)
    forget_correct: Tensor | None = None


class LoopHooks(Protocol):
    """What :func:`conun.engine.unlearning.run_unlearning_loop` calls on a method.

    ``conun.methods.base.LoopMethod`` implements every hook with a default; a method overrides
    only :meth:`loss` and what differs.
    """

    name: ClassVar[str]
    uses_forget: ClassVar[bool]
    uses_retain: ClassVar[bool]
    pass_over: ClassVar[Literal["forget", "retain"]]
    reports_forget_correct: ClassVar[bool]

    def batch_size(self, config: UnlearnConfig, scenario: Scenario) -> int:
        """Batch size of the set a pass goes over."""
        ...

    def steps_per_forget_batch(self) -> int:
        """Optimizer steps per forget batch (the paper's omega for contrastive)."""
        ...

    def retain_batch_size(self, forget_batch_size: int) -> int:
        """Retain samples drawn per step."""
        ...

    def forget_batch_size(self, batch_size: int) -> int:
        """Forget samples drawn per step when a pass goes over the retain set."""
        ...

    def freeze_batchnorm(self) -> bool:
        """Keep BatchNorm running statistics fixed during unlearning."""
        ...

    def frozen_modules(self, model: Classifier) -> list[torch.nn.Module | torch.nn.Parameter]:
        """After :meth:`prepare`: submodules (no gradient, eval mode) or single parameters (no
        gradient) left as they are."""
        ...

    def forget_order(self) -> Literal["shuffled", "fixed"]:
        """``shuffled``: a fresh random batch order each pass; ``fixed``: index order."""
        ...

    def retain_batches(self) -> Literal["random", "first_batches"]:
        """``random``: a fresh random retain batch per step; ``first_batches``: step k of
        every forget batch uses the k-th retain batch in index order, cut to its size."""
        ...

    def prepare(self, model: Classifier, task: UnlearningTask) -> None:
        """Once, before the optimizer is built: masks, teachers, ..."""
        ...

    def held_out_logits(self) -> HeldOutLogits | None:
        """After :meth:`prepare`: the logits it computed on held-out samples, if any (the first
        check reuses them), else None."""
        ...

    def trainable_parameters(self, model: Classifier) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates."""
        ...

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        """The objective of one step (minimised)."""
        ...

    def after_step(self, model: Classifier) -> None:
        """After every optimizer step (e.g. put masked weights back)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state that changes from step to step (for resume)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...

    def finish(self, model: Classifier) -> Classifier:
        """Once after the last step, inside the timed region; returns the final model."""
        ...

    def outcome_extra(self) -> dict[str, Any]:
        """JSON-serialisable facts of the finished run for the record's ``extra``, read after
        :meth:`finish`."""
        ...
