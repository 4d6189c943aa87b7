"""Gradient baselines on the forget set (loop methods on the shared engine).

- ``neggrad`` — gradient ascent on the forget set (Golatkar et al., "Eternal Sunshine of the
  Spotless Net", CVPR 2020): minimise ``-CE(f(X_u), Y_u)``.
- ``neggrad_plus`` — ascent on the forget set balanced by descent on the retain set (Kurmanji et
  al., "Towards Unbounded Machine Unlearning", NeurIPS 2023): minimise
  ``alpha * CE(f(X_r), Y_r) - (1 - alpha) * CE(f(X_u), Y_u)``.
- ``random_label`` — fine-tune on the forget set relabelled at random (Golatkar et al. 2020;
  "RL" in Fan et al., ICLR 2024): minimise ``CE(f(X_u), Y~)`` with ``Y~ != Y_u`` uniform, plus
  ``CE`` on a retain batch so that the other classes keep their labels.

All three stop by the scenario's stopping rule (docs/method.md) like contrastive unlearning does.
Their defaults (optimizer, batch size, stopping) are :data:`UNTUNED_DEFAULTS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from conun.config import OptimizerConfig, StoppingConfig, StrictModel
from conun.data.splits import Scenario
from conun.methods.base import (
    LoopMethod,
    LossTerms,
    MethodDefaults,
    UnlearningBatch,
    register_method,
)
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


@register_method("neggrad")
class NegGrad(LoopMethod):
    """Gradient ascent on the forget set's cross-entropy."""

    uses_retain: ClassVar[bool] = False
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = UNTUNED_DEFAULTS

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


@register_method("random_label")
class RandomLabel(LoopMethod):
    """Cross-entropy toward uniformly drawn wrong labels on the forget batch, plus the retain
    batch's own cross-entropy."""

    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = UNTUNED_DEFAULTS

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        assert batch.forget_images is not None and batch.forget_labels is not None
        assert batch.retain_images is not None and batch.retain_labels is not None
        num_forget = batch.forget_images.shape[0]
        logits = model(torch.cat([batch.forget_images, batch.retain_images]))
        num_classes = logits.shape[1]
        # A uniform draw among the C - 1 wrong classes: shift the true label by 1..C-1.
        shift = torch.randint(1, num_classes, batch.forget_labels.shape, device=logits.device)
        wrong = (batch.forget_labels + shift) % num_classes
        forget_ce = F.cross_entropy(logits[:num_forget], wrong)
        retain_ce = F.cross_entropy(logits[num_forget:], batch.retain_labels)
        return LossTerms(
            forget_ce + retain_ce,
            {"random_label_ce": forget_ce.detach(), "retain_ce": retain_ce.detach()},
        )
