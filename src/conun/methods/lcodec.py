"""L-CODEC: conditionally independent, block-restricted Newton unlearning.

Mehta, Pal, Singh, Ravi, "Deep Unlearning via Randomized Conditionally Independent Hessians"
(CVPR 2022; official code vsingh-group/LCODEC-deep-unlearning, ``scrub/scrub_tools.py``
``inp_perturb``, ``NewtonScrubStep``, ``NoisyReturn``; ``codec/torch_codec.py``,
``codec/torch_foci.py``). A Newton (influence-function) removal step over *all* weights needs the
inverse of a ``d x d`` Hessian; L-CODEC makes it affordable by updating only the few output units
(rows of Linear weights, filters of Conv2d weights, with their biases) whose activations carry the
information about the loss of the samples being removed, a Markov blanket found with FOCI on the
conditional-dependence coefficient CODEC of Azadkia & Chatterjee (Annals of Statistics 2021).

The forget set is removed one *removal batch* at a time (``batch_size`` samples, the
``scrub_batch_size`` of their ``multi_scrub.py``), in a seeded random order. For each batch ``U``
of ``m`` samples, with the model in eval mode throughout (their ``ActivationsHook`` puts it in eval
mode; BatchNorm uses its running statistics, so each sample's loss is its own):

1. **Input perturbation.** ``perturbations`` noisy copies ``x + sigma * N(0, 1)`` of the batch
   (``sigma = perturbation_std``). For each copy: the mean over the batch (and over pixels, for a
   convolution) of every output unit of every Linear and Conv2d layer, in module order, gives one
   row of the feature matrix ``A`` ``(perturbations, units)``; the batch's mean cross-entropy is
   the response ``y`` ``(perturbations,)``.
2. **Selection (L-FOCI).** FOCI orders the units: first the one with the largest
   ``T_n(y, A_j)``, then repeatedly the one with the largest conditional coefficient
   ``T_n(y, A_j | A_selected)``, stopping as soon as that is ``<= 0`` (their ``foci`` with
   ``earlyStop``). The selected parameters are the weight rows (and bias entries) of the
   selected units: a vector ``theta`` of ``P`` entries.
3. **Newton removal step** (Sekhari et al., "Remember What You Want to Forget", NeurIPS 2021, as
   their ``NewtonScrubStep`` with ``HessType = Sekhari``), on ``theta`` only::

       theta <- theta + 1/(n - m) * (H + lambda I)^-1 * sum_{u in U} grad_theta loss_u

   ``n`` is the number of training samples the model still reflects (retain set plus the forget
   samples not removed yet), ``H`` the Hessian, with respect to ``theta``, of the mean
   cross-entropy over the ``n - m`` samples that remain after this removal, and ``lambda`` the
   damping ``l2_reg`` (their ``--l2_reg``, the weight decay the original was trained with).
4. **Noise** (their ``NoisyReturn``, Sekhari et al. Theorem 3): when ``noise`` is on (off by
   default, see the departures), Gaussian
   noise of standard deviation ``(gamma / epsilon) * sqrt(2 ln(1.25 / delta))``,
   ``gamma = 2 M L^2 m^2 / (lambda^3 n^2)``, is added to ``theta``.

Options and defaults: their ``cifar_scrub.sh`` (``n_perturbations 1000``, ``l2_reg 0.01``,
``epsilon 0.1``, ``delta 0.01``, ``selectionType FOCI``, ``FOCIType full``, ``HessType
Sekhari``), the perturbation scale 0.1 and the constants ``M = 0.25``, ``L = 1`` hard-coded in
``inp_perturb`` / ``NoisyReturn``.

Not a loop of optimizer steps, so :meth:`LCodec.run` implements the algorithm itself (reusing the
engine's device placement and seeded batch order) and reports ``seconds`` as its wall-clock.

Departures from the authors' code, and why:

- **Exact Hessian.** Their ``FD`` approximation needs the full-data gradients and weights saved at
  the last two training epochs, which a conun model does not carry (and its sample Hessian is
  built from the same gradient twice, a bug that makes it zero). conun uses the exact Hessian
  of the remaining data's mean loss on the selected parameters, through exact Hessian-vector
  products with ``torch.func`` (forward-over-reverse). By default (``solver: minres``) the
  Newton direction ``(H + lambda I)^-1 g`` is solved by MINRES on those products, without
  forming ``H``: ~20-60 products instead of the ``P`` (hundreds to thousands) that forming it
  takes, the same step to the solver's tolerance (tested against the formed matrix), and no
  limit on ``P``. ``solver: matrix`` forms the ``P x P`` Hessian and solves it in float64, as
  their code inverts theirs; a selection above ``max_selected_params`` then raises
  :class:`SelectionTooLargeError` instead of degrading.
- **Sekhari's step for a batch.** Their code steps by ``1/(n-1)`` times the batch's *mean*
  gradient with ``n`` fixed at the original training-set size; conun uses Sekhari's formula,
  ``1/(n-m)`` times the *sum* of the ``m`` gradients with ``n`` the current size, which is what
  makes the step exact for a quadratic loss (tested), and ``m``, ``n`` in the noise likewise
  (their calls pass ``m = 1``, exact for their default one-sample removals).
- **Noise off by default.** Its scale grows as ``m^2 / n^2``: with their constants it is
  ``sigma ~ 6e-3`` for one sample out of CIFAR-10's 50,000 (their setting) but ``~10`` for one
  sample and ``~4e4`` for a 64-sample batch out of digits' ~1,200 (measured: test accuracy 0.98 ->
  0.11). ``noise: true`` restores it.
- **Hessian samples.** ``hessian_samples`` (preset: 256) averages the exact Hessian over a seeded
  random subset of the remaining samples, an unbiased estimate; ``null`` uses all of them (on
  digits a ~3,000-parameter selection then costs ~2 minutes per removal batch on 2 CPU cores).
- **No skipping.** Their ``multi_scrub.py`` reverts a removal that drops validation accuracy by
  more than 5 points and moves on to another random sample; a conun forget request names its
  samples, so every batch is removed.
- CODEC's ranks follow Azadkia & Chatterjee's definition with ties (``R_i = #{j: y_j <= y_i}``);
  their code breaks ties by sort order. The two agree for continuous responses (the loss).
- Noise for the perturbations and the Gaussian mechanism comes from the run's seeded generator.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from scipy.sparse.linalg import LinearOperator, minres
from torch import Tensor, nn
from torch.func import functional_call, grad

from conun.config import StrictModel
from conun.data.batching import shuffled_batches
from conun.data.splits import Scenario
from conun.distributed.device import prepare_model, to_device
from conun.methods.base import MethodOutcome, UnlearningMethod, UnlearningTask, register_method

logger = logging.getLogger(__name__)

NEIGHBOUR_CHUNK = 16
"""Candidate features whose ``(n, n)`` distance matrices are held at once in FOCI."""


class SelectionTooLargeError(RuntimeError):
    """The selected parameters are too many for an exact Hessian under the configured budget."""


# --------------------------------------------------------------------------------------------
# CODEC and FOCI (Azadkia & Chatterjee, "A simple measure of conditional dependence", 2021)
# --------------------------------------------------------------------------------------------


def _as_columns(values: Tensor) -> Tensor:
    """``(n,)`` or ``(n, d)`` -> ``(n, d)``."""
    return values.unsqueeze(1) if values.ndim == 1 else values


def _nearest_neighbours(squared_distances: Tensor) -> Tensor:
    """Index of each point's nearest other point.

    Args:
        squared_distances: ``(..., n, n)`` squared distances (modified: the diagonal is set to
            infinity so that a point is not its own neighbour).

    Returns:
        ``(..., n)`` int64 indices; among equally near points, the first.
    """
    squared_distances.diagonal(dim1=-2, dim2=-1).fill_(math.inf)
    return squared_distances.argmin(dim=-1)


def _squared_distances(points: Tensor) -> Tensor:
    """``(n, d)`` -> ``(n, n)`` squared Euclidean distances (exact differences, not the
    ``|a|^2 + |b|^2 - 2ab`` expansion, so that equal points are at distance exactly 0)."""
    return (points.unsqueeze(1) - points.unsqueeze(0)).pow(2).sum(dim=-1)


def _ranks(response: Tensor) -> tuple[Tensor, Tensor]:
    """``R_i = #{j: y_j <= y_i}`` and ``L_i = #{j: y_j >= y_i}``, both ``(n,)`` float64."""
    ordered, _ = torch.sort(response)
    n = response.numel()
    at_most = torch.searchsorted(ordered, response, right=True)
    below = torch.searchsorted(ordered, response, right=False)
    return at_most.double(), (n - below).double()


