"""Boundary Unlearning: ``boundary_shrink`` and ``boundary_expanding`` (class scenario).

Chen, Gao, Yi, Sun and Xie, "Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting
the Decision Space", CVPR 2023; the authors' code (``boundary_unlearning.py``, ``adv_generator.py``
and ``main.py`` of their Boundary-Unlearning-Code archive) fixes the details below. Both methods
touch only the forget set ``D_u`` of the forgotten class and fine-tune the original for a fixed
number of epochs with SGD (lr 1e-5, momentum 0.9, no weight decay), batches of 64, 10 epochs.

- ``boundary_shrink``: for every forget batch, find each sample's *nearest wrong class*: an
  untargeted FGSM step on a frozen copy of the original,
  ``x' = clip_[0,1](x + bound * sign(grad_x CE(f0(x), y)))`` in pixel space (``bound`` 0.1,
  rounded to the 8-bit grid as their ``FGSM.perturb`` does), and ``y' = argmax f0(x')``. Then one
  step of ``CE(f(x), y')`` on the *clean* forget samples: the model's decision boundary shrinks
  around the forgotten class, each sample going to the class nearest to it.
- ``boundary_expanding``: widen the head by one "shadow" output unit (a new row ``w_s, b_s``,
  Xavier-normal weight and zero bias as their ``init_params``), fine-tune ``CE([f(x), s(x)], C)``
  (every forget sample labelled with the shadow class ``C``), then prune the shadow unit: the
  returned model has the original ``C`` outputs, and the forgotten class's samples lose the
  region of the feature space the shadow unit took from them.

Both are :class:`LoopMethod` s on the shared engine: a pass is one epoch over the forget set.

Departures from the authors' code:

- The attack is done on the run's *normalised* images by mapping them to pixel space with the
  dataset's own mean and std (``x * std + mean``); their attack class carries hard-coded CIFAR-10
  statistics. The gradient is taken with ``torch.autograd.grad`` with respect to the images only,
  on a frozen copy (eval mode, ``requires_grad`` off), so it can never reach the model's
  parameter gradients (their code calls ``loss.backward()`` on the copy and zeroes it).
- ``attack: pgd`` offers their (commented-out) ``LinfPGD`` alternative: ``iterations`` signed
  steps of ``step`` projected onto the ``bound`` ball, no random start.
- As in their code, a sample whose attack does not change the prediction keeps its own label as
  the target (it is then fine-tuned on its true class); the loss part ``attack_success`` is the
  share of a batch whose label the attack changed.
- ``boundary_expanding`` keeps the shadow unit *beside* the head rather than rebuilding the head
  as a ``Linear(D, C + 1)``: a forward hook on the head's final ``nn.Linear`` records its input
  ``h`` ``(B, D)``, and the shadow logit is ``h @ w_s + b_s``. The optimizer sees exactly the
  parameters of their widened layer (the C original rows and the shadow row), so the updates are
  the same; but the model the engine evaluates between passes is always the *pruned* one, which
  is what the paper reports, and pruning in :meth:`BoundaryExpanding.finish` is removing the hook.
  (:func:`conun.models.heads.final_linear` finds that layer.)
- The presets keep the paper's learning rate and fixed epoch count (``stopping.rule: none``);
  with ``rule: auto`` the engine may stop earlier, after any pass at which the class rule holds.

A caveat the paper does not discuss, measured on digits (small_cnn, class 5): the model is
fine-tuned in train mode, as in their code, so every step re-estimates BatchNorm's running
statistics on a batch of the forgotten class alone. At the paper's lr 1e-5 nearly all of the
forgetting comes from those statistics: lr 1e-12 forgets exactly as much, and with
``freeze_batchnorm: true`` lr 1e-5 changes nothing. The option is there to separate the two; both
methods have it (``boundary_expanding`` since issue #19: on Fashion-MNIST its retained classes
kept 78.86% test accuracy against retraining's 91.47%, a loss the statistics may explain; the
tuning grid tries both settings).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from conun.config import OptimizerConfig, StoppingConfig, StrictModel
from conun.data.splits import Scenario
from conun.methods.base import (
    LoopMethod,
    LossTerms,
    MethodDefaults,
    UnlearningBatch,
    UnlearningTask,
    register_method,
)
from conun.models.base import Classifier
from conun.models.heads import final_linear

PIXEL_LEVELS = 255.0
"""Adversarial images are rounded to the 8-bit grid, as their ``discretize`` does."""


def frozen_copy(model: Classifier) -> Classifier:
    """A separate copy of ``model`` in eval mode with no parameter requiring gradients: the
    reference the attack runs on, which neither the loss nor the optimizer can change."""
    reference = copy.deepcopy(model)
    reference.eval()
    reference.requires_grad_(False)
    return reference


def normalization_tensors(
    data_mean: tuple[float, ...], data_std: tuple[float, ...], like: Tensor
) -> tuple[Tensor, Tensor]:
    """The dataset's per-channel mean and std as ``(1, C, 1, 1)`` tensors on ``like``'s device."""
    mean = torch.tensor(data_mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    std = torch.tensor(data_std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return mean, std


def nearest_wrong_labels(
    reference: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    bound: float,
    mean: Tensor,
    std: Tensor,
    step: float | None = None,
    iterations: int = 1,
    discretize: bool = True,
) -> Tensor:
    """Each sample's nearest wrong class: the prediction of ``reference`` on an adversarial image.

    FGSM (``iterations=1``, ``step=None`` meaning ``step=bound``) or L-inf PGD without random
    start: ``iterations`` times ``x <- proj_bound(x + step * sign(grad_x CE(reference(x), y)))``,
    in pixel space (``pixels = images * std + mean``), clipped to ``[0, 1]`` and, if
    ``discretize``, rounded to multiples of 1/255 (their ``AttackBase.clamper``).

    The gradient is taken with :func:`torch.autograd.grad` with respect to the images alone, so
    no parameter's ``.grad`` is written, whatever ``reference`` is.

    Args:
        reference: maps ``(B, C_in, H, W)`` normalised images to ``(B, C)`` logits; used as it is
            (the caller puts it in eval mode).
        images: ``(B, C_in, H, W)`` normalised images.
        labels: ``(B,)`` true labels.
        bound: L-inf radius of the perturbation in pixel units (``[0, 1]`` scale).
        mean: ``(1, C_in, 1, 1)`` per-channel mean used to normalise the images.
        std: ``(1, C_in, 1, 1)`` per-channel std used to normalise the images.
        step: pixel step per iteration (PGD); None: ``bound`` (FGSM).
        iterations: signed gradient steps.
        discretize: round adversarial pixels to the 8-bit grid.

    Returns:
        ``(B,)`` int64 predicted classes of the adversarial images (no gradient).
    """
    step_size = bound if step is None else step
    natural = (images.detach() * std + mean).clamp(0.0, 1.0)  # (B, C_in, H, W) pixels
    pixels = natural.clone()
    for _ in range(iterations):
        pixels.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(reference((pixels - mean) / std), labels)
            (gradient,) = torch.autograd.grad(loss, pixels)
        moved = pixels.detach() + step_size * gradient.sign()
        # Project onto the bound ball around the clean image, then onto valid pixels.
        moved = natural + (moved - natural).clamp(-bound, bound)
        pixels = moved.clamp(0.0, 1.0)
        if discretize:
            pixels = torch.round(pixels * PIXEL_LEVELS) / PIXEL_LEVELS
    with torch.no_grad():
        adversarial_logits: Tensor = reference((pixels - mean) / std)  # (B, C)
    return adversarial_logits.argmax(dim=1)


class BoundaryShrinkOptions(StrictModel):
    """Boundary Shrink's attack; defaults are the authors' (Chen et al., CVPR 2023,
    Boundary-Unlearning-Code ``boundary_unlearning.py``, ``boundary_shrink``: FGSM, bound 0.1)."""

    attack: Literal["fgsm", "pgd"] = "fgsm"
    """FGSM (the paper's) or their alternative L-inf PGD."""
    bound: float = Field(0.1, gt=0, le=1)
    """L-inf radius of the perturbation in pixel units (``[0, 1]`` scale)."""
    pgd_step: float = Field(8 / 255, gt=0, le=1)
    """PGD only: pixel step per iteration."""
    pgd_iterations: int = Field(5, ge=1)
    """PGD only: number of signed gradient steps."""
    freeze_batchnorm: bool = False
    """Keep BatchNorm's running statistics fixed; their code fine-tunes in train mode, so the
    statistics are re-estimated on forget-only batches (see the module docstring)."""


@register_method("boundary_shrink")
class BoundaryShrink(LoopMethod):
    """Fine-tune the clean forget samples towards their nearest wrong class, found by an
    adversarial attack on a frozen copy of the original."""

    Options: ClassVar[type[StrictModel]] = BoundaryShrinkOptions
    scenarios: ClassVar[tuple[Scenario, ...]] = ("class",)
    uses_retain: ClassVar[bool] = False
    # Chen et al. (CVPR 2023), their Boundary-Unlearning-Code boundary_unlearning.py
    # (boundary_shrink: FGSM bound 0.1, poison_epoch 10, SGD lr 1e-5 momentum 0.9, no weight
    # decay) and main.py (--batch_size 64). Fixed schedule: 10 passes over the forget set.
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        "class": MethodDefaults(
            batch_size=64,
            optimizer=OptimizerConfig(name="sgd", lr=1e-5, momentum=0.9, weight_decay=0.0),
            stopping=StoppingConfig(rule="none", eval_set="validation", max_passes=10),
        )
    }

    def __init__(self, options: StrictModel) -> None:
        super().__init__(options)
        self.reference: Classifier | None = None
        self._mean: Tensor | None = None
        self._std: Tensor | None = None

    @property
    def settings(self) -> BoundaryShrinkOptions:
        assert isinstance(self.options, BoundaryShrinkOptions)
        return self.options

    def freeze_batchnorm(self) -> bool:
        return self.settings.freeze_batchnorm

    def prepare(self, model: Classifier, task: UnlearningTask) -> None:
        # The attack runs on the original throughout (their test_model), not on the model
        # being fine-tuned: the nearest wrong class is a property of the original boundary.
        self.reference = frozen_copy(model)
        like = next(model.parameters())
        self._mean, self._std = normalization_tensors(task.data.mean, task.data.std, like)

    def nearest_labels(self, images: Tensor, labels: Tensor) -> Tensor:
        """``(B,)`` nearest wrong classes of forget images ``(B, C_in, H, W)``."""
        assert self.reference is not None and self._mean is not None and self._std is not None
        pgd = self.settings.attack == "pgd"
        return nearest_wrong_labels(
            self.reference,
            images,
            labels,
            bound=self.settings.bound,
            mean=self._mean,
            std=self._std,
            step=self.settings.pgd_step if pgd else None,
            iterations=self.settings.pgd_iterations if pgd else 1,
        )

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        assert batch.forget_images is not None and batch.forget_labels is not None
        targets = self.nearest_labels(batch.forget_images, batch.forget_labels)  # (Bf,)
        shrink_ce = F.cross_entropy(model(batch.forget_images), targets)
        moved = (targets != batch.forget_labels).float().mean()
        return LossTerms(shrink_ce, {"shrink_ce": shrink_ce.detach(), "attack_success": moved})

    def finish(self, model: Classifier) -> Classifier:
        self.reference = None  # release the copy
        return model


