"""Contrastive unlearning on real data (digits): class and sample scenarios against the original."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conun.engine.stopping import accuracy_band
from conun.evaluation.results import RunRecord
from conun.methods.base import UnlearningBatch
from conun.methods.contrastive import ContrastiveUnlearning
from conun.models import build_model
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel


def test_class_unlearning_forgets_the_class_and_keeps_the_rest(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
) -> None:
    unlearn = run_on_digits
    _, trained = digits_run
    original = unlearn(trained, ForgetSpec(classes=(5,)), method="original").metrics
    record = unlearn(trained, ForgetSpec(classes=(5,)))
    metrics = record.metrics
    assert original["forget_test_acc"] > 0.9 and original["forget_train_acc"] > 0.9
    # The rule holds on the held-out (validation) samples of class 5 and, by default, on the
    # forget set (the whole of it here: eval_size 512 > ~130 samples): both at most 1/C.
    assert record.extra["stopped_by"] == "rule"
    assert record.history[-1]["held_out_acc"] <= 0.1
    assert record.history[-1]["forget_train_acc"] == metrics["forget_train_acc"] <= 0.1
    # The test set's class-5 accuracy follows (measured <= 0.11 on seeds 0-4).
    assert metrics["forget_test_acc"] <= 0.2
    assert metrics["retain_test_acc"] >= original["retain_test_acc"] - 0.03
    # The history starts at batch 0 with the original's accuracy and ends where the rule held.
    assert record.history[0]["batch"] == 0 and record.history[0]["forget_train_acc"] > 0.9
    assert record.history[-1]["batch"] == record.forget_batches
    assert record.forget_batches is not None and record.forget_batches > 0


def test_class_rule_on_the_test_set_as_the_paper_does(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
) -> None:
    unlearn = run_on_digits
    _, trained = digits_run
    record = unlearn(trained, ForgetSpec(classes=(5,)), stopping={"eval_set": "test"})
    # eval_size (512) covers every class-5 test sample: the rule itself is the test accuracy.
    assert record.extra["stopped_by"] == "rule"
    assert record.metrics["forget_test_acc"] <= 0.1


def test_paper_class_rule_looks_at_held_out_samples_only(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
) -> None:
    _, trained = digits_run
    default = run_on_digits(trained, ForgetSpec(classes=(5,)))
    paper = run_on_digits(
        trained, ForgetSpec(classes=(5,)), stopping={"class_checks_forget": False}
    )
    assert paper.extra["stopped_by"] == "rule"
    assert paper.history[-1]["held_out_acc"] <= 0.1
    # Same seed, same batches: the paper's rule stops at the first check where the held-out
    # accuracy is at chance, which is never later than where both are.
    assert paper.forget_batches is not None and default.forget_batches is not None
    assert paper.forget_batches <= default.forget_batches
    checks_before_stop = paper.history[:-1]
    assert all(entry["held_out_acc"] > 0.1 for entry in checks_before_stop)


def test_sample_unlearning_moves_forget_accuracy_to_held_out_level(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
) -> None:
    _, trained = digits_run
    spec = ForgetSpec(fraction=0.1)
    record = run_on_digits(trained, spec)
    final = record.history[-1]
    assert record.extra["stopped_by"] == "rule"
    # The default rule (indistinguishable, confidence 0.5): the forget subset's accuracy at
    # most the band's half-width above the held-out subset's.
    split = spec.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    band = accuracy_band(
        final["forget_train_acc"],
        min(512, split.forget.numel()),
        final["held_out_acc"],
        min(512, split.validation.numel()),
        0.5,
    )
    assert final["forget_train_acc"] <= final["held_out_acc"] + band
    assert final["forget_train_acc"] < record.history[0]["forget_train_acc"]
    assert record.metrics["test_acc"] >= 0.9


def test_check_every_records_a_denser_history(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    unlearn = run_on_digits
    _, trained = digits_run
    record = unlearn(
        trained,
        ForgetSpec(classes=(2,)),
        stopping={"check_every": 1, "rule": "none", "max_passes": 1},
    )
    assert [h["batch"] for h in record.history] == list(range(record.forget_batches + 1))
    assert record.extra["stopped_by"] == "max_passes"


def test_auto_checks_follow_the_cost_of_a_check(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    spec = ForgetSpec(classes=(2,))
    budget = 0.02
    record = run_on_digits(
        trained,
        spec,
        stopping={"rule": "none", "max_passes": 3, "check_every": "auto", "check_budget": budget},
    )
    # A check evaluates the forget subset and the held-out samples of class 2 (eval_size caps
    # both); a batch trains on omega * (forget + retain) images, ~3 forward passes each.
    split = spec.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    held_out = int((trained.data.train.labels[split.validation] == 2).sum())
    check_images = min(512, split.forget.numel()) + min(512, held_out)
    batch_images = 4 * (64 + 64)
    every = math.ceil(check_images / (3 * budget * batch_images))
    assert every > 1
    positions = [h["batch"] for h in record.history]
    assert positions == list(range(0, record.forget_batches + 1, every))
    # No check at the end of a pass unless one is due there.
    assert record.forget_batches is not None and record.forget_batches % every != 0


def test_one_forward_pass_over_forget_and_retain() -> None:
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    calls: list[int] = []
    original_forward = model.forward_features

    def counting(x: torch.Tensor):  # type: ignore[no-untyped-def]
        calls.append(x.shape[0])
        return original_forward(x)

    model.forward_features = counting  # type: ignore[method-assign]
    method = ContrastiveUnlearning.for_scenario("sample", {})
    batch = UnlearningBatch(
        torch.randn(4, 1, 8, 8),
        torch.tensor([0, 1, 2, 3]),
        torch.randn(6, 1, 8, 8),
        torch.arange(6),
    )
    terms = method.loss(model, batch)
    assert calls == [10]
    assert set(terms.parts) == {"unlearning", "retain_ce"}
    # sample-scenario defaults: lambda_ul = 3 (the paper's), lambda_ce = 4 (conun's)
    expected = 3.0 * terms.parts["unlearning"] + 4.0 * terms.parts["retain_ce"]
    torch.testing.assert_close(terms.total.detach(), expected)


def test_unknown_options_and_scenarios_are_errors() -> None:
    with pytest.raises(ValueError, match="allowed options: temperature"):
        ContrastiveUnlearning.for_scenario("class", {"temprature": 0.5})
    with pytest.raises(ValueError, match="greater than 0"):
        ContrastiveUnlearning.for_scenario("class", {"temperature": 0})


def test_matched_anchors_are_those_above_their_held_out_quantile() -> None:
    method = ContrastiveUnlearning.for_scenario("sample", {"match_held_out": True})
    assert isinstance(method, ContrastiveUnlearning)
    # Held-out confidences phi = 0.00, 0.01, ..., 0.99: the quantile at level q is ~q.
    method.reference_scores = torch.linspace(0, 0.99, 100)
    # Four anchors of class 0 whose phi (two classes: phi = z_0 - z_1) is 0.05, 0.9, 0.3, 0.2.
    phi = torch.tensor([0.05, 0.9, 0.3, 0.2])
    logits = torch.stack([phi, torch.zeros(4)], dim=1)
    scores, targets = method.matched_anchors(logits, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(scores, phi)
    # Ranks 0, 3, 2, 1 -> levels 0.125, 0.875, 0.625, 0.375 -> targets ~0.124, 0.866, 0.619,
    # 0.371: only the anchor at 0.9 is above its target (still more confident than unseen data).
    assert (scores > targets).tolist() == [False, True, False, False]


def test_calibration_needs_matching() -> None:
    with pytest.raises(ValueError, match="needs options.match_held_out"):
        ContrastiveUnlearning.for_scenario(
            "sample", {"match_held_out": False, "lambda_calibration": 1.0}
        )


def test_matched_anchors_need_the_sample_scenario(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    with pytest.raises(ValueError, match="sample scenario only"):
        run_on_digits(trained, ForgetSpec(classes=(2,)), options={"match_held_out": True})


def test_the_calibrated_default_reaches_its_rule_in_fewer_steps_than_the_accuracy_rule(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    previous = run_on_digits(
        trained,
        ForgetSpec(fraction=0.1),
        stopping={"sample_rule": "accuracy", "check_every": None, "max_passes": 20},
        options={"omega": 4, "match_held_out": False, "lambda_calibration": 0},
    )
    calibrated = run_on_digits(trained, ForgetSpec(fraction=0.1))
    assert previous.extra["stopped_by"] == calibrated.extra["stopped_by"] == "rule"
    assert previous.forget_batches is not None and calibrated.forget_batches is not None
    # omega 4 then, 1 now: optimizer steps.
    assert calibrated.forget_batches < 4 * previous.forget_batches
    assert calibrated.metrics["test_acc"] >= 0.9