def _check_response(response: Tensor) -> Tensor:
    """The response as ``(n,)``; CODEC is undefined for a constant one."""
    response = response.reshape(-1)
    if response.numel() < 2:
        raise ValueError(f"CODEC needs at least 2 samples, got {response.numel()}")
    if bool((response == response[0]).all()):
        raise ValueError("CODEC is undefined for a constant response (all values equal)")
    return response


def _unconditional_from_neighbours(ranks: Tensor, lower: Tensor, neighbours: Tensor) -> Tensor:
    """``T_n(Y, Z)`` per row of ``neighbours`` ``(k, n)``; ``ranks``, ``lower``: ``R``, ``L``."""
    n = ranks.numel()
    numerator = (n * torch.minimum(ranks, ranks[neighbours]) - lower.pow(2)).sum(dim=-1)
    return numerator / (lower * (n - lower)).sum()


def _conditional_from_neighbours(
    ranks: Tensor, given_neighbours: Tensor, joint_neighbours: Tensor
) -> Tensor:
    """``T_n(Y, Z | X)`` for each row of ``joint_neighbours`` ``(k, n)`` (neighbours in ``(X, Z)``);
    ``given_neighbours`` ``(n,)`` are the neighbours in ``X`` alone."""
    floor = torch.minimum(ranks, ranks[given_neighbours])  # (n,)
    numerator = (torch.minimum(ranks, ranks[joint_neighbours]) - floor).sum(dim=-1)
    denominator = (ranks - floor).sum()
    if denominator == 0:
        # Y is already a function of X's nearest-neighbour graph: Z cannot add anything.
        return torch.zeros_like(numerator)
    return numerator / denominator