class ShadowUnit(nn.Module):
    """One extra output unit beside a model's output layer (the paper's shadow class).

    While attached, a forward hook on the output layer keeps its latest input ``h`` ``(B, D)``,
    and :meth:`logits` returns ``h @ weight^T + bias`` ``(B, 1)``, the logit the widened layer
    ``Linear(D, C + 1)`` of the paper would give for class ``C``. The model's own parameters and
    outputs are untouched, so detaching the unit is the paper's pruning.

    Args:
        layer: the model's output layer, ``Linear(D, C)``.
        generator: source of the Xavier-normal initial weight (their ``init_params`` on the
            widened layer: std ``sqrt(2 / (D + C + 1))``); the bias starts at zero.
    """

    def __init__(self, layer: nn.Linear, *, generator: torch.Generator) -> None:
        super().__init__()
        fan_in, fan_out = layer.in_features, layer.out_features + 1
        std = math.sqrt(2.0 / (fan_in + fan_out))
        weight = torch.randn(1, fan_in, generator=generator, dtype=layer.weight.dtype) * std
        self.weight = nn.Parameter(weight.to(layer.weight.device))  # (1, D)
        self.bias = nn.Parameter(
            torch.zeros(1, dtype=layer.weight.dtype, device=layer.weight.device)
        )
        self._layer_input: Tensor | None = None
        self._handle: RemovableHandle | None = layer.register_forward_hook(self._record)

    def _record(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
        self._layer_input = inputs[0]

    @property
    def attached(self) -> bool:
        """Whether the hook on the output layer is still registered."""
        return self._handle is not None

    def logits(self) -> Tensor:
        """``(B, 1)`` shadow logits of the batch the model last ran forward on."""
        if self._layer_input is None:
            raise RuntimeError("run the model forward before asking for the shadow logits")
        return F.linear(self._layer_input, self.weight, self.bias)

    def detach_from_model(self) -> None:
        """Prune: remove the hook and forget the recorded input."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._layer_input = None


class BoundaryExpandingOptions(StrictModel):
    """Boundary Expanding's one knob besides the optimizer and the number of passes (its
    shadow-class fine-tuning epochs, ``stopping.max_passes``)."""

    freeze_batchnorm: bool = False
    """Keep BatchNorm's running statistics fixed; their code fine-tunes in train mode on batches
    of the forgotten class alone, so the statistics drift to that class's (module docstring) and
    the retained classes are normalised with them."""


@register_method("boundary_expanding")
class BoundaryExpanding(LoopMethod):
    """Fine-tune the forget samples towards an extra shadow class, then prune it."""

    Options: ClassVar[type[StrictModel]] = BoundaryExpandingOptions
    scenarios: ClassVar[tuple[Scenario, ...]] = ("class",)
    uses_retain: ClassVar[bool] = False
    # Chen et al. (CVPR 2023), their Boundary-Unlearning-Code boundary_unlearning.py
    # (boundary_expanding: finetune_epochs 10, SGD lr 1e-5 momentum 0.9, no weight decay) and
    # main.py (--batch_size 64). Fixed schedule: 10 passes over the forget set.
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        "class": MethodDefaults(
            batch_size=64,
            optimizer=OptimizerConfig(name="sgd", lr=1e-5, momentum=0.9, weight_decay=0.0),
            stopping=StoppingConfig(rule="none", eval_set="validation", max_passes=10),
        )
    }

    def __init__(self, options: StrictModel) -> None:
        super().__init__(options)
        self.shadow: ShadowUnit | None = None

    def freeze_batchnorm(self) -> bool:
        assert isinstance(self.options, BoundaryExpandingOptions)
        return self.options.freeze_batchnorm

    def prepare(self, model: Classifier, task: UnlearningTask) -> None:
        self.shadow = ShadowUnit(
            final_linear(model, purpose="boundary_expanding widens it"), generator=task.generator
        )

    def trainable_parameters(self, model: Classifier) -> list[nn.Parameter]:
        # Their optimizer covers the whole widened model: every original parameter and the
        # shadow row of the widened output layer.
        assert self.shadow is not None
        return [*model.parameters(), *self.shadow.parameters()]

    def expanded_logits(self, model: Classifier, images: Tensor) -> Tensor:
        """``(B, C + 1)`` logits of the widened model: the model's ``C`` then the shadow's."""
        assert self.shadow is not None
        logits = model(images)  # (B, C); the hook records the output layer's input
        return torch.cat([logits, self.shadow.logits()], dim=1)

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        assert batch.forget_images is not None
        logits = self.expanded_logits(model, batch.forget_images)  # (Bf, C + 1)
        shadow_class = torch.full(
            (logits.shape[0],), logits.shape[1] - 1, dtype=torch.long, device=logits.device
        )
        expand_ce = F.cross_entropy(logits, shadow_class)
        return LossTerms(expand_ce, {"shadow_ce": expand_ce.detach()})

    def finish(self, model: Classifier) -> Classifier:
        # Pruning the shadow unit: the model's C outputs were never widened, so only the hook
        # and the shadow row go.
        if self.shadow is not None:
            self.shadow.detach_from_model()
        return model
