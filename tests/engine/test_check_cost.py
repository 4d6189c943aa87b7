"""What keeps the stopping rule's checks cheap, and that it decides as before: the held-out
subset sized by the forget subset, the first check screened on a few forget samples and reading
held-out logits the method already computed, and the sample scenario's held-out candidates
shared by the rule and contrastive unlearning's reference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conun.config import StoppingConfig
from conun.data.arrays import ArrayDataset, DatasetBundle
from conun.data.splits import ForgetRetainSplit
from conun.engine import monitor as monitor_module
from conun.engine import stopping as stopping_module
from conun.engine.monitor import StoppingMonitor
from conun.engine.stopping import (
    HELD_OUT_CANDIDATES,
    EvaluationSets,
    build_evaluation_sets,
    held_out_candidates,
    screen_fails,
    subset_logits,
)
from conun.engine.task import HeldOutLogits, UnlearningTask
from conun.evaluation.results import RunRecord
from conun.methods.contrastive import ContrastiveUnlearning
from conun.models.base import Classifier
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel
from conun.workflows.unlearning import run_method
from digits_runs import digits_task


def _bundle(num_train: int) -> DatasetBundle:
    images = torch.zeros(num_train, 1, 2, 2)
    labels = torch.arange(num_train) % 3
    data = ArrayDataset(images, labels)
    return DatasetBundle("toy", data, data, 3, (0.0,), (1.0,))


def test_the_held_out_subset_is_at_most_twice_the_forget_subset_in_the_sample_scenario() -> None:
    data = _bundle(3000)
    validation = torch.arange(2000, 3000)
    generator = torch.Generator()
    small = ForgetRetainSplit.from_random(3000, num_samples=100, seed=0, validation=validation)
    large = ForgetRetainSplit.from_random(3000, num_samples=900, seed=0, validation=validation)
    config = StoppingConfig(eval_size=512)
    sets = build_evaluation_sets(data, small, config, generator=generator.manual_seed(0))
    assert (len(sets.forget), len(sets.held_out)) == (100, 200)
    sets = build_evaluation_sets(data, large, config, generator=generator.manual_seed(0))
    assert (len(sets.forget), len(sets.held_out)) == (512, 512)  # eval_size bounds both
    whole = StoppingConfig(eval_size=512, held_out_per_forget=None)
    sets = build_evaluation_sets(data, small, whole, generator=generator.manual_seed(0))
    assert (len(sets.forget), len(sets.held_out)) == (100, 512)
    # The held-out indices travel with the subset, and are the pool's samples.
    assert sets.held_out_indices is not None
    assert torch.equal(sets.held_out.labels, data.train.labels[sets.held_out_indices])
    assert bool(torch.isin(sets.held_out_indices, validation).all())
    # The class rule reads the class's held-out samples, however few are forgotten.
    classes = ForgetRetainSplit.from_classes(
        data.train.labels, [1], num_classes=3, validation=validation
    )
    sets = build_evaluation_sets(data, classes, config, generator=generator.manual_seed(0))
    assert len(sets.held_out) == min(512, int((data.train.labels[validation] == 1).sum()))


def test_held_out_candidates_are_evenly_spaced_in_the_sample_scenario_only() -> None:
    size = HELD_OUT_CANDIDATES + 1904
    data = _bundle(size + 100)
    validation = torch.arange(100, size + 100)
    sample = ForgetRetainSplit.from_random(
        size + 100, num_samples=50, seed=0, validation=validation
    )
    config = StoppingConfig()
    pool, indices = held_out_candidates(data, sample, config)
    assert pool is data.train and indices.numel() == HELD_OUT_CANDIDATES
    assert indices[0] == 100 and indices[-1] == size + 99  # both ends, in order
    assert bool((indices.diff() > 0).all())
    classes = ForgetRetainSplit.from_classes(
        data.train.labels, [0], num_classes=3, validation=validation
    )
    _, class_indices = held_out_candidates(data, classes, config)
    assert torch.equal(class_indices, validation)


def _logits(correct: list[bool], classes: int = 3) -> tuple[torch.Tensor, ArrayDataset]:
    """Logits whose argmax is the label (0) where ``correct``, else class 1."""
    labels = torch.zeros(len(correct), dtype=torch.long)
    logits = torch.zeros(len(correct), classes)
    logits[torch.tensor(correct), 0] = 2.0
    logits[~torch.tensor(correct), 1] = 2.0
    return logits, ArrayDataset(torch.zeros(len(correct), 1, 1, 1), labels)


def _screen(
    forget_correct: int, n_forget: int, held_correct: int, n_held: int, split: ForgetRetainSplit
) -> bool:
    forget_logits, forget = _logits([i < forget_correct for i in range(n_forget)])
    held_logits, held = _logits([i < held_correct for i in range(n_held)])
    return screen_fails(forget_logits, held_logits, EvaluationSets(forget, held), split, 10)


def test_a_screen_fails_only_past_the_95_percent_band() -> None:
    sample = ForgetRetainSplit.from_random(400, num_samples=40, seed=0)
    # 128/128 correct against 480/512 (93.75%): band 1.96 sqrt(p(1-p)(1/128+1/512)) = 0.0413 at
    # the pooled p = 0.95: a gap of 6.25 points fails, one of 3.1 points (124/128) does not.
    assert _screen(128, 128, 480, 512, sample)
    pooled = (124 + 480) / 640
    band = 1.959964 * math.sqrt(pooled * (1 - pooled) * (1 / 128 + 1 / 512))
    assert band > 124 / 128 - 480 / 512 and not _screen(124, 128, 480, 512, sample)
    # Class scenario: above 1/C = 0.1 by more than 1.96 sqrt(0.09 / n) (n = 100: 0.159).
    labels = torch.arange(100) % 10
    classes = ForgetRetainSplit.from_classes(
        labels, [0], num_classes=10, validation=torch.arange(50, 100)
    )
    assert _screen(0, 100, 20, 100, classes)  # held-out at 0.20
    assert not _screen(0, 100, 15, 100, classes)  # held-out at 0.15: could be chance
    assert _screen(30, 100, 0, 100, classes)  # the forget subset at 0.30


def _sample_task(trained: TrainedModel, samples: int, **stopping: object) -> UnlearningTask:
    return digits_task(trained, ForgetSpec(num_samples=samples), stopping=stopping)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    evaluated: list[int] = []
    real = monitor_module.subset_logits

    def counted(model: Classifier, subset: ArrayDataset, **kwargs: object) -> torch.Tensor:
        evaluated.append(len(subset))
        return real(model, subset, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(monitor_module, "subset_logits", counted)
    return evaluated


def test_the_first_check_stops_at_a_screen_that_fails(
    digits_run: tuple[Path, TrainedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, trained = digits_run
    # Forgetting class 4, which the digits original recognises: 32 samples show it.
    task = digits_task(trained, stopping={"screen_size": 32})
    monitor = StoppingMonitor.for_task(task, task.model)
    assert len(monitor.sets.forget) > 32
    evaluated = _counting(monkeypatch)
    check = monitor.check({"batch": 0}, screen=True)
    assert evaluated == [32, len(monitor.sets.held_out)]
    assert not check.stop and monitor.history[-1]["screen"] == 1
    leading = subset_logits(
        task.model, monitor.sets.forget.subset(torch.arange(32)), batch_size=64, channels_last=False
    )
    expected = float((leading.argmax(1) == monitor.sets.forget.labels[:32]).double().mean())
    assert check.forget_acc == pytest.approx(expected) and check.forget_acc > 0.9
    # A later check evaluates the whole forget subset; the screen's held-out logits are fresh.
    monitor.check({"batch": 1}, reuse_held_out=True)
    assert evaluated[2:] == [len(monitor.sets.forget)]


def test_a_screen_that_does_not_fail_decides_on_the_whole_subsets(
    digits_run: tuple[Path, TrainedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, trained = digits_run
    task = _sample_task(trained, 120, screen_size=32)
    monitor = StoppingMonitor.for_task(task, task.model)
    full = StoppingMonitor.for_task(_sample_task(trained, 120, screen_size=32), task.model)
    expected = full.check({"batch": 0})
    monkeypatch.setattr(monitor_module, "screen_fails", lambda *args, **kwargs: False)
    evaluated = _counting(monkeypatch)
    check = monitor.check({"batch": 0}, screen=True)
    forget = len(monitor.sets.forget)
    # The leading 32, the held-out subset, then the other forget samples: nothing twice.
    assert evaluated == [32, len(monitor.sets.held_out), forget - 32]
    assert "screen" not in monitor.history[-1]
    assert check.forget_acc == pytest.approx(expected.forget_acc)
    assert check.member_auc == pytest.approx(expected.member_auc, abs=1e-9)
    assert check.stop == expected.stop


def test_the_first_check_reads_the_held_out_logits_it_is_given(
    digits_run: tuple[Path, TrainedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, trained = digits_run
    task = _sample_task(trained, 40, screen_size=None)
    monitor = StoppingMonitor.for_task(task, task.model)
    held_out, indices = monitor.sets.held_out, monitor.sets.held_out_indices
    assert indices is not None
    fresh = subset_logits(task.model, held_out, batch_size=256, channels_last=False)
    evaluated = _counting(monkeypatch)
    # Known on every second held-out sample (plus samples the subset does not hold, shuffled):
    # only the others are evaluated, and the check sees the same logits as a fresh one.
    half = torch.arange(0, len(held_out), 2)
    pool_size = len(task.data.train)
    others = torch.tensor([i for i in range(pool_size) if i not in set(indices.tolist())][:7])
    known_indices = torch.cat([indices[half], others])
    known_logits = torch.cat([fresh[half], torch.full((7, fresh.shape[1]), float("nan"))])
    order = torch.randperm(known_indices.numel(), generator=torch.Generator().manual_seed(1))
    known = HeldOutLogits(known_indices[order], known_logits[order])
    monitor.check({"batch": 0}, known=known)
    assert evaluated == [len(monitor.sets.forget), len(held_out) - half.numel()]
    torch.testing.assert_close(monitor.state_tensors()["monitor_held_out_logits"], fresh)
    # Known on all of them: the held-out side costs nothing.
    monitor.check({"batch": 0}, known=HeldOutLogits(indices, fresh))
    assert evaluated[2:] == [len(monitor.sets.forget)]


def test_contrastive_hands_its_reference_logits_to_the_first_check(
    digits_run: tuple[Path, TrainedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, trained = digits_run
    task = _sample_task(trained, 40)
    assert task.config.options["match_held_out"]  # the sample default matches anchors
    evaluated = _counting(monkeypatch)
    split = task.split
    _, record = run_method(
        task.config, trained.model, trained.data, split, train_config=None,
        original_seconds=None, quiet=True,
    )  # fmt: skip
    # The first check evaluated the forget subset only (40 samples, under the screen's 128):
    # its held-out side came from the reference contrastive unlearning computed in prepare().
    # (The first step's predictions could not screen it: digits' held-out accuracy is ~99%.)
    assert evaluated[0] == 40 and (len(evaluated) == 1 or evaluated[1] == 40)
    assert record.history[0]["batch"] == 0 and "screen" not in record.history[0]


def _run(trained: TrainedModel, task: UnlearningTask) -> tuple[torch.nn.Module, RunRecord]:
    return run_method(
        task.config, trained.model, trained.data, task.split, train_config=None,
        original_seconds=None, quiet=True,
    )  # fmt: skip


def test_screening_the_first_check_on_the_first_step_changes_no_outcome(
    digits_run: tuple[Path, TrainedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The screen reads the step's own predictions instead of evaluating: the run's steps,
    stop, later checks and model are those of a run whose first check evaluates."""
    _, trained = digits_run
    # Digits' held-out accuracy (~99%) is too close to the forget set's for the screen's band:
    # widened here, so that the screen decides (the rule's own bound still has to fail).
    real_screen = stopping_module.screen_predictions

    def widened(*args: object, **kwargs: object) -> object:
        with monkeypatch.context() as patch:
            patch.setattr(stopping_module, "accuracies_fail", lambda *a, **k: True)
            return real_screen(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(monitor_module, "screen_predictions", widened)
    evaluated_counts = _counting(monkeypatch)
    screened_model, screened = _run(trained, _sample_task(trained, 200))
    screened_evaluations = list(evaluated_counts)
    monkeypatch.setattr(ContrastiveUnlearning, "reports_forget_correct", False)
    evaluated_model, evaluated = _run(trained, _sample_task(trained, 200))
    # The run whose first check evaluates made the same evaluations after it; the first check
    # itself evaluated the forget subset (200: its screen's 128, then the other 72), which the
    # screened run did not.
    later = evaluated_counts[len(screened_evaluations) :]
    assert later[:2] == [128, 72] and later[2:] == screened_evaluations
    assert screened.history[0]["screen"] == 1 and "screen" not in evaluated.history[0]
    assert screened.history[0]["batch"] == evaluated.history[0]["batch"] == 0
    assert screened.history[1:] == evaluated.history[1:]
    assert screened.forget_batches == evaluated.forget_batches
    assert screened.metrics == evaluated.metrics
    for mine, theirs in zip(
        screened_model.state_dict().values(), evaluated_model.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, theirs)


def test_a_rule_that_holds_before_the_first_step_stops_there(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    """Where the step's predictions do not show the rule failing, the real check runs before
    the step: a rule that already holds (here a 99.9999% band) leaves the model untouched."""
    _, trained = digits_run
    before = {name: value.clone() for name, value in trained.model.state_dict().items()}
    model, record = _run(trained, _sample_task(trained, 60, confidence=0.999999))
    assert record.extra["stopped_by"] == "rule"
    assert record.forget_batches == 0 and record.passes == 0
    assert len(record.history) == 1 and "screen" not in record.history[0]
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_the_first_steps_predictions_screen_the_first_check(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    _, trained = digits_run
    task = _sample_task(trained, 200)
    monitor = StoppingMonitor.for_task(task, task.model)
    indices = monitor.sets.held_out_indices
    assert indices is not None
    # Known held-out logits right on 80% of the subset: a forget batch right on all of its 128
    # samples is past the screen's band (and the rule's), one right on 82% is not.
    labels = monitor.sets.held_out.labels
    logits = torch.nn.functional.one_hot(labels, 10).float()
    wrong = torch.arange(len(labels)) % 5 == 0
    logits[wrong] = torch.nn.functional.one_hot((labels[wrong] + 1) % 10, 10).float()
    known = HeldOutLogits(indices, logits)
    undecided = torch.arange(128) % 50 >= 9  # 82% right
    assert monitor.screen_step({"batch": 0}, undecided, known) is None
    assert monitor.history == []
    check = monitor.screen_step({"batch": 0}, torch.ones(128, dtype=torch.bool), known)
    assert check is not None and not check.stop
    assert check.forget_acc == 1.0 and check.held_out_acc == pytest.approx(0.8, abs=0.01)
    assert check.threshold > check.held_out_acc  # the rule's bound, its band included
    assert monitor.history[-1]["screen"] == 1 and monitor.check_seconds > 0
    # Later early checks reuse the held-out logits the screen read.
    torch.testing.assert_close(monitor.state_tensors()["monitor_held_out_logits"], logits)
