"""One-shot weight edits: Fisher forgetting and Selective Synaptic Dampening.

Neither algorithm is a loop of optimizer steps: each estimates a diagonal curvature of the loss
once and edits every weight once from it. Their :meth:`run` therefore does not use the shared
unlearning loop; it reuses the engine's helpers (device placement, seeded batch orders) and
reports ``seconds`` as the wall-clock of the estimate plus the edit.

``fisher`` — Fisher forgetting (Golatkar, Achille, Soatto, "Eternal Sunshine of the Spotless Net:
Selective Forgetting in Deep Networks", CVPR 2020; reference code AdityaGolatkar/SelectiveForgetting
``main.ipynb`` (``hessian`` / ``get_mean_var``), reproduced as ``fisher_new`` in
OPTML-Group/Unlearn-Saliency and ``FisherForgetting`` in if-loops/selective-synaptic-dampening).
The weights are replaced by a sample of the Gaussian "scrubbing" posterior
``theta ~ N(mu, var)``, ``var ~ alpha * F^-1`` with ``F`` the diagonal Fisher information of the
retain set, so that directions the retain set does not pin down are destroyed by noise:

1. ``F = (1/N) sum_n sum_y p(y|x_n) (d log p(y|x_n) / d theta)^2`` over the retain samples, in
   eval mode. Like the reference ``hessian`` this is the exact expectation over the model's own
   predictive distribution (every class ``y``, weighted by ``p(y|x)``), neither a sampled label
   nor the true label. conun vectorises the per-sample Jacobians with ``torch.func`` instead of
   the reference's one-sample-one-class backward loop (same numbers, about C x N times fewer
   Python steps).
2. ``var = alpha * min(1 / (F + 1e-8), 1e3)``, clamped to ``1e2`` instead for the output layer;
   for tensors of two or more dimensions ``var`` is averaged over dimension 1 (the input
   units/channels) and broadcast back, as ``get_mean_var`` does; ``mu`` is the trained weight.
3. Class scenario only: the forgotten classes' output rows get ``mu = 0`` and ``var = 1e-4``.
4. The output layer's variance, and that of every one-dimensional tensor (BatchNorm affine and
   biases), is multiplied by 10; then ``theta = mu + sqrt(var) * eps``, ``eps ~ N(0, 1)`` drawn
   from the run's seeded generator.

"Output layer" is the parameters of ``model.head`` whose first dimension is ``num_classes`` (the
reference picks every tensor with ``size(0) == num_classes``, which in its models is the same
thing, but in general can also catch a hidden layer that happens to have C units).

``ssd`` — Selective Synaptic Dampening (Foster, Schoepf, Brintrup, "Fast Machine Unlearning
Without Retraining Through Selective Synaptic Dampening", AAAI 2024; official code
if-loops/selective-synaptic-dampening, ``ssd.py`` ``ParameterPerturber``). With the model in
eval mode, importances are the mean over mini-batches of the squared gradient of each batch's
mean cross-entropy (their ``calc_importance``), ``[I]_u`` on the forget set and ``[I]_D`` on the
full training data ``D`` (forget + retain; the held-out validation split is not training data).
Every parameter entry with ``[I]_u > alpha * [I]_D`` (selection weighting) is multiplied by
``beta = min(lambda * [I]_D / [I]_u, 1)`` (dampening constant); all other entries stay exactly
as they were. Defaults alpha = 10, lambda = 1 for both scenarios (their ``forget_*_main.py`` for
ResNet-18: full-class, sub-class and random forgetting), mini-batches of 64 for the class
scenario and 128 for the sample scenario (the ``-b`` defaults of their class and random mains).

Departures from the reference code:

- ``fisher``: the noise comes from the run's generator, not the global RNG, so a seed
  reproduces a run. The Fisher is estimated on at most ``max_samples`` = 5000 retain samples (a
  random subset drawn from the same generator) instead of the whole retain set: on this
  project's CPU the whole Fashion-MNIST retain set takes ~6 min, several times retraining;
  ``max_samples: null`` restores the reference behaviour.
- ``ssd``: batches are drawn in a seeded random order and mix classes (``class_batches:
  false``). Their class-scenario loaders are unshuffled concatenations of per-class lists, so
  their ``D`` batches there are mostly single-class; mixed batches estimate the importance of
  ``D`` as the paper defines it (an expectation over ``D``), independently of how a dataset is
  sorted. ``class_batches: true`` reproduces their batch composition; on digits (class 5,
  seeds 0-3) it left the class unforgotten in 3 of 4 seeds, mixed batches forgot it in all 4.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from conun.config import StrictModel
from conun.data.batching import shuffled_batches
from conun.data.splits import Scenario
from conun.distributed.device import prepare_model, to_device
from conun.methods.base import (
    MethodDefaults,
    MethodOutcome,
    UnlearningMethod,
    UnlearningTask,
    register_method,
)
from conun.models.base import Classifier

logger = logging.getLogger(__name__)

FISHER_EPSILON = 1e-8
"""Added to ``F`` before inverting (reference ``get_mean_var``)."""
MAX_VARIANCE = 1e3
"""Upper bound of ``1 / F`` for hidden layers (reference ``get_mean_var``)."""
MAX_OUTPUT_VARIANCE = 1e2
"""Upper bound of ``1 / F`` for the output layer (reference ``get_mean_var``)."""
FORGOTTEN_ROW_VARIANCE = 1e-4
"""Variance of a forgotten class's output row around 0, before the output layer's x10."""
VARIANCE_BOOST = 10.0
"""Factor on the variance of the output layer and of one-dimensional tensors."""


# --------------------------------------------------------------------------------------------
# Fisher forgetting
# --------------------------------------------------------------------------------------------


def diagonal_fisher(model: nn.Module, images: Tensor, *, chunk_size: int) -> dict[str, Tensor]:
    """Diagonal Fisher information ``(1/N) sum_n sum_y p(y|x_n) (d log p(y|x_n)/d theta)^2``.

    The model is used in its current mode (the caller puts it in eval mode, as the reference
    does, so that BatchNorm uses running statistics and each sample's gradient is its own).

    Args:
        model: maps ``(B, C_in, H, W)`` to ``(B, C)`` logits.
        images: ``(N, C_in, H, W)`` samples, already on the model's device.
        chunk_size: samples whose per-sample Jacobians are held at once; memory grows as
            ``chunk_size * C * P`` floats for ``P`` parameter entries.

    Returns:
        Per named parameter, a tensor of its shape: the mean over the ``N`` samples.
    """
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def log_probabilities(params: dict[str, Tensor], image: Tensor) -> Tensor:
        # One sample at a time (vmap adds the batch): ``(C_in, H, W)`` -> ``(C,)``.
        logits = functional_call(model, (params, buffers), (image.unsqueeze(0),))
        return F.log_softmax(logits, dim=1).squeeze(0)

    # Per sample: d log p(y|x) / d theta for every class y, i.e. name -> (B, C, *shape).
    per_sample_jacobian: Callable[..., dict[str, Tensor]] = vmap(
        jacrev(log_probabilities), in_dims=(None, 0)
    )
    totals = {name: torch.zeros_like(p) for name, p in parameters.items()}
    with torch.no_grad():
        for start in range(0, images.shape[0], chunk_size):
            chunk = images[start : start + chunk_size]
            jacobians = per_sample_jacobian(parameters, chunk)
            probabilities = F.softmax(model(chunk), dim=1)  # (B, C)
            weights = probabilities.reshape(-1)  # (B * C,)
            for name, jacobian in jacobians.items():
                # sum_b sum_y p_by * J_by^2 as one matrix-vector product over the (B * C) rows of
                # the squared Jacobian, squared in place: the Jacobian is the one big tensor here
                # (B * C * numel floats), so it is never copied.
                squared = jacobian.pow_(2).reshape(weights.numel(), -1)  # (B * C, numel)
                totals[name] += (weights @ squared).view_as(totals[name])
    return {name: total / images.shape[0] for name, total in totals.items()}


def output_layer_names(model: Classifier) -> set[str]:
    """Names (as in ``model.named_parameters()``) of the output layer's tensors: those of
    ``model.head`` whose first dimension is ``num_classes`` (the final linear weight and bias).

    Raises:
        ValueError: the model exposes no ``head`` module, or the head has no such tensor.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise ValueError(
            f"fisher needs the model's output layer: {type(model).__name__} has no `head` "
            "module (registry models and wrap_model(..., head=...) models have one)"
        )
    head_tensors = {id(p) for p in head.parameters() if p.ndim >= 1}
    names = {
        name
        for name, p in model.named_parameters()
        if id(p) in head_tensors and p.shape[0] == model.num_classes
    }
    if not names:
        raise ValueError(
            f"fisher: no tensor of {type(model).__name__}.head has {model.num_classes} rows "
            "(one per class)"
        )
    return names


def fisher_posterior(
    weight: Tensor,
    fisher: Tensor,
    *,
    alpha: float,
    output_layer: bool,
    forget_classes: tuple[int, ...] = (),
) -> tuple[Tensor, Tensor]:
    """Mean and variance of the Gaussian the weight is resampled from (reference
    ``get_mean_var``).

    Args:
        weight: the trained tensor, any shape ``(O, ...)``.
        fisher: its diagonal Fisher information, same shape.
        alpha: the noise scale (``var ~ alpha / F``).
        output_layer: ``weight`` is a tensor of the output layer (row ``c`` = class ``c``).
        forget_classes: classes whose output rows are reset to ``N(0, 1e-4)`` (before the
            output layer's x10); only used when ``output_layer``.

    Returns:
        ``(mean, variance)``, both shaped like ``weight``.
    """
    variance = (1.0 / (fisher + FISHER_EPSILON)).clamp(max=MAX_VARIANCE)
    if output_layer:
        variance = variance.clamp(max=MAX_OUTPUT_VARIANCE)
    variance = alpha * variance
    if weight.ndim > 1:
        # One variance per (output unit, kernel position): the mean over the input dimension.
        variance = variance.mean(dim=1, keepdim=True).expand_as(weight).clone()
    mean = weight.detach().clone()
    if output_layer:
        rows = list(forget_classes)
        mean[rows] = 0.0
        variance[rows] = FORGOTTEN_ROW_VARIANCE
        variance = variance * VARIANCE_BOOST
    elif weight.ndim == 1:
        variance = variance * VARIANCE_BOOST  # BatchNorm affine and biases
    return mean, variance


class FisherOptions(StrictModel):
    """Hyperparameters of Fisher forgetting, for both scenarios: ``alpha`` is Golatkar et al.'s
    (CVPR 2020, AdityaGolatkar/SelectiveForgetting ``main.ipynb``, ``hessian``,
    ``get_mean_var``); ``max_samples`` is conun's cap for the CPU (theirs: the whole retain
    set)."""

    alpha: float = Field(1e-6, gt=0)
    """Noise scale: ``var = alpha / F`` (reference ``alpha = 1e-6``)."""
    max_samples: int | None = Field(5000, ge=1)
    """Retain samples of the Fisher estimate (a random subset); None: the whole retain set (the
    reference). The exact Fisher costs C backward passes per sample: ~5-8 ms per sample for
    ``small_cnn`` on one CPU core, i.e. ~6 min for Fashion-MNIST's 48,600 retain samples (more
    than retraining, 76 s); 5000 samples take ~40 s and cover all of digits' retain set."""


@register_method("fisher")
class FisherForgetting(UnlearningMethod):
    """Resample every weight from ``N(theta, alpha * F_retain^-1)`` (one shot; see the module
    docstring). ``batch_size`` is the number of samples vectorised at once in the estimate."""

    Options: ClassVar[type[StrictModel]] = FisherOptions
    # Both scenarios: Golatkar et al. (CVPR 2020), AdityaGolatkar/SelectiveForgetting
    # main.ipynb (`hessian`, `get_mean_var`, alpha = 1e-6). The reference uses the whole retain
    # set; conun caps it at 5000 samples for the CPU (see the module docstring). One shot, no
    # optimizer steps (optimizer and stopping unused): batch_size is the number of samples whose
    # per-sample Jacobians are computed at once; small chunks were fastest on the CPU (5 ms per
    # sample at 8 vs 12 ms at 32, small_cnn).
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        scenario: MethodDefaults(batch_size=8) for scenario in ("class", "sample")
    }

    def run(self, task: UnlearningTask) -> MethodOutcome:
        assert isinstance(self.options, FisherOptions)
        config, split = task.config, task.split
        device = torch.device(config.device)
        model = task.model
        forget_classes = split.classes if split.scenario == "class" else ()
        started = time.perf_counter()
        prepare_model(model, device, channels_last=config.channels_last)
        model.eval()  # reference ``hessian``: BatchNorm on running statistics
        output_names = output_layer_names(model)
        retain = split.retain
        if self.options.max_samples is not None and self.options.max_samples < retain.numel():
            chosen = torch.randperm(retain.numel(), generator=task.generator)
            retain = retain[chosen[: self.options.max_samples]]
        images = to_device(task.data.train.images[retain], device, channels_last=False)
        fisher = diagonal_fisher(model, images, chunk_size=self.batch_size(config, split.scenario))
        fisher_seconds = time.perf_counter() - started
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                mean, variance = fisher_posterior(
                    parameter,
                    fisher[name],
                    alpha=self.options.alpha,
                    output_layer=name in output_names,
                    forget_classes=forget_classes,
                )
                # Drawn on the CPU generator so that a seed gives the same noise on any device.
                noise = torch.randn(parameter.shape, generator=task.generator)
                parameter.copy_(mean + variance.sqrt() * noise.to(parameter))
        seconds = time.perf_counter() - started
        logger.info(
            "fisher: %d retain samples, %.2fs (Fisher %.2fs)",
            retain.numel(),
            seconds,
            fisher_seconds,
        )
        return MethodOutcome(
            model=model,
            seconds=seconds,
            extra={"fisher_samples": int(retain.numel()), "fisher_seconds": fisher_seconds},
        )


