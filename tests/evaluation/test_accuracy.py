"""Split accuracies against a per-sample loop, on a fixed random model and a hand-built split."""

from __future__ import annotations

import torch

from conun.data.arrays import ArrayDataset, DatasetBundle
from conun.data.splits import ForgetRetainSplit
from conun.evaluation.accuracy import evaluate_split
from conun.models import build_model


def loop_accuracy(model: torch.nn.Module, data: ArrayDataset, keep: list[int]) -> float:
    hits = [int(model(data.images[i : i + 1]).argmax()) == int(data.labels[i]) for i in keep]
    return sum(hits) / len(hits)


def test_every_split_matches_a_per_sample_loop() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=3, input_shape=(1, 8, 8)).eval()
    train = ArrayDataset(torch.randn(40, 1, 8, 8), torch.arange(3).repeat(14)[:40])
    test = ArrayDataset(torch.randn(21, 1, 8, 8), torch.arange(3).repeat(7))
    data = DatasetBundle("toy", train, test, 3, (0.0,), (1.0,))
    validation = torch.tensor([0, 1, 2])
    split = ForgetRetainSplit.from_classes(train.labels, [2], num_classes=3, validation=validation)
    metrics = evaluate_split(model, data, split, batch_size=7)
    with torch.no_grad():
        assert metrics.forget_train_acc == loop_accuracy(model, train, split.forget.tolist())
        assert metrics.retain_train_acc == loop_accuracy(model, train, split.retain.tolist())
        in_class = [i for i in range(21) if int(test.labels[i]) == 2]
        others = [i for i in range(21) if int(test.labels[i]) != 2]
        assert metrics.forget_test_acc == loop_accuracy(model, test, in_class)
        assert metrics.retain_test_acc == loop_accuracy(model, test, others)
        assert metrics.test_acc == loop_accuracy(model, test, list(range(21)))
    sample = ForgetRetainSplit.from_ids([5, 9, 30], 40, validation=validation)
    sample_metrics = evaluate_split(model, data, sample)
    assert sample_metrics.forget_test_acc is None and sample_metrics.retain_test_acc is None
    with torch.no_grad():
        assert sample_metrics.forget_train_acc == loop_accuracy(model, train, [5, 9, 30])
