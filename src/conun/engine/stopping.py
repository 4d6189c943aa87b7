"""Stopping rules of contrastive unlearning (Lee et al., IJCAI 2025), evaluated on small subsets so
checks stay cheap.

- class: stop when the accuracy on held-out samples of the forgotten classes is <= 1/C (or
  ``stopping.class_accuracy``) and, by default, the accuracy on a subset of the forget set too
  (``stopping.class_checks_forget``);
- sample: stop when the accuracy on (a subset of) the forget set is <= the accuracy on held-out
  data: going further would make forgotten samples look *less* familiar than unseen data, which
  is itself a membership signal. ``stopping.sample_rule = "indistinguishable"`` stops as soon
  as the forget subset cannot be told from the held-out subset within the sampling noise of
  their sizes, on accuracy (two proportions) and on per-sample losses (a two-sample rank test);
  every sample-scenario check records that AUC, whichever rule stops the run.

"Held-out" is the validation split carved from train before the original was trained (default),
or the test set (``stopping.eval_set = "test"``, the paper's choice).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from conun.config import StoppingConfig
from conun.data.arrays import ArrayDataset, DatasetBundle
from conun.data.splits import ForgetRetainSplit
from conun.engine.training import NonFiniteLossError
from conun.evaluation.accuracy import gathered_logits
from conun.models.base import Classifier


class StoppingSetupError(ValueError):
    """The stopping rule cannot be evaluated with the data at hand."""


@dataclass(frozen=True)
class EvaluationSets:
    """The small sets a stopping rule looks at.

    Attributes:
        forget: a random subset of the forget set ``D_u_tr`` (recorded in the history).
        held_out: held-out samples the rule compares against: of the forgotten classes in the
            class scenario (``D_u_ts``'s stand-in), of all classes in the sample scenario.
        held_out_indices: ``(Nh,)`` their indices into the held-out pool
            (:func:`held_out_pool`), so that logits computed elsewhere on the pool can stand in
            for a forward pass; None where the subset was built by hand.
    """

    forget: ArrayDataset
    held_out: ArrayDataset
    held_out_indices: torch.Tensor | None = None


@dataclass(frozen=True)
class RuleCheck:
    """One evaluation of the rule.

    Attributes:
        stop: whether the rule holds.
        forget_acc: accuracy on the forget subset.
        held_out_acc: accuracy on the held-out subset.
        threshold: the bound on ``forget_acc``: the class rule's bound (1/C by default), the
            sample rule's held-out accuracy (plus ``acc_band`` with
            ``sample_rule="indistinguishable"``).
        member_auc: sample scenario: AUC of "lower loss = member" between the forget subset
            (positives) and the held-out subset; 0.5 = indistinguishable. None for classes.
        auc_band: half-width ``z * sigma`` of the null band around 0.5 for these subset sizes.
        acc_band: half-width ``z * se`` of the band of the accuracy difference (sample scenario).
    """

    stop: bool
    forget_acc: float
    held_out_acc: float
    threshold: float
    member_auc: float | None = None
    auc_band: float | None = None
    acc_band: float | None = None

    def to_dict(self) -> dict[str, float | bool | None]:
        return dataclasses.asdict(self)


def null_auc_band(positives: int, negatives: int, confidence: float) -> float:
    """Half-width of the central ``confidence`` interval of a ROC AUC when both classes come
    from the same continuous distribution (the Mann-Whitney U statistic's null distribution,
    normal approximation): ``z * sqrt((n1 + n2 + 1) / (12 n1 n2))``.

    Args:
        positives: ``n1``, samples of the positive class.
        negatives: ``n2``, samples of the negative class.
        confidence: e.g. 0.95 for z = 1.96 (two-sided).
    """
    if positives < 1 or negatives < 1:
        raise ValueError(f"need samples on both sides, got {positives} and {negatives}")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    return z * math.sqrt((positives + negatives + 1) / (12 * positives * negatives))


def accuracy_band(first: float, n1: int, second: float, n2: int, confidence: float) -> float:
    """Half-width of the central ``confidence`` interval of the difference of two accuracies
    measured on ``n1`` and ``n2`` samples when both come from one accuracy (two-proportion test,
    pooled, normal approximation): ``z * sqrt(p (1 - p) (1 / n1 + 1 / n2))``, ``p`` the pooled
    accuracy.

    Args:
        first: the first accuracy, on ``n1`` samples.
        n1: its sample count.
        second: the second accuracy, on ``n2`` samples.
        n2: its sample count.
        confidence: e.g. 0.95 for z = 1.96 (two-sided).
    """
    if n1 < 1 or n2 < 1:
        raise ValueError(f"need samples on both sides, got {n1} and {n2}")
    pooled = (first * n1 + second * n2) / (n1 + n2)
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    return z * math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))


def member_auc(forget_losses: torch.Tensor, held_out_losses: torch.Tensor) -> float:
    """AUC of the score "lower loss = member", forget samples as positives: the probability that
    a random forget sample has a lower loss than a random held-out one (ties count half).

    Args:
        forget_losses: ``(N1,)`` per-sample losses of the forget subset.
        held_out_losses: ``(N2,)`` per-sample losses of the held-out subset.
    """
    # The Mann-Whitney form (average ranks for ties), in torch: a check must not pay for
    # importing scikit-learn (~0.4 s on the first check of a process, measured: half of a
    # 500-sample run).
    n1, n2 = forget_losses.numel(), held_out_losses.numel()
    if n1 < 1 or n2 < 1:
        raise ValueError(f"need losses on both sides, got {n1} and {n2}")
    scores = -torch.cat([forget_losses, held_out_losses]).double().flatten()
    ordered, order = torch.sort(scores)
    _, counts = torch.unique_consecutive(ordered, return_counts=True)
    ends = torch.cumsum(counts, dim=0).double()  # 1-based rank of each tie group's last value
    average = ends - (counts.double() - 1) / 2  # the group's mean rank
    ranks = torch.empty_like(scores)
    ranks[order] = torch.repeat_interleave(average, counts)
    positive_ranks = float(ranks[:n1].sum())
    return (positive_ranks - n1 * (n1 + 1) / 2) / (n1 * n2)


def _random_indices(indices: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` of ``indices`` at random (all of them, in order, if there are no more)."""
    if indices.numel() > size:
        indices = indices[torch.randperm(indices.numel(), generator=generator)[:size]]
    return indices