# --------------------------------------------------------------------------------------------
# Selective Synaptic Dampening
# --------------------------------------------------------------------------------------------


def batch_gradient_importance(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    indices: Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
    channels_last: bool,
    by_class: bool = False,
) -> dict[str, Tensor]:
    """SSD importance (their ``calc_importance``): the mean over mini-batches ``b`` of
    ``(d CE_b / d theta)^2``, ``CE_b`` the mean cross-entropy of batch ``b``.

    The model is used in its current mode (the caller puts it in eval mode, as the reference
    does).

    Args:
        model: the classifier, on its device.
        images: ``(N, C_in, H, W)`` the dataset's images (any device).
        labels: ``(N,)`` their labels.
        indices: ``(M,)`` the samples to use, visited once in a random order.
        batch_size: samples per mini-batch (the last may be smaller).
        generator: source of the batch order.
        channels_last: memory format of the batches.
        by_class: every mini-batch holds samples of one class only (see
            :func:`_importance_batches`).

    Returns:
        Per named parameter, a non-negative tensor of its shape.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    device = named[0][1].device
    totals = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    batches = 0
    for index in _importance_batches(labels, indices, batch_size, generator, by_class):
        batch = to_device(images[index], device, channels_last=channels_last)
        loss = F.cross_entropy(model(batch), labels[index].to(device))
        gradients = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        for (name, _), gradient in zip(named, gradients, strict=True):
            if gradient is not None:
                totals[name] += gradient.pow(2)
        batches += 1
    return {name: total / max(batches, 1) for name, total in totals.items()}


def _importance_batches(
    labels: Tensor,
    indices: Tensor,
    batch_size: int,
    generator: torch.Generator,
    by_class: bool,
) -> Iterator[Tensor]:
    """Index batches visiting ``indices`` once: mixed batches in a random order, or, with
    ``by_class``, each class's samples cut into batches of their own (classes and samples in a
    random order), as the unshuffled per-class loaders of SSD's class-scenario code produce."""
    if not by_class:
        yield from shuffled_batches(indices, batch_size, generator=generator)
        return
    classes = labels[indices]
    for label in classes.unique()[
        torch.randperm(int(classes.unique().numel()), generator=generator)
    ]:
        yield from shuffled_batches(indices[classes == label], batch_size, generator=generator)


