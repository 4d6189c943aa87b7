"""Membership-inference audit of a (possibly unlearned) model (issue #5; the paper's metrics).

Three population attacks, all fitted on the audited model's own outputs:

a. **The paper's attack** (:func:`membership_attack`): a classifier (logistic regression, SVC or
   gradient boosting) on per-sample scores separates members (part of ``D_r_tr``) from
   non-members (part of ``D_ts``); it is then applied to ``D_u_tr`` and to held-out ``D_r_tr``.
   Reported as the member prediction rates ``mia_forget_member_rate`` (should fall to the
   retrained model's level) and ``mia_retain_member_rate`` (should stay where it was), plus the
   attack's strength on held-out members vs non-members (AUC, accuracy, TPR at low FPR).
b. **MIA-efficacy** (:func:`mia_efficacy`; Jia et al. NeurIPS 2023, Fan et al. ICLR 2024, after
   OPTML-Group/Unlearn-Sparse ``evaluation/SVC_MIA``): an RBF SVC on the true-class confidence,
   fitted on retain (members) vs test (non-members); the share of ``D_u_tr`` it predicts
   *non-member*. Higher means more forgetting; the retrained model's value is the target.
c. **Forget vs test** (:func:`forget_vs_test_attack`; NeurIPS 2023 Machine Unlearning challenge
   starting kit): logistic regression separating forget-set losses from as many test losses,
   k-fold cross-validated. 0.5 accuracy / AUC is ideal (forget samples look like unseen ones).

Members and non-members are balanced, and the samples an attack is fitted on are disjoint from
the samples it is evaluated on. Everything is a pure function of the model's logits and an int
seed, so an audit is reproducible.

In the class scenario the non-members are the test samples of the *retained* classes (``D_r_ts``)
for (a) and (b): test samples of a forgotten class would be recognised as non-members by their
class alone, which measures forgetting of the class rather than membership. For (c) the
reference is ``D_u_ts`` (test samples of the forgotten classes), so that the retrained model,
which never saw the class, scores 0.5 there as it does in the sample scenario.

scikit-learn is imported inside the functions that fit attacks: importing it costs about a
second, which importing this module (and so the CLI) should not pay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn

from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRetainSplit
from conun.evaluation.accuracy import model_logits

AttackName = Literal["logistic", "svc", "gradient_boosting"]
"""Attack classifiers of the paper's attack (a): scikit-learn's LogisticRegression, SVC (RBF) and
GradientBoostingClassifier."""

ATTACKS: tuple[str, ...] = get_args(AttackName)

SCORES: tuple[str, ...] = (
    "loss",
    "confidence",
    "entropy",
    "modified_entropy",
    "logit_confidence",
)
"""Names of the per-sample scores :func:`membership_scores` returns, in its order:

- ``loss``: cross-entropy ``-log p_y`` (members: low);
- ``confidence``: true-class probability ``p_y`` (members: high);
- ``entropy``: ``-Σ_i p_i log p_i`` of the prediction (members: low; ignores the label);
- ``modified_entropy``: Song & Mittal's Mentr, ``-(1-p_y) log p_y - Σ_{i≠y} p_i log(1-p_i)``
  (members: low; 0 only for a confident correct prediction, large for a confident wrong one);
- ``logit_confidence``: LiRA's ``log p_y - log(1-p_y)`` (members: high; roughly Gaussian per
  sample, which is why LiRA uses it).
