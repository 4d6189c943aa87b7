"""Gradient baselines on the forget set (loop methods on the shared engine).

- ``neggrad`` — gradient ascent on the forget set (Golatkar et al., "Eternal Sunshine of the
  Spotless Net", CVPR 2020): minimise ``-CE(f(X_u), Y_u)``.
- ``neggrad_plus`` — ascent on the forget set balanced by descent on the retain set (Kurmanji et
  al., "Towards Unbounded Machine Unlearning", NeurIPS 2023): minimise
  ``alpha * CE(f(X_r), Y_r) - (1 - alpha) * CE(f(X_u), Y_u)``.
- ``random_label`` — fine-tune on the forget set relabelled at random together with the retain
  set (Golatkar et al. 2020; "RL" in Fan et al., ICLR 2024, official code
  OPTML-Group/Unlearn-Saliency ``Classification/unlearn/RL.py``): minimise the mean
  cross-entropy over a joint batch of forget samples towards random wrong labels ``Y~`` and
  retain samples towards their own labels.

All three stop by the scenario's stopping rule (docs/method.md) like contrastive unlearning does.
Their defaults (optimizer, batch size, stopping) are :data:`UNTUNED_DEFAULTS`.

Random labels as in their RL (fixed in issue #19). An epoch of their ``RL`` visits every retain
sample once and every forget sample once: for CIFAR-100/TinyImageNet as one shuffled pass over
the union of the two sets (each batch's mean cross-entropy), for CIFAR-10/SVHN as a pass over the
forget loader followed by a pass over the retain loader. The retain set, ``|D_r| >> |D_u|``,
carries almost all of an epoch's steps, which is what keeps utility: SalUn reports RL within a
few points of retraining's test accuracy on 10% random forgetting of CIFAR-10
(docs/baselines.md). conun's ``random_label`` used to pass over the *forget* set instead, each
step pairing a forget batch with a retain batch of the same size and summing the two
cross-entropies: the random labels then weighed as much as the true ones, and a pass showed the
model only ``|D_u|`` retain samples. On 500 Fashion-MNIST samples the model learnt "predict at
random" for everything: validation accuracy fell to 81% at the learning rate tuning chose (75% on
the test set, retraining 92%) before the forget set reached held-out accuracy. It now follows
their mixed-batch form, as ``salun`` (which is RL plus a saliency mask) does: a pass goes over the
retain set, each step takes a retain batch of ``B`` and a fresh random forget batch of
``B_u = round(B * share)`` (at least 1), ``share = |D_u| / |D_r|`` unless ``forget_share`` sets
it (the knob that mixes more or less of the forget set into each step), and minimises

    (B_u * CE(f(X_u), Y~) + B * CE(f(X_r), Y_r)) / (B_u + B).

Departures from their code: random labels are drawn among the ``C - 1`` wrong classes (theirs
among all ``C``) from the run's seeded generator; the stopping rule (``auto``) may end the run
before ``max_passes`` passes (their fixed 10 epochs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from conun.config import OptimizerConfig, StoppingConfig, StrictModel
from conun.data.splits import Scenario
from conun.methods.base import (
    LoopMethod,
    LossTerms,
    MethodDefaults,
    MethodOutcome,
    UnlearningBatch,
    UnlearningTask,
    register_method,
)
from conun.methods.salun import wrong_labels
from conun.models.base import Classifier

# Not yet tuned on a validation split (issue #4): a common starting point, SGD lr 1e-3 with
# momentum 0.9 and no weight decay, forget batches of 64 (class) and 128 (sample), the
# scenario's stopping rule; options (neggrad_plus's alpha) at their model's defaults.
UNTUNED_DEFAULTS: Mapping[Scenario, MethodDefaults] = {
    "class": MethodDefaults(
        batch_size=64,
        optimizer=OptimizerConfig(name="sgd", lr=1e-3, momentum=0.9, weight_decay=0.0),
        stopping=StoppingConfig(rule="auto", eval_set="validation", max_passes=20),
    ),
    "sample": MethodDefaults(
        batch_size=128,
        optimizer=OptimizerConfig(name="sgd", lr=1e-3, momentum=0.9, weight_decay=0.0),
        stopping=StoppingConfig(rule="auto", eval_set="validation", max_passes=20),
    ),
}


class NegGradOptions(StrictModel):
    """NegGrad's one knob besides the optimizer."""

    freeze_batchnorm: bool = False
    """Keep BatchNorm's running statistics fixed. Their gradient ascent (SalUn's ``GA.py``, as
    every reference) runs in train mode, so in the class scenario, where every forget batch holds
    the forgotten class alone, the statistics drift to that class's and the retained classes
    are normalised with them; ``true`` separates that loss of utility from the ascent's own."""