def held_out_pool(
    data: DatasetBundle, split: ForgetRetainSplit, config: StoppingConfig
) -> tuple[ArrayDataset, torch.Tensor]:
    """The held-out data a rule compares against: ``(dataset, (M,) indices into it)`` — the
    validation split carved from train, or the whole test set (``eval_set="test"``).

    Raises:
        StoppingSetupError: ``eval_set="validation"`` but the model was trained without one.
    """
    if config.eval_set == "test":
        return data.test, torch.arange(len(data.test))
    if split.validation.numel() == 0:
        raise StoppingSetupError(
            "the stopping rule's evaluation set is 'validation' but this model was trained "
            "without a validation split (validation_fraction=0); train with a validation "
            "split, or set stopping.eval_set=test (the paper's choice)"
        )
    return data.train, split.validation


#: Most held-out samples a sample-scenario run looks at: the stopping rule draws its held-out
#: subset from them and a method that needs the original's behaviour on unseen data (contrastive
#: unlearning's matched anchors) evaluates them once, so that the rule's first check reads its
#: held-out side from that evaluation instead of a second one.
HELD_OUT_CANDIDATES = 4096


def held_out_candidates(
    data: DatasetBundle, split: ForgetRetainSplit, config: StoppingConfig
) -> tuple[ArrayDataset, torch.Tensor]:
    """:func:`held_out_pool`, in the sample scenario cut to at most
    :data:`HELD_OUT_CANDIDATES` evenly spaced samples (an even stride, not a random draw: the
    run's random streams stay as they are). The class scenario's pool is left whole (the rule
    reads the forgotten classes' samples of it).

    Returns:
        ``(dataset, (M,) indices into it)``.
    """
    pool, indices = held_out_pool(data, split, config)
    if split.scenario == "sample" and indices.numel() > HELD_OUT_CANDIDATES:
        spaced = torch.linspace(0, indices.numel() - 1, HELD_OUT_CANDIDATES).long()
        indices = indices[spaced]
    return pool, indices


