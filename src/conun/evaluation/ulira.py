"""U-LiRA: the per-example membership attack against an unlearning method (issue #5 item 3).

Hayes, Shumailov, Triantafillou, Khalifa, Papernot, "Inexact Unlearning Needs More Careful
Evaluations to Avoid a False Sense of Privacy" (2024) adapt LiRA (Carlini et al. 2022) to
unlearning. A population attack fits one threshold for every example; U-LiRA fits a dedicated
attacker per example, which is much stronger because examples differ widely in how confidently
any model classifies them. The question it answers: *after the method unlearned an example, can
an adversary tell it apart from an example the model never saw?* (retraining from scratch makes
the two indistinguishable by construction.)

This module holds the attack's data and maths, which need no training:

* :class:`ShadowResult`: one unlearned shadow model's view of the T target examples (which it
  saw, and their logit-scaled confidences), JSON-serialisable (:func:`save_shadow_results`);
* :func:`logit_scaled_confidence`: the per-example score ``z_y − logsumexp_{i≠y} z_i``;
* :func:`ulira_scores` and :func:`ulira_attack`: the leave-one-shadow-out attack. Each shadow in
  turn is the target model; for each target example, Gaussians are fitted to its scores under the
  other K−1 shadows where it was unlearned ("in") and where it was never seen ("out"); the attack
  is the log-likelihood ratio. Reported: ROC AUC over all (target model, example) pairs, balanced
  accuracy at the likelihood ratio 1 (the Bayes threshold for the balanced game of the paper),
  and TPR at low FPR where the number of never-seen pairs makes it meaningful. 0.5 is ideal.

Planning, training, unlearning and caching the K shadows (random halves of the training pool,
each example's membership an independent fair coin) is a workflow:
:mod:`conun.workflows.ulira_shadows` (``run_ulira``, ``ulira_audit``) produces the
:class:`ShadowResult` list this module attacks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from conun.evaluation.accuracy import model_logits
from conun.evaluation.privacy import LOW_FPRS, roc_auc
from conun.io import atomic_write_json
from conun.models.base import Classifier

RESULTS_FORMAT = "conun-ulira-results/1"
"""Format tag of a file written by :func:`save_shadow_results`."""

MIN_SHADOWS = 4
"""Fewest shadows accepted. Leave-one-out scores a (target model, example) pair only when the
other K−1 shadows include some that unlearned the example and some that never saw it; with
independent fair-coin memberships that fails for a share ``2^(2−K)`` of the pairs (1/4 at K = 4,
1/64 at K = 8), which are left out of the metrics."""

MIN_FALSE_POSITIVES = 10
"""A TPR at FPR α (the rates of :data:`LOW_FPRS`) is reported only when α × (never-seen pairs)
>= this: with fewer negatives the threshold is set by a handful of scores and the number is
noise."""

Variance = Literal["per_example", "pooled"]


class ULiraError(ValueError):
    """A U-LiRA request that cannot be run; the message says why and what is allowed."""


# -- results of the shadows ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ShadowResult:
    """One unlearned shadow's view of the targets.

    Attributes:
        shadow: index of the shadow.
        seed: its seed.
        method: the method that unlearned it.
        targets: ``(T,)`` int64 training-set indices of the targets.
        seen: ``(T,)`` bool, True where the target was in the shadow's half (so it was unlearned;
            under ``original`` it is simply a member), False where it was never seen.
        scores: ``(T,)`` float64 logit-scaled confidences ``z_y − logsumexp_{i≠y} z_i`` of the
            unlearned shadow.
        metrics: accuracies of the unlearned shadow (results.json meanings).
        train_seconds: wall-clock of training the shadow (the cached value on a cache hit).
        unlearn_seconds: wall-clock of the method itself.
        from_cache: the trained shadow came from the cache.
    """

    shadow: int
    seed: int
    method: str
    targets: NDArray[np.int64]
    seen: NDArray[np.bool_]
    scores: NDArray[np.float64]
    metrics: dict[str, float | None] = field(default_factory=dict)
    train_seconds: float = 0.0
    unlearn_seconds: float = 0.0
    from_cache: bool = False

    def __post_init__(self) -> None:
        shapes = {self.targets.shape, self.seen.shape, self.scores.shape}
        if len(shapes) != 1 or self.targets.ndim != 1:
            raise ULiraError(
                "targets, seen and scores must be (T,) arrays of one length; got shapes "
                f"{self.targets.shape}, {self.seen.shape}, {self.scores.shape}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (floats are written with full precision: ``from_dict`` restores them
        bit for bit)."""
        return {
            "shadow": self.shadow,
            "seed": self.seed,
            "method": self.method,
            "targets": self.targets.tolist(),
            "seen": self.seen.tolist(),
            "scores": self.scores.tolist(),
            "metrics": self.metrics,
            "train_seconds": self.train_seconds,
            "unlearn_seconds": self.unlearn_seconds,
            "from_cache": self.from_cache,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShadowResult:
        return cls(
            shadow=int(data["shadow"]),
            seed=int(data["seed"]),
            method=str(data["method"]),
            targets=np.asarray(data["targets"], dtype=np.int64),
            seen=np.asarray(data["seen"], dtype=np.bool_),
            scores=np.asarray(data["scores"], dtype=np.float64),
            metrics=dict(data.get("metrics", {})),
            train_seconds=float(data.get("train_seconds", 0.0)),
            unlearn_seconds=float(data.get("unlearn_seconds", 0.0)),
            from_cache=bool(data.get("from_cache", False)),
        )


def save_shadow_results(path: str | Path, results: Sequence[ShadowResult]) -> Path:
    """Write shadow results as one JSON file (atomically)."""
    return atomic_write_json(
        path, {"format": RESULTS_FORMAT, "shadows": [result.to_dict() for result in results]}
    )


def load_shadow_results(path: str | Path) -> list[ShadowResult]:
    """Read a file written by :func:`save_shadow_results`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise ULiraError(f"{path} is not a U-LiRA results file (format {RESULTS_FORMAT})")
    return [ShadowResult.from_dict(entry) for entry in data["shadows"]]


def logit_scaled_confidence(
    model: Classifier,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int = 1024,
    channels_last: bool = False,
) -> Tensor:
    """LiRA's per-example score ``z_y − logsumexp_{i≠y} z_i`` (= ``log p_y − log(1 − p_y)``).

    Computed from the logits rather than the probabilities so that it stays finite and exact for
    confidently classified examples (where ``1 − p_y`` underflows), which are the ones that leak.

    Args:
        model: the classifier; evaluated in eval mode, its mode restored afterwards.
        images: ``(N, C, H, W)`` normalised images.
        labels: ``(N,)`` int64 true classes.
        batch_size: images per forward pass.
        channels_last: feed batches in channels_last format.

    Returns:
        ``(N,)`` float64 scores on the CPU (members: high).
    """
    if images.shape[0] == 0:
        return torch.empty(0, dtype=torch.float64)
    # The classifiers output float32 logits, so widening them after the forward pass loses
    # nothing; the subtraction below is done in float64.
    logits = model_logits(
        model, images, batch_size=batch_size, channels_last=channels_last
    ).double()
    true_logit = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf"))
    return true_logit - torch.logsumexp(others, dim=1)


# -- the attack (pure math) ----------------------------------------------------------------------


@dataclass(frozen=True)
class ULiraScores:
    """Leave-one-shadow-out attack scores.

    Attributes:
        llr: ``(K, T)`` float64 log-likelihood ratio ``log N(s; μ_in, σ_in) − log N(s; μ_out,
            σ_out)`` of target example t under target model k (Gaussians fitted on the other
            shadows); NaN where one of the two Gaussians could not be fitted.
        seen: ``(K, T)`` bool ground truth: target model k unlearned example t (True) or never
            saw it (False).
    """

    llr: NDArray[np.float64]
    seen: NDArray[np.bool_]

    @property
    def valid(self) -> NDArray[np.bool_]:
        """``(K, T)`` pairs with a defined score."""
        return np.isfinite(self.llr)


def _stack(results: Sequence[ShadowResult]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    if len(results) < MIN_SHADOWS:
        raise ULiraError(f"the attack needs at least {MIN_SHADOWS} shadows, got {len(results)}")
    targets = results[0].targets
    for result in results[1:]:
        if not np.array_equal(result.targets, targets):
            raise ULiraError(
                f"shadow {result.shadow} scored other targets than shadow {results[0].shadow}: "
                "results of one audit must share the targets"
            )
    scores = np.stack([result.scores for result in results]).astype(np.float64)
    seen = np.stack([result.seen for result in results]).astype(np.bool_)
    if not np.isfinite(scores).all():
        raise ULiraError("shadow scores must be finite")
    return scores, seen


def _gaussian_logpdf(
    x: NDArray[np.float64], mean: NDArray[np.float64], std: NDArray[np.float64]
) -> NDArray[np.float64]:
    result: NDArray[np.float64] = (
        -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi)
    )
    return result


def _fit(
    scores: NDArray[np.float64],
    mask: NDArray[np.bool_],
    *,
    variance: Variance,
    min_std: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-example Gaussian of the ``mask``-ed scores.

    Args:
        scores: ``(S, T)`` scores of S fitting shadows.
        mask: ``(S, T)`` which entries belong to the group.
        variance: ``per_example`` (its own std where it has >= 2 scores, else the pooled one) or
            ``pooled`` (one within-example std for the group, LiRA's "fixed variance", which is
            the better estimate when there are few shadows).
        min_std: floor on every std: a near-constant score (e.g. an example every shadow
            classifies at the same saturated confidence) must not give an infinitely sharp
            Gaussian.

    Returns:
        ``(T,)`` means (NaN where the group is empty for that example) and ``(T,)`` stds.
    """
    count = mask.sum(axis=0)  # (T,)
    total = np.where(mask, scores, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    squared = np.where(mask, (scores - np.nan_to_num(mean)) ** 2, 0.0).sum(axis=0)  # (T,)
    dof = np.maximum(count - 1, 0)
    pooled = math.sqrt(squared.sum() / dof.sum()) if dof.sum() > 0 else 0.0
    if variance == "pooled":
        std = np.full(count.shape, pooled)
    else:
        own = np.sqrt(squared / np.maximum(dof, 1))
        std = np.where(count >= 2, own, pooled)
    return mean, np.maximum(std, min_std)


def ulira_scores(
    results: Sequence[ShadowResult],
    *,
    variance: Variance = "per_example",
    min_std: float = 0.1,
) -> ULiraScores:
    """Leave-one-shadow-out log-likelihood ratios of every (target model, example) pair.

    For target model k and example t, Gaussians are fitted to t's scores under the other K−1
    shadows where t was unlearned (in) and where it was never seen (out); the score is the
    log-likelihood ratio of t's score under model k. Larger means "unlearned".

    Args:
        results: one per shadow, all with the same targets.
        variance: ``per_example`` or ``pooled`` (see :func:`_fit`).
        min_std: floor on the fitted stds, in units of the logit-scaled confidence.

    Returns:
        ``(K, T)`` ratios and ground truth.
    """
    if variance not in ("per_example", "pooled"):
        raise ULiraError(f"variance must be 'per_example' or 'pooled', got {variance!r}")
    if not min_std > 0:
        raise ULiraError(f"min_std must be > 0, got {min_std}")
    scores, seen = _stack(results)
    num_shadows = scores.shape[0]
    llr = np.full(scores.shape, np.nan)
    for target_model in range(num_shadows):
        others = np.arange(num_shadows) != target_model
        mean_in, std_in = _fit(scores[others], seen[others], variance=variance, min_std=min_std)
        mean_out, std_out = _fit(scores[others], ~seen[others], variance=variance, min_std=min_std)
        observed = scores[target_model]
        llr[target_model] = _gaussian_logpdf(observed, mean_in, std_in) - _gaussian_logpdf(
            observed, mean_out, std_out
        )
    return ULiraScores(llr=llr, seen=seen)


def ulira_attack(
    results: Sequence[ShadowResult],
    *,
    variance: Variance = "per_example",
    min_std: float = 0.1,
) -> dict[str, float]:
    """The U-LiRA attack's strength on a set of shadow results (pure math, deterministic).

    Every shadow in turn is the target model (:func:`ulira_scores`); the pairs of all target
    models are pooled; pairs whose other shadows hold only one of the two groups have no score
    and are left out. Memberships are fair coins, so unlearned and never-seen pairs are about
    balanced; accuracies are balanced accuracies regardless (the paper's balanced game).

    Args:
        results: one per shadow (>= 4), all with the same targets.
        variance: ``per_example`` or ``pooled`` Gaussian widths.
        min_std: floor on the fitted stds.

    Returns:
        - ``auc``: ROC AUC of the ratio, unlearned vs never seen (0.5 ideal, 1 total leak);
        - ``accuracy``: balanced accuracy of "unlearned iff likelihood ratio > 1" (0.5 ideal);
        - ``best_accuracy``: balanced accuracy at the best threshold (LiRA's reporting;
          optimistic, since the threshold is chosen on the evaluated pairs);
        - ``auc_mean`` / ``auc_std``: mean and standard deviation of the per-target-model AUCs;
        - ``tpr_at_{1pct,0p1pct}_fpr``: TPR at that FPR, present only when the never-seen pairs
          allow at least :data:`MIN_FALSE_POSITIVES` false positives at that rate;
        - ``unlearned_score_mean`` / ``never_seen_score_mean``: mean logit-scaled confidence of
          the two groups (how far unlearning moved the examples, on average);
        - ``num_unlearned`` / ``num_never_seen``: pairs evaluated;
        - ``num_shadows``, ``num_targets``.
    """
    from sklearn.metrics import roc_curve

    fitted = ulira_scores(results, variance=variance, min_std=min_std)
    scores, seen = _stack(results)
    valid = fitted.valid
    labels = fitted.seen[valid]
    llr = fitted.llr[valid]
    num_unlearned, num_never_seen = int(labels.sum()), int((~labels).sum())
    if num_unlearned == 0 or num_never_seen == 0:
        raise ULiraError(
            "the attack needs both unlearned and never-seen pairs; got "
            f"{num_unlearned} and {num_never_seen}"
        )
    tpr_threshold = float((llr[labels] > 0).mean())
    tnr_threshold = float((llr[~labels] <= 0).mean())
    fpr, tpr, _ = roc_curve(labels, llr)
    metrics: dict[str, float] = {
        "auc": roc_auc(llr, labels),
        "accuracy": 0.5 * (tpr_threshold + tnr_threshold),
        "best_accuracy": float(np.max(0.5 * (tpr + 1.0 - fpr))),
    }
    per_model = [
        roc_auc(fitted.llr[k][valid[k]], fitted.seen[k][valid[k]])
        for k in range(fitted.llr.shape[0])
        if 0 < fitted.seen[k][valid[k]].sum() < valid[k].sum()
    ]
    metrics["auc_mean"] = float(np.mean(per_model)) if per_model else float("nan")
    metrics["auc_std"] = float(np.std(per_model)) if per_model else float("nan")
    for suffix, rate in LOW_FPRS:
        if rate * num_never_seen >= MIN_FALSE_POSITIVES:
            metrics[f"tpr_at_{suffix}_fpr"] = float(tpr[fpr <= rate].max())
    metrics["unlearned_score_mean"] = float(scores[seen].mean())
    metrics["never_seen_score_mean"] = float(scores[~seen].mean())
    metrics["num_unlearned"] = float(num_unlearned)
    metrics["num_never_seen"] = float(num_never_seen)
    metrics["num_shadows"] = float(scores.shape[0])
    metrics["num_targets"] = float(scores.shape[1])
    return metrics


__all__ = [
    "LOW_FPRS",
    "MIN_SHADOWS",
    "ShadowResult",
    "ULiraError",
    "ULiraScores",
    "load_shadow_results",
    "logit_scaled_confidence",
    "save_shadow_results",
    "ulira_attack",
    "ulira_scores",
]
