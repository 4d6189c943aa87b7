"""Matching the forget set's per-sample confidence to unseen data's (sample unlearning).

A model retrained without the forget set treats the forgotten samples like any unseen sample: its
confidence on them is distributed like its confidence on held-out data. Membership-inference
attacks (LiRA, U-LiRA, the population attacks of conun's audit) read exactly this per-sample
score, the *logit-scaled confidence*

    phi(x, y) = log p_y - log(1 - p_y) = z_y - logsumexp_{j != y} z_j

(Carlini et al., "Membership Inference Attacks From First Principles", 2022). Unlearning that
leaves no trace must therefore bring the forget samples' ``phi`` down to unseen data's, and no
further: pushing past it (lower confidence than unseen data) is itself a membership signal.

The forget batch is matched to the held-out distribution by rank: the sample of rank ``k`` (of
``B``, ascending ``phi``) is matched to the ``(k + 0.5) / B`` quantile of the reference scores.
A sample above its target is *active*; :func:`calibration_loss` lowers each active sample's
``phi`` to its target with a unit-slope hinge (the gradient does not vanish on confident samples,
as the cross-entropy's does) and leaves the others alone.
"""

from __future__ import annotations

import torch
from torch import Tensor


def logit_confidence(logits: Tensor, labels: Tensor) -> Tensor:
    """``(B,)`` logit-scaled confidence ``z_y - logsumexp_{j != y} z_j`` of each sample's label,
    computed without forming ``p_y`` (stable for confident samples).

    Args:
        logits: ``(B, C)``, ``C >= 2``.
        labels: ``(B,)`` integer labels in ``[0, C)``.
    """
    if logits.ndim != 2 or logits.shape[1] < 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"need (B, C >= 2) logits and (B,) labels, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - torch.logsumexp(others, dim=1)


def matched_targets(scores: Tensor, reference: Tensor) -> Tensor:
    """``(B,)`` the reference quantile each score is matched to by rank.

    Args:
        scores: ``(B,)`` the batch's scores (e.g. :func:`logit_confidence`).
        reference: ``(M,)`` the reference scores (e.g. the original model's on held-out data).

    Returns:
        ``targets[i]`` = the ``(rank_i + 0.5) / B`` quantile of ``reference`` (linear
        interpolation), ``rank_i`` the 0-based rank of ``scores[i]`` in ascending order.
    """
    if scores.ndim != 1 or reference.ndim != 1 or reference.numel() == 0:
        raise ValueError(
            f"need (B,) scores and non-empty (M,) reference, got {tuple(scores.shape)} and "
            f"{tuple(reference.shape)}"
        )
    ranks = torch.argsort(torch.argsort(scores.detach()))
    levels = (ranks.double() + 0.5) / scores.numel()
    return torch.quantile(reference.detach().double().to(scores.device), levels).to(scores.dtype)


def calibration_loss(scores: Tensor, targets: Tensor) -> Tensor:
    """Mean over the batch of ``max(0, score_i - target_i)``: lowers each active sample's score
    to its target with slope 1, and is flat (zero gradient) once it is there.

    Args:
        scores: ``(B,)`` differentiable scores.
        targets: ``(B,)`` their targets (no gradient flows into them).

    Returns:
        A scalar; a zero that keeps the graph for an empty batch.
    """
    if scores.shape != targets.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} differ")
    if scores.numel() == 0:
        return scores.sum() * 0.0
    return torch.relu(scores - targets.detach()).mean()


__all__ = ["calibration_loss", "logit_confidence", "matched_targets"]