@torch.no_grad()
def dampen_(
    parameters: Mapping[str, Tensor],
    forget_importance: Mapping[str, Tensor],
    full_importance: Mapping[str, Tensor],
    *,
    selection_weighting: float,
    dampening_constant: float,
) -> int:
    """The SSD edit, in place: where ``I_u > alpha * I_D``, multiply the weight by
    ``min(lambda * I_D / I_u, 1)``; elsewhere leave it untouched.

    Args:
        parameters: the tensors to edit, by name.
        forget_importance: ``I_u`` per name, same shapes.
        full_importance: ``I_D`` per name, same shapes.
        selection_weighting: alpha.
        dampening_constant: lambda.

    Returns:
        The number of selected (dampened) entries.
    """
    selected_total = 0
    for name, parameter in parameters.items():
        forget, full = forget_importance[name], full_importance[name]
        selected = forget > selection_weighting * full  # implies forget > 0: no 0/0 below
        beta = (dampening_constant * full[selected] / forget[selected]).clamp(max=1.0)
        # Boolean-mask indexing writes only the selected entries; the rest keep their bits.
        parameter[selected] = parameter[selected] * beta
        selected_total += int(selected.sum())
    return selected_total


class SSDOptions(StrictModel):
    """Hyperparameters of SSD; defaults are Foster et al.'s for ResNet-18 (AAAI 2024,
    if-loops/selective-synaptic-dampening: selection_weighting (alpha) 10, dampening_constant
    (lambda) 1), for both scenarios."""

    selection_weighting: float = Field(10.0, gt=0)
    """alpha: an entry is selected when ``I_u > alpha * I_D``."""
    dampening_constant: float = Field(1.0, gt=0)
    """lambda: a selected entry is multiplied by ``min(lambda * I_D / I_u, 1)``."""
    class_batches: bool = False
    """Importance mini-batches hold one class each (their class-scenario loaders: unshuffled
    concatenations of per-class lists); False: mixed random batches (their random-forgetting
    loaders)."""


