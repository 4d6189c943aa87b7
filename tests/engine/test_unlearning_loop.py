"""The unlearning loop's guards: a non-finite loss stops the run and names the step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conun.config import build_unlearn_config
from conun.engine.training import NonFiniteLossError
from conun.methods.base import LossTerms, UnlearningBatch
from conun.methods.contrastive import ContrastiveUnlearning
from conun.models.base import Classifier
from conun.workflows.runs import ForgetSpec, TrainedModel, run_method


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
    config = build_unlearn_config("contrastive", "class", dataset="digits")
    method = ExplodesAtThirdStep.for_scenario("class", config.options)
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at batch 1 \(pass 1, step 3\)"):
        run_method(
            method,
            trained.model,
            trained.data,
            split,
            config,
            train_config=None,
            original_seconds=None,
            quiet=True,
        )
    # run_method works on a copy: the caller's model is untouched.
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