def codec(response: Tensor, features: Tensor, given: Tensor | None = None) -> Tensor:
    """Azadkia & Chatterjee's coefficient ``T_n(Y, Z)`` or, with ``given``, ``T_n(Y, Z | X)``.

    ``T_n(Y, Z) = sum_i (n min(R_i, R_M(i)) - L_i^2) / sum_i L_i (n - L_i)`` and
    ``T_n(Y, Z | X) = sum_i (min(R_i, R_M(i)) - min(R_i, R_N(i))) / sum_i (R_i - min(R_i, R_N(i)))``
    with ``R_i = #{j: Y_j <= Y_i}``, ``L_i = #{j: Y_j >= Y_i}``, ``M(i)`` the nearest neighbour of
    sample ``i`` in ``(X, Z)`` (``Z`` alone without ``given``), ``N(i)`` its nearest neighbour in
    ``X``. It tends to 0 when ``Y`` is independent of ``Z`` (given ``X``) and to 1 when ``Y`` is a
    function of ``Z`` (and ``X``). Their ``codec2`` / ``codec3``.

    Args:
        response: ``(n,)`` Y.
        features: ``(n,)`` or ``(n, dz)`` Z.
        given: ``(n,)`` or ``(n, dx)`` X, or None.

    Returns:
        A float64 scalar.
    """
    response = _check_response(response)
    ranks, lower = _ranks(response)
    z = _as_columns(features)
    if given is None:
        neighbours = _nearest_neighbours(_squared_distances(z)).unsqueeze(0)
        return _unconditional_from_neighbours(ranks, lower, neighbours)[0]
    x = _as_columns(given)
    given_neighbours = _nearest_neighbours(_squared_distances(x))
    joint = _nearest_neighbours(_squared_distances(torch.cat([x, z], dim=1))).unsqueeze(0)
    return _conditional_from_neighbours(ranks, given_neighbours, joint)[0]


@dataclass(frozen=True)
class FociResult:
    """What FOCI selected.

    Attributes:
        ordering: feature (column) indices in the order FOCI picked them.
        values: the coefficient of each pick (unconditional for the first, conditional on the
            earlier picks for the rest).
    """

    ordering: list[int]
    values: list[float]


def foci(features: Tensor, response: Tensor, *, early_stop: bool = True) -> FociResult:
    """Feature Ordering by Conditional Independence (their ``torch_foci.foci``).

    The first pick maximises ``T_n(Y, A_j)`` (kept whatever its value, as in their code); each
    further pick maximises ``T_n(Y, A_j | A_picked)``; with ``early_stop`` the search ends when
    the best such value is ``<= 0``. Candidates' distance matrices are computed
    ``NEIGHBOUR_CHUNK`` at a time, from the picked features' distances plus each candidate's own.

    Args:
        features: ``(n, p)`` A.
        response: ``(n,)`` Y.
        early_stop: stop at the first non-positive coefficient (else order all ``p``).

    Returns:
        The picks and their coefficients.
    """
    response = _check_response(response)
    ranks, lower = _ranks(response)
    n, p = features.shape
    picked: list[int] = []
    values: list[float] = []
    base = torch.zeros(n, n, dtype=features.dtype, device=features.device)
    given_neighbours: Tensor | None = None
    while len(picked) < p:
        candidates = [j for j in range(p) if j not in set(picked)]
        scores = torch.empty(len(candidates), dtype=torch.float64)
        for start in range(0, len(candidates), NEIGHBOUR_CHUNK):
            chunk = candidates[start : start + NEIGHBOUR_CHUNK]
            columns = features[:, chunk].T  # (k, n)
            # (k, n, n): distances in (A_picked, A_j) = picked part + candidate part, in place
            # (this is FOCI's whole cost: p * n^2 per pick).
            distances = columns.unsqueeze(2) - columns.unsqueeze(1)
            neighbours = _nearest_neighbours(distances.square_().add_(base))
            if given_neighbours is None:
                chunk_scores = _unconditional_from_neighbours(ranks, lower, neighbours)
            else:
                chunk_scores = _conditional_from_neighbours(ranks, given_neighbours, neighbours)
            scores[start : start + len(chunk)] = chunk_scores.cpu()
        best = int(scores.argmax())  # first maximum, as their strict ``>`` loop
        if picked and early_stop and float(scores[best]) <= 0.0:
            break
        chosen = candidates[best]
        picked.append(chosen)
        values.append(float(scores[best]))
        column = features[:, chosen]
        base = base + (column.unsqueeze(1) - column.unsqueeze(0)).pow(2)
        given_neighbours = _nearest_neighbours(base.clone())
    return FociResult(ordering=picked, values=values)


