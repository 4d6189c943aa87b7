"""neggrad and random_label against their references' steps: RL's epoch is a pass over the retain
set with a proportional share of randomly relabelled forget samples in each batch (SalUn's
``RL.py``), its loss the joint batch's mean; NegGrad's ascent, and the BatchNorm option that keeps
forget-only batches from re-estimating the running statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conun.config import ConfigError
from conun.methods.base import UnlearningBatch
from conun.methods.gradient import NegGrad, RandomLabel
from conun.models import build_model
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel
from digits_runs import batchnorm_statistics, run_keeping_model

CLASS_5 = ForgetSpec(classes=(5,))
SAMPLES = ForgetSpec(fraction=0.05)


def test_random_label_loss_is_the_joint_batch_mean_with_wrong_random_labels() -> None:
    # Their RL: one cross-entropy over a mixed batch of relabelled forget samples and retain
    # samples, each sample weighing the same; not forget CE + retain CE (the pre-#19 sum).
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8)).eval()
    method = RandomLabel.for_scenario("sample", {})
    assert isinstance(method, RandomLabel)
    method._generator = torch.Generator().manual_seed(0)
    forget_images, forget_labels = torch.randn(2, 1, 8, 8), torch.tensor([5, 7])
    retain_images, retain_labels = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 6])
    terms = method.loss(
        model, UnlearningBatch(forget_images, forget_labels, retain_images, retain_labels)
    )
    expected = (2 * terms.parts["random_label_ce"] + 6 * terms.parts["retain_ce"]) / 8
    torch.testing.assert_close(terms.total.detach(), expected)
    torch.testing.assert_close(
        terms.parts["retain_ce"], F.cross_entropy(model(retain_images), retain_labels)
    )
    # The random labels are never the true ones: the forget CE is against the same draw.
    wrong = (
        forget_labels + torch.randint(1, 10, (2,), generator=torch.Generator().manual_seed(0))
    ) % 10
    assert not bool((wrong == forget_labels).any())
    torch.testing.assert_close(
        terms.parts["random_label_ce"], F.cross_entropy(model(forget_images), wrong)
    )


def test_random_label_passes_over_the_retain_set_with_a_proportional_forget_share(
    digits_run: tuple[Path, TrainedModel],
) -> None:
    # Their epoch visits every retain sample once and about every forget sample once: a pass
    # over D_r in batches of B, each with B_u = round(B * |D_u| / |D_r|) forget samples.
    assert RandomLabel.pass_over == "retain" and RandomLabel.uses_forget
    _, trained = digits_run
    split = SAMPLES.resolve(trained.data, torch.tensor(trained.meta.validation), 0)
    _, record, method = run_keeping_model(
        trained, SAMPLES, "random_label", stopping={"rule": "none", "max_passes": 1}
    )
    share = split.forget.numel() / split.retain.numel()
    assert method.forget_batch_size(256) == max(1, round(256 * share))
    assert record.forget_batches == -(-split.retain.numel() // 256)  # one pass over D_r
    # forget_share mixes more of the forget set into each step.
    _, _, mixed = run_keeping_model(
        trained,
        SAMPLES,
        "random_label",
        options={"forget_share": 0.5},
        stopping={"rule": "none", "max_passes": 1},
    )
    assert mixed.forget_batch_size(256) == 128
    with pytest.raises(ConfigError, match="allowed options: forget_share"):
        RandomLabel.for_scenario("class", {"forget_ratio": 0.5})


def test_neggrad_ascends_the_forget_cross_entropy() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, input_shape=(1, 8, 8)).eval()
    method = NegGrad.for_scenario("class", {})
    assert isinstance(method, NegGrad)
    images, labels = torch.randn(4, 1, 8, 8), torch.tensor([5, 5, 5, 5])
    terms = method.loss(model, UnlearningBatch(images, labels, None, None))
    torch.testing.assert_close(terms.total, -F.cross_entropy(model(images), labels))
    assert not NegGrad.uses_retain and NegGrad.pass_over == "forget"


@pytest.mark.parametrize("freeze", [False, True])
def test_neggrad_freeze_batchnorm_keeps_the_running_statistics(
    digits_run: tuple[Path, TrainedModel], freeze: bool
) -> None:
    # Forget batches of class 5 alone: in train mode (their GA.py, the default) BatchNorm
    # re-estimates its statistics on them; freeze_batchnorm keeps the original's.
    _, trained = digits_run
    before = batchnorm_statistics(trained.model)
    model, _, method = run_keeping_model(
        trained,
        CLASS_5,
        "neggrad",
        options={"freeze_batchnorm": freeze},
        stopping={"rule": "none", "max_passes": 1},
    )
    assert method.freeze_batchnorm() is freeze
    after = batchnorm_statistics(model)
    same = all(torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert same is freeze
