"""SalUn (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency
in Both Image Classification and Generation", ICLR 2024; official code
OPTML-Group/Unlearn-Saliency, ``Classification/generate_mask.py`` and ``unlearn/RL.py``).

Two stages:

1. Weight saliency (in :meth:`SalUn.prepare`, timed as part of the method). With the model in
   eval mode, ``g = sum_b grad_theta CE(f(X_u^b), Y_u^b)`` over the forget set in batches
   ``b`` (each batch's mean cross-entropy, gradients summed over batches, as their
   ``save_gradient_ratio`` does; its minus sign does not matter after ``|.|``). The saliency
   mask ``m_S`` is 1 on the ``floor(threshold * n)`` entries with the largest ``|g|`` among
   *all* ``n`` parameter entries of the model: one global top-k over every parameter tensor
   (weights, biases, BatchNorm affine), exactly like their ``generate_mask.py``, not a
   per-layer top-k.
2. Random-label unlearning restricted to salient weights, ``theta = m_S * theta' +
   (1 - m_S) * theta_0``: minimise the cross-entropy of forget samples towards random labels
   ``Y~`` (a uniform draw among the wrong classes of each) together with that of retain
   samples towards their own labels (the joint mean below), updating only salient entries. Every
   non-salient entry is put back to its original value after every optimizer step, so neither
   momentum nor weight decay can move it (their later ``RL.py`` masks the gradients and
   restores the masked entries the same way). The optimizers conun offers are elementwise, so
   restoring after the step gives the salient entries exactly the updates that masking the
   gradient would.

A pass goes over the *retain* set. In their ``RL`` an epoch visits every forget sample once
(random labels) and every retain sample once (true labels) — for CIFAR-100/TinyImageNet as one
pass over the shuffled union of the two sets with the mean cross-entropy of each mixed batch,
for CIFAR-10/SVHN as a pass over the forget loader followed by one over the retain loader.
Either way the retain set is where almost all of an epoch's steps are (``|D_r| >> |D_u|``) and
their 10 "epochs" are 10 passes over it. conun follows the mixed-batch form: each step takes a
retain batch of ``B`` (in a random order, every retain sample once per pass) and a fresh random
forget batch of ``B_u = round(B * |D_u| / |D_r|)`` (at least 1), so that one pass draws about
``|D_u|`` forget samples, as their epoch does, and minimises the mean over the joint batch

    (B_u * CE(f(X_u), Y~) + B * CE(f(X_r), Y_r)) / (B_u + B).

Defaults (``SalUnOptions``, ``SalUn.scenario_defaults``): threshold 0.5 (the paper's mask
``with_0.5.pt``), SGD lr 0.013, momentum 0.9, weight decay 5e-4, batch 256, 10 epochs (their
README's commands for class-wise and 10% random forgetting of ResNet-18 on CIFAR-10).

Departures from their code:

- Random labels are drawn among the ``C - 1`` wrong classes (their code draws among all ``C``,
  so ~1/C of the "random" labels are the true one, which only slows forgetting down).
- The joint batch is ``B + B_u`` rather than ``B`` samples, and its forget share is exact
  (``B_u``) rather than random; their CIFAR-10 variant (separate forget-only and retain-only
  steps) is not reproduced, as the engine pairs both halves in each step.
- :meth:`SalUn.run` records ``|D_u| / |D_r|`` before handing over to the shared engine, which
  asks for the forget batch size before :meth:`SalUn.prepare` runs.
- Random labels come from the run's seeded generator, not the global RNG, so a seed
  reproduces a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from conun.config import OptimizerConfig, StoppingConfig, StrictModel
from conun.data.splits import Scenario
from conun.distributed.device import to_device
from conun.methods.base import (
    LoopMethod,
    LossTerms,
    MethodDefaults,
    MethodOutcome,
    UnlearningBatch,
    UnlearningTask,
    register_method,
)
from conun.models.base import Classifier


class SalUnOptions(StrictModel):
    """Hyperparameters of SalUn; defaults are Fan et al.'s (ICLR 2024,
    OPTML-Group/Unlearn-Saliency README: mask ``with_0.5.pt``, threshold 0.5), for both
    scenarios."""

    threshold: float = Field(0.5, gt=0, le=1)
    """Fraction of all parameter entries that are salient (updated): the largest ``|g|``."""


def forget_gradient(
    model: Classifier, images: Tensor, labels: Tensor, *, batch_size: int, channels_last: bool
) -> list[Tensor]:
    """``sum_b grad_theta CE(f(X^b), Y^b)`` over ``images`` in consecutive batches, one tensor
    per parameter (same shapes as ``model.parameters()``), with the model in eval mode.

    Args:
        model: the classifier (on its device); left in eval mode, its ``.grad`` fields cleared.
        images: ``(N, C, H, W)`` forget images (any device).
        labels: ``(N,)`` their labels.
        batch_size: samples per batch ``b``; each batch contributes its *mean* cross-entropy.
        channels_last: memory format of the batches (as the run's).
    """
    parameters = list(model.parameters())
    device = parameters[0].device
    model.eval()  # their generate_mask.py: BatchNorm uses its running statistics
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = to_device(
                images[start : start + batch_size], device, channels_last=channels_last
            )
            target = labels[start : start + batch_size].to(device)
            # backward() accumulates into .grad: the sum over batches comes for free.
            F.cross_entropy(model(batch), target).backward()
    gradients = [
        parameter.grad.detach().clone()
        if parameter.grad is not None
        else torch.zeros_like(parameter)
        for parameter in parameters
    ]
    model.zero_grad(set_to_none=True)
    return gradients


def saliency_masks(gradients: list[Tensor], threshold: float) -> list[Tensor]:
    """Boolean masks, True on the ``floor(threshold * n)`` entries with the largest ``|g|`` over
    all ``n`` entries of ``gradients`` together (one global top-k, as ``generate_mask.py``)."""
    magnitudes = torch.cat([gradient.abs().flatten() for gradient in gradients])
    count = int(threshold * magnitudes.numel())
    salient = torch.zeros_like(magnitudes, dtype=torch.bool)
    salient[torch.topk(magnitudes, count).indices] = True
    sizes = [gradient.numel() for gradient in gradients]
    return [
        flags.view_as(gradient)
        for flags, gradient in zip(salient.split(sizes), gradients, strict=True)
    ]


def wrong_labels(labels: Tensor, num_classes: int, *, generator: torch.Generator | None) -> Tensor:
    """``(N,)`` labels drawn uniformly among the ``C - 1`` classes other than ``labels``
    (shift the true label by 1..C-1, drawn on the CPU ``generator``), on ``labels``' device."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + shift.to(labels.device)) % num_classes


@register_method("salun")
class SalUn(LoopMethod):
    """Random-label unlearning plus retain cross-entropy, moving only the weights most salient
    to the forget loss."""

    Options: ClassVar[type[StrictModel]] = SalUnOptions
    pass_over: ClassVar[Literal["forget", "retain"]] = "retain"
    # Both scenarios: Fan et al. (ICLR 2024), OPTML-Group/Unlearn-Saliency README (class-wise
    # and 10% random forgetting): main_random.py --unlearn RL --unlearn_epochs 10 --unlearn_lr
    # 0.013 with mask with_0.5.pt (threshold 0.5); arg_parser defaults: SGD momentum 0.9, weight
    # decay 5e-4, --batch_size 256 for both the mask and the unlearning.
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        scenario: MethodDefaults(
            batch_size=256,
            optimizer=OptimizerConfig(name="sgd", lr=1.3e-2, momentum=0.9, weight_decay=5e-4),
            stopping=StoppingConfig(rule="none", eval_set="validation", max_passes=10),
        )
        for scenario in ("class", "sample")
    }

    def __init__(self, options: StrictModel) -> None:
        super().__init__(options)
        # One boolean mask per parameter (True = salient), in model.parameters() order.
        self.masks: list[Tensor] = []
        # (parameter, salient mask, original values) for every tensor with a frozen entry.
        self._frozen: list[tuple[nn.Parameter, Tensor, Tensor]] = []
        self._generator: torch.Generator | None = None
        self._forget_share = 1.0  # |D_u| / |D_r|, set by run()

    @property
    def settings(self) -> SalUnOptions:
        assert isinstance(self.options, SalUnOptions)
        return self.options

    def run(self, task: UnlearningTask) -> MethodOutcome:
        self._forget_share = task.split.forget.numel() / max(1, task.split.retain.numel())
        return super().run(task)

    def forget_batch_size(self, batch_size: int) -> int:
        """``B_u = round(B * |D_u| / |D_r|)``: one pass over the retain set then draws about
        ``|D_u|`` forget samples, every forget sample once per epoch as in their ``RL``."""
        return max(1, round(batch_size * self._forget_share))

    def prepare(self, model: Classifier, task: UnlearningTask) -> None:
        self._generator = task.generator
        forget = task.split.forget
        gradients = forget_gradient(
            model,
            task.data.train.images[forget],
            task.data.train.labels[forget],
            batch_size=self.batch_size(task.config, task.split.scenario),
            channels_last=task.config.channels_last,
        )
        self.masks = saliency_masks(gradients, self.settings.threshold)
        self._frozen = [
            (parameter, salient, parameter.detach().clone())
            for parameter, salient in zip(model.parameters(), self.masks, strict=True)
            if not bool(salient.all())
        ]

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        assert batch.forget_images is not None and batch.forget_labels is not None
        assert batch.retain_images is not None and batch.retain_labels is not None
        num_forget = batch.forget_images.shape[0]
        logits = model(torch.cat([batch.forget_images, batch.retain_images]))  # (Bf + Br, C)
        num_classes = logits.shape[1]
        wrong = wrong_labels(batch.forget_labels, num_classes, generator=self._generator)
        # Mean over the joint batch: each sample weighs the same, as in their mixed batches.
        per_sample = F.cross_entropy(
            logits, torch.cat([wrong, batch.retain_labels]), reduction="none"
        )  # (Bf + Br,)
        return LossTerms(
            per_sample.mean(),
            {
                "random_label_ce": per_sample[:num_forget].detach().mean(),
                "retain_ce": per_sample[num_forget:].detach().mean(),
            },
        )

    def after_step(self, model: Classifier) -> None:
        # Put every non-salient entry back bit for bit; the optimizer moved it through momentum,
        # weight decay or its (unmasked) gradient.
        with torch.no_grad():
            for parameter, salient, original in self._frozen:
                parameter.copy_(torch.where(salient, parameter, original))