# --------------------------------------------------------------------------------------------
# Units, selected parameters, and the Newton step
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitLayer:
    """A Linear or Conv2d layer whose output units FOCI chooses from.

    Attributes:
        name: the module's name in ``model.named_modules()``.
        module: the layer.
        units: output units (``out_features`` / ``out_channels``).
    """

    name: str
    module: nn.Linear | nn.Conv2d
    units: int


def unit_layers(model: nn.Module) -> list[UnitLayer]:
    """Every Linear and Conv2d layer of ``model``, in module order (their ``ActivationsHook``)."""
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            layers.append(UnitLayer(name, module, module.out_features))
        elif isinstance(module, nn.Conv2d):
            layers.append(UnitLayer(name, module, module.out_channels))
    if not layers:
        raise ValueError(f"lcodec: {type(model).__name__} has no Linear or Conv2d layer")
    return layers


@dataclass(frozen=True)
class ParameterBlock:
    """Rows ``rows`` of the parameter ``name`` (a weight ``(O, ...)`` or a bias ``(O,)``): the
    slice of the selected units of one layer, flattened into ``theta[start:stop]``."""

    name: str
    rows: Tensor
    start: int
    stop: int


def selected_blocks(
    model: nn.Module, layers: list[UnitLayer], units: list[int]
) -> list[ParameterBlock]:
    """The parameter slices of the selected units (their ``reverseLinearIndexingToLayers`` and
    ``getVectorizedGrad``): for a unit ``u`` of a layer, ``weight[u]`` and ``bias[u]``.

    Args:
        model: the network the layers belong to.
        layers: :func:`unit_layers` of ``model``; unit indices count through them in order.
        units: selected indices into that concatenation.

    Returns:
        One block per (layer, weight or bias), layers in module order, rows sorted.
    """
    offsets = [0]
    for layer in layers:
        offsets.append(offsets[-1] + layer.units)
    by_layer: dict[int, list[int]] = {}
    for unit in units:
        index = next(i for i in range(len(layers)) if unit < offsets[i + 1])
        by_layer.setdefault(index, []).append(unit - offsets[index])
    names = {id(p): name for name, p in model.named_parameters()}
    blocks: list[ParameterBlock] = []
    start = 0
    for index in sorted(by_layer):
        module = layers[index].module
        rows = torch.tensor(sorted(by_layer[index]), dtype=torch.long)
        for parameter in (module.weight, module.bias):
            if parameter is None:
                continue
            size = rows.numel() * parameter[0].numel()
            blocks.append(ParameterBlock(names[id(parameter)], rows, start, start + size))
            start += size
    return blocks


def gather_selected(parameters: dict[str, Tensor], blocks: list[ParameterBlock]) -> Tensor:
    """``theta`` ``(P,)``: the blocks' entries of ``parameters``, flattened and concatenated."""
    return torch.cat(
        [parameters[b.name][b.rows.to(parameters[b.name].device)].reshape(-1) for b in blocks]
    )


def scatter_selected(
    parameters: dict[str, Tensor], blocks: list[ParameterBlock], theta: Tensor
) -> dict[str, Tensor]:
    """``parameters`` with the blocks' entries replaced by ``theta`` ``(P,)`` (out of place and
    differentiable in ``theta``; every other entry is the very tensor passed in)."""
    merged = dict(parameters)
    for block in blocks:
        current = merged[block.name]
        rows = block.rows.to(current.device)
        values = theta[block.start : block.stop].reshape(rows.numel(), *current.shape[1:])
        merged[block.name] = current.index_copy(0, rows, values)
    return merged


def newton_removal_step(
    theta: Tensor, gradient_sum: Tensor, hessian: Tensor, *, remaining: int, damping: float
) -> Tensor:
    """Sekhari et al.'s removal step ``theta + 1/(n - m) (H + lambda I)^-1 sum_U grad``.

    For a loss whose total gradient over the ``n`` training samples vanishes at ``theta`` and is
    quadratic in ``theta`` (and ``damping = 0``), this is exactly the minimiser of the loss over
    the ``n - m`` remaining samples.

    Args:
        theta: ``(P,)`` the current selected parameters.
        gradient_sum: ``(P,)`` the sum of the removed samples' loss gradients at ``theta``.
        hessian: ``(P, P)`` Hessian of the *mean* loss over the remaining samples.
        remaining: ``n - m``, the number of samples that remain.
        damping: ``lambda``, added to the Hessian's diagonal.

    Returns:
        ``(P,)`` the updated parameters (same dtype as ``theta``).
    """
    # float64 solve: the damped Hessian of a trained network is often badly conditioned.
    system = hessian.double() + damping * torch.eye(
        hessian.shape[0], dtype=torch.float64, device=hessian.device
    )
    direction: Tensor = torch.linalg.solve(system, gradient_sum.double())
    return theta + (direction / remaining).to(theta.dtype)