def build_evaluation_sets(
    data: DatasetBundle,
    split: ForgetRetainSplit,
    config: StoppingConfig,
    *,
    generator: torch.Generator,
) -> EvaluationSets:
    """Draw the evaluation subsets once per run (seeded).

    Raises:
        StoppingSetupError: ``eval_set="validation"`` but the model was trained without a
            validation split, or no held-out sample of a forgotten class exists.
    """
    pool, pool_indices = held_out_candidates(data, split, config)
    if split.scenario == "class":
        in_classes = torch.isin(pool.labels[pool_indices], torch.tensor(split.classes))
        pool_indices = pool_indices[in_classes]
        if pool_indices.numel() == 0:
            raise StoppingSetupError(
                f"the {config.eval_set} set has no sample of the forgotten classes "
                f"{list(split.classes)}: the class rule cannot be evaluated"
            )
    forget = data.train.subset(_random_indices(split.forget, config.eval_size, generator))
    held_out_size = config.eval_size
    if split.scenario == "sample" and config.held_out_per_forget is not None:
        held_out_size = min(held_out_size, math.ceil(config.held_out_per_forget * len(forget)))
    held_out_indices = _random_indices(pool_indices, held_out_size, generator)
    return EvaluationSets(
        forget=forget,
        held_out=pool.subset(held_out_indices),
        held_out_indices=held_out_indices,
    )


def check_rule(
    model: Classifier,
    sets: EvaluationSets,
    split: ForgetRetainSplit,
    num_classes: int,
    *,
    batch_size: int,
    channels_last: bool,
    checks_forget: bool = True,
    sample_rule: Literal["accuracy", "indistinguishable"] = "accuracy",
    confidence: float = 0.95,
    class_accuracy: float | None = None,
) -> RuleCheck:
    """Evaluate the scenario's rule on the evaluation sets (one forward pass over each).

    Raises:
        NonFiniteLossError: the model's outputs are not finite (it diverged).

    Args:
        checks_forget: class scenario only: the forget subset must be at chance too.
        sample_rule: sample scenario only: ``accuracy`` or ``indistinguishable`` (see
            :class:`conun.config.StoppingConfig`).
        confidence: the ``indistinguishable`` rule's null band.
        class_accuracy: class scenario only: the bound on both accuracies; None = 1/C.
    """
    return decide_rule(
        subset_logits(model, sets.forget, batch_size=batch_size, channels_last=channels_last),
        subset_logits(model, sets.held_out, batch_size=batch_size, channels_last=channels_last),
        sets,
        split,
        num_classes,
        checks_forget=checks_forget,
        sample_rule=sample_rule,
        confidence=confidence,
        class_accuracy=class_accuracy,
    )


def subset_logits(
    model: Classifier, subset: ArrayDataset, *, batch_size: int, channels_last: bool
) -> torch.Tensor:
    """``(N, C)`` the model's logits on one evaluation subset (eval mode, shared out under
    torchrun).

    Raises:
        NonFiniteLossError: the model's outputs are not finite (it diverged).
    """
    logits = gathered_logits(
        model, subset.images, batch_size=batch_size, channels_last=channels_last
    )
    if not torch.isfinite(logits).all():
        raise NonFiniteLossError(
            "the model's outputs became NaN or infinite (checked by the stopping rule); "
            "lower the learning rate or check the inputs"
        )
    return logits


