"""The privacy audit against ground truth: per-row loops, hand-built ROC cases, a memorising
model whose training samples must be detected, and models that never saw the audited samples,
which must be at chance.

Tolerances at chance are 3 standard deviations of the null distribution at the sample sizes used
(the audit is seeded, so each check is deterministic; 3σ would fail by bad luck in ~0.3% of
seeds, not in ~0.3% of runs):

- an AUC of a fixed scorer on n1 vs n2 exchangeable samples: Mann–Whitney null,
  σ = sqrt((n1 + n2 + 1) / (12 n1 n2));
- the difference of two member rates of one fixed classifier on n1 and n2 exchangeable samples:
  σ = sqrt(p (1 - p) (1/n1 + 1/n2)) <= 0.5 sqrt(1/n1 + 1/n2);
- a mean over k folds of per-fold AUCs (accuracies) has at most the per-fold σ, computed with
  the fold sizes.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from conun.data.arrays import ArrayDataset, DatasetBundle
from conun.data.registry import load_dataset
from conun.data.splits import ForgetRetainSplit
from conun.evaluation.accuracy import model_logits
from conun.evaluation.privacy import (
    ATTACKS,
    AUDIT_COLUMNS,
    SCORES,
    AttackName,
    attack_partition,
    audit_model,
    forget_vs_test_attack,
    membership_attack,
    membership_scores,
    mia_efficacy,
    tpr_at_fpr,
)
from conun.workflows.training import TrainedModel

# --- per-sample scores -------------------------------------------------------------------------


def loop_scores(logits: list[float], label: int) -> dict[str, float]:
    """The textbook formulas, one row at a time, in float64."""
    top = max(logits)
    exps = [math.exp(z - top) for z in logits]
    p = [e / sum(exps) for e in exps]
    p_y = p[label]
    others = [p[i] for i in range(len(p)) if i != label]
    return {
        "loss": -math.log(p_y),
        "confidence": p_y,
        "entropy": -sum(q * math.log(q) for q in p if q > 0),
        "modified_entropy": -(1 - p_y) * math.log(p_y) - sum(q * math.log(1 - q) for q in others),
        "logit_confidence": math.log(p_y) - math.log(1 - p_y),
    }


def test_scores_match_a_per_row_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(60, 7, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 7, (60,), generator=generator)
    scores = membership_scores(logits, labels)
    assert tuple(scores) == SCORES
    for row in range(60):
        expected = loop_scores(logits[row].tolist(), int(labels[row]))
        for name in SCORES:
            assert scores[name].shape == (60,)
            assert float(scores[name][row]) == pytest.approx(expected[name], rel=1e-9, abs=1e-12)


def test_scores_are_finite_and_exact_when_float32_probabilities_round_to_one() -> None:
    # p_y = 1 - 2e^-60 is exactly 1.0 in float32 (and float64): log(1 - p_y) via probabilities
    # would be -inf. Hand-derived values for logits (a, 0, 0), a = 60:
    # label 0: loss ≈ 2e^-a ≈ 0, logit_confidence = a - ln 2, modified entropy ≈ 0;
    # label 1: loss ≈ a, logit_confidence ≈ -a, modified entropy ≈ a + (a - ln 2).
    a = 60.0
    logits = torch.tensor([[a, 0.0, 0.0], [a, 0.0, 0.0]], dtype=torch.float32)
    scores = membership_scores(logits, torch.tensor([0, 1]))
    for name in SCORES:
        assert torch.isfinite(scores[name]).all(), name
        assert scores[name].dtype == torch.float32
    assert float(scores["confidence"][0]) == 1.0  # the rounding the stable forms must survive
    assert float(scores["logit_confidence"][0]) == pytest.approx(a - math.log(2), rel=1e-6)
    assert float(scores["loss"][0]) == pytest.approx(0.0, abs=1e-6)
    assert float(scores["modified_entropy"][0]) == pytest.approx(0.0, abs=1e-6)
    assert float(scores["entropy"][0]) == pytest.approx(0.0, abs=1e-6)
    assert float(scores["loss"][1]) == pytest.approx(a, rel=1e-6)
    assert float(scores["logit_confidence"][1]) == pytest.approx(-a, rel=1e-6)
    assert float(scores["modified_entropy"][1]) == pytest.approx(2 * a - math.log(2), rel=1e-6)


def test_scores_reject_malformed_input() -> None:
    with pytest.raises(ValueError, match="C >= 2"):
        membership_scores(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be"):
        membership_scores(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


# --- ROC helpers and the fit / evaluation partition -------------------------------------------


def test_tpr_at_fpr_on_a_hand_built_case() -> None:
    scores = torch.tensor([0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1])
    member = torch.tensor([True, True, True, False, False, False, False])
    # FPR 0: threshold 0.8 catches 2 of 3 members and no non-member.
    assert tpr_at_fpr(scores, member, 0.0) == pytest.approx(2 / 3)
    assert tpr_at_fpr(scores, member, 0.2) == pytest.approx(2 / 3)  # 1/4 FPR is not <= 0.2
    assert tpr_at_fpr(scores, member, 0.25) == 1.0  # threshold 0.4: one of four non-members
    assert tpr_at_fpr(scores, member, 1.0) == 1.0
    # a tie between a member and a non-member cannot be split
    tied = torch.tensor([0.5, 0.5, 0.1])
    assert tpr_at_fpr(tied, torch.tensor([True, False, False]), 0.0) == 0.0
    assert tpr_at_fpr(tied, torch.tensor([True, False, False]), 0.5) == 1.0
    # 29 false positives of 100 are allowed at 29% although 0.29 * 100 = 28.999... in floats
    hundred = torch.tensor([3.0, 1.0] + [2.0] * 29 + [0.0] * 71)
    is_member = torch.tensor([True, True] + [False] * 100)
    assert tpr_at_fpr(hundred, is_member, 0.29) == 1.0
    assert tpr_at_fpr(hundred, is_member, 0.28) == 0.5
    with pytest.raises(ValueError, match="at least one member"):
        tpr_at_fpr(scores, torch.ones(7, dtype=torch.bool), 0.1)


def test_attack_partition_is_balanced_disjoint_and_seeded() -> None:
    part = attack_partition(500, 120, fit_fraction=0.5, seed=3)
    assert len(part.member_fit) == len(part.nonmember_fit) == 60
    assert len(part.member_eval) == len(part.nonmember_eval) == 60
    members = torch.cat([part.member_fit, part.member_eval])
    nonmembers = torch.cat([part.nonmember_fit, part.nonmember_eval])
    assert members.unique().numel() == 120 and int(members.max()) < 500
    assert torch.equal(nonmembers.sort().values, torch.arange(120))
    again = attack_partition(500, 120, fit_fraction=0.5, seed=3)
    assert torch.equal(part.member_fit, again.member_fit)
    other = attack_partition(500, 120, fit_fraction=0.5, seed=4)
    assert not torch.equal(part.member_fit, other.member_fit)
    with pytest.raises(ValueError, match="too few samples"):
        attack_partition(500, 2, seed=0)


# --- ground truth: a memorising model and models that never saw the audited samples ------------

NUM_FORGET, NUM_RETAIN = 150, 300


class Memoriser(nn.Module):
    """A wide one-hidden-layer MLP on 8x8 digits; with random labels it can only memorise."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def memorise(data: ArrayDataset, index: Tensor) -> Memoriser:
    """Full-batch Adam until every training sample is fitted (asserted): ~0.5 s on a CPU core."""
    torch.manual_seed(0)
    model = Memoriser()
    images, labels = data.images[index], data.labels[index]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    with torch.no_grad():
        assert bool((model(images).argmax(dim=1) == labels).all()), "did not memorise"
    return model.eval()