"""

DEFAULT_ATTACK_SCORE: tuple[str, ...] = ("logit_confidence",)
"""Default features of the paper's attack: LiRA's scaled confidence. It carries the same ranking
as the loss and the confidence, but unlike them it is not squashed against 0 or 1 for the well-fit
samples that matter, so a linear attack with a standard-scaled feature places its threshold well."""

LOW_FPRS: tuple[tuple[str, float], ...] = (("1pct", 0.01), ("0p1pct", 0.001))
"""False-positive rates at which TPRs are reported (key suffix, rate)."""

AUDIT_COLUMNS: dict[str, tuple[str, str]] = {
    # (a) the paper's attack
    "mia_forget_member_rate": (
        "(a) share of D_u_tr the attack predicts member",
        "closer to retrain (falls after unlearning)",
    ),
    "mia_retain_member_rate": (
        "(a) share of held-out D_r_tr the attack predicts member",
        "closer to retrain (should not fall)",
    ),
    "mia_test_member_rate": (
        "(a) share of held-out test samples the attack predicts member (its false-positive rate)",
        "closer to retrain",
    ),
    "mia_auc": (
        "(a) attack ROC AUC, held-out D_r_tr (members) vs held-out test (non-members)",
        "closer to retrain; 0.5 = no membership leakage",
    ),
    "mia_accuracy": (
        "(a) attack accuracy on the balanced held-out members and non-members",
        "closer to retrain; 0.5 = no membership leakage",
    ),
    "mia_tpr_at_1pct_fpr": (
        "(a) held-out TPR at 1% FPR (at FPR 0 when fewer than 100 non-members)",
        "closer to retrain; 0.01 = no leakage",
    ),
    "mia_tpr_at_0p1pct_fpr": (
        "(a) held-out TPR at 0.1% FPR (at FPR 0 when fewer than 1000 non-members)",
        "closer to retrain; 0.001 = no leakage",
    ),
    "mia_forget_auc": (
        "(a) ROC AUC of the attack score, D_u_tr (positives) vs held-out test",
        "closer to retrain (0.5 when forget samples look unseen)",
    ),
    "mia_num_fit": ("(a, b) members fitted on (as many non-members)", "sample size, no direction"),
    "mia_num_eval": ("(a, b) held-out members (as many non-members)", "sample size, no direction"),
    # (b) MIA-efficacy
    "mia_efficacy": (
        "(b) share of D_u_tr an SVC on true-class confidence predicts NON-member",
        "closer to retrain (higher = more forgetting)",
    ),
    "mia_efficacy_retain_member_rate": (
        "(b) share of held-out D_r_tr the SVC predicts member",
        "closer to retrain",
    ),
    "mia_efficacy_test_member_rate": (
        "(b) share of held-out test samples the SVC predicts member",
        "closer to retrain",
    ),
    "mia_efficacy_auc": (
        "(b) SVC ROC AUC, held-out D_r_tr vs held-out test",
        "closer to retrain; 0.5 = no membership leakage",
    ),
    "mia_efficacy_tpr_at_1pct_fpr": ("(b) SVC held-out TPR at 1% FPR", "closer to retrain"),
    "mia_efficacy_tpr_at_0p1pct_fpr": ("(b) SVC held-out TPR at 0.1% FPR", "closer to retrain"),
    # (c) forget vs test, the NeurIPS 2023 challenge's attack
    "mia_forget_vs_test_accuracy": (
        "(c) k-fold CV accuracy of logistic regression on losses, D_u_tr vs test",
        "0.5 is ideal",
    ),
    "mia_forget_vs_test_auc": (
        "(c) k-fold CV ROC AUC (mean over folds), D_u_tr vs test",
        "0.5 is ideal",
    ),
    "mia_forget_vs_test_tpr_at_1pct_fpr": (
        "(c) TPR at 1% FPR of the pooled out-of-fold attack scores",
        "0.01 is ideal",
    ),
    "mia_forget_vs_test_tpr_at_0p1pct_fpr": (
        "(c) TPR at 0.1% FPR of the pooled out-of-fold attack scores",
        "0.001 is ideal",
    ),
    "mia_forget_vs_test_num_samples": (
        "(c) forget samples used (as many test samples)",
        "sample size, no direction",
    ),
}
"""Every key :func:`audit_model` returns → (meaning, good direction). "Closer to retrain" means
the target is the value the same audit gives for the model retrained on ``D_r_tr`` only."""


# --- per-sample scores -------------------------------------------------------------------------


def membership_scores(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Per-sample membership scores (see :data:`SCORES`), vectorised and numerically stable.

    Everything is computed from log-probabilities (``log_softmax``) and log-sum-exps that leave
    a class out, never from ``log`` of a probability: in float32 ``p_y`` rounds to exactly 1 once
    the margin exceeds ~17, and ``log(1 - p_y)`` would then be ``-inf``.

    Args:
        logits: ``(N, C)`` raw model outputs, ``C >= 2``; half precision is promoted to float32.
        labels: ``(N,)`` int64 true classes in ``[0, C)``.

    Returns:
        One ``(N,)`` tensor per name of :data:`SCORES`, in the logits' (promoted) dtype and device.
    """
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (N, C) with C >= 2; got {tuple(logits.shape)}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"labels must be (N,) = ({logits.shape[0]},); got shape {tuple(labels.shape)}"
        )
    if not logits.dtype.is_floating_point or logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    labels = labels.to(device=logits.device, dtype=torch.long)
    log_p = torch.log_softmax(logits, dim=1)  # (N, C)
    p = log_p.exp()
    log_p_y = log_p.gather(1, labels[:, None]).squeeze(1)  # (N,)
    true_class = torch.zeros_like(log_p, dtype=torch.bool).scatter_(1, labels[:, None], True)

    # log(1 - p_y) = logsumexp_{i≠y} z_i - logsumexp_i z_i: exact even when p_y rounds to 1.
    total = torch.logsumexp(logits, dim=1)  # (N,)
    others_of_y = torch.logsumexp(logits.masked_fill(true_class, -torch.inf), dim=1)
    log_1m_p_y = others_of_y - total

    # log(1 - p_i) for every class: log1p(-p_i) is accurate while p_i <= 1/2, which holds for all
    # classes but at most one, the arg-max; that one gets the leave-one-out form as for y.
    top = logits.argmax(dim=1, keepdim=True)  # (N, 1)
    is_top = torch.zeros_like(true_class).scatter_(1, top, True)
    log_1m_p_top = torch.logsumexp(logits.masked_fill(is_top, -torch.inf), dim=1) - total
    log_1m_p = torch.where(is_top, log_1m_p_top[:, None], torch.log1p(-p.clamp(max=0.5)))

    # Σ_{i≠y} p_i log(1 - p_i); p_i = 0 (underflow) contributes 0, never 0 * -inf.
    wrong_terms = torch.where(true_class | (p == 0), 0.0, p * log_1m_p)
    modified_entropy = -log_1m_p_y.exp() * log_p_y - wrong_terms.sum(dim=1)
    entropy = -torch.where(p == 0, 0.0, p * log_p).sum(dim=1)
    return {
        "loss": -log_p_y,
        "confidence": log_p_y.exp(),
        "entropy": entropy,
        "modified_entropy": modified_entropy,
        "logit_confidence": log_p_y - log_1m_p_y,
    }