# random_label passes over the retain set, so the untuned loop defaults (batches of 64/128, up to
# 20 passes) would mean up to 20 epochs of small steps. Their RL's recipe instead
# (OPTML-Group/Unlearn-Saliency arg_parser.py and README, shared with salun): batches of 256,
# SGD momentum 0.9, weight decay 5e-4, 10 epochs (here an upper bound: the scenario's stopping
# rule may end the run earlier). The learning rate 1e-2 is a starting point, not tuned (their
# README's runs use 0.013-0.1 on CIFAR-10); the dataset layers set it.
RANDOM_LABEL_DEFAULTS: Mapping[Scenario, MethodDefaults] = {
    scenario: MethodDefaults(
        batch_size=256,
        optimizer=OptimizerConfig(name="sgd", lr=1e-2, momentum=0.9, weight_decay=5e-4),
        stopping=StoppingConfig(rule="auto", eval_set="validation", max_passes=10),
    )
    for scenario in ("class", "sample")
}


@register_method("neggrad")
class NegGrad(LoopMethod):
    """Gradient ascent on the forget set's cross-entropy."""

    Options: ClassVar[type[StrictModel]] = NegGradOptions
    uses_retain: ClassVar[bool] = False
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = UNTUNED_DEFAULTS

    def freeze_batchnorm(self) -> bool:
        assert isinstance(self.options, NegGradOptions)
        return self.options.freeze_batchnorm

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        assert batch.forget_images is not None and batch.forget_labels is not None
        forget_ce = F.cross_entropy(model(batch.forget_images), batch.forget_labels)
        return LossTerms(-forget_ce, {"forget_ce": forget_ce.detach()})


class NegGradPlusOptions(StrictModel):
    """Weight of the retain term; the forget term gets ``1 - alpha``."""

    alpha: float = Field(0.9, gt=0, lt=1)


@register_method("neggrad_plus")
class NegGradPlus(LoopMethod):
    """Descent on a random retain batch, ascent on the forget batch."""

    Options: ClassVar[type[StrictModel]] = NegGradPlusOptions
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = UNTUNED_DEFAULTS

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        assert batch.forget_images is not None and batch.forget_labels is not None
        assert batch.retain_images is not None and batch.retain_labels is not None
        assert isinstance(self.options, NegGradPlusOptions)
        num_forget = batch.forget_images.shape[0]
        logits = model(torch.cat([batch.forget_images, batch.retain_images]))
        forget_ce = F.cross_entropy(logits[:num_forget], batch.forget_labels)
        retain_ce = F.cross_entropy(logits[num_forget:], batch.retain_labels)
        alpha = self.options.alpha
        total = alpha * retain_ce - (1 - alpha) * forget_ce
        return LossTerms(total, {"forget_ce": forget_ce.detach(), "retain_ce": retain_ce.detach()})


class RandomLabelOptions(StrictModel):
    """How much of the forget set each step mixes in (module docstring)."""

    forget_share: float | None = Field(None, gt=0, le=1)
    """Forget samples per retain sample in a step: ``B_u = round(B * forget_share)``. None (the
    default): ``|D_u| / |D_r|``, so that a pass over the retain set draws about ``|D_u|`` forget
    samples, every forget sample once per epoch as their ``RL``; larger values weigh the random
    labels more (faster forgetting, more utility at risk)."""


@register_method("random_label")
class RandomLabel(LoopMethod):
    """Mean cross-entropy of a joint batch: retain samples towards their labels, a proportional
    share of forget samples towards uniformly drawn wrong labels (their RL's mixed batches)."""

    Options: ClassVar[type[StrictModel]] = RandomLabelOptions
    # Their epoch is a pass over the retain set with the forget samples mixed in (module
    # docstring), not a pass over the forget set.
    pass_over: ClassVar[Literal["forget", "retain"]] = "retain"
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = RANDOM_LABEL_DEFAULTS

    def __init__(self, options: StrictModel) -> None:
        super().__init__(options)
        self._generator: torch.Generator | None = None
        self._forget_share = 1.0  # |D_u| / |D_r| or the option, set by run()

    @property
    def settings(self) -> RandomLabelOptions:
        assert isinstance(self.options, RandomLabelOptions)
        return self.options

    def run(self, task: UnlearningTask) -> MethodOutcome:
        # Set before the engine asks for the forget batch size (it does so before prepare()).
        share = self.settings.forget_share
        if share is None:
            share = task.split.forget.numel() / max(1, task.split.retain.numel())
        self._forget_share = share
        return super().run(task)

    def forget_batch_size(self, batch_size: int) -> int:
        """``B_u = round(B * share)``, at least 1."""
        return max(1, round(batch_size * self._forget_share))

    def prepare(self, model: Classifier, task: UnlearningTask) -> None:
        self._generator = task.generator

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        assert batch.forget_images is not None and batch.forget_labels is not None
        assert batch.retain_images is not None and batch.retain_labels is not None
        num_forget = batch.forget_images.shape[0]
        logits = model(torch.cat([batch.forget_images, batch.retain_images]))  # (Bu + B, C)
        wrong = wrong_labels(batch.forget_labels, logits.shape[1], generator=self._generator)
        # The joint batch's mean: every sample weighs the same, as in their mixed batches, so the
        # random labels weigh B_u / (B_u + B) of the step.
        per_sample = F.cross_entropy(
            logits, torch.cat([wrong, batch.retain_labels]), reduction="none"
        )  # (Bu + B,)
        return LossTerms(
            per_sample.mean(),
            {
                "random_label_ce": per_sample[:num_forget].detach().mean(),
                "retain_ce": per_sample[num_forget:].detach().mean(),
            },
        )