class GroundTruth:
    """Digits images with random labels (train and test alike), a sample split of the training
    set, and three models: one trained on forget + retain, one on retain only (the forget set is
    unseen, like a retrained model's), one on other samples only (has seen nothing audited)."""

    def __init__(self) -> None:
        digits = load_dataset("digits")
        generator = torch.Generator().manual_seed(0)
        # Random labels: nothing can be learnt that transfers to unseen samples, so membership
        # is the only thing that separates members from non-members.
        train = ArrayDataset(
            digits.train.images, torch.randint(0, 10, (len(digits.train),), generator=generator)
        )
        test = ArrayDataset(
            digits.test.images, torch.randint(0, 10, (len(digits.test),), generator=generator)
        )
        self.data = DatasetBundle("random-digits", train, test, 10, digits.mean, digits.std)
        order = torch.randperm(len(train), generator=generator)
        forget, retain = order[:NUM_FORGET], order[NUM_FORGET : NUM_FORGET + NUM_RETAIN]
        held_out = order[NUM_FORGET + NUM_RETAIN :]
        self.split = ForgetRetainSplit.from_ids(forget, len(train), validation=held_out)
        self.original = memorise(train, torch.cat([forget, retain]))
        self.retrained = memorise(train, retain)
        self.stranger = memorise(train, held_out[:NUM_RETAIN])