def gaussian_mechanism_std(
    *,
    removed: int,
    samples: int,
    l2_reg: float,
    epsilon: float,
    delta: float,
    hessian_lipschitz: float,
    gradient_lipschitz: float,
) -> float:
    """Standard deviation of their ``NoisyReturn`` (Sekhari et al. Theorem 3):
    ``(gamma / epsilon) sqrt(2 ln(1.25 / delta))``, ``gamma = 2 M L^2 m^2 / (lambda^3 n^2)``.

    Args:
        removed: ``m``, samples removed by the step.
        samples: ``n``, training samples before the step.
        l2_reg: ``lambda``.
        epsilon, delta: the privacy parameters.
        hessian_lipschitz: ``M``.
        gradient_lipschitz: ``L``.
    """
    gamma = 2 * hessian_lipschitz * gradient_lipschitz**2 * removed**2 / (l2_reg**3 * samples**2)
    return gamma / epsilon * math.sqrt(2 * math.log(1.25 / delta))


def removed_gradient_sum(
    model: nn.Module, blocks: list[ParameterBlock], images: Tensor, labels: Tensor
) -> Tensor:
    """``sum_u grad_theta loss_u`` ``(P,)`` over the removal batch ``images`` ``(m, C_in, H, W)``,
    ``labels`` ``(m,)``, with respect to the selected parameters (model in its current mode)."""
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def total_loss(selected: Tensor) -> Tensor:
        merged = scatter_selected(parameters, blocks, selected)
        logits = functional_call(model, (merged, buffers), (images,))
        return F.cross_entropy(logits, labels, reduction="sum")

    gradient: Tensor = grad(total_loss)(gather_selected(parameters, blocks))
    return gradient


def hessian_vector_product(
    model: nn.Module, blocks: list[ParameterBlock], batches: Sequence[tuple[Tensor, Tensor]]
) -> Callable[[Tensor], Tensor]:
    """``v -> H v``, ``H`` the exact Hessian of the *summed* cross-entropy over ``batches`` with
    respect to the selected parameters ``theta`` (one forward-over-reverse pass per batch: a
    ``jvp`` of ``grad``), without forming ``H``.

    Args:
        model: maps ``(B, C_in, H, W)`` to ``(B, C)`` logits; used in its current mode.
        blocks: the selected parameter slices (``P`` entries).
        batches: ``(images (B, C_in, H, W), labels (B,))`` on the model's device.

    Returns:
        A function from ``v`` ``(P,)`` to ``H v`` ``(P,)``, both float32.
    """
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    theta = gather_selected(parameters, blocks)

    def total_loss(selected: Tensor, images: Tensor, labels: Tensor) -> Tensor:
        merged = scatter_selected(parameters, blocks, selected)
        logits = functional_call(model, (merged, buffers), (images,))
        return F.cross_entropy(logits, labels, reduction="sum")

    gradient = grad(total_loss)

    def product(direction: Tensor) -> Tensor:
        total = torch.zeros_like(theta)
        for images, labels in batches:

            def batch_gradient(
                selected: Tensor, images: Tensor = images, labels: Tensor = labels
            ) -> Tensor:
                result: Tensor = gradient(selected, images, labels)
                return result

            total += torch.func.jvp(batch_gradient, (theta,), (direction,))[1]
        return total

    return product


@dataclass(frozen=True)
class SolverResult:
    """A matrix-free solve of ``(H + lambda I) x = b``.

    Attributes:
        solution: ``x`` ``(P,)`` float64.
        iterations: Hessian-vector products used.
        converged: whether the residual reached the tolerance within the iteration budget.
    """

    solution: Tensor
    iterations: int
    converged: bool


def solve_damped_minres(
    product: Callable[[Tensor], Tensor],
    rhs: Tensor,
    *,
    damping: float,
    rtol: float,
    max_iterations: int,
) -> SolverResult:
    """Solve ``(H + damping I) x = rhs`` with MINRES (scipy), given only ``v -> H v``.

    MINRES needs the system symmetric, not positive definite: a network's Hessian can have
    negative eigenvalues. With the damping the system is well conditioned in practice
    (Fashion-MNIST small_cnn: eigenvalues of the mean-loss Hessian in [~0, 0.4], damping 0.01,
    ~20 products to ``rtol`` 1e-7), where forming ``H`` costs ``P`` products.

    Args:
        product: ``v`` ``(P,)`` -> ``H v`` ``(P,)`` (float32 on any device).
        rhs: ``b`` ``(P,)``.
        damping: ``lambda``.
        rtol: relative residual ``|b - A x| / |b|`` at which MINRES stops.
        max_iterations: largest number of products.

    Returns:
        The solution and how it was reached.
    """
    size = rhs.numel()
    iterations = 0

    def matvec(vector: np.ndarray) -> np.ndarray:
        nonlocal iterations
        iterations += 1
        direction = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float32)).to(rhs.device)
        result: np.ndarray = product(direction).double().cpu().numpy().reshape(-1)
        return result + damping * vector.reshape(-1)

    operator = LinearOperator((size, size), matvec=matvec, dtype=np.float64)
    solution, info = minres(operator, rhs.double().cpu().numpy(), rtol=rtol, maxiter=max_iterations)
    return SolverResult(torch.from_numpy(solution), iterations, info == 0)


