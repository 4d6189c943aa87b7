"""L-CODEC's unit selection: which output units' parameters a removal step updates.

:func:`perturbation_features` measures, under input noise, every output unit of every Linear and
Conv2d layer (:func:`unit_layers`) and the removal batch's loss; :func:`foci` (Feature Ordering by
Conditional Independence) then picks the units that carry the information about the loss, using
the conditional-dependence coefficient :func:`codec` of Azadkia & Chatterjee ("A simple measure
of conditional dependence", Annals of Statistics 2021; their ``codec/torch_codec.py`` and
``codec/torch_foci.py`` in vsingh-group/LCODEC-deep-unlearning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NEIGHBOUR_CHUNK = 16
"""Candidate features whose ``(n, n)`` distance matrices are held at once in FOCI."""


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


__all__ = [
    "NEIGHBOUR_CHUNK",
    "FociResult",
    "UnitLayer",
    "codec",
    "foci",
    "perturbation_features",
    "unit_layers",
]