@pytest.fixture(scope="module")
def truth() -> GroundTruth:
    return GroundTruth()


def auc_sigma(n1: int, n2: int) -> float:
    return math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))


def rate_difference_sigma(n1: int, n2: int) -> float:
    return 0.5 * math.sqrt(1 / n1 + 1 / n2)


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_detects_the_memorised_samples(truth: GroundTruth, attack: AttackName) -> None:
    # Measured (seed 0): logistic AUC 1.00, forget member rate 1.00, test member rate ~0.1 (the
    # test samples whose random label happens to be the memoriser's guess look like members).
    audit = audit_model(truth.original, truth.data, truth.split, seed=0, attack=attack)
    print(attack, {key: round(value, 3) for key, value in audit.items()})
    assert set(audit) == set(AUDIT_COLUMNS)
    assert audit["mia_auc"] >= 0.9
    assert audit["mia_forget_auc"] >= 0.9
    assert audit["mia_forget_member_rate"] >= 0.9
    assert audit["mia_retain_member_rate"] >= 0.9
    assert audit["mia_test_member_rate"] <= 0.25
    assert audit["mia_accuracy"] >= 0.8
    # (b) the SVC predicts (almost) no forget sample to be a non-member
    assert audit["mia_efficacy"] <= 0.1
    assert audit["mia_efficacy_auc"] >= 0.9
    # (c) forget losses are told apart from test losses
    assert audit["mia_forget_vs_test_accuracy"] >= 0.8
    assert audit["mia_forget_vs_test_auc"] >= 0.9


def test_unseen_forget_samples_are_at_chance(truth: GroundTruth) -> None:
    """The retrained model never saw D_u_tr: every forget metric sits at its test-set level."""
    audit = audit_model(truth.retrained, truth.data, truth.split, seed=0)
    n_eval, n_forget = int(audit["mia_num_eval"]), NUM_FORGET
    # It did see D_r_tr: the attack itself works (so being at chance below is not a broken attack).
    assert audit["mia_auc"] >= 0.9
    # (a) forget samples are predicted member as often as held-out test samples, and ranked alike
    difference = audit["mia_forget_member_rate"] - audit["mia_test_member_rate"]
    assert abs(difference) <= 3 * rate_difference_sigma(n_forget, n_eval)  # 3σ = 0.17
    assert abs(audit["mia_forget_auc"] - 0.5) <= 3 * auc_sigma(n_forget, n_eval)  # 3σ = 0.10
    # (b) efficacy = share predicted non-member, as for held-out test samples
    efficacy_gap = audit["mia_efficacy"] - (1 - audit["mia_efficacy_test_member_rate"])
    assert abs(efficacy_gap) <= 3 * rate_difference_sigma(n_forget, n_eval)
    # (c) 150 forget vs 150 test losses, 5 folds of 30 + 30
    fold = int(audit["mia_forget_vs_test_num_samples"]) // 5
    assert abs(audit["mia_forget_vs_test_auc"] - 0.5) <= 3 * auc_sigma(fold, fold)  # 0.22
    assert abs(audit["mia_forget_vs_test_accuracy"] - 0.5) <= 3 * 0.5 / math.sqrt(2 * fold)


