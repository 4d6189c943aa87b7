"""SCRUB and bad teaching (conun.methods.distillation): their losses against loop references, the
schedule pieces, frozen teachers bit for bit, and forgetting on real digits data."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from conun.config import TrainConfig
from conun.evaluation.results import RunRecord
from conun.methods.base import UnlearningTask
from conun.methods.distillation import (
    BadTeacher,
    Scrub,
    bad_teacher_loss,
    distill_kl,
    epoch_batches,
    incompetent_teacher,
    scrub_learning_rate,
)
from conun.models.base import Classifier
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel
from digits_runs import run_keeping_model

CLASS_FIVE = ForgetSpec(classes=(5,))
FIVE_PERCENT = ForgetSpec(fraction=0.05)
# digits is tiny (one class = ~130 training samples): the papers' CIFAR settings take only a
# handful of steps here (SCRUB: 2 max-steps at lr 5e-4, bad teaching: 2 Adam steps at lr 1e-4)
# and leave class 5 at >= 99%. These settings (the digits preset's; measured on seeds 0-4) forget
# it in a few seconds at a cost of <= 2.8 points of retain test accuracy.
SCRUB_DIGITS: dict[str, Any] = {
    "batch_size": 64,
    "optimizer": {"lr": 1.5e-3},
    "options": {"epochs": 6, "msteps": 2, "retain_batch_size": 64},
}
BAD_TEACHER_DIGITS: dict[str, Any] = {"batch_size": 32, "optimizer": {"lr": 1e-3}}


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, cloned."""
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def assert_bit_identical(module: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    assert state.keys() == reference.keys()
    for name, tensor in state.items():
        assert torch.equal(tensor, reference[name]), name


# --- the math ---------------------------------------------------------------------------------


def test_distill_kl_matches_a_loop_over_samples_and_classes() -> None:
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(5, 4, generator=generator)
    teacher = torch.randn(5, 4, generator=generator)
    temperature = 4.0
    expected = 0.0
    for i in range(5):
        p_s = torch.softmax(student[i] / temperature, dim=0)
        p_t = torch.softmax(teacher[i] / temperature, dim=0)
        expected += sum(float(p_t[c] * math.log(p_t[c] / p_s[c])) for c in range(4))
    expected *= temperature**2 / 5
    assert distill_kl(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-5)
    # KL(p || p) = 0, and no gradient reaches the teacher.
    teacher.requires_grad_(True)
    assert distill_kl(teacher.detach(), teacher, temperature).item() == pytest.approx(0, abs=1e-6)
    distill_kl(student.requires_grad_(True), teacher, temperature).backward()
    assert teacher.grad is None and student.grad is not None


def test_bad_teacher_loss_matches_their_unlearner_loss() -> None:
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(6, 3, generator=generator)
    competent = torch.randn(6, 3, generator=generator)
    incompetent = torch.randn(6, 3, generator=generator)
    is_forget = torch.tensor([1, 0, 0, 1, 0, 1])
    temperature = 2.0
    # Their UnlearnerLoss: mix the softmaxes by the forget flag, F.kl_div's "mean" over B * C.
    total = 0.0
    for i in range(6):
        teacher = incompetent[i] if is_forget[i] else competent[i]
        p = torch.softmax(teacher / temperature, dim=0)
        log_q = torch.log_softmax(student[i] / temperature, dim=0)
        total += sum(float(p[c] * (math.log(p[c]) - log_q[c])) for c in range(3))
    expected = total / (6 * 3)
    rows = torch.where(is_forget.bool().unsqueeze(1), incompetent, competent)
    assert bad_teacher_loss(student, rows, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_scrub_learning_rate_decays_after_each_milestone() -> None:
    rates = [scrub_learning_rate(epoch, 1.0, (3, 5, 9), 0.1) for epoch in range(1, 11)]
    expected = [1.0] * 3 + [0.1] * 2 + [0.01] * 4 + [0.001]
    assert rates == pytest.approx(expected)


def test_epoch_batches_visit_every_index_once_and_never_leave_a_single_sample() -> None:
    indices = torch.arange(33)
    batches = epoch_batches(indices, 16, generator=torch.Generator().manual_seed(0))
    assert [batch.numel() for batch in batches] == [16, 17]
    assert torch.equal(torch.cat(batches).sort().values, indices)


def test_bad_teacher_mixed_batches_have_their_forget_share() -> None:
    method = BadTeacher.for_scenario("class", {})
    assert isinstance(method, BadTeacher)
    # 100 forget + 30% of 1000 retain: a quarter of each batch of 256 is forget samples.
    assert method.mixed_batch_split(256, 100, 1000) == (64, 192)
    # Both halves are present even when one set is tiny or huge.
    assert method.mixed_batch_split(256, 1, 100_000) == (1, 255)
    assert method.mixed_batch_split(256, 100_000, 10) == (255, 1)


# --- frozen teachers --------------------------------------------------------------------------


def test_scrub_teacher_stays_bit_identical_and_the_class_is_forgotten(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    original = state_copy(trained.model)
    _, record, method = run_keeping_model(trained, CLASS_FIVE, "scrub", **SCRUB_DIGITS)
    assert isinstance(method, Scrub) and method.teacher is not None
    # The preset's SGD has momentum 0.9 and weight decay 5e-4: neither touched the teacher.
    config = resolve_unlearn_config(
        "scrub", "class", dataset="digits", layers=[("test", SCRUB_DIGITS)]
    ).config
    assert config.optimizer.momentum > 0 and config.optimizer.weight_decay > 0
    assert_bit_identical(method.teacher, original)
    assert not method.teacher.training
    assert all(not parameter.requires_grad for parameter in method.teacher.parameters())
    assert method.teacher is not trained.model
    # Schedule: max-steps in the first msteps = 2 epochs only, then 6 epochs in all.
    assert record.passes == 2 and record.extra["epochs"] == 6
    assert [entry["epoch"] for entry in record.history] == [0, 1, 2, 3, 4, 5, 6]
    # Forgetting with the retained classes intact.
    before = run_on_digits(trained, CLASS_FIVE, "original").metrics
    assert record.metrics["forget_train_acc"] <= 0.05
    assert record.metrics["forget_test_acc"] <= 0.1
    # Measured drops on seeds 0-4: 0.3-2.8 points; the margin absorbs thread-count numerics.
    assert record.metrics["retain_test_acc"] >= before["retain_test_acc"] - 0.04


class SnapshotBadTeacher(BadTeacher):
    """Records both teachers' parameters and buffers as prepare() leaves them."""

    snapshots: dict[str, dict[str, torch.Tensor]]

    def prepare(self, model: Classifier, task: UnlearningTask) -> None:
        super().prepare(model, task)
        assert self.competent_teacher is not None and self.incompetent_teacher is not None
        self.snapshots = {
            "competent": state_copy(self.competent_teacher),
            "incompetent": state_copy(self.incompetent_teacher),
        }


def test_bad_teachers_stay_bit_identical_under_sgd_with_momentum_and_weight_decay(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    _, trained = digits_run
    original = state_copy(trained.model)
    method = SnapshotBadTeacher.for_scenario("class", {})
    assert isinstance(method, SnapshotBadTeacher) and method.name == "bad_teacher"
    sgd = {"name": "sgd", "lr": 1e-2, "momentum": 0.9, "weight_decay": 5e-4}
    _, record, _ = run_keeping_model(
        trained, CLASS_FIVE, method, batch_size=32, optimizer=sgd, stopping={"max_passes": 2}
    )
    assert method.competent_teacher is not None and method.incompetent_teacher is not None
    assert_bit_identical(method.competent_teacher, method.snapshots["competent"])
    assert_bit_identical(method.competent_teacher, original)
    assert_bit_identical(method.incompetent_teacher, method.snapshots["incompetent"])
    for teacher in (method.competent_teacher, method.incompetent_teacher):
        assert not teacher.training
        assert all(not parameter.requires_grad for parameter in teacher.parameters())
    assert record.forget_batches is not None and record.forget_batches > 0


def test_incompetent_teacher_is_a_seeded_random_network(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    _, trained = digits_run
    split = CLASS_FIVE.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    config = resolve_unlearn_config("bad_teacher", "class", dataset="digits").config

    def build(seed: int) -> Classifier:
        task = UnlearningTask(
            model=trained.model,
            data=trained.data,
            split=split,
            config=config,
            train_config=TrainConfig.model_validate(trained.meta.train_config),
            original_seconds=None,
            generator=torch.Generator().manual_seed(seed),
        )
        return incompetent_teacher(task, torch.device("cpu"))

    global_state = torch.random.get_rng_state()
    first, again, other = build(0), build(0), build(1)
    assert torch.equal(torch.random.get_rng_state(), global_state)  # global RNG untouched
    assert_bit_identical(again, state_copy(first))
    weights = [dict(model.named_parameters()) for model in (first, other, trained.model)]
    name = next(iter(weights[0]))
    assert not torch.equal(weights[0][name], weights[1][name])
    assert not torch.equal(weights[0][name], weights[2][name])
    # An untrained network: far from the original's ~98% test accuracy.
    test = trained.data.test
    with torch.no_grad():
        accuracy = (first(test.images).argmax(dim=1) == test.labels).float().mean().item()
    assert accuracy < 0.5


# --- behaviour on digits ----------------------------------------------------------------------


def test_bad_teacher_forgets_the_class_in_one_epoch(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    before = run_on_digits(trained, CLASS_FIVE, "original").metrics
    record = run_on_digits(trained, CLASS_FIVE, "bad_teacher", **BAD_TEACHER_DIGITS)
    assert record.passes == 1  # the paper's single epoch
    assert record.metrics["forget_train_acc"] <= 0.1
    assert record.metrics["forget_test_acc"] <= 0.1
    assert record.metrics["retain_test_acc"] >= before["retain_test_acc"] - 0.03


@pytest.mark.parametrize(
    ("method", "config"),
    [
        ("scrub", {}),
        ("bad_teacher", {}),
        ("scrub", SCRUB_DIGITS),
        ("bad_teacher", BAD_TEACHER_DIGITS),
    ],
)
def test_sample_unlearning_keeps_utility(
    digits_run: tuple[Path, TrainedModel],
    run_on_digits: Callable[..., RunRecord],
    method: str,
    config: dict[str, Any],
) -> None:
    _, trained = digits_run
    before = run_on_digits(trained, FIVE_PERCENT, "original").metrics
    record = run_on_digits(trained, FIVE_PERCENT, method, **config)
    assert record.metrics["test_acc"] >= before["test_acc"] - 0.03
    assert record.metrics["retain_train_acc"] >= before["retain_train_acc"] - 0.03


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="allowed options: alpha"):
        Scrub.for_scenario("class", {"beta": 0.0})
    with pytest.raises(ValueError, match="greater than 0"):
        Scrub.for_scenario("sample", {"temperature": 0})
    with pytest.raises(ValueError, match="less than or equal to 1"):
        BadTeacher.for_scenario("class", {"retain_fraction": 1.5})
    scrub = Scrub.for_scenario("sample", {})
    assert isinstance(scrub.options, type(Scrub.for_scenario("class", {}).options))
    assert scrub.options.model_dump()["msteps"] == 3  # the sample scenario's defaults


def test_scrub_objectives() -> None:
    """The max-step is minus the forget KL; the min-step weighs CE and KL by gamma and alpha."""
    from conun.models import build_model

    torch.manual_seed(0)
    student = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8)).eval()
    teacher = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8)).eval()
    images, labels = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    method = Scrub.for_scenario("class", {"alpha": 0.3, "gamma": 0.7, "temperature": 2.0})
    assert isinstance(method, Scrub)
    with torch.no_grad():
        kl = distill_kl(student(images), teacher(images), 2.0)
        ce = F.cross_entropy(student(images), labels)
    maximise = method.max_loss(student, teacher, images)
    torch.testing.assert_close(maximise.total.detach(), -kl)
    minimise = method.min_loss(student, teacher, images, labels)
    torch.testing.assert_close(minimise.total.detach(), 0.7 * ce + 0.3 * kl)
