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
``matched_targets`` ranks a batch by its *current* scores, so the order in which samples land
follows the original model's memorised confidences. A retrained model's per-sample confidence
follows how typical a sample is instead, which :func:`neighbour_targets` estimates once, before
unlearning, from the original's confidence on the held-out samples nearest to it in feature
space; per-example attacks such as U-LiRA compare exactly those per-sample values.

A sample above its target is *active*; :func:`calibration_loss` lowers each active sample's
``phi`` to its target with a unit-slope hinge (the gradient does not vanish on confident samples,
as the cross-entropy's does) and leaves the others alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def rank_quantiles(reference: Tensor, count: int) -> Tensor:
    """``(count,)`` the ``(k + 0.5) / count`` quantiles of ``reference``, ``k = 0 .. count - 1``
    (ascending; linear interpolation, as :func:`torch.quantile`): the target of each rank in a
    batch of ``count`` (:func:`targets_by_rank`). Depends on the batch size only, so a run
    computes it once per batch size instead of sorting the reference at every step.

    Args:
        reference: ``(M,)`` non-empty reference scores.
        count: the batch size ``B >= 1``.
    """
    if reference.ndim != 1 or reference.numel() == 0 or count < 1:
        raise ValueError(
            f"need non-empty (M,) reference and count >= 1, got {tuple(reference.shape)} and "
            f"{count}"
        )
    levels = (torch.arange(count, dtype=torch.float64) + 0.5) / count
    values = reference.detach().double()
    return torch.quantile(values, levels.to(values.device))


def targets_by_rank(scores: Tensor, quantiles: Tensor) -> Tensor:
    """``(B,)`` ``targets[i] = quantiles[rank_i]``, ``rank_i`` the 0-based rank of ``scores[i]``
    in ascending order (ties in index order).

    Args:
        scores: ``(B,)`` the batch's scores.
        quantiles: ``(B,)`` ascending targets (:func:`rank_quantiles` of the reference).
    """
    if scores.ndim != 1 or quantiles.shape != scores.shape:
        raise ValueError(
            f"need (B,) scores and (B,) quantiles, got {tuple(scores.shape)} and "
            f"{tuple(quantiles.shape)}"
        )
    # One sort: the sample of rank k (``order[k]``) gets the k-th quantile.
    order = torch.argsort(scores.detach(), stable=True)
    targets = torch.empty_like(scores, dtype=scores.dtype)
    targets[order] = quantiles.to(device=scores.device, dtype=scores.dtype)
    return targets


def matched_targets(scores: Tensor, reference: Tensor) -> Tensor:
    """``(B,)`` the reference quantile each score is matched to by rank.

    Args:
        scores: ``(B,)`` the batch's scores (e.g. :func:`logit_confidence`).
        reference: ``(M,)`` the reference scores (e.g. the original model's on held-out data).

    Returns:
        ``targets[i]`` = the ``(rank_i + 0.5) / B`` quantile of ``reference`` (linear
        interpolation), ``rank_i`` the 0-based rank of ``scores[i]`` in ascending order:
        :func:`targets_by_rank` of :func:`rank_quantiles`.
    """
    if scores.ndim != 1 or reference.ndim != 1 or reference.numel() == 0:
        raise ValueError(
            f"need (B,) scores and non-empty (M,) reference, got {tuple(scores.shape)} and "
            f"{tuple(reference.shape)}"
        )
    return targets_by_rank(scores, rank_quantiles(reference, scores.numel()))


def random_targets(reference: Tensor, count: int, *, generator: torch.Generator) -> Tensor:
    """``(count,)`` one target per forget sample, each a reference score drawn at random (with
    replacement), independently of the sample.

    The targets are distributed like the reference scores, as :func:`matched_targets`' are,
    but carry nothing of the original's order: where rank matching keeps the sample that the
    original memorised best at the top of the forget set, a random draw gives every forget
    sample the same distribution of outcomes, whatever the original made of it.

    Args:
        reference: ``(M,)`` non-empty reference scores (the original's on held-out data).
        count: targets to draw, ``>= 0``.
        generator: the random stream (CPU).
    """
    if reference.ndim != 1 or reference.numel() == 0 or count < 0:
        raise ValueError(
            f"need non-empty (M,) reference and count >= 0, got {tuple(reference.shape)} and "
            f"{count}"
        )
    picks = torch.randint(reference.numel(), (count,), generator=generator)
    return reference.detach().cpu()[picks]


def neighbour_targets(
    forget_features: Tensor,
    forget_labels: Tensor,
    reference_features: Tensor,
    reference_labels: Tensor,
    reference_scores: Tensor,
    *,
    neighbours: int = 10,
    chunk: int = 1024,
) -> Tensor:
    """``(N,)`` one target per forget sample: its predicted rank among the forget set, mapped to
    the reference distribution.

    Each forget sample's confidence had it never been seen is estimated as the mean reference
    score of its ``neighbours`` nearest reference samples of the same label (cosine similarity
    of the features); the forget samples are ranked by that estimate, and rank ``r`` of ``N``
    gets the ``(r + 0.5) / N`` quantile of ``reference_scores``. The targets are therefore
    distributed exactly like the reference scores (as :func:`matched_targets`' are), ordered by
    how typical each sample looks rather than by how well the original memorised it. A label
    with no reference sample is estimated from all reference samples.

    Args:
        forget_features: ``(N, D)`` the original model's features of the forget samples.
        forget_labels: ``(N,)`` their labels.
        reference_features: ``(M, D)`` the original's features of held-out samples.
        reference_labels: ``(M,)`` their labels.
        reference_scores: ``(M,)`` the original's scores on them (e.g. :func:`logit_confidence`).
        neighbours: ``k``, at most the number of reference samples of a label.
        chunk: forget samples per similarity block (bounds memory at ``chunk x M``).
    """
    n, m = forget_features.shape[0], reference_features.shape[0]
    if forget_labels.shape != (n,) or reference_labels.shape != (m,):
        raise ValueError(
            f"need (N,) and (M,) labels for {n} forget and {m} reference samples, got "
            f"{tuple(forget_labels.shape)} and {tuple(reference_labels.shape)}"
        )
    if reference_scores.shape != (m,) or m == 0:
        raise ValueError(
            f"need non-empty (M,) reference scores for {m} reference samples, got "
            f"{tuple(reference_scores.shape)}"
        )
    if neighbours < 1:
        raise ValueError(f"neighbours must be >= 1, got {neighbours}")
    forget = F.normalize(forget_features.detach().float(), dim=1)
    reference = F.normalize(reference_features.detach().float(), dim=1)
    scores = reference_scores.detach().float().cpu()
    estimates = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, chunk):
        block = slice(start, min(n, start + chunk))
        similarity = (forget[block] @ reference.T).cpu()
        same = forget_labels[block].cpu()[:, None] == reference_labels.cpu()[None, :]
        # A label the reference set lacks falls back to every reference sample.
        same[~same.any(dim=1)] = True
        similarity = similarity.masked_fill(~same, float("-inf"))
        k = min(neighbours, m)
        top = similarity.topk(k, dim=1)
        found = torch.isfinite(top.values)  # fewer than k reference samples of the label
        picked = scores[top.indices].double() * found
        estimates[block] = picked.sum(dim=1) / found.sum(dim=1)
    ranks = torch.argsort(torch.argsort(estimates))
    levels = (ranks.double() + 0.5) / n
    return torch.quantile(scores.double(), levels).float()


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