def selected_hessian(
    model: nn.Module,
    blocks: list[ParameterBlock],
    batches: Iterator[tuple[Tensor, Tensor]],
    *,
    tangent_chunk: int,
) -> Tensor:
    """Exact Hessian of the *summed* cross-entropy over ``batches`` with respect to the selected
    parameters ``theta`` (forward-over-reverse: a ``jvp`` of ``grad`` per basis vector, ``vmap``-ed
    over ``tangent_chunk`` basis vectors at a time).

    Args:
        model: maps ``(B, C_in, H, W)`` to ``(B, C)`` logits; used in its current mode.
        blocks: the selected parameter slices (``P`` entries).
        batches: ``(images (B, C_in, H, W), labels (B,))`` on the model's device.
        tangent_chunk: basis vectors per ``vmap`` (memory grows with it times ``B``).

    Returns:
        ``(P, P)`` float32, symmetric up to rounding.
    """
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    theta = gather_selected(parameters, blocks)
    size = theta.numel()

    def total_loss(selected: Tensor, images: Tensor, labels: Tensor) -> Tensor:
        merged = scatter_selected(parameters, blocks, selected)
        logits = functional_call(model, (merged, buffers), (images,))
        return F.cross_entropy(logits, labels, reduction="sum")

    gradient = grad(total_loss)
    hessian = torch.zeros(size, size, dtype=theta.dtype, device=theta.device)
    basis = torch.eye(size, dtype=theta.dtype, device=theta.device)
    for images, labels in batches:

        def column(direction: Tensor, images: Tensor = images, labels: Tensor = labels) -> Tensor:
            # H v = d/dt grad(theta + t v) at t = 0.
            outputs = torch.func.jvp(
                lambda selected: gradient(selected, images, labels), (theta,), (direction,)
            )
            product: Tensor = outputs[1]
            return product

        columns: Callable[[Tensor], Tensor] = torch.func.vmap(column)
        for start in range(0, size, tangent_chunk):
            hessian[start : start + tangent_chunk] += columns(basis[start : start + tangent_chunk])
    return hessian