@register_method("ssd")
class SelectiveSynapticDampening(UnlearningMethod):
    """Dampen the weights far more important to the forget set than to the training data (one
    shot; see the module docstring). ``batch_size`` is the importance mini-batch size."""

    Options: ClassVar[type[StrictModel]] = SSDOptions
    # Foster et al. (AAAI 2024), if-loops/selective-synaptic-dampening for ResNet-18:
    # selection_weighting (alpha) 10, dampening_constant (lambda) 1, importance mini-batches of
    # 64 (class: src/forget_full_class_main.py) and 128 (sample: src/forget_random_main.py),
    # their -b defaults. One shot: no optimizer steps (optimizer and stopping unused).
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        "class": MethodDefaults(batch_size=64),
        "sample": MethodDefaults(batch_size=128),
    }

    def run(self, task: UnlearningTask) -> MethodOutcome:
        assert isinstance(self.options, SSDOptions)
        config, split, train = task.config, task.split, task.data.train
        device = torch.device(config.device)
        model = task.model
        batch_size = self.batch_size(config, split.scenario)
        started = time.perf_counter()
        prepare_model(model, device, channels_last=config.channels_last)
        model.eval()  # their ssd_tuning: importances with BatchNorm on running statistics
        forget_importance, full_importance = (
            batch_gradient_importance(
                model,
                train.images,
                train.labels,
                indices,
                batch_size=batch_size,
                generator=task.generator,
                channels_last=config.channels_last,
                by_class=self.options.class_batches,
            )
            # I_u on the forget set, then I_D on all the training data the model saw.
            for indices in (split.forget, torch.cat([split.retain, split.forget]))
        )
        parameters = {name: p for name, p in model.named_parameters()}
        selected = dampen_(
            parameters,
            forget_importance,
            full_importance,
            selection_weighting=self.options.selection_weighting,
            dampening_constant=self.options.dampening_constant,
        )
        seconds = time.perf_counter() - started
        total = sum(p.numel() for p in parameters.values())
        logger.info("ssd: dampened %d of %d weights in %.2fs", selected, total, seconds)
        return MethodOutcome(
            model=model,
            seconds=seconds,
            extra={"dampened_weights": selected, "dampened_fraction": selected / total},
        )