def logit_scale_for_mean_confidence(
    logits: Tensor, labels: Tensor, target: float, *, bounds: tuple[float, float] = (0.0625, 16.0)
) -> float:
    """The factor ``s`` for which the mean logit-scaled confidence of ``s * logits`` is
    ``target`` (bisection in float64; the mean rises with ``s`` wherever most samples are
    classified correctly), clamped to ``bounds`` when no factor inside them reaches it.

    Args:
        logits: ``(M, C)`` a model's logits on held-out samples, ``C >= 2``.
        labels: ``(M,)`` their labels.
        target: the mean :func:`logit_confidence` to reach (e.g. another model's on the same
            samples).
        bounds: the smallest and largest factor allowed.

    Returns:
        ``s`` in ``bounds``.
    """
    z = logits.detach().double()

    def mean_confidence(scale: float) -> float:
        return float(logit_confidence(z * scale, labels).mean())

    low, high = bounds
    if mean_confidence(low) >= target:
        return low
    if mean_confidence(high) <= target:
        return high
    for _ in range(50):  # an interval of 16 / 2^50: exact to float precision
        middle = (low + high) / 2
        if mean_confidence(middle) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


__all__ = [
    "calibration_loss",
    "logit_confidence",
    "logit_scale_for_mean_confidence",
    "matched_targets",
    "neighbour_targets",
    "random_targets",
    "rank_quantiles",
    "targets_by_rank",
]