# --------------------------------------------------------------------------------------------
# Input perturbation: the features FOCI selects from
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def perturbation_features(
    model: nn.Module,
    layers: list[UnitLayer],
    images: Tensor,
    labels: Tensor,
    *,
    perturbations: int,
    std: float,
    generator: torch.Generator,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """Unit activations and losses of the removal batch under input noise (their
    ``inp_perturb`` with ``ActivationsHook``).

    Each perturbation adds ``std * N(0, 1)`` noise to every image of the batch; its row of
    features is, per unit of every layer in ``layers``, the output averaged over the batch (and
    over pixels for a convolution), and its response the batch's mean cross-entropy. The model is
    used in its current (eval) mode, so stacking perturbations into one forward pass gives the
    same numbers as their one-perturbation-at-a-time loop.

    Args:
        model: the classifier.
        layers: :func:`unit_layers` of ``model``.
        images: ``(B, C_in, H, W)`` the removal batch, on the model's device.
        labels: ``(B,)``.
        perturbations: ``M``, noisy copies of the batch.
        std: the noise's standard deviation.
        generator: CPU source of the noise.
        chunk_size: images per forward pass (perturbations are never split across passes).

    Returns:
        ``features`` ``(M, units)`` and ``losses`` ``(M,)``.
    """
    batch = images.shape[0]
    per_pass = max(1, chunk_size // batch)  # perturbations per forward pass
    captured: list[Tensor] = []

    def record(_: nn.Module, __: tuple[Tensor, ...], output: Tensor) -> None:
        # (k * B, O, ...) -> (k, O): mean over the batch and every position.
        grouped = output.reshape(-1, batch, *output.shape[1:])
        dims = [1, *range(3, grouped.ndim)] if output.ndim > 2 else [1]
        captured.append(grouped.mean(dim=dims))

    handles = [layer.module.register_forward_hook(record) for layer in layers]
    rows: list[Tensor] = []
    losses: list[Tensor] = []
    try:
        for start in range(0, perturbations, per_pass):
            count = min(per_pass, perturbations - start)
            noise = torch.randn((count, *images.shape), generator=generator).to(images.device)
            noisy = (images.unsqueeze(0) + std * noise).reshape(count * batch, *images.shape[1:])
            captured.clear()
            logits = model(noisy)
            rows.append(torch.cat(captured, dim=1))
            per_sample = F.cross_entropy(logits, labels.repeat(count), reduction="none")
            losses.append(per_sample.view(count, batch).mean(dim=1))
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(rows), torch.cat(losses)


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


class LCodecOptions(StrictModel):
    """Hyperparameters of L-CODEC; defaults are the authors' (``cifar_scrub.sh``,
    ``scrub_tools.py``)."""

    perturbations: int = Field(1000, ge=2)
    """Noisy copies of a removal batch that FOCI learns from (their ``n_perturbations``)."""
    perturbation_std: float = Field(0.1, gt=0)
    """Standard deviation of the input noise (hard-coded 0.1 in their ``inp_perturb``)."""
    l2_reg: float = Field(0.01, ge=0)
    """lambda: damping added to the Hessian, and the strong convexity in the noise (their
    ``--l2_reg``)."""
    noise: bool = False
    """Add the Gaussian mechanism's noise to the updated parameters (their ``NoisyReturn``; off
    by default, see the module docstring)."""
    epsilon: float = Field(0.1, gt=0)
    """Privacy parameter of the noise (their ``--epsilon``)."""
    delta: float = Field(0.01, gt=0, lt=1)
    """Privacy parameter of the noise (their ``--delta``)."""
    hessian_lipschitz: float = Field(0.25, gt=0)
    """M in the noise's scale (their ``NoisyReturn`` default, "for cross entropy")."""
    gradient_lipschitz: float = Field(1.0, gt=0)
    """L in the noise's scale (their ``NoisyReturn`` default)."""
    solver: Literal["minres", "matrix"] = "minres"
    """How the Newton direction ``(H + lambda I)^-1 g`` is computed: ``minres`` iterates on
    Hessian-vector products without forming ``H`` (memory ``O(P)``, tens of products);
    ``matrix`` forms the ``P x P`` Hessian (``P`` products) and solves it in float64."""
    solver_rtol: float = Field(1e-6, gt=0, lt=1)
    """``minres``: relative residual at which it stops (float32 products limit it to ~1e-7)."""
    solver_max_iterations: int = Field(1000, ge=1)
    """``minres``: most Hessian-vector products per removal batch (not converging within them
    is logged and recorded in the run's ``removals``)."""
    max_selected_params: int = Field(8192, ge=1)
    """``matrix``: largest selection whose ``P x P`` Hessian is formed; a larger one is an
    error."""
    hessian_samples: int | None = Field(None, ge=1)
    """Remaining samples the Hessian is averaged over (a random subset, an unbiased estimate of
    the exact Hessian); None: all of them, the exact Hessian."""
    hessian_batch_size: int = Field(256, ge=1)
    """Samples per Hessian chunk (memory grows with it times ``tangent_chunk``)."""
    tangent_chunk: int = Field(64, ge=1)
    """``matrix``: Hessian columns computed per vectorised pass."""

    @model_validator(mode="after")
    def _noise_needs_regularisation(self) -> LCodecOptions:
        if self.noise and self.l2_reg == 0:
            raise ValueError("noise needs l2_reg > 0 (its scale divides by l2_reg^3)")
        return self


@register_method("lcodec")
class LCodec(UnlearningMethod):
    """Remove each removal batch with a Newton step on the units FOCI selects (see the module
    docstring). ``batch_size`` is the number of samples removed per step."""

    Options: ClassVar[type[StrictModel]] = LCodecOptions
    # Sample unlearning only: the paper's (and the contrastive paper's) use. On a whole class the
    # removed samples are fit so well that their summed gradient, and so the Newton step, is
    # negligible (measured on digits class 5: step norms ~0.05, class accuracy stays 100%).
    scenarios: ClassVar[tuple[Scenario, ...]] = ("sample",)
    default_batch_size: ClassVar[dict[str, int]] = {"sample": 64}

    def run(self, task: UnlearningTask) -> MethodOutcome:
        options = self.options
        assert isinstance(options, LCodecOptions)
        config, split, train = task.config, task.split, task.data.train
        device = torch.device(config.device)
        model = task.model
        batch_size = self.batch_size(config, split.scenario)
        started = time.perf_counter()
        prepare_model(model, device, channels_last=config.channels_last)
        model.eval()  # their ActivationsHook / DisableBatchNorm: running statistics throughout
        layers = unit_layers(model)

        def load(index: Tensor) -> tuple[Tensor, Tensor]:
            images = to_device(train.images[index], device, channels_last=config.channels_last)
            return images, train.labels[index].to(device)

        pending = torch.ones(split.forget.numel(), dtype=torch.bool)  # forget samples not removed
        position = {int(sample): i for i, sample in enumerate(split.forget.tolist())}
        removals: list[dict[str, float]] = []
        for removal in shuffled_batches(split.forget, batch_size, generator=task.generator):
            images, labels = load(removal)
            features, losses = perturbation_features(
                model,
                layers,
                images,
                labels,
                perturbations=options.perturbations,
                std=options.perturbation_std,
                generator=task.generator,
                chunk_size=config.eval_batch_size,
            )
            selection = foci(features, losses)
            blocks = selected_blocks(model, layers, selection.ordering)
            selected = blocks[-1].stop
            if options.solver == "matrix" and selected > options.max_selected_params:
                raise SelectionTooLargeError(
                    f"lcodec: FOCI selected {len(selection.ordering)} units with {selected} "
                    f"parameters, above max_selected_params = {options.max_selected_params} "
                    f"(the exact Hessian would be {selected} x {selected}); raise the option "
                    "max_selected_params if memory and time allow"
                )
            for sample in removal.tolist():
                pending[position[sample]] = False
            remaining = torch.cat([split.retain, split.forget[pending]])
            removed, before = removal.numel(), remaining.numel() + removal.numel()
            curvature = remaining
            if options.hessian_samples is not None and options.hessian_samples < remaining.numel():
                chosen = torch.randperm(remaining.numel(), generator=task.generator)
                curvature = remaining[chosen[: options.hessian_samples]]

            parameters = {name: p.detach() for name, p in model.named_parameters()}
            theta = gather_selected(parameters, blocks)

            gradient_sum = removed_gradient_sum(model, blocks, images, labels)
            batches = [load(chunk) for chunk in curvature.split(options.hessian_batch_size)]
            updated, solver = newton_update(
                model,
                blocks,
                theta,
                gradient_sum,
                batches,
                remaining=remaining.numel(),
                options=options,
            )
            std = 0.0
            if options.noise:
                std = gaussian_mechanism_std(
                    removed=removed,
                    samples=before,
                    l2_reg=options.l2_reg,
                    epsilon=options.epsilon,
                    delta=options.delta,
                    hessian_lipschitz=options.hessian_lipschitz,
                    gradient_lipschitz=options.gradient_lipschitz,
                )
                noise = torch.randn(updated.shape, generator=task.generator)
                updated = updated + std * noise.to(updated.device)
            write_selected_(model, blocks, updated)
            removals.append(
                {
                    "removed": float(removed),
                    "units": float(len(selection.ordering)),
                    "selected_params": float(selected),
                    "step_norm": float((updated - theta).norm()),
                    "noise_std": std,
                    **solver,
                }
            )
            logger.debug("lcodec: %s", removals[-1])
        seconds = time.perf_counter() - started
        logger.info(
            "lcodec: %d removal batches, %.1f selected parameters on average, %.2fs",
            len(removals),
            sum(r["selected_params"] for r in removals) / max(1, len(removals)),
            seconds,
        )
        return MethodOutcome(model=model, seconds=seconds, extra={"removals": removals})


def newton_update(
    model: nn.Module,
    blocks: list[ParameterBlock],
    theta: Tensor,
    gradient_sum: Tensor,
    batches: Sequence[tuple[Tensor, Tensor]],
    *,
    remaining: int,
    options: LCodecOptions,
) -> tuple[Tensor, dict[str, float]]:
    """Sekhari's removal step on the selected parameters, with the Hessian of the mean loss over
    ``batches`` (the curvature samples) and the solver ``options.solver`` names.

    Args:
        model: the classifier, in eval mode.
        blocks: the selected parameter slices; ``theta`` ``(P,)`` their current values.
        gradient_sum: ``(P,)`` the removed samples' summed loss gradient.
        batches: ``(images, labels)`` of the curvature samples, on the model's device.
        remaining: ``n - m``, the samples that remain after this removal.
        options: the method's options (solver, damping ``l2_reg``, tolerances).

    Returns:
        The updated ``theta`` ``(P,)`` and, for ``minres``, its iterations and convergence.
    """
    count = sum(int(labels.numel()) for _, labels in batches)
    if options.solver == "matrix":
        hessian = (
            selected_hessian(model, blocks, iter(batches), tangent_chunk=options.tangent_chunk)
            / count
        )
        step = newton_removal_step(
            theta, gradient_sum, hessian, remaining=remaining, damping=options.l2_reg
        )
        return step, {}
    summed = hessian_vector_product(model, blocks, batches)
    solved = solve_damped_minres(
        lambda vector: summed(vector) / count,
        gradient_sum,
        damping=options.l2_reg,
        rtol=options.solver_rtol,
        max_iterations=options.solver_max_iterations,
    )
    if not solved.converged:
        logger.warning(
            "lcodec: MINRES did not reach rtol %g in %d Hessian-vector products; the step uses "
            "its last iterate (raise solver_max_iterations, or use solver: matrix)",
            options.solver_rtol,
            solved.iterations,
        )
    direction = solved.solution.to(theta.device) / remaining
    return theta + direction.to(theta.dtype), {
        "solver_iterations": float(solved.iterations),
        "solver_converged": float(solved.converged),
    }


@torch.no_grad()
def write_selected_(model: nn.Module, blocks: list[ParameterBlock], theta: Tensor) -> None:
    """Write ``theta`` ``(P,)`` into the blocks' rows of ``model``'s parameters, in place; every
    other entry keeps its bits."""
    parameters = dict(model.named_parameters())
    for block in blocks:
        parameter = parameters[block.name]
        rows = block.rows.to(parameter.device)
        values = theta[block.start : block.stop].reshape(rows.numel(), *parameter.shape[1:])
        parameter.index_copy_(0, rows, values.to(parameter.dtype))