def decide_rule(
    forget_logits: torch.Tensor,
    held_out_logits: torch.Tensor,
    sets: EvaluationSets,
    split: ForgetRetainSplit,
    num_classes: int,
    *,
    checks_forget: bool = True,
    sample_rule: Literal["accuracy", "indistinguishable"] = "accuracy",
    confidence: float = 0.95,
    class_accuracy: float | None = None,
) -> RuleCheck:
    """The scenario's rule on given logits (arguments as :func:`check_rule`).

    Args:
        forget_logits: ``(Nf, C)`` logits of ``sets.forget``.
        held_out_logits: ``(Nh, C)`` logits of ``sets.held_out``.
    """
    forget_acc = _accuracy(forget_logits, sets.forget.labels)
    held_out_acc = _accuracy(held_out_logits, sets.held_out.labels)
    n_forget, n_held_out = len(sets.forget), len(sets.held_out)
    bound, acc_band = _accuracy_bound(
        forget_acc,
        n_forget,
        held_out_acc,
        n_held_out,
        split,
        num_classes,
        sample_rule=sample_rule,
        confidence=confidence,
        class_accuracy=class_accuracy,
    )
    if split.scenario == "class":
        stop = held_out_acc <= bound and (not checks_forget or forget_acc <= bound)
        return RuleCheck(stop, forget_acc, held_out_acc, bound)
    auc = member_auc(
        F.cross_entropy(forget_logits, sets.forget.labels, reduction="none"),
        F.cross_entropy(held_out_logits, sets.held_out.labels, reduction="none"),
    )
    band = null_auc_band(n_forget, n_held_out, confidence)
    # indistinguishable: one-sided stop, two-sided bands: the loop moves both statistics down
    # from the original's; past the lower edge (over-forgetting) it stops too, and the history
    # shows it. accuracy: the AUC is recorded, not acted on.
    stop = forget_acc <= bound and (acc_band is None or auc <= 0.5 + band)
    return RuleCheck(stop, forget_acc, held_out_acc, bound, auc, band, acc_band)


def _accuracy_bound(
    forget_acc: float,
    n_forget: int,
    held_out_acc: float,
    n_held_out: int,
    split: ForgetRetainSplit,
    num_classes: int,
    *,
    sample_rule: Literal["accuracy", "indistinguishable"],
    confidence: float,
    class_accuracy: float | None,
) -> tuple[float, float | None]:
    """The rule's bound on the forget accuracy (the class rule's on both accuracies), and the
    ``indistinguishable`` rule's accuracy band (None for the other rules): shared by
    :func:`decide_rule` and :func:`screen_predictions`, so that a screen never disagrees with
    the rule on where the bound lies."""
    if split.scenario == "class":
        return class_bound(num_classes, class_accuracy), None
    if sample_rule == "indistinguishable":
        acc_band = accuracy_band(forget_acc, n_forget, held_out_acc, n_held_out, confidence)
        return held_out_acc + acc_band, acc_band
    return held_out_acc, None


#: Confidence of a screen's bands (:func:`screen_fails`): wider than a run's rule, so that a
#: screen fails only where the rule clearly cannot hold.
SCREEN_CONFIDENCE = 0.95


def screen_fails(
    forget_logits: torch.Tensor,
    held_out_logits: torch.Tensor,
    sets: EvaluationSets,
    split: ForgetRetainSplit,
    num_classes: int,
    *,
    checks_forget: bool = True,
    class_accuracy: float | None = None,
) -> bool:
    """Whether part of the forget subset already shows that the rule cannot hold: a cheap first
    look for a check that is expected to fail (the one before the first step).

    Sample scenario: the forget accuracy is above the held-out accuracy by more than the
    :data:`SCREEN_CONFIDENCE` band of their difference (:func:`accuracy_band`); the
    ``accuracy`` rule and the ``indistinguishable`` rule at any confidence up to
    :data:`SCREEN_CONFIDENCE` then fail. Class scenario: the held-out accuracy of the classes,
    or (with ``checks_forget``) the forget accuracy, is above the rule's bound ``b`` by more
    than ``z * sqrt(b (1 - b) / n)``.

    Args:
        forget_logits: ``(Nf, C)`` logits of ``sets.forget`` (the leading samples of the
            forget subset).
        held_out_logits: ``(Nh, C)`` logits of ``sets.held_out``.
    """
    return accuracies_fail(
        _accuracy(forget_logits, sets.forget.labels),
        len(sets.forget),
        _accuracy(held_out_logits, sets.held_out.labels),
        len(sets.held_out),
        split,
        num_classes,
        checks_forget=checks_forget,
        class_accuracy=class_accuracy,
    )


