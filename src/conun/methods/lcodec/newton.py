"""L-CODEC's Newton removal step on the selected parameters, and the Hessian maths behind it.

The selected units' weight rows and biases are a vector ``theta`` (:func:`selected_blocks`,
:func:`gather_selected`, :func:`scatter_selected`, :func:`write_selected_`). Sekhari et al.'s
removal step (:func:`newton_removal_step`) needs ``(H + lambda I)^-1 g`` for the Hessian ``H`` of
the remaining data's loss with respect to ``theta``: either formed (:func:`selected_hessian`) or
solved matrix-free by MINRES (:func:`solve_damped_minres`) on exact Hessian-vector products
(:func:`hessian_vector_product`), both through ``torch.func`` forward-over-reverse passes.
:func:`gaussian_mechanism_std` is the scale of their optional Gaussian noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator, minres
from torch import Tensor, nn
from torch.func import functional_call, grad
from torch.nn.attention import SDPBackend, sdpa_kernel

from conun.methods.lcodec.selection import UnitLayer


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
        # Forward-mode AD (the jvp below) has no formula for the fused attention kernels (flash
        # or memory-efficient, on CPU and CUDA): attention layers (ViTs) use the plain math one.
        with sdpa_kernel(SDPBackend.MATH):
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
        # Forward-mode AD (the jvp below) has no formula for the fused attention kernels (flash
        # or memory-efficient, on CPU and CUDA): attention layers (ViTs) use the plain math one.
        with sdpa_kernel(SDPBackend.MATH):
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


__all__ = [
    "ParameterBlock",
    "SolverResult",
    "gather_selected",
    "gaussian_mechanism_std",
    "hessian_vector_product",
    "newton_removal_step",
    "removed_gradient_sum",
    "scatter_selected",
    "selected_blocks",
    "selected_hessian",
    "solve_damped_minres",
    "write_selected_",
]
