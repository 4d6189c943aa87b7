"""The two reference points every table needs: the original model and retraining from scratch."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import ClassVar

from conun.data.splits import Scenario
from conun.engine.training import train_classifier
from conun.methods.base import (
    MethodDefaults,
    MethodOutcome,
    UnlearningMethod,
    UnlearningTask,
    register_method,
)
from conun.models.base import Classifier
from conun.models.registry import build_model, is_model_name
from conun.models.weights import load_init_weights


class MissingRecipeError(ValueError):
    """Retraining needs the recipe that trained the original."""


@register_method("original")
class Original(UnlearningMethod):
    """No unlearning: the original model, with its training time as its seconds."""

    # Neither reference takes forget batches, optimizer steps or a stopping rule (retrain follows
    # the original's training recipe), so their defaults set nothing but the generic values.
    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = {
        "class": MethodDefaults(batch_size=None),
        "sample": MethodDefaults(batch_size=None),
    }

    def run(self, task: UnlearningTask) -> MethodOutcome:
        return MethodOutcome(model=task.model, seconds=task.original_seconds or 0.0)


@register_method("retrain")
class Retrain(UnlearningMethod):
    """The gold standard: a fresh model trained from scratch on the retain set only, with the
    original's own recipe (same architecture, epochs, optimizer, schedule, augmentation)."""

    scenario_defaults: ClassVar[Mapping[Scenario, MethodDefaults]] = Original.scenario_defaults

    def run(self, task: UnlearningTask) -> MethodOutcome:
        if task.train_config is None:
            raise MissingRecipeError(
                "retrain needs the original's training recipe; this model carries none "
                "(train it with conun, or pass train_config)"
            )
        recipe = task.train_config.model_copy(
            update={"device": task.config.device, "channels_last": task.config.channels_last}
        )
        model = _fresh_model(task)
        outcome = train_classifier(
            model,
            task.data.train.subset(task.split.retain),
            recipe,
            generator=task.generator,
            quiet=task.quiet,
            description="retrain",
            resume=task.resume,
        )
        model.eval()
        return MethodOutcome(model=model, seconds=outcome.seconds, extra={"epochs": recipe.epochs})


def _fresh_model(task: UnlearningTask) -> Classifier:
    """A newly initialised network of the original's architecture.

    Registry models are rebuilt by their constructor (its initialisation is part of the recipe);
    a user's own model is deep-copied and every layer re-initialised with ``reset_parameters``.
    """
    assert task.train_config is not None
    if is_model_name(task.train_config.model):
        model = build_model(
            task.train_config.model,
            num_classes=task.data.num_classes,
            input_shape=task.data.input_shape,
            model_args=task.train_config.model_args,
        )
        # The original started from these weights (a pretrained backbone, say), so the
        # reference does too: only the forget set is absent from its training.
        if task.train_config.init is not None:
            load_init_weights(model, task.train_config.init)
        return model
    fresh = copy.deepcopy(task.model)
    for module in fresh.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return fresh