def test_a_model_that_saw_nothing_audited_gives_chance_attacks(truth: GroundTruth) -> None:
    audit = audit_model(truth.stranger, truth.data, truth.split, seed=0)
    n_eval = int(audit["mia_num_eval"])
    assert n_eval == 150  # 300 retain vs 360 test: 300 pairs, half held out
    for key in ("mia_auc", "mia_efficacy_auc"):
        assert abs(audit[key] - 0.5) <= 3 * auc_sigma(n_eval, n_eval), key  # 3σ = 0.10
    assert abs(audit["mia_accuracy"] - 0.5) <= 3 * 0.5 / math.sqrt(2 * n_eval)  # 3σ = 0.087
    gap = audit["mia_retain_member_rate"] - audit["mia_forget_member_rate"]
    assert abs(gap) <= 3 * rate_difference_sigma(n_eval, NUM_FORGET)


def test_attacks_on_scores_directly(truth: GroundTruth) -> None:
    """The building blocks, on precomputed scores: sizes, balance and several features at once."""
    data, split = truth.data, truth.split
    logits = model_logits(truth.original, data.train.images)
    train_scores = membership_scores(logits, data.train.labels)
    test_scores = membership_scores(
        model_logits(truth.original, data.test.images), data.test.labels
    )
    retain = {k: v[split.retain] for k, v in train_scores.items()}
    forget = {k: v[split.forget] for k, v in train_scores.items()}
    result = membership_attack(
        retain, test_scores, forget, score=["loss", "entropy", "modified_entropy"], seed=1
    )
    assert result.num_fit + result.num_eval == NUM_RETAIN  # min(300 retain, 360 test)
    assert result.to_dict()["mia_forget_member_rate"] == result.forget_member_rate >= 0.9
    efficacy = mia_efficacy(
        retain["confidence"], test_scores["confidence"], forget["confidence"], seed=1
    )
    assert efficacy.to_dict()["mia_efficacy"] == efficacy.efficacy <= 0.1
    versus = forget_vs_test_attack(forget["loss"], test_scores["loss"], seed=1, folds=3)
    assert versus.num_samples == NUM_FORGET and versus.auc >= 0.9
    with pytest.raises(ValueError, match="unknown membership score"):
        membership_attack(retain, test_scores, forget, score="margin")
    with pytest.raises(ValueError, match="needs at least"):
        forget_vs_test_attack(forget["loss"][:3], test_scores["loss"], folds=5)


def test_audit_is_deterministic_and_uses_retained_classes_in_the_class_scenario(
    truth: GroundTruth,
) -> None:
    data = truth.data
    split = ForgetRetainSplit.from_classes(data.train.labels, [3], num_classes=10)
    first = audit_model(truth.original, data, split, seed=5, batch_size=97)
    second = audit_model(truth.original, data, split, seed=5)
    assert first == second
    in_class = int((data.test.labels == 3).sum())
    # (a), (b): non-members are D_r_ts only; (c): the reference is D_u_ts only
    pairs = min(split.retain.numel(), len(data.test) - in_class)
    assert first["mia_num_fit"] + first["mia_num_eval"] == pairs
    assert first["mia_forget_vs_test_num_samples"] == min(split.forget.numel(), in_class)
    assert audit_model(truth.original, data, split, seed=6) != first


def test_model_logits_batches_and_restores_the_mode(truth: GroundTruth) -> None:
    model = truth.original.train()
    images = truth.data.test.images[:50]
    logits = model_logits(model, images, batch_size=7)
    assert model.training
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits, model(images))


# --- the digits original of the shared fixture --------------------------------------------------


def test_audit_of_the_digits_original(digits_run: tuple[Path, TrainedModel]) -> None:
    """The real small_cnn: every column present and in range; numbers printed for the record."""
    _, trained = digits_run
    split = ForgetRetainSplit.from_random(
        len(trained.data.train),
        num_samples=100,
        seed=0,
        validation=torch.tensor(trained.meta.validation),
    )
    audit = audit_model(trained.model, trained.data, split, seed=0)
    print({key: round(value, 3) for key, value in audit.items()})
    assert list(audit) == list(AUDIT_COLUMNS)
    for key, value in audit.items():
        if "num" not in key:
            assert 0.0 <= value <= 1.0, key
    # It trained on D_r_tr with 100% train accuracy: members are never ranked below chance.
    n_eval = int(audit["mia_num_eval"])
    assert audit["mia_auc"] >= 0.5 - 3 * auc_sigma(n_eval, n_eval)