# --- metrics of an attack ----------------------------------------------------------------------


def tpr_at_fpr(scores: Tensor, is_member: Tensor, fpr: float) -> float:
    """Highest true-positive rate of a threshold attack whose false-positive rate is <= ``fpr``.

    The attack predicts member when ``score >= t``; every distinct score (and +inf, giving 0/0)
    is tried as ``t``, ties included exactly. With ``n`` non-members the achievable FPRs are
    multiples of ``1/n``: below ``1/n`` this is the TPR at FPR 0.

    Args:
        scores: ``(N,)`` attack scores, higher = more likely member.
        is_member: ``(N,)`` bool ground truth.
        fpr: the largest acceptable false-positive rate, in ``[0, 1]``.

    Returns:
        TPR in ``[0, 1]``.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    scores = scores.detach().double().cpu().flatten()
    is_member = is_member.detach().cpu().flatten().bool()
    if scores.shape != is_member.shape:
        raise ValueError("scores and is_member must have the same length")
    positives = torch.sort(scores[is_member]).values
    negatives = torch.sort(scores[~is_member]).values
    if positives.numel() == 0 or negatives.numel() == 0:
        raise ValueError("tpr_at_fpr needs at least one member and one non-member")
    thresholds = torch.unique(scores)
    # count(x >= t) = n - (number of x < t) = n - searchsorted(left)
    false_positives = negatives.numel() - torch.searchsorted(negatives, thresholds, side="left")
    true_positives = positives.numel() - torch.searchsorted(positives, thresholds, side="left")
    # Compare counts, not rates: 29 of 100 must pass at fpr=0.29, though 0.29 * 100 = 28.999...
    allowed = int(np.floor(fpr * negatives.numel() + 1e-9))
    feasible = true_positives[false_positives <= allowed]
    return float(feasible.max()) / positives.numel() if feasible.numel() else 0.0


def roc_auc(scores: np.ndarray[Any, Any], is_member: np.ndarray[Any, Any]) -> float:
    """ROC AUC of an attack score (scikit-learn's ``roc_auc_score``).

    Args:
        scores: ``(N,)`` attack scores, higher = more likely member.
        is_member: ``(N,)`` ground truth, bool or 0/1.

    Returns:
        The area under the ROC curve, in ``[0, 1]``; 0.5 = chance.
    """
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(is_member.astype(np.int64), scores))


def _low_fpr_tprs(scores: np.ndarray[Any, Any], is_member: np.ndarray[Any, Any]) -> list[float]:
    member = torch.from_numpy(is_member.astype(bool))
    return [tpr_at_fpr(torch.from_numpy(scores), member, rate) for _, rate in LOW_FPRS]


# --- fit / evaluation partition ----------------------------------------------------------------


@dataclass(frozen=True)
class AttackPartition:
    """Disjoint, balanced index sets for fitting and evaluating a population attack.

    Attributes:
        member_fit: ``(n_fit,)`` indices into the members fitted on.
        nonmember_fit: ``(n_fit,)`` indices into the non-members fitted on.
        member_eval: ``(n_eval,)`` held-out member indices.
        nonmember_eval: ``(n_eval,)`` held-out non-member indices.
    """

    member_fit: Tensor
    nonmember_fit: Tensor
    member_eval: Tensor
    nonmember_eval: Tensor


def attack_partition(
    num_members: int, num_nonmembers: int, *, fit_fraction: float = 0.5, seed: int = 0
) -> AttackPartition:
    """Draw balanced fit and held-out sets of members and non-members, disjoint from each other.

    ``min(num_members, num_nonmembers)`` samples of each kind are used: ``fit_fraction`` of them
    to fit, the rest to evaluate; the unused members (usually most of ``D_r_tr``) are left out,
    so that neither the fit nor the held-out rates are dominated by one kind.

    Args:
        num_members: size of the member pool (indices ``0..num_members-1``).
        num_nonmembers: size of the non-member pool.
        fit_fraction: share of the pairs fitted on, in ``(0, 1)``.
        seed: seeds the draw (its own generator; the global RNG is untouched).
    """
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    pairs = min(num_members, num_nonmembers)
    num_fit = round(fit_fraction * pairs)
    num_eval = pairs - num_fit
    if num_fit < 2 or num_eval < 1:
        raise ValueError(
            f"too few samples for a membership attack: {num_members} members and "
            f"{num_nonmembers} non-members give {num_fit} pairs to fit and {num_eval} to evaluate "
            "(need at least 2 and 1)"
        )
    generator = torch.Generator().manual_seed(seed)
    members = torch.randperm(num_members, generator=generator)
    nonmembers = torch.randperm(num_nonmembers, generator=generator)
    return AttackPartition(
        member_fit=members[:num_fit],
        nonmember_fit=nonmembers[:num_fit],
        member_eval=members[num_fit:pairs],
        nonmember_eval=nonmembers[num_fit:pairs],
    )


def _features(scores: Mapping[str, Tensor], names: Sequence[str]) -> np.ndarray[Any, Any]:
    """``(N, F)`` float64 feature matrix of the named scores."""
    columns = [scores[name].detach().double().cpu() for name in names]
    matrix = torch.stack(columns, dim=1).numpy()
    if not np.isfinite(matrix).all():
        raise ValueError(f"non-finite membership scores in {list(names)} (NaN logits?)")
    return matrix


def _score_names(score: str | Sequence[str]) -> tuple[str, ...]:
    names = (score,) if isinstance(score, str) else tuple(score)
    unknown = [name for name in names if name not in SCORES]
    if not names or unknown:
        raise ValueError(f"unknown membership score {unknown or names}: choose from {SCORES}")
    return names


def make_attack_classifier(attack: AttackName, *, seed: int = 0) -> Any:
    """An unfitted scikit-learn attack classifier.

    Logistic regression and the SVC see standard-scaled features (scores differ in scale by
    orders of magnitude, and both are scale-sensitive); gradient boosting is scale-invariant.
    The SVC uses Unlearn-Sparse's hyper-parameters (RBF, ``C=3``, ``gamma="auto"``).
    """
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if attack == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression())
    if attack == "svc":
        return make_pipeline(StandardScaler(), SVC(kernel="rbf", C=3.0, gamma="auto"))
    if attack == "gradient_boosting":
        return GradientBoostingClassifier(random_state=seed)
    raise ValueError(f"unknown attack {attack!r}: choose from {ATTACKS}")


@dataclass(frozen=True)
class _HeldOut:
    """A fitted attack's numbers on held-out members vs non-members and on the forget set."""

    forget_member_rate: float
    retain_member_rate: float
    test_member_rate: float
    auc: float
    tprs: list[float]
    forget_auc: float


def _fit_and_apply(
    classifier: Any,
    retain: np.ndarray[Any, Any],
    test: np.ndarray[Any, Any],
    forget: np.ndarray[Any, Any],
    partition: AttackPartition,
) -> _HeldOut:
    """Fit on the partition's fit sets; evaluate on its held-out sets and on ``forget``."""
    fit_x = np.concatenate([retain[partition.member_fit], test[partition.nonmember_fit]])
    fit_y = np.concatenate(
        [np.ones(len(partition.member_fit)), np.zeros(len(partition.nonmember_fit))]
    )
    classifier.fit(fit_x, fit_y)
    member_x, nonmember_x = retain[partition.member_eval], test[partition.nonmember_eval]
    eval_x = np.concatenate([member_x, nonmember_x])
    eval_y = np.concatenate([np.ones(len(member_x)), np.zeros(len(nonmember_x))])
    # decision_function ranks like the member probability for all three classifiers, and the SVC
    # has no probabilities without an extra (randomised) Platt-scaling fit.
    eval_scores = classifier.decision_function(eval_x)
    forget_scores = classifier.decision_function(forget)
    return _HeldOut(
        forget_member_rate=float(np.mean(classifier.predict(forget) == 1)),
        retain_member_rate=float(np.mean(classifier.predict(member_x) == 1)),
        test_member_rate=float(np.mean(classifier.predict(nonmember_x) == 1)),
        auc=roc_auc(eval_scores, eval_y),
        tprs=_low_fpr_tprs(eval_scores, eval_y),
        forget_auc=roc_auc(
            np.concatenate([forget_scores, eval_scores[len(member_x) :]]),
            np.concatenate([np.ones(len(forget_scores)), np.zeros(len(nonmember_x))]),
        ),
    )


# --- (a) the paper's attack --------------------------------------------------------------------


@dataclass(frozen=True)
class MembershipAttackResult:
    """The paper's attack (a); fractions in [0, 1]. Keys and meanings: :data:`AUDIT_COLUMNS`."""

    forget_member_rate: float
    retain_member_rate: float
    test_member_rate: float
    auc: float
    accuracy: float
    tpr_at_1pct_fpr: float
    tpr_at_0p1pct_fpr: float
    forget_auc: float
    num_fit: int
    num_eval: int

    def to_dict(self) -> dict[str, float]:
        """The ``mia_*`` columns of :data:`AUDIT_COLUMNS`."""
        return {f"mia_{name}": float(value) for name, value in vars(self).items()}


def membership_attack(
    retain: Mapping[str, Tensor],
    test: Mapping[str, Tensor],
    forget: Mapping[str, Tensor],
    *,
    score: str | Sequence[str] = DEFAULT_ATTACK_SCORE,
    attack: AttackName = "logistic",
    seed: int = 0,
    fit_fraction: float = 0.5,
) -> MembershipAttackResult:
    """The paper's attack: fit on retain (members) vs test (non-members), apply to the forget set.

    Args:
        retain: :func:`membership_scores` of member candidates (``D_r_tr``), each ``(Nr,)``.
        test: scores of non-members (``D_ts``, or ``D_r_ts`` in the class scenario), ``(Nt,)``.
        forget: scores of the forget set ``D_u_tr``, ``(Nf,)``.
        score: the score name, or names, used as the attack's features.
        attack: the attack classifier (:data:`ATTACKS`).
        seed: seeds the fit / held-out draw (and gradient boosting).
        fit_fraction: share of the balanced pairs fitted on; the rest is held out.
    """
    names = _score_names(score)
    retain_x, test_x = _features(retain, names), _features(test, names)
    forget_x = _features(forget, names)
    partition = attack_partition(len(retain_x), len(test_x), fit_fraction=fit_fraction, seed=seed)
    held = _fit_and_apply(
        make_attack_classifier(attack, seed=seed), retain_x, test_x, forget_x, partition
    )
    return MembershipAttackResult(
        forget_member_rate=held.forget_member_rate,
        retain_member_rate=held.retain_member_rate,
        test_member_rate=held.test_member_rate,
        auc=held.auc,
        # balanced held-out sets: accuracy = mean of TPR and TNR
        accuracy=(held.retain_member_rate + 1.0 - held.test_member_rate) / 2,
        tpr_at_1pct_fpr=held.tprs[0],
        tpr_at_0p1pct_fpr=held.tprs[1],
        forget_auc=held.forget_auc,
        num_fit=len(partition.member_fit),
        num_eval=len(partition.member_eval),
    )


# --- (b) MIA-efficacy --------------------------------------------------------------------------


@dataclass(frozen=True)
class MIAEfficacyResult:
    """MIA-efficacy (b); fractions in [0, 1]. Keys and meanings: :data:`AUDIT_COLUMNS`."""

    efficacy: float
    retain_member_rate: float
    test_member_rate: float
    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_0p1pct_fpr: float

    def to_dict(self) -> dict[str, float]:
        """``mia_efficacy`` and the ``mia_efficacy_*`` columns of :data:`AUDIT_COLUMNS`."""
        values = vars(self)
        return {"mia_efficacy": self.efficacy} | {
            f"mia_efficacy_{name}": float(value)
            for name, value in values.items()
            if name != "efficacy"
        }


def mia_efficacy(
    retain_confidence: Tensor,
    test_confidence: Tensor,
    forget_confidence: Tensor,
    *,
    seed: int = 0,
    fit_fraction: float = 0.5,
) -> MIAEfficacyResult:
    """MIA-efficacy: share of the forget set an RBF SVC on ``p_y`` predicts as non-member.

    As Unlearn-Sparse's ``SVC_MIA`` (``SVC(C=3, gamma="auto", kernel="rbf")`` on the unscaled
    true-class confidence, members from ``D_r_tr``, non-members from ``D_ts``, balanced), except
    that part of both is held out here, so the SVC's own strength can be reported without bias.

    Args:
        retain_confidence: ``(Nr,)`` ``p_y`` of retain samples (members).
        test_confidence: ``(Nt,)`` ``p_y`` of test samples (non-members).
        forget_confidence: ``(Nf,)`` ``p_y`` of the forget set.
        seed: seeds the fit / held-out draw.
        fit_fraction: share of the balanced pairs fitted on.
    """
    from sklearn.svm import SVC

    def column(values: Tensor) -> np.ndarray[Any, Any]:
        return _features({"confidence": values}, ["confidence"])

    retain_x, test_x = column(retain_confidence), column(test_confidence)
    partition = attack_partition(len(retain_x), len(test_x), fit_fraction=fit_fraction, seed=seed)
    held = _fit_and_apply(
        SVC(C=3.0, gamma="auto", kernel="rbf"),
        retain_x,
        test_x,
        column(forget_confidence),
        partition,
    )
    return MIAEfficacyResult(
        efficacy=1.0 - held.forget_member_rate,
        retain_member_rate=held.retain_member_rate,
        test_member_rate=held.test_member_rate,
        auc=held.auc,
        tpr_at_1pct_fpr=held.tprs[0],
        tpr_at_0p1pct_fpr=held.tprs[1],
    )


# --- (c) forget vs test ------------------------------------------------------------------------


@dataclass(frozen=True)
class ForgetVsTestResult:
    """The challenge's forget-vs-test attack (c). Keys and meanings: :data:`AUDIT_COLUMNS`."""

    accuracy: float
    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_0p1pct_fpr: float
    num_samples: int

    def to_dict(self) -> dict[str, float]:
        """The ``mia_forget_vs_test_*`` columns of :data:`AUDIT_COLUMNS`."""
        return {f"mia_forget_vs_test_{name}": float(value) for name, value in vars(self).items()}


def forget_vs_test_attack(
    forget_loss: Tensor, test_loss: Tensor, *, seed: int = 0, folds: int = 5
) -> ForgetVsTestResult:
    """Logistic regression separating forget losses from test losses, k-fold cross-validated.

    As the NeurIPS 2023 Machine Unlearning challenge's starting kit: the larger set is
    sub-sampled to the size of the smaller one (balanced classes, so 0.5 is chance), the feature
    is the raw cross-entropy, the classifier scikit-learn's default ``LogisticRegression``. The
    kit averages over ``StratifiedShuffleSplit``; here ``StratifiedKFold`` (shuffled, seeded)
    evaluates every sample exactly once, which also gives pooled out-of-fold scores for the TPRs.

    Args:
        forget_loss: ``(Nf,)`` losses of the forget set (label: member).
        test_loss: ``(Nt,)`` losses of unseen samples (label: non-member).
        seed: seeds the sub-sampling and the folds.
        folds: k; each class needs at least k samples.

    Returns:
        Mean held-out accuracy and AUC over the folds, TPRs of the pooled out-of-fold scores.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    count = min(len(forget_loss), len(test_loss))
    if count < folds:
        raise ValueError(
            f"forget-vs-test attack: {len(forget_loss)} forget and {len(test_loss)} test "
            f"losses; {folds}-fold cross-validation needs at least {folds} of each"
        )
    generator = torch.Generator().manual_seed(seed)
    forget_pick = torch.randperm(len(forget_loss), generator=generator)[:count]
    test_pick = torch.randperm(len(test_loss), generator=generator)[:count]
    x = np.concatenate(
        [
            _features({"loss": test_loss[test_pick]}, ["loss"]),
            _features({"loss": forget_loss[forget_pick]}, ["loss"]),
        ]
    )
    y = np.concatenate([np.zeros(count, dtype=np.int64), np.ones(count, dtype=np.int64)])
    accuracies, aucs = [], []
    out_of_fold = np.zeros(len(y))
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        classifier = LogisticRegression().fit(x[fit], y[fit])
        out_of_fold[held] = classifier.decision_function(x[held])
        accuracies.append(float(np.mean(classifier.predict(x[held]) == y[held])))
        aucs.append(roc_auc(out_of_fold[held], y[held]))
    tprs = _low_fpr_tprs(out_of_fold, y)
    return ForgetVsTestResult(
        accuracy=float(np.mean(accuracies)),
        auc=float(np.mean(aucs)),
        tpr_at_1pct_fpr=tprs[0],
        tpr_at_0p1pct_fpr=tprs[1],
        num_samples=count,
    )


# --- the whole audit ---------------------------------------------------------------------------


def audit_model(
    model: nn.Module,
    data: DatasetBundle,
    split: ForgetRetainSplit,
    *,
    seed: int = 0,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    attack: AttackName = "logistic",
    score: str | Sequence[str] = DEFAULT_ATTACK_SCORE,
    fit_fraction: float = 0.5,
    folds: int = 5,
    channels_last: bool = False,
) -> dict[str, float]:
    """Run the three attacks (a), (b), (c) on ``model``, computing its logits once.

    Only the samples the attacks use are passed through the model: the forget set, the test set
    and as many retain samples as there are non-members (drawn with ``seed``).

    Args:
        model: the audited classifier (``model(x)`` returns ``(N, C)`` logits).
        data: the dataset ``split`` indexes into.
        split: the forget request; its ``retain`` are the members, ``forget`` the audited set.
        seed: seeds every random draw; the same seed gives the same numbers.
        batch_size: images per forward pass.
        device: where to run the model; None = where it is.
        attack: the classifier of the paper's attack (a).
        score: the feature(s) of attack (a); see :data:`SCORES`.
        fit_fraction: share of the balanced member / non-member pairs fitted on in (a) and (b).
        folds: k of the cross-validation in (c).
        channels_last: feed batches in channels_last format.

    Returns:
        Every key of :data:`AUDIT_COLUMNS` (including ``mia_forget_member_rate`` and
        ``mia_retain_member_rate`` of results.json) → value.
    """
    test_labels = data.test.labels
    if split.scenario == "class":
        in_forget_classes = torch.isin(test_labels, torch.tensor(split.classes))
        nonmember_index = torch.nonzero(~in_forget_classes).flatten()
        reference_index = torch.nonzero(in_forget_classes).flatten()
    else:
        nonmember_index = reference_index = torch.arange(len(data.test))
    generator = torch.Generator().manual_seed(seed)
    retain_pick = torch.randperm(split.retain.numel(), generator=generator)
    retain_index = split.retain[retain_pick[: nonmember_index.numel()]]
    train_index = torch.cat([split.forget, retain_index])

    def scores_of(images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        logits = model_logits(
            model, images, batch_size=batch_size, device=device, channels_last=channels_last
        )
        return membership_scores(logits, labels)

    train_scores = scores_of(data.train.images[train_index], data.train.labels[train_index])
    test_scores = scores_of(data.test.images, test_labels)
    num_forget = split.forget.numel()
    forget = {name: values[:num_forget] for name, values in train_scores.items()}
    retain = {name: values[num_forget:] for name, values in train_scores.items()}
    nonmember = {name: values[nonmember_index] for name, values in test_scores.items()}

    paper = membership_attack(
        retain, nonmember, forget, score=score, attack=attack, seed=seed, fit_fraction=fit_fraction
    )
    efficacy = mia_efficacy(
        retain["confidence"],
        nonmember["confidence"],
        forget["confidence"],
        seed=seed,
        fit_fraction=fit_fraction,
    )
    versus_test = forget_vs_test_attack(
        forget["loss"], test_scores["loss"][reference_index], seed=seed, folds=folds
    )
    return paper.to_dict() | efficacy.to_dict() | versus_test.to_dict()
