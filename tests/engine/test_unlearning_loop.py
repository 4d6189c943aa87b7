"""The unlearning loop's guards (a non-finite loss stops the run and names the step) and the
pieces every loop shares (conun.engine.monitor): checks recorded in order and carried over a
resume, save points rounded up to a loop's unit, batches on the device."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from conun.config import UnlearnConfig
from conun.data.splits import ForgetRetainSplit
from conun.engine import monitor as monitor_module
from conun.engine.monitor import BatchLoader, LoopResume, RunClock, StoppingMonitor
from conun.engine.resume import Resumable
from conun.engine.stopping import RuleCheck
from conun.engine.training import NonFiniteLossError
from conun.evaluation.results import RunRecord
from conun.methods.base import LossTerms, UnlearningBatch
from conun.methods.contrastive import ContrastiveUnlearning
from conun.models.base import Classifier
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel
from conun.workflows.unlearning import run_method
from digits_runs import digits_task


class ExplodesAtThirdStep(ContrastiveUnlearning):
    """Contrastive unlearning whose loss turns NaN at the third optimizer step."""

    steps = 0

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        terms = super().loss(model, batch)
        ExplodesAtThirdStep.steps += 1
        if ExplodesAtThirdStep.steps >= 3:
            return LossTerms(terms.total * torch.tensor(float("nan")))
        return terms


def test_nan_loss_stops_with_the_step_named(digits_run: tuple[Path, TrainedModel]) -> None:
    _, trained = digits_run
    split = ForgetSpec(classes=(4,)).resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    config = resolve_unlearn_config("contrastive", "class", dataset="digits").config
    method = ExplodesAtThirdStep.for_scenario("class", config.options)
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at batch 1 \(pass 1, step 3\)"):
        run_method(
            config,
            trained.model,
            trained.data,
            split,
            method=method,
            train_config=None,
            original_seconds=None,
            quiet=True,
        )
    # run_method works on a copy: the caller's model is untouched.
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_the_monitor_records_checks_in_order_and_carries_them_over_a_resume(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    _, trained = digits_run
    task = digits_task(trained, stopping={"rule": "auto"})
    monitor = StoppingMonitor.for_task(task, task.model)
    result = monitor.check({"batch": 0, "pass": 0})
    # The position first, in the loop's order, then the accuracies.
    assert list(monitor.history[0]) == ["batch", "pass", "forget_train_acc", "held_out_acc"]
    assert monitor.last == result and result.forget_acc > 0.9  # the original knows class 4
    assert not monitor.holds and monitor.check_seconds > 0
    # Through JSON, as in a resumable state: the same history, last check and verdict.
    resumed = StoppingMonitor.for_task(digits_task(trained, stopping={"rule": "auto"}), task.model)
    resumed.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
    assert resumed.history == monitor.history and resumed.last == monitor.last
    assert resumed.check_seconds == monitor.check_seconds and not resumed.holds


def test_a_cheaper_check_reuses_the_held_out_logits_unless_it_would_stop(
    digits_run: tuple[Path, TrainedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, trained = digits_run
    task = digits_task(trained, stopping={"rule": "auto"})
    monitor = StoppingMonitor.for_task(task, task.model)
    evaluated: list[int] = []
    real = monitor_module.subset_logits

    def counted(model: Classifier, subset: object, **kwargs: object) -> torch.Tensor:
        evaluated.append(len(subset))  # type: ignore[arg-type]
        return real(model, subset, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(monitor_module, "subset_logits", counted)
    forget, held_out = len(monitor.sets.forget), len(monitor.sets.held_out)
    monitor.check({"batch": 0}, reuse_held_out=True)  # nothing to reuse yet
    assert evaluated == [forget, held_out]
    monitor.check({"batch": 1}, reuse_held_out=True)  # fails: the forget subset only
    assert evaluated[2:] == [forget] and monitor.history[-1]["held_out_reused"] == 1
    # A check that would stop is decided again on fresh held-out logits.
    decided: list[torch.Tensor] = []
    real_decide = monitor._decide

    def stops(forget_logits: torch.Tensor, held_out_logits: torch.Tensor) -> RuleCheck:
        decided.append(held_out_logits)
        return dataclasses.replace(real_decide(forget_logits, held_out_logits), stop=True)

    monkeypatch.setattr(monitor, "_decide", stops)
    monitor.check({"batch": 2}, reuse_held_out=True)
    assert evaluated[3:] == [forget, held_out] and "held_out_reused" not in monitor.history[-1]
    assert len(decided) == 2 and decided[1] is not decided[0] and monitor.holds
    # The reused logits travel with a resumable state.
    resumed = StoppingMonitor.for_task(digits_task(trained, stopping={"rule": "auto"}), task.model)
    resumed.load_state_tensors(monitor.state_tensors())
    assert torch.equal(resumed.state_tensors()["monitor_held_out_logits"], decided[1])


def test_stale_held_out_logits_decide_accuracy_failures_only(
    digits_run: tuple[Path, TrainedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sample-scenario check that reused the held-out logits and whose forget accuracy is
    # within its bound fails on the loss-rank AUC only, and held-out losses move with the
    # model's logit scale: it is decided again on fresh held-out logits (found on
    # Fashion-MNIST: three early checks at AUC 0.55 against stale logits, 0.50 on fresh ones).
    _, trained = digits_run
    evaluated: list[int] = []
    real = monitor_module.subset_logits

    def counted(model: Classifier, subset: object, **kwargs: object) -> torch.Tensor:
        evaluated.append(len(subset))  # type: ignore[arg-type]
        return real(model, subset, **kwargs)  # type: ignore[arg-type]

    def monitor_after_one_check(spec: ForgetSpec) -> StoppingMonitor:
        task = digits_task(trained, spec, stopping={"rule": "auto"})
        monitor = StoppingMonitor.for_task(task, task.model)
        monitor.check({"batch": 0})  # held-out logits to reuse
        evaluated.clear()
        return monitor

    monkeypatch.setattr(monitor_module, "subset_logits", counted)
    monitor = monitor_after_one_check(ForgetSpec(num_samples=50))
    decided: list[torch.Tensor] = []
    real_decide = monitor._decide

    def within_accuracy_bound(forget_logits: torch.Tensor, held_out: torch.Tensor) -> RuleCheck:
        decided.append(held_out)
        check = real_decide(forget_logits, held_out)
        return dataclasses.replace(check, stop=False, threshold=check.forget_acc)

    monkeypatch.setattr(monitor, "_decide", within_accuracy_bound)
    forget, held_out = len(monitor.sets.forget), len(monitor.sets.held_out)
    monitor.check({"batch": 1}, reuse_held_out=True)
    assert evaluated == [forget, held_out] and len(decided) == 2
    assert decided[1] is not decided[0] and "held_out_reused" not in monitor.history[-1]
    # An accuracy failure keeps the cheaper check.
    monkeypatch.setattr(
        monitor,
        "_decide",
        lambda f, h: dataclasses.replace(real_decide(f, h), stop=False, threshold=-1.0),
    )
    monitor.check({"batch": 2}, reuse_held_out=True)
    assert evaluated[2:] == [forget] and monitor.history[-1]["held_out_reused"] == 1
    # The class rule reads accuracies only: its cheaper check stands whatever the forget side.
    monitor = monitor_after_one_check(ForgetSpec(classes=(4,)))
    real_class_decide = monitor._decide
    monkeypatch.setattr(
        monitor,
        "_decide",
        lambda f, h: dataclasses.replace(
            real_class_decide(f, h), stop=False, threshold=real_class_decide(f, h).forget_acc
        ),
    )
    monitor.check({"batch": 1}, reuse_held_out=True)
    assert evaluated == [len(monitor.sets.forget)] and monitor.history[-1]["held_out_reused"] == 1


def test_save_points_are_rounded_up_to_the_loops_unit(
    digits_run: tuple[Path, TrainedModel], tmp_path: Path
) -> None:
    _, trained = digits_run
    task = digits_task(trained)
    assert not LoopResume(task, None, RunClock(None)).due(0, 100)  # no Resumable: never
    task.resume = Resumable(tmp_path, 4, "unlearn", {})
    saves = LoopResume(task, None, RunClock(task.resume))
    assert saves.saving and saves.state is None
    assert saves.due(3, 4) and not saves.due(4, 7)
    assert saves.due(6, 9)  # a unit of 3 steps that passes step 8 saves after it


def test_batches_are_the_indexed_samples_on_the_device(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    _, trained = digits_run
    load = BatchLoader.training_set(digits_task(trained))
    index = torch.tensor([5, 0, 17])
    images, labels = load(index)  # one process: the whole batch
    assert torch.equal(images, trained.data.train.images[index])
    assert torch.equal(labels, trained.data.train.labels[index])


@pytest.mark.parametrize("channels_last", [False, True])
def test_batches_come_in_the_runs_memory_format(channels_last: bool) -> None:
    # Three channels: a one-channel batch is contiguous in both formats alike.
    images, labels = torch.randn(6, 3, 4, 4), torch.arange(6)
    load = BatchLoader(images, labels, torch.device("cpu"), channels_last)
    batch, _ = load.whole(torch.tensor([4, 1]))
    assert batch.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.equal(batch, images[[4, 1]])


class ClaimsForgotten(ContrastiveUnlearning):
    """Contrastive unlearning (at a learning rate too small to change anything) whose forward
    passes report every forget sample as already misclassified: the free estimate says the rule
    holds at every probe, the real checks say it does not."""

    def loss(self, model: Classifier, batch: UnlearningBatch) -> LossTerms:
        terms = super().loss(model, batch)
        assert terms.forget_correct is not None
        return LossTerms(terms.total, terms.parts, torch.zeros_like(terms.forget_correct))


def run_claiming_forgotten(
    trained: TrainedModel, *, budget: float, passes: int
) -> tuple[ForgetRetainSplit, UnlearnConfig, ContrastiveUnlearning, RunRecord]:
    """:class:`ClaimsForgotten` on 200 random digits samples, checks ``auto`` within ``budget``,
    at most ``passes`` passes: the split, the config, the method and the run's record."""
    split = ForgetSpec(num_samples=200).resolve(
        trained.data, torch.tensor(trained.meta.validation), 0
    )
    layer = {
        "optimizer": {"lr": 1e-12},
        "stopping": {"check_every": "auto", "check_budget": budget, "max_passes": passes},
    }
    config = resolve_unlearn_config(
        "contrastive", "sample", dataset="digits", layers=[("test", layer)]
    ).config
    method = ClaimsForgotten.for_scenario("sample", config.options)
    assert isinstance(method, ContrastiveUnlearning)
    _, record = run_method(
        config,
        trained.model,
        trained.data,
        split,
        method=method,
        train_config=None,
        original_seconds=None,
        quiet=True,
    )
    return split, config, method, record