def accuracies_fail(
    forget_acc: float,
    n_forget: int,
    held_out_acc: float,
    n_held_out: int,
    split: ForgetRetainSplit,
    num_classes: int,
    *,
    checks_forget: bool = True,
    class_accuracy: float | None = None,
) -> bool:
    """:func:`screen_fails` on accuracies already measured: ``forget_acc`` on ``n_forget``
    forget samples, ``held_out_acc`` on ``n_held_out`` held-out ones."""
    if split.scenario == "class":
        bound = class_bound(num_classes, class_accuracy)
        z = statistics.NormalDist().inv_cdf(0.5 + SCREEN_CONFIDENCE / 2)

        def above(accuracy: float, n: int) -> bool:
            return accuracy > bound + z * math.sqrt(bound * (1 - bound) / n)

        return above(held_out_acc, n_held_out) or (checks_forget and above(forget_acc, n_forget))
    band = accuracy_band(forget_acc, n_forget, held_out_acc, n_held_out, SCREEN_CONFIDENCE)
    return forget_acc > held_out_acc + band


def class_bound(num_classes: int, class_accuracy: float | None) -> float:
    """The class rule's bound on both accuracies: ``class_accuracy``, or chance (1/C)."""
    return 1.0 / num_classes if class_accuracy is None else class_accuracy


def screen_predictions(
    forget_correct: torch.Tensor,
    held_out_logits: torch.Tensor,
    sets: EvaluationSets,
    split: ForgetRetainSplit,
    num_classes: int,
    *,
    checks_forget: bool = True,
    sample_rule: Literal["accuracy", "indistinguishable"] = "accuracy",
    confidence: float = 0.95,
    class_accuracy: float | None = None,
) -> RuleCheck | None:
    """:func:`screen_fails` on predictions made elsewhere: a failed check (``stop`` False, no
    AUC) where ``forget_correct`` already shows that the rule cannot hold, else None.

    Both the screen's band and, in the sample scenario, the rule's own bound must fail, so that
    a rule asked at a confidence above :data:`SCREEN_CONFIDENCE` is never screened past.

    Args:
        forget_correct: ``(B,)`` bool, which forget samples a model classified correctly (the
            first step's forward pass: :attr:`conun.engine.task.LossTerms.forget_correct`).
        held_out_logits: ``(Nh, C)`` logits of ``sets.held_out``.
    """
    n_forget = forget_correct.numel()
    if n_forget == 0:
        return None
    forget_acc = float(forget_correct.detach().double().mean())
    held_out_acc = _accuracy(held_out_logits, sets.held_out.labels)
    n_held_out = len(sets.held_out)
    bound, _ = _accuracy_bound(
        forget_acc,
        n_forget,
        held_out_acc,
        n_held_out,
        split,
        num_classes,
        sample_rule=sample_rule,
        confidence=confidence,
        class_accuracy=class_accuracy,
    )
    fails = accuracies_fail(
        forget_acc,
        n_forget,
        held_out_acc,
        n_held_out,
        split,
        num_classes,
        checks_forget=checks_forget,
        class_accuracy=class_accuracy,
    )
    if not fails or (split.scenario == "sample" and forget_acc <= bound):
        return None
    return RuleCheck(False, forget_acc, held_out_acc, bound)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    # Same arithmetic as conun.evaluation.accuracy.accuracy on the same logits.
    return float((logits.argmax(dim=1) == labels).double().mean())
