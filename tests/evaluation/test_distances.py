"""Distances to the retrained model and the summary scores, against loops and hand-built numbers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from conun.evaluation.distances import (
    DISTANCE_COLUMNS,
    UnlearningScores,
    activation_distance,
    avg_gap,
    jensen_shannon,
    js_divergence,
    output_distances,
    summary_scores,
    tow,
    weight_distance,
)


def loop_js(p: list[float], q: list[float]) -> float:
    """JS(p, q) = H(m) - (H(p) + H(q)) / 2, the entropy form (a different formula on purpose)."""

    def entropy(x: list[float]) -> float:
        return -sum(v * math.log(v) for v in x if v > 0)

    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    return entropy(m) - (entropy(p) + entropy(q)) / 2


def test_jensen_shannon_matches_a_loop_and_known_values() -> None:
    generator = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn(40, 6, generator=generator, dtype=torch.float64), dim=1)
    q = torch.softmax(3 * torch.randn(40, 6, generator=generator, dtype=torch.float64), dim=1)
    rows = jensen_shannon(p, q)
    for i in range(40):
        assert float(rows[i]) == pytest.approx(loop_js(p[i].tolist(), q[i].tolist()), abs=1e-12)
    known = jensen_shannon(
        torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.3, 0.7]]),
        torch.tensor([[0.0, 1.0], [0.5, 0.5], [0.3, 0.7]]),
    )
    # disjoint supports: ln 2; (1, 0) vs (½, ½): ½ ln(4/3) + ¼ ln(2/3) + ¼ ln 2; identical: 0
    expected = [math.log(2), 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2), 0]
    torch.testing.assert_close(known, torch.tensor(expected, dtype=torch.float64))


def test_js_divergence_of_logits_is_the_mean_and_bounded() -> None:
    generator = torch.Generator().manual_seed(1)
    a = 30 * torch.randn(200, 10, generator=generator)  # near one-hot outputs, float32
    b = 30 * torch.randn(200, 10, generator=generator)
    value = js_divergence(a, b)
    loop = [
        loop_js(x.tolist(), y.tolist())
        for x, y in zip(a.double().softmax(1), b.double().softmax(1), strict=True)
    ]
    assert value == pytest.approx(sum(loop) / len(loop), abs=1e-9)
    assert 0 < value <= math.log(2)
    assert js_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
    # -inf logits are zero probabilities: one-hot vs one-hot of another class is ln 2
    one_hot = torch.tensor([[0.0, -torch.inf], [-torch.inf, 0.0]])
    assert js_divergence(one_hot, one_hot.flip(1)) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="same shape"):
        js_divergence(a, b[:, :5])


def test_activation_distance_on_hand_built_outputs() -> None:
    # softmax(log p) = p: rows (1, 0) vs (0, 1) are sqrt(2) apart, (½, ½) vs (1, 0) sqrt(½)
    first = torch.log(torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]]))
    second = torch.log(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.2, 0.8]]))
    expected = (math.sqrt(2) + math.sqrt(0.5) + 0.0) / 3
    assert activation_distance(first, second) == pytest.approx(expected)
    assert activation_distance(second, second) == 0.0


def test_weight_distance_over_matching_parameters() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    other = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for parameter in other.parameters():
            parameter.fill_(1.0)
        other[1].running_mean.fill_(5.0)  # a buffer, not a weight: ignored
    # 6 + 2 linear entries and 2 + 2 batch-norm entries differ by 1 each
    assert weight_distance(model, other) == pytest.approx(math.sqrt(12))
    assert weight_distance(other, other) == 0.0
    with pytest.raises(ValueError, match=r"different architectures.*0\.weight: shape"):
        weight_distance(model, nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2)))
    with pytest.raises(ValueError, match="only in the reference model"):
        weight_distance(nn.Sequential(nn.Linear(3, 2)), model)


def test_output_distances_of_a_model_to_itself_and_to_a_perturbed_copy() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    images = torch.randn(30, 1, 4, 4)
    same = output_distances(model, copy.deepcopy(model), images, batch_size=8)
    assert same == {"js_divergence": 0.0, "activation_distance": 0.0, "weight_distance": 0.0}
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved[1].bias.add_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        expected_js = js_divergence(model(images), moved(images))
    distances = output_distances(model, moved, images)
    assert set(distances) <= set(DISTANCE_COLUMNS)
    assert distances["weight_distance"] == pytest.approx(1.0)
    assert distances["js_divergence"] == pytest.approx(expected_js) and expected_js > 0


UNLEARNED = UnlearningScores(forget_acc=0.90, retain_acc=0.95, test_acc=0.85, mia_efficacy=0.30)
RETRAINED = UnlearningScores(forget_acc=0.80, retain_acc=0.97, test_acc=0.86, mia_efficacy=0.25)


def test_avg_gap_and_tow_on_hand_built_numbers() -> None:
    # |ΔUA| = |0.10 - 0.20| = 0.10, |ΔRA| = 0.02, |ΔTA| = 0.01, |ΔMIA| = 0.05 → mean 0.045
    assert avg_gap(UNLEARNED, RETRAINED) == pytest.approx(0.045)
    assert tow(UNLEARNED, RETRAINED) == pytest.approx(0.90 * 0.98 * 0.99)
    assert avg_gap(RETRAINED, RETRAINED) == 0.0 and tow(RETRAINED, RETRAINED) == 1.0
    worst = UnlearningScores(forget_acc=0.0, retain_acc=0.0, test_acc=0.0, mia_efficacy=1.0)
    best = UnlearningScores(forget_acc=1.0, retain_acc=1.0, test_acc=1.0, mia_efficacy=0.0)
    assert avg_gap(worst, best) == 1.0 and tow(worst, best) == 0.0
    scores = summary_scores(UNLEARNED, RETRAINED)
    assert set(scores) == {"avg_gap", "tow"} <= set(DISTANCE_COLUMNS)
    without_mia = UnlearningScores(forget_acc=0.9, retain_acc=0.95, test_acc=0.85)
    assert set(summary_scores(without_mia, RETRAINED)) == {"tow"}
    with pytest.raises(ValueError, match="MIA-efficacy"):
        avg_gap(without_mia, RETRAINED)


def test_scores_from_results_metrics() -> None:
    metrics = {
        "forget_train_acc": 0.9,
        "retain_train_acc": 0.95,
        "test_acc": 0.85,
        "retain_test_acc": 0.88,
        "mia_efficacy": 0.3,
    }
    assert UnlearningScores.from_metrics(metrics) == UNLEARNED
    class_scores = UnlearningScores.from_metrics(metrics, test_key="retain_test_acc")
    assert class_scores.test_acc == 0.88
    with pytest.raises(ValueError, match="forget_train_acc"):
        UnlearningScores.from_metrics({**metrics, "forget_train_acc": None})