def test_early_checks_probe_each_short_pass_and_wait_a_quarter_interval_after_failing(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    _, trained = digits_run
    split, config, method, record = run_claiming_forgotten(trained, budget=0.01, passes=20)
    assert record.extra["stopped_by"] == "max_passes"
    # The interval as the monitor computes it: a check evaluates both subsets once; a batch
    # trains on (forget + retain) images at ~3 forward passes each (omega 1).
    batch_size = method.batch_size(config, "sample")
    per_pass = math.ceil(200 / batch_size)
    held_out = min(512, split.validation.numel())
    every = math.ceil((200 + held_out) / (3 * 0.01 * 2 * batch_size))
    quarter = every // 4
    assert per_pass < quarter and every > 20 * per_pass  # no scheduled check in this run
    batches = [h["step_batch"] for h in record.history]
    # The first early check at the end of the first pass (not a quarter interval in); then,
    # each having failed, the next one after twice the wait of the one before (in passes: the
    # probe), at most a quarter interval (rounded up to a pass).
    assert batches[:2] == [0, per_pass]
    waits = [min(quarter, per_pass * 2**k) for k in range(1, len(batches) - 1)]
    expected = [per_pass * math.ceil(wait / per_pass) for wait in waits]
    assert len(batches) > 5 and [b - a for a, b in itertools.pairwise(batches[1:])] == expected
    # Every early check failed, so each reused the held-out logits of the check before it.
    assert all(h.get("held_out_reused") == 1 for h in record.history[1:])


def test_early_checks_that_reuse_the_held_out_side_never_postpone_the_intervals_check(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    # Early checks every few batches that all fail (reusing the held-out logits) must not
    # reset the interval: a full check still comes every `every` batches (found on Fashion-MNIST:
    # a class re-forget ran 20 passes on the batch-0 held-out logits).
    _, trained = digits_run
    split, config, _, record = run_claiming_forgotten(trained, budget=0.2, passes=12)
    batch_size = config.batch_size
    assert batch_size is not None
    every = math.ceil((200 + min(512, split.validation.numel())) / (3 * 0.2 * 2 * batch_size))
    full = [h["step_batch"] for h in record.history if "held_out_reused" not in h]
    reused = [h for h in record.history if "held_out_reused" in h]
    assert reused and len(full) > 2
    assert all(b - a <= every for a, b in itertools.pairwise(full)), (full, every)
