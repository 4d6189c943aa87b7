"""SalUn: the forget gradient and the global top-k mask against loop references, non-salient
weights that stay bit-identical, the joint random-label loss, and the behaviour on digits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conun.config import ConfigError
from conun.evaluation.results import RunRecord
from conun.methods.base import UnlearningBatch
from conun.methods.salun import SalUn, forget_gradient, saliency_masks, wrong_labels
from conun.models import build_model
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel
from digits_runs import run_keeping_model

CLASS_5 = ForgetSpec(classes=(5,))


def test_forget_gradient_is_the_sum_of_per_batch_mean_gradients() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8))
    images, labels = torch.randn(7, 1, 8, 8), torch.randint(0, 10, (7,))
    gradients = forget_gradient(model, images, labels, batch_size=3, channels_last=False)
    assert not model.training and all(p.grad is None for p in model.parameters())
    # Reference: batches {0,1,2}, {3,4,5}, {6}; per batch the mean of per-sample gradients.
    reference = [torch.zeros_like(p) for p in model.parameters()]
    for batch in ([0, 1, 2], [3, 4, 5], [6]):
        for i in batch:
            loss = F.cross_entropy(model(images[i : i + 1]), labels[i : i + 1])
            sample = torch.autograd.grad(loss, list(model.parameters()))
            for total, grad in zip(reference, sample, strict=True):
                total += grad / len(batch)
    for got, expected in zip(gradients, reference, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_saliency_mask_is_one_global_top_k_over_all_parameters() -> None:
    torch.manual_seed(0)
    gradients = [torch.randn(4, 5) * 10, torch.randn(3) * 0.01, -torch.randn(2, 2, 2)]
    masks = saliency_masks(gradients, 0.5)
    # Their generate_mask.py: rank entries by -|g| over everything, keep ranks < int(n * t).
    flat = -torch.cat([g.abs().flatten() for g in gradients])
    ranks = torch.argsort(torch.argsort(flat))
    expected = (ranks < int(flat.numel() * 0.5)).split([g.numel() for g in gradients])
    for mask, reference, gradient in zip(masks, expected, gradients, strict=True):
        assert mask.shape == gradient.shape
        assert torch.equal(mask.flatten(), reference)
    assert sum(int(m.sum()) for m in masks) == int(0.5 * 31)
    # Global, not per layer: the tiny middle tensor gets nothing, the large first one most.
    assert not bool(masks[1].any()) and int(masks[0].sum()) > 10
    assert all(bool(m.all()) for m in saliency_masks(gradients, 1.0))


def test_loss_is_the_joint_batch_mean_with_wrong_random_labels() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8)).eval()
    method = SalUn.for_scenario("class", {})
    assert isinstance(method, SalUn)
    method._generator = torch.Generator().manual_seed(0)
    forget_images, forget_labels = torch.randn(3, 1, 8, 8), torch.tensor([5, 5, 5])
    retain_images, retain_labels = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4])
    batch = UnlearningBatch(forget_images, forget_labels, retain_images, retain_labels)
    terms = method.loss(model, batch)
    # Reference: (Bf * CE_forget + Br * CE_retain) / (Bf + Br).
    expected = (3 * terms.parts["random_label_ce"] + 5 * terms.parts["retain_ce"]) / 8
    torch.testing.assert_close(terms.total.detach(), expected)
    torch.testing.assert_close(
        terms.parts["retain_ce"], F.cross_entropy(model(retain_images), retain_labels)
    )
    # The random labels: uniform over the C - 1 wrong classes, never the true one.
    truth = torch.tensor([5, 0, 9]).repeat(1000)
    wrong = wrong_labels(truth, 10, generator=torch.Generator().manual_seed(1))
    assert not bool((wrong == truth).any())
    counts = torch.bincount(wrong[truth == 5], minlength=10)
    assert counts[5] == 0 and bool((counts[counts > 0] > 70).all()) and int((counts > 0).sum()) == 9


def test_non_salient_weights_stay_bit_identical(digits_run: tuple[Path, TrainedModel]) -> None:
    _, trained = digits_run
    split = CLASS_5.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    before = [p.detach().clone() for p in trained.model.parameters()]
    model, record, method = run_keeping_model(
        trained,
        CLASS_5,
        "salun",
        optimizer={"momentum": 0.9, "weight_decay": 5e-4},
        stopping={"rule": "none", "max_passes": 2},
    )
    assert isinstance(method, SalUn)
    masks = method.masks
    total = sum(m.numel() for m in masks)
    assert sum(int(m.sum()) for m in masks) == int(0.5 * total)
    moved = 0
    for start, end, salient in zip(before, model.parameters(), masks, strict=True):
        assert torch.equal(end.detach()[~salient], start[~salient])
        moved += int((end.detach()[salient] != start[salient]).sum())
    assert moved > 0.9 * sum(int(m.sum()) for m in masks)  # the salient half did move
    # About |D_u| forget samples per pass over D_r: B_u = round(256 * |D_u| / |D_r|).
    expected_bu = round(256 * split.forget.numel() / split.retain.numel())
    assert method.forget_batch_size(256) == expected_bu
    assert record.forget_batches == 2 * -(-split.retain.numel() // 256)


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="greater than 0"):
        SalUn.for_scenario("class", {"threshold": 0.0})
    with pytest.raises(ConfigError, match="less than or equal to 1"):
        SalUn.for_scenario("sample", {"threshold": 1.5})
    with pytest.raises(ConfigError, match="allowed options: threshold"):
        SalUn.for_scenario("class", {"treshold": 0.5})


def test_class_forgotten_on_digits_with_utility_kept(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    original = run_on_digits(trained, CLASS_5, "original").metrics
    record = run_on_digits(trained, CLASS_5, "salun")
    metrics = record.metrics
    assert record.extra["stopped_by"] == "max_passes" and record.passes == pytest.approx(10.0)
    assert metrics["forget_train_acc"] <= 0.05 and metrics["forget_test_acc"] <= 0.1
    assert metrics["retain_test_acc"] >= original["retain_test_acc"] - 0.03


def test_sample_scenario_keeps_utility(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    original = run_on_digits(trained, ForgetSpec(fraction=0.05), "original").metrics
    record = run_on_digits(trained, ForgetSpec(fraction=0.05), "salun")
    assert record.metrics["test_acc"] >= original["test_acc"] - 0.02
    assert record.metrics["retain_train_acc"] >= 0.98
